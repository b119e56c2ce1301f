#include "spigot/crypto/dh.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>

#include <algorithm>
#include <array>

namespace spigot::crypto {
namespace {

constexpr std::size_t kX25519Len = 32;                          // RFC 7748 5
constexpr std::size_t kEcp256CoordLen = 32;                     // RFC 5903 3.1: 256-bit field
constexpr std::size_t kSec1PointLen = 1 + 2 * kEcp256CoordLen;  // 0x04 || x || y
constexpr std::uint8_t kSec1Uncompressed = 0x04;
// Not const: OSSL_PARAM takes a char*, though OpenSSL only reads it.
char kP256Name[] = "P-256";

struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* c) const { EVP_PKEY_CTX_free(c); }
};
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree>;
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

const char* KeyType(std::uint16_t group) { return group == kDhGroupCurve25519 ? "X25519" : "EC"; }

PkeyCtxPtr NewKeygenCtx(std::uint16_t group) {
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, KeyType(group), nullptr));
  if (!ctx || EVP_PKEY_keygen_init(ctx.get()) <= 0) return nullptr;
  if (group == kDhGroupEcp256 && EVP_PKEY_CTX_set_group_name(ctx.get(), kP256Name) <= 0) {
    return nullptr;
  }
  return ctx;
}

PkeyCtxPtr NewImportCtx(std::uint16_t group) {
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, KeyType(group), nullptr));
  if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) <= 0) return nullptr;
  return ctx;
}

// Creating a context by name makes OpenSSL 3 fetch the key management method each time; a
// handshake does one key generation and one peer import, so each thread keeps one context of
// each kind per group and reuses it (EVP_PKEY_keygen and EVP_PKEY_fromdata may be called any
// number of times on an initialized context).
enum class CtxKind { kKeygen, kImport };
EVP_PKEY_CTX* ThreadCtx(std::uint16_t group, CtxKind kind) {
  thread_local std::array<PkeyCtxPtr, 4> cache;
  const std::size_t slot = (group == kDhGroupCurve25519 ? 0 : 2) + (kind == CtxKind::kImport);
  if (!cache[slot]) {
    cache[slot] = kind == CtxKind::kKeygen ? NewKeygenCtx(group) : NewImportCtx(group);
  }
  return cache[slot].get();
}

// The peer's KE data as an EVP_PKEY; null if malformed. Any 32 bytes are an X25519
// u-coordinate (RFC 7748 5). For ECP-256, OpenSSL refuses a point off the curve while decoding
// it (EC_POINT_oct2point) and the quick check adds the range and point-at-infinity checks;
// OpenSSL's full check would add an n * Q == O multiplication, redundant as P-256's cofactor
// is 1.
PkeyPtr ImportPeer(std::uint16_t group, std::span<const std::uint8_t> peer) {
  if (peer.size() != DhPublicValueLength(group)) return nullptr;
  EVP_PKEY_CTX* ctx = ThreadCtx(group, CtxKind::kImport);
  if (ctx == nullptr) return nullptr;
  std::array<std::uint8_t, kSec1PointLen> encoded;
  std::span<std::uint8_t> value(encoded);
  OSSL_PARAM params[3];
  OSSL_PARAM* param = params;
  if (group == kDhGroupCurve25519) {
    value = value.first(kX25519Len);
    std::copy(peer.begin(), peer.end(), value.begin());
  } else {
    encoded[0] = kSec1Uncompressed;  // the SEC1 form OpenSSL decodes
    std::copy(peer.begin(), peer.end(), encoded.begin() + 1);
    *param++ = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, kP256Name, 0);
  }
  *param++ = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, value.data(), value.size());
  *param = OSSL_PARAM_construct_end();
  EVP_PKEY* key = nullptr;
  if (EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) <= 0) return nullptr;
  PkeyPtr peer_key(key);
  if (group == kDhGroupEcp256) {
    PkeyCtxPtr check(EVP_PKEY_CTX_new_from_pkey(nullptr, key, nullptr));
    if (!check || EVP_PKEY_public_check_quick(check.get()) != 1) return nullptr;
  }
  return peer_key;
}

// The public point priv * G of ECP-256 (RFC 5903 3.1) as an EVP_PKEY key pair; null if `priv` is
// not in [1, n-1].
PkeyPtr Ecp256KeyFromPrivate(std::span<const std::uint8_t> priv) {
  struct Free {
    void operator()(EC_GROUP* g) const { EC_GROUP_free(g); }
    void operator()(EC_POINT* p) const { EC_POINT_free(p); }
    void operator()(BIGNUM* b) const { BN_clear_free(b); }
    void operator()(OSSL_PARAM_BLD* b) const { OSSL_PARAM_BLD_free(b); }
    void operator()(OSSL_PARAM* p) const { OSSL_PARAM_free(p); }
  };
  std::unique_ptr<EC_GROUP, Free> ec_group(EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1));
  std::unique_ptr<BIGNUM, Free> d(BN_secure_new());
  if (!ec_group || !d ||
      BN_bin2bn(priv.data(), static_cast<int>(priv.size()), d.get()) == nullptr ||
      BN_is_zero(d.get()) || BN_cmp(d.get(), EC_GROUP_get0_order(ec_group.get())) >= 0) {
    return nullptr;
  }
  std::unique_ptr<EC_POINT, Free> q(EC_POINT_new(ec_group.get()));
  std::array<std::uint8_t, kSec1PointLen> encoded;
  if (!q || EC_POINT_mul(ec_group.get(), q.get(), d.get(), nullptr, nullptr, nullptr) != 1 ||
      EC_POINT_point2oct(ec_group.get(), q.get(), POINT_CONVERSION_UNCOMPRESSED, encoded.data(),
                         encoded.size(), nullptr) != encoded.size()) {
    return nullptr;
  }
  std::unique_ptr<OSSL_PARAM_BLD, Free> bld(OSSL_PARAM_BLD_new());
  if (!bld ||
      OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, kP256Name, 0) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_PRIV_KEY, d.get()) != 1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, encoded.data(),
                                       encoded.size()) != 1) {
    return nullptr;
  }
  std::unique_ptr<OSSL_PARAM, Free> params(OSSL_PARAM_BLD_to_param(bld.get()));
  PkeyCtxPtr ctx = NewImportCtx(kDhGroupEcp256);
  EVP_PKEY* key = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_KEYPAIR, params.get()) <= 0) {
    return nullptr;
  }
  return PkeyPtr(key);
}

}  // namespace

bool IsSupportedDhGroup(std::uint16_t group) {
  return group == kDhGroupCurve25519 || group == kDhGroupEcp256;
}

std::size_t DhPublicValueLength(std::uint16_t group) {
  switch (group) {
    case kDhGroupCurve25519:
      return kX25519Len;
    case kDhGroupEcp256:
      return 2 * kEcp256CoordLen;
    default:
      return 0;
  }
}

std::unique_ptr<DhKeyPair> DhKeyPair::Generate(std::uint16_t group) {
  if (!IsSupportedDhGroup(group)) return nullptr;
  EVP_PKEY_CTX* ctx = ThreadCtx(group, CtxKind::kKeygen);
  EVP_PKEY* key = nullptr;
  if (ctx == nullptr || EVP_PKEY_keygen(ctx, &key) <= 0) {
    ERR_clear_error();
    return nullptr;
  }
  return FromKey(group, key);
}

std::unique_ptr<DhKeyPair> DhKeyPair::FromPrivateKey(std::uint16_t group,
                                                     std::span<const std::uint8_t> private_key) {
  PkeyPtr key;
  if (group == kDhGroupCurve25519 && private_key.size() == kX25519Len) {
    key.reset(EVP_PKEY_new_raw_private_key_ex(nullptr, "X25519", nullptr, private_key.data(),
                                              private_key.size()));
  } else if (group == kDhGroupEcp256 && private_key.size() == kEcp256CoordLen) {
    key = Ecp256KeyFromPrivate(private_key);
  }
  if (!key) {
    ERR_clear_error();
    return nullptr;
  }
  return FromKey(group, key.release());
}

std::unique_ptr<DhKeyPair> DhKeyPair::FromKey(std::uint16_t group, EVP_PKEY* raw_key) {
  PkeyPtr key(raw_key);
  std::array<std::uint8_t, kSec1PointLen> encoded;
  std::vector<std::uint8_t> public_value;
  std::size_t len = 0;
  if (group == kDhGroupCurve25519) {
    len = kX25519Len;
    if (EVP_PKEY_get_raw_public_key(key.get(), encoded.data(), &len) != 1 || len != kX25519Len) {
      return nullptr;
    }
    public_value.assign(encoded.begin(), encoded.begin() + kX25519Len);
  } else {
    if (EVP_PKEY_get_octet_string_param(key.get(), OSSL_PKEY_PARAM_PUB_KEY, encoded.data(),
                                        encoded.size(), &len) != 1 ||
        len != kSec1PointLen || encoded[0] != kSec1Uncompressed) {
      return nullptr;
    }
    public_value.assign(encoded.begin() + 1, encoded.end());
  }
  return std::unique_ptr<DhKeyPair>(new DhKeyPair(group, key.release(), std::move(public_value)));
}

DhKeyPair::~DhKeyPair() { EVP_PKEY_free(key_); }

bool DhKeyPair::ComputeShared(std::span<const std::uint8_t> peer_public, SecureBytes& out) const {
  out.Clear();
  PkeyPtr peer = ImportPeer(group_, peer_public);
  PkeyCtxPtr ctx(peer ? EVP_PKEY_CTX_new_from_pkey(nullptr, key_, nullptr) : nullptr);
  std::size_t len = group_ == kDhGroupCurve25519 ? kX25519Len : kEcp256CoordLen;
  out.Resize(len);
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) <= 0 ||
      EVP_PKEY_derive_set_peer_ex(ctx.get(), peer.get(), /*validate_peer=*/0) <= 0 ||
      EVP_PKEY_derive(ctx.get(), out.data(), &len) <= 0 || len != out.size()) {
    out.Clear();
    ERR_clear_error();
    return false;
  }
  // A small-order X25519 point yields zero (RFC 7748 6.1). OpenSSL refuses that result too; the
  // check is repeated here so the contract does not rest on it. OR-ing keeps it constant-time.
  std::uint8_t any = 0;
  for (std::uint8_t b : out.span()) any |= b;
  if (any == 0) {
    out.Clear();
    return false;
  }
  return true;
}

}  // namespace spigot::crypto
