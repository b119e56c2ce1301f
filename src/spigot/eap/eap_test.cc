// EAP packets, the RFC 2759 9.2 and RFC 3079 3.5.3 test vectors, and a whole EAP-MSCHAPv2
// server conversation driven by a peer written from RFC 2759 (the interop test drives it with
// strongSwan's client).
#include "spigot/eap/eap.h"

#include <gtest/gtest.h>

#include <cstring>

#include "spigot/crypto/random.h"

namespace spigot::eap {
namespace {

Bytes FromHex(const char* hex) {
  Bytes out;
  for (const char* p = hex; *p != 0;) {
    if (*p == ' ') {
      ++p;
      continue;
    }
    out.push_back(static_cast<std::uint8_t>(std::stoi(std::string(p, 2), nullptr, 16)));
    p += 2;
  }
  return out;
}
std::span<const std::uint8_t> Str(const char* s) { return {reinterpret_cast<const std::uint8_t*>(s), std::strlen(s)}; }
Bytes Of(std::span<const std::uint8_t> s) { return Bytes(s.begin(), s.end()); }

TEST(EapPacket, ParseAndSerialize) {
  const Bytes identity_req{1, 7, 0, 5, 1};
  auto p = Parse(identity_req);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->code, Code::kRequest);
  EXPECT_EQ(p->identifier, 7);
  EXPECT_EQ(p->type, std::uint8_t(Type::kIdentity));
  EXPECT_TRUE(p->data.empty());
  EXPECT_EQ(Serialize(*p), identity_req);
  const Bytes success{3, 9, 0, 4};
  ASSERT_TRUE(Parse(success));
  EXPECT_EQ(Serialize(*Parse(success)), success);
}

TEST(EapPacket, MalformedIsRefused) {
  EXPECT_FALSE(Parse(Bytes{}));
  EXPECT_FALSE(Parse(Bytes{1, 1, 0}));
  EXPECT_FALSE(Parse(Bytes{1, 1, 0, 6, 1}));        // Length says more than there is
  EXPECT_FALSE(Parse(Bytes{1, 1, 0, 4, 1}));        // Length says less
  EXPECT_FALSE(Parse(Bytes{1, 1, 0, 4}));           // a request without a type
  EXPECT_FALSE(Parse(Bytes{3, 1, 0, 5, 0}));        // Success with data
  EXPECT_FALSE(Parse(Bytes{5, 1, 0, 4}));           // unknown code
  EXPECT_FALSE(Parse(Bytes{2, 1, 0, 3}));           // Length below the header
}

// RFC 2759 9.2.
TEST(MschapV2, Rfc2759TestVectors) {
  ASSERT_FALSE(LegacyProviderProblem()) << *LegacyProviderProblem();
  const auto auth_challenge = FromHex("5B5D7C7D7B3F2F3E3C2C602132262628");
  const auto peer_challenge = FromHex("21402324255E262A28295F2B3A337C7E");
  const auto hash = NtPasswordHash(Str("clientPass"));
  ASSERT_TRUE(hash);
  EXPECT_EQ(Of(hash->span()), FromHex("44EBBA8D5312B8D611474411F56989AE"));
  const auto ch = ChallengeHash(peer_challenge, auth_challenge, Str("User"));
  EXPECT_EQ(Bytes(ch.begin(), ch.end()), FromHex("D02E4386BCE91226"));
  // A domain in the user name is not hashed.
  const auto ch_domain = ChallengeHash(peer_challenge, auth_challenge, Str("EXAMPLE\\User"));
  EXPECT_EQ(Bytes(ch_domain.begin(), ch_domain.end()), FromHex("D02E4386BCE91226"));
  const auto nt = ChallengeResponse(ch, hash->span());
  ASSERT_TRUE(nt);
  EXPECT_EQ(Bytes(nt->begin(), nt->end()), FromHex("82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF"));
  EXPECT_EQ(AuthenticatorResponse(hash->span(), *nt, ch), "S=407A5589115FD0D6209F510FE9C04566932CDA56");
  // RFC 3079 3.5.3 (the same credentials): MasterKey FDECE3717A8C838CB388E527AE3CDD31 and the
  // 128-bit start keys derived from it; the MSK is MasterReceiveKey | MasterSendKey | 0^32.
  const auto msk = MschapV2Msk(hash->span(), *nt);
  ASSERT_TRUE(msk);
  ASSERT_EQ(msk->size(), 64u);
  EXPECT_EQ(Bytes(msk->span().begin() + 16, msk->span().begin() + 32), FromHex("8B7CDC149B993A1BA118CB153F56DCCB"));
  EXPECT_EQ(Bytes(msk->span().begin() + 32, msk->span().end()), Bytes(32, 0));
}

// A peer from RFC 2759: answers the identity request, then the challenge with `password`.
struct TestPeer {
  std::string user = "alice";
  std::string password;
  std::array<std::uint8_t, 16> peer_challenge{};
  Bytes nt_response;
  std::string expected_auth;

  Bytes Answer(const Bytes& request) {
    auto p = Parse(request);
    EXPECT_TRUE(p && p->code == Code::kRequest);
    if (p->type == std::uint8_t(Type::kIdentity)) {
      Packet r{Code::kResponse, p->identifier, std::uint8_t(Type::kIdentity), Bytes(user.begin(), user.end())};
      return Serialize(r);
    }
    EXPECT_EQ(p->type, std::uint8_t(Type::kMschapV2));
    if (p->data[0] == 1) {  // Challenge
      EXPECT_EQ(p->data[4], 16);
      const std::span<const std::uint8_t> challenge(p->data.data() + 5, 16);
      spigot::crypto::RandomBytes(peer_challenge);
      auto hash = NtPasswordHash(Str(password.c_str()));
      const auto ch = ChallengeHash(peer_challenge, challenge, Str(user.c_str()));
      auto nt = ChallengeResponse(ch, hash->span());
      nt_response.assign(nt->begin(), nt->end());
      expected_auth = *AuthenticatorResponse(hash->span(), *nt, ch);
      Bytes d{2, p->data[1], 0, 0, 49};
      d.insert(d.end(), peer_challenge.begin(), peer_challenge.end());
      d.insert(d.end(), 8, 0);
      d.insert(d.end(), nt_response.begin(), nt_response.end());
      d.push_back(0);
      d.insert(d.end(), user.begin(), user.end());
      d[3] = static_cast<std::uint8_t>(d.size());
      return Serialize(Packet{Code::kResponse, p->identifier, std::uint8_t(Type::kMschapV2), d});
    }
    EXPECT_EQ(p->data[0], 3);  // Success: check the authenticator response, acknowledge
    const std::string message(p->data.begin() + 4, p->data.end());
    EXPECT_EQ(message.substr(0, 42), expected_auth);
    return Serialize(Packet{Code::kResponse, p->identifier, std::uint8_t(Type::kMschapV2), Bytes{3}});
  }
};

std::shared_ptr<const Users> AliceUsers() {
  auto u = std::make_shared<Users>();
  const std::string pw = "alice's password";
  u->Add("alice", spigot::crypto::SecureBytes(Str(pw.c_str())));
  return u;
}

TEST(MschapV2Server, ALoginWithTheRightPasswordEndsInSuccessWithTheMsk) {
  MschapV2Server server(AliceUsers(), "gw");
  TestPeer peer;
  peer.password = "alice's password";
  Bytes req = server.Start();
  auto step = server.Process(peer.Answer(req));  // identity -> challenge
  ASSERT_EQ(step.status, MschapV2Server::Status::kContinue) << step.reason;
  EXPECT_EQ(server.identity(), "alice");
  step = server.Process(peer.Answer(step.reply));  // response -> success request
  ASSERT_EQ(step.status, MschapV2Server::Status::kContinue) << step.reason;
  step = server.Process(peer.Answer(step.reply));  // success ack -> EAP-Success
  ASSERT_EQ(step.status, MschapV2Server::Status::kSuccess) << step.reason;
  auto done = Parse(step.reply);
  ASSERT_TRUE(done);
  EXPECT_EQ(done->code, Code::kSuccess);
  auto hash = NtPasswordHash(Str("alice's password"));
  EXPECT_EQ(Of(server.msk().span()), Of(MschapV2Msk(hash->span(), peer.nt_response)->span()));
}

TEST(MschapV2Server, WrongPasswordAndUnknownUserFailAlikeWithoutNamingThem) {
  for (const char* user : {"alice", "mallory"}) {
    MschapV2Server server(AliceUsers(), "gw");
    TestPeer peer;
    peer.user = user;
    peer.password = "guess";
    auto step = server.Process(peer.Answer(server.Start()));
    ASSERT_EQ(step.status, MschapV2Server::Status::kContinue);
    step = server.Process(peer.Answer(step.reply));
    ASSERT_EQ(step.status, MschapV2Server::Status::kFailure);
    EXPECT_EQ(Parse(step.reply)->code, Code::kFailure);
    EXPECT_EQ(step.reason, "MS-CHAPv2 login refused (unknown user or wrong password)");
    EXPECT_EQ(step.reason.find(user), std::string::npos);
    // Nothing more is taken after the end.
    const Packet again{Code::kResponse, Parse(step.reply)->identifier, std::uint8_t(Type::kIdentity), Bytes{'a'}};
    EXPECT_EQ(server.Process(Serialize(again)).status, MschapV2Server::Status::kFailure);
  }
}

TEST(MschapV2Server, MalformedOrOutOfOrderInputFailsCleanly) {
  const std::vector<Bytes> bad = {
      {},                          // empty
      {2, 0, 0, 5, 1},             // wrong identifier (almost surely)
      {1, 0, 0, 5, 1},             // a request from the peer
      {2, 0, 0, 4},                // a response without a type
  };
  for (const auto& b : bad) {
    MschapV2Server server(AliceUsers(), "gw");
    Bytes req = server.Start();
    Bytes in = b;
    if (in.size() >= 2 && in[0] == 2 && in.size() == 5) in[1] = static_cast<std::uint8_t>(Parse(req)->identifier + 1);
    EXPECT_EQ(server.Process(in).status, MschapV2Server::Status::kFailure);
  }
  // A truncated MS-CHAPv2 Response after a good identity.
  MschapV2Server server(AliceUsers(), "gw");
  TestPeer peer;
  peer.password = "x";
  auto step = server.Process(peer.Answer(server.Start()));
  Bytes response = peer.Answer(step.reply);
  response.resize(20);
  response[2] = 0;
  response[3] = 20;
  step = server.Process(response);
  EXPECT_EQ(step.status, MschapV2Server::Status::kFailure);
  EXPECT_EQ(step.reason, "malformed MS-CHAPv2 Response");
}

TEST(MschapV2Client, LogsInAgainstTheServerAndBothHaveTheSameMsk) {
  MschapV2Server server(AliceUsers(), "gw");
  MschapV2Client client("alice", spigot::crypto::SecureBytes(Str("alice's password")));
  Bytes request = server.Start();
  MschapV2Server::Step s;
  for (int round = 0; round < 3; ++round) {
    auto c = client.Process(request);
    ASSERT_EQ(c.status, MschapV2Client::Status::kContinue) << c.reason;
    s = server.Process(c.reply);
    if (s.status != MschapV2Server::Status::kContinue) break;
    request = s.reply;
  }
  ASSERT_EQ(s.status, MschapV2Server::Status::kSuccess) << s.reason;
  auto done = client.Process(s.reply);  // EAP-Success
  ASSERT_EQ(done.status, MschapV2Client::Status::kSuccess) << done.reason;
  EXPECT_EQ(Of(client.msk().span()), Of(server.msk().span()));
}

TEST(MschapV2Client, WrongPasswordEndsInFailureOnBothSides) {
  MschapV2Server server(AliceUsers(), "gw");
  MschapV2Client client("alice", spigot::crypto::SecureBytes(Str("wrong")));
  auto c = client.Process(server.Start());
  auto s = server.Process(c.reply);
  c = client.Process(s.reply);
  s = server.Process(c.reply);
  ASSERT_EQ(s.status, MschapV2Server::Status::kFailure);
  EXPECT_EQ(client.Process(s.reply).status, MschapV2Client::Status::kFailure);  // EAP-Failure
}

TEST(MschapV2Client, ServerThatDoesNotKnowThePasswordCannotCompleteTheLogin) {
  // A false server: it answers the challenge with a made-up authenticator response, then
  // EAP-Success. The client refuses both.
  MschapV2Client client("alice", spigot::crypto::SecureBytes(Str("alice's password")));
  Bytes challenge{1, 1, 0, 0, 16};
  challenge.insert(challenge.end(), 16, 0x42);
  challenge.push_back('x');
  challenge[3] = static_cast<std::uint8_t>(challenge.size());
  auto c = client.Process(Serialize(Packet{Code::kRequest, 1, std::uint8_t(Type::kMschapV2), challenge}));
  ASSERT_EQ(c.status, MschapV2Client::Status::kContinue);
  const std::string fake = "S=0000000000000000000000000000000000000000 M=hi";
  Bytes success{3, 1, 0, 0};
  success.insert(success.end(), fake.begin(), fake.end());
  c = client.Process(Serialize(Packet{Code::kRequest, 2, std::uint8_t(Type::kMschapV2), success}));
  EXPECT_EQ(c.status, MschapV2Client::Status::kFailure);
  MschapV2Client early("alice", spigot::crypto::SecureBytes(Str("alice's password")));
  EXPECT_EQ(early.Process(Bytes{3, 5, 0, 4}).status, MschapV2Client::Status::kFailure);  // Success first
}

}  // namespace
}  // namespace spigot::eap

namespace spigot::eap {
namespace {

using ThrottleTime = LoginThrottle::TimePoint;
ThrottleTime At(double seconds) {
  return ThrottleTime{} + std::chrono::hours(1) + std::chrono::milliseconds(static_cast<long>(seconds * 1000));
}

TEST(LoginThrottle, BacksOffAfterFreeFailuresDoublingUpToTheCap) {
  LoginThrottle t({3, std::chrono::seconds(1), std::chrono::seconds(8), std::chrono::seconds(600), 100});
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(t.Check("alice", "192.0.2.7", At(i)));
    t.Note("alice", "192.0.2.7", false, At(i));
  }
  EXPECT_FALSE(t.Check("alice", "192.0.2.7", At(3)));  // three free failures
  t.Note("alice", "192.0.2.7", false, At(3));            // the 4th: 1 s
  EXPECT_TRUE(t.Check("alice", "192.0.2.7", At(3.5)));
  EXPECT_FALSE(t.Check("alice", "192.0.2.7", At(4)));
  t.Note("alice", "192.0.2.7", false, At(4));  // 2 s
  EXPECT_EQ(t.Check("alice", "192.0.2.7", At(4)), std::chrono::milliseconds(2000));
  t.Note("alice", "192.0.2.7", false, At(6));  // 4 s
  t.Note("alice", "192.0.2.7", false, At(10));  // 8 s
  t.Note("alice", "192.0.2.7", false, At(18));  // capped at 8 s
  EXPECT_EQ(t.Check("alice", "192.0.2.7", At(18)), std::chrono::milliseconds(8000));
  EXPECT_EQ(t.stats(At(18)).throttled, 3u);
  EXPECT_EQ(t.stats(At(18)).backing_off, 1u);
  EXPECT_EQ(t.stats(At(30)).backing_off, 0u);  // never longer than the cap
}

TEST(LoginThrottle, OtherAddressesAndUsersAreNotLockedOutAndSuccessClears) {
  LoginThrottle t({1, std::chrono::seconds(10), std::chrono::seconds(60), std::chrono::seconds(600), 100});
  t.Note("alice", "198.51.100.9", false, At(0));
  t.Note("alice", "198.51.100.9", false, At(1));
  EXPECT_TRUE(t.Check("alice", "198.51.100.9", At(2)));   // the attacker's address waits
  EXPECT_FALSE(t.Check("alice", "192.0.2.7", At(2)));     // alice at home does not
  EXPECT_FALSE(t.Check("bob", "198.51.100.9", At(2)));    // nor bob behind the same NAT
  t.Note("alice", "198.51.100.9", true, At(20));
  EXPECT_EQ(t.stats(At(20)).entries, 0u);
}

TEST(LoginThrottle, BoundedAndForgetful) {
  LoginThrottle t({3, std::chrono::seconds(1), std::chrono::seconds(60), std::chrono::seconds(600), 2});
  t.Note("a", "x", false, At(0));
  t.Note("b", "x", false, At(1));
  t.Note("c", "x", false, At(2));  // "a" goes
  EXPECT_EQ(t.stats(At(2)).entries, 2u);
  EXPECT_EQ(t.stats(At(2)).evicted, 1u);
  t.Note("d", "x", false, At(2 + 600));  // "b" and "c" are forgotten first, nothing evicted
  EXPECT_EQ(t.stats(At(602)).entries, 1u);
  EXPECT_EQ(t.stats(At(602)).evicted, 1u);
}

TEST(MschapV2Server, AThrottledUserIsRefusedBeforeThePasswordIsChecked) {
  int asked = 0;
  MschapV2Server server(AliceUsers(), "gw", [&](const std::string& user) -> std::optional<std::string> {
    ++asked;
    EXPECT_EQ(user, "alice");
    return std::string("back-off");
  });
  TestPeer peer;
  peer.password = "alice's password";  // even the right password waits
  auto step = server.Process(peer.Answer(server.Start()));
  step = server.Process(peer.Answer(step.reply));
  EXPECT_EQ(step.status, MschapV2Server::Status::kFailure);
  EXPECT_TRUE(step.throttled);
  EXPECT_FALSE(step.password_checked);
  EXPECT_EQ(step.reason, "back-off");
  EXPECT_EQ(asked, 1);
}

}  // namespace
}  // namespace spigot::eap
