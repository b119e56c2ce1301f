#include <sys/stat.h>
#include "spigot/test_tools/test_pki.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace spigot::test_tools {

namespace {

void Check(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string("test PKI: ") + what);
}

EVP_PKEY* Generate(TestKey k) {
  switch (k) {
    case TestKey::kRsa2048: return EVP_RSA_gen(2048);
    case TestKey::kRsa3072: return EVP_RSA_gen(3072);
    case TestKey::kEcP256: return EVP_EC_gen("P-256");
    case TestKey::kEcP384: return EVP_EC_gen("P-384");
  }
  return nullptr;
}

// RSA keys take 0.1-1 s each to generate, and every test process mints its own PKI (one ctest
// test per GoogleTest test): the n-th RSA key of a size a process asks for is kept in
// SPIGOT_TEST_KEY_CACHE (the build tree's test-key-cache/) and read back by the next process.
// Keys within one process stay distinct; certificates are issued fresh every time. A cache
// that cannot be read or written just means generating.
EVP_PKEY* CachedRsa(TestKey k) {
  static std::atomic<int> next[2];
  const bool big = k == TestKey::kRsa3072;
  const int n = next[big ? 1 : 0]++;
  const char* env = std::getenv("SPIGOT_TEST_KEY_CACHE");
#ifdef SPIGOT_TEST_KEY_CACHE
  const std::string dir = env ? env : SPIGOT_TEST_KEY_CACHE;
#else
  const std::string dir = env ? env : "";
#endif
  if (dir.empty()) return Generate(k);
  const std::string path = dir + (big ? "/rsa3072-" : "/rsa2048-") + std::to_string(n) + ".pem";
  if (FILE* f = std::fopen(path.c_str(), "r")) {
    EVP_PKEY* key = PEM_read_PrivateKey(f, nullptr, nullptr, nullptr);
    std::fclose(f);
    if (key != nullptr) return key;
  }
  EVP_PKEY* key = Generate(k);
  if (key == nullptr) return nullptr;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  // Written beside and renamed into place, so that a parallel test never reads half a key.
  const std::string tmp = path + "." + std::to_string(getpid()) + ".tmp";
  if (FILE* f = std::fopen(tmp.c_str(), "w")) {
    const bool ok = PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
    if (std::fclose(f) == 0 && ok) std::filesystem::rename(tmp, path, ec);
    std::filesystem::remove(tmp, ec);
  }
  return key;
}

std::shared_ptr<EVP_PKEY> NewKey(TestKey k) {
  EVP_PKEY* key = k == TestKey::kRsa2048 || k == TestKey::kRsa3072 ? CachedRsa(k) : Generate(k);
  Check(key != nullptr, "key generation");
  return std::shared_ptr<EVP_PKEY>(key, EVP_PKEY_free);
}

X509_NAME* Name(const std::string& subject) {
  X509_NAME* n = X509_NAME_new();
  std::size_t start = 0;
  while (start < subject.size()) {
    std::size_t end = subject.find(',', start);
    if (end == std::string::npos) end = subject.size();
    std::string rdn = subject.substr(start, end - start);
    while (!rdn.empty() && rdn.front() == ' ') rdn.erase(rdn.begin());
    const auto eq = rdn.find('=');
    Check(eq != std::string::npos, "subject syntax");
    Check(X509_NAME_add_entry_by_txt(n, rdn.substr(0, eq).c_str(), MBSTRING_UTF8,
                                     reinterpret_cast<const unsigned char*>(rdn.c_str() + eq + 1), -1, -1, 0) == 1,
          "subject attribute");
    start = end + 1;
  }
  return n;
}

void AddExt(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  Check(ext != nullptr, "extension");
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

void WritePem(const std::string& path, X509* cert) {
  FILE* f = std::fopen(path.c_str(), "w");
  Check(f != nullptr, "open for writing");
  PEM_write_X509(f, cert);
  std::fclose(f);
}

TestCert Make(const std::string& dir, const std::string& name, long serial, const std::string& subject,
              TestKey key_kind, const TestCert* issuer, const IssueOptions& o) {
  TestCert out;
  out.key = NewKey(key_kind);
  out.serial = serial;
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
  X509_gmtime_adj(X509_getm_notBefore(x), o.not_before_days * 86400);
  X509_gmtime_adj(X509_getm_notAfter(x), o.not_after_days * 86400);
  X509_NAME* n = Name(subject);
  X509_set_subject_name(x, n);
  X509_set_issuer_name(x, issuer != nullptr ? X509_get_subject_name(issuer->cert.get()) : n);
  X509_NAME_free(n);
  X509_set_pubkey(x, out.key.get());
  X509* signer_cert = issuer != nullptr ? issuer->cert.get() : x;
  AddExt(x, signer_cert, NID_subject_key_identifier, "hash");
  AddExt(x, signer_cert, NID_authority_key_identifier, "keyid:always");
  if (o.ca) {
    AddExt(x, signer_cert, NID_basic_constraints, "critical,CA:TRUE");
    AddExt(x, signer_cert, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    AddExt(x, signer_cert, NID_basic_constraints, "CA:FALSE");
    if (!o.key_usage.empty()) AddExt(x, signer_cert, NID_key_usage, o.key_usage);
  }
  if (!o.eku.empty()) AddExt(x, signer_cert, NID_ext_key_usage, o.eku);
  std::string san;
  const auto add = [&](const char* kind, const std::vector<std::string>& v) {
    for (const auto& s : v) {
      if (!san.empty()) san += ',';
      san.append(kind).append(":").append(s);
    }
  };
  add("DNS", o.dns);
  add("email", o.email);
  add("IP", o.ip);
  if (!san.empty()) AddExt(x, signer_cert, NID_subject_alt_name, san);
  EVP_PKEY* signer_key = issuer != nullptr ? issuer->key.get() : out.key.get();
  Check(X509_sign(x, signer_key, EVP_sha256()) > 0, "signing");
  out.cert = std::shared_ptr<X509>(x, X509_free);
  out.cert_path = dir + "/" + name + ".pem";
  out.key_path = dir + "/" + name + ".key";
  WritePem(out.cert_path, x);
  FILE* f = std::fopen(out.key_path.c_str(), "w");
  Check(f != nullptr, "open key for writing");
  PEM_write_PrivateKey(f, out.key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
  chmod(out.key_path.c_str(), 0600);  // config refuses keys that others may read
  return out;
}

}  // namespace

TestPki::TestPki(std::string dir) : dir_(std::move(dir)) { std::filesystem::create_directories(dir_); }

TestCert TestPki::Ca(const std::string& name, const std::string& subject, TestKey key) {
  IssueOptions o;
  o.ca = true;
  o.not_after_days = 365;
  return Make(dir_, name, next_serial_++, subject, key, nullptr, o);
}

TestCert TestPki::Issue(const std::string& name, const TestCert& issuer, const std::string& subject, TestKey key,
                        const IssueOptions& options) {
  return Make(dir_, name, next_serial_++, subject, key, &issuer, options);
}

std::string TestPki::Chain(const std::string& name, const std::vector<const TestCert*>& certs) {
  const std::string path = dir_ + "/" + name + ".pem";
  FILE* f = std::fopen(path.c_str(), "w");
  Check(f != nullptr, "open chain for writing");
  for (const TestCert* c : certs) PEM_write_X509(f, c->cert.get());
  std::fclose(f);
  return path;
}

std::string TestPki::Crl(const std::string& name, const TestCert& issuer, const std::vector<const TestCert*>& revoked) {
  X509_CRL* crl = X509_CRL_new();
  X509_CRL_set_version(crl, 1);
  X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer.cert.get()));
  ASN1_TIME* t = X509_gmtime_adj(nullptr, -86400);
  X509_CRL_set1_lastUpdate(crl, t);
  X509_gmtime_adj(t, 30L * 86400);
  X509_CRL_set1_nextUpdate(crl, t);
  for (const TestCert* c : revoked) {
    X509_REVOKED* r = X509_REVOKED_new();
    ASN1_INTEGER* serial = ASN1_INTEGER_new();
    ASN1_INTEGER_set(serial, c->serial);
    X509_REVOKED_set_serialNumber(r, serial);
    ASN1_TIME* when = X509_gmtime_adj(nullptr, -3600);
    X509_REVOKED_set_revocationDate(r, when);
    X509_CRL_add0_revoked(crl, r);
    ASN1_INTEGER_free(serial);
    ASN1_TIME_free(when);
  }
  ASN1_TIME_free(t);
  X509_CRL_sort(crl);
  Check(X509_CRL_sign(crl, issuer.key.get(), EVP_sha256()) > 0, "CRL signing");
  const std::string path = dir_ + "/" + name + ".crl";
  FILE* f = std::fopen(path.c_str(), "w");
  Check(f != nullptr, "open CRL for writing");
  PEM_write_X509_CRL(f, crl);
  std::fclose(f);
  X509_CRL_free(crl);
  return path;
}

}  // namespace spigot::test_tools
