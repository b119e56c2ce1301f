// EAP-MSCHAPv2 in IKE_AUTH (RFC 7296 2.16), both ends in process: spigot's client against
// spigot's server over the multi-exchange IKE_AUTH, with the responder proving itself by PSK
// first and both final AUTHs keyed with the MSK; a wrong password refused and counted on both
// sides; a peer asking for EAP where the connection has none.
#include <gtest/gtest.h>

#include <cstring>
#include <thread>

#include "spigot/ike/ike_sa.h"
#include "spigot/test_tools/ike_loopback.h"

namespace spigot::ike {
namespace {

TimePoint EapTime(int seconds) { return TimePoint{} + std::chrono::hours(1) + std::chrono::seconds(seconds); }

crypto::SecureBytes EapSecret(const char* s) {
  return crypto::SecureBytes(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(s), std::strlen(s)));
}

struct EapPair {
  std::shared_ptr<ConnectionParams> iconn = TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  std::shared_ptr<ConnectionParams> rconn = TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  EapPair(const char* password) {
    iconn->local_auth = AuthMethod::kEap;
    iconn->eap_id = "alice";
    iconn->eap_secret = EapSecret(password);
    rconn->remote_auth = AuthMethod::kEap;
    auto users = std::make_shared<eap::Users>();
    users->Add("alice", EapSecret("alice's password"));
    rconn->eap_server = LocalMschapV2Servers(users);
  }
};

TEST(EapAuth, MschapV2LoginOverSeveralIkeAuthExchangesEstablishesBothSides) {
  EapPair e("alice's password");
  LoopbackPair pair(e.iconn, e.rconn);
  pair.initiator->Initiate(EapTime(0));
  pair.Pump(EapTime(0));
  ASSERT_EQ(pair.initiator->state(), IkeSa::State::kEstablished) << pair.initiator->failure();
  ASSERT_TRUE(pair.responder);
  EXPECT_EQ(pair.responder->state(), IkeSa::State::kEstablished) << pair.responder->failure();
  EXPECT_EQ(pair.ihost.installed.size(), 1u);
  EXPECT_EQ(pair.rhost.installed.size(), 1u);
  EXPECT_EQ(pair.icounters.eap_login(eap::Method::kMschapV2).success, 1u);
  EXPECT_EQ(pair.rcounters.eap_login(eap::Method::kMschapV2).success, 1u);
  EXPECT_EQ(pair.icounters.auth_failures + pair.rcounters.auth_failures, 0u);
  // IKE_SA_INIT, then IKE_AUTH: first (IDi, no AUTH), identity, MS-CHAPv2 response, success
  // ack, final AUTH: message IDs 0-5, five IKE_AUTH exchanges.
  EXPECT_EQ(pair.ihost.sent, 6u);
  // The SA works after EAP: a CHILD SA rekey.
  pair.initiator->RekeyChild(pair.ihost.installed.begin()->first, EapTime(1));
  pair.Pump(EapTime(1));
  EXPECT_EQ(pair.ihost.installed.size(), 1u);
}

TEST(EapAuth, WrongPasswordIsRefusedAndCountedOnBothSides) {
  EapPair e("guess");
  LoopbackPair pair(e.iconn, e.rconn);
  pair.initiator->Initiate(EapTime(0));
  pair.Pump(EapTime(0));
  EXPECT_EQ(pair.initiator->state(), IkeSa::State::kDead);
  EXPECT_FALSE(pair.responder) << "the loopback drops a responder that died before it was established";
  EXPECT_EQ(pair.rcounters.eap_login(eap::Method::kMschapV2).failure, 1u);
  EXPECT_EQ(pair.rcounters.auth_failures, 1u);
  EXPECT_EQ(pair.icounters.auth_failures, 1u);
  EXPECT_EQ(pair.initiator->failure(), "peer: AUTHENTICATION_FAILED");
  EXPECT_EQ(pair.icounters.eap_login(eap::Method::kMschapV2).failure, 1u);
  EXPECT_TRUE(pair.ihost.installed.empty());
  EXPECT_TRUE(pair.rhost.installed.empty());
  EXPECT_TRUE(pair.ihost.live_spis.empty()) << "the initiator's CHILD SPI was not released";
}

TEST(EapAuth, EapWhereTheConnectionHasNoneIsAuthenticationFailed) {
  EapPair e("alice's password");
  e.rconn->remote_auth = AuthMethod::kPsk;
  LoopbackPair pair(e.iconn, e.rconn);
  pair.initiator->Initiate(EapTime(0));
  pair.Pump(EapTime(0));
  EXPECT_EQ(pair.initiator->state(), IkeSa::State::kDead);
  EXPECT_EQ(pair.rcounters.auth_failures, 1u);
  EXPECT_EQ(pair.rcounters.eap_login(eap::Method::kMschapV2).failure, 0u);
  EXPECT_EQ(pair.initiator->failure(), "peer: AUTHENTICATION_FAILED");
}

// An EAP server whose steps finish when the test says so, as a RADIUS server's would: it
// passes each packet to a local MSCHAPv2 server but holds the answer back.
class DeferredServer : public eap::ServerSession {
 public:
  DeferredServer(std::unique_ptr<eap::MschapV2Server> inner, int* alive) : inner_(std::move(inner)), alive_(alive) {
    ++*alive_;
  }
  ~DeferredServer() override { --*alive_; }
  eap::Method method() const override { return eap::Method::kRadius; }
  Bytes Start() override { return inner_->Start(); }
  void Receive(std::span<const std::uint8_t> packet, Done done) override {
    held_ = inner_->Process(packet);
    done_ = std::move(done);
  }
  const std::string& user() const override { return inner_->user(); }
  const crypto::SecureBytes& msk() const override { return inner_->msk(); }
  bool Holding() const { return static_cast<bool>(done_); }
  void Finish() {
    auto done = std::move(done_);
    done_ = nullptr;
    done(std::move(*held_));
  }

 private:
  std::unique_ptr<eap::MschapV2Server> inner_;
  int* alive_;
  std::optional<Step> held_;
  Done done_;
};

struct DeferredEap {
  EapPair e{"alice's password"};
  DeferredServer* server = nullptr;
  int alive = 0;
  DeferredEap() {
    auto users = std::make_shared<eap::Users>();
    users->Add("alice", EapSecret("alice's password"));
    e.rconn->eap_server = [this, users](const EapServerContext& c) -> std::unique_ptr<eap::ServerSession> {
      auto s = std::make_unique<DeferredServer>(std::make_unique<eap::MschapV2Server>(users, c.server_name, c.admit), &alive);
      server = s.get();
      return s;
    };
  }
};

TEST(EapAuth, AStepThatFinishesLaterIsAnsweredOnResumeAndRetransmissionsWaitForIt) {
  DeferredEap d;
  LoopbackPair pair(d.e.iconn, d.e.rconn);
  pair.initiator->Initiate(EapTime(0));
  pair.Pump(EapTime(0));
  int rounds = 0;
  for (int t = 0; d.alive > 0 && d.server->Holding(); ++t) {  // alive: FinishEap destroys it
    ASSERT_LT(++rounds, 10);
    const std::uint64_t answered = pair.rhost.sent;
    // The initiator's retransmission meets a step still outstanding: no second answer.
    pair.initiator->Tick(EapTime(t) + std::chrono::seconds(3));
    pair.Pump(EapTime(t) + std::chrono::seconds(3));
    EXPECT_EQ(pair.rhost.sent, answered) << "answered a retransmission while the EAP step was outstanding";
    d.server->Finish();
    EXPECT_EQ(pair.rhost.sent, answered) << "answered from inside the EAP server's callback";
    pair.responder->ResumeEap(EapTime(t) + std::chrono::seconds(3));
    EXPECT_EQ(pair.rhost.sent, answered + 1);
    pair.Pump(EapTime(t) + std::chrono::seconds(3));
  }
  EXPECT_EQ(rounds, 3) << "identity, MS-CHAPv2 response, success ack";
  EXPECT_GE(pair.icounters.retransmits, 3u) << "the test meant to retransmit while each step was outstanding";
  ASSERT_EQ(pair.initiator->state(), IkeSa::State::kEstablished) << pair.initiator->failure();
  EXPECT_EQ(pair.responder->state(), IkeSa::State::kEstablished) << pair.responder->failure();
  EXPECT_EQ(pair.rcounters.eap_login(eap::Method::kRadius).success, 1u);
  EXPECT_EQ(pair.rcounters.eap_login(eap::Method::kMschapV2).success, 0u);
  EXPECT_EQ(d.alive, 0) << "the EAP server outlived the login";
}

TEST(EapAuth, AnSaThatDiesWithAStepOutstandingDestroysItsEapServer) {
  DeferredEap d;
  LoopbackPair pair(d.e.iconn, d.e.rconn);
  pair.initiator->Initiate(EapTime(0));
  pair.Pump(EapTime(0));
  ASSERT_TRUE(d.server != nullptr && d.server->Holding());
  EXPECT_EQ(d.alive, 1);
  pair.responder.reset();  // e.g. the half-open limit
  EXPECT_EQ(d.alive, 0);
}

// An EAP server whose second step (the MS-CHAPv2 response) says it does public-key work, as
// an EAP-TLS handshake flight does (ServerSession::PublicKeyStep), and records the thread
// each step ran on.
class PublicKeyServer : public eap::ServerSession {
 public:
  PublicKeyServer(std::unique_ptr<eap::MschapV2Server> inner, int* alive) : inner_(std::move(inner)), alive_(alive) {
    ++*alive_;
  }
  ~PublicKeyServer() override { --*alive_; }
  eap::Method method() const override { return eap::Method::kTls; }
  Bytes Start() override { return inner_->Start(); }
  void Receive(std::span<const std::uint8_t> packet, Done done) override {
    threads.push_back(std::this_thread::get_id());
    done(inner_->Process(packet));
  }
  bool PublicKeyStep(std::span<const std::uint8_t>) const override { return threads.size() == 1; }
  const std::string& user() const override { return inner_->user(); }
  const crypto::SecureBytes& msk() const override { return inner_->msk(); }
  std::vector<std::thread::id> threads;

 private:
  std::unique_ptr<eap::MschapV2Server> inner_;
  int* alive_;
};

struct PublicKeyEap {
  EapPair e{"alice's password"};
  PublicKeyServer* server = nullptr;
  int alive = 0;
  PublicKeyEap() {
    auto users = std::make_shared<eap::Users>();
    users->Add("alice", EapSecret("alice's password"));
    // No Admission: a step on a worker must not call back into the SA (PublicKeyStep's promise).
    e.rconn->eap_server = [this, users](const EapServerContext& c) -> std::unique_ptr<eap::ServerSession> {
      auto s = std::make_unique<PublicKeyServer>(std::make_unique<eap::MschapV2Server>(users, c.server_name), &alive);
      server = s.get();
      return s;
    };
  }
};

// Issue 17: an EAP step with public-key work runs on an IKE worker with the SA's EAP server;
// meanwhile the initiator's retransmission is dropped (counted) and not answered, and the step
// is answered once, on resume.
TEST(EapAuth, APublicKeyStepRunsOnAWorkerAndIsAnsweredOnResume) {
  PublicKeyEap d;
  LoopbackPair pair(d.e.iconn, d.e.rconn);
  pair.rhost.offload = {OffloadKind::kEap};
  pair.initiator->Initiate(EapTime(0));
  pair.Pump(EapTime(0));
  ASSERT_EQ(pair.rhost.offloaded.size(), 1u);
  EXPECT_EQ(pair.rhost.offloaded[0].kind, OffloadKind::kEap);
  EXPECT_EQ(pair.rcounters.eap_offloaded, 1u);
  ASSERT_TRUE(pair.responder->offloaded());
  EXPECT_EQ(pair.responder->state(), IkeSa::State::kInitAnswered);
  const std::uint64_t answered = pair.rhost.sent;
  pair.initiator->Tick(EapTime(3));  // the initiator retransmits the MS-CHAPv2 response
  pair.Pump(EapTime(3));
  EXPECT_GE(pair.icounters.retransmits, 1u);
  EXPECT_EQ(pair.rcounters.offload_retransmits, pair.icounters.retransmits);
  EXPECT_EQ(pair.rhost.sent, answered) << "answered before the step ran";
  pair.responder->ResumeOffloaded(EapTime(3));  // not done yet: nothing happens
  EXPECT_EQ(pair.rhost.sent, answered);
  std::thread worker(pair.rhost.offloaded[0].work);
  const std::thread::id worker_id = worker.get_id();
  worker.join();
  ASSERT_EQ(d.server->threads.size(), 2u);
  EXPECT_EQ(d.server->threads[0], std::this_thread::get_id()) << "the identity step needs no worker";
  EXPECT_EQ(d.server->threads[1], worker_id);
  EXPECT_EQ(pair.rhost.sent, answered) << "answered from the worker";
  pair.responder->ResumeOffloaded(EapTime(3));
  EXPECT_EQ(pair.rhost.sent, answered + 1);
  pair.Pump(EapTime(3));
  ASSERT_EQ(pair.initiator->state(), IkeSa::State::kEstablished) << pair.initiator->failure();
  EXPECT_EQ(pair.responder->state(), IkeSa::State::kEstablished) << pair.responder->failure();
  EXPECT_EQ(pair.rcounters.eap_login(eap::Method::kTls).success, 1u);
  EXPECT_EQ(pair.rhost.offloaded.size(), 1u) << "only the step that said so went to the worker";
  EXPECT_EQ(d.alive, 0) << "the EAP server outlived the login";
}

TEST(EapAuth, APublicKeyStepRunsInlineWithoutAFreeWorkerCounted) {
  PublicKeyEap d;
  LoopbackPair pair(d.e.iconn, d.e.rconn);
  pair.rhost.offload = {OffloadKind::kEap};
  pair.rhost.offload_room = 0;
  pair.initiator->Initiate(EapTime(0));
  pair.Pump(EapTime(0));
  ASSERT_EQ(pair.initiator->state(), IkeSa::State::kEstablished) << pair.initiator->failure();
  EXPECT_EQ(pair.rcounters.eap_inline, 1u);
  EXPECT_EQ(pair.rcounters.eap_offloaded, 0u);
}

// The SA dies while its step runs: the work holds the EAP server until it is done, and the
// server goes with it (never with the SA under the worker).
TEST(EapAuth, AnSaThatDiesWhileItsStepRunsOnAWorkerLeavesTheServerToTheWork) {
  PublicKeyEap d;
  LoopbackPair pair(d.e.iconn, d.e.rconn);
  pair.rhost.offload = {OffloadKind::kEap};
  pair.initiator->Initiate(EapTime(0));
  pair.Pump(EapTime(0));
  ASSERT_EQ(pair.rhost.offloaded.size(), 1u);
  pair.responder.reset();  // e.g. the half-open limit
  EXPECT_EQ(d.alive, 1) << "destroyed with the SA while the worker uses it";
  std::thread worker(pair.rhost.offloaded[0].work);
  worker.join();
  ASSERT_EQ(d.server->threads.size(), 2u);
  EXPECT_NE(d.server->threads[1], std::this_thread::get_id());
  pair.rhost.offloaded.clear();
  EXPECT_EQ(d.alive, 0);
}

}  // namespace
}  // namespace spigot::ike
