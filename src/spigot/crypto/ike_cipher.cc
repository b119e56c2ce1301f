#include "spigot/crypto/ike_cipher.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <climits>
#include <iterator>

#include "spigot/crypto/iana.h"

namespace spigot::crypto {
namespace {

// The AEADs' salt, IV and ICV lengths (RFC 5282; RFC 7634 2).
constexpr std::uint8_t kSaltLen = 4;
constexpr std::uint8_t kIvLen = 8;
constexpr std::uint8_t kIcvLen = 16;
constexpr std::uint8_t kAesBlockLen = 16;
constexpr std::uint8_t kDesBlockLen = 8;      // RFC 2451 2.3
constexpr std::uint8_t k3desKeyLen = 3 * 8;   // RFC 2451 2.2: three DES keys

// Indexed by IkeEncr. Fields: encr, transform_id, key_bits, key_len, salt_len, iv_len, icv_len,
// block_len, aead.
constexpr IkeEncrInfo kInfo[] = {
    {IkeEncr::kAesCbc128, kEncrAesCbc, 128, 16, 0, kAesBlockLen, 0, kAesBlockLen, false},
    {IkeEncr::kAesCbc256, kEncrAesCbc, 256, 32, 0, kAesBlockLen, 0, kAesBlockLen, false},
    {IkeEncr::kAesGcm16_128, kEncrAesGcm16, 128, 16, kSaltLen, kIvLen, kIcvLen, 1, true},
    {IkeEncr::kAesGcm16_256, kEncrAesGcm16, 256, 32, kSaltLen, kIvLen, kIcvLen, 1, true},
    {IkeEncr::kChaCha20Poly1305, kEncrChaCha20Poly1305, 0, 32, kSaltLen, kIvLen, kIcvLen, 1, true},
    {IkeEncr::k3desCbc, kEncr3des, 0, k3desKeyLen, 0, kDesBlockLen, 0, kDesBlockLen, false},
};
static_assert([] {
  for (std::size_t i = 0; i < std::size(kInfo); ++i) {
    if (static_cast<std::size_t>(kInfo[i].encr) != i) return false;
  }
  return true;
}());

// Fetched once: fetching by name costs a method-store lookup under a lock.
const EVP_CIPHER* CipherFor(IkeEncr encr) {
  static EVP_CIPHER* const ciphers[] = {
      EVP_CIPHER_fetch(nullptr, "AES-128-CBC", nullptr),
      EVP_CIPHER_fetch(nullptr, "AES-256-CBC", nullptr),
      EVP_CIPHER_fetch(nullptr, "AES-128-GCM", nullptr),
      EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr),
      EVP_CIPHER_fetch(nullptr, "ChaCha20-Poly1305", nullptr),
      EVP_CIPHER_fetch(nullptr, "DES-EDE3-CBC", nullptr),
  };
  return ciphers[static_cast<std::size_t>(encr)];
}

bool FitsInt(std::size_t n) { return n <= static_cast<std::size_t>(INT_MAX); }

}  // namespace

const IkeEncrInfo& IkeEncrInfoFor(IkeEncr encr) { return kInfo[static_cast<std::size_t>(encr)]; }

std::optional<IkeEncr> IkeEncrFromTransform(std::uint16_t transform_id, std::uint16_t key_bits) {
  for (const IkeEncrInfo& info : kInfo) {
    if (info.transform_id == transform_id && info.key_bits == key_bits) return info.encr;
  }
  return std::nullopt;
}

std::unique_ptr<IkeCipher> IkeCipher::Create(IkeEncr encr, std::span<const std::uint8_t> keymat) {
  const IkeEncrInfo& info = IkeEncrInfoFor(encr);
  if (keymat.size() != info.keymat_len()) return nullptr;
  return std::unique_ptr<IkeCipher>(new IkeCipher(info, keymat));
}

IkeCipher::~IkeCipher() = default;

// One OpenSSL context per thread and direction, keyed afresh for each message. An IKE SA then
// holds only its key material: a keyed context is about a kilobyte, two per IKE SA, and a
// gateway holds a hundred thousand IKE SAs or more; IKE messages are rare enough that one key
// schedule each (about a microsecond) does not show.
EVP_CIPHER_CTX* IkeCipher::Ctx(bool encrypt) {
  struct ThreadContexts {
    EVP_CIPHER_CTX* ctx[2] = {nullptr, nullptr};
    ~ThreadContexts() {
      EVP_CIPHER_CTX_free(ctx[0]);
      EVP_CIPHER_CTX_free(ctx[1]);
    }
  };
  thread_local ThreadContexts contexts;
  EVP_CIPHER_CTX*& ctx = contexts.ctx[encrypt ? 1 : 0];
  if (ctx == nullptr) ctx = EVP_CIPHER_CTX_new();
  const EVP_CIPHER* cipher = CipherFor(info_->encr);
  if (cipher == nullptr || ctx == nullptr ||
      EVP_CipherInit_ex2(ctx, cipher, keymat_.data(), nullptr, encrypt ? 1 : 0, nullptr) != 1 ||
      (!info_->aead && EVP_CIPHER_CTX_set_padding(ctx, 0) != 1)) {
    ERR_clear_error();
    return nullptr;
  }
  return ctx;
}

bool IkeCipher::Seal(std::span<const std::uint8_t> iv, std::span<const std::uint8_t> aad,
                     std::span<std::uint8_t> data, std::span<std::uint8_t> icv) {
  return Aead(true, iv, aad, data, icv);
}

bool IkeCipher::Open(std::span<const std::uint8_t> iv, std::span<const std::uint8_t> aad,
                     std::span<std::uint8_t> data, std::span<const std::uint8_t> icv) {
  std::array<std::uint8_t, kIcvLen> tag;
  if (icv.size() != tag.size()) return false;
  std::copy(icv.begin(), icv.end(), tag.begin());
  if (Aead(false, iv, aad, data, tag)) return true;
  Wipe(data.data(), data.size());
  return false;
}

bool IkeCipher::Aead(bool encrypt, std::span<const std::uint8_t> iv,
                     std::span<const std::uint8_t> aad, std::span<std::uint8_t> data,
                     std::span<std::uint8_t> icv) {
  if (!info_->aead || iv.size() != info_->iv_len || icv.size() != info_->icv_len ||
      !FitsInt(aad.size()) || !FitsInt(data.size())) {
    return false;
  }
  EVP_CIPHER_CTX* ctx = Ctx(encrypt);
  if (ctx == nullptr) return false;
  std::array<std::uint8_t, kSaltLen + kIvLen> nonce;
  const auto salt = keymat_.subspan(info_->key_len, kSaltLen);
  std::copy(iv.begin(), iv.end(), std::copy(salt.begin(), salt.end(), nonce.begin()));
  OSSL_PARAM tag_param[] = {
      OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, icv.data(), icv.size()),
      OSSL_PARAM_construct_end()};
  const int data_len = static_cast<int>(data.size());
  int out_len = 0;
  std::array<std::uint8_t, kAesBlockLen> final_block;
  const bool ok =
      EVP_CipherInit_ex2(ctx, nullptr, nullptr, nonce.data(), encrypt ? 1 : 0, nullptr) == 1 &&
      (aad.empty() ||
       EVP_CipherUpdate(ctx, nullptr, &out_len, aad.data(), static_cast<int>(aad.size())) == 1) &&
      (data.empty() || (EVP_CipherUpdate(ctx, data.data(), &out_len, data.data(), data_len) == 1 &&
                        out_len == data_len)) &&
      (encrypt || EVP_CIPHER_CTX_set_params(ctx, tag_param) == 1) &&
      EVP_CipherFinal_ex(ctx, final_block.data(), &out_len) == 1 && out_len == 0 &&
      (!encrypt || EVP_CIPHER_CTX_get_params(ctx, tag_param) == 1);
  if (!ok) ERR_clear_error();
  return ok;
}

bool IkeCipher::EncryptCbc(std::span<const std::uint8_t> iv, std::span<std::uint8_t> data) {
  return Cbc(true, iv, data);
}

bool IkeCipher::DecryptCbc(std::span<const std::uint8_t> iv, std::span<std::uint8_t> data) {
  return Cbc(false, iv, data);
}

bool IkeCipher::Cbc(bool encrypt, std::span<const std::uint8_t> iv, std::span<std::uint8_t> data) {
  if (info_->aead || iv.size() != info_->iv_len || data.size() % info_->block_len != 0 ||
      !FitsInt(data.size())) {
    return false;
  }
  EVP_CIPHER_CTX* ctx = Ctx(encrypt);
  if (ctx == nullptr) return false;
  const int data_len = static_cast<int>(data.size());
  int out_len = 0;
  std::array<std::uint8_t, kAesBlockLen> final_block;
  const bool ok =
      EVP_CipherInit_ex2(ctx, nullptr, nullptr, iv.data(), encrypt ? 1 : 0, nullptr) == 1 &&
      (data.empty() || (EVP_CipherUpdate(ctx, data.data(), &out_len, data.data(), data_len) == 1 &&
                        out_len == data_len)) &&
      EVP_CipherFinal_ex(ctx, final_block.data(), &out_len) == 1 && out_len == 0;
  if (!ok) ERR_clear_error();
  return ok;
}

}  // namespace spigot::crypto
