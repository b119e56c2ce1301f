// radius::EapSession: EAP-MSCHAPv2 through RADIUS, with a real MSCHAPv2 server behind the test
// RADIUS server (test_tools/fake_radius_server.h) and a real MSCHAPv2 client in front of the
// session — so the MSK that comes back in MS-MPPE keys is checked against the client's own.
#include "spigot/radius/eap_session.h"

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>

#include "spigot/test_tools/fake_clock.h"
#include "spigot/test_tools/fake_radius_server.h"

namespace spigot::radius {
namespace {

using std::chrono::milliseconds;
using Answer = test_tools::FakeRadiusServer::Answer;
using ServerRequest = test_tools::FakeRadiusServer::Request;
using Status = eap::ServerSession::Status;

const std::string kEapRadiusSecret = "testing123";

crypto::SecureBytes Text(const char* s) { return crypto::SecureBytes::FromText(s); }

class RadiusEapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    io::EventLoop::Options o;
    o.clock = &clock_;
    loop_ = io::EventLoop::Create(o);
    ASSERT_TRUE(loop_);
    users_ = std::make_shared<eap::Users>();
    users_->Add("alice", Text("alice's password"));
    // The RADIUS server: one MSCHAPv2 server per login, found by the State it handed out.
    server_ = test_tools::FakeRadiusServer::Start(*loop_, kEapRadiusSecret, [this](const ServerRequest& r) {
      return std::vector<Answer>{Serve(r)};
    });
    ASSERT_TRUE(server_);
    ClientOptions o2;
    o2.servers = {server_->endpoint()};
    o2.secret = crypto::SecureBytes::FromText(kEapRadiusSecret);
    o2.timeout = milliseconds(50);
    o2.retries = 1;
    client_ = Client::Create(*loop_, std::move(o2));
    ASSERT_TRUE(client_);
  }

  Answer Serve(const ServerRequest& r) {
    ++radius_requests_;
    Bytes eap = r.Joined(attr::kEapMessage);
    const Bytes state = r.Joined(attr::kState);
    eap::MschapV2Server* s = nullptr;
    if (state.empty()) {
      auto fresh = std::make_unique<eap::MschapV2Server>(users_, "radius");
      const Bytes start = fresh->Start();
      if (eap.size() > 1) eap[1] = start[1];  // the NAS asked for the identity with its own identifier
      s = fresh.get();
      sessions_[std::to_string(sessions_.size())] = std::move(fresh);
    } else {
      auto it = sessions_.find(std::string(state.begin(), state.end()));
      if (it == sessions_.end()) return Answer{3};  // Access-Reject
      s = it->second.get();
    }
    std::string key;
    for (auto& [k, v] : sessions_) if (v.get() == s) key = k;
    const auto step = s->Process(eap);
    Answer a;
    a.eap_message = step.reply;
    if (step.status == Status::kContinue) {
      a.code = 11;
      a.attributes = {{attr::kState, Bytes(key.begin(), key.end())}};
    } else if (step.status == Status::kSuccess) {
      a.code = 2;
      const auto msk = s->msk().span();  // MasterReceiveKey | MasterSendKey | zeros
      a.mppe_recv_key.assign(msk.begin(), msk.begin() + 16);
      a.mppe_send_key.assign(msk.begin() + 16, msk.begin() + 32);
      a.attributes = {{attr::kFramedIpAddress, {198, 18, 7, 9}}, {attr::kClass, {'g', 'o', 'l', 'd'}}};
    } else {
      a.code = 3;
    }
    return a;
  }

  std::unique_ptr<EapSession> Session(eap::ServerSession::Admission admit = nullptr) {
    return std::make_unique<EapSession>(client_, "198.51.100.7[4500]", "192.0.2.2[4500]", std::move(admit));
  }

  // One step: the session's answer, which must not come inside Receive().
  std::optional<eap::ServerSession::Step> StepOf(EapSession& s, const Bytes& packet) {
    std::optional<eap::ServerSession::Step> out;
    bool returned = false;
    s.Receive(packet, [&](eap::ServerSession::Step step) {
      EXPECT_TRUE(returned || step.status == Status::kFailure) << "a RADIUS answer inside Receive()";
      out = std::move(step);
    });
    returned = true;
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!out && std::chrono::steady_clock::now() < give_up) loop_->RunOnce(milliseconds(5));
    return out;
  }

  // The client side's whole login; the last step the session took.
  eap::ServerSession::Step Login(EapSession& s, const char* password) {
    eap::MschapV2Client peer("alice", Text(password));
    auto reply = peer.Process(s.Start());
    for (int round = 0; round < 8; ++round) {
      if (reply.status != eap::MschapV2Client::Status::kContinue) break;
      auto step = StepOf(s, reply.reply);
      if (!step) return {Status::kFailure, {}, "no answer", false, false};
      if (step->status != Status::kContinue) {
        if (step->status == Status::kSuccess) {
          EXPECT_EQ(peer.Process(step->reply).status, eap::MschapV2Client::Status::kSuccess);
          peer_msk_ = peer.msk();
        }
        return *step;
      }
      reply = peer.Process(step->reply);
    }
    return {Status::kFailure, {}, "the client gave up", false, false};
  }

  test_tools::FakeClock clock_;
  std::unique_ptr<io::EventLoop> loop_;
  std::shared_ptr<eap::Users> users_;
  std::unique_ptr<test_tools::FakeRadiusServer> server_;
  std::shared_ptr<Client> client_;
  std::map<std::string, std::unique_ptr<eap::MschapV2Server>> sessions_;
  int radius_requests_ = 0;
  crypto::SecureBytes peer_msk_;
};

TEST_F(RadiusEapTest, MschapV2LoginThroughRadiusGivesTheClientsMskAddressAndClass) {
  auto s = Session();
  const auto last = Login(*s, "alice's password");
  ASSERT_EQ(last.status, Status::kSuccess) << last.reason;
  EXPECT_TRUE(last.password_checked);
  EXPECT_EQ(s->user(), "alice");
  EXPECT_EQ(s->method(), eap::Method::kRadius);
  ASSERT_EQ(s->msk().size(), 64u);
  ASSERT_EQ(peer_msk_.size(), 64u);
  EXPECT_TRUE(std::equal(s->msk().span().begin(), s->msk().span().end(), peer_msk_.span().begin()))
      << "the MSK from MS-MPPE-Recv-Key | -Send-Key is not the client's";
  ASSERT_TRUE(s->authorization().framed_ip4);
  EXPECT_EQ(*s->authorization().framed_ip4, (std::array<std::uint8_t, 4>{198, 18, 7, 9}));
  ASSERT_EQ(s->authorization().classes.size(), 1u);
  EXPECT_EQ(s->authorization().classes[0], (Bytes{'g', 'o', 'l', 'd'}));
  EXPECT_EQ(radius_requests_, 3) << "identity, MS-CHAPv2 response, success acknowledgement";
  EXPECT_EQ(client_->stats().accepts, 1u);
}

TEST_F(RadiusEapTest, WrongPasswordIsAccessRejectAndAFailureAfterACheck) {
  auto s = Session();
  const auto last = Login(*s, "guess");
  EXPECT_EQ(last.status, Status::kFailure);
  EXPECT_TRUE(last.password_checked);
  EXPECT_EQ(last.reason, "Access-Reject from the RADIUS server");
  const auto failure = eap::Parse(last.reply);
  ASSERT_TRUE(failure);
  EXPECT_EQ(failure->code, eap::Code::kFailure);
  EXPECT_EQ(client_->stats().rejects, 1u);
}

TEST_F(RadiusEapTest, ASilentServerEndsTheLoginUncheckedAfterItsRetries) {
  server_->set_handler([](const ServerRequest&) { return std::vector<Answer>{}; });
  auto s = Session();
  eap::MschapV2Client peer("alice", Text("alice's password"));
  std::optional<eap::ServerSession::Step> out;
  s->Receive(peer.Process(s->Start()).reply, [&](eap::ServerSession::Step step) { out = std::move(step); });
  for (int i = 0; i < 10 && !out; ++i) {
    for (int j = 0; j < 5; ++j) loop_->RunOnce(milliseconds(1));
    clock_.Advance(milliseconds(50));
    loop_->RunOnce(io::EventLoop::Duration::zero());
  }
  ASSERT_TRUE(out);
  EXPECT_EQ(out->status, Status::kFailure);
  EXPECT_FALSE(out->password_checked) << "a dead server is not a wrong password (no back-off)";
  EXPECT_EQ(out->reason, "no RADIUS server answered");
  EXPECT_EQ(client_->stats().timeouts, 1u);
  EXPECT_EQ(client_->stats().retransmits, 1u);
}

TEST_F(RadiusEapTest, DestroyingTheSessionCancelsItsRequest) {
  server_->set_handler([](const ServerRequest&) { return std::vector<Answer>{}; });
  auto s = Session();
  eap::MschapV2Client peer("alice", Text("alice's password"));
  bool called = false;
  s->Receive(peer.Process(s->Start()).reply, [&](eap::ServerSession::Step) { called = true; });
  EXPECT_EQ(client_->stats().outstanding, 1u);
  s.reset();
  EXPECT_EQ(client_->stats().outstanding, 0u);
  clock_.Advance(std::chrono::seconds(1));
  loop_->RunOnce(io::EventLoop::Duration::zero());
  EXPECT_FALSE(called);
}

TEST_F(RadiusEapTest, TheBackOffRefusesAUserBeforeAnythingGoesToRadius) {
  auto s = Session([](const std::string& user) -> std::optional<std::string> {
    if (user == "alice") return "too many failed logins";
    return std::nullopt;
  });
  eap::MschapV2Client peer("alice", Text("alice's password"));
  std::optional<eap::ServerSession::Step> out;
  s->Receive(peer.Process(s->Start()).reply, [&](eap::ServerSession::Step step) { out = std::move(step); });
  ASSERT_TRUE(out);
  EXPECT_EQ(out->status, Status::kFailure);
  EXPECT_TRUE(out->throttled);
  EXPECT_EQ(client_->stats().requests, 0u);
}

TEST_F(RadiusEapTest, AnythingButAResponseToTheLastRequestEndsTheLoginUnsent) {
  for (const Bytes& bad : {Bytes{}, Bytes{2, 0, 0}, Bytes{1, 0, 0, 5, 1}, Bytes{2, 0, 0, 5, 4}}) {
    auto s = Session();
    const Bytes start = s->Start();
    Bytes packet = bad;
    if (packet.size() >= 2) packet[1] = start[1];
    std::optional<eap::ServerSession::Step> out;
    s->Receive(packet, [&](eap::ServerSession::Step step) { out = std::move(step); });
    ASSERT_TRUE(out);
    EXPECT_EQ(out->status, Status::kFailure);
  }
  EXPECT_EQ(client_->stats().requests, 0u);
}

}  // namespace
}  // namespace spigot::radius
