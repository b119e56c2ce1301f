// X.509 certificates, private keys and trust stores for IKE public-key authentication
// (RFC 7296 2.15, 3.6, 3.7), all through OpenSSL 3: parsing, chain validation (X509_STORE),
// validity dates, key usage, revocation from CRL files. Nothing here parses ASN.1 by hand.
//
// Objects are immutable once loaded and shared (std::shared_ptr) between a connection's
// configuration and the IKE SAs that use it; a reload loads new ones and the old ones go with
// the last IKE SA holding them. Private keys are read through a buffer that is wiped, and
// OpenSSL clears the key's own memory when it is freed (BN_clear_free).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "spigot/bounds.h"

typedef struct x509_st X509;
typedef struct evp_pkey_st EVP_PKEY;
typedef struct x509_store_st X509_STORE;

namespace spigot::pki {

using Bytes = std::vector<std::uint8_t>;
// SHA-1 of a certificate's DER-encoded SubjectPublicKeyInfo: how CERTREQ names a trusted CA
// (RFC 7296 3.7).
using KeyId = std::array<std::uint8_t, 20>;

// What kind of key signs: decides the AUTH methods and hashes that fit it.
enum class KeyKind : std::uint8_t { kRsa, kEcP256, kEcP384, kEcP521, kOther };
const char* ToString(KeyKind k);

class Certificate {
 public:
  // One certificate from its DER encoding (a CERT payload's data, encoding 4); nullopt with
  // the reason in *error for anything OpenSSL cannot parse. Parsed certificates are kept in a
  // bounded cache keyed by their exact DER bytes (below): the same bytes again, as every road
  // warrior's intermediate CA or a user reconnecting, are not parsed again.
  static std::optional<Certificate> FromDer(std::span<const std::uint8_t> der, std::string* error);

  X509* get() const { return x509_.get(); }
  Bytes Der() const;
  // "C=CH, O=Example, CN=gw.example.org", in the certificate's RDN order.
  std::string Subject() const;
  std::string Issuer() const;
  // The subject name's DER encoding (an ID_DER_ASN1_DN identity's data).
  Bytes SubjectDer() const;
  KeyId SubjectKeyId() const;  // SHA-1 of the SubjectPublicKeyInfo
  KeyKind key_kind() const;
  EVP_PKEY* public_key() const;  // owned by the certificate
  bool IsCa() const;

 private:
  explicit Certificate(std::shared_ptr<X509> x) : x509_(std::move(x)) {}
  friend std::vector<Certificate> LoadCertificates(const std::string&, std::string*);
  std::shared_ptr<X509> x509_;
};

// The cache of parsed certificates behind Certificate::FromDer. Parsing is dear with OpenSSL 3.0:
// d2i_X509 decodes the public key through the provider decoders, about as costly as an ECDSA
// verification, and it was 37% of a certificate handshake (bench/ike.sh). Entries are the DER
// bytes and the parsed X509, shared and never modified; the least recently used goes when the
// cache is full. Only parsing is cached: every use still validates the chain, the dates and
// the revocation state. Thread-safe.
struct CertificateCacheStats {
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;
  std::size_t entries = 0;
  std::size_t capacity = 0;
  std::uint64_t evictions = 0;  // least recently used entries dropped for room
};
inline constexpr std::size_t kDefaultCertificateCacheEntries = bounds::kCertificateCache;
// 0 turns the cache off (and empties it); a smaller capacity drops the oldest entries.
void SetCertificateCacheCapacity(std::size_t entries);
CertificateCacheStats GetCertificateCacheStats();

// Every certificate in a PEM file (one or more BEGIN CERTIFICATE blocks) or a DER file. Empty,
// with the reason in *error, if the file cannot be read or holds no certificate.
std::vector<Certificate> LoadCertificates(const std::string& path, std::string* error);

class PrivateKey {
 public:
  // A PEM (PKCS#8, or traditional RSA/EC) or DER private key, unencrypted.
  static std::optional<PrivateKey> Load(const std::string& path, std::string* error);
  EVP_PKEY* get() const { return key_.get(); }
  KeyKind kind() const;
  // Whether `cert` carries this key's public half.
  bool Matches(const Certificate& cert) const;

 private:
  explicit PrivateKey(std::shared_ptr<EVP_PKEY> k) : key_(std::move(k)) {}
  std::shared_ptr<EVP_PKEY> key_;
};

// The CAs a connection trusts, and the CRLs that revoke certificates under them.
class TrustStore {
 public:
  // ca_files: PEM files of CA certificates (each may hold several); crl_files: PEM or DER
  // CRLs. nullopt with the file and reason in *error.
  static std::shared_ptr<const TrustStore> Load(const std::vector<std::string>& ca_files,
                                                const std::vector<std::string>& crl_files,
                                                std::string* error);
  ~TrustStore();

  // Validates `leaf` up to one of the CAs, through `intermediates` (untrusted, any order):
  // signatures, validity dates at `now_unix` (0: the current time), basic constraints, and
  // with CRLs loaded, revocation of every certificate in the chain whose issuer has one. Then the leaf's key usage
  // (digitalSignature, if the extension is present) and extended key usage (if present, one of
  // serverAuth, clientAuth, ipsecIKE or anyExtendedKeyUsage; RFC 4945 5.1.3.12). nullopt if
  // it is valid; else the reason ("certificate has expired", ...).
  std::optional<std::string> Verify(const Certificate& leaf, const std::vector<Certificate>& intermediates,
                                    std::int64_t now_unix = 0) const;

  // CERTREQ data: the CAs' KeyIds, concatenated.
  Bytes CertReqData() const;
  const std::vector<Certificate>& cas() const { return cas_; }
  std::size_t crl_count() const { return crl_count_; }

 private:
  TrustStore() = default;
  X509_STORE* store_ = nullptr;
  std::vector<Certificate> cas_;
  std::size_t crl_count_ = 0;
};

// A local identity's credentials: its certificate, the intermediates to send with it, and its
// private key (checked to belong to the certificate).
struct LocalCredentials {
  Certificate cert;
  std::vector<Certificate> intermediates;
  PrivateKey key;
  // cert_file: the end-entity certificate first, intermediates after it in the same file
  // (optional); key_file: its private key. nullptr with the file and reason in *error.
  static std::shared_ptr<const LocalCredentials> Load(const std::string& cert_file, const std::string& key_file,
                                                      std::string* error);
  // What to send in CERT payloads: the certificate, then the intermediates up to (not
  // including) the first whose issuer the peer named in its CERTREQ (all if it named none we
  // know).
  std::vector<Certificate> ChainFor(std::span<const std::uint8_t> certreq_data) const;
};

}  // namespace spigot::pki
