// RADIUS protocol constants (RFC 2865, RFC 3579, RFC 2548), each with its source. The one
// definition of each IANA number the radius module uses.
#pragma once

#include <cstddef>
#include <cstdint>

namespace spigot::radius {

// RFC 2865 3: Code (1) + Identifier (1) + Length (2) + Authenticator (16).
inline constexpr std::size_t kAuthenticatorLen = 16;
inline constexpr std::size_t kHeaderLen = 1 + 1 + 2 + kAuthenticatorLen;  // 20
// RFC 2865 3: "The minimum length is 20 and maximum length is 4096."
inline constexpr std::size_t kMinPacketLen = kHeaderLen;
inline constexpr std::size_t kMaxPacketLen = 4096;
// RFC 2865 5: Type (1) + Length (1) + Value, Length counting the whole attribute in one octet:
// a value holds at most 255 - 2 = 253 octets.
inline constexpr std::size_t kAttributeHeaderLen = 1 + 1;
inline constexpr std::size_t kMaxAttributeValueLen = 255 - kAttributeHeaderLen;  // 253

// RFC 2865 3 / RFC 2866: the UDP port of the authentication service.
inline constexpr std::uint16_t kDefaultAuthPort = 1812;

// RFC 2865 3 (Code field) and RFC 2865 4.
enum class Code : std::uint8_t {
  kAccessRequest = 1,
  kAccessAccept = 2,
  kAccessReject = 3,
  kAccessChallenge = 11,
};

// RFC 2865 5 and RFC 3579 3 (Attribute types).
namespace attr {
inline constexpr std::uint8_t kUserName = 1;           // RFC 2865 5.1
inline constexpr std::uint8_t kNasIpAddress = 4;       // RFC 2865 5.4, 4 octets
inline constexpr std::uint8_t kServiceType = 6;        // RFC 2865 5.6, 4 octets
inline constexpr std::uint8_t kFramedIpAddress = 8;    // RFC 2865 5.8, 4 octets
inline constexpr std::uint8_t kFramedMtu = 12;         // RFC 2865 5.12, 4 octets
inline constexpr std::uint8_t kReplyMessage = 18;      // RFC 2865 5.18
inline constexpr std::uint8_t kState = 24;             // RFC 2865 5.24
inline constexpr std::uint8_t kClass = 25;             // RFC 2865 5.25
inline constexpr std::uint8_t kVendorSpecific = 26;    // RFC 2865 5.26
inline constexpr std::uint8_t kCalledStationId = 30;   // RFC 2865 5.30
inline constexpr std::uint8_t kCallingStationId = 31;  // RFC 2865 5.31
inline constexpr std::uint8_t kNasIdentifier = 32;     // RFC 2865 5.32
inline constexpr std::uint8_t kNasPortType = 61;       // RFC 2865 5.41, 4 octets
inline constexpr std::uint8_t kEapMessage = 79;        // RFC 3579 3.1
inline constexpr std::uint8_t kMessageAuthenticator = 80;  // RFC 3579 3.2
}  // namespace attr

// RFC 2865 5.6: Service-Type "Framed"; RFC 2865 5.41: NAS-Port-Type "Virtual".
inline constexpr std::uint32_t kServiceTypeFramed = 2;
inline constexpr std::uint32_t kNasPortTypeVirtual = 5;

// RFC 3579 3.2: Message-Authenticator = HMAC-MD5, 16 octets.
inline constexpr std::size_t kMessageAuthenticatorLen = 16;

// RFC 2865 5.26: Vendor-Id (4) then the vendor's own data; RFC 2548 2: Microsoft's is 311 and
// its data are sub-attributes of Vendor-Type (1) + Vendor-Length (1) + value.
inline constexpr std::uint32_t kVendorMicrosoft = 311;
inline constexpr std::size_t kVendorIdLen = 4;
inline constexpr std::size_t kVendorAttributeHeaderLen = 1 + 1;
// RFC 2548 2.4.3 / 2.4.2.
inline constexpr std::uint8_t kMsMppeSendKey = 16;
inline constexpr std::uint8_t kMsMppeRecvKey = 17;
// RFC 2548 2.4.2: Salt (2 octets, most significant bit set), then the encrypted String: a
// Key-Length octet, the key and zero padding to a multiple of 16 octets (the MD5 block).
inline constexpr std::size_t kMppeSaltLen = 2;
inline constexpr std::size_t kMppeBlockLen = 16;

// The EAP MSK taken from a RADIUS Access-Accept: MS-MPPE-Recv-Key | MS-MPPE-Send-Key (as
// strongSwan's eap-radius joins them), 32 + 32 = 64 octets, padded with zeros or cut to 64.
inline constexpr std::size_t kMskLen = 32 + 32;

// RFC 3579 2.2 / RFC 2865 5.12: the largest EAP packet the server should send us. Each EAP
// packet travels in an IKE_AUTH message, so the server's EAP-TLS fragments are cut to this.
inline constexpr std::uint32_t kDefaultFramedMtu = 1400;

}  // namespace spigot::radius
