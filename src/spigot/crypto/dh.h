// Diffie-Hellman for the IKEv2 KE payload (RFC 7296 3.4), through OpenSSL 3.
//
// Supported groups (IKEv2 transform type 4 IDs, IANA; crypto/iana.h):
//   31  Curve25519 (RFC 8031): public value and shared secret are 32-byte X25519 u-coordinates
//       (RFC 7748 5).
//   19, 20  256- and 384-bit random ECP groups (RFC 5903): the public value is x || y, each
//       coordinate 32 (48) bytes big-endian, without the SEC1 0x04 prefix; the shared secret is
//       the x-coordinate of the shared point, 32 (48) bytes (RFC 5903 7).
//   14, 15, 16  2048-, 3072-, 4096-bit MODP groups (RFC 3526), generator 2; and 2, the 1024-bit
//       MODP group of RFC 2409 6.2, which is weak (RFC 8247 2.4) and offered only where a
//       connection's allow_weak names it (ike/proposal.h). Public value g^x mod p and shared
//       secret g^xy mod p are big-endian, zero-padded on the left to the length of p: 128, 256,
//       384 or 512 bytes (RFC 7296 3.4, 2.14).
//
// A peer's public value is checked before use: its length; for ECP that it is a point on the
// curve (not at infinity, coordinates below p); for MODP that 1 < y < p - 1 (RFC 6989 2.1: for
// these safe-prime groups the range check is what is needed); for X25519 that the result is not
// zero (small-order points).
#pragma once

#include <openssl/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "spigot/crypto/iana.h"
#include "spigot/crypto/secure_bytes.h"

namespace spigot::crypto {

bool IsSupportedDhGroup(std::uint16_t group);
// Length of the KE payload's key exchange data for `group` (32, 64, 96, or the modulus length
// for MODP); 0 if unsupported.
std::size_t DhPublicValueLength(std::uint16_t group);
// Length of the shared secret g^ir for `group`; 0 if unsupported.
std::size_t DhSharedSecretLength(std::uint16_t group);

// One side's ephemeral key pair. Not thread-safe; the private key lives inside OpenSSL and is
// freed (and wiped by OpenSSL) with the object.
class DhKeyPair {
 public:
  // A fresh key pair from the CSPRNG; nullptr if `group` is unsupported.
  static std::unique_ptr<DhKeyPair> Generate(std::uint16_t group);
  // A key pair from a known private key, for known-answer tests: the 32-byte X25519 scalar
  // (RFC 7748 5, clamped on use), the big-endian ECP scalar of the coordinate length in
  // [1, n-1], or a big-endian MODP exponent x with 1 < x < p - 1 (at most the length of p).
  // nullptr if the group is unsupported or the key is malformed.
  static std::unique_ptr<DhKeyPair> FromPrivateKey(std::uint16_t group,
                                                   std::span<const std::uint8_t> private_key);

  DhKeyPair(const DhKeyPair&) = delete;
  DhKeyPair& operator=(const DhKeyPair&) = delete;
  ~DhKeyPair();

  std::uint16_t group() const { return group_; }
  // The KE payload's key exchange data (layout above).
  std::span<const std::uint8_t> public_value() const { return public_value_; }

  // The shared secret g^ir with the peer's KE data. False, with `out` cleared, if the peer value
  // is invalid: wrong length, for ECP not a point on the curve, for MODP outside 1 < y < p - 1,
  // for X25519 a point of small order (all-zero result: RFC 7748 6.1, RFC 8031).
  [[nodiscard]] bool ComputeShared(std::span<const std::uint8_t> peer_public,
                                   SecureBytes& out) const;

 private:
  DhKeyPair(std::uint16_t group, EVP_PKEY* key, std::vector<std::uint8_t> public_value)
      : group_(group), key_(key), public_value_(std::move(public_value)) {}
  static std::unique_ptr<DhKeyPair> FromKey(std::uint16_t group, EVP_PKEY* key);

  std::uint16_t group_;
  EVP_PKEY* key_;
  std::vector<std::uint8_t> public_value_;
};

}  // namespace spigot::crypto
