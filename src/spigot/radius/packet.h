// RADIUS packets as an EAP pass-through NAS sends and receives them (RFC 2865 3, RFC 3579 3):
// parsing, serialising, building an Access-Request, checking a reply's authenticators and
// reading what a reply says. Pure functions: no sockets, no clock; the client (client.h) puts
// them on the wire.
//
// Parse() refuses what RFC 2865 3 does not allow (it never reads past what it was given).
// CheckReply() says why a reply must be dropped; only a kOk reply may be read with
// ReadReply(). Secrets and the keys a reply carries stay in crypto::SecureBytes and are never
// part of a return value that could be logged.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "spigot/crypto/secure_bytes.h"
#include "spigot/radius/constants.h"

namespace spigot::radius {

using Bytes = std::vector<std::uint8_t>;
using Authenticator = std::array<std::uint8_t, kAuthenticatorLen>;

struct Attribute {
  std::uint8_t type = 0;
  Bytes value;  // at most kMaxAttributeValueLen octets
  bool operator==(const Attribute&) const = default;
};

struct Packet {
  std::uint8_t code = 0;  // a Code, or anything else a peer sent
  std::uint8_t identifier = 0;
  Authenticator authenticator{};
  std::vector<Attribute> attributes;  // in wire order
  bool operator==(const Packet&) const = default;
};

// nullopt for anything RFC 2865 3 does not allow: fewer than 20 bytes, a Length below 20,
// above 4096 or above the bytes given, an attribute shorter than 2 or running past Length.
// Bytes after Length are padding and ignored (RFC 2865 3).
std::optional<Packet> Parse(std::span<const std::uint8_t> datagram);
// The packet's Length field when Parse() would accept `datagram`; 0 otherwise.
std::size_t PacketLength(std::span<const std::uint8_t> datagram);
// nullopt if a value is longer than 253 octets or the packet longer than 4096.
std::optional<Bytes> Serialize(const Packet& packet);

// What an EAP pass-through Access-Request carries besides the EAP packet's own framing.
struct AccessRequestFields {
  std::string user_name;                              // User-Name (RFC 3579 2.1: the EAP identity)
  std::string nas_identifier;                         // NAS-Identifier; omitted if empty
  std::optional<std::array<std::uint8_t, 4>> nas_ip;  // NAS-IP-Address
  std::string called_station;                         // Called-Station-Id: the gateway; omitted if empty
  std::string calling_station;                        // Calling-Station-Id: the peer; omitted if empty
  std::uint32_t framed_mtu = kDefaultFramedMtu;       // Framed-MTU; 0 omits it
  Bytes state;                                        // State of the last Access-Challenge; omitted if empty
  Bytes eap_message;                                  // one EAP packet, split into 253-octet attributes
};

// An Access-Request with Service-Type Framed, NAS-Port-Type Virtual and a Message-Authenticator
// (RFC 3579 3.2: HMAC-MD5 keyed with the secret over the packet with that attribute's value
// zeroed). nullopt if it would not fit in 4096 octets, a string field is longer than 253, or
// there is no EAP-Message.
std::optional<Bytes> BuildAccessRequest(const AccessRequestFields& fields, std::uint8_t identifier,
                                        const Authenticator& request_authenticator,
                                        std::span<const std::uint8_t> secret);

enum class ReplyCheck : std::uint8_t {
  kOk,
  kMalformed,                // Parse() refused it, or its code is not Accept/Reject/Challenge
  kBadAuthenticator,         // Response Authenticator (RFC 2865 3) does not verify
  kBadMessageAuthenticator,  // missing with an EAP-Message, or wrong (RFC 3579 3.2)
};
// Checks a reply to the request that had `request_authenticator`: the Response Authenticator
// MD5(Code|Identifier|Length|RequestAuthenticator|Attributes|Secret), and the
// Message-Authenticator, which must be present when there is an EAP-Message and must verify
// (computed over the reply with the request authenticator in place of its own) whenever present.
ReplyCheck CheckReply(std::span<const std::uint8_t> datagram, const Authenticator& request_authenticator,
                      std::span<const std::uint8_t> secret);

// What the gateway takes from a checked reply.
struct ReplyAttributes {
  Bytes eap_message;                                      // the EAP-Message attributes joined
  Bytes state;                                            // State (the first one)
  std::optional<std::array<std::uint8_t, 4>> framed_ip;   // Framed-IP-Address, if 4 octets
  std::vector<Bytes> classes;                             // every Class, in order
  std::string reply_message;                              // Reply-Message attributes joined
  // MS-MPPE-Recv-Key | MS-MPPE-Send-Key decrypted (RFC 2548 2.4.2/2.4.3), zero-padded or cut
  // to kMskLen octets; empty unless both keys are present and decrypt.
  crypto::SecureBytes msk;
};
ReplyAttributes ReadReply(const Packet& reply, const Authenticator& request_authenticator,
                          std::span<const std::uint8_t> secret);

// RFC 2548 2.4.2: the String of an MS-MPPE-*-Key sub-attribute (Salt, then the encrypted
// Key-Length | Key | padding) back to the key; nullopt if the length is not Salt plus a
// positive multiple of 16 or Key-Length runs past the decrypted bytes.
std::optional<crypto::SecureBytes> DecryptMppeKey(std::span<const std::uint8_t> salt_and_string,
                                                  const Authenticator& request_authenticator,
                                                  std::span<const std::uint8_t> secret);
// The server side of the same (for tests and the fuzzer's round trip): Salt | encrypted
// String. `salt`'s most significant bit is set here as RFC 2548 2.4.2 requires. nullopt for a
// key longer than 255 octets.
std::optional<Bytes> EncryptMppeKey(std::span<const std::uint8_t> key, std::uint16_t salt,
                                    const Authenticator& request_authenticator,
                                    std::span<const std::uint8_t> secret);

// MD5 and HMAC-MD5 over several parts (OpenSSL's default provider).
using Md5Digest = std::array<std::uint8_t, 16>;
Md5Digest Md5(std::initializer_list<std::span<const std::uint8_t>> parts);
Md5Digest HmacMd5(std::span<const std::uint8_t> key, std::span<const std::uint8_t> data);

}  // namespace spigot::radius
