#include "spigot/crypto/esp_cipher.h"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "spigot/crypto/secure_bytes.h"

namespace spigot::crypto {
namespace {

constexpr std::array<EspSuiteInfo, 7> kSuites = {{
    // suite, name, key, salt, integ, iv, icv, pad_align, aead, encr id, integ id
    {EspSuite::kAesGcm128, "aes128gcm16", 16, 4, 0, 8, 16, 4, true, 20, 0},
    {EspSuite::kAesGcm256, "aes256gcm16", 32, 4, 0, 8, 16, 4, true, 20, 0},
    {EspSuite::kChaCha20Poly1305, "chacha20poly1305", 32, 4, 0, 8, 16, 4, true, 28, 0},
    {EspSuite::kAesCbc128HmacSha256, "aes128-sha256", 16, 0, 32, 16, 16, 16, false, 12, 12},
    {EspSuite::kAesCbc256HmacSha256, "aes256-sha256", 32, 0, 32, 16, 16, 16, false, 12, 12},
    {EspSuite::kAesCbc128HmacSha1, "aes128-sha1", 16, 0, 20, 16, 12, 16, false, 12, 2},
    {EspSuite::kAesCbc256HmacSha1, "aes256-sha1", 32, 0, 20, 16, 12, 16, false, 12, 2},
}};

constexpr std::size_t kHmacBlock = 64;  // SHA-1 and SHA-256 block size

bool IsSha1(EspSuite suite) {
  return suite == EspSuite::kAesCbc128HmacSha1 || suite == EspSuite::kAesCbc256HmacSha1;
}

[[noreturn]] void FatalImb(const char* what) {
  std::fprintf(stderr, "spigot: fatal: intel-ipsec-mb: %s\n", what);
  std::abort();
}

// Runs one job synchronously: submit, then flush until it comes back. The data path uses the
// AEAD direct APIs; the job API serves only the CBC + HMAC suites.
void RunJob(IMB_MGR* mgr, IMB_JOB* job) {
  IMB_JOB* done = IMB_SUBMIT_JOB(mgr);
  while (done == nullptr || done != job) {
    if (done != nullptr && done->status != IMB_STATUS_COMPLETED) FatalImb("job failed");
    done = IMB_FLUSH_JOB(mgr);
    if (done == nullptr) FatalImb("job lost");
  }
  if (job->status != IMB_STATUS_COMPLETED) FatalImb("job failed");
}

}  // namespace

// kSuites is in enum order from 1: the per-packet lookup is an index.
static_assert([] {
  for (std::size_t i = 0; i < kSuites.size(); ++i) {
    if (static_cast<std::size_t>(kSuites[i].suite) != i + 1) return false;
  }
  return true;
}());

const EspSuiteInfo& SuiteInfo(EspSuite suite) {
  const std::size_t i = static_cast<std::size_t>(suite) - 1;
  if (i >= kSuites.size()) FatalImb("unknown ESP suite");
  return kSuites[i];
}

std::optional<EspSuite> SuiteByName(std::string_view name) {
  for (const auto& s : kSuites) {
    if (s.name == name) return s.suite;
  }
  return std::nullopt;
}

ImbManager::ImbManager() : mgr_(alloc_mb_mgr(0)) {
  if (mgr_ == nullptr) FatalImb("alloc_mb_mgr failed");
  init_mb_mgr_auto(mgr_, nullptr);
  if (imb_get_errno(mgr_) != 0) FatalImb("init_mb_mgr_auto failed");
}

ImbManager::~ImbManager() { free_mb_mgr(mgr_); }

ImbManager& ImbManager::ForThisThread() {
  thread_local ImbManager mgr;
  return mgr;
}

void EspCipher::Clear() {
  if (initialized_) Wipe(&keys_, sizeof(keys_));
  Wipe(salt_, sizeof(salt_));
  initialized_ = false;
}

bool EspCipher::Init(ImbManager& mgr, EspSuite suite, std::span<const std::uint8_t> keymat) {
  const EspSuiteInfo& info = SuiteInfo(suite);
  if (keymat.size() != info.keymat_len()) return false;
  Clear();
  suite_ = suite;
  IMB_MGR* m = mgr.get();
  const std::uint8_t* key = keymat.data();
  switch (suite) {
    case EspSuite::kAesGcm128:
      IMB_AES128_GCM_PRE(m, key, &keys_.gcm);
      break;
    case EspSuite::kAesGcm256:
      IMB_AES256_GCM_PRE(m, key, &keys_.gcm);
      break;
    case EspSuite::kChaCha20Poly1305:
      std::memcpy(keys_.chacha.key, key, 32);
      break;
    case EspSuite::kAesCbc128HmacSha256:
    case EspSuite::kAesCbc256HmacSha256:
    case EspSuite::kAesCbc128HmacSha1:
    case EspSuite::kAesCbc256HmacSha1: {
      if (info.enc_key_len == 16) {
        IMB_AES_KEYEXP_128(m, key, keys_.cbc.enc, keys_.cbc.dec);
      } else {
        IMB_AES_KEYEXP_256(m, key, keys_.cbc.enc, keys_.cbc.dec);
      }
      // HMAC (RFC 2104): precompute the hash states after (K ^ ipad) and (K ^ opad).
      const std::uint8_t* mac_key = key + info.enc_key_len;
      const bool sha1 = IsSha1(suite);
      alignas(16) std::uint8_t block[kHmacBlock];
      std::memset(block, 0x36, sizeof(block));
      for (std::size_t i = 0; i < info.integ_key_len; ++i) block[i] ^= mac_key[i];
      if (sha1) {
        IMB_SHA1_ONE_BLOCK(m, block, keys_.cbc.ipad);
      } else {
        IMB_SHA256_ONE_BLOCK(m, block, keys_.cbc.ipad);
      }
      std::memset(block, 0x5c, sizeof(block));
      for (std::size_t i = 0; i < info.integ_key_len; ++i) block[i] ^= mac_key[i];
      if (sha1) {
        IMB_SHA1_ONE_BLOCK(m, block, keys_.cbc.opad);
      } else {
        IMB_SHA256_ONE_BLOCK(m, block, keys_.cbc.opad);
      }
      Wipe(block, sizeof(block));
      break;
    }
  }
  if (info.salt_len != 0) std::memcpy(salt_, key + info.enc_key_len, info.salt_len);
  initialized_ = true;
  return true;
}

void EspCipher::SealAead(ImbManager& mgr, const std::uint8_t* iv8,
                         std::span<const std::uint8_t> aad, std::span<std::uint8_t> data,
                         std::uint8_t* icv16) const {
  IMB_MGR* m = mgr.get();
  alignas(16) std::uint8_t nonce[12];
  std::memcpy(nonce, salt_, 4);
  std::memcpy(nonce + 4, iv8, 8);
  switch (suite_) {
    case EspSuite::kAesGcm128: {
      gcm_context_data ctx;
      IMB_AES128_GCM_ENC(m, &keys_.gcm, &ctx, data.data(), data.data(), data.size(), nonce,
                         aad.data(), aad.size(), icv16, kEspIcvLen);
      break;
    }
    case EspSuite::kAesGcm256: {
      gcm_context_data ctx;
      IMB_AES256_GCM_ENC(m, &keys_.gcm, &ctx, data.data(), data.data(), data.size(), nonce,
                         aad.data(), aad.size(), icv16, kEspIcvLen);
      break;
    }
    case EspSuite::kChaCha20Poly1305: {
      chacha20_poly1305_context_data ctx;
      IMB_CHACHA20_POLY1305_INIT(m, keys_.chacha.key, &ctx, nonce, aad.data(), aad.size());
      IMB_CHACHA20_POLY1305_ENC_UPDATE(m, keys_.chacha.key, &ctx, data.data(), data.data(),
                                       data.size());
      IMB_CHACHA20_POLY1305_ENC_FINALIZE(m, &ctx, icv16, kEspIcvLen);
      break;
    }
    default:
      FatalImb("SealAead on a non-AEAD suite");
  }
}

bool EspCipher::OpenAead(ImbManager& mgr, const std::uint8_t* iv8,
                         std::span<const std::uint8_t> aad, std::span<std::uint8_t> data,
                         const std::uint8_t* icv16) const {
  IMB_MGR* m = mgr.get();
  alignas(16) std::uint8_t nonce[12];
  std::memcpy(nonce, salt_, 4);
  std::memcpy(nonce + 4, iv8, 8);
  std::uint8_t tag[kEspIcvLen];
  switch (suite_) {
    case EspSuite::kAesGcm128: {
      gcm_context_data ctx;
      IMB_AES128_GCM_DEC(m, &keys_.gcm, &ctx, data.data(), data.data(), data.size(), nonce,
                         aad.data(), aad.size(), tag, kEspIcvLen);
      break;
    }
    case EspSuite::kAesGcm256: {
      gcm_context_data ctx;
      IMB_AES256_GCM_DEC(m, &keys_.gcm, &ctx, data.data(), data.data(), data.size(), nonce,
                         aad.data(), aad.size(), tag, kEspIcvLen);
      break;
    }
    case EspSuite::kChaCha20Poly1305: {
      chacha20_poly1305_context_data ctx;
      IMB_CHACHA20_POLY1305_INIT(m, keys_.chacha.key, &ctx, nonce, aad.data(), aad.size());
      IMB_CHACHA20_POLY1305_DEC_UPDATE(m, keys_.chacha.key, &ctx, data.data(), data.data(),
                                       data.size());
      IMB_CHACHA20_POLY1305_DEC_FINALIZE(m, &ctx, tag, kEspIcvLen);
      break;
    }
    default:
      FatalImb("OpenAead on a non-AEAD suite");
  }
  return ConstantTimeEqual({tag, kEspIcvLen}, {icv16, kEspIcvLen});
}

namespace {

void CbcJob(IMB_MGR* m, const void* enc, const void* dec, std::uint64_t key_len,
            IMB_CIPHER_DIRECTION dir, const std::uint8_t* iv16, std::span<std::uint8_t> data) {
  IMB_JOB* job = IMB_GET_NEXT_JOB(m);
  job->cipher_mode = IMB_CIPHER_CBC;
  job->cipher_direction = dir;
  job->chain_order = dir == IMB_DIR_ENCRYPT ? IMB_ORDER_CIPHER_HASH : IMB_ORDER_HASH_CIPHER;
  job->hash_alg = IMB_AUTH_NULL;
  job->enc_keys = enc;
  job->dec_keys = dec;
  job->key_len_in_bytes = key_len;
  job->src = data.data();
  job->dst = data.data();
  job->cipher_start_src_offset_in_bytes = 0;
  job->msg_len_to_cipher_in_bytes = data.size();
  job->iv = iv16;
  job->iv_len_in_bytes = 16;
  RunJob(m, job);
}

}  // namespace

void EspCipher::EncryptCbc(ImbManager& mgr, const std::uint8_t* iv16,
                           std::span<std::uint8_t> data) const {
  CbcJob(mgr.get(), keys_.cbc.enc, keys_.cbc.dec, SuiteInfo(suite_).enc_key_len, IMB_DIR_ENCRYPT,
         iv16, data);
}

void EspCipher::DecryptCbc(ImbManager& mgr, const std::uint8_t* iv16,
                           std::span<std::uint8_t> data) const {
  CbcJob(mgr.get(), keys_.cbc.enc, keys_.cbc.dec, SuiteInfo(suite_).enc_key_len, IMB_DIR_DECRYPT,
         iv16, data);
}

void EspCipher::Mac(ImbManager& mgr, std::span<const std::uint8_t> msg,
                    std::uint8_t* icv) const {
  IMB_MGR* m = mgr.get();
  IMB_JOB* job = IMB_GET_NEXT_JOB(m);
  job->cipher_mode = IMB_CIPHER_NULL;
  job->cipher_direction = IMB_DIR_ENCRYPT;
  job->chain_order = IMB_ORDER_HASH_CIPHER;
  job->hash_alg = IsSha1(suite_) ? IMB_AUTH_HMAC_SHA_1 : IMB_AUTH_HMAC_SHA_256;
  job->src = msg.data();
  job->dst = nullptr;
  job->msg_len_to_cipher_in_bytes = 0;
  job->cipher_start_src_offset_in_bytes = 0;
  job->hash_start_src_offset_in_bytes = 0;
  job->msg_len_to_hash_in_bytes = msg.size();
  job->auth_tag_output = icv;
  // Truncated to 128 bits (RFC 4868 2.1.1) or 96 (RFC 2404 2).
  job->auth_tag_output_len_in_bytes = SuiteInfo(suite_).icv_len;
  job->u.HMAC._hashed_auth_key_xor_ipad = keys_.cbc.ipad;
  job->u.HMAC._hashed_auth_key_xor_opad = keys_.cbc.opad;
  RunJob(m, job);
}

bool EspCipher::VerifyMac(ImbManager& mgr, std::span<const std::uint8_t> msg,
                          const std::uint8_t* icv) const {
  std::uint8_t tag[kEspIcvLen];
  Mac(mgr, msg, tag);
  const std::size_t len = SuiteInfo(suite_).icv_len;
  return ConstantTimeEqual({tag, len}, {icv, len});
}

void RunCbcHmacBatch(ImbManager& mgr, std::span<CbcHmacJob> jobs) {
  IMB_MGR* m = mgr.get();
  // Completed jobs come back in submission order; their tags are already in place, so a
  // completion only has its status checked.
  const auto check = [](IMB_JOB* done) {
    if (done->status != IMB_STATUS_COMPLETED) FatalImb("CBC + HMAC job failed");
  };
  for (CbcHmacJob& j : jobs) {
    const EspCipher& c = *j.cipher;
    const EspSuiteInfo& info = SuiteInfo(c.suite_);
    if (info.aead) FatalImb("RunCbcHmacBatch on an AEAD suite");
    // Every field the job's algorithms read is set: the manager's job slots are reused.
    IMB_JOB* job = IMB_GET_NEXT_JOB(m);
    job->cipher_mode = IMB_CIPHER_CBC;
    job->cipher_direction = j.encrypt ? IMB_DIR_ENCRYPT : IMB_DIR_DECRYPT;
    // RFC 4303 3.3.2 / 3.4.4: encrypt then MAC the ciphertext; check the MAC, then decrypt.
    job->chain_order = j.encrypt ? IMB_ORDER_CIPHER_HASH : IMB_ORDER_HASH_CIPHER;
    job->enc_keys = c.keys_.cbc.enc;
    job->dec_keys = c.keys_.cbc.dec;
    job->key_len_in_bytes = info.enc_key_len;
    job->src = j.msg;
    job->dst = j.msg + j.cipher_offset;
    job->cipher_start_src_offset_in_bytes = j.cipher_offset;
    job->msg_len_to_cipher_in_bytes = j.cipher_len;
    job->iv = j.iv;
    job->iv_len_in_bytes = 16;
    job->hash_alg = IsSha1(c.suite_) ? IMB_AUTH_HMAC_SHA_1 : IMB_AUTH_HMAC_SHA_256;
    job->hash_start_src_offset_in_bytes = 0;
    job->msg_len_to_hash_in_bytes = j.mac_len;
    job->auth_tag_output = j.tag;
    // Truncated to 128 bits (RFC 4868 2.1.1) or 96 (RFC 2404 2).
    job->auth_tag_output_len_in_bytes = info.icv_len;
    job->u.HMAC._hashed_auth_key_xor_ipad = c.keys_.cbc.ipad;
    job->u.HMAC._hashed_auth_key_xor_opad = c.keys_.cbc.opad;
    job->user_data = &j;
    for (IMB_JOB* done = IMB_SUBMIT_JOB(m); done != nullptr; done = IMB_GET_COMPLETED_JOB(m))
      check(done);
  }
  for (IMB_JOB* done = IMB_FLUSH_JOB(m); done != nullptr; done = IMB_FLUSH_JOB(m)) check(done);
}

void EspCipher::MakeCbcIv(ImbManager& mgr, std::uint64_t counter, std::uint8_t* iv16) const {
  // CBC over one block with a zero IV is E_K(block).
  alignas(16) static constexpr std::uint8_t kZeroIv[16] = {};
  std::memset(iv16, 0, 16);
  for (int i = 0; i < 8; ++i) iv16[15 - i] = static_cast<std::uint8_t>(counter >> (8 * i));
  EncryptCbc(mgr, kZeroIv, {iv16, 16});
}

}  // namespace spigot::crypto
