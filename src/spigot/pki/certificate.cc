#include "spigot/pki/certificate.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <list>
#include <mutex>
#include <string_view>
#include <unordered_map>

#include "spigot/crypto/secure_bytes.h"

namespace spigot::pki {

namespace {

std::string OpenSslError() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

std::optional<crypto::SecureBytes> ReadFile(const std::string& path, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = path + ": cannot open: " + std::strerror(errno);
    return std::nullopt;
  }
  // Straight into wiped memory: a private key is never in an ordinary buffer.
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(0);
  if (size < 0 || size > (1 << 24)) {
    *error = path + ": not a regular file of at most 16 MiB";
    return std::nullopt;
  }
  crypto::SecureBytes out(static_cast<std::size_t>(size));
  if (!in.read(reinterpret_cast<char*>(out.span().data()), size)) {
    *error = path + ": read error";
    return std::nullopt;
  }
  return out;
}

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

BioPtr MemBio(std::span<const std::uint8_t> data) {
  return BioPtr(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

bool LooksPem(std::span<const std::uint8_t> data) {
  static constexpr std::string_view kBegin = "-----BEGIN";
  return std::search(data.begin(), data.end(), kBegin.begin(), kBegin.end()) != data.end();
}

std::string NameToString(const X509_NAME* name) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  // RFC 2253 escaping, ", " between RDNs, in the order the certificate holds them (strongSwan
  // writes DNs the same way: "C=CH, O=Example, CN=gw").
  X509_NAME_print_ex(bio.get(), name, 0,
                     (ASN1_STRFLGS_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) | XN_FLAG_SEP_CPLUS_SPC | XN_FLAG_FN_SN);
  char* p = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &p);
  return std::string(p, static_cast<std::size_t>(n));
}

KeyKind KindOf(const EVP_PKEY* key) {
  if (key == nullptr) return KeyKind::kOther;
  if (EVP_PKEY_is_a(key, "RSA")) return KeyKind::kRsa;
  if (EVP_PKEY_is_a(key, "EC")) {
    char group[64] = {};
    std::size_t len = 0;
    if (EVP_PKEY_get_utf8_string_param(key, "group", group, sizeof group, &len) != 1) return KeyKind::kOther;
    const std::string_view g(group, len);
    if (g == "prime256v1" || g == "P-256") return KeyKind::kEcP256;
    if (g == "secp384r1" || g == "P-384") return KeyKind::kEcP384;
    if (g == "secp521r1" || g == "P-521") return KeyKind::kEcP521;
  }
  return KeyKind::kOther;
}

int IgnoreMissingCrl(int ok, X509_STORE_CTX* ctx) {
  if (ok == 0 && X509_STORE_CTX_get_error(ctx) == X509_V_ERR_UNABLE_TO_GET_CRL) return 1;
  return ok;
}

}  // namespace

const char* ToString(KeyKind k) {
  switch (k) {
    case KeyKind::kRsa: return "RSA";
    case KeyKind::kEcP256: return "ECDSA P-256";
    case KeyKind::kEcP384: return "ECDSA P-384";
    case KeyKind::kEcP521: return "ECDSA P-521";
    case KeyKind::kOther: break;
  }
  return "unsupported key type";
}

// ---------------------------------------------------------------- the parse cache

namespace {

class ParseCache {
 public:
  std::shared_ptr<X509> Find(std::string_view der) {
    std::lock_guard lock(mu_);
    const auto it = index_.find(der);
    if (it == index_.end()) {
      ++stats_.misses;
      return nullptr;
    }
    ++stats_.hits;
    lru_.splice(lru_.begin(), lru_, it->second);
    return it->second->second;
  }
  void Add(std::string_view der, std::shared_ptr<X509> x) {
    std::lock_guard lock(mu_);
    if (stats_.capacity == 0 || index_.count(der) != 0) return;
    lru_.emplace_front(std::string(der), std::move(x));
    index_.emplace(lru_.front().first, lru_.begin());
    Trim();
  }
  void SetCapacity(std::size_t entries) {
    std::lock_guard lock(mu_);
    stats_.capacity = entries;
    Trim();
  }
  CertificateCacheStats Stats() {
    std::lock_guard lock(mu_);
    CertificateCacheStats s = stats_;
    s.entries = index_.size();
    return s;
  }

 private:
  void Trim() {
    while (index_.size() > stats_.capacity) {
      index_.erase(lru_.back().first);
      lru_.pop_back();
      ++stats_.evictions;
    }
  }
  std::mutex mu_;
  // Most recently used first; index_ keys view the strings in lru_'s nodes, which never move.
  std::list<std::pair<std::string, std::shared_ptr<X509>>> lru_;
  std::unordered_map<std::string_view, decltype(lru_)::iterator> index_;
  CertificateCacheStats stats_{0, 0, 0, kDefaultCertificateCacheEntries};
};

ParseCache& TheParseCache() {
  static ParseCache* cache = new ParseCache;  // never destroyed: usable until the process ends
  return *cache;
}

}  // namespace

void SetCertificateCacheCapacity(std::size_t entries) { TheParseCache().SetCapacity(entries); }
CertificateCacheStats GetCertificateCacheStats() { return TheParseCache().Stats(); }

// ---------------------------------------------------------------- Certificate

std::optional<Certificate> Certificate::FromDer(std::span<const std::uint8_t> der, std::string* error) {
  const std::string_view key(reinterpret_cast<const char*>(der.data()), der.size());
  if (auto cached = TheParseCache().Find(key)) return Certificate(std::move(cached));
  const unsigned char* p = der.data();
  X509* x = d2i_X509(nullptr, &p, static_cast<long>(der.size()));
  if (x == nullptr || p != der.data() + der.size()) {
    X509_free(x);
    *error = "malformed certificate: " + OpenSslError();
    return std::nullopt;
  }
  std::shared_ptr<X509> parsed(x, X509_free);
  TheParseCache().Add(key, parsed);
  return Certificate(std::move(parsed));
}

Bytes Certificate::Der() const {
  unsigned char* out = nullptr;
  const int n = i2d_X509(x509_.get(), &out);
  if (n <= 0) return {};
  Bytes b(out, out + n);
  OPENSSL_free(out);
  return b;
}

std::string Certificate::Subject() const { return NameToString(X509_get_subject_name(x509_.get())); }
std::string Certificate::Issuer() const { return NameToString(X509_get_issuer_name(x509_.get())); }

Bytes Certificate::SubjectDer() const {
  unsigned char* out = nullptr;
  const int n = i2d_X509_NAME(X509_get_subject_name(x509_.get()), &out);
  if (n <= 0) return {};
  Bytes b(out, out + n);
  OPENSSL_free(out);
  return b;
}

KeyId Certificate::SubjectKeyId() const {
  KeyId id{};
  unsigned char* spki = nullptr;
  const int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x509_.get()), &spki);
  if (n > 0) {
    unsigned int len = 0;
    EVP_Digest(spki, static_cast<std::size_t>(n), id.data(), &len, EVP_sha1(), nullptr);
    OPENSSL_free(spki);
  }
  return id;
}

EVP_PKEY* Certificate::public_key() const { return X509_get0_pubkey(x509_.get()); }
KeyKind Certificate::key_kind() const { return KindOf(public_key()); }
bool Certificate::IsCa() const { return X509_check_ca(x509_.get()) != 0; }

std::vector<Certificate> LoadCertificates(const std::string& path, std::string* error) {
  std::vector<Certificate> out;
  const auto data = ReadFile(path, error);
  if (!data) return out;
  if (LooksPem(data->span())) {
    BioPtr bio = MemBio(data->span());
    while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
      out.push_back(Certificate(std::shared_ptr<X509>(x, X509_free)));
    }
    ERR_clear_error();  // the end of the file reads as an error
  } else {
    std::string why;
    if (auto c = Certificate::FromDer(data->span(), &why)) out.push_back(std::move(*c));
  }
  if (out.empty()) *error = path + ": no certificate in the file (PEM or DER X.509 expected)";
  return out;
}

// ---------------------------------------------------------------- PrivateKey

std::optional<PrivateKey> PrivateKey::Load(const std::string& path, std::string* error) {
  const auto data = ReadFile(path, error);
  if (!data) return std::nullopt;
  BioPtr bio = MemBio(data->span());
  EVP_PKEY* key = LooksPem(data->span()) ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr)
                                         : d2i_PrivateKey_bio(bio.get(), nullptr);
  if (key == nullptr) {
    *error = path + ": not an unencrypted private key (" + OpenSslError() + ")";
    return std::nullopt;
  }
  PrivateKey k(std::shared_ptr<EVP_PKEY>(key, EVP_PKEY_free));
  if (k.kind() == KeyKind::kOther) {
    *error = path + ": unsupported key type (RSA or ECDSA P-256/P-384/P-521 expected)";
    return std::nullopt;
  }
  return k;
}

KeyKind PrivateKey::kind() const { return KindOf(key_.get()); }

bool PrivateKey::Matches(const Certificate& cert) const {
  return EVP_PKEY_eq(key_.get(), cert.public_key()) == 1;
}

// ---------------------------------------------------------------- TrustStore

TrustStore::~TrustStore() { X509_STORE_free(store_); }

std::shared_ptr<const TrustStore> TrustStore::Load(const std::vector<std::string>& ca_files,
                                                   const std::vector<std::string>& crl_files,
                                                   std::string* error) {
  std::shared_ptr<TrustStore> t(new TrustStore());
  t->store_ = X509_STORE_new();
  for (const auto& f : ca_files) {
    auto certs = LoadCertificates(f, error);
    if (certs.empty()) return nullptr;
    for (auto& c : certs) {
      if (!c.IsCa()) {
        *error = f + ": " + c.Subject() + " is not a CA certificate (basicConstraints CA:TRUE)";
        return nullptr;
      }
      X509_STORE_add_cert(t->store_, c.get());
      t->cas_.push_back(std::move(c));
    }
  }
  for (const auto& f : crl_files) {
    const auto data = ReadFile(f, error);
    if (!data) return nullptr;
    BioPtr bio = MemBio(data->span());
    std::size_t n = 0;
    if (LooksPem(data->span())) {
      while (X509_CRL* crl = PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr)) {
        X509_STORE_add_crl(t->store_, crl);
        X509_CRL_free(crl);
        ++n;
      }
      ERR_clear_error();
    } else if (X509_CRL* crl = d2i_X509_CRL_bio(bio.get(), nullptr)) {
      X509_STORE_add_crl(t->store_, crl);
      X509_CRL_free(crl);
      ++n;
    }
    if (n == 0) {
      *error = f + ": no CRL in the file (PEM or DER X.509 CRL expected)";
      return nullptr;
    }
    t->crl_count_ += n;
  }
  if (t->crl_count_ > 0) {
    // Every certificate of the chain whose issuer has a CRL loaded is checked against it; an
    // issuer without one is not an error (strongSwan's default, non-strict, alike).
    X509_STORE_set_flags(t->store_, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    X509_STORE_set_verify_cb(t->store_, IgnoreMissingCrl);
  }
  return t;
}

std::optional<std::string> TrustStore::Verify(const Certificate& leaf, const std::vector<Certificate>& intermediates,
                                              std::int64_t now_unix) const {
  STACK_OF(X509)* untrusted = sk_X509_new_null();
  for (const auto& c : intermediates) sk_X509_push(untrusted, c.get());
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  std::optional<std::string> reason;
  if (X509_STORE_CTX_init(ctx, store_, leaf.get(), untrusted) != 1) {
    reason = "cannot validate: " + OpenSslError();
  } else {
    if (now_unix != 0) X509_STORE_CTX_set_time(ctx, 0, static_cast<time_t>(now_unix));
    if (X509_verify_cert(ctx) != 1) {
      const int err = X509_STORE_CTX_get_error(ctx);
      reason = std::string(X509_verify_cert_error_string(err));
      if (X509* bad = X509_STORE_CTX_get_current_cert(ctx)) {
        reason->append(" (").append(NameToString(X509_get_subject_name(bad))).append(")");
      }
      ERR_clear_error();
    }
  }
  X509_STORE_CTX_free(ctx);
  sk_X509_free(untrusted);
  if (reason) return reason;
  // RFC 4945 5.1.3.2 / 5.1.3.12: a key that may not sign, or an EKU for something else.
  const std::uint32_t ku = X509_get_key_usage(leaf.get());
  if (ku != UINT32_MAX && !(ku & KU_DIGITAL_SIGNATURE) && !(ku & KU_NON_REPUDIATION)) {
    return "certificate key usage does not allow digital signatures (" + leaf.Subject() + ")";
  }
  const std::uint32_t xku = X509_get_extended_key_usage(leaf.get());
  if (xku != UINT32_MAX && !(xku & (XKU_SSL_SERVER | XKU_SSL_CLIENT | XKU_ANYEKU))) {
    // ipsecIKE (1.3.6.1.5.5.7.3.17) has no XKU_ bit: look for it.
    bool ipsec_ike = false;
    if (auto* eku = static_cast<EXTENDED_KEY_USAGE*>(X509_get_ext_d2i(leaf.get(), NID_ext_key_usage, nullptr, nullptr))) {
      ASN1_OBJECT* want = OBJ_txt2obj("1.3.6.1.5.5.7.3.17", 1);
      for (int i = 0; i < sk_ASN1_OBJECT_num(eku); ++i) ipsec_ike |= OBJ_cmp(sk_ASN1_OBJECT_value(eku, i), want) == 0;
      ASN1_OBJECT_free(want);
      EXTENDED_KEY_USAGE_free(eku);
    }
    if (!ipsec_ike) return "certificate extended key usage is not for IKE (" + leaf.Subject() + ")";
  }
  return std::nullopt;
}

Bytes TrustStore::CertReqData() const {
  Bytes out;
  for (const auto& ca : cas_) {
    const KeyId id = ca.SubjectKeyId();
    out.insert(out.end(), id.begin(), id.end());
  }
  return out;
}

// ---------------------------------------------------------------- LocalCredentials

std::shared_ptr<const LocalCredentials> LocalCredentials::Load(const std::string& cert_file,
                                                               const std::string& key_file,
                                                               std::string* error) {
  auto certs = LoadCertificates(cert_file, error);
  if (certs.empty()) return nullptr;
  auto key = PrivateKey::Load(key_file, error);
  if (!key) return nullptr;
  if (!key->Matches(certs.front())) {
    *error = key_file + ": the key does not belong to the certificate " + certs.front().Subject() + " of " + cert_file;
    return nullptr;
  }
  auto out = std::make_shared<LocalCredentials>(LocalCredentials{certs.front(), {}, std::move(*key)});
  out->intermediates.assign(certs.begin() + 1, certs.end());
  return out;
}

std::vector<Certificate> LocalCredentials::ChainFor(std::span<const std::uint8_t> certreq_data) const {
  std::vector<Certificate> out{cert};
  const auto trusted = [&](const Certificate& c) {
    const KeyId id = c.SubjectKeyId();
    for (std::size_t i = 0; i + id.size() <= certreq_data.size(); i += id.size()) {
      if (std::equal(id.begin(), id.end(), certreq_data.begin() + static_cast<std::ptrdiff_t>(i))) return true;
    }
    return false;
  };
  for (const auto& c : intermediates) {
    if (trusted(c)) break;
    out.push_back(c);
  }
  return out;
}

}  // namespace spigot::pki
