// IKEv2 transform IDs that spigot implements: the one definition of each number (IANA "Internet
// Key Exchange Version 2 (IKEv2) Parameters", Transform Type Values; RFC 7296 3.3.2). crypto/
// maps them to algorithms, ike/ writes and reads them in SA payloads; both include this header
// (the dependency arrow runs wire <- crypto <- ike).
#pragma once

#include <cstdint>

namespace spigot::crypto {

// Transform type 1, encryption algorithms (ENCR_*).
inline constexpr std::uint16_t kEncr3des = 3;               // RFC 2451; weak (RFC 8247 2.1)
inline constexpr std::uint16_t kEncrAesCbc = 12;            // RFC 3602; Key Length 128 or 256
inline constexpr std::uint16_t kEncrAesGcm16 = 20;          // RFC 4106, RFC 5282: 16-octet ICV
inline constexpr std::uint16_t kEncrChaCha20Poly1305 = 28;  // RFC 7634; no Key Length attribute

// Transform type 2, pseudorandom functions (PRF_*; RFC 2104 / RFC 4868).
inline constexpr std::uint16_t kPrfHmacSha1 = 2;  // RFC 2104 with SHA-1 (RFC 7296 3.3.2)
inline constexpr std::uint16_t kPrfHmacSha2_256 = 5;
inline constexpr std::uint16_t kPrfHmacSha2_384 = 6;
inline constexpr std::uint16_t kPrfHmacSha2_512 = 7;

// Transform type 3, integrity algorithms (AUTH_*). HMAC-SHA1-96 (RFC 2404): the HMAC truncated
// to 96 bits; the SHA-2 ones (RFC 4868): HMAC truncated to half its length.
inline constexpr std::uint16_t kAuthHmacSha1_96 = 2;
inline constexpr std::uint16_t kAuthHmacSha2_256_128 = 12;
inline constexpr std::uint16_t kAuthHmacSha2_384_192 = 13;
inline constexpr std::uint16_t kAuthHmacSha2_512_256 = 14;

// Transform type 4, key exchange methods (Diffie-Hellman groups).
// MODP-1024 is weak (RFC 8247 2.4: SHOULD NOT); the others are RFC 3526 groups.
inline constexpr std::uint16_t kDhGroupModp1024 = 2;     // 1024-bit MODP, RFC 2409 6.2
inline constexpr std::uint16_t kDhGroupModp2048 = 14;    // 2048-bit MODP, RFC 3526 3
inline constexpr std::uint16_t kDhGroupModp3072 = 15;    // 3072-bit MODP, RFC 3526 4
inline constexpr std::uint16_t kDhGroupModp4096 = 16;    // 4096-bit MODP, RFC 3526 5
inline constexpr std::uint16_t kDhGroupEcp256 = 19;      // 256-bit random ECP group, RFC 5903
inline constexpr std::uint16_t kDhGroupEcp384 = 20;      // 384-bit random ECP group, RFC 5903
inline constexpr std::uint16_t kDhGroupCurve25519 = 31;  // Curve25519, RFC 8031

// Transform type 5, extended sequence numbers (RFC 7296 3.3.2).
inline constexpr std::uint16_t kEsnNo = 0;
inline constexpr std::uint16_t kEsnYes = 1;

}  // namespace spigot::crypto
