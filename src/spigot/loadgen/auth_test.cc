// `spigot loadgen` authentication options (loadgen/auth.h): which side uses what, the
// certificate login's identity, and a clear error for each inconsistent option or bad file.
#include "spigot/loadgen/auth.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "spigot/ike/identity.h"
#include "spigot/test_tools/test_pki.h"

namespace spigot::loadgen {
namespace {

using test_tools::IssueOptions;
using test_tools::TestCert;
using test_tools::TestKey;
using test_tools::TestPki;

class LoadgenAuth : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(std::filesystem::temp_directory_path() / ("spigot-loadgen-auth-" + std::to_string(getpid())));
    pki_ = new TestPki(*dir_);
    root_ = new TestCert(pki_->Ca("root", "C=CH, O=Example, CN=Root"));
    IssueOptions ca;
    ca.ca = true;
    inter_ = new TestCert(pki_->Issue("inter", *root_, "C=CH, O=Example, CN=Intermediate", TestKey::kEcP256, ca));
    IssueOptions user;
    user.dns = {"alice.example"};
    user.email = {"alice@example.org"};
    alice_ = new TestCert(pki_->Issue("alice", *inter_, "C=CH, O=Example, CN=alice", TestKey::kEcP256, user));
    bob_ = new TestCert(pki_->Issue("bob", *inter_, "C=CH, O=Example, CN=bob", TestKey::kEcP256));
    chain_ = new std::string(pki_->Chain("alice-chain", {alice_, inter_}));
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(*dir_); }

  // ApplyAuth on a fresh connection; the error ("" if none) and the connection.
  static std::string Apply(const AuthOptions& o, ike::ConnectionParams* out = nullptr) {
    ike::ConnectionParams c;
    const std::string err = ApplyAuth(o, c);
    if (out != nullptr) *out = c;
    return err;
  }
  static AuthOptions Cert() { return AuthOptions{"", *chain_, alice_->key_path, root_->cert_path, ""}; }

  static inline std::string* dir_;
  static inline TestPki* pki_;
  static inline TestCert *root_, *inter_, *alice_, *bob_;
  static inline std::string* chain_;
};

TEST_F(LoadgenAuth, PskBothWays) {
  ike::ConnectionParams c;
  ASSERT_EQ(Apply({.psk = "secret"}, &c), "");
  EXPECT_EQ(c.local_auth, ike::AuthMethod::kPsk);
  EXPECT_EQ(c.remote_auth, ike::AuthMethod::kPsk);
  EXPECT_EQ(c.psk.size(), 6u);
  EXPECT_FALSE(c.local_credentials);
  EXPECT_FALSE(c.trust);
}

TEST_F(LoadgenAuth, CertificateLoginUnderTheSubjectDnWithTheChainSent) {
  ike::ConnectionParams c;
  ASSERT_EQ(Apply(Cert(), &c), "");
  EXPECT_EQ(c.local_auth, ike::AuthMethod::kPubkey);
  EXPECT_EQ(c.remote_auth, ike::AuthMethod::kPubkey);
  ASSERT_TRUE(c.local_credentials);
  EXPECT_EQ(c.local_credentials->cert.Subject(), "C=CH, O=Example, CN=alice");
  ASSERT_EQ(c.local_credentials->intermediates.size(), 1u);
  EXPECT_EQ(c.local_credentials->intermediates[0].Subject(), "C=CH, O=Example, CN=Intermediate");
  ASSERT_TRUE(c.trust);
  EXPECT_EQ(c.trust->cas().size(), 1u);
  EXPECT_EQ(c.local_id.type, ike::IdType::kDerAsn1Dn);
  EXPECT_EQ(ike::ToString(c.local_id), "C=CH, O=Example, CN=alice");
  EXPECT_TRUE(c.psk.empty());
}

TEST_F(LoadgenAuth, IdMayBeAnyNameTheCertificateHolds) {
  for (const char* id : {"alice.example", "alice@example.org", "C=CH, O=Example, CN=alice"}) {
    AuthOptions o = Cert();
    o.id = id;
    ike::ConnectionParams c;
    EXPECT_EQ(Apply(o, &c), "") << id;
    EXPECT_EQ(ike::ToString(c.local_id), id);
  }
  AuthOptions o = Cert();
  o.id = "bob.example";
  EXPECT_EQ(Apply(o), "--id: bob.example is not in the certificate C=CH, O=Example, CN=alice "
                      "(its subject DN or a subjectAltName)");
  o.id = "C=CH, O=Example, CN=bob";
  EXPECT_NE(Apply(o).find("--id: C=CH, O=Example, CN=bob is not in the certificate"), std::string::npos);
}

TEST_F(LoadgenAuth, EachDirectionOnItsOwn) {
  // Our certificate, the responder's PSK.
  AuthOptions o = Cert();
  o.ca_file.clear();
  o.psk = "secret";
  ike::ConnectionParams c;
  ASSERT_EQ(Apply(o, &c), "");
  EXPECT_EQ(c.local_auth, ike::AuthMethod::kPubkey);
  EXPECT_EQ(c.remote_auth, ike::AuthMethod::kPsk);
  // Our PSK, the responder's certificate.
  ASSERT_EQ(Apply({.psk = "secret", .ca_file = root_->cert_path}, &c), "");
  EXPECT_EQ(c.local_auth, ike::AuthMethod::kPsk);
  EXPECT_EQ(c.remote_auth, ike::AuthMethod::kPubkey);
  EXPECT_TRUE(c.trust);
}

TEST_F(LoadgenAuth, InconsistentOptionsAreRefused) {
  EXPECT_EQ(Apply({}), "--psk is required (or authenticate with --cert and --key)");
  EXPECT_EQ(Apply({.psk = "s", .cert_file = *chain_}), "--cert needs --key (its private key)");
  EXPECT_EQ(Apply({.psk = "s", .key_file = alice_->key_path}), "--key needs --cert (the certificate it belongs to)");
  EXPECT_EQ(Apply({.psk = "s", .id = "alice"}), "--id is the identity of --cert (PSK initiators are named by --id-prefix)");
  AuthOptions o = Cert();
  o.ca_file.clear();
  EXPECT_EQ(Apply(o), "--psk is required to check the responder (or give --ca to check its certificate)");
  o = Cert();
  o.psk = "secret";
  EXPECT_EQ(Apply(o), "--psk is not used: --cert and --ca authenticate both sides");
}

TEST_F(LoadgenAuth, EapLoginWithTheResponderByCertificateOrPsk) {
  ike::ConnectionParams c;
  ASSERT_EQ(Apply({.ca_file = root_->cert_path, .eap_id = "alice", .eap_secret = "pw"}, &c), "");
  EXPECT_EQ(c.local_auth, ike::AuthMethod::kEap);
  EXPECT_EQ(c.remote_auth, ike::AuthMethod::kPubkey);
  EXPECT_EQ(c.eap_id, "alice");
  EXPECT_EQ(c.eap_secret.size(), 2u);
  ASSERT_EQ(Apply({.psk = "s", .eap_id = "alice", .eap_secret = "pw"}, &c), "");
  EXPECT_EQ(c.remote_auth, ike::AuthMethod::kPsk);
  EXPECT_EQ(Apply({.eap_id = "alice", .eap_secret = "pw"}),
            "--psk is required to check the responder (or give --ca to check its certificate)");
  EXPECT_EQ(Apply({.psk = "s", .eap_id = "alice"}), "--eap-id and --eap-secret go together");
  AuthOptions both = Cert();
  both.eap_id = "alice";
  both.eap_secret = "pw";
  EXPECT_EQ(Apply(both), "--eap-id: log in with EAP or with --cert, not both");
  EXPECT_EQ(Apply({.psk = "s", .ca_file = root_->cert_path, .eap_id = "alice", .eap_secret = "pw"}),
            "--psk is not used: --eap-id and --ca authenticate both sides");
}

TEST_F(LoadgenAuth, BadFilesNameTheOption) {
  AuthOptions o = Cert();
  o.key_file = bob_->key_path;
  EXPECT_EQ(Apply(o), "--key: " + bob_->key_path + " does not belong to the certificate C=CH, O=Example, CN=alice");
  o = Cert();
  o.cert_file = *dir_ + "/missing.pem";
  EXPECT_EQ(Apply(o).rfind("--cert: " + *dir_ + "/missing.pem: cannot open", 0), 0u) << Apply(o);
  o = Cert();
  o.key_file = *dir_ + "/missing.key";
  EXPECT_EQ(Apply(o).rfind("--key: " + *dir_ + "/missing.key: cannot open", 0), 0u) << Apply(o);
  o = Cert();
  o.ca_file = *dir_ + "/missing-ca.pem";
  EXPECT_EQ(Apply(o).rfind("--ca: " + *dir_ + "/missing-ca.pem: cannot open", 0), 0u) << Apply(o);
  o = Cert();
  o.ca_file = bob_->cert_path;  // not a CA
  EXPECT_EQ(Apply(o).rfind("--ca: ", 0), 0u) << Apply(o);
  EXPECT_NE(Apply(o).find("is not a CA certificate"), std::string::npos) << Apply(o);
  o = Cert();
  o.cert_file = alice_->key_path;  // a key where the certificate belongs
  EXPECT_EQ(Apply(o).rfind("--cert: ", 0), 0u) << Apply(o);
  o = Cert();
  o.cert_file = pki_->Chain("inter-first", {inter_, alice_});
  EXPECT_EQ(Apply(o), "--cert: C=CH, O=Example, CN=Intermediate is a CA certificate; the end entity comes first");
}

}  // namespace
}  // namespace spigot::loadgen
