// IKEv2 messages and payloads (RFC 7296 3), parsed from and serialized to bytes through
// wire::ByteReader / ByteWriter. Payload bodies are copied out of the datagram: IKE is not the
// data path, and a decrypted SK payload's buffer does not outlive parsing.
//
// Parsing is in two steps, because the keys for the SK payload depend on the IKE SA that the
// header names: ParseMessage() reads the header and the cleartext payloads and locates the SK
// payload; OpenSk() then authenticates, decrypts and parses what it carries.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "spigot/crypto/ike_cipher.h"
#include "spigot/crypto/prf.h"
#include "spigot/ike/constants.h"

namespace spigot::ike {

using Bytes = std::vector<std::uint8_t>;

struct Header {
  std::uint64_t spi_i = 0;
  std::uint64_t spi_r = 0;
  PayloadType next_payload = PayloadType::kNone;
  std::uint8_t version = kVersion;
  Exchange exchange = Exchange::kIkeSaInit;
  std::uint8_t flags = 0;
  std::uint32_t message_id = 0;
  std::uint32_t length = 0;

  bool is_response() const { return flags & kFlagResponse; }
  bool from_initiator() const { return flags & kFlagInitiator; }
};

struct Transform {
  TransformType type = TransformType::kEncr;
  std::uint16_t id = 0;
  std::uint16_t key_bits = 0;  // Key Length attribute; 0 = absent
  bool operator==(const Transform&) const = default;
};

struct Proposal {
  std::uint8_t number = 1;
  ProtocolId protocol = ProtocolId::kIke;
  Bytes spi;  // empty for IKE in IKE_SA_INIT; 8 octets for an IKE rekey; 4 for ESP
  std::vector<Transform> transforms;
};

struct SaPayload {
  std::vector<Proposal> proposals;
};
struct KePayload {
  std::uint16_t group = 0;
  Bytes data;
};
struct NoncePayload {
  Bytes data;
};
struct NotifyPayload {
  ProtocolId protocol = ProtocolId::kNone;
  Bytes spi;
  NotifyType type = NotifyType::kInvalidSyntax;
  Bytes data;
};
// IDi or IDr (3.5). For AUTH the "rest of the ID payload" is type, 3 reserved octets, data.
struct IdPayload {
  IdType type = IdType::kFqdn;
  Bytes data;
  Bytes Body() const;
};
struct AuthPayload {
  std::uint8_t method = kAuthSharedKey;
  Bytes data;
};
struct TrafficSelector {
  std::uint8_t type = kTsIpv4AddrRange;
  std::uint8_t ip_protocol = 0;  // 0 = any
  std::uint16_t start_port = 0;
  std::uint16_t end_port = 65535;
  std::array<std::uint8_t, 16> start{};  // IPv4 uses the first 4 octets
  std::array<std::uint8_t, 16> end{};
  std::size_t addr_len() const { return type == kTsIpv4AddrRange ? 4 : 16; }
  bool operator==(const TrafficSelector&) const = default;
};
// TSi or TSr (3.13).
struct TsPayload {
  std::vector<TrafficSelector> selectors;
};
struct DeletePayload {
  ProtocolId protocol = ProtocolId::kEsp;
  std::uint8_t spi_size = 4;
  std::vector<Bytes> spis;
};
struct VendorPayload {
  Bytes id;
};
struct CertReqPayload {
  std::uint8_t encoding = 0;
  Bytes data;
};
// CERT (3.6): encoding 4 (X.509 Certificate - Signature) carries one DER certificate.
struct CertPayload {
  std::uint8_t encoding = 0;
  Bytes data;
};
// One configuration attribute (3.15.1). `type` is the 15-bit Attribute Type (the R bit is
// dropped on receipt and sent as zero). The parser has checked the length of the types
// constants.h lists (0, or the one length 3.15.1 gives them); others are kept as they came.
struct CpAttribute {
  std::uint16_t type = 0;
  Bytes value;  // empty in a CFG_REQUEST: "assign me one" (3.15.1)
  bool operator==(const CpAttribute&) const = default;
};
// CP (3.15): a request for configuration (an internal address, 2.19) or its reply.
struct CpPayload {
  std::uint8_t cfg_type = kCfgRequest;  // kCfgRequest, kCfgReply, kCfgSet, kCfgAck
  std::vector<CpAttribute> attributes;
};
// A payload this implementation does not interpret (EAP, unknown non-critical).
struct OtherPayload {
  std::uint8_t type = 0;
  bool critical = false;
  Bytes body;
};

using PayloadBody = std::variant<SaPayload, KePayload, NoncePayload, NotifyPayload, IdPayload,
                                 AuthPayload, TsPayload, DeletePayload, VendorPayload,
                                 CertReqPayload, CertPayload, CpPayload, OtherPayload>;

struct Payload {
  PayloadType type;  // distinguishes IDi/IDr and TSi/TSr, which share a body type
  PayloadBody body;
};

// The keys that protect one direction of an IKE SA's SK payloads.
struct SkKeys {
  std::unique_ptr<crypto::IkeCipher> cipher;
  std::unique_ptr<crypto::Integrity> integ;  // null for the AEADs
};

struct Message {
  Header header;
  std::vector<Payload> payloads;  // cleartext payloads, or the decrypted SK contents
  bool encrypted = false;         // payloads travel in an SK payload

  // The first payload of a type, or null.
  template <typename T>
  const T* Find(PayloadType type) const {
    for (const auto& p : payloads) {
      if (p.type == type) return std::get_if<T>(&p.body);
    }
    return nullptr;
  }
  const NotifyPayload* FindNotify(NotifyType type) const;
  // The first error notify (type < 16384), or null.
  const NotifyPayload* FirstError() const;
};

// Why a message could not be parsed, and what to answer (3.10.1).
enum class ParseError : std::uint8_t {
  kOk = 0,
  kTruncated,             // lengths inconsistent with the datagram: drop, count
  kInvalidMajorVersion,   // answer INVALID_MAJOR_VERSION (2.5)
  kInvalidSyntax,         // answer INVALID_SYNTAX where 2.21 says to, else drop
  kUnsupportedCritical,   // answer UNSUPPORTED_CRITICAL_PAYLOAD with the type (2.5)
  kIntegrityFailed,       // SK did not verify: drop silently (2.21.2)
};
const char* ToString(ParseError e);

struct ParseResult {
  ParseError error = ParseError::kOk;
  std::uint8_t unsupported_type = 0;  // for kUnsupportedCritical
  // For an SK message: where the SK payload starts (its generic header) in the datagram, and
  // the type of the first payload inside it.
  std::size_t sk_offset = 0;
  PayloadType sk_first = PayloadType::kNone;
  // For an Encrypted Fragment payload (RFC 7383 2.5) in place of SK: sk_offset and sk_first
  // describe it (sk_first is only meaningful in fragment 1), and these are its numbers, as
  // sent (not checked against each other: see CheckFragmentNumbers in fragments.h).
  bool fragment = false;
  std::uint16_t fragment_number = 0;
  std::uint16_t total_fragments = 0;
};

// Reads only the fixed header (3.1). False if the datagram is too short or the Length field
// disagrees with the datagram's size.
bool ParseHeader(std::span<const std::uint8_t> datagram, Header& out);

// Reads the header and the cleartext payload chain. For an encrypted message, msg.encrypted is
// set and msg.payloads holds nothing from inside SK yet: call OpenSk().
ParseResult ParseMessage(std::span<const std::uint8_t> datagram, Message& msg);

// Verifies and decrypts the SK payload located by ParseMessage() and parses its contents into
// msg.payloads.
ParseResult OpenSk(std::span<const std::uint8_t> datagram, const ParseResult& located,
                   SkKeys& keys, Message& msg);

// RFC 7383 2.6: verifies one Encrypted Fragment payload located by ParseMessage (its ICV first,
// over the IKE header and the SKF header with Fragment Number and Total Fragments as associated
// data) and decrypts it. `content` receives the fragment's share of the inner payload chain,
// without padding. kIntegrityFailed: drop silently; kInvalidSyntax: bad lengths or padding.
ParseResult OpenSkf(std::span<const std::uint8_t> datagram, const ParseResult& located,
                    SkKeys& keys, Bytes& content);

// Parses a decrypted inner payload chain (a reassembled message's, RFC 7383 2.6) whose first
// payload is `first` into msg.payloads. kInvalidSyntax or kUnsupportedCritical on failure.
ParseResult ParseInner(std::span<const std::uint8_t> chain, PayloadType first, Message& msg);

// RFC 7383 2.5.3: msg.payloads as Encrypted Fragment messages of at most `max_message` octets
// each (the IKE message, without IP and UDP headers), every fragment padded, encrypted and
// integrity-protected on its own with a fresh IV; fragment 1 names the first inner payload.
// Empty if `max_message` leaves no room for content or more than 65535 fragments would be
// needed (or on an internal error).
std::vector<Bytes> SerializeFragments(const Message& msg, SkKeys& keys, std::size_t max_message);

// Serializes a message. With `keys`, msg.payloads go inside an SK payload (3.14); the header's
// next payload and length are computed. Returns an empty vector only on an internal error.
Bytes Serialize(const Message& msg, SkKeys* keys);

// Parse/serialize helpers for payload bodies used elsewhere (e.g. AUTH over the ID body).
bool ParseSaBody(std::span<const std::uint8_t> body, SaPayload& out);

}  // namespace spigot::ike
