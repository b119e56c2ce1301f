// The ESP data path's ciphers, through intel-ipsec-mb 1.3.
//
// An EspCipher holds the expanded keys of one SA direction: about 1 KB for AES-GCM (the
// intel-ipsec-mb `gcm_key_data` layout with its precomputed GHASH powers). That is the "hot"
// half of an SA; the SA database keeps the raw key material for every SA and expands it only
// for SAs that carry traffic (see sa/).
//
// Key material layout (RFC 7296 2.17: encryption key first, then integrity key):
//   AES-GCM (RFC 4106 8.1) / ChaCha20-Poly1305 (RFC 7634 2): key || 4-byte salt
//   AES-CBC + HMAC-SHA-256-128 (RFC 3602, RFC 4868 2.1.1): AES key || 32-byte HMAC key
//   AES-CBC + HMAC-SHA1-96 (RFC 3602, RFC 2404 3): AES key || 20-byte HMAC key
#pragma once

#include <intel-ipsec-mb.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace spigot::crypto {

enum class EspSuite : std::uint8_t {
  kAesGcm128 = 1,
  kAesGcm256,
  kChaCha20Poly1305,
  kAesCbc128HmacSha256,
  kAesCbc256HmacSha256,
  kAesCbc128HmacSha1,
  kAesCbc256HmacSha1,
};

struct EspSuiteInfo {
  EspSuite suite;
  std::string_view name;       // strongSwan's proposal keyword, e.g. "aes128gcm16"
  std::uint8_t enc_key_len;    // cipher key bytes
  std::uint8_t salt_len;       // 4 for the AEADs (RFC 4106 4, RFC 7634 2), 0 for CBC
  std::uint8_t integ_key_len;  // 32 for HMAC-SHA-256-128 (RFC 4868 2.1.1), 20 for HMAC-SHA1-96
                               // (RFC 2404 3), 0 for AEADs
  std::uint8_t iv_len;         // 8 for the AEADs (RFC 4106 3.1, RFC 7634 2), 16 for CBC
  std::uint8_t icv_len;        // 16 (GCM 16-octet ICV, Poly1305 tag, SHA-256 truncated to 128
                               // bits) or 12 (SHA-1 truncated to 96 bits, RFC 2404 2)
  std::uint8_t pad_align;      // 4 for the AEADs (RFC 4303 2.4), the AES block (16) for CBC
  bool aead;
  std::uint16_t ikev2_encr_id;   // IKEv2 transform type 1 ID (IANA): 20, 28 or 12
  std::uint16_t ikev2_integ_id;  // IKEv2 transform type 3 ID: 12 (AUTH_HMAC_SHA2_256_128),
                                 // 2 (AUTH_HMAC_SHA1_96), 0

  std::size_t keymat_len() const { return std::size_t{enc_key_len} + salt_len + integ_key_len; }
};

const EspSuiteInfo& SuiteInfo(EspSuite suite);
std::optional<EspSuite> SuiteByName(std::string_view name);

// The AEADs' ICV, and the longest of any suite (buffers for an ICV are this long).
inline constexpr std::size_t kEspIcvLen = 16;
inline constexpr std::size_t kMaxEspKeymatLen = 32 + 32;  // AES-256 key + HMAC-SHA-256 key

// One intel-ipsec-mb manager. Managers are not thread-safe: each data-path thread owns one.
class ImbManager {
 public:
  ImbManager();
  ~ImbManager();
  ImbManager(const ImbManager&) = delete;
  ImbManager& operator=(const ImbManager&) = delete;

  IMB_MGR* get() const { return mgr_; }
  // The calling thread's manager, created on first use.
  static ImbManager& ForThisThread();

 private:
  IMB_MGR* mgr_;
};

class EspCipher;

// One packet for RunCbcHmacBatch(): AES-CBC and the suite's HMAC as one chained
// intel-ipsec-mb job, in place. Encrypt: CBC over [cipher_offset, cipher_offset + cipher_len)
// of `msg`, then the HMAC over its first mac_len bytes (the ciphertext). Decrypt: the HMAC
// first, over the ciphertext, then CBC decryption. The truncated HMAC (the suite's icv_len
// bytes) goes to `tag`; comparing it, and putting it into the packet, is the caller's.
struct CbcHmacJob {
  const EspCipher* cipher = nullptr;
  bool encrypt = true;
  std::uint8_t* msg = nullptr;
  std::size_t mac_len = 0;
  std::size_t cipher_offset = 0;
  std::size_t cipher_len = 0;        // a whole number of AES blocks
  const std::uint8_t* iv = nullptr;  // 16 bytes
  alignas(16) std::uint8_t tag[kEspIcvLen];
};

// Runs the jobs through `mgr`'s multi-buffer scheduler (get_next_job / submit_job /
// flush_job): its SIMD lanes (4 to 16 by CPU) cipher and hash several packets at once, where
// one job at a time leaves all lanes but one idle until the flush. Returns when every job is
// done and the manager is empty again. Any suite mix of CBC + HMAC ciphers; never an AEAD.
void RunCbcHmacBatch(ImbManager& mgr, std::span<CbcHmacJob> jobs);

class EspCipher {
 public:
  EspCipher() = default;
  EspCipher(const EspCipher&) = delete;
  EspCipher& operator=(const EspCipher&) = delete;
  ~EspCipher() { Clear(); }

  // Expands `keymat` (layout above). False if its length does not fit the suite.
  bool Init(ImbManager& mgr, EspSuite suite, std::span<const std::uint8_t> keymat);
  void Clear();
  bool initialized() const { return initialized_; }
  EspSuite suite() const { return suite_; }

  // --- AEAD suites (GCM, ChaCha20-Poly1305). Nonce = salt || iv.
  // Encrypts `data` in place and writes the 16-byte tag to `icv`.
  void SealAead(ImbManager& mgr, const std::uint8_t* iv8, std::span<const std::uint8_t> aad,
                std::span<std::uint8_t> data, std::uint8_t* icv16) const;
  // Decrypts `data` in place; true iff the tag verifies (constant-time compare). On false the
  // contents of `data` are garbage and must be dropped.
  bool OpenAead(ImbManager& mgr, const std::uint8_t* iv8, std::span<const std::uint8_t> aad,
                std::span<std::uint8_t> data, const std::uint8_t* icv16) const;

  // --- AES-CBC + HMAC-SHA-256-128 or HMAC-SHA1-96. `data` is a whole number of AES blocks.
  void EncryptCbc(ImbManager& mgr, const std::uint8_t* iv16, std::span<std::uint8_t> data) const;
  void DecryptCbc(ImbManager& mgr, const std::uint8_t* iv16, std::span<std::uint8_t> data) const;
  // The suite's truncated HMAC over `msg`: SuiteInfo(suite()).icv_len bytes (16 for
  // HMAC-SHA-256-128, RFC 4868; 12 for HMAC-SHA1-96, RFC 2404) written to `icv`.
  void Mac(ImbManager& mgr, std::span<const std::uint8_t> msg, std::uint8_t* icv) const;
  bool VerifyMac(ImbManager& mgr, std::span<const std::uint8_t> msg, const std::uint8_t* icv) const;
  // An unpredictable CBC IV from a never-repeating counter: E_K(counter) under the SA's own
  // cipher key (NIST SP 800-38A Appendix C, the "nonce" method).
  void MakeCbcIv(ImbManager& mgr, std::uint64_t counter, std::uint8_t* iv16) const;

 private:
  friend void RunCbcHmacBatch(ImbManager& mgr, std::span<CbcHmacJob> jobs);

  EspSuite suite_ = EspSuite::kAesGcm128;
  bool initialized_ = false;
  std::uint8_t salt_[4] = {};
  // intel-ipsec-mb declares gcm_key_data without alignment; its AVX-512 code loads round keys
  // and GHASH powers 64 bytes at a time, so keep them on cache lines.
  union alignas(64) Keys {
    gcm_key_data gcm;
    struct {
      std::uint8_t key[32];
    } chacha;
    struct {
      alignas(16) std::uint8_t enc[16 * 15];
      alignas(16) std::uint8_t dec[16 * 15];
      alignas(16) std::uint8_t ipad[32];  // SHA-256 (or SHA-1) state after (key ^ ipad)
      alignas(16) std::uint8_t opad[32];  // SHA-256 (or SHA-1) state after (key ^ opad)
    } cbc;
    Keys() {}
  } keys_;
};

}  // namespace spigot::crypto
