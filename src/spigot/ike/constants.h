// IKEv2 protocol constants (RFC 7296 unless noted), each with its section.
#pragma once

#include <cstddef>
#include <cstdint>

namespace spigot::ike {

// 3.1: SPIi (8) + SPIr (8) + Next Payload (1) + Version (1) + Exchange Type (1) + Flags (1)
//      + Message ID (4) + Length (4) = 28.
inline constexpr std::size_t kHeaderLen = 8 + 8 + 1 + 1 + 1 + 1 + 4 + 4;
// 3.2: Next Payload (1) + C/reserved (1) + Payload Length (2).
inline constexpr std::size_t kPayloadHeaderLen = 4;
inline constexpr std::uint8_t kVersion = 0x20;  // 3.1: major 2, minor 0
inline constexpr std::uint8_t kMajorVersion = 2;

// 3.1 flags.
inline constexpr std::uint8_t kFlagInitiator = 0x08;
inline constexpr std::uint8_t kFlagVersion = 0x10;
inline constexpr std::uint8_t kFlagResponse = 0x20;
// 3.2: the critical bit of the generic payload header's second octet.
inline constexpr std::uint8_t kCriticalBit = 0x80;

// 3.1 exchange types.
enum class Exchange : std::uint8_t {
  kIkeSaInit = 34,
  kIkeAuth = 35,
  kCreateChildSa = 36,
  kInformational = 37,
};

// 3.2 payload types.
enum class PayloadType : std::uint8_t {
  kNone = 0,
  kSa = 33,
  kKe = 34,
  kIdi = 35,
  kIdr = 36,
  kCert = 37,
  kCertReq = 38,
  kAuth = 39,
  kNonce = 40,
  kNotify = 41,
  kDelete = 42,
  kVendor = 43,
  kTsi = 44,
  kTsr = 45,
  kSk = 46,
  kCp = 47,
  kEap = 48,
  kSkf = 53,  // RFC 7383 fragment
};

// 3.3.1 protocol IDs.
enum class ProtocolId : std::uint8_t { kNone = 0, kIke = 1, kAh = 2, kEsp = 3 };

// 3.3.2 transform types.
enum class TransformType : std::uint8_t { kEncr = 1, kPrf = 2, kInteg = 3, kDh = 4, kEsn = 5 };
// 3.3.5: the Key Length attribute, in TV format (AF bit set).
inline constexpr std::uint16_t kAttrKeyLength = 14;
inline constexpr std::uint16_t kAttrFormatTv = 0x8000;

// 3.5 identification types.
enum class IdType : std::uint8_t {
  kIpv4 = 1,
  kFqdn = 2,
  kRfc822 = 3,
  kIpv6 = 5,
  kDerAsn1Dn = 9,
  kKeyId = 11,
};

// 3.8 authentication methods (the signature methods: pki/signature.h).
inline constexpr std::uint8_t kAuthSharedKey = 2;
// 3.6, 3.7: CERT and CERTREQ encoding "X.509 Certificate - Signature".
inline constexpr std::uint8_t kCertX509Signature = 4;
// 2.15: the pad string for PSK authentication, without a terminating NUL (17 octets).
inline constexpr char kKeyPad[] = "Key Pad for IKEv2";
inline constexpr std::size_t kKeyPadLen = sizeof(kKeyPad) - 1;

// 3.13.1 traffic selector types.
inline constexpr std::uint8_t kTsIpv4AddrRange = 7;
inline constexpr std::uint8_t kTsIpv6AddrRange = 8;
// 3.13.1: type (1) + protocol (1) + length (2) + ports (2 + 2) + two addresses.
inline constexpr std::size_t kTsIpv4Len = 8 + 4 + 4;
inline constexpr std::size_t kTsIpv6Len = 8 + 16 + 16;

// 3.15 configuration payload: CFG Type (1 octet), then 3 reserved octets.
inline constexpr std::size_t kCpHeaderLen = 1 + 3;
inline constexpr std::uint8_t kCfgRequest = 1;
inline constexpr std::uint8_t kCfgReply = 2;
inline constexpr std::uint8_t kCfgSet = 3;
inline constexpr std::uint8_t kCfgAck = 4;
// 3.15.1 configuration attributes: R (1 bit) + Attribute Type (15 bits), Length (2), Value.
// The R bit MUST be sent as zero and MUST be ignored on receipt (3.15.1; 2.5 for every
// RESERVED field), so a receiver reads the type as the low 15 bits.
inline constexpr std::size_t kCpAttrHeaderLen = 2 + 2;
inline constexpr std::uint16_t kCpAttrTypeMask = 0x7FFF;
// Attribute types and their value lengths (3.15.1: each is 0 in a request that asks for one,
// or exactly the length below).
inline constexpr std::uint16_t kInternalIp4Address = 1;  // 4: the address
inline constexpr std::uint16_t kInternalIp4Netmask = 2;  // 4
inline constexpr std::uint16_t kInternalIp4Dns = 3;      // 4
inline constexpr std::uint16_t kInternalIp6Address = 8;  // 16 + 1: address, prefix length (3.15.3)
inline constexpr std::uint16_t kInternalIp6Dns = 10;     // 16
inline constexpr std::uint16_t kInternalIp4Subnet = 13;  // 4 + 4: address, netmask
inline constexpr std::uint16_t kSupportedAttributes = 14;  // a list of 2-octet types
inline constexpr std::uint16_t kInternalIp6Subnet = 15;  // 16 + 1: address, prefix length
inline constexpr std::size_t kCpIp4Len = 4;
inline constexpr std::size_t kCpIp4SubnetLen = 4 + 4;
inline constexpr std::size_t kCpIp6Len = 16;
inline constexpr std::size_t kCpIp6PrefixLen = 16 + 1;

// 3.10.1 notify message types.
enum class NotifyType : std::uint16_t {
  kUnsupportedCriticalPayload = 1,
  kInvalidIkeSpi = 4,
  kInvalidMajorVersion = 5,
  kInvalidSyntax = 7,
  kInvalidMessageId = 9,
  kInvalidSpi = 11,
  kNoProposalChosen = 14,
  kInvalidKePayload = 17,
  kAuthenticationFailed = 24,
  kSinglePairRequired = 34,
  kNoAdditionalSas = 35,
  kInternalAddressFailure = 36,
  kFailedCpRequired = 37,
  kTsUnacceptable = 38,
  kInvalidSelectors = 39,
  kUnexpectedNatDetected = 41,  // RFC 4555 3.9
  kTemporaryFailure = 43,
  kChildSaNotFound = 44,
  // Status types (16384 and up).
  kInitialContact = 16384,
  kSetWindowSize = 16385,
  kAdditionalTsPossible = 16386,
  kIpcompSupported = 16387,
  kNatDetectionSourceIp = 16388,
  kNatDetectionDestinationIp = 16389,
  kCookie = 16390,
  kUseTransportMode = 16391,
  kHttpCertLookupSupported = 16392,
  kRekeySa = 16393,
  kEspTfcPaddingNotSupported = 16394,
  kNonFirstFragmentsAlso = 16395,
  kMobikeSupported = 16396,         // RFC 4555 3.4
  kAdditionalIp4Address = 16397,    // RFC 4555 3.6
  kAdditionalIp6Address = 16398,
  kNoAdditionalAddresses = 16399,
  kUpdateSaAddresses = 16400,       // RFC 4555 3.5
  kCookie2 = 16401,                 // RFC 4555 3.7
  kNoNatsAllowed = 16402,           // RFC 4555 3.9
  kIkev2FragmentationSupported = 16430,  // RFC 7383
  kSignatureHashAlgorithms = 16431,      // RFC 7427
};
// 3.10.1: types below 16384 are errors.
inline constexpr std::uint16_t kFirstStatusNotify = 16384;

// 2.10: nonces are at least 16 octets and at most 256; at least half the PRF key size.
inline constexpr std::size_t kMinNonceLen = 16;
inline constexpr std::size_t kMaxNonceLen = 256;
inline constexpr std::size_t kNonceLen = 32;  // what spigot sends

// 2.6: a cookie is 1 to 64 octets.
inline constexpr std::size_t kMaxCookieLen = 64;
// RFC 4555 3.7: COOKIE2's data is 8 to 64 octets.
inline constexpr std::size_t kCookie2MinLen = 8;
inline constexpr std::size_t kCookie2MaxLen = 64;

// 2.23: with NAT-T, IKE moves to UDP 4500 behind a 4-octet non-ESP marker (RFC 3948 2.2).
inline constexpr std::uint16_t kIkePort = 500;
inline constexpr std::uint16_t kNatTPort = 4500;

// RFC 7383 2.5: the Encrypted Fragment payload (SKF) is the generic payload header followed by
// Fragment Number (2) and Total Fragments (2), then IV, encrypted content and ICV as in SK.
inline constexpr std::size_t kSkfFieldsLen = 2 + 2;
inline constexpr std::size_t kSkfHeaderLen = kPayloadHeaderLen + kSkfFieldsLen;  // 8
// RFC 7383 2.5.1: fragment_size counts the whole IP datagram. What comes before the IKE header:
// IPv4 20 (no options) or IPv6 40, UDP 8, and the non-ESP marker 4 on port 4500 (RFC 3948 2.2).
// spigot always reserves the marker: whether a datagram leaves on 4500 is the host's business,
// and a fragment 4 octets shorter than it could be costs nothing.
inline constexpr std::size_t kIpv4HeaderLen = 20;
inline constexpr std::size_t kIpv6HeaderLen = 40;
inline constexpr std::size_t kUdpHeaderLen = 8;
inline constexpr std::size_t kNonEspMarkerLen = 4;
// RFC 7383 2.5.1: 1280 octets (the IPv6 minimum MTU) is what every path carries unfragmented.
inline constexpr std::size_t kDefaultFragmentSize = 1280;
// The smallest fragment_size accepted: IPv6 + UDP + marker (52) + IKE header (28) + SKF header
// (8) + the largest IV (16) and ICV (32: HMAC-SHA2-512-256) + one block of content (16) = 152,
// rounded up so that every suite carries some payload octets in every fragment.
inline constexpr std::size_t kMinFragmentSize = 160;

// The largest IKE message spigot accepts: 3.1 allows 2^32 - 1, but a UDP datagram carries at
// most 65535 - 8 (UDP) - 20 (IPv4) = 65507 octets.
inline constexpr std::size_t kMaxMessageLen = 65535 - 8 - 20;

}  // namespace spigot::ike
