// Certificates minted in process for tests (OpenSSL API): CAs, intermediates, end entities with
// subjectAltNames, expired ones, CRLs — written as PEM files into a directory, the way the
// daemon reads them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

typedef struct x509_st X509;
typedef struct evp_pkey_st EVP_PKEY;

namespace spigot::test_tools {

enum class TestKey : std::uint8_t { kRsa2048, kRsa3072, kEcP256, kEcP384 };

struct IssueOptions {
  std::vector<std::string> dns;    // subjectAltName dNSName
  std::vector<std::string> email;  // rfc822Name
  std::vector<std::string> ip;     // iPAddress, text
  bool ca = false;
  long not_before_days = -1;  // relative to now
  long not_after_days = 30;
  std::string eku;  // e.g. "serverAuth,clientAuth"; empty: no extension
  std::string key_usage = "digitalSignature";  // for an end entity; CAs get keyCertSign,cRLSign
};

struct TestCert {
  std::shared_ptr<X509> cert;
  std::shared_ptr<EVP_PKEY> key;
  long serial = 0;
  std::string cert_path;  // PEM of the certificate alone
  std::string key_path;   // PEM (PKCS#8) of its key
};

class TestPki {
 public:
  explicit TestPki(std::string dir);  // created if missing

  // A self-signed CA; subject as "C=CH, O=Example, CN=Root".
  TestCert Ca(const std::string& name, const std::string& subject, TestKey key = TestKey::kEcP256);
  // A certificate for `subject` signed by `issuer`.
  TestCert Issue(const std::string& name, const TestCert& issuer, const std::string& subject, TestKey key,
                 const IssueOptions& options = {});
  // A file holding these certificates' PEMs in order (a chain file: end entity first).
  std::string Chain(const std::string& name, const std::vector<const TestCert*>& certs);
  // A CRL from `issuer` revoking `revoked` (valid from yesterday for 30 days).
  std::string Crl(const std::string& name, const TestCert& issuer, const std::vector<const TestCert*>& revoked);
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  long next_serial_ = 1;
};

}  // namespace spigot::test_tools
