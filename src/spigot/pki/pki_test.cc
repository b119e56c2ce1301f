#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "spigot/pki/certificate.h"
#include "spigot/pki/names.h"
#include "spigot/pki/signature.h"
#include "spigot/test_tools/test_pki.h"

namespace spigot::pki {
namespace {

using test_tools::IssueOptions;
using test_tools::TestCert;
using test_tools::TestKey;
using test_tools::TestPki;

class PkiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(std::filesystem::temp_directory_path() / ("spigot-pki-test-" + std::to_string(getpid())));
    pki_ = new TestPki(*dir_);
    root_ = new TestCert(pki_->Ca("root", "C=CH, O=Example, CN=Example Root CA"));
    IssueOptions ica;
    ica.ca = true;
    ica.not_after_days = 300;
    inter_ = new TestCert(pki_->Issue("inter", *root_, "C=CH, O=Example, CN=Example Intermediate", TestKey::kEcP256, ica));
    IssueOptions gw;
    gw.dns = {"gw.example.org"};
    gw.ip = {"192.0.2.2"};
    gw.eku = "serverAuth";
    rsa_ = new TestCert(pki_->Issue("gw-rsa", *inter_, "C=CH, O=Example, CN=gw.example.org", TestKey::kRsa2048, gw));
    ec_ = new TestCert(pki_->Issue("gw-ec", *inter_, "C=CH, O=Example, CN=gw-ec.example.org", TestKey::kEcP256, gw));
    ec384_ = new TestCert(pki_->Issue("gw-ec384", *root_, "C=CH, O=Example, CN=p384", TestKey::kEcP384, gw));
    IssueOptions old = gw;
    old.not_before_days = -60;
    old.not_after_days = -1;
    expired_ = new TestCert(pki_->Issue("expired", *inter_, "C=CH, O=Example, CN=expired", TestKey::kEcP256, old));
    revoked_ = new TestCert(pki_->Issue("revoked", *inter_, "C=CH, O=Example, CN=revoked", TestKey::kEcP256, gw));
    IssueOptions email = gw;
    email.eku = "emailProtection";
    email_only_ = new TestCert(pki_->Issue("email", *inter_, "C=CH, O=Example, CN=mail", TestKey::kEcP256, email));
    other_root_ = new TestCert(pki_->Ca("other", "C=CH, O=Other, CN=Other Root"));
    crl_ = new std::string(pki_->Crl("inter", *inter_, {revoked_}));
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(*dir_); }

  static Certificate Load(const TestCert& c) {
    std::string error;
    auto v = LoadCertificates(c.cert_path, &error);
    EXPECT_EQ(v.size(), 1u) << error;
    return v.front();
  }
  static std::shared_ptr<const TrustStore> Store(std::vector<std::string> crls = {}) {
    std::string error;
    auto t = TrustStore::Load({root_->cert_path}, crls, &error);
    EXPECT_TRUE(t) << error;
    return t;
  }

  static inline std::string* dir_;
  static inline TestPki* pki_;
  static inline TestCert *root_, *inter_, *rsa_, *ec_, *ec384_, *expired_, *revoked_, *email_only_, *other_root_;
  static inline std::string* crl_;
};

TEST_F(PkiTest, ChainThroughAnIntermediateValidatesAndTheWrongCaDoesNot) {
  auto store = Store();
  const Certificate inter = Load(*inter_);
  EXPECT_EQ(store->Verify(Load(*rsa_), {inter}), std::nullopt);
  EXPECT_EQ(store->Verify(Load(*ec384_), {}), std::nullopt);  // straight under the root
  // Without the intermediate there is no path.
  const auto no_path = store->Verify(Load(*rsa_), {});
  ASSERT_TRUE(no_path);
  EXPECT_NE(no_path->find("unable to get local issuer"), std::string::npos) << *no_path;
  std::string error;
  auto other = TrustStore::Load({other_root_->cert_path}, {}, &error);
  ASSERT_TRUE(other) << error;
  EXPECT_TRUE(other->Verify(Load(*rsa_), {inter}));
}

TEST_F(PkiTest, ExpiredRevokedAndWrongUsageAreRefusedWithTheReason) {
  const Certificate inter = Load(*inter_);
  const auto expired = Store()->Verify(Load(*expired_), {inter});
  ASSERT_TRUE(expired);
  EXPECT_NE(expired->find("expired"), std::string::npos) << *expired;
  EXPECT_EQ(Store()->Verify(Load(*revoked_), {inter}), std::nullopt);  // no CRL loaded
  const auto with_crl = Store({*crl_});
  ASSERT_TRUE(with_crl);
  EXPECT_EQ(with_crl->crl_count(), 1u);
  const auto revoked = with_crl->Verify(Load(*revoked_), {inter});
  ASSERT_TRUE(revoked);
  EXPECT_NE(revoked->find("revoked"), std::string::npos) << *revoked;
  EXPECT_EQ(with_crl->Verify(Load(*ec_), {inter}), std::nullopt);
  const auto usage = Store()->Verify(Load(*email_only_), {inter});
  ASSERT_TRUE(usage);
  EXPECT_NE(usage->find("extended key usage"), std::string::npos) << *usage;
}

TEST_F(PkiTest, BadFilesGetTheFileAndTheReason) {
  std::string error;
  EXPECT_FALSE(TrustStore::Load({*dir_ + "/missing.pem"}, {}, &error));
  EXPECT_NE(error.find("missing.pem: cannot open"), std::string::npos) << error;
  EXPECT_FALSE(TrustStore::Load({rsa_->cert_path}, {}, &error));  // not a CA
  EXPECT_NE(error.find("is not a CA"), std::string::npos) << error;
  const std::string junk = *dir_ + "/junk.pem";
  std::ofstream(junk) << "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n";
  EXPECT_TRUE(LoadCertificates(junk, &error).empty());
  EXPECT_NE(error.find("no certificate"), std::string::npos) << error;
  EXPECT_FALSE(LocalCredentials::Load(rsa_->cert_path, ec_->key_path, &error));
  EXPECT_NE(error.find("does not belong"), std::string::npos) << error;
  EXPECT_FALSE(Certificate::FromDer(std::vector<std::uint8_t>{0x30, 0x03, 0x02, 0x01}, &error));
}

TEST_F(PkiTest, ChainForStopsBelowTheCaThePeerAskedFor) {
  std::string error;
  const std::string chain = pki_->Chain("gw-chain", {rsa_, inter_});
  auto creds = LocalCredentials::Load(chain, rsa_->key_path, &error);
  ASSERT_TRUE(creds) << error;
  ASSERT_EQ(creds->intermediates.size(), 1u);
  const KeyId root_id = Load(*root_).SubjectKeyId();
  const KeyId inter_id = Load(*inter_).SubjectKeyId();
  EXPECT_EQ(creds->ChainFor(root_id).size(), 2u);   // the peer trusts the root: send the intermediate
  EXPECT_EQ(creds->ChainFor(inter_id).size(), 1u);  // it trusts the intermediate itself
  EXPECT_EQ(creds->ChainFor({}).size(), 2u);
  auto store = Store();
  EXPECT_EQ(store->CertReqData().size(), 20u);
  EXPECT_TRUE(std::equal(root_id.begin(), root_id.end(), store->CertReqData().begin()));
}

// Every method both ways, and a signature that does not verify for other octets or keys.
TEST_F(PkiTest, SignaturesOfEveryMethodVerifyAndOnlyForTheirOctets) {
  const std::vector<std::uint8_t> octets = {'s', 'i', 'g', 'n', 'e', 'd', 0, 1, 2, 3};
  std::vector<std::uint8_t> other = octets;
  other.back() ^= 1;
  std::string error;
  struct Case {
    const TestCert* cert;
    std::vector<HashAlgorithm> peer;
    bool pss;
    std::uint8_t method;
  };
  const Case cases[] = {
      {rsa_, {}, false, kAuthRsaSignature},
      {ec_, {}, false, kAuthEcdsaSha256},
      {ec384_, {}, false, kAuthEcdsaSha384},
      {rsa_, {HashAlgorithm::kSha256}, false, kAuthDigitalSignature},
      {rsa_, {HashAlgorithm::kSha384}, true, kAuthDigitalSignature},
      {ec_, {HashAlgorithm::kSha256, HashAlgorithm::kSha512}, false, kAuthDigitalSignature},
      {ec384_, {HashAlgorithm::kSha512}, false, kAuthDigitalSignature},
  };
  for (const auto& c : cases) {
    auto key = PrivateKey::Load(c.cert->key_path, &error);
    ASSERT_TRUE(key) << error;
    const auto sig = Sign(*key, octets, {c.peer, c.pss}, &error);
    ASSERT_TRUE(sig) << error;
    EXPECT_EQ(sig->method, c.method);
    const Certificate cert = Load(*c.cert);
    EXPECT_EQ(Verify(cert, sig->method, sig->data, octets), std::nullopt) << c.cert->cert_path << " " << int(c.method);
    EXPECT_TRUE(Verify(cert, sig->method, sig->data, other));
    EXPECT_TRUE(Verify(Load(c.cert == ec_ ? *rsa_ : *ec_), sig->method, sig->data, octets));
  }
  auto key = PrivateKey::Load(ec_->key_path, &error);
  EXPECT_FALSE(Sign(*key, octets, {{HashAlgorithm::kSha1}, false}, &error));
  EXPECT_NE(error.find("no signature hash in common"), std::string::npos);
}

TEST_F(PkiTest, MalformedAuthDataIsAnAnswerNotACrash) {
  const Certificate cert = Load(*rsa_);
  const std::vector<std::uint8_t> octets = {1, 2, 3};
  const std::vector<std::vector<std::uint8_t>> bad = {
      {}, {0}, {5, 1, 2}, {3, 0x30, 0x01, 0x00, 0xAA}, {200, 0x30}, {0x0B, 0x30, 0x09, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x01, 0xAA},
  };
  for (const auto& d : bad) {
    EXPECT_TRUE(Verify(cert, kAuthDigitalSignature, d, octets));
    EXPECT_TRUE(Verify(cert, kAuthRsaSignature, d, octets));
    EXPECT_TRUE(Verify(Load(*ec_), kAuthEcdsaSha256, d, octets));
  }
  EXPECT_TRUE(Verify(cert, 2, {}, octets));  // shared key is not a signature
  EXPECT_EQ(DecodeHashAlgorithms(EncodeHashAlgorithms()).size(), 3u);
  EXPECT_TRUE(DecodeHashAlgorithms(std::vector<std::uint8_t>{0, 2, 0}).empty());
}

TEST_F(PkiTest, IdentitiesBindToSubjectOrSubjectAltNames) {
  const Certificate gw = Load(*rsa_);
  EXPECT_TRUE(CertHasDns(gw, "gw.example.org"));
  EXPECT_TRUE(CertHasDns(gw, "GW.example.org"));
  EXPECT_FALSE(CertHasDns(gw, "other.example.org"));
  EXPECT_TRUE(CertHasIp(gw, std::vector<std::uint8_t>{192, 0, 2, 2}));
  EXPECT_FALSE(CertHasIp(gw, std::vector<std::uint8_t>{192, 0, 2, 3}));
  EXPECT_FALSE(CertHasEmail(gw, "gw@example.org"));
  std::string error;
  auto dn = ParseDn("C=CH, O=Example, CN=gw.example.org", &error);
  ASSERT_TRUE(dn) << error;
  EXPECT_TRUE(CertSubjectIs(gw, *dn));
  EXPECT_EQ(DnToString(*dn), "C=CH, O=Example, CN=gw.example.org");
  EXPECT_EQ(gw.Subject(), "C=CH, O=Example, CN=gw.example.org");
  EXPECT_FALSE(CertSubjectIs(gw, *ParseDn("C=CH, O=Example, CN=other", &error)));
  EXPECT_TRUE(ParseDn("/C=CH/O=Example/CN=x", &error)) << error;
  EXPECT_FALSE(ParseDn("C=CH, XX=1", &error));
  EXPECT_NE(error.find("unknown DN attribute 'XX'"), std::string::npos) << error;
  EXPECT_FALSE(ParseDn("C=CH, O=", &error));
  EXPECT_TRUE(LooksLikeDn("C=CH, CN=x"));
  EXPECT_FALSE(LooksLikeDn("gw.example.org"));
  EXPECT_FALSE(LooksLikeDn("user@example.org"));
}

// strongSwan's `pki` writes DN values as PrintableString, ParseDn as UTF8String: the same name.
TEST_F(PkiTest, SameDnComparesNamesNotTheirStringTypes) {
  // X.690 DER of the Name C=CH, CN=a with PrintableString (0x13) values, as `pki` writes it.
  const std::vector<std::uint8_t> printable = {0x30, 0x19, 0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55,
                                               0x04, 0x06, 0x13, 0x02, 'C',  'H',  0x31, 0x0a, 0x30,
                                               0x08, 0x06, 0x03, 0x55, 0x04, 0x03, 0x13, 0x01, 'a'};
  std::string error;
  const auto utf8 = ParseDn("C=CH, CN=a", &error);
  ASSERT_TRUE(utf8) << error;
  EXPECT_NE(*utf8, printable);
  EXPECT_EQ(DnToString(printable), "C=CH, CN=a");
  EXPECT_TRUE(SameDn(*utf8, printable));
  EXPECT_TRUE(SameDn(printable, printable));
  EXPECT_FALSE(SameDn(*ParseDn("C=CH, CN=b", &error), printable));
  EXPECT_FALSE(SameDn(*ParseDn("CN=a, C=CH", &error), printable)) << "RDN order counts";
  EXPECT_FALSE(SameDn(std::vector<std::uint8_t>{0x30, 0x05}, printable));
}

TEST_F(PkiTest, DnPatternsMatchWildcardsInPlaceAndNothingElse) {
  std::string error;
  auto p = DnPattern::Parse("C=CH, O=Example, CN=*", &error);
  ASSERT_TRUE(p) << error;
  EXPECT_TRUE(p->has_wildcards());
  EXPECT_TRUE(p->Matches(Load(*rsa_).SubjectDer()));
  EXPECT_TRUE(p->Matches(Load(*ec_).SubjectDer()));
  EXPECT_FALSE(p->Matches(Load(*other_root_).SubjectDer()));          // O=Other
  EXPECT_FALSE(p->Matches(*ParseDn("C=CH, O=Example", &error)));      // fewer RDNs
  EXPECT_FALSE(p->Matches(*ParseDn("C=CH, CN=x, O=Example", &error)));  // other order
  auto exact = DnPattern::Parse("C=CH, O=example, CN=GW.example.org", &error);
  EXPECT_TRUE(exact->Matches(Load(*rsa_).SubjectDer()));  // case-insensitive values
  EXPECT_FALSE(exact->has_wildcards());
  EXPECT_FALSE(p->Matches(std::vector<std::uint8_t>{0x30, 0x05}));
}

}  // namespace
}  // namespace spigot::pki
