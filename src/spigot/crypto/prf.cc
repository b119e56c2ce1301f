#include "spigot/crypto/prf.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>

namespace spigot::crypto {
namespace {

constexpr std::size_t kMaxHashLen = 64;  // SHA-512

[[noreturn]] void FatalOpenSsl(const char* what) {
  std::fprintf(stderr, "spigot: fatal: %s\n", what);
  std::abort();
}

constexpr std::size_t kSha1Len = 20;
constexpr std::size_t kSha1_96IcvLen = 96 / 8;  // RFC 2404 2

// `hash_len` selects SHA-1, SHA-256, SHA-384 or SHA-512.
char* DigestName(std::size_t hash_len) {
  static char sha1[] = "SHA1", sha256[] = "SHA2-256", sha384[] = "SHA2-384", sha512[] = "SHA2-512";
  return hash_len == kSha1Len ? sha1 : hash_len == 32 ? sha256 : hash_len == 48 ? sha384 : sha512;
}

// Fetched once: fetching by name costs a method-store lookup under a lock.
EVP_MAC* HmacMethod() {
  static EVP_MAC* const mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (mac == nullptr) FatalOpenSsl("OpenSSL has no HMAC");
  return mac;
}

struct MacCtxFree {
  void operator()(EVP_MAC_CTX* c) const { EVP_MAC_CTX_free(c); }
};
using MacCtxPtr = std::unique_ptr<EVP_MAC_CTX, MacCtxFree>;

MacCtxPtr NewKeyedHmac(std::size_t hash_len, std::span<const std::uint8_t> key) {
  // EVP_MAC_init reads a null key as "keep the previous key", so an empty key needs a pointer.
  static const std::uint8_t kNoKey = 0;
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, DigestName(hash_len), 0),
      OSSL_PARAM_construct_end()};
  MacCtxPtr ctx(EVP_MAC_CTX_new(HmacMethod()));
  if (!ctx ||
      EVP_MAC_init(ctx.get(), key.empty() ? &kNoKey : key.data(), key.size(), params) != 1) {
    FatalOpenSsl("HMAC key setup failed");
  }
  return ctx;
}

// Starts a new message under the key already set (cheap: copies the precomputed inner state).
void Restart(EVP_MAC_CTX* ctx) {
  if (EVP_MAC_init(ctx, nullptr, 0, nullptr) != 1) FatalOpenSsl("HMAC restart failed");
}

void Update(EVP_MAC_CTX* ctx, std::span<const std::uint8_t> data) {
  if (!data.empty() && EVP_MAC_update(ctx, data.data(), data.size()) != 1) {
    FatalOpenSsl("HMAC update failed");
  }
}

void Final(EVP_MAC_CTX* ctx, std::uint8_t* out, std::size_t hash_len) {
  std::size_t written = 0;
  if (EVP_MAC_final(ctx, out, &written, hash_len) != 1 || written != hash_len) {
    FatalOpenSsl("HMAC final failed");
  }
}

}  // namespace

std::optional<PrfAlg> PrfAlgFromId(std::uint16_t transform_id) {
  switch (static_cast<PrfAlg>(transform_id)) {
    case PrfAlg::kHmacSha1:
    case PrfAlg::kHmacSha256:
    case PrfAlg::kHmacSha384:
    case PrfAlg::kHmacSha512:
      return static_cast<PrfAlg>(transform_id);
  }
  return std::nullopt;
}

std::optional<IntegAlg> IntegAlgFromId(std::uint16_t transform_id) {
  switch (static_cast<IntegAlg>(transform_id)) {
    case IntegAlg::kHmacSha1_96:
    case IntegAlg::kHmacSha256_128:
    case IntegAlg::kHmacSha384_192:
    case IntegAlg::kHmacSha512_256:
      return static_cast<IntegAlg>(transform_id);
  }
  return std::nullopt;
}

std::size_t PrfOutputLength(PrfAlg alg) {
  switch (alg) {
    case PrfAlg::kHmacSha1:
      return kSha1Len;
    case PrfAlg::kHmacSha256:
      return 32;
    case PrfAlg::kHmacSha384:
      return 48;
    case PrfAlg::kHmacSha512:
      return 64;
  }
  FatalOpenSsl("unknown PRF");
}

std::size_t IntegKeyLength(IntegAlg alg) {
  switch (alg) {
    case IntegAlg::kHmacSha1_96:
      return kSha1Len;
    case IntegAlg::kHmacSha256_128:
      return 32;
    case IntegAlg::kHmacSha384_192:
      return 48;
    case IntegAlg::kHmacSha512_256:
      return 64;
  }
  FatalOpenSsl("unknown integrity algorithm");
}

std::size_t IntegIcvLength(IntegAlg alg) {
  return alg == IntegAlg::kHmacSha1_96 ? kSha1_96IcvLen : IntegKeyLength(alg) / 2;
}

SecureBytes Prf(PrfAlg alg, std::span<const std::uint8_t> key, std::span<const std::uint8_t> data) {
  const std::size_t hash_len = PrfOutputLength(alg);
  MacCtxPtr ctx = NewKeyedHmac(hash_len, key);
  SecureBytes out(hash_len);
  Update(ctx.get(), data);
  Final(ctx.get(), out.data(), hash_len);
  return out;
}

std::optional<SecureBytes> PrfPlus(PrfAlg alg, std::span<const std::uint8_t> key,
                                   std::span<const std::uint8_t> seed, std::size_t length) {
  const std::size_t hash_len = PrfOutputLength(alg);
  if (length > kMaxPrfPlusBlocks * hash_len) return std::nullopt;
  const std::size_t blocks = (length + hash_len - 1) / hash_len;
  SecureBytes out(blocks * hash_len);
  if (blocks == 0) return out;
  // One keyed context for all blocks: the key is processed once, not once per block.
  MacCtxPtr ctx = NewKeyedHmac(hash_len, key);
  for (std::size_t n = 1; n <= blocks; ++n) {
    std::uint8_t* t = out.data() + (n - 1) * hash_len;
    if (n > 1) {
      Restart(ctx.get());
      Update(ctx.get(), {t - hash_len, hash_len});
    }
    const std::uint8_t counter = static_cast<std::uint8_t>(n);
    Update(ctx.get(), seed);
    Update(ctx.get(), {&counter, 1});
    Final(ctx.get(), t, hash_len);
  }
  out.Resize(length);
  return out;
}

std::unique_ptr<Integrity> Integrity::Create(IntegAlg alg, std::span<const std::uint8_t> key) {
  if (key.size() != IntegKeyLength(alg)) return nullptr;
  return std::unique_ptr<Integrity>(
      new Integrity(alg, NewKeyedHmac(IntegKeyLength(alg), key).release()));
}

Integrity::~Integrity() { EVP_MAC_CTX_free(ctx_); }

void Integrity::Compute(std::span<const std::uint8_t> data, std::span<std::uint8_t> icv) {
  if (icv.size() != icv_length()) FatalOpenSsl("Integrity::Compute: ICV buffer of the wrong size");
  std::array<std::uint8_t, kMaxHashLen> full;
  const std::size_t hash_len = IntegKeyLength(alg_);
  Restart(ctx_);
  Update(ctx_, data);
  Final(ctx_, full.data(), hash_len);
  std::copy_n(full.begin(), icv.size(), icv.begin());
  Wipe(full.data(), full.size());
}

bool Integrity::Verify(std::span<const std::uint8_t> data, std::span<const std::uint8_t> icv) {
  if (icv.size() != icv_length()) return false;
  std::array<std::uint8_t, kMaxHashLen / 2> expected;
  const std::span<std::uint8_t> want(expected.data(), icv.size());
  Compute(data, want);
  const bool ok = ConstantTimeEqual(want, icv);
  Wipe(expected.data(), expected.size());
  return ok;
}

}  // namespace spigot::crypto
