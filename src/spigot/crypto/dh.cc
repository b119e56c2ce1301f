#include "spigot/crypto/dh.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/dh.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>

#include <algorithm>
#include <array>
#include <iterator>

namespace spigot::crypto {
namespace {

enum class Kind : std::uint8_t { kX25519, kEcp, kModp };

// One row per supported group. `len` is the public value's length: the X25519 u-coordinate
// (RFC 7748 5), x || y for ECP (RFC 5903 7: twice the field size), the modulus for MODP.
struct Group {
  std::uint16_t id;
  Kind kind;
  std::size_t len;
  int nid;                  // ECP: the curve, for FromPrivateKey
  const char* ossl_name;    // ECP: OpenSSL's group name
  BIGNUM* (*prime)(BIGNUM*);  // MODP: the modulus p (generator 2, RFC 2409 6.2, RFC 3526)
};

constexpr std::size_t kX25519Len = 32;  // RFC 7748 5
constexpr std::uint8_t kSec1Uncompressed = 0x04;
constexpr std::size_t kMaxEcpCoordLen = 48;                        // P-384 (RFC 5903 3.2)
constexpr std::size_t kMaxSec1PointLen = 1 + 2 * kMaxEcpCoordLen;  // 0x04 || x || y
constexpr unsigned kModpGenerator = 2;                             // RFC 2409 6.2, RFC 3526

// MODP lengths: 1024 / 8 = 128 ... 4096 / 8 = 512 bytes.
const Group kGroups[] = {
    {kDhGroupCurve25519, Kind::kX25519, kX25519Len, 0, nullptr, nullptr},
    {kDhGroupEcp256, Kind::kEcp, 2 * 32, NID_X9_62_prime256v1, "P-256", nullptr},
    {kDhGroupEcp384, Kind::kEcp, 2 * 48, NID_secp384r1, "P-384", nullptr},
    {kDhGroupModp1024, Kind::kModp, 1024 / 8, 0, nullptr, BN_get_rfc2409_prime_1024},
    {kDhGroupModp2048, Kind::kModp, 2048 / 8, 0, nullptr, BN_get_rfc3526_prime_2048},
    {kDhGroupModp3072, Kind::kModp, 3072 / 8, 0, nullptr, BN_get_rfc3526_prime_3072},
    {kDhGroupModp4096, Kind::kModp, 4096 / 8, 0, nullptr, BN_get_rfc3526_prime_4096},
};
constexpr std::size_t kNumGroups = std::size(kGroups);

const Group* FindGroup(std::uint16_t id) {
  for (const Group& g : kGroups) {
    if (g.id == id) return &g;
  }
  return nullptr;
}
std::size_t IndexOf(const Group& g) { return static_cast<std::size_t>(&g - kGroups); }

struct Free {
  void operator()(EVP_PKEY_CTX* c) const { EVP_PKEY_CTX_free(c); }
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
  void operator()(EC_GROUP* g) const { EC_GROUP_free(g); }
  void operator()(EC_POINT* p) const { EC_POINT_free(p); }
  void operator()(BIGNUM* b) const { BN_clear_free(b); }
  void operator()(BN_CTX* c) const { BN_CTX_free(c); }
  void operator()(OSSL_PARAM_BLD* b) const { OSSL_PARAM_BLD_free(b); }
  void operator()(OSSL_PARAM* p) const { OSSL_PARAM_free(p); }
};
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, Free>;
using BnPtr = std::unique_ptr<BIGNUM, Free>;
using ParamBldPtr = std::unique_ptr<OSSL_PARAM_BLD, Free>;
using ParamsPtr = std::unique_ptr<OSSL_PARAM, Free>;

const char* KeyType(const Group& g) {
  switch (g.kind) {
    case Kind::kX25519: return "X25519";
    case Kind::kEcp: return "EC";
    case Kind::kModp: return "DH";
  }
  return "";
}

// MODP moduli, made once per process and never freed (read-only after creation).
const BIGNUM* Prime(const Group& g) {
  static const std::array<BIGNUM*, kNumGroups> primes = [] {
    std::array<BIGNUM*, kNumGroups> p{};
    for (std::size_t i = 0; i < kNumGroups; ++i) {
      if (kGroups[i].prime != nullptr) p[i] = kGroups[i].prime(nullptr);
    }
    return p;
  }();
  return primes[IndexOf(g)];
}

// Pushes a MODP group's domain parameters (p, g) or an ECP group's name. OpenSSL recognizes
// the RFC 3526 moduli as its named groups ("modp_2048", ...) on import, which gives it q and a
// private exponent length matched to the group's strength.
bool PushDomain(OSSL_PARAM_BLD* bld, const Group& g, BIGNUM* generator) {
  switch (g.kind) {
    case Kind::kX25519:
      return true;
    case Kind::kEcp:
      return OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, g.ossl_name, 0) == 1;
    case Kind::kModp:
      return Prime(g) != nullptr &&
             OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_FFC_P, Prime(g)) == 1 &&
             OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_FFC_G, generator) == 1;
  }
  return false;
}

BnPtr Generator() {
  BnPtr g(BN_new());
  if (!g || BN_set_word(g.get(), kModpGenerator) != 1) return nullptr;
  return g;
}

// Creating a context by name makes OpenSSL 3 fetch the key management method each time; a
// handshake does one key generation and one peer import, so each thread keeps one import
// context per group and reuses it (EVP_PKEY_fromdata may be called any number of times on an
// initialized context). KeygenCtx below does the same for key generation.
EVP_PKEY_CTX* ImportCtx(const Group& g) {
  thread_local std::array<PkeyCtxPtr, kNumGroups> cache;
  PkeyCtxPtr& slot = cache[IndexOf(g)];
  if (!slot) {
    PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, KeyType(g), nullptr));
    if (ctx && EVP_PKEY_fromdata_init(ctx.get()) > 0) slot = std::move(ctx);
  }
  return slot.get();
}

// A key of `selection` (EVP_PKEY_KEY_PARAMETERS, _PUBLIC_KEY, _KEYPAIR) from the group's
// domain and the parameters `push_extra` adds; null on failure.
template <typename PushExtra>
PkeyPtr FromData(const Group& g, int selection, PushExtra push_extra) {
  ParamBldPtr bld(OSSL_PARAM_BLD_new());
  BnPtr generator = Generator();
  if (!bld || !generator || !PushDomain(bld.get(), g, generator.get()) || !push_extra(bld.get())) {
    return nullptr;
  }
  ParamsPtr params(OSSL_PARAM_BLD_to_param(bld.get()));
  EVP_PKEY_CTX* ctx = ImportCtx(g);
  EVP_PKEY* key = nullptr;
  if (!params || ctx == nullptr || EVP_PKEY_fromdata(ctx, &key, selection, params.get()) <= 0) {
    return nullptr;
  }
  return PkeyPtr(key);
}

PkeyCtxPtr NewKeygenCtx(const Group& g) {
  PkeyCtxPtr ctx;
  if (g.kind == Kind::kModp) {
    // DH key generation starts from a key holding the domain parameters.
    PkeyPtr domain = FromData(g, EVP_PKEY_KEY_PARAMETERS, [](OSSL_PARAM_BLD*) { return true; });
    if (!domain) return nullptr;
    ctx.reset(EVP_PKEY_CTX_new_from_pkey(nullptr, domain.get(), nullptr));
  } else {
    ctx.reset(EVP_PKEY_CTX_new_from_name(nullptr, KeyType(g), nullptr));
  }
  if (!ctx || EVP_PKEY_keygen_init(ctx.get()) <= 0) return nullptr;
  if (g.kind == Kind::kEcp && EVP_PKEY_CTX_set_group_name(ctx.get(), g.ossl_name) <= 0) {
    return nullptr;
  }
  return ctx;
}

// One key generation context per thread and group (for MODP it holds the imported domain).
EVP_PKEY_CTX* KeygenCtx(const Group& g) {
  thread_local std::array<PkeyCtxPtr, kNumGroups> cache;
  PkeyCtxPtr& slot = cache[IndexOf(g)];
  if (!slot) slot = NewKeygenCtx(g);
  return slot.get();
}

// The peer's KE data as an EVP_PKEY; null if malformed. Any 32 bytes are an X25519
// u-coordinate (RFC 7748 5). For ECP, OpenSSL refuses a point off the curve while decoding it
// (EC_POINT_oct2point) and the quick check adds the range and point-at-infinity checks;
// OpenSSL's full check would add an n * Q == O multiplication, redundant as the cofactor of
// P-256 and P-384 is 1. For MODP the quick check is 1 < y < p - 1 (RFC 6989 2.1); the full
// check's y^q mod p == 1 would cost a second exponentiation and only tells the subgroup of
// order q from the whole group, which for a safe prime p = 2q + 1 the range check covers but
// for y = p - 1.
PkeyPtr ImportPeer(const Group& g, std::span<const std::uint8_t> peer) {
  if (peer.size() != g.len) return nullptr;
  PkeyPtr key;
  if (g.kind == Kind::kX25519) {
    return FromData(g, EVP_PKEY_PUBLIC_KEY, [&](OSSL_PARAM_BLD* bld) {
      return OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, peer.data(),
                                              peer.size()) == 1;
    });
  }
  if (g.kind == Kind::kEcp) {
    std::array<std::uint8_t, kMaxSec1PointLen> encoded;
    encoded[0] = kSec1Uncompressed;  // the SEC1 form OpenSSL decodes
    std::copy(peer.begin(), peer.end(), encoded.begin() + 1);
    key = FromData(g, EVP_PKEY_PUBLIC_KEY, [&](OSSL_PARAM_BLD* bld) {
      return OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, encoded.data(),
                                              1 + peer.size()) == 1;
    });
  } else {
    BnPtr y(BN_bin2bn(peer.data(), static_cast<int>(peer.size()), nullptr));
    if (!y) return nullptr;
    key = FromData(g, EVP_PKEY_PUBLIC_KEY, [&](OSSL_PARAM_BLD* bld) {
      return OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PUB_KEY, y.get()) == 1;
    });
  }
  if (!key) return nullptr;
  PkeyCtxPtr check(EVP_PKEY_CTX_new_from_pkey(nullptr, key.get(), nullptr));
  if (!check || EVP_PKEY_public_check_quick(check.get()) != 1) return nullptr;
  return key;
}

// An ECP key pair from the scalar d: Q = d * G; null if d is not in [1, n-1].
PkeyPtr EcpKeyFromPrivate(const Group& g, std::span<const std::uint8_t> priv) {
  if (priv.size() != g.len / 2) return nullptr;
  std::unique_ptr<EC_GROUP, Free> ec_group(EC_GROUP_new_by_curve_name(g.nid));
  BnPtr d(BN_secure_new());
  if (!ec_group || !d ||
      BN_bin2bn(priv.data(), static_cast<int>(priv.size()), d.get()) == nullptr ||
      BN_is_zero(d.get()) || BN_cmp(d.get(), EC_GROUP_get0_order(ec_group.get())) >= 0) {
    return nullptr;
  }
  std::unique_ptr<EC_POINT, Free> q(EC_POINT_new(ec_group.get()));
  std::array<std::uint8_t, kMaxSec1PointLen> encoded;
  const std::size_t encoded_len = 1 + g.len;
  if (!q || EC_POINT_mul(ec_group.get(), q.get(), d.get(), nullptr, nullptr, nullptr) != 1 ||
      EC_POINT_point2oct(ec_group.get(), q.get(), POINT_CONVERSION_UNCOMPRESSED, encoded.data(),
                         encoded_len, nullptr) != encoded_len) {
    return nullptr;
  }
  return FromData(g, EVP_PKEY_KEYPAIR, [&](OSSL_PARAM_BLD* bld) {
    return OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, d.get()) == 1 &&
           OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, encoded.data(),
                                            encoded_len) == 1;
  });
}

// A MODP key pair from the exponent x: y = 2^x mod p; null unless 1 < x < p - 1.
PkeyPtr ModpKeyFromPrivate(const Group& g, std::span<const std::uint8_t> priv) {
  const BIGNUM* p = Prime(g);
  if (p == nullptr || priv.empty() || priv.size() > g.len) return nullptr;
  BnPtr x(BN_secure_new()), y(BN_new()), p_minus_1(BN_dup(p)), generator = Generator();
  std::unique_ptr<BN_CTX, Free> bn_ctx(BN_CTX_new());
  if (!x || !y || !p_minus_1 || !generator || !bn_ctx ||
      BN_bin2bn(priv.data(), static_cast<int>(priv.size()), x.get()) == nullptr ||
      BN_sub_word(p_minus_1.get(), 1) != 1 || BN_cmp(x.get(), BN_value_one()) <= 0 ||
      BN_cmp(x.get(), p_minus_1.get()) >= 0 ||
      BN_mod_exp(y.get(), generator.get(), x.get(), p, bn_ctx.get()) != 1) {
    return nullptr;
  }
  return FromData(g, EVP_PKEY_KEYPAIR, [&](OSSL_PARAM_BLD* bld) {
    return OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, x.get()) == 1 &&
           OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PUB_KEY, y.get()) == 1;
  });
}

}  // namespace

bool IsSupportedDhGroup(std::uint16_t group) { return FindGroup(group) != nullptr; }

std::size_t DhPublicValueLength(std::uint16_t group) {
  const Group* g = FindGroup(group);
  return g == nullptr ? 0 : g->len;
}

std::size_t DhSharedSecretLength(std::uint16_t group) {
  const Group* g = FindGroup(group);
  if (g == nullptr) return 0;
  return g->kind == Kind::kEcp ? g->len / 2 : g->len;  // ECP: the x-coordinate only
}

std::unique_ptr<DhKeyPair> DhKeyPair::Generate(std::uint16_t group) {
  const Group* g = FindGroup(group);
  if (g == nullptr) return nullptr;
  EVP_PKEY_CTX* ctx = KeygenCtx(*g);
  EVP_PKEY* key = nullptr;
  if (ctx == nullptr || EVP_PKEY_keygen(ctx, &key) <= 0) {
    ERR_clear_error();
    return nullptr;
  }
  return FromKey(group, key);
}

std::unique_ptr<DhKeyPair> DhKeyPair::FromPrivateKey(std::uint16_t group,
                                                     std::span<const std::uint8_t> private_key) {
  const Group* g = FindGroup(group);
  PkeyPtr key;
  if (g == nullptr) return nullptr;
  switch (g->kind) {
    case Kind::kX25519:
      if (private_key.size() == kX25519Len) {
        key.reset(EVP_PKEY_new_raw_private_key_ex(nullptr, "X25519", nullptr, private_key.data(),
                                                  private_key.size()));
      }
      break;
    case Kind::kEcp:
      key = EcpKeyFromPrivate(*g, private_key);
      break;
    case Kind::kModp:
      key = ModpKeyFromPrivate(*g, private_key);
      break;
  }
  if (!key) {
    ERR_clear_error();
    return nullptr;
  }
  return FromKey(group, key.release());
}

std::unique_ptr<DhKeyPair> DhKeyPair::FromKey(std::uint16_t group, EVP_PKEY* raw_key) {
  PkeyPtr key(raw_key);
  const Group& g = *FindGroup(group);
  std::vector<std::uint8_t> public_value(g.len);
  std::size_t len = 0;
  bool ok = false;
  switch (g.kind) {
    case Kind::kX25519:
      len = public_value.size();
      ok = EVP_PKEY_get_raw_public_key(key.get(), public_value.data(), &len) == 1 && len == g.len;
      break;
    case Kind::kEcp: {
      std::array<std::uint8_t, kMaxSec1PointLen> encoded;
      ok = EVP_PKEY_get_octet_string_param(key.get(), OSSL_PKEY_PARAM_PUB_KEY, encoded.data(),
                                           encoded.size(), &len) == 1 &&
           len == 1 + g.len && encoded[0] == kSec1Uncompressed;
      if (ok) std::copy_n(encoded.begin() + 1, g.len, public_value.begin());
      break;
    }
    case Kind::kModp: {
      BIGNUM* y = nullptr;
      ok = EVP_PKEY_get_bn_param(key.get(), OSSL_PKEY_PARAM_PUB_KEY, &y) == 1 &&
           BN_bn2binpad(y, public_value.data(), static_cast<int>(g.len)) ==
               static_cast<int>(g.len);
      BN_free(y);
      break;
    }
  }
  if (!ok) {
    ERR_clear_error();
    return nullptr;
  }
  return std::unique_ptr<DhKeyPair>(new DhKeyPair(group, key.release(), std::move(public_value)));
}

DhKeyPair::~DhKeyPair() { EVP_PKEY_free(key_); }

bool DhKeyPair::ComputeShared(std::span<const std::uint8_t> peer_public, SecureBytes& out) const {
  out.Clear();
  const Group& g = *FindGroup(group_);
  PkeyPtr peer = ImportPeer(g, peer_public);
  PkeyCtxPtr ctx(peer ? EVP_PKEY_CTX_new_from_pkey(nullptr, key_, nullptr) : nullptr);
  std::size_t len = DhSharedSecretLength(group_);
  out.Resize(len);
  // MODP: g^ir zero-padded to the length of p (RFC 7296 2.14); OpenSSL strips leading zeros
  // unless asked not to.
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) <= 0 ||
      (g.kind == Kind::kModp && EVP_PKEY_CTX_set_dh_pad(ctx.get(), 1) <= 0) ||
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
