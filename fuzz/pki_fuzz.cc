// What a peer's IKE_AUTH hands the certificate code, fuzzed: CERT payload data (DER
// certificates, then validated against a trust store), AUTH payload data under every signature
// method against RSA and ECDSA certificates, SIGNATURE_HASH_ALGORITHMS and CERTREQ data, and
// names (DN patterns, subject comparison, DN text). The first input byte picks the target.
// Nothing may crash, leak or read outside the input.
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "spigot/pki/certificate.h"
#include "spigot/pki/names.h"
#include "spigot/pki/signature.h"

namespace {

using namespace spigot::pki;

struct Fixture {
  std::optional<Certificate> rsa, ec;
  std::shared_ptr<const TrustStore> store;
  std::shared_ptr<const LocalCredentials> creds;
  std::optional<DnPattern> pattern;
};

// A self-signed CA certificate for `key`, written as PEM to `path`.
Certificate SelfSigned(EVP_PKEY* key, const char* cn, const std::string& path) {
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -86400);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400);
  X509_NAME* n = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>("Example"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn), -1, -1, 0);
  X509_set_issuer_name(x, n);
  X509_set_pubkey(x, key);
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, x, x, nullptr, nullptr, 0);
  X509_EXTENSION* bc = X509V3_EXT_conf_nid(nullptr, &ctx, NID_basic_constraints, "critical,CA:TRUE");
  X509_add_ext(x, bc, -1);
  X509_EXTENSION_free(bc);
  X509_sign(x, key, EVP_sha256());
  FILE* f = std::fopen(path.c_str(), "w");
  PEM_write_X509(f, x);
  std::fclose(f);
  unsigned char* der = nullptr;
  const int len = i2d_X509(x, &der);
  std::string error;
  auto c = Certificate::FromDer(std::span<const std::uint8_t>(der, static_cast<std::size_t>(len)), &error);
  OPENSSL_free(der);
  X509_free(x);
  if (!c) std::abort();
  return *c;
}

Fixture* Make() {
  auto* f = new Fixture;
  char dir[] = "/tmp/spigot-pki-fuzz-XXXXXX";
  if (mkdtemp(dir) == nullptr) std::abort();
  EVP_PKEY* rsa = EVP_RSA_gen(2048);
  EVP_PKEY* ec = EVP_EC_gen("P-256");
  const std::string d(dir);
  f->rsa = SelfSigned(rsa, "rsa", d + "/rsa.pem");
  f->ec = SelfSigned(ec, "ec", d + "/ec.pem");
  FILE* k = std::fopen((d + "/ec.key").c_str(), "w");
  PEM_write_PrivateKey(k, ec, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(k);
  std::string error;
  f->store = TrustStore::Load({d + "/rsa.pem"}, {}, &error);
  f->creds = LocalCredentials::Load(d + "/ec.pem", d + "/ec.key", &error);
  f->pattern = DnPattern::Parse("O=Example, CN=*", &error);
  if (!f->store || !f->creds || !f->pattern) std::abort();
  EVP_PKEY_free(rsa);
  EVP_PKEY_free(ec);
  for (const char* name : {"rsa.pem", "ec.pem", "ec.key"}) std::remove((d + "/" + name).c_str());
  rmdir(dir);
  return f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Fixture* f = Make();
  if (size < 1) return 0;
  const std::span<const std::uint8_t> in(data + 1, size - 1);
  static const std::uint8_t kOctets[] = {'s', 'i', 'g', 'n', 'e', 'd'};
  std::string error;
  switch (data[0] % 6) {
    case 0:  // a CERT payload's certificate, then what IKE_AUTH does with it
      if (auto c = Certificate::FromDer(in, &error)) {
        (void)c->Subject();
        (void)c->SubjectKeyId();
        (void)c->key_kind();
        (void)f->store->Verify(*c, {*f->rsa});
        (void)CertSubjectIs(*c, f->rsa->SubjectDer());
        (void)CertHasDns(*c, "gw.example.org");
        (void)f->pattern->Matches(c->SubjectDer());
        (void)Verify(*c, kAuthDigitalSignature, in, kOctets);
      }
      break;
    case 1:
    case 2: {  // an AUTH payload: method, data
      if (in.empty()) break;
      const Certificate& cert = data[0] % 6 == 1 ? *f->rsa : *f->ec;
      (void)Verify(cert, in[0], in.subspan(1), kOctets);
      break;
    }
    case 3:  // SIGNATURE_HASH_ALGORITHMS, then a signature for those hashes; CERTREQ data
      (void)Sign(f->creds->key, kOctets, {DecodeHashAlgorithms(in), (size & 1) != 0}, &error);
      (void)f->creds->ChainFor(in);
      break;
    case 4:  // a name from an ID_DER_ASN1_DN identity
      (void)f->pattern->Matches(in);
      (void)CertSubjectIs(*f->rsa, in);
      (void)DnToString(in);
      break;
    case 5: {  // DN text, as a config file or an operator writes it
      const std::string text(in.begin(), in.end());
      if (auto der = ParseDn(text, &error)) (void)DnToString(*der);
      (void)LooksLikeDn(text);
      (void)DnPattern::Parse(text, &error);
      break;
    }
  }
  return 0;
}
