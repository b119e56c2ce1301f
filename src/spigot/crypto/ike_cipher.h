// The cipher of the IKE Encrypted (SK) payload (RFC 7296 3.14), through OpenSSL 3.
//
//   AES-GCM with a 16-octet ICV (RFC 5282): keymat = AES key || 4-byte salt, nonce = salt ||
//     8-byte IV. The AAD is the IKE header through the SK payload header, built by the caller.
//   ChaCha20-Poly1305 (RFC 7634 2, 3): keymat = 32-byte key || 4-byte salt, nonce = salt ||
//     8-byte IV, AAD as for GCM.
//   AES-CBC (RFC 3602, RFC 7296 3.14): keymat = AES key, 16-byte IV, the plaintext a whole number
//     of blocks, padded by the caller. Integrity is separate: an Integrity (prf.h) over the
//     message up to the ICV, computed and checked by the caller.
//   3DES-CBC (RFC 2451): as AES-CBC with a 24-byte key, 8-byte IV and blocks. Weak (RFC 8247
//     2.1): negotiated only where a connection's allow_weak names it (ike/proposal.h).
//
// Keymat is SK_ei or SK_er as taken from prf+ (RFC 7296 2.14); the salt is its last 4 bytes.
#pragma once

#include <openssl/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>

#include "spigot/crypto/secure_bytes.h"

namespace spigot::crypto {

enum class IkeEncr : std::uint8_t {
  kAesCbc128,
  kAesCbc256,
  kAesGcm16_128,
  kAesGcm16_256,
  kChaCha20Poly1305,
  k3desCbc,
};

struct IkeEncrInfo {
  IkeEncr encr;
  std::uint16_t transform_id;  // IKEv2 transform type 1 ID (iana.h): kEncrAesCbc, ...
  std::uint16_t key_bits;      // Key Length attribute (RFC 7296 3.3.5); 0: none (RFC 7634)
  std::uint8_t key_len;
  std::uint8_t salt_len;   // 4 for the AEADs, 0 for CBC
  std::uint8_t iv_len;     // the IV carried in the SK payload: 8 for the AEADs and 3DES, 16 for
                           // AES-CBC
  std::uint8_t icv_len;    // 16 for the AEADs; 0 for CBC, whose ICV is the integrity algorithm's
  std::uint8_t block_len;  // the plaintext length must be a multiple of this: 1, or the cipher
                           // block for CBC (16, 8 for 3DES)
  bool aead;

  std::size_t keymat_len() const { return std::size_t{key_len} + salt_len; }
};

const IkeEncrInfo& IkeEncrInfoFor(IkeEncr encr);
// The algorithm for a transform ID and its Key Length attribute (0 when absent); nullopt if
// unsupported.
std::optional<IkeEncr> IkeEncrFromTransform(std::uint16_t transform_id, std::uint16_t key_bits);

// One direction's key (SK_ei or SK_er). OpenSSL contexts are keyed once, lazily, one for each
// direction that is used, and reused for every message. Not thread-safe.
class IkeCipher {
 public:
  // nullptr if keymat.size() != IkeEncrInfoFor(encr).keymat_len().
  static std::unique_ptr<IkeCipher> Create(IkeEncr encr, std::span<const std::uint8_t> keymat);

  IkeCipher(const IkeCipher&) = delete;
  IkeCipher& operator=(const IkeCipher&) = delete;
  ~IkeCipher();

  const IkeEncrInfo& info() const { return *info_; }

  // --- AEAD suites. False if the suite is CBC, a length is wrong, or OpenSSL fails.
  // Encrypts `data` in place and writes the ICV (icv_len bytes). The caller must never use an IV
  // twice under one key (RFC 5282; a message counter serves), or the AEAD loses its security.
  [[nodiscard]] bool Seal(std::span<const std::uint8_t> iv, std::span<const std::uint8_t> aad,
                          std::span<std::uint8_t> data, std::span<std::uint8_t> icv);
  // Decrypts `data` in place; true iff the ICV verifies (OpenSSL compares tags with
  // CRYPTO_memcmp, in constant time). On false `data` is zeroed: no unauthenticated plaintext
  // is left behind.
  [[nodiscard]] bool Open(std::span<const std::uint8_t> iv, std::span<const std::uint8_t> aad,
                          std::span<std::uint8_t> data, std::span<const std::uint8_t> icv);

  // --- AES-CBC and 3DES-CBC, in place, without OpenSSL padding. False if the suite is an AEAD,
  // the IV is not iv_len bytes, or `data` is not a whole number of blocks.
  [[nodiscard]] bool EncryptCbc(std::span<const std::uint8_t> iv, std::span<std::uint8_t> data);
  [[nodiscard]] bool DecryptCbc(std::span<const std::uint8_t> iv, std::span<std::uint8_t> data);

 private:
  IkeCipher(const IkeEncrInfo& info, std::span<const std::uint8_t> keymat)
      : info_(&info), keymat_(keymat) {}
  EVP_CIPHER_CTX* Ctx(bool encrypt);
  bool Aead(bool encrypt, std::span<const std::uint8_t> iv, std::span<const std::uint8_t> aad,
            std::span<std::uint8_t> data, std::span<std::uint8_t> icv);
  bool Cbc(bool encrypt, std::span<const std::uint8_t> iv, std::span<std::uint8_t> data);

  const IkeEncrInfo* info_;
  SecureBytes keymat_;
};

}  // namespace spigot::crypto
