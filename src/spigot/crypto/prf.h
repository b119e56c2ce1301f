// IKEv2 pseudorandom functions and integrity algorithms: HMAC-SHA-256/384/512 (RFC 4868) and
// HMAC-SHA-1 (RFC 2104; HMAC-SHA1-96 for integrity, RFC 2404), through OpenSSL 3's EVP_MAC.
#pragma once

#include <openssl/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>

#include "spigot/crypto/iana.h"
#include "spigot/crypto/secure_bytes.h"

namespace spigot::crypto {

// IKEv2 transform type 2 IDs (iana.h; RFC 4868).
enum class PrfAlg : std::uint16_t {
  kHmacSha1 = kPrfHmacSha1,
  kHmacSha256 = kPrfHmacSha2_256,
  kHmacSha384 = kPrfHmacSha2_384,
  kHmacSha512 = kPrfHmacSha2_512,
};

// IKEv2 transform type 3 IDs (iana.h): HMAC-SHA-1 truncated to 96 bits (RFC 2404); the SHA-2
// HMACs truncated to half the hash length (RFC 4868).
enum class IntegAlg : std::uint16_t {
  kHmacSha1_96 = kAuthHmacSha1_96,
  kHmacSha256_128 = kAuthHmacSha2_256_128,
  kHmacSha384_192 = kAuthHmacSha2_384_192,
  kHmacSha512_256 = kAuthHmacSha2_512_256,
};

std::optional<PrfAlg> PrfAlgFromId(std::uint16_t transform_id);
std::optional<IntegAlg> IntegAlgFromId(std::uint16_t transform_id);

// Output length of the PRF, which is also its preferred key length (RFC 7296 2.13; 20, 32, 48,
// 64).
std::size_t PrfOutputLength(PrfAlg alg);
// Key length of the integrity algorithm: the hash length (RFC 2404 3, RFC 4868 2.1.1; 20, 32,
// 48, 64).
std::size_t IntegKeyLength(IntegAlg alg);
// Length of the truncated ICV: 12 for HMAC-SHA1-96 (RFC 2404 2), else the leftmost half of the
// HMAC (RFC 4868 2.1.3; 16, 24, 32).
std::size_t IntegIcvLength(IntegAlg alg);

// prf(key, data) (RFC 7296 2.13): HMAC with the full output. Any key length (RFC 2104 2).
// Aborts if OpenSSL fails internally (memory exhaustion), like RandomBytes.
SecureBytes Prf(PrfAlg alg, std::span<const std::uint8_t> key, std::span<const std::uint8_t> data);

// prf+ is defined for at most 255 iterations of prf (RFC 7296 2.13).
inline constexpr std::size_t kMaxPrfPlusBlocks = 255;

// prf+(key, seed) truncated to `length` bytes (RFC 7296 2.13):
//   T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n), prf+ = T1 | T2 | ...
// nullopt if `length` needs more than kMaxPrfPlusBlocks blocks.
std::optional<SecureBytes> PrfPlus(PrfAlg alg, std::span<const std::uint8_t> key,
                                   std::span<const std::uint8_t> seed, std::size_t length);

// An integrity key (SK_ai or SK_ar, RFC 7296 2.14), kept keyed inside OpenSSL and reused for
// every message of the IKE SA. Not thread-safe.
class Integrity {
 public:
  // nullptr if key.size() != IntegKeyLength(alg).
  static std::unique_ptr<Integrity> Create(IntegAlg alg, std::span<const std::uint8_t> key);

  Integrity(const Integrity&) = delete;
  Integrity& operator=(const Integrity&) = delete;
  ~Integrity();

  IntegAlg alg() const { return alg_; }
  std::size_t icv_length() const { return IntegIcvLength(alg_); }

  // Writes the truncated ICV of `data` to `icv`, whose size must be icv_length() (aborts
  // otherwise: a caller bug).
  void Compute(std::span<const std::uint8_t> data, std::span<std::uint8_t> icv);
  // True iff `icv` is the ICV of `data`; compared in constant time.
  [[nodiscard]] bool Verify(std::span<const std::uint8_t> data, std::span<const std::uint8_t> icv);

 private:
  Integrity(IntegAlg alg, EVP_MAC_CTX* ctx) : alg_(alg), ctx_(ctx) {}

  IntegAlg alg_;
  EVP_MAC_CTX* ctx_;
};

}  // namespace spigot::crypto
