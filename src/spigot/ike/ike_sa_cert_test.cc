// IKE_AUTH with certificates (RFC 7296 2.15, 3.6-3.8; RFC 7427), two IKE SAs in process:
// signatures both ways, chains through an intermediate, identities bound to certificates,
// DN patterns, and every refusal counted with AUTHENTICATION_FAILED.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "spigot/ike/ike_sa.h"
#include "spigot/pki/certificate.h"
#include "spigot/test_tools/ike_loopback.h"
#include "spigot/test_tools/test_pki.h"

namespace spigot::ike {
namespace {

using State = IkeSa::State;
using test_tools::IssueOptions;
using test_tools::TestCert;
using test_tools::TestKey;
using test_tools::TestPki;

TimePoint CertTime(int seconds) { return TimePoint{} + std::chrono::hours(1) + std::chrono::seconds(seconds); }

constexpr const char* kCertIke = "aes128gcm16-prfsha256-x25519";
constexpr const char* kCertEsp = "aes128gcm16";

class CertAuth : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(std::filesystem::temp_directory_path() / ("spigot-ike-cert-" + std::to_string(getpid())));
    pki_ = new TestPki(*dir_);
    root_ = new TestCert(pki_->Ca("root", "C=CH, O=Example, CN=Root"));
    IssueOptions ca;
    ca.ca = true;
    inter_ = new TestCert(pki_->Issue("inter", *root_, "C=CH, O=Example, CN=Intermediate", TestKey::kEcP256, ca));
    IssueOptions alice;
    alice.dns = {"alice"};
    alice_ = new TestCert(pki_->Issue("alice", *inter_, "C=CH, O=Example, CN=alice", TestKey::kRsa2048, alice));
    IssueOptions bob;
    bob.dns = {"bob"};
    bob.eku = "serverAuth";
    bob_ = new TestCert(pki_->Issue("bob", *inter_, "C=CH, O=Example, CN=bob", TestKey::kEcP256, bob));
    IssueOptions old = alice;
    old.not_before_days = -10;
    old.not_after_days = -1;
    expired_ = new TestCert(pki_->Issue("expired", *inter_, "C=CH, O=Example, CN=alice", TestKey::kEcP256, old));
    stranger_root_ = new TestCert(pki_->Ca("stranger-root", "C=CH, O=Other, CN=Root"));
    stranger_ = new TestCert(pki_->Issue("stranger", *stranger_root_, "C=CH, O=Other, CN=alice", TestKey::kEcP256, alice));
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(*dir_); }

  // A pubkey connection: `cert` (with the intermediate in its chain file) and trust in root.
  static std::shared_ptr<ConnectionParams> Conn(bool initiator, const TestCert& cert, const TestCert* extra = nullptr,
                                                const TestCert& trust = *root_) {
    auto c = TestConnection(initiator, kCertIke, kCertEsp);
    c->local_auth = c->remote_auth = AuthMethod::kPubkey;
    std::string error;
    std::vector<const TestCert*> chain{&cert};
    if (extra != nullptr) chain.push_back(extra);
    c->local_credentials = pki::LocalCredentials::Load(pki_->Chain(cert.cert_path.substr(cert.cert_path.rfind('/') + 1) + "-chain", chain),
                                                       cert.key_path, &error);
    EXPECT_TRUE(c->local_credentials) << error;
    c->trust = pki::TrustStore::Load({trust.cert_path}, {}, &error);
    EXPECT_TRUE(c->trust) << error;
    return c;
  }

  static inline std::string* dir_;
  static inline TestPki* pki_;
  static inline TestCert *root_, *inter_, *alice_, *bob_, *expired_, *stranger_root_, *stranger_;
};

TEST_F(CertAuth, RsaAndEcdsaCertificatesThroughAnIntermediateEstablishBothWays) {
  auto iconn = Conn(true, *alice_, inter_);
  auto rconn = Conn(false, *bob_, inter_);
  // The initiator names itself by its DN, the responder by an FQDN in its subjectAltName.
  iconn->local_id = *ParseIdentity("C=CH, O=Example, CN=alice");
  rconn->remote_id = iconn->local_id;
  LoopbackPair pair(iconn, rconn);
  pair.initiator->Initiate(CertTime(0));
  pair.Pump(CertTime(0));
  ASSERT_EQ(pair.initiator->state(), State::kEstablished) << pair.initiator->failure();
  ASSERT_TRUE(pair.responder);
  EXPECT_EQ(pair.responder->state(), State::kEstablished) << pair.responder->failure();
  ASSERT_TRUE(pair.responder->peer_id());
  EXPECT_EQ(ToString(*pair.responder->peer_id()), "C=CH, O=Example, CN=alice");
  EXPECT_EQ(pair.ihost.installed.size(), 1u);
  EXPECT_EQ(pair.rhost.installed.size(), 1u);
  EXPECT_EQ(pair.rcounters.auth_failures + pair.icounters.auth_failures, 0u);
}

// IkeSaHost::Offload (kAuth): the responder's certificate checks and signature run on another
// thread while the SA waits; the initiator's retransmission meanwhile gets no second answer.
TEST_F(CertAuth, ResponderAuthWorkRunsOnAnotherThreadAndResumes) {
  auto iconn = Conn(true, *alice_, inter_);
  auto rconn = Conn(false, *bob_, inter_);
  iconn->local_id = *ParseIdentity("C=CH, O=Example, CN=alice");
  rconn->remote_id = iconn->local_id;
  LoopbackPair pair(iconn, rconn);
  pair.rhost.offload = {OffloadKind::kAuth};
  pair.initiator->Initiate(CertTime(0));
  pair.Pump(CertTime(0));
  ASSERT_TRUE(pair.responder);
  ASSERT_EQ(pair.rhost.offloaded.size(), 1u);
  EXPECT_EQ(pair.rcounters.auth_offloaded, 1u);
  const std::uint64_t answered = pair.rhost.sent;
  pair.responder->ResumeOffloaded(CertTime(1));  // not done yet: nothing happens
  pair.initiator->Tick(CertTime(3));        // the initiator retransmits IKE_AUTH
  pair.Pump(CertTime(3));
  EXPECT_EQ(pair.rhost.sent, answered) << "answered IKE_AUTH before its checks ran";
  EXPECT_GE(pair.icounters.retransmits, 1u);
  std::thread worker(pair.rhost.offloaded[0].work);
  worker.join();
  pair.responder->ResumeOffloaded(CertTime(3));
  pair.Pump(CertTime(3));
  ASSERT_EQ(pair.initiator->state(), State::kEstablished) << pair.initiator->failure();
  EXPECT_EQ(pair.responder->state(), State::kEstablished) << pair.responder->failure();
  EXPECT_EQ(pair.rhost.offloaded.size(), 1u) << "the retransmission started the work again";

  // A refusal found on the worker is answered and counted on resume.
  auto other = Conn(true, *stranger_, nullptr, *root_);
  other->local_id = *ParseIdentity("C=CH, O=Example, CN=alice");
  LoopbackPair refused(other, rconn);
  refused.rhost.offload = {OffloadKind::kAuth};
  refused.initiator->Initiate(CertTime(0));
  refused.Pump(CertTime(0));
  ASSERT_EQ(refused.rhost.offloaded.size(), 1u);
  std::thread w2(refused.rhost.offloaded[0].work);
  w2.join();
  EXPECT_EQ(refused.rcounters.cert_failures, 0u) << "counted on the worker";
  refused.responder->ResumeOffloaded(CertTime(0));
  refused.Pump(CertTime(0));
  EXPECT_EQ(refused.initiator->failure(), "peer: AUTHENTICATION_FAILED");
  EXPECT_EQ(refused.rcounters.cert_failures, 1u);
}

// The initiator's IKE_AUTH signature on another thread: nothing is sent (and IKE_SA_INIT is not
// retransmitted) until it is done; without a free worker it is made at once, counted.
TEST_F(CertAuth, InitiatorSignatureRunsOnAnotherThread) {
  auto iconn = Conn(true, *alice_, inter_);
  auto rconn = Conn(false, *bob_, inter_);
  iconn->local_id = *ParseIdentity("C=CH, O=Example, CN=alice");
  rconn->remote_id = iconn->local_id;
  LoopbackPair pair(iconn, rconn);
  pair.ihost.offload = {OffloadKind::kAuth};
  pair.initiator->Initiate(CertTime(0));
  pair.Pump(CertTime(0));
  ASSERT_EQ(pair.ihost.offloaded.size(), 1u);
  EXPECT_TRUE(pair.initiator->offloaded());
  EXPECT_EQ(pair.initiator->state(), State::kInitSent);
  EXPECT_EQ(pair.initiator->NextDeadline(), TimePoint::max()) << "IKE_SA_INIT would be retransmitted";
  const std::uint64_t sent = pair.ihost.sent;
  pair.initiator->Tick(CertTime(5));
  EXPECT_EQ(pair.ihost.sent, sent);
  std::thread worker(pair.ihost.offloaded[0].work);
  worker.join();
  pair.initiator->ResumeOffloaded(CertTime(5));
  pair.Pump(CertTime(5));
  // The responder's answer: its certificate and signature are checked on a worker too.
  ASSERT_EQ(pair.ihost.offloaded.size(), 2u);
  std::thread checker(pair.ihost.offloaded[1].work);
  checker.join();
  pair.initiator->ResumeOffloaded(CertTime(5));
  pair.Pump(CertTime(5));
  ASSERT_EQ(pair.initiator->state(), State::kEstablished) << pair.initiator->failure();
  EXPECT_EQ(pair.responder->state(), State::kEstablished) << pair.responder->failure();
  EXPECT_EQ(pair.icounters.auth_offloaded, 2u);
  EXPECT_EQ(pair.icounters.retransmits, 0u);

  LoopbackPair busy(iconn, rconn);
  busy.ihost.offload = {OffloadKind::kAuth};
  busy.ihost.offload_room = 0;
  busy.initiator->Initiate(CertTime(0));
  busy.Pump(CertTime(0));
  ASSERT_EQ(busy.initiator->state(), State::kEstablished) << busy.initiator->failure();
  EXPECT_EQ(busy.icounters.auth_inline, 2u) << "our signature and the check of the responder's";
  EXPECT_EQ(busy.icounters.auth_offloaded, 0u);
}

// Initiator with kAuth offloaded: its signature made on another thread, IKE_AUTH sent, the
// response back (the check of it is the host's second piece of work).
void SignOnAnotherThread(LoopbackPair& pair, TimePoint now) {
  pair.initiator->Initiate(now);
  pair.Pump(now);
  ASSERT_EQ(pair.ihost.offloaded.size(), 1u);
  std::thread signer(pair.ihost.offloaded[0].work);
  signer.join();
  pair.initiator->ResumeOffloaded(now);
  pair.Pump(now);
  ASSERT_EQ(pair.ihost.offloaded.size(), 2u);
  EXPECT_EQ(pair.ihost.offloaded[1].kind, OffloadKind::kAuth);
}

// The initiator's check of the responder's IKE_AUTH response (its certificate chain and
// signature) on another thread (issue 17). Until it is done the initiator neither retransmits
// its request nor gives it up (the answer is here), drops the responder's retransmission of the
// response (counted), installs no CHILD SA; afterwards it goes on exactly as it would have.
TEST_F(CertAuth, InitiatorChecksTheResponderOnAnotherThread) {
  auto iconn = Conn(true, *alice_, inter_);
  auto rconn = Conn(false, *bob_, inter_);
  iconn->local_id = *ParseIdentity("C=CH, O=Example, CN=alice");
  rconn->remote_id = iconn->local_id;
  LoopbackPair pair(iconn, rconn);
  pair.ihost.offload = {OffloadKind::kAuth};
  std::vector<Bytes> from_responder;
  pair.rhost.lose = [&](const Bytes& d) {
    from_responder.push_back(d);
    return false;
  };
  SignOnAnotherThread(pair, CertTime(0));
  ASSERT_EQ(pair.ihost.offloaded.size(), 2u) << "the check of the response did not go to the worker";
  EXPECT_EQ(pair.icounters.auth_offloaded, 2u);
  EXPECT_EQ(pair.icounters.auth_inline, 0u);
  EXPECT_TRUE(pair.initiator->offloaded());
  EXPECT_EQ(pair.initiator->state(), State::kAuthSent);
  EXPECT_EQ(pair.responder->state(), State::kEstablished) << pair.responder->failure();
  EXPECT_TRUE(pair.ihost.installed.empty());
  EXPECT_EQ(pair.initiator->NextDeadline(), TimePoint::max()) << "IKE_AUTH would be retransmitted or given up";
  const std::uint64_t sent = pair.ihost.sent;
  pair.initiator->Tick(CertTime(60));
  EXPECT_EQ(pair.ihost.sent, sent);
  EXPECT_EQ(pair.initiator->state(), State::kAuthSent);
  // The response again (a retransmission): dropped, not checked twice.
  ASSERT_EQ(from_responder.size(), 2u);  // IKE_SA_INIT and IKE_AUTH responses
  pair.initiator->Receive(from_responder[1], CertTime(60));
  EXPECT_EQ(pair.icounters.offload_retransmits, 1u);
  EXPECT_EQ(pair.ihost.offloaded.size(), 2u);
  pair.initiator->ResumeOffloaded(CertTime(60));  // not done yet: nothing happens
  EXPECT_TRUE(pair.initiator->offloaded());
  std::thread worker(pair.ihost.offloaded[1].work);
  worker.join();
  EXPECT_EQ(pair.initiator->state(), State::kAuthSent) << "the worker touched the SA";
  pair.initiator->ResumeOffloaded(CertTime(60));
  pair.Pump(CertTime(60));
  ASSERT_EQ(pair.initiator->state(), State::kEstablished) << pair.initiator->failure();
  ASSERT_TRUE(pair.initiator->peer_id());
  EXPECT_EQ(ToString(*pair.initiator->peer_id()), "bob");
  EXPECT_EQ(pair.ihost.installed.size(), 1u);
  EXPECT_EQ(pair.icounters.auth_failures + pair.icounters.invalid_messages, 0u);
  EXPECT_EQ(pair.icounters.retransmits, 0u);
}

// A responder certificate the initiator does not trust, found on the worker: refused and
// counted when the SA resumes, not on the worker; the CHILD SA's SPI goes back.
TEST_F(CertAuth, InitiatorRefusesTheResponderAfterItsCheckOnAnotherThread) {
  auto iconn = Conn(true, *alice_, inter_);
  auto rconn = Conn(false, *stranger_, nullptr);
  iconn->local_id = *ParseIdentity("C=CH, O=Example, CN=alice");
  iconn->remote_id = *ParseIdentity("C=CH, O=Other, CN=alice");
  rconn->local_id = iconn->remote_id;
  rconn->remote_id = iconn->local_id;
  LoopbackPair pair(iconn, rconn);
  pair.ihost.offload = {OffloadKind::kAuth};
  SignOnAnotherThread(pair, CertTime(0));
  ASSERT_EQ(pair.responder->state(), State::kEstablished) << pair.responder->failure();
  ASSERT_EQ(pair.ihost.offloaded.size(), 2u);
  std::thread worker(pair.ihost.offloaded[1].work);
  worker.join();
  EXPECT_EQ(pair.icounters.cert_failures, 0u) << "counted on the worker";
  pair.initiator->ResumeOffloaded(CertTime(1));
  EXPECT_EQ(pair.initiator->state(), State::kDead);
  EXPECT_NE(pair.initiator->failure().find("certificate"), std::string::npos) << pair.initiator->failure();
  EXPECT_EQ(pair.icounters.cert_failures, 1u);
  EXPECT_EQ(pair.icounters.auth_failures, 1u);
  EXPECT_TRUE(pair.ihost.installed.empty());
  EXPECT_TRUE(pair.ihost.live_spis.empty()) << "the CHILD SA's SPI leaked";
}

// The initiator dies (deleted, or destroyed by its host) while its check of the responder runs:
// the work finishes on its own copies and its result goes nowhere.
TEST_F(CertAuth, InitiatorThatDiesWhileItsCheckRunsIgnoresTheResult) {
  auto iconn = Conn(true, *alice_, inter_);
  auto rconn = Conn(false, *bob_, inter_);
  iconn->local_id = *ParseIdentity("C=CH, O=Example, CN=alice");
  rconn->remote_id = iconn->local_id;
  for (const bool destroy : {false, true}) {
    SCOPED_TRACE(destroy ? "destroyed" : "deleted");
    LoopbackPair pair(iconn, rconn);
    pair.ihost.offload = {OffloadKind::kAuth};
    SignOnAnotherThread(pair, CertTime(0));
    ASSERT_EQ(pair.ihost.offloaded.size(), 2u);
    ASSERT_TRUE(pair.initiator->offloaded());
    if (destroy) {
      pair.initiator.reset();
    } else {
      pair.initiator->Delete(CertTime(1));
      EXPECT_EQ(pair.initiator->state(), State::kDead);
      EXPECT_FALSE(pair.initiator->offloaded());
    }
    std::thread worker(pair.ihost.offloaded[1].work);
    worker.join();
    if (!destroy) {
      pair.initiator->ResumeOffloaded(CertTime(2));
      EXPECT_EQ(pair.initiator->state(), State::kDead);
    }
    pair.Pump(CertTime(2));
    EXPECT_TRUE(pair.ihost.installed.empty());
    EXPECT_TRUE(pair.ihost.live_spis.empty()) << "the CHILD SA's SPI leaked";
  }
}

TEST_F(CertAuth, DnPatternAcceptsAnyNameUnderItAndTheCaDecides) {
  auto rconn = Conn(false, *bob_, inter_);
  rconn->remote_id = *ParseIdentity("C=CH, O=Example, CN=*");
  std::string error;
  rconn->remote_id_pattern = pki::DnPattern::Parse("C=CH, O=Example, CN=*", &error);
  auto iconn = Conn(true, *alice_, inter_);
  iconn->local_id = *ParseIdentity("C=CH, O=Example, CN=alice");
  LoopbackPair pair(iconn, rconn);
  pair.initiator->Initiate(CertTime(0));
  pair.Pump(CertTime(0));
  EXPECT_EQ(pair.initiator->state(), State::kEstablished) << pair.initiator->failure();

  // The same pattern, a certificate from a CA the responder does not trust: refused.
  auto other = Conn(true, *stranger_, nullptr, *root_);
  other->local_id = *ParseIdentity("C=CH, O=Example, CN=alice");  // claims a name that matches
  LoopbackPair refused(other, rconn);
  refused.initiator->Initiate(CertTime(0));
  refused.Pump(CertTime(0));
  EXPECT_EQ(refused.initiator->state(), State::kDead);
  EXPECT_EQ(refused.initiator->failure(), "peer: AUTHENTICATION_FAILED");
  EXPECT_EQ(refused.rcounters.cert_failures, 1u);
  EXPECT_EQ(refused.rcounters.auth_failures, 1u);
}

TEST_F(CertAuth, IdentityNotInTheCertificateIsRefused) {
  auto iconn = Conn(true, *alice_, inter_);
  iconn->local_id = *ParseIdentity("mallory");  // the certificate says alice
  auto rconn = Conn(false, *bob_, inter_);
  rconn->remote_id_any = true;
  LoopbackPair pair(iconn, rconn);
  pair.initiator->Initiate(CertTime(0));
  pair.Pump(CertTime(0));
  EXPECT_EQ(pair.initiator->state(), State::kDead);
  EXPECT_EQ(pair.rcounters.cert_failures, 1u);
  EXPECT_FALSE(pair.responder);
  EXPECT_TRUE(pair.ihost.live_spis.empty());
}

TEST_F(CertAuth, ExpiredCertificateAndMissingIntermediateAreRefused) {
  for (const bool expired : {true, false}) {
    auto iconn = expired ? Conn(true, *expired_, inter_) : Conn(true, *alice_);  // no intermediate sent
    auto rconn = Conn(false, *bob_, inter_);
    LoopbackPair pair(iconn, rconn);
    pair.initiator->Initiate(CertTime(0));
    pair.Pump(CertTime(0));
    EXPECT_EQ(pair.initiator->state(), State::kDead) << expired;
    EXPECT_EQ(pair.rcounters.cert_failures, 1u) << expired;
  }
}

// The responder's certificate is checked by the initiator too: a responder whose chain the
// initiator does not trust is not established with.
TEST_F(CertAuth, InitiatorRefusesAResponderItDoesNotTrust) {
  auto iconn = Conn(true, *alice_, inter_, *stranger_root_);
  auto rconn = Conn(false, *bob_, inter_);
  LoopbackPair pair(iconn, rconn);
  pair.initiator->Initiate(CertTime(0));
  pair.Pump(CertTime(0));
  EXPECT_EQ(pair.initiator->state(), State::kDead);
  EXPECT_NE(pair.initiator->failure().find("unable to get local issuer"), std::string::npos) << pair.initiator->failure();
  EXPECT_EQ(pair.icounters.cert_failures, 1u);
}

// One side signs, the other proves a PSK: each side checks what its connection expects.
TEST_F(CertAuth, MixedPubkeyAndPskAndAMismatchedMethod) {
  auto iconn = Conn(true, *alice_, inter_);
  iconn->remote_auth = AuthMethod::kPsk;
  auto rconn = Conn(false, *bob_, inter_);
  rconn->local_auth = AuthMethod::kPsk;
  LoopbackPair pair(iconn, rconn);
  pair.initiator->Initiate(CertTime(0));
  pair.Pump(CertTime(0));
  EXPECT_EQ(pair.initiator->state(), State::kEstablished) << pair.initiator->failure();

  auto psk_only = TestConnection(true, kCertIke, kCertEsp);  // sends a PSK AUTH to a pubkey responder
  LoopbackPair refused(psk_only, Conn(false, *bob_, inter_));
  refused.initiator->Initiate(CertTime(0));
  refused.Pump(CertTime(0));
  EXPECT_EQ(refused.initiator->state(), State::kDead);
  EXPECT_EQ(refused.rcounters.auth_failures, 1u);
}

// A remote_id written in the configuration (UTF8String values) accepts the same DN from a
// certificate made by strongSwan's `pki` (PrintableString values): DNs compare as names.
TEST(Identity, ExactDnRemoteIdAcceptsTheSameNameInAnotherStringType) {
  // X.690 DER of C=CH, CN=a with PrintableString (0x13) values.
  const Bytes printable = {0x30, 0x19, 0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x06, 0x13, 0x02, 'C',
                           'H',  0x31, 0x0a, 0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x03, 0x13, 0x01, 'a'};
  ConnectionParams c;
  c.remote_id = *ParseIdentity("C=CH, CN=a");
  EXPECT_TRUE(c.AcceptsPeer(Identity{IdType::kDerAsn1Dn, printable}));
  EXPECT_TRUE(SameIdentity(c.remote_id, Identity{IdType::kDerAsn1Dn, printable}));
  EXPECT_FALSE(c.AcceptsPeer(*ParseIdentity("C=CH, CN=b")));
  EXPECT_FALSE(SameIdentity(Identity{IdType::kFqdn, {'a'}}, Identity{IdType::kFqdn, {'A'}})) << "only DNs canonically";
  EXPECT_FALSE(SameIdentity(Identity{IdType::kKeyId, printable}, Identity{IdType::kDerAsn1Dn, printable}));
}

}  // namespace
}  // namespace spigot::ike
