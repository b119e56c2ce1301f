// radius::Client against the test RADIUS server (test_tools/fake_radius_server.h) on the same
// io::EventLoop over loopback UDP. Time is a FakeClock: timeouts, retransmissions and dead
// servers move only when a test advances it, so nothing here sleeps.
#include "spigot/radius/client.h"

#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "spigot/test_tools/fake_clock.h"
#include "spigot/test_tools/fake_radius_server.h"

namespace spigot::radius {
namespace {

using std::chrono::milliseconds;
using Answer = test_tools::FakeRadiusServer::Answer;
using ServerRequest = test_tools::FakeRadiusServer::Request;
using Outcome = Reply::Outcome;

const std::string kSecret = "testing123";
constexpr milliseconds kTimeout{50};

class RadiusClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    io::EventLoop::Options o;
    o.clock = &clock_;
    loop_ = io::EventLoop::Create(o);
    ASSERT_TRUE(loop_);
  }

  std::unique_ptr<test_tools::FakeRadiusServer> Server(test_tools::FakeRadiusServer::Handler h,
                                                       const std::string& secret = kSecret) {
    auto s = test_tools::FakeRadiusServer::Start(*loop_, secret, std::move(h));
    EXPECT_TRUE(s);
    return s;
  }
  // A server that never answers.
  std::unique_ptr<test_tools::FakeRadiusServer> Silent() {
    return Server([](const ServerRequest&) { return std::vector<Answer>{}; });
  }
  static std::vector<Answer> Accept(const ServerRequest&) { return {Answer{}}; }

  ClientOptions Options(std::vector<io::Endpoint> servers) {
    ClientOptions o;
    o.servers = std::move(servers);
    o.secret = crypto::SecureBytes::FromText(kSecret);
    o.timeout = kTimeout;
    o.retries = 3;
    o.dead_time = std::chrono::seconds(30);
    return o;
  }
  std::unique_ptr<Client> MakeClient(ClientOptions o) {
    std::string error;
    auto c = Client::Create(*loop_, std::move(o), &error);
    EXPECT_TRUE(c) << error;
    return c;
  }

  static AccessRequest Request(Bytes eap = {2, 1, 0, 10, 1, 'a', 'l', 'i', 'c', 'e'}) {
    AccessRequest r;
    r.user_name = "alice";
    r.eap_message = std::move(eap);
    r.calling_station = "198.51.100.7[4500]";
    r.called_station = "192.0.2.2[4500]";
    return r;
  }

  // Runs the loop (fds only: fake time stands still) until `done` holds; false after 5 s.
  bool RunUntil(const std::function<bool()>& done) {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!done()) {
      if (std::chrono::steady_clock::now() > give_up) return false;
      loop_->RunOnce(milliseconds(5));
    }
    return true;
  }
  // Lets queued datagrams arrive (both ends are on this loop).
  void Settle() {
    for (int i = 0; i < 20; ++i) loop_->RunOnce(milliseconds(1));
  }
  void Advance(std::chrono::nanoseconds d) {
    clock_.Advance(d);
    loop_->RunOnce(io::EventLoop::Duration::zero());
  }

  test_tools::FakeClock clock_;
  std::unique_ptr<io::EventLoop> loop_;
};

TEST_F(RadiusClientTest, ChallengeThenAcceptWithKeysAddressAndClasses) {
  const Bytes challenge_eap(300, 0x01);  // two EAP-Message attributes
  const Bytes success_eap = {3, 2, 0, 4};
  Bytes recv_key(32), send_key(32);
  for (int i = 0; i < 32; ++i) {
    recv_key[i] = static_cast<std::uint8_t>(i);
    send_key[i] = static_cast<std::uint8_t>(255 - i);
  }
  auto server = Server([&](const ServerRequest& r) {
    Answer a;
    if (r.Count(attr::kState) == 0) {
      a.code = 11;
      a.eap_message = challenge_eap;
      a.attributes = {{attr::kState, {'s', '1'}}};
    } else {
      a.code = 2;
      a.eap_message = success_eap;
      a.attributes = {{attr::kFramedIpAddress, {10, 3, 0, 7}}, {attr::kClass, {'g', '1'}}, {attr::kClass, {'g', '2'}}};
      a.mppe_recv_key = recv_key;
      a.mppe_send_key = send_key;
    }
    return std::vector<Answer>{a};
  });
  auto client = MakeClient(Options({server->endpoint()}));

  std::optional<Reply> got;
  bool ran_inside_send = true;
  const auto h = client->Send(Request(), [&](Reply r) { got = std::move(r); });
  ran_inside_send = got.has_value();
  EXPECT_NE(h, 0u);
  EXPECT_FALSE(ran_inside_send);
  ASSERT_TRUE(RunUntil([&] { return got.has_value(); }));
  EXPECT_EQ(got->outcome, Outcome::kChallenge);
  EXPECT_EQ(got->eap_message, challenge_eap);
  EXPECT_EQ(got->state, (Bytes{'s', '1'}));
  EXPECT_TRUE(got->msk.empty());

  // What the server saw: every attribute of an EAP pass-through request, and a valid
  // Message-Authenticator.
  ASSERT_EQ(server->received().size(), 1u);
  const ServerRequest& first = server->received()[0];
  EXPECT_EQ(first.code, 1);
  EXPECT_TRUE(first.message_authenticator_ok);
  EXPECT_EQ(first.Text(attr::kUserName), "alice");
  EXPECT_EQ(first.Text(attr::kNasIdentifier), "spigot");
  EXPECT_EQ(first.Joined(attr::kServiceType), (Bytes{0, 0, 0, 2}));
  EXPECT_EQ(first.Joined(attr::kNasPortType), (Bytes{0, 0, 0, 5}));
  EXPECT_EQ(first.Joined(attr::kFramedMtu), (Bytes{0, 0, 0x05, 0x78}));
  EXPECT_EQ(first.Text(attr::kCallingStationId), "198.51.100.7[4500]");
  EXPECT_EQ(first.Text(attr::kCalledStationId), "192.0.2.2[4500]");
  EXPECT_EQ(first.Joined(attr::kEapMessage), Request().eap_message);

  AccessRequest second = Request({2, 2, 0, 6, 26, 2});
  second.state = got->state;
  got.reset();
  client->Send(second, [&](Reply r) { got = std::move(r); });
  ASSERT_TRUE(RunUntil([&] { return got.has_value(); }));
  EXPECT_EQ(server->received().at(1).Joined(attr::kState), (Bytes{'s', '1'}));
  EXPECT_EQ(got->outcome, Outcome::kAccept);
  EXPECT_EQ(got->eap_message, success_eap);
  ASSERT_TRUE(got->framed_ip);
  EXPECT_EQ(*got->framed_ip, (std::array<std::uint8_t, 4>{10, 3, 0, 7}));
  EXPECT_EQ(got->classes, (std::vector<Bytes>{{'g', '1'}, {'g', '2'}}));
  Bytes msk = recv_key;
  msk.insert(msk.end(), send_key.begin(), send_key.end());
  EXPECT_EQ(got->msk, crypto::SecureBytes(msk));  // what the server encrypted, Recv | Send

  const auto s = client->stats();
  EXPECT_EQ(s.requests, 2u);
  EXPECT_EQ(s.challenges, 1u);
  EXPECT_EQ(s.accepts, 1u);
  EXPECT_EQ(s.retransmits, 0u);
  EXPECT_EQ(s.outstanding, 0u);
  EXPECT_EQ(s.rtt.count, 2u);
  ASSERT_EQ(s.servers.size(), 1u);
  EXPECT_EQ(s.servers[0].address, server->endpoint().ToString());
  EXPECT_EQ(s.servers[0].requests, 2u);
  EXPECT_FALSE(s.servers[0].dead);
}

TEST_F(RadiusClientTest, Reject) {
  auto server = Server([](const ServerRequest&) {
    Answer a;
    a.code = 3;
    a.eap_message = {4, 1, 0, 4};
    a.attributes = {{attr::kReplyMessage, {'n', 'o'}}};
    return std::vector<Answer>{a};
  });
  auto client = MakeClient(Options({server->endpoint()}));
  std::optional<Reply> got;
  client->Send(Request(), [&](Reply r) { got = std::move(r); });
  ASSERT_TRUE(RunUntil([&] { return got.has_value(); }));
  EXPECT_EQ(got->outcome, Outcome::kReject);
  EXPECT_EQ(got->reply_message, "no");
  EXPECT_EQ(client->stats().rejects, 1u);
}

TEST_F(RadiusClientTest, SilentServerGetsRetriesThenTheRequestTimesOut) {
  auto server = Silent();
  auto client = MakeClient(Options({server->endpoint()}));
  std::optional<Reply> got;
  client->Send(Request(), [&](Reply r) { got = std::move(r); });
  ASSERT_TRUE(RunUntil([&] { return server->received().size() == 1; }));
  for (std::size_t retransmit = 1; retransmit <= 3; ++retransmit) {
    Advance(kTimeout - milliseconds(1));
    Settle();
    EXPECT_EQ(server->received().size(), retransmit);
    Advance(milliseconds(1));
    ASSERT_TRUE(RunUntil([&] { return server->received().size() == retransmit + 1; }));
  }
  // Retransmissions are the identical packet (RFC 2865 2.5: same identifier, authenticator).
  for (const auto& r : server->received()) EXPECT_EQ(r.raw, server->received()[0].raw);
  EXPECT_FALSE(got);
  Advance(kTimeout - milliseconds(1));
  EXPECT_FALSE(got);
  Advance(milliseconds(1));
  ASSERT_TRUE(got);
  EXPECT_EQ(got->outcome, Outcome::kTimeout);
  EXPECT_EQ(got->rtt, std::chrono::duration_cast<std::chrono::microseconds>(4 * kTimeout));
  Settle();
  EXPECT_EQ(server->received().size(), 4u);

  const auto s = client->stats();
  EXPECT_EQ(s.retransmits, 3u);
  EXPECT_EQ(s.timeouts, 1u);
  EXPECT_EQ(s.failovers, 0u);
  EXPECT_EQ(s.outstanding, 0u);
  EXPECT_EQ(s.rtt.count, 0u);
  EXPECT_EQ(s.servers[0].timeouts, 1u);
  EXPECT_TRUE(s.servers[0].dead);
  EXPECT_EQ(loop_->pending_timers(), 0u);

  // The only server is dead, and so all are: it is still tried.
  got.reset();
  client->Send(Request(), [&](Reply r) { got = std::move(r); });
  ASSERT_TRUE(RunUntil([&] { return server->received().size() == 5; }));
}

TEST_F(RadiusClientTest, FailsOverToTheNextServerAndSkipsTheDeadOneAfterwards) {
  auto dead = Silent();
  auto live = Server(Accept);
  auto client = MakeClient(Options({dead->endpoint(), live->endpoint()}));
  std::optional<Reply> got;
  client->Send(Request(), [&](Reply r) { got = std::move(r); });
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(RunUntil([&] { return dead->received().size() == static_cast<std::size_t>(i + 1); }));
    Advance(kTimeout);
  }
  ASSERT_TRUE(RunUntil([&] { return got.has_value(); }));
  EXPECT_EQ(got->outcome, Outcome::kAccept);
  EXPECT_EQ(got->rtt, std::chrono::duration_cast<std::chrono::microseconds>(4 * kTimeout));
  ASSERT_EQ(live->received().size(), 1u);
  // A new request on the new server: another authenticator.
  EXPECT_NE(live->received()[0].authenticator, dead->received()[0].authenticator);

  auto s = client->stats();
  EXPECT_EQ(s.failovers, 1u);
  EXPECT_EQ(s.timeouts, 0u);
  EXPECT_EQ(s.accepts, 1u);
  EXPECT_TRUE(s.servers[0].dead);
  EXPECT_EQ(s.servers[0].timeouts, 1u);
  EXPECT_FALSE(s.servers[1].dead);
  EXPECT_EQ(s.servers[1].requests, 1u);

  // While it is dead the first server is skipped...
  got.reset();
  client->Send(Request(), [&](Reply r) { got = std::move(r); });
  ASSERT_TRUE(RunUntil([&] { return got.has_value(); }));
  EXPECT_EQ(dead->received().size(), 4u);
  EXPECT_EQ(live->received().size(), 2u);
  // ...and after dead_time it is first again.
  Advance(std::chrono::seconds(30));
  EXPECT_FALSE(client->stats().servers[0].dead);
  client->Send(Request(), [](Reply) {});
  ASSERT_TRUE(RunUntil([&] { return dead->received().size() == 5; }));
}

TEST_F(RadiusClientTest, EveryServerSilentEndsInOneTimeout) {
  auto a = Silent();
  auto b = Silent();
  auto client = MakeClient(Options({a->endpoint(), b->endpoint()}));
  std::optional<Reply> got;
  client->Send(Request(), [&](Reply r) { got = std::move(r); });
  for (int i = 0; i < 8 && !got; ++i) {
    Settle();
    Advance(kTimeout);
  }
  ASSERT_TRUE(got);
  EXPECT_EQ(got->outcome, Outcome::kTimeout);
  EXPECT_EQ(got->rtt, std::chrono::duration_cast<std::chrono::microseconds>(8 * kTimeout));
  Settle();
  EXPECT_EQ(a->received().size(), 4u);
  EXPECT_EQ(b->received().size(), 4u);
  const auto s = client->stats();
  EXPECT_EQ(s.failovers, 1u);
  EXPECT_EQ(s.timeouts, 1u);
  EXPECT_EQ(s.retransmits, 6u);
  EXPECT_TRUE(s.servers[0].dead && s.servers[1].dead);
}

TEST_F(RadiusClientTest, ForgedRepliesAreDroppedAndTheGoodOneStillCounts) {
  auto server = Server([](const ServerRequest&) {
    Answer bad_auth;
    bad_auth.code = 3;  // a forged Reject must not end the login
    bad_auth.corrupt_authenticator = true;
    Answer bad_ma;
    bad_ma.code = 11;
    bad_ma.eap_message = {1, 9, 0, 4};
    bad_ma.corrupt_message_authenticator = true;
    Answer no_ma = bad_ma;
    no_ma.corrupt_message_authenticator = false;
    no_ma.message_authenticator = false;
    Answer elsewhere;
    elsewhere.code = 3;
    elsewhere.from_other_port = true;
    Answer good;
    good.code = 2;
    good.eap_message = {3, 9, 0, 4};
    return std::vector<Answer>{bad_auth, bad_ma, no_ma, elsewhere, good, good};
  });
  auto client = MakeClient(Options({server->endpoint()}));
  std::optional<Reply> got;
  int calls = 0;
  client->Send(Request(), [&](Reply r) {
    ++calls;
    got = std::move(r);
  });
  ASSERT_TRUE(RunUntil([&] { return client->stats().dropped.late == 1; }));
  Settle();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(got->outcome, Outcome::kAccept);
  EXPECT_EQ(got->eap_message, (Bytes{3, 9, 0, 4}));
  const auto d = client->stats().dropped;
  EXPECT_EQ(d.bad_authenticator, 1u);
  EXPECT_EQ(d.bad_message_authenticator, 2u);
  EXPECT_EQ(d.wrong_source, 1u);
  EXPECT_EQ(d.late, 1u);  // the duplicate
  EXPECT_EQ(d.malformed, 0u);
  EXPECT_EQ(d.unknown_id, 0u);
}

TEST_F(RadiusClientTest, ReplyWithTheWrongSecretIsDropped) {
  auto server = Server(Accept, "not the secret");
  auto client = MakeClient(Options({server->endpoint()}));
  std::optional<Reply> got;
  client->Send(Request(), [&](Reply r) { got = std::move(r); });
  ASSERT_TRUE(RunUntil([&] { return client->stats().dropped.bad_authenticator == 1; }));
  EXPECT_FALSE(got);
  EXPECT_FALSE(server->received().at(0).message_authenticator_ok);
}

TEST_F(RadiusClientTest, BoundRefusesTheRequestPastMaxOutstanding) {
  auto server = Silent();
  auto o = Options({server->endpoint()});
  o.max_outstanding = 4;
  auto client = MakeClient(std::move(o));
  for (int i = 0; i < 4; ++i) EXPECT_NE(client->Send(Request(), [](Reply) {}), 0u);
  bool called = false;
  EXPECT_EQ(client->Send(Request(), [&](Reply) { called = true; }), 0u);
  auto s = client->stats();
  EXPECT_EQ(s.refused_full, 1u);
  EXPECT_EQ(s.outstanding, 4u);
  EXPECT_EQ(s.requests, 4u);
  Settle();
  EXPECT_FALSE(called);
  // A request that cannot be encoded is refused too, and counted apart.
  o = Options({server->endpoint()});
  auto other = MakeClient(std::move(o));
  EXPECT_EQ(other->Send(Request({}), [](Reply) {}), 0u);
  EXPECT_EQ(other->stats().refused_invalid, 1u);
  EXPECT_EQ(other->stats().outstanding, 0u);
}

TEST_F(RadiusClientTest, CancelSuppressesTheCallbackAndTheReplyCountsAsLate) {
  auto server = Server(Accept);
  auto client = MakeClient(Options({server->endpoint()}));
  bool called = false;
  const auto h = client->Send(Request(), [&](Reply) { called = true; });
  client->Cancel(h);
  client->Cancel(h);       // again
  client->Cancel(0);       // never a handle
  client->Cancel(h + 99);  // unknown
  EXPECT_EQ(client->stats().outstanding, 0u);
  EXPECT_EQ(loop_->pending_timers(), 0u);
  ASSERT_TRUE(RunUntil([&] { return client->stats().dropped.late == 1; }));
  EXPECT_FALSE(called);
}

TEST_F(RadiusClientTest, MoreThan256InFlightUseMoreSocketsAndAllComplete) {
  constexpr std::size_t kCount = 600;
  auto server = Server(Accept);
  auto o = Options({server->endpoint()});
  o.retries = 20;  // loopback may drop a burst this size; retransmissions recover it
  auto client = MakeClient(std::move(o));
  std::size_t done = 0;
  for (std::size_t i = 0; i < kCount; ++i) {
    ASSERT_NE(client->Send(Request(), [&](Reply r) {
      EXPECT_EQ(r.outcome, Outcome::kAccept);
      ++done;
    }), 0u);
  }
  auto s = client->stats();
  EXPECT_EQ(s.outstanding, kCount);
  EXPECT_EQ(s.sockets, 3u);  // 256 + 256 + 88 identifiers
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (done < kCount && std::chrono::steady_clock::now() < give_up) {
    const std::size_t before = done + server->received().size();
    Settle();
    if (done + server->received().size() == before) Advance(kTimeout);  // lost: retransmit
  }
  EXPECT_EQ(done, kCount);
  s = client->stats();
  EXPECT_EQ(s.accepts, kCount);
  EXPECT_EQ(s.timeouts, 0u);
  EXPECT_EQ(s.outstanding, 0u);
  EXPECT_EQ(s.dropped.unknown_id + s.dropped.bad_authenticator + s.dropped.malformed, 0u);
}

TEST_F(RadiusClientTest, IdentifiersInFlightAreNeverReused) {
  auto server = Silent();
  auto client = MakeClient(Options({server->endpoint()}));
  for (int i = 0; i < 256; ++i) client->Send(Request(), [](Reply) {});
  ASSERT_TRUE(RunUntil([&] { return server->received().size() == 256; }));
  std::set<std::pair<std::uint16_t, std::uint8_t>> seen;  // (source port, identifier)
  for (const auto& r : server->received()) EXPECT_TRUE(seen.insert({r.from.port(), r.id}).second);
  EXPECT_EQ(client->stats().sockets, 1u);
  // The 257th takes a second socket.
  client->Send(Request(), [](Reply) {});
  EXPECT_EQ(client->stats().sockets, 2u);
}

TEST_F(RadiusClientTest, DestructorCancelsEverything) {
  auto server = Silent();
  bool called = false;
  {
    auto client = MakeClient(Options({server->endpoint()}));
    for (int i = 0; i < 3; ++i) client->Send(Request(), [&](Reply) { called = true; });
    EXPECT_EQ(loop_->pending_timers(), 3u);
  }
  EXPECT_EQ(loop_->pending_timers(), 0u);
  Advance(std::chrono::seconds(10));
  Settle();
  EXPECT_FALSE(called);
}

TEST_F(RadiusClientTest, CallbackMayDestroyTheClient) {
  auto server = Server([](const ServerRequest&) { return std::vector<Answer>{Answer{}, Answer{}}; });
  auto client = MakeClient(Options({server->endpoint()}));
  int calls = 0;
  for (int i = 0; i < 3; ++i) {
    client->Send(Request(), [&](Reply) {
      ++calls;
      client.reset();
    });
  }
  ASSERT_TRUE(RunUntil([&] { return calls == 1; }));
  Settle();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(loop_->pending_timers(), 0u);
}

TEST_F(RadiusClientTest, ReconfigureAppliesToNewRequests) {
  auto old_server = Silent();
  auto new_server = Server(Accept, "new secret");
  auto client = MakeClient(Options({old_server->endpoint()}));
  std::optional<Reply> old_reply, new_reply;
  client->Send(Request(), [&](Reply r) { old_reply = std::move(r); });

  auto o = Options({new_server->endpoint()});
  o.secret = crypto::SecureBytes::FromText("new secret");
  o.timeout = milliseconds(500);
  ASSERT_TRUE(client->Reconfigure(std::move(o)));
  client->Send(Request(), [&](Reply r) { new_reply = std::move(r); });
  ASSERT_TRUE(RunUntil([&] { return new_reply.has_value(); }));
  EXPECT_EQ(new_reply->outcome, Outcome::kAccept);
  EXPECT_TRUE(new_server->received().at(0).message_authenticator_ok);
  // The request in flight keeps its server and its 50 ms timeout.
  for (int i = 0; i < 4; ++i) Advance(kTimeout);
  ASSERT_TRUE(old_reply);
  EXPECT_EQ(old_reply->outcome, Outcome::kTimeout);
  const auto s = client->stats();
  ASSERT_EQ(s.servers.size(), 1u);
  EXPECT_EQ(s.servers[0].address, new_server->endpoint().ToString());

  std::string error;
  EXPECT_FALSE(client->Reconfigure(ClientOptions{}, &error));
  EXPECT_FALSE(error.empty());
}

TEST_F(RadiusClientTest, CreateRefusesOptionsThatCannotWork) {
  std::string error;
  EXPECT_FALSE(Client::Create(*loop_, ClientOptions{}, &error));
  EXPECT_NE(error.find("no server"), std::string::npos);
  auto o = Options({*io::Endpoint::Parse("127.0.0.1", 1812)});
  o.secret = crypto::SecureBytes();
  EXPECT_FALSE(Client::Create(*loop_, o, &error));
  o = Options({io::Endpoint()});
  EXPECT_FALSE(Client::Create(*loop_, o, &error));
  o = Options({*io::Endpoint::Parse("127.0.0.1", 1812)});
  o.timeout = milliseconds(0);
  EXPECT_FALSE(Client::Create(*loop_, o, &error));
}

}  // namespace
}  // namespace spigot::radius
