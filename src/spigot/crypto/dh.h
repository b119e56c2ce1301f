// Diffie-Hellman for the IKEv2 KE payload (RFC 7296 3.4), through OpenSSL 3.
//
// Supported groups (IKEv2 transform type 4 IDs, IANA):
//   31  Curve25519 (RFC 8031): public value and shared secret are 32-byte X25519 u-coordinates
//       (RFC 7748 5).
//   19  256-bit random ECP group (RFC 5903): public value is x || y, 32 bytes each, big-endian,
//       without the SEC1 0x04 prefix; the shared secret is the x-coordinate of the shared point,
//       32 bytes (RFC 5903 7).
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

// kDhGroupEcp256, kDhGroupCurve25519: crypto/iana.h.

bool IsSupportedDhGroup(std::uint16_t group);
// Length of the KE payload's key exchange data for `group` (32 or 64); 0 if unsupported.
std::size_t DhPublicValueLength(std::uint16_t group);

// One side's ephemeral key pair. Not thread-safe; the private key lives inside OpenSSL and is
// freed (and wiped by OpenSSL) with the object.
class DhKeyPair {
 public:
  // A fresh key pair from the CSPRNG; nullptr if `group` is unsupported.
  static std::unique_ptr<DhKeyPair> Generate(std::uint16_t group);
  // A key pair from a known private key, for known-answer tests: the 32-byte X25519 scalar
  // (RFC 7748 5, clamped on use) or the 32-byte big-endian ECP-256 scalar in [1, n-1].
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
  // is invalid: wrong length, for ECP-256 not a point on the curve, for X25519 a point of small
  // order (all-zero result: RFC 7748 6.1, RFC 8031).
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
