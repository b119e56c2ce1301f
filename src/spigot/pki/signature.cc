#include "spigot/pki/signature.h"

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/params.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <algorithm>
#include <memory>

namespace spigot::pki {

namespace {

struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using MdCtx = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;

const char* HashName(HashAlgorithm h) {
  switch (h) {
    case HashAlgorithm::kSha1: return "SHA1";
    case HashAlgorithm::kSha256: return "SHA256";
    case HashAlgorithm::kSha384: return "SHA384";
    case HashAlgorithm::kSha512: return "SHA512";
  }
  return "SHA256";
}

// ECDSA P-256/384/521: the size of r and of s in RFC 4754's r | s.
std::size_t EcCoordinateSize(KeyKind k) {
  switch (k) {
    case KeyKind::kEcP256: return 32;
    case KeyKind::kEcP384: return 48;
    case KeyKind::kEcP521: return 66;
    default: return 0;
  }
}

bool IsEc(KeyKind k) { return EcCoordinateSize(k) != 0; }

std::optional<std::vector<std::uint8_t>> DerToRaw(std::span<const std::uint8_t> der, std::size_t n) {
  const unsigned char* p = der.data();
  ECDSA_SIG* sig = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size()));
  if (sig == nullptr) return std::nullopt;
  std::vector<std::uint8_t> raw(2 * n);
  const bool ok = BN_bn2binpad(ECDSA_SIG_get0_r(sig), raw.data(), static_cast<int>(n)) == static_cast<int>(n) &&
                  BN_bn2binpad(ECDSA_SIG_get0_s(sig), raw.data() + n, static_cast<int>(n)) == static_cast<int>(n);
  ECDSA_SIG_free(sig);
  if (!ok) return std::nullopt;
  return raw;
}

std::optional<std::vector<std::uint8_t>> RawToDer(std::span<const std::uint8_t> raw) {
  const std::size_t n = raw.size() / 2;
  ECDSA_SIG* sig = ECDSA_SIG_new();
  BIGNUM* r = BN_bin2bn(raw.data(), static_cast<int>(n), nullptr);
  BIGNUM* s = BN_bin2bn(raw.data() + n, static_cast<int>(n), nullptr);
  if (sig == nullptr || r == nullptr || s == nullptr || ECDSA_SIG_set0(sig, r, s) != 1) {
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return std::nullopt;
  }
  unsigned char* der = nullptr;
  const int len = i2d_ECDSA_SIG(sig, &der);
  ECDSA_SIG_free(sig);
  if (len <= 0) return std::nullopt;
  std::vector<std::uint8_t> out(der, der + len);
  OPENSSL_free(der);
  return out;
}

struct Pss {
  const EVP_MD* mgf1 = nullptr;
  int salt = 0;
};

// EVP_DigestSign/Verify set up for `md` (and PSS when `pss`).
bool Init(EVP_MD_CTX* ctx, EVP_PKEY* key, const EVP_MD* md, const Pss* pss, bool sign, EVP_PKEY_CTX** pctx) {
  const int r = sign ? EVP_DigestSignInit(ctx, pctx, md, nullptr, key) : EVP_DigestVerifyInit(ctx, pctx, md, nullptr, key);
  if (r != 1) return false;
  if (pss != nullptr) {
    if (EVP_PKEY_CTX_set_rsa_padding(*pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md(*pctx, pss->mgf1) != 1 ||
        EVP_PKEY_CTX_set_rsa_pss_saltlen(*pctx, pss->salt) != 1) {
      return false;
    }
  }
  return true;
}

bool VerifyWith(EVP_PKEY* key, const EVP_MD* md, const Pss* pss, std::span<const std::uint8_t> sig,
                std::span<const std::uint8_t> octets) {
  MdCtx ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;
  const bool ok = ctx && Init(ctx.get(), key, md, pss, false, &pctx) &&
                  EVP_DigestVerify(ctx.get(), sig.data(), sig.size(), octets.data(), octets.size()) == 1;
  ERR_clear_error();
  return ok;
}

HashAlgorithm PreferredHash(KeyKind kind) {
  switch (kind) {
    case KeyKind::kEcP384: return HashAlgorithm::kSha384;
    case KeyKind::kEcP521: return HashAlgorithm::kSha512;
    default: return HashAlgorithm::kSha256;
  }
}

const EVP_MD* MdOfAlgor(const X509_ALGOR* a) {
  if (a == nullptr) return EVP_sha1();  // RFC 4055: the default
  return EVP_get_digestbyobj(a->algorithm);
}

}  // namespace

std::vector<std::uint8_t> EncodeHashAlgorithms() {
  std::vector<std::uint8_t> out;
  for (HashAlgorithm h : kOurHashes) {
    out.push_back(static_cast<std::uint8_t>(static_cast<std::uint16_t>(h) >> 8));
    out.push_back(static_cast<std::uint8_t>(static_cast<std::uint16_t>(h) & 0xFF));
  }
  return out;
}

std::vector<HashAlgorithm> DecodeHashAlgorithms(std::span<const std::uint8_t> data) {
  std::vector<HashAlgorithm> out;
  if (data.size() % 2 != 0) return out;
  for (std::size_t i = 0; i < data.size(); i += 2) {
    const auto v = static_cast<std::uint16_t>(data[i] << 8 | data[i + 1]);
    if (v >= 1 && v <= 4) out.push_back(static_cast<HashAlgorithm>(v));
  }
  return out;
}

std::optional<AuthSignature> Sign(const PrivateKey& key, std::span<const std::uint8_t> octets,
                                  const SignOptions& options, std::string* error) {
  const KeyKind kind = key.kind();
  AuthSignature out;
  const bool classic = options.peer_hashes.empty();
  HashAlgorithm hash = PreferredHash(kind);
  if (classic) {
    // 3.8: method 1 signs with SHA-1; 9/10/11 name their hash and curve.
    if (kind == KeyKind::kRsa) {
      out.method = kAuthRsaSignature;
      hash = HashAlgorithm::kSha1;
    } else {
      out.method = kind == KeyKind::kEcP256 ? kAuthEcdsaSha256 : kind == KeyKind::kEcP384 ? kAuthEcdsaSha384 : kAuthEcdsaSha512;
    }
  } else {
    out.method = kAuthDigitalSignature;
    const auto has = [&](HashAlgorithm h) {
      return std::find(options.peer_hashes.begin(), options.peer_hashes.end(), h) != options.peer_hashes.end();
    };
    if (!has(hash)) {
      const auto* common = std::find_if(std::begin(kOurHashes), std::end(kOurHashes), has);
      if (common == std::end(kOurHashes)) {
        *error = "no signature hash in common with the peer's SIGNATURE_HASH_ALGORITHMS";
        return std::nullopt;
      }
      hash = *common;
    }
  }
  const EVP_MD* md = EVP_get_digestbyname(HashName(hash));
  const bool pss = !classic && kind == KeyKind::kRsa && options.rsa_pss;
  const Pss pss_params{md, RSA_PSS_SALTLEN_DIGEST};
  MdCtx ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;
  std::size_t len = 0;
  if (!ctx || !Init(ctx.get(), key.get(), md, pss ? &pss_params : nullptr, true, &pctx) ||
      EVP_DigestSign(ctx.get(), nullptr, &len, octets.data(), octets.size()) != 1) {
    *error = "cannot sign with the " + std::string(ToString(kind)) + " key";
    ERR_clear_error();
    return std::nullopt;
  }
  std::vector<std::uint8_t> sig(len);
  if (EVP_DigestSign(ctx.get(), sig.data(), &len, octets.data(), octets.size()) != 1) {
    *error = "signing failed";
    ERR_clear_error();
    return std::nullopt;
  }
  sig.resize(len);
  if (classic) {
    if (IsEc(kind)) {
      auto raw = DerToRaw(sig, EcCoordinateSize(kind));
      if (!raw) {
        *error = "ECDSA signature not encodable as r | s";
        return std::nullopt;
      }
      sig = std::move(*raw);
    }
    out.data = std::move(sig);
    return out;
  }
  // RFC 7427 3: the AlgorithmIdentifier as the provider names what it just did.
  unsigned char aid[128];
  OSSL_PARAM params[] = {OSSL_PARAM_construct_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, aid, sizeof aid),
                         OSSL_PARAM_construct_end()};
  if (EVP_PKEY_CTX_get_params(pctx, params) != 1 || params[0].return_size == 0 || params[0].return_size > 255) {
    *error = "OpenSSL gives no AlgorithmIdentifier for this signature";
    ERR_clear_error();
    return std::nullopt;
  }
  out.data.push_back(static_cast<std::uint8_t>(params[0].return_size));
  out.data.insert(out.data.end(), aid, aid + params[0].return_size);
  out.data.insert(out.data.end(), sig.begin(), sig.end());
  return out;
}

std::optional<std::string> Verify(const Certificate& signer, std::uint8_t method, std::span<const std::uint8_t> data,
                                  std::span<const std::uint8_t> octets) {
  const KeyKind kind = signer.key_kind();
  EVP_PKEY* key = signer.public_key();
  switch (method) {
    case kAuthRsaSignature:
      if (kind != KeyKind::kRsa) return "AUTH method 1 (RSA) but the certificate holds a " + std::string(ToString(kind)) + " key";
      if (!VerifyWith(key, EVP_sha1(), nullptr, data, octets)) return std::string("RSA signature does not verify");
      return std::nullopt;
    case kAuthEcdsaSha256:
    case kAuthEcdsaSha384:
    case kAuthEcdsaSha512: {
      const KeyKind want = method == kAuthEcdsaSha256 ? KeyKind::kEcP256 : method == kAuthEcdsaSha384 ? KeyKind::kEcP384 : KeyKind::kEcP521;
      if (kind != want) {
        return "AUTH method " + std::to_string(method) + " needs a " + ToString(want) + " key, the certificate holds " + ToString(kind);
      }
      if (data.size() != 2 * EcCoordinateSize(kind)) return std::string("ECDSA signature of the wrong length");
      const auto der = RawToDer(data);
      const EVP_MD* md = method == kAuthEcdsaSha256 ? EVP_sha256() : method == kAuthEcdsaSha384 ? EVP_sha384() : EVP_sha512();
      if (!der || !VerifyWith(key, md, nullptr, *der, octets)) return std::string("ECDSA signature does not verify");
      return std::nullopt;
    }
    case kAuthDigitalSignature:
      break;
    default:
      return "AUTH method " + std::to_string(method) + " is not a signature method this gateway accepts";
  }
  // RFC 7427 3: length, AlgorithmIdentifier, signature.
  if (data.empty() || data[0] == 0 || data.size() < 1u + data[0]) return std::string("malformed RFC 7427 AUTH data");
  const std::span<const std::uint8_t> aid = data.subspan(1, data[0]);
  const std::span<const std::uint8_t> sig = data.subspan(1u + data[0]);
  const unsigned char* p = aid.data();
  X509_ALGOR* algor = d2i_X509_ALGOR(nullptr, &p, static_cast<long>(aid.size()));
  if (algor == nullptr || p != aid.data() + aid.size()) {
    X509_ALGOR_free(algor);
    ERR_clear_error();
    return std::string("malformed AlgorithmIdentifier in the AUTH payload");
  }
  std::unique_ptr<X509_ALGOR, decltype(&X509_ALGOR_free)> algor_owner(algor, X509_ALGOR_free);
  const int nid = OBJ_obj2nid(algor->algorithm);
  const EVP_MD* md = nullptr;
  bool rsa = false;
  switch (nid) {
    case NID_sha256WithRSAEncryption: md = EVP_sha256(); rsa = true; break;
    case NID_sha384WithRSAEncryption: md = EVP_sha384(); rsa = true; break;
    case NID_sha512WithRSAEncryption: md = EVP_sha512(); rsa = true; break;
    case NID_ecdsa_with_SHA256: md = EVP_sha256(); break;
    case NID_ecdsa_with_SHA384: md = EVP_sha384(); break;
    case NID_ecdsa_with_SHA512: md = EVP_sha512(); break;
    case NID_rsassaPss: {
      if (kind != KeyKind::kRsa) return "RSASSA-PSS but the certificate holds a " + std::string(ToString(kind)) + " key";
      const ASN1_OBJECT* obj = nullptr;
      int ptype = 0;
      const void* pval = nullptr;
      X509_ALGOR_get0(&obj, &ptype, &pval, algor);
      if (ptype != V_ASN1_SEQUENCE || pval == nullptr) return std::string("RSASSA-PSS without parameters");
      const auto* seq = static_cast<const ASN1_STRING*>(pval);
      const unsigned char* q = ASN1_STRING_get0_data(seq);
      RSA_PSS_PARAMS* pp = d2i_RSA_PSS_PARAMS(nullptr, &q, ASN1_STRING_length(seq));
      if (pp == nullptr) {
        ERR_clear_error();
        return std::string("malformed RSASSA-PSS parameters");
      }
      std::unique_ptr<RSA_PSS_PARAMS, decltype(&RSA_PSS_PARAMS_free)> pp_owner(pp, RSA_PSS_PARAMS_free);
      Pss pss;
      md = MdOfAlgor(pp->hashAlgorithm);
      pss.mgf1 = EVP_sha1();
      if (pp->maskGenAlgorithm != nullptr) {
        if (OBJ_obj2nid(pp->maskGenAlgorithm->algorithm) != NID_mgf1) return std::string("RSASSA-PSS with a mask generation other than MGF1");
        pss.mgf1 = pp->maskHash != nullptr ? MdOfAlgor(pp->maskHash) : nullptr;
        if (pss.mgf1 == nullptr) {
          // OpenSSL decodes maskHash lazily in some versions: read MGF1's parameter ourselves.
          const ASN1_OBJECT* mo = nullptr;
          int mt = 0;
          const void* mv = nullptr;
          X509_ALGOR_get0(&mo, &mt, &mv, pp->maskGenAlgorithm);
          if (mt == V_ASN1_SEQUENCE && mv != nullptr) {
            const auto* ms = static_cast<const ASN1_STRING*>(mv);
            const unsigned char* mq = ASN1_STRING_get0_data(ms);
            if (X509_ALGOR* mh = d2i_X509_ALGOR(nullptr, &mq, ASN1_STRING_length(ms))) {
              pss.mgf1 = MdOfAlgor(mh);
              X509_ALGOR_free(mh);
            }
          }
        }
      }
      pss.salt = pp->saltLength != nullptr ? static_cast<int>(ASN1_INTEGER_get(pp->saltLength)) : 20;
      if (md == nullptr || pss.mgf1 == nullptr || pss.salt < 0) return std::string("unsupported RSASSA-PSS parameters");
      if (!VerifyWith(key, md, &pss, sig, octets)) return std::string("RSASSA-PSS signature does not verify");
      return std::nullopt;
    }
    case NID_sha1WithRSAEncryption:
    case NID_ecdsa_with_SHA1:
      return std::string("SHA-1 signature: not among the hashes this gateway announced");
    default:
      return "unknown signature algorithm " + std::string(nid == NID_undef ? "(unrecognised OID)" : OBJ_nid2sn(nid));
  }
  if (rsa && kind != KeyKind::kRsa) return "an RSA signature but the certificate holds a " + std::string(ToString(kind)) + " key";
  if (!rsa && !IsEc(kind)) return "an ECDSA signature but the certificate holds a " + std::string(ToString(kind)) + " key";
  if (!VerifyWith(key, md, nullptr, sig, octets)) return std::string("signature does not verify");
  return std::nullopt;
}

}  // namespace spigot::pki
