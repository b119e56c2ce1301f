// IKE SAs driven end to end in process: handshake, CHILD SA keys that really interoperate
// through esp::Seal/Open, retries, failures, rekey, delete, retransmission.
#include "spigot/ike/ike_sa.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <thread>

#include "spigot/esp/esp.h"
#include "spigot/ike/traffic_selectors.h"
#include "spigot/pki/certificate.h"
#include "spigot/pki/signature.h"
#include "spigot/test_tools/hex.h"
#include "spigot/test_tools/ike_loopback.h"
#include "spigot/test_tools/test_pki.h"

namespace spigot::ike {
namespace {

using State = IkeSa::State;

TimePoint T(int seconds) { return TimePoint{} + std::chrono::hours(1) + std::chrono::seconds(seconds); }

// One packet from `from` to `to` through a CHILD SA pair must decrypt to what was sent.
void ExpectTrafficFlows(const ChildSaInfo& from, const ChildSaInfo& to) {
  ASSERT_EQ(from.spi_out, to.spi_in);
  ASSERT_EQ(from.algs.suite, to.algs.suite);
  auto& mgr = crypto::ImbManager::ForThisThread();
  crypto::EspCipher seal, open;
  ASSERT_TRUE(seal.Init(mgr, from.algs.suite, from.keymat_out));
  ASSERT_TRUE(open.Init(mgr, to.algs.suite, to.keymat_in));
  std::vector<std::uint8_t> buf(esp::kSealHeadroom + 60 + esp::kSealTailroom);
  std::uint8_t* ip = buf.data() + esp::kSealHeadroom;
  ip[0] = 0x45;
  ip[3] = 60;
  esp::PacketView pkt{buf, esp::kSealHeadroom, 60};
  esp::OutboundState out{from.spi_out, from.algs.esn, 1};
  ASSERT_EQ(esp::Seal(mgr, seal, out, esp::kNextHeaderIpv4, pkt), esp::Status::kOk);
  esp::InboundState in{to.spi_in, esp::ReplayWindow(1024, to.algs.esn)};
  std::uint8_t nh;
  ASSERT_EQ(esp::Open(mgr, open, in, pkt, nh), esp::Status::kOk);
  EXPECT_EQ(pkt.length, 60u);
}

struct Suites {
  const char* ike;
  const char* esp;
};

class Handshake : public ::testing::TestWithParam<Suites> {};

TEST_P(Handshake, EstablishesAndChildKeysInteroperate) {
  LoopbackPair pair(TestConnection(true, GetParam().ike, GetParam().esp),
                    TestConnection(false, GetParam().ike, GetParam().esp));
  pair.initiator->Initiate(T(0));
  pair.Pump(T(0));
  ASSERT_TRUE(pair.responder);
  EXPECT_EQ(pair.initiator->state(), State::kEstablished) << pair.initiator->failure();
  EXPECT_EQ(pair.responder->state(), State::kEstablished) << pair.responder->failure();
  ASSERT_EQ(pair.ihost.installed.size(), 1u);
  ASSERT_EQ(pair.rhost.installed.size(), 1u);
  const ChildSaInfo& i = pair.ihost.installed.begin()->second;
  const ChildSaInfo& r = pair.rhost.installed.begin()->second;
  EXPECT_EQ(i.spi_in, r.spi_out);
  EXPECT_EQ(i.spi_out, r.spi_in);
  ExpectTrafficFlows(i, r);
  ExpectTrafficFlows(r, i);
  EXPECT_EQ(i.local_ts, r.remote_ts);
  EXPECT_EQ(i.remote_ts, r.local_ts);
}

INSTANTIATE_TEST_SUITE_P(
    Proposals, Handshake,
    ::testing::Values(Suites{"aes128gcm16-prfsha256-x25519", "aes128gcm16"},
                      Suites{"aes256-sha256-ecp256", "aes256-sha256"},
                      Suites{"chacha20poly1305-prfsha512-x25519", "chacha20poly1305"},
                      Suites{"aes256gcm16-prfsha384-ecp256", "aes256gcm16-esn"},
                      Suites{"aes128-sha256-x25519", "aes128-sha256"}));

TEST(IkeSa, WrongPskFailsCleanlyOnBothSides) {
  auto iconn = TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  const char* wrong = "wrong!";
  iconn->psk = crypto::SecureBytes(std::span<const std::uint8_t>(
      reinterpret_cast<const std::uint8_t*>(wrong), 6));
  LoopbackPair pair(iconn, TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16"));
  pair.initiator->Initiate(T(0));
  pair.Pump(T(0));
  EXPECT_EQ(pair.initiator->state(), State::kDead);
  EXPECT_EQ(pair.initiator->failure(), "peer: AUTHENTICATION_FAILED");
  EXPECT_FALSE(pair.responder) << "the responder kept a failed IKE SA";
  EXPECT_EQ(pair.rcounters.auth_failures, 1u);
  EXPECT_TRUE(pair.ihost.installed.empty());
  EXPECT_TRUE(pair.rhost.installed.empty());
  EXPECT_TRUE(pair.ihost.live_spis.empty()) << "the initiator's reserved SPI leaked";
}

TEST(IkeSa, InvalidKePayloadMakesTheInitiatorRetryWithTheAskedGroup) {
  LoopbackPair pair(TestConnection(true, "aes128gcm16-prfsha256-ecp256-x25519", "aes128gcm16"),
                    TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16"));
  pair.initiator->Initiate(T(0));
  pair.Pump(T(0));
  EXPECT_EQ(pair.initiator->state(), State::kEstablished) << pair.initiator->failure();
  ASSERT_TRUE(pair.initiator->algorithms());
  EXPECT_EQ(pair.initiator->algorithms()->dh_group, 31);
}

TEST(IkeSa, NoProposalChosen) {
  LoopbackPair pair(TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16"),
                    TestConnection(false, "aes256-sha256-ecp256", "aes128gcm16"));
  pair.initiator->Initiate(T(0));
  pair.Pump(T(0));
  EXPECT_EQ(pair.initiator->state(), State::kDead);
  EXPECT_EQ(pair.initiator->failure(), "peer refused IKE_SA_INIT: NO_PROPOSAL_CHOSEN");
}

TEST(IkeSa, ChildProposalMismatchKeepsTheIkeSa) {
  LoopbackPair pair(TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16"),
                    TestConnection(false, "aes128gcm16-prfsha256-x25519", "chacha20poly1305"));
  pair.initiator->Initiate(T(0));
  pair.Pump(T(0));
  EXPECT_EQ(pair.initiator->state(), State::kEstablished);
  EXPECT_EQ(pair.responder->state(), State::kEstablished);
  EXPECT_TRUE(pair.ihost.installed.empty());
  EXPECT_TRUE(pair.ihost.live_spis.empty());
  EXPECT_EQ(pair.initiator->failure(), "first CHILD SA refused by peer: NO_PROPOSAL_CHOSEN");
}

TEST(IkeSa, TrafficSelectorsAreNarrowedOrRefused) {
  auto rconn = TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  rconn->remote_ts = {*SelectorFromCidr("192.0.2.128/25")};
  LoopbackPair pair(TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16"), rconn);
  pair.initiator->Initiate(T(0));
  pair.Pump(T(0));
  ASSERT_EQ(pair.ihost.installed.size(), 1u);
  EXPECT_EQ(ToString(pair.ihost.installed.begin()->second.local_ts[0]), "192.0.2.128/25");

  auto disjoint = TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  disjoint->remote_ts = {*SelectorFromCidr("203.0.113.0/24")};
  LoopbackPair pair2(TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16"), disjoint);
  pair2.initiator->Initiate(T(0));
  pair2.Pump(T(0));
  EXPECT_EQ(pair2.initiator->state(), State::kEstablished);
  EXPECT_TRUE(pair2.ihost.installed.empty());
  EXPECT_EQ(pair2.initiator->failure(), "first CHILD SA refused by peer: TS_UNACCEPTABLE");
}

TEST(IkeSa, SpiPoolExhaustionRefusesTheChildWithTemporaryFailure) {
  LoopbackPair pair(TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16"),
                    TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16"));
  pair.rhost.spi_limit = 0;
  pair.initiator->Initiate(T(0));
  pair.Pump(T(0));
  EXPECT_EQ(pair.initiator->state(), State::kEstablished);
  EXPECT_EQ(pair.initiator->failure(), "first CHILD SA refused by peer: TEMPORARY_FAILURE");
  EXPECT_EQ(pair.rcounters.child_failures, 1u);
}

// RFC 7296 2.6 under a login storm: one copy of the initiator's IKE_SA_INIT (A) is asked for
// a cookie while another copy is answered. The initiator retries with the cookie (B), then
// takes the answer to A for the answer to B and signs B. The responder must check AUTH
// against the request the initiator sent last (B), and the initiator must not make a third
// version of its request for a stale COOKIE answer carrying the cookie it already sends.
TEST(IkeSa, CookieRetryCrossingAnAnsweredCopyStillAuthenticates) {
  LoopbackPair pair(TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16"),
                    TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16"));
  pair.initiator->Initiate(T(0));
  ASSERT_EQ(pair.rhost.inbox.size(), 1u);
  const Bytes a = pair.rhost.inbox.front();
  pair.rhost.inbox.pop_front();
  Header h;
  ASSERT_TRUE(ParseHeader(a, h));
  auto cookie_answer = [&] {
    Message m;
    m.header = Header{h.spi_i, 0, PayloadType::kNone, kVersion, Exchange::kIkeSaInit, kFlagResponse, 0, 0};
    m.payloads.push_back({PayloadType::kNotify,
                          NotifyPayload{ProtocolId::kNone, {}, NotifyType::kCookie, Bytes{1, 2, 3, 4, 5, 6, 7, 8}}});
    return Serialize(m, nullptr);
  };
  pair.initiator->Receive(cookie_answer(), T(0));  // a copy of A was asked for a cookie
  ASSERT_EQ(pair.rhost.inbox.size(), 1u);
  const Bytes b = pair.rhost.inbox.front();
  EXPECT_NE(a, b);
  // Another copy of A meets the cookie demand: the same cookie, a stale answer. Ignored.
  pair.initiator->Receive(cookie_answer(), T(0));
  EXPECT_EQ(pair.rhost.inbox.size(), 1u) << "a stale COOKIE answer made the initiator send again";
  EXPECT_NE(pair.initiator->state(), State::kDead);
  // The responder answered a copy of A (no cookie mode at that moment), then sees B.
  pair.rhost.inbox.push_front(a);
  pair.Pump(T(0));
  EXPECT_EQ(pair.initiator->state(), State::kEstablished) << pair.initiator->failure();
  ASSERT_NE(pair.responder, nullptr);
  EXPECT_EQ(pair.responder->state(), State::kEstablished) << pair.responder->failure();
  EXPECT_EQ(pair.rcounters.auth_failures, 0u);
}

class Established : public ::testing::Test {
 protected:
  void SetUp() override {
    pair_ = std::make_unique<LoopbackPair>(
        TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16-x25519"),
        TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16-x25519"));
    pair_->initiator->Initiate(T(0));
    pair_->Pump(T(0));
    ASSERT_EQ(pair_->initiator->state(), State::kEstablished);
    ASSERT_EQ(pair_->ihost.installed.size(), 1u);
  }
  IkeSa& Side(bool initiator) { return initiator ? *pair_->initiator : *pair_->responder; }
  LoopbackHost& Host(bool initiator) { return initiator ? pair_->ihost : pair_->rhost; }
  std::unique_ptr<LoopbackPair> pair_;
};

TEST_F(Established, ChildRekeyFromEitherSideIsMakeBeforeBreak) {
  for (bool from_initiator : {true, false}) {
    IkeSa& sa = Side(from_initiator);
    const std::uint32_t old_in = Host(from_initiator).installed.begin()->first;
    ASSERT_TRUE(sa.RekeyChild(old_in, T(10)));
    // The request is out; the old SA is still installed on both sides.
    EXPECT_EQ(Host(from_initiator).installed.count(old_in), 1u);
    pair_->Pump(T(10));
    ASSERT_EQ(pair_->ihost.installed.size(), 1u) << "old CHILD SA not deleted after rekey";
    ASSERT_EQ(pair_->rhost.installed.size(), 1u);
    EXPECT_EQ(Host(from_initiator).installed.count(old_in), 0u);
    const ChildSaInfo& i = pair_->ihost.installed.begin()->second;
    const ChildSaInfo& r = pair_->rhost.installed.begin()->second;
    EXPECT_EQ(i.algs.dh_group, 31);  // PFS
    ExpectTrafficFlows(i, r);
    ExpectTrafficFlows(r, i);
  }
}

TEST_F(Established, IkeRekeyFromEitherSideMovesTheChildSas) {
  for (bool from_initiator : {true, false}) {
    const std::uint64_t old_i = pair_->initiator->spi_i(), old_r = pair_->initiator->spi_r();
    const auto children = pair_->ihost.installed;
    ASSERT_TRUE(Side(from_initiator).RekeyIke(T(10)));
    pair_->Pump(T(10));
    IkeSa& i = *pair_->initiator;
    IkeSa& r = *pair_->responder;
    EXPECT_EQ(i.state(), State::kEstablished);
    EXPECT_EQ(r.state(), State::kEstablished);
    EXPECT_EQ(i.spi_i(), r.spi_i());
    EXPECT_EQ(i.spi_r(), r.spi_r());
    EXPECT_NE(i.spi_i(), old_i);
    EXPECT_NE(i.spi_r(), old_r);
    // The rekey's initiator is the new SA's initiator.
    EXPECT_EQ(i.role(), from_initiator ? IkeSa::Role::kInitiator : IkeSa::Role::kResponder);
    EXPECT_EQ(i.children().size(), 1u);
    EXPECT_EQ(r.children().size(), 1u);
    EXPECT_EQ(pair_->ihost.installed.size(), children.size()) << "CHILD SAs lost in the IKE rekey";
    for (auto& old : pair_->ihost.retired) EXPECT_EQ(old->state(), State::kDead);
    for (auto& old : pair_->rhost.retired) EXPECT_EQ(old->state(), State::kDead);
    // The new IKE SA works: rekey a CHILD SA through it.
    ASSERT_TRUE(i.RekeyChild(i.children()[0].spi_in, T(11)));
    pair_->Pump(T(11));
    ASSERT_EQ(pair_->ihost.installed.size(), 1u);
    ExpectTrafficFlows(pair_->ihost.installed.begin()->second, pair_->rhost.installed.begin()->second);
  }
}

// A CHILD rekey queued behind an IKE rekey is carried out by the new IKE SA, from either side.
TEST_F(Established, ChildRekeyQueuedBehindAnIkeRekeyIsNotLost) {
  for (bool from_initiator : {true, false}) {
    IkeSa& sa = Side(from_initiator);
    const std::uint32_t old_child = Host(from_initiator).installed.begin()->first;
    ASSERT_TRUE(sa.RekeyIke(T(10)));
    ASSERT_TRUE(sa.RekeyChild(old_child, T(10)));  // waits behind the IKE rekey
    pair_->Pump(T(10));
    IkeSa& i = *pair_->initiator;
    EXPECT_EQ(i.state(), State::kEstablished);
    ASSERT_EQ(pair_->ihost.installed.size(), 1u);
    ASSERT_EQ(pair_->rhost.installed.size(), 1u);
    EXPECT_EQ(Host(from_initiator).installed.count(old_child), 0u) << "the queued CHILD rekey was lost";
    ExpectTrafficFlows(pair_->ihost.installed.begin()->second, pair_->rhost.installed.begin()->second);
  }
}

// RFC 7296 2.8.1: both sides rekey the same CHILD SA at once. Each ends up with the other's
// new SA too; the one created with the lowest nonce is closed by its creator, so exactly one
// pair remains and it carries traffic.
TEST_F(Established, SimultaneousChildRekeyLeavesOnePair) {
  for (int round = 0; round < 8; ++round) {
    const std::uint32_t i_old = pair_->ihost.installed.begin()->first;
    const std::uint32_t r_old = pair_->rhost.installed.begin()->first;
    ASSERT_TRUE(pair_->initiator->RekeyChild(i_old, T(10 + round)));
    ASSERT_TRUE(pair_->responder->RekeyChild(r_old, T(10 + round)));
    pair_->Pump(T(10 + round));
    ASSERT_EQ(pair_->ihost.installed.size(), 1u) << "round " << round;
    ASSERT_EQ(pair_->rhost.installed.size(), 1u) << "round " << round;
    EXPECT_EQ(pair_->ihost.installed.count(i_old), 0u);
    ExpectTrafficFlows(pair_->ihost.installed.begin()->second, pair_->rhost.installed.begin()->second);
    ExpectTrafficFlows(pair_->rhost.installed.begin()->second, pair_->ihost.installed.begin()->second);
  }
}

// The IKE SAs of a host that are not dead: the current one and any rekey left beside it.
std::vector<IkeSa*> LiveIkeSas(LoopbackHost& h) {
  std::vector<IkeSa*> live;
  if (*h.current && (*h.current)->state() != State::kDead) live.push_back(h.current->get());
  for (auto& r : h.retired) {
    if (r->state() != State::kDead) live.push_back(r.get());
  }
  return live;
}

// The IKE SA is deleted (spigot terminate) while its rekey is in flight, from either side: the
// rekey completes, and the new IKE SA is deleted too, with the CHILD SAs it took over — the
// terminate is not undone by the rekey.
TEST_F(Established, DeleteDuringAnIkeRekeyDeletesTheSuccessorToo) {
  for (bool from_initiator : {true, false}) {
    SetUp();
    IkeSa& sa = Side(from_initiator);
    ASSERT_TRUE(sa.RekeyIke(T(10)));
    ASSERT_TRUE(pair_->initiator->Delete(T(10)));  // the initiator's operator, either way
    pair_->Pump(T(10));
    for (LoopbackHost* h : {&pair_->ihost, &pair_->rhost}) {
      EXPECT_TRUE(LiveIkeSas(*h).empty()) << (from_initiator ? "our rekey" : "the peer's rekey");
      EXPECT_TRUE(h->installed.empty()) << "CHILD SAs left after the terminate";
    }
  }
}

// The inbound SPIs of the CHILD SAs a host has installed.
std::vector<std::uint32_t> InboundSpis(const LoopbackHost& h) {
  std::vector<std::uint32_t> spis;
  for (const auto& [spi, child] : h.installed) spis.push_back(spi);
  return spis;
}

// RFC 7296 2.8.2: both sides rekey the IKE SA at the same moment. Each answers the other's
// rekey, so two new IKE SAs exist; the one created with the lowest of the four nonces is
// deleted by its creator, the other one keeps every CHILD SA, and the old one is deleted by the
// survivor's creator. The nonces are random, so over the rounds either side's SA survives.
TEST_F(Established, SimultaneousIkeRekeyLeavesOneIkeSaWithAllChildSas) {
  ASSERT_TRUE(pair_->initiator->CreateChild(T(1)));
  pair_->Pump(T(1));
  ASSERT_EQ(pair_->ihost.installed.size(), 2u);
  constexpr int kRounds = 24;
  for (int round = 0; round < kRounds; ++round) {
    const auto children_i = InboundSpis(pair_->ihost);
    const std::uint64_t old_i = pair_->initiator->spi_i();
    ASSERT_TRUE(pair_->initiator->RekeyIke(T(10 + round)));
    ASSERT_TRUE(pair_->responder->RekeyIke(T(10 + round)));
    pair_->Pump(T(10 + round));
    const auto live_i = LiveIkeSas(pair_->ihost);
    const auto live_r = LiveIkeSas(pair_->rhost);
    ASSERT_EQ(live_i.size(), 1u) << "round " << round;
    ASSERT_EQ(live_r.size(), 1u) << "round " << round;
    IkeSa& i = *pair_->initiator;
    IkeSa& r = *pair_->responder;
    ASSERT_EQ(live_i[0], &i) << "the survivor is not the current IKE SA";
    ASSERT_EQ(live_r[0], &r);
    EXPECT_EQ(i.state(), State::kEstablished);
    EXPECT_EQ(i.spi_i(), r.spi_i());
    EXPECT_EQ(i.spi_r(), r.spi_r());
    EXPECT_NE(i.spi_i(), old_i);
    EXPECT_EQ(i.children().size(), 2u) << "round " << round;
    EXPECT_EQ(r.children().size(), 2u);
    EXPECT_EQ(InboundSpis(pair_->ihost), children_i) << "a CHILD SA was lost or replaced";
    EXPECT_EQ(pair_->icounters.ike_rekey_collisions, static_cast<std::uint64_t>(round + 1));
    EXPECT_EQ(pair_->rcounters.ike_rekey_collisions, static_cast<std::uint64_t>(round + 1));
    // Exactly one side created the redundant SA.
    EXPECT_EQ(pair_->icounters.ike_rekey_collisions_ours_redundant +
                  pair_->rcounters.ike_rekey_collisions_ours_redundant,
              static_cast<std::uint64_t>(round + 1));
    EXPECT_EQ(pair_->icounters.rekey_retries + pair_->rcounters.rekey_retries, 0u);
  }
  // Both outcomes were seen (each has probability 1/2 per round: all 24 alike is ~1e-7).
  EXPECT_GT(pair_->icounters.ike_rekey_collisions_ours_redundant, 0u);
  EXPECT_GT(pair_->rcounters.ike_rekey_collisions_ours_redundant, 0u);
  // The survivor works: a CHILD rekey through it, with traffic on the result.
  IkeSa& i = *pair_->initiator;
  ASSERT_TRUE(i.RekeyChild(i.children()[0].spi_in, T(50)));
  pair_->Pump(T(50));
  ASSERT_EQ(pair_->ihost.installed.size(), 2u);
  for (const auto& [spi, child] : pair_->ihost.installed) {
    const auto peer = std::find_if(pair_->rhost.installed.begin(), pair_->rhost.installed.end(),
                                   [&](const auto& e) { return e.second.spi_out == spi; });
    ASSERT_NE(peer, pair_->rhost.installed.end());
    ExpectTrafficFlows(child, peer->second);
  }
}

// Our rekey's response is lost. The peer resolves the collision first; we resolve it when
// the retransmitted request is answered, or, if the peer's IKE SA won, when the peer deletes
// the old IKE SA — then we never learn of ours, and the peer deletes that orphan itself after
// a grace period. Either way one IKE SA is left on each side, the same one, with the CHILD SA.
TEST_F(Established, SimultaneousIkeRekeyWithOurResponseLost) {
  TimePoint now = T(10);
  for (int round = 0; round < 16; ++round) {
    const auto children_i = InboundSpis(pair_->ihost);
    ASSERT_TRUE(pair_->initiator->RekeyIke(now));
    ASSERT_TRUE(pair_->responder->RekeyIke(now));
    ASSERT_EQ(pair_->rhost.inbox.size(), 1u);
    ASSERT_EQ(pair_->ihost.inbox.size(), 1u);
    pair_->rhost.drop_next_send = true;  // the responder's answer to the initiator's rekey
    pair_->Pump(now);
    for (int s = 0; s < 40; ++s) {
      now += std::chrono::seconds(1);
      for (LoopbackHost* h : {&pair_->ihost, &pair_->rhost}) {
        for (IkeSa* sa : LiveIkeSas(*h)) sa->Tick(now);
      }
      pair_->Pump(now);
    }
    const auto live_i = LiveIkeSas(pair_->ihost);
    const auto live_r = LiveIkeSas(pair_->rhost);
    ASSERT_EQ(live_i.size(), 1u) << "round " << round;
    ASSERT_EQ(live_r.size(), 1u) << "round " << round;
    EXPECT_EQ(live_i[0], pair_->initiator.get());
    EXPECT_EQ(live_i[0]->spi_i(), live_r[0]->spi_i());
    EXPECT_EQ(live_i[0]->spi_r(), live_r[0]->spi_r());
    EXPECT_EQ(live_i[0]->children().size(), 1u) << "round " << round;
    EXPECT_EQ(live_r[0]->children().size(), 1u);
    EXPECT_EQ(InboundSpis(pair_->ihost), children_i) << "a CHILD SA was lost";
  }
}

// A host that cannot keep two successors answers a colliding rekey with TEMPORARY_FAILURE, as
// before: the sides retry apart and the IKE SA is still rekeyed once, with its CHILD SA.
TEST_F(Established, SimultaneousIkeRekeyWithoutCandidatesRetriesApart) {
  pair_->ihost.keeps_rekey_candidates = false;
  pair_->rhost.keeps_rekey_candidates = false;
  const std::uint64_t old_i = pair_->initiator->spi_i();
  ASSERT_TRUE(pair_->initiator->RekeyIke(T(10)));
  ASSERT_TRUE(pair_->responder->RekeyIke(T(10)));
  pair_->Pump(T(10));
  // 10 ms steps over 30 s: the retries (2-5 s, drawn to the millisecond) meet again only if
  // they fall in the same step, which is rare and then just means another retry.
  for (int ms = 10; ms <= 30000; ms += 10) {
    const TimePoint now = T(10) + std::chrono::milliseconds(ms);
    pair_->initiator->Tick(now);
    pair_->responder->Tick(now);
    pair_->Pump(now);
  }
  ASSERT_EQ(LiveIkeSas(pair_->ihost).size(), 1u);
  ASSERT_EQ(LiveIkeSas(pair_->rhost).size(), 1u);
  EXPECT_NE(pair_->initiator->spi_i(), old_i);
  EXPECT_EQ(pair_->initiator->children().size(), 1u);
  EXPECT_EQ(pair_->icounters.ike_rekey_collisions, 0u);
  EXPECT_GT(pair_->icounters.rekey_retries + pair_->rcounters.rekey_retries, 0u);
}

Address RebindAddress(std::uint8_t last, std::uint16_t port) {
  Address a;
  a.family = 4;
  a.ip[0] = 192, a.ip[1] = 0, a.ip[2] = 2, a.ip[3] = last;
  a.port = port;
  return a;
}

// A connection without MOBIKE: 2.23's following of NAT mappings applies only then (RFC 4555 3.5).
std::shared_ptr<ConnectionParams> NoMobike(bool initiator) {
  auto c = TestConnection(initiator, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  c->mobike = false;
  return c;
}

// Behind a NAT: the initiator thinks it is 192.0.2.77; the responder sees 192.0.2.1.
void EstablishBehindNat(LoopbackPair& pair) {
  pair.initiator = std::make_unique<IkeSa>(pair.ihost, pair.icounters, IkeSa::Role::kInitiator,
                                           TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16"),
                                           RebindAddress(77, 500), RebindAddress(2, 500), 0x1234, 0);
  pair.initiator->Initiate(T(0));
  pair.Pump(T(0));
}

// RFC 7296 2.23: the initiator is behind a NAT (its own address is not the one the responder
// sees), and the NAT's mapping changes. The responder follows an authentic new message to the
// new address and port; a forged one (bad ICV) or a replayed one changes nothing.
TEST(IkeSaNat, ResponderFollowsOnlyAnAuthenticNewMessage) {
  LoopbackPair pair(TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16"), NoMobike(false));
  EstablishBehindNat(pair);
  ASSERT_EQ(pair.initiator->state(), State::kEstablished);
  IkeSa& r = *pair.responder;
  ASSERT_TRUE(r.nat_detected());
  const Address original = r.remote();
  const Address moved = RebindAddress(1, 61000);

  // A liveness check from the initiator, intercepted on its way.
  ASSERT_TRUE(pair.initiator->CheckLiveness(T(1)));
  ASSERT_EQ(pair.rhost.inbox.size(), 1u);
  const Bytes request = pair.rhost.inbox.front();
  pair.rhost.inbox.clear();

  // Forged: the same message with its ICV broken, from the new address.
  Bytes forged = request;
  forged.back() ^= 0x01;
  const auto invalid_before = pair.rcounters.invalid_messages;
  r.set_source(moved);
  r.Receive(forged, T(1));
  EXPECT_EQ(r.remote(), original) << "a forged datagram moved the IKE SA";
  EXPECT_EQ(pair.rcounters.invalid_messages, invalid_before + 1);

  // Authentic and new: followed, counted.
  r.set_source(moved);
  r.Receive(request, T(1));
  EXPECT_EQ(r.remote(), moved);
  EXPECT_EQ(pair.rcounters.peer_moved, 1u);
  pair.Pump(T(1));

  // Replayed from the old address: answered from the cache, the SA stays where it went.
  r.set_source(original);
  r.Receive(request, T(2));
  EXPECT_EQ(r.remote(), moved) << "a replayed datagram moved the IKE SA back";
  EXPECT_EQ(pair.rcounters.peer_moved, 1u);
}

// No NAT between the peers (and no MOBIKE): an authentic message from another address is
// answered, but the IKE SA does not move (the peer would need MOBIKE for that).
TEST(IkeSaNat, WithoutNatTheIkeSaDoesNotFollowTheSource) {
  LoopbackPair pair(NoMobike(true), NoMobike(false));
  pair.initiator->Initiate(T(0));
  pair.Pump(T(0));
  ASSERT_EQ(pair.initiator->state(), State::kEstablished);
  IkeSa& r = *pair.responder;
  ASSERT_FALSE(r.nat_detected());
  const Address original = r.remote();
  ASSERT_TRUE(pair.initiator->CheckLiveness(T(1)));
  ASSERT_EQ(pair.rhost.inbox.size(), 1u);
  const Bytes request = pair.rhost.inbox.front();
  pair.rhost.inbox.clear();
  r.set_source(RebindAddress(1, 61000));
  r.Receive(request, T(1));
  EXPECT_EQ(r.remote(), original);
  EXPECT_EQ(pair.rcounters.peer_move_ignored, 1u);
  EXPECT_EQ(pair.rcounters.peer_moved, 0u);
  EXPECT_EQ(pair.ihost.inbox.size(), 1u) << "not answered";
}

// 2.23 for ESP: the data path reports an authentic, newest ESP packet from a new source. The
// responder (not behind a NAT, the initiator behind one) follows it, and the host moves the
// CHILD SAs (PeerMoved); the initiator, behind the NAT itself, never follows such a report.
TEST(IkeSaNat, EspFromANewSourceMovesOnlyTheSideNotBehindTheNat) {
  LoopbackPair pair(TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16"), NoMobike(false));
  EstablishBehindNat(pair);
  ASSERT_EQ(pair.initiator->state(), State::kEstablished);
  IkeSa& r = *pair.responder;
  IkeSa& i = *pair.initiator;
  const Address moved = RebindAddress(1, 61000);
  EXPECT_FALSE(r.FollowEspSource(r.remote())) << "the same source is no move";
  EXPECT_TRUE(r.FollowEspSource(moved));
  EXPECT_EQ(r.remote(), moved);
  EXPECT_EQ(pair.rcounters.peer_moved, 1u);

  const Address before = i.remote();
  EXPECT_FALSE(i.FollowEspSource(RebindAddress(9, 4500)));
  EXPECT_EQ(i.remote(), before) << "the side behind the NAT moved on one packet";
  EXPECT_EQ(pair.icounters.peer_move_ignored, 1u);
}

// RFC 4555: both sides announce MOBIKE_SUPPORTED in IKE_AUTH. The initiator moves (no NAT):
// its UPDATE_SA_ADDRESSES from the new address moves the responder's IKE SA there, with NAT
// detection anew and a COOKIE2 echoed; a forged one moves nothing, and ESP from elsewhere does
// not move a MOBIKE SA (4555 3.5: no 2.23 updates).
TEST(IkeSaMobike, UpdateSaAddressesMovesTheResponder) {
  LoopbackPair pair(TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16"),
                    TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16"));
  pair.initiator->Initiate(T(0));
  pair.Pump(T(0));
  ASSERT_EQ(pair.initiator->state(), State::kEstablished);
  IkeSa& i = *pair.initiator;
  IkeSa& r = *pair.responder;
  ASSERT_TRUE(i.mobike());
  ASSERT_TRUE(r.mobike());
  EXPECT_EQ(pair.rcounters.mobike_negotiated, 1u);
  const Address original = r.remote();
  const Address moved = RebindAddress(9, 4500);
  EXPECT_FALSE(r.FollowEspSource(moved)) << "2.23 moved a MOBIKE SA";
  EXPECT_FALSE(r.UpdateSaAddresses(moved, T(1))) << "only the original initiator sends the update";

  ASSERT_TRUE(i.UpdateSaAddresses(moved, T(1)));
  ASSERT_EQ(pair.rhost.inbox.size(), 1u);
  const Bytes update = pair.rhost.inbox.front();
  pair.rhost.inbox.clear();
  Bytes forged = update;
  forged.back() ^= 0x01;
  r.set_source(RebindAddress(66, 4500));
  r.Receive(forged, T(1));
  EXPECT_EQ(r.remote(), original) << "a forged UPDATE_SA_ADDRESSES moved the IKE SA";
  r.set_source(moved);
  r.Receive(update, T(1));
  EXPECT_EQ(r.remote(), moved);
  EXPECT_EQ(pair.rcounters.mobike_updates, 1u);
  EXPECT_FALSE(r.nat_detected()) << "no NAT between the new addresses";
  // The answer, and then the return routability check of the new address (4555 3.5, 3.7): until
  // it has passed, the CHILD SAs send where they did.
  ASSERT_EQ(pair.ihost.inbox.size(), 2u) << "the update was not answered, or not checked";
  EXPECT_EQ(r.esp_remote(), original);
  EXPECT_TRUE(pair.rhost.esp_moves.empty()) << "ESP moved before the check";
  pair.Pump(T(1));
  EXPECT_EQ(pair.rcounters.mobike_rr_checks, 1u);
  EXPECT_EQ(pair.rcounters.mobike_rr_passed, 1u);
  EXPECT_EQ(r.esp_remote(), moved);
  ASSERT_EQ(pair.rhost.esp_moves.size(), 1u);
  EXPECT_EQ(pair.rhost.esp_moves[0], moved);
  EXPECT_FALSE(i.nat_detected());
  // The IKE SA carries on at the new address: a liveness check round trip.
  ASSERT_TRUE(i.CheckLiveness(T(2)));
  pair.Pump(T(2));
  EXPECT_EQ(i.state(), State::kEstablished);
  EXPECT_EQ(r.state(), State::kEstablished);
}

// A responder with MOBIKE off does not announce it, and ignores UPDATE_SA_ADDRESSES.
TEST(IkeSaMobike, OffOnTheResponderMeansNotNegotiated) {
  auto rconn = TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  rconn->mobike = false;
  LoopbackPair pair(TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16"), rconn);
  pair.initiator->Initiate(T(0));
  pair.Pump(T(0));
  ASSERT_EQ(pair.initiator->state(), State::kEstablished);
  EXPECT_FALSE(pair.initiator->mobike());
  EXPECT_FALSE(pair.responder->mobike());
  EXPECT_FALSE(pair.initiator->UpdateSaAddresses(RebindAddress(9, 4500), T(1)));
}

// A CHILD rekey the peer refuses (here: its SPI pool is full, TEMPORARY_FAILURE) is tried
// again 2-5 s later, before the hard lifetime, and succeeds once the peer can take it.
TEST(IkeSaLifetimes, RefusedChildRekeyIsRetriedBeforeTheHardLifetime) {
  auto iconn = TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  iconn->child_rekey_time = std::chrono::seconds(100);
  iconn->child_lifetime = std::chrono::seconds(200);
  iconn->rekey_jitter = 0;
  LoopbackPair pair(iconn, TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16"));
  pair.initiator->Initiate(T(0));
  pair.Pump(T(0));
  ASSERT_EQ(pair.ihost.installed.size(), 1u);
  const std::uint32_t first = pair.ihost.installed.begin()->first;
  pair.rhost.spi_limit = pair.rhost.live_spis.size();  // the peer's pool is full
  pair.initiator->Tick(T(100));  // soft lifetime: rekey, refused
  pair.Pump(T(100));
  EXPECT_EQ(pair.initiator->failure(), "CHILD SA refused by peer: TEMPORARY_FAILURE");
  EXPECT_EQ(pair.icounters.rekey_retries, 1u);
  ASSERT_EQ(pair.ihost.installed.count(first), 1u);
  const ChildSaInfo& c = pair.initiator->children()[0];
  EXPECT_GE(c.rekey_at, T(102));
  EXPECT_LE(c.rekey_at, T(105));
  // Still refused at the first retry: retried again.
  pair.initiator->Tick(T(105));
  pair.Pump(T(105));
  EXPECT_EQ(pair.icounters.rekey_retries, 2u);
  // The peer has room again: the next retry rekeys.
  pair.rhost.spi_limit = 1u << 20;
  pair.initiator->Tick(T(110));
  pair.Pump(T(110));
  ASSERT_EQ(pair.ihost.installed.size(), 1u);
  EXPECT_EQ(pair.ihost.installed.count(first), 0u) << "not rekeyed after the peer had room";
  ExpectTrafficFlows(pair.ihost.installed.begin()->second, pair.rhost.installed.begin()->second);
  // Near the hard lifetime there is no retry: the hard lifetime deletes the SA.
  const std::uint32_t second = pair.ihost.installed.begin()->first;
  pair.rhost.spi_limit = pair.rhost.live_spis.size();
  pair.initiator->Tick(T(110 + 100));  // soft lifetime of the new SA (installed at 110)
  pair.Pump(T(210));
  pair.initiator->Tick(T(309));
  pair.Pump(T(309));
  const auto retries = pair.icounters.rekey_retries;
  pair.initiator->Tick(T(310));  // hard lifetime: deleted
  pair.Pump(T(310));
  EXPECT_EQ(pair.ihost.installed.count(second), 0u);
  EXPECT_EQ(pair.icounters.rekey_retries, retries);
}

TEST(IkeSaLifetimes, SoftLifetimesRekeyWithJitterAndHardLifetimesDelete) {
  auto iconn = TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  iconn->child_rekey_time = std::chrono::seconds(100);
  iconn->child_lifetime = std::chrono::seconds(110);
  iconn->ike_rekey_time = std::chrono::seconds(1000);
  iconn->dpd_delay = std::chrono::seconds(0);
  auto rconn = TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  rconn->dpd_delay = std::chrono::seconds(0);
  LoopbackPair pair(iconn, rconn);
  pair.initiator->Initiate(T(0));
  pair.Pump(T(0));
  ASSERT_EQ(pair.ihost.installed.size(), 1u);
  const std::uint32_t first = pair.ihost.installed.begin()->first;
  // The soft deadline lies in [90 s, 100 s]: the jitter only ever shortens it.
  const TimePoint next = pair.initiator->NextDeadline();
  EXPECT_GE(next, T(90));
  EXPECT_LE(next, T(100));
  pair.initiator->Tick(T(89));
  pair.Pump(T(89));
  EXPECT_EQ(pair.ihost.installed.count(first), 1u) << "rekeyed before the soft lifetime";
  pair.initiator->Tick(T(100));
  pair.Pump(T(100));
  ASSERT_EQ(pair.ihost.installed.size(), 1u);
  EXPECT_EQ(pair.ihost.installed.count(first), 0u) << "not rekeyed at the soft lifetime";
  const std::uint64_t old_spi = pair.initiator->spi_i();
  pair.initiator->Tick(T(1000));
  pair.Pump(T(1000));
  EXPECT_NE(pair.initiator->spi_i(), old_spi) << "IKE SA not rekeyed at ike_rekey_time";
  EXPECT_EQ(pair.initiator->state(), State::kEstablished);

  // Hard lifetime without a successful rekey: the CHILD SA goes.
  pair.rhost.spi_limit = 0;  // the peer refuses the rekey
  const TimePoint later = T(1000) + std::chrono::seconds(120);
  pair.initiator->Tick(later);
  pair.Pump(later);
  pair.initiator->Tick(later + std::chrono::seconds(120));
  pair.Pump(later + std::chrono::seconds(120));
  EXPECT_TRUE(pair.ihost.installed.empty()) << "CHILD SA outlived its hard lifetime";
}

// A CHILD SA past its hard lifetime stays until the peer answers our DELETE; its expiry must
// not stay a deadline in the past, or a host that ticks what is due would tick it for ever.
TEST(IkeSaLifetimes, HardLifetimeIsADeadlineOnce) {
  auto iconn = TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  iconn->child_rekey_time = std::chrono::seconds(100);
  iconn->child_lifetime = std::chrono::seconds(110);
  iconn->dpd_delay = std::chrono::seconds(0);
  iconn->host_schedules_rekeys = true;  // no rekey of its own: the hard lifetime comes
  auto rconn = TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  rconn->dpd_delay = std::chrono::seconds(0);
  LoopbackPair pair(iconn, rconn);
  pair.initiator->Initiate(T(0));
  pair.Pump(T(0));
  ASSERT_EQ(pair.ihost.installed.size(), 1u);
  pair.initiator->Tick(T(111));  // the DELETE goes out; the answer is not delivered yet
  ASSERT_EQ(pair.ihost.installed.size(), 1u);
  EXPECT_GT(pair.initiator->NextDeadline(), T(111)) << "the expired CHILD SA is due again at once";
  pair.Pump(T(111));
  EXPECT_TRUE(pair.ihost.installed.empty());
}

TEST_F(Established, NewChildAndDeleteChild) {
  ASSERT_TRUE(pair_->responder->CreateChild(T(5)));
  pair_->Pump(T(5));
  ASSERT_EQ(pair_->ihost.installed.size(), 2u);
  ASSERT_EQ(pair_->rhost.installed.size(), 2u);
  const std::uint32_t first = pair_->ihost.installed.begin()->first;
  ASSERT_TRUE(pair_->initiator->DeleteChild(first, T(6)));
  pair_->Pump(T(6));
  EXPECT_EQ(pair_->ihost.installed.size(), 1u);
  EXPECT_EQ(pair_->rhost.installed.size(), 1u);
  EXPECT_EQ(pair_->ihost.installed.count(first), 0u);
}

// requests_queue_full counts requests refused because kMaxQueuedRequests already wait, and
// nothing else: a request for an unknown CHILD SA or on an SA that is not established is
// refused without it.
TEST_F(Established, OnlyAFullQueueCountsAsQueueFull) {
  IkeSa& sa = *pair_->initiator;
  EXPECT_FALSE(sa.RekeyChild(0xDEADBEEF, T(5)));
  EXPECT_FALSE(sa.DeleteChild(0xDEADBEEF, T(5)));
  EXPECT_EQ(pair_->icounters.requests_queue_full, 0u) << "an unknown CHILD SA counted as queue full";

  LoopbackPair fresh(TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16"),
                     TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16"));
  EXPECT_FALSE(fresh.initiator->CreateChild(T(5)));
  EXPECT_FALSE(fresh.initiator->RekeyIke(T(5)));
  EXPECT_EQ(fresh.icounters.requests_queue_full, 0u) << "a not-established SA counted as queue full";

  // One request goes out at once; kMaxQueuedRequests more wait; the next is refused and counted.
  for (std::size_t i = 0; i < 1 + IkeSa::kMaxQueuedRequests; ++i) ASSERT_TRUE(sa.CreateChild(T(6)));
  EXPECT_FALSE(sa.CreateChild(T(6)));
  EXPECT_EQ(pair_->icounters.requests_queue_full, 1u);
  pair_->ihost.inbox.clear();
  pair_->rhost.inbox.clear();
}

TEST_F(Established, DeleteIkeSaFromEitherSide) {
  ASSERT_TRUE(pair_->responder->Delete(T(5)));
  pair_->Pump(T(5));
  EXPECT_EQ(pair_->initiator->state(), State::kDead);
  EXPECT_EQ(pair_->responder->state(), State::kDead);
  EXPECT_TRUE(pair_->ihost.installed.empty());
  EXPECT_TRUE(pair_->rhost.installed.empty());
}

// IkeSaHost::Offload (issue 17): the DH of CREATE_CHILD_SA with PFS and of IKE rekeys on IKE
// workers, both roles. The hosts keep the work; RunOffloaded runs it on other threads and then
// resumes the SAs (found again by SPI: an SA gone meanwhile is not touched).
std::size_t RunOffloaded(LoopbackHost& h, TimePoint now) {
  std::vector<LoopbackHost::OffloadedWork> work = std::move(h.offloaded);
  h.offloaded.clear();
  std::vector<std::thread> threads;
  for (auto& w : work) threads.emplace_back(w.work);
  for (auto& t : threads) t.join();
  for (auto& w : work) {
    if (IkeSa* sa = h.Find(w.spi)) sa->ResumeOffloaded(now);
  }
  return work.size();
}

class Offloaded : public Established {
 protected:
  void SetUp() override {
    Established::SetUp();
    for (LoopbackHost* h : {&pair_->ihost, &pair_->rhost}) h->offload = {OffloadKind::kChildPfs, OffloadKind::kIkeRekey};
  }
  // Pumps and runs offloaded work until nothing moves.
  void Settle(TimePoint now) {
    for (int i = 0; i < 32; ++i) {
      pair_->Pump(now);
      if (RunOffloaded(pair_->ihost, now) + RunOffloaded(pair_->rhost, now) == 0 && pair_->ihost.inbox.empty() &&
          pair_->rhost.inbox.empty())
        return;
    }
    ADD_FAILURE() << "offloaded work does not settle";
  }
};

TEST_F(Offloaded, PfsChildRekeyStepByStepWithARetransmissionDuringTheWork) {
  IkeSa& i = *pair_->initiator;
  IkeSa& r = *pair_->responder;
  const std::uint32_t old_in = pair_->ihost.installed.begin()->first;
  // Our key pair first: nothing is sent before it is made.
  ASSERT_TRUE(i.RekeyChild(old_in, T(10)));
  EXPECT_TRUE(i.offloaded());
  EXPECT_TRUE(pair_->rhost.inbox.empty());
  ASSERT_EQ(pair_->ihost.offloaded.size(), 1u);
  EXPECT_EQ(pair_->ihost.offloaded[0].kind, OffloadKind::kChildPfs);
  i.Tick(T(10));  // no timer of ours starts a request meanwhile
  EXPECT_EQ(RunOffloaded(pair_->ihost, T(10)), 1u);
  EXPECT_EQ(pair_->rhost.inbox.size(), 1u) << "the request goes out once the key pair is made";
  // The responder's DH runs on a worker; the initiator's retransmission meanwhile is dropped,
  // counted, not answered twice.
  pair_->Pump(T(10));
  ASSERT_TRUE(r.offloaded());
  const std::uint64_t answered = pair_->rhost.sent;
  i.Tick(T(12));
  EXPECT_EQ(pair_->icounters.retransmits, 1u);
  pair_->Pump(T(12));
  EXPECT_EQ(pair_->rhost.sent, answered);
  EXPECT_EQ(pair_->rcounters.offload_retransmits, 1u);
  EXPECT_EQ(pair_->rhost.installed.size(), 1u) << "nothing installed before the DH is done";
  r.ResumeOffloaded(T(12));  // not run yet: nothing happens
  EXPECT_TRUE(r.offloaded());
  EXPECT_EQ(RunOffloaded(pair_->rhost, T(12)), 1u);
  EXPECT_EQ(pair_->rhost.sent, answered + 1) << "answered once";
  EXPECT_EQ(pair_->rhost.installed.size(), 2u);
  // The initiator finishes the response's DH on a worker too, without retransmitting meanwhile.
  pair_->Pump(T(12));
  ASSERT_TRUE(i.offloaded());
  EXPECT_EQ(i.NextDeadline(), TimePoint::max()) << "no retransmission while the response is finished";
  i.Tick(T(20));
  EXPECT_EQ(pair_->icounters.retransmits, 1u);
  EXPECT_EQ(RunOffloaded(pair_->ihost, T(20)), 1u);
  pair_->Pump(T(20));  // the DELETE of the old CHILD SA
  ASSERT_EQ(pair_->ihost.installed.size(), 1u);
  ASSERT_EQ(pair_->rhost.installed.size(), 1u);
  EXPECT_EQ(pair_->ihost.installed.count(old_in), 0u);
  EXPECT_EQ(pair_->ihost.installed.begin()->second.algs.dh_group, 31);
  ExpectTrafficFlows(pair_->ihost.installed.begin()->second, pair_->rhost.installed.begin()->second);
  ExpectTrafficFlows(pair_->rhost.installed.begin()->second, pair_->ihost.installed.begin()->second);
  EXPECT_EQ(pair_->icounters.child_pfs_offloaded, 2u);  // key pair, shared secret
  EXPECT_EQ(pair_->rcounters.child_pfs_offloaded, 1u);
  EXPECT_EQ(pair_->icounters.child_pfs_inline + pair_->rcounters.child_pfs_inline, 0u);
  EXPECT_EQ(pair_->icounters.child_failures + pair_->rcounters.child_failures, 0u);
}

TEST_F(Offloaded, RekeysFromEitherSideInOrder) {
  for (int round = 0; round < 3; ++round) {
    for (bool from_initiator : {true, false}) {
      const TimePoint now = T(10 + 10 * round + (from_initiator ? 0 : 5));
      IkeSa& sa = Side(from_initiator);
      const std::uint32_t old_child = Host(from_initiator).installed.begin()->first;
      // An IKE rekey and a CHILD rekey queued behind it: done in that order, by the new IKE SA.
      ASSERT_TRUE(sa.RekeyIke(now));
      ASSERT_TRUE(sa.RekeyChild(old_child, now));
      Settle(now);
      IkeSa& i = *pair_->initiator;
      IkeSa& r = *pair_->responder;
      ASSERT_EQ(i.state(), State::kEstablished) << i.failure();
      ASSERT_EQ(r.state(), State::kEstablished) << r.failure();
      EXPECT_EQ(i.spi_i(), r.spi_i());
      EXPECT_EQ(i.spi_r(), r.spi_r());
      ASSERT_EQ(pair_->ihost.installed.size(), 1u);
      ASSERT_EQ(pair_->rhost.installed.size(), 1u);
      EXPECT_EQ(Host(from_initiator).installed.count(old_child), 0u);
      ExpectTrafficFlows(pair_->ihost.installed.begin()->second, pair_->rhost.installed.begin()->second);
      for (auto& old : pair_->ihost.retired) EXPECT_EQ(old->state(), State::kDead);
      for (auto& old : pair_->rhost.retired) EXPECT_EQ(old->state(), State::kDead);
    }
  }
  // Each side: 3 IKE rekeys of its own (key pair, shared secret) and 3 of the peer's.
  EXPECT_EQ(pair_->icounters.ike_rekey_offloaded, 9u);
  EXPECT_EQ(pair_->rcounters.ike_rekey_offloaded, 9u);
  EXPECT_EQ(pair_->icounters.child_pfs_offloaded, 9u);
  EXPECT_EQ(pair_->rcounters.child_pfs_offloaded, 9u);
  EXPECT_EQ(pair_->icounters.ike_rekey_inline + pair_->rcounters.ike_rekey_inline, 0u);
  EXPECT_EQ(pair_->icounters.invalid_messages + pair_->rcounters.invalid_messages, 0u);
}

// What arrives for an SA while it works waits, in order: here the response to the responder's
// own liveness check, which came while it worked on the peer's PFS rekey.
TEST_F(Offloaded, DatagramsDuringTheWorkAreHandledAfterItInOrder) {
  pair_->ihost.offload.clear();
  IkeSa& i = *pair_->initiator;
  IkeSa& r = *pair_->responder;
  ASSERT_TRUE(r.CheckLiveness(T(10)));
  ASSERT_TRUE(i.RekeyChild(pair_->ihost.installed.begin()->first, T(10)));
  pair_->Pump(T(10));
  ASSERT_TRUE(r.offloaded());
  EXPECT_EQ(pair_->rcounters.offload_held, 1u);
  EXPECT_EQ(RunOffloaded(pair_->rhost, T(10)), 1u);
  EXPECT_FALSE(r.offloaded());
  pair_->Pump(T(10));
  ASSERT_EQ(pair_->ihost.installed.size(), 1u);
  ASSERT_EQ(pair_->rhost.installed.size(), 1u);
  // The liveness check was answered: nothing of the responder's is retransmitted later.
  r.Tick(T(15));
  EXPECT_EQ(pair_->rcounters.retransmits, 0u);
  EXPECT_EQ(r.state(), State::kEstablished);
  EXPECT_EQ(pair_->rcounters.offload_held_dropped, 0u);
}

// The SA dies, or is destroyed, while its DH runs: the work finishes on its own copies and its
// result goes nowhere.
TEST_F(Offloaded, SaGoneWhileItsWorkRuns) {
  pair_->ihost.offload.clear();
  ASSERT_TRUE(pair_->initiator->RekeyIke(T(10)));
  pair_->Pump(T(10));
  ASSERT_TRUE(pair_->responder->offloaded());
  const std::uint64_t sent = pair_->rhost.sent;
  pair_->responder->Replace(T(10));  // dies (the host's `unique` policy, say)
  EXPECT_EQ(pair_->responder->state(), State::kDead);
  EXPECT_FALSE(pair_->responder->offloaded());
  EXPECT_EQ(RunOffloaded(pair_->rhost, T(10)), 1u);
  EXPECT_EQ(pair_->rhost.sent, sent + 1) << "only Replace's DELETE";
  EXPECT_TRUE(pair_->rhost.retired.empty()) << "no IKE SA made from a dead one";

  // Destroyed outright with the work still queued, then the work runs.
  SetUp();
  pair_->ihost.offload.clear();
  ASSERT_TRUE(pair_->initiator->RekeyChild(pair_->ihost.installed.begin()->first, T(20)));
  pair_->Pump(T(20));
  ASSERT_TRUE(pair_->responder->offloaded());
  pair_->responder.reset();
  std::thread worker(pair_->rhost.offloaded.at(0).work);
  worker.join();
  EXPECT_EQ(pair_->rhost.Find(pair_->rhost.offloaded[0].spi), nullptr);
}

// No worker free: the SA does the DH itself at once, counted as inline.
TEST_F(Offloaded, InlineWhenNoWorkerIsFree) {
  pair_->ihost.offload_room = 0;
  pair_->rhost.offload_room = 0;
  ASSERT_TRUE(pair_->initiator->RekeyChild(pair_->ihost.installed.begin()->first, T(10)));
  EXPECT_FALSE(pair_->initiator->offloaded());
  pair_->Pump(T(10));
  ASSERT_TRUE(pair_->responder->RekeyIke(T(11)));
  pair_->Pump(T(11));
  EXPECT_TRUE(pair_->ihost.offloaded.empty());
  EXPECT_TRUE(pair_->rhost.offloaded.empty());
  ASSERT_EQ(pair_->initiator->state(), State::kEstablished);
  ASSERT_EQ(pair_->ihost.installed.size(), 1u);
  ASSERT_EQ(pair_->rhost.installed.size(), 1u);
  ExpectTrafficFlows(pair_->ihost.installed.begin()->second, pair_->rhost.installed.begin()->second);
  EXPECT_EQ(pair_->icounters.child_pfs_inline, 2u);
  EXPECT_EQ(pair_->rcounters.child_pfs_inline, 1u);
  EXPECT_EQ(pair_->rcounters.ike_rekey_inline, 2u);
  EXPECT_EQ(pair_->icounters.ike_rekey_inline, 1u);
  EXPECT_EQ(pair_->icounters.child_pfs_offloaded + pair_->rcounters.ike_rekey_offloaded, 0u);
}

// IKE_AUTH with a PSK goes to the workers like a signature does (issue 17 item 4): the
// initiator's MAC before its request goes out, the responder's check and its own MAC, the
// initiator's check of the responder's MAC. Step by step: nothing moves until the work is done.
TEST(PskAuthOffload, EveryMacOnAWorkerStepByStep) {
  LoopbackPair pair(TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16"),
                    TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16"));
  pair.ihost.offload = pair.rhost.offload = {OffloadKind::kAuth};
  pair.initiator->Initiate(T(0));
  pair.Pump(T(0));
  // The initiator's MAC: IKE_AUTH is not sent, IKE_SA_INIT not retransmitted, until it is made.
  ASSERT_EQ(pair.ihost.offloaded.size(), 1u);
  EXPECT_EQ(pair.ihost.offloaded[0].kind, OffloadKind::kAuth);
  EXPECT_EQ(pair.initiator->state(), State::kInitSent);
  EXPECT_EQ(pair.initiator->NextDeadline(), TimePoint::max());
  EXPECT_TRUE(pair.rhost.inbox.empty());
  EXPECT_EQ(RunOffloaded(pair.ihost, T(0)), 1u);
  // The responder checks the initiator's MAC and makes its own on a worker: no answer before.
  pair.Pump(T(0));
  ASSERT_TRUE(pair.responder);
  ASSERT_EQ(pair.rhost.offloaded.size(), 1u);
  EXPECT_EQ(pair.rhost.offloaded[0].kind, OffloadKind::kAuth);
  EXPECT_TRUE(pair.ihost.inbox.empty()) << "answered IKE_AUTH before its MAC was checked";
  EXPECT_NE(pair.responder->state(), State::kEstablished);
  EXPECT_EQ(RunOffloaded(pair.rhost, T(0)), 1u);
  EXPECT_EQ(pair.responder->state(), State::kEstablished) << pair.responder->failure();
  // The initiator checks the responder's MAC on a worker: no CHILD SA installed before.
  pair.Pump(T(0));
  ASSERT_EQ(pair.ihost.offloaded.size(), 1u);
  EXPECT_EQ(pair.initiator->state(), State::kAuthSent);
  EXPECT_TRUE(pair.ihost.installed.empty());
  EXPECT_EQ(RunOffloaded(pair.ihost, T(0)), 1u);
  ASSERT_EQ(pair.initiator->state(), State::kEstablished) << pair.initiator->failure();
  ASSERT_EQ(pair.ihost.installed.size(), 1u);
  ASSERT_EQ(pair.rhost.installed.size(), 1u);
  ExpectTrafficFlows(pair.ihost.installed.begin()->second, pair.rhost.installed.begin()->second);
  EXPECT_EQ(pair.icounters.auth_offloaded, 2u);  // our MAC, the check of the responder's
  EXPECT_EQ(pair.rcounters.auth_offloaded, 1u);  // the check and our MAC, one job
  EXPECT_EQ(pair.icounters.auth_inline + pair.rcounters.auth_inline, 0u);
  EXPECT_EQ(pair.icounters.retransmits + pair.rcounters.retransmits, 0u);
}

// A wrong PSK found on the responder's worker is refused on resume, counted there.
TEST(PskAuthOffload, WrongPskFoundOnTheWorkerIsRefused) {
  auto iconn = TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  iconn->psk = crypto::SecureBytes::FromText("wrong!");
  LoopbackPair pair(iconn, TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16"));
  pair.rhost.offload = {OffloadKind::kAuth};
  pair.initiator->Initiate(T(0));
  pair.Pump(T(0));
  ASSERT_EQ(pair.rhost.offloaded.size(), 1u);
  EXPECT_EQ(pair.rcounters.auth_failures, 0u) << "refused before the check ran";
  EXPECT_EQ(RunOffloaded(pair.rhost, T(0)), 1u);
  pair.Pump(T(0));
  EXPECT_EQ(pair.initiator->failure(), "peer: AUTHENTICATION_FAILED");
  EXPECT_EQ(pair.rcounters.auth_failures, 1u);
  EXPECT_EQ(pair.icounters.auth_inline, 1u) << "the initiator's host offloads nothing: its MAC inline";
  EXPECT_TRUE(pair.ihost.installed.empty());
  EXPECT_TRUE(pair.rhost.installed.empty());
}

// No worker free: every MAC is made and checked at once, counted as inline.
TEST(PskAuthOffload, InlineWhenNoWorkerIsFree) {
  LoopbackPair pair(TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16"),
                    TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16"));
  pair.ihost.offload = pair.rhost.offload = {OffloadKind::kAuth};
  pair.ihost.offload_room = pair.rhost.offload_room = 0;
  pair.initiator->Initiate(T(0));
  pair.Pump(T(0));
  ASSERT_EQ(pair.initiator->state(), State::kEstablished) << pair.initiator->failure();
  ASSERT_EQ(pair.responder->state(), State::kEstablished) << pair.responder->failure();
  EXPECT_EQ(pair.icounters.auth_inline, 2u);
  EXPECT_EQ(pair.rcounters.auth_inline, 1u);
  EXPECT_EQ(pair.icounters.auth_offloaded + pair.rcounters.auth_offloaded, 0u);
  EXPECT_TRUE(pair.ihost.offloaded.empty());
  EXPECT_TRUE(pair.rhost.offloaded.empty());
}

TEST_F(Established, LostRequestIsRetransmittedAndAnsweredOnce) {
  const std::uint32_t old_in = pair_->ihost.installed.begin()->first;
  pair_->ihost.drop_next_send = true;
  ASSERT_TRUE(pair_->initiator->RekeyChild(old_in, T(10)));
  pair_->Pump(T(10));
  EXPECT_EQ(pair_->ihost.installed.size(), 1u);  // nothing happened yet
  pair_->initiator->Tick(T(12));                  // past the 1 s retransmit deadline
  EXPECT_EQ(pair_->icounters.retransmits, 1u);
  pair_->Pump(T(12));
  EXPECT_EQ(pair_->ihost.installed.size(), 1u);
  EXPECT_EQ(pair_->ihost.installed.count(old_in), 0u);

  // A lost response: the responder answers the retransmitted request from its cache.
  pair_->rhost.drop_next_send = true;
  ASSERT_TRUE(pair_->initiator->CheckLiveness(T(20)));
  pair_->Pump(T(20));
  pair_->initiator->Tick(T(22));
  const auto rchildren = pair_->rhost.installed.size();
  pair_->Pump(T(22));
  EXPECT_EQ(pair_->rhost.installed.size(), rchildren);
  EXPECT_EQ(pair_->rcounters.requests_answered_again, 1u);
  EXPECT_EQ(pair_->initiator->state(), State::kEstablished);
}

// A link that duplicates and reorders (tests/reorder_duplicate.sh): a copy of the peer's last
// request is answered again from the cache, a copy of an older one and a copy of the response to
// ours are dropped; each counted as what it is, not as an invalid message, and nothing changes.
TEST_F(Established, DuplicatedRequestAndResponseAreCountedAndChangeNothing) {
  std::vector<Bytes> requests, responses;
  pair_->ihost.lose = [&](const Bytes& d) { requests.push_back(d); return false; };
  pair_->rhost.lose = [&](const Bytes& d) { responses.push_back(d); return false; };
  const std::uint32_t old_in = pair_->ihost.installed.begin()->first;
  ASSERT_TRUE(pair_->initiator->RekeyChild(old_in, T(10)));
  pair_->Pump(T(10));
  ASSERT_EQ(requests.size(), 2u);  // CREATE_CHILD_SA, then the DELETE of the old SA
  ASSERT_EQ(responses.size(), 2u);
  auto spis = [](const LoopbackHost& h) {
    std::vector<std::uint32_t> v;
    for (const auto& [spi, info] : h.installed) v.push_back(spi);
    return v;
  };
  const auto installed_i = spis(pair_->ihost);
  const auto installed_r = spis(pair_->rhost);
  const auto invalid = pair_->icounters.invalid_messages + pair_->rcounters.invalid_messages;
  pair_->rhost.inbox.push_back(requests.back());    // the DELETE again: answered, not deleted twice
  pair_->rhost.inbox.push_back(requests.front());   // the CREATE_CHILD_SA, older: dropped
  pair_->ihost.inbox.push_back(responses.front());  // the CREATE_CHILD_SA answer again: dropped
  pair_->ihost.inbox.push_back(responses.back());
  pair_->Pump(T(11));
  EXPECT_EQ(pair_->rcounters.requests_answered_again, 1u);
  EXPECT_EQ(pair_->rcounters.stale_requests, 1u);
  EXPECT_EQ(pair_->icounters.stale_responses, 3u);  // the two copies, and the answer again
  EXPECT_EQ(pair_->icounters.invalid_messages + pair_->rcounters.invalid_messages, invalid);
  EXPECT_EQ(spis(pair_->ihost), installed_i);
  EXPECT_EQ(spis(pair_->rhost), installed_r);
  EXPECT_EQ(pair_->initiator->state(), State::kEstablished);
  EXPECT_EQ(pair_->responder->state(), State::kEstablished);
}

TEST_F(Established, UnansweredPeerIsDeclaredDead) {
  ASSERT_TRUE(pair_->initiator->CheckLiveness(T(10)));
  pair_->rhost.inbox.clear();
  TimePoint now = T(10);
  for (int i = 0; i < 100 && pair_->initiator->state() != State::kDead; ++i) {
    now = pair_->initiator->NextDeadline();
    pair_->initiator->Tick(now);
    pair_->rhost.inbox.clear();  // the peer is gone
  }
  EXPECT_EQ(pair_->initiator->state(), State::kDead);
  EXPECT_EQ(pair_->icounters.retransmits, static_cast<std::uint64_t>(IkeSa::kMaxRetransmits));
  EXPECT_LT(now - T(10), std::chrono::seconds(80));
  EXPECT_TRUE(pair_->ihost.installed.empty());
}

TEST_F(Established, ForgedAndReplayedMessagesAreDropped) {
  // Replay the whole IKE_SA_INIT response and a garbage datagram with the right SPIs.
  Message m;
  m.header.spi_i = pair_->initiator->spi_i();
  m.header.spi_r = pair_->initiator->spi_r();
  m.header.exchange = Exchange::kInformational;
  m.header.flags = kFlagResponse;
  m.header.message_id = 7;
  const Bytes junk = Serialize(m, nullptr);
  pair_->initiator->Receive(junk, T(1));
  EXPECT_EQ(pair_->initiator->state(), State::kEstablished);
  EXPECT_GE(pair_->icounters.invalid_messages, 1u);
}

// Remote access (RFC 7296 2.19, 3.15): a road warrior asks for an internal address in IKE_AUTH;
// the gateway's host assigns one from its pool, and the CHILD SAs stand for that address.

TrafficSelector Sel(const char* cidr) { return *SelectorFromCidr(cidr); }

// A road warrior that asks for `vips` and protects traffic to `net`, and a gateway for `net`
// whose peers' selectors are their virtual IPs (remote_ts dynamic), with a pool of 198.18.0.7
// and 2001:db8::7.
std::unique_ptr<LoopbackPair> RoadWarriorPair(std::vector<std::uint8_t> vips,
                                              std::vector<TrafficSelector> net) {
  auto iconn = TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  iconn->vips = std::move(vips);
  iconn->remote_ts = net;
  auto rconn = TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  rconn->local_ts = std::move(net);
  rconn->remote_ts_dynamic = true;
  auto pair = std::make_unique<LoopbackPair>(iconn, rconn);
  pair->rhost.serves_vips = true;
  pair->rhost.vip_pool = {Sel("198.18.0.7"), Sel("2001:db8::7")};
  return pair;
}

TEST(IkeSaCp, VirtualIpv4IsAssignedAndNarrowsTheChildSaOnBothSides) {
  auto pair = RoadWarriorPair({4}, {Sel("198.51.100.0/24")});
  pair->rhost.vip_dns4 = {{203, 0, 113, 53}};
  pair->rhost.vip_subnets = {Sel("198.51.100.0/24")};
  pair->initiator->Initiate(T(0));
  pair->Pump(T(0));
  ASSERT_EQ(pair->initiator->state(), State::kEstablished) << pair->initiator->failure();
  ASSERT_TRUE(pair->responder);
  ASSERT_EQ(pair->responder->state(), State::kEstablished) << pair->responder->failure();
  const std::vector<TrafficSelector> vip = {Sel("198.18.0.7")};
  EXPECT_EQ(pair->initiator->virtual_ips(), vip);
  EXPECT_EQ(pair->responder->virtual_ips(), vip);
  EXPECT_EQ(pair->rhost.vip_requests, 1);
  ASSERT_EQ(pair->ihost.installed.size(), 1u) << pair->initiator->failure();
  ASSERT_EQ(pair->rhost.installed.size(), 1u);
  const ChildSaInfo& i = pair->ihost.installed.begin()->second;
  const ChildSaInfo& r = pair->rhost.installed.begin()->second;
  EXPECT_EQ(i.local_ts, vip) << ToString(i.local_ts[0]);
  EXPECT_EQ(i.remote_ts, std::vector<TrafficSelector>{Sel("198.51.100.0/24")});
  EXPECT_EQ(r.remote_ts, vip);
  EXPECT_EQ(r.local_ts, std::vector<TrafficSelector>{Sel("198.51.100.0/24")});
  ExpectTrafficFlows(i, r);
  ExpectTrafficFlows(r, i);
}

// The addresses belong to the IKE SA and its rekeyed successors (3.15.1): CHILD SAs created
// later, from either side and after IKE rekeys from either side, stand for the same address.
TEST(IkeSaCp, VirtualIpsStayWithLaterChildSasAndIkeRekeys) {
  auto pair = RoadWarriorPair({4}, {Sel("198.51.100.0/24")});
  pair->initiator->Initiate(T(0));
  pair->Pump(T(0));
  ASSERT_EQ(pair->ihost.installed.size(), 1u) << pair->initiator->failure();
  const std::vector<TrafficSelector> vip = {Sel("198.18.0.7")};
  ASSERT_TRUE(pair->initiator->CreateChild(T(5)));
  pair->Pump(T(5));
  ASSERT_TRUE(pair->responder->CreateChild(T(6)));
  pair->Pump(T(6));
  EXPECT_EQ(pair->ihost.installed.size(), 3u) << pair->initiator->failure() << pair->responder->failure();
  for (bool from_initiator : {true, false}) {
    const std::uint64_t old_spi = pair->initiator->spi_i();
    ASSERT_TRUE((from_initiator ? *pair->initiator : *pair->responder).RekeyIke(T(10)));
    pair->Pump(T(10));
    EXPECT_NE(pair->initiator->spi_i(), old_spi);
    EXPECT_EQ(pair->initiator->state(), State::kEstablished);
    EXPECT_EQ(pair->initiator->virtual_ips(), vip);
    EXPECT_EQ(pair->responder->virtual_ips(), vip);
  }
  ASSERT_TRUE(pair->initiator->CreateChild(T(20)));
  pair->Pump(T(20));
  ASSERT_TRUE(pair->responder->CreateChild(T(21)));
  pair->Pump(T(21));
  const std::uint32_t first = pair->ihost.installed.begin()->first;
  ASSERT_TRUE(pair->responder->RekeyChild(pair->ihost.installed.at(first).spi_out, T(22)));
  pair->Pump(T(22));
  EXPECT_EQ(pair->ihost.installed.count(first), 0u) << "CHILD SA not rekeyed";
  ASSERT_EQ(pair->ihost.installed.size(), 5u) << pair->initiator->failure() << pair->responder->failure();
  ASSERT_EQ(pair->rhost.installed.size(), 5u);
  for (const auto& [spi, c] : pair->ihost.installed) EXPECT_EQ(c.local_ts, vip);
  for (const auto& [spi, c] : pair->rhost.installed) EXPECT_EQ(c.remote_ts, vip);
  EXPECT_EQ(pair->rhost.vip_requests, 1) << "asked the pool again";
}

TEST(IkeSaCp, VirtualIpv6AndDualStack) {
  const TrafficSelector net4 = Sel("198.51.100.0/24"), net6 = Sel("2001:db8:1::/48");
  const TrafficSelector vip4 = Sel("198.18.0.7"), vip6 = Sel("2001:db8::7");
  const struct {
    const char* what;
    std::vector<std::uint8_t> ask;
    std::vector<TrafficSelector> pool;
    std::vector<TrafficSelector> net;
    std::vector<TrafficSelector> want;
  } cases[] = {
      {"IPv6", {6}, {vip4, vip6}, {net6}, {vip6}},
      {"IPv4 and IPv6", {4, 6}, {vip4, vip6}, {net4, net6}, {vip4, vip6}},
      // 3.15.4: a family the responder cannot serve is left out; the rest is assigned.
      {"IPv4 and IPv6, pool of IPv4 only", {4, 6}, {vip4}, {net4, net6}, {vip4}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    auto pair = RoadWarriorPair(c.ask, c.net);
    pair->rhost.vip_pool = c.pool;
    pair->initiator->Initiate(T(0));
    pair->Pump(T(0));
    ASSERT_EQ(pair->initiator->state(), State::kEstablished) << pair->initiator->failure();
    EXPECT_EQ(pair->initiator->virtual_ips(), c.want);
    EXPECT_EQ(pair->responder->virtual_ips(), c.want);
    ASSERT_EQ(pair->ihost.installed.size(), 1u) << pair->initiator->failure();
    ASSERT_EQ(pair->rhost.installed.size(), 1u);
    const ChildSaInfo& i = pair->ihost.installed.begin()->second;
    const ChildSaInfo& r = pair->rhost.installed.begin()->second;
    EXPECT_EQ(i.local_ts, c.want);
    EXPECT_EQ(r.remote_ts, c.want);
    ExpectTrafficFlows(i, r);
  }
  // The IPv6 address goes out as 17 octets, /128 (3.15.3), and comes back as a host selector.
  EXPECT_EQ(ToString(vip6), "2001:db8::7/128");
}

// 3.15.4: no address to give: INTERNAL_ADDRESS_FAILURE; the IKE SA is established anyway, with
// no CHILD SA and no SPI held on either side.
TEST(IkeSaCp, PoolExhaustedIsInternalAddressFailure) {
  auto pair = RoadWarriorPair({4}, {Sel("198.51.100.0/24")});
  pair->rhost.vip_pool = {Sel("2001:db8::7")};  // nothing of the family asked for
  pair->initiator->Initiate(T(0));
  pair->Pump(T(0));
  EXPECT_EQ(pair->initiator->state(), State::kEstablished);
  ASSERT_TRUE(pair->responder);
  EXPECT_EQ(pair->responder->state(), State::kEstablished);
  EXPECT_EQ(pair->initiator->failure(), "first CHILD SA refused by peer: INTERNAL_ADDRESS_FAILURE");
  EXPECT_EQ(pair->rhost.vip_requests, 1);
  EXPECT_TRUE(pair->ihost.installed.empty());
  EXPECT_TRUE(pair->rhost.installed.empty());
  EXPECT_TRUE(pair->ihost.live_spis.empty()) << "the initiator's reserved SPI leaked";
  EXPECT_TRUE(pair->rhost.live_spis.empty());
  EXPECT_TRUE(pair->initiator->virtual_ips().empty());
  EXPECT_TRUE(pair->responder->virtual_ips().empty());
  EXPECT_EQ(pair->icounters.child_failures, 1u);
  EXPECT_EQ(pair->rcounters.child_failures, 1u);
  // The gateway has no address to propose for the peer.
  EXPECT_FALSE(pair->responder->CreateChild(T(1)));
}

// A connection whose peers' selectors are their virtual IPs, and a peer that asks for none:
// FAILED_CP_REQUIRED (3.10.1: "CP(CFG_REQUEST) was expected but not received"). The IKE SA
// stays; a CHILD SA asked for later has nothing to narrow to (TS_UNACCEPTABLE).
TEST(IkeSaCp, DynamicRemoteWithoutCfgRequestIsFailedCpRequired) {
  auto pair = RoadWarriorPair({}, {Sel("198.51.100.0/24")});
  pair->initiator->Initiate(T(0));
  pair->Pump(T(0));
  EXPECT_EQ(pair->initiator->state(), State::kEstablished);
  EXPECT_EQ(pair->responder->state(), State::kEstablished);
  EXPECT_EQ(pair->initiator->failure(), "first CHILD SA refused by peer: FAILED_CP_REQUIRED");
  EXPECT_EQ(pair->rhost.vip_requests, 0);
  EXPECT_TRUE(pair->ihost.installed.empty());
  EXPECT_TRUE(pair->rhost.installed.empty());
  EXPECT_EQ(pair->rcounters.child_failures, 1u);
  ASSERT_TRUE(pair->initiator->CreateChild(T(5)));
  pair->Pump(T(5));
  EXPECT_EQ(pair->initiator->failure(), "CHILD SA refused by peer: TS_UNACCEPTABLE");
  EXPECT_TRUE(pair->ihost.installed.empty());
}

// A responder that does not serve addresses ignores the CFG_REQUEST (3.15.4); the road warrior
// then has no address for its CHILD SA and keeps the IKE SA without it.
TEST(IkeSaCp, NoAddressInTheReplyFailsTheChildSaOnly) {
  auto iconn = TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  iconn->vips = {4};
  LoopbackPair pair(iconn, TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16"));
  pair.initiator->Initiate(T(0));
  pair.Pump(T(0));
  EXPECT_EQ(pair.initiator->state(), State::kEstablished);
  EXPECT_EQ(pair.rhost.vip_requests, 1);
  EXPECT_EQ(pair.initiator->failure(),
            "first CHILD SA not installed: no CFG_REPLY: the peer assigned no virtual IP");
  EXPECT_TRUE(pair.ihost.installed.empty());
  EXPECT_TRUE(pair.ihost.live_spis.empty());
  EXPECT_TRUE(pair.initiator->virtual_ips().empty());
  EXPECT_EQ(pair.icounters.child_failures, 1u);
}

// An initiator written out by hand from the codec and the key schedule, so that a test can put
// into IKE_AUTH what IkeSa never sends. It drives a real responder IkeSa.
class HandRolledInitiator {
 public:
  explicit HandRolledInitiator(std::shared_ptr<const ConnectionParams> rconn)
      : conn_(TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16")) {
    host.peer = &sink_;
    sink_.peer = &host;
    host.current = &responder;
    host.connections.push_back(rconn);
    Address a;
    a.port = 500;
    responder = std::make_unique<IkeSa>(host, counters, IkeSa::Role::kResponder, rconn, a, a,
                                        spi_i_, 0x5151515151515151);
  }

  // IKE_SA_INIT; false if the responder did not answer it with SA, KE and Nonce.
  bool Init() {
    dh_ = crypto::DhKeyPair::Generate(PreferredDhGroup(conn_->ike_proposals));
    Message m;
    m.header = Header{spi_i_, 0, PayloadType::kNone, kVersion, Exchange::kIkeSaInit, kFlagInitiator, 0, 0};
    const auto pub = dh_->public_value();
    m.payloads = {{PayloadType::kSa, SaPayload{conn_->ike_proposals}},
                  {PayloadType::kKe, KePayload{dh_->group(), Bytes(pub.begin(), pub.end())}},
                  {PayloadType::kNonce, NoncePayload{ni_}}};
    init_request_ = Serialize(m, nullptr);
    responder->Receive(init_request_, T(0));
    if (sink_.inbox.size() != 1) return false;
    Message r;
    if (ParseMessage(sink_.inbox.front(), r).error != ParseError::kOk) return false;
    sink_.inbox.clear();
    const auto* sa = r.Find<SaPayload>(PayloadType::kSa);
    const auto* ke = r.Find<KePayload>(PayloadType::kKe);
    const auto* nr = r.Find<NoncePayload>(PayloadType::kNonce);
    if (sa == nullptr || ke == nullptr || nr == nullptr || sa->proposals.size() != 1) return false;
    algs_ = IkeAlgorithmsOf(sa->proposals[0]);
    crypto::SecureBytes shared;
    spi_r_ = r.header.spi_r;
    nr_ = nr->data;
    if (!algs_ || !dh_->ComputeShared(ke->data, shared) ||
        !DeriveIkeSaKeys(*algs_, ni_, nr_, shared, spi_i_, spi_r_, keys_))
      return false;
    tx_ = MakeSkKeys(*algs_, keys_, true, true);
    rx_ = MakeSkKeys(*algs_, keys_, true, false);
    return true;
  }

  // The SA, TSi (any IPv4 address, as a road warrior proposes) and TSr of a first CHILD SA.
  std::vector<Payload> ChildPayloads() const {
    std::vector<Proposal> esp = conn_->esp_proposals;
    for (auto& p : esp) p.spi = {0xC0, 0, 0, 1};
    return {{PayloadType::kSa, SaPayload{esp}},
            {PayloadType::kTsi, TsPayload{{Sel("0.0.0.0/0")}}},
            {PayloadType::kTsr, TsPayload{conn_->remote_ts}}};
  }

  // IKE_AUTH with IDi, AUTH and then `rest`; the responder's answer, decrypted (nullopt if
  // there was none, or it does not open).
  std::optional<Message> Auth(std::vector<Payload> rest) {
    const IdPayload idi = conn_->local_id.ToPayload();
    const auto auth = PskAuth(algs_->prf, conn_->psk, init_request_, nr_, keys_.sk_pi, idi.Body());
    std::vector<Payload> chain = {
        {PayloadType::kIdi, idi},
        {PayloadType::kAuth, AuthPayload{kAuthSharedKey, Bytes(auth.span().begin(), auth.span().end())}}};
    for (auto& p : rest) chain.push_back(std::move(p));
    return AuthChain(std::move(chain));
  }

  // IKE_AUTH carrying exactly `payloads` inside SK; the responder's answer, decrypted.
  std::optional<Message> AuthChain(std::vector<Payload> payloads) {
    Message m;
    m.header = Header{spi_i_, spi_r_, PayloadType::kNone, kVersion, Exchange::kIkeAuth, kFlagInitiator, 1, 0};
    m.payloads = std::move(payloads);
    responder->Receive(Serialize(m, &tx_), T(1));
    if (sink_.inbox.size() != 1) return std::nullopt;
    const Bytes wire = sink_.inbox.front();
    sink_.inbox.clear();
    Message r;
    const ParseResult loc = ParseMessage(wire, r);
    if (loc.error != ParseError::kOk || OpenSk(wire, loc, rx_, r).error != ParseError::kOk) return std::nullopt;
    return r;
  }

  // After IKE_AUTH: a protected request of ours (message IDs 2, 3, ...) from `from`. Returns
  // the responder's answer, decrypted; requests the responder sent meanwhile wait in
  // `requests` (decrypted) and `request_wire` (as sent).
  std::optional<Message> Request(Exchange ex, std::vector<Payload> payloads, const Address& from, TimePoint now) {
    Message m;
    m.header = Header{spi_i_, spi_r_, PayloadType::kNone, kVersion, ex, kFlagInitiator, next_id_++, 0};
    m.payloads = std::move(payloads);
    responder->set_source(from);
    responder->Receive(Serialize(m, &tx_), now);
    std::optional<Message> answer;
    for (const Message& r : Drain()) {
      if (r.header.is_response()) {
        answer = r;
      } else {
        requests.push_back(r);
      }
    }
    return answer;
  }
  // The datagrams the responder sent since, decrypted (requests also kept in request_wire).
  std::vector<Message> Drain() {
    std::vector<Message> out;
    while (!sink_.inbox.empty()) {
      const Bytes wire = sink_.inbox.front();
      sink_.inbox.pop_front();
      Message r;
      const ParseResult loc = ParseMessage(wire, r);
      if (loc.error != ParseError::kOk || OpenSk(wire, loc, rx_, r).error != ParseError::kOk) continue;
      if (!r.header.is_response()) request_wire.push_back(wire);
      out.push_back(std::move(r));
    }
    return out;
  }
  // Our response to the responder's request `req`, carrying `payloads`.
  Bytes Response(const Message& req, std::vector<Payload> payloads) {
    Message m;
    m.header = Header{spi_i_, spi_r_, PayloadType::kNone, kVersion, req.header.exchange,
                      static_cast<std::uint8_t>(kFlagInitiator | kFlagResponse), req.header.message_id, 0};
    m.payloads = std::move(payloads);
    return Serialize(m, &tx_);
  }
  std::vector<Message> requests;
  std::vector<Bytes> request_wire;

  LoopbackHost host;
  IkeCounters counters;
  std::unique_ptr<IkeSa> responder;

 private:
  std::uint32_t next_id_ = 2;
  std::shared_ptr<ConnectionParams> conn_;
  LoopbackHost sink_;
  std::uint64_t spi_i_ = 0x1A1A1A1A1A1A1A1A;
  std::uint64_t spi_r_ = 0;
  Bytes ni_ = Bytes(kNonceLen, 0x4E);
  Bytes nr_;
  Bytes init_request_;
  std::unique_ptr<crypto::DhKeyPair> dh_;
  std::optional<IkeAlgorithms> algs_;
  IkeSaKeys keys_;
  SkKeys tx_, rx_;
};

std::shared_ptr<ConnectionParams> GatewayConnection() {
  auto rconn = TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  rconn->remote_ts_dynamic = true;
  return rconn;
}

// A CP that does not parse makes the IKE_AUTH request malformed as a whole: answered with
// INVALID_SYNTAX inside SK (2.21.3), counted, and nothing acted on — as for any other malformed
// payload (a TSi without selectors, for comparison).
TEST(IkeSaCp, MalformedCpInIkeAuthIsAnsweredLikeAnyMalformedPayload) {
  const struct {
    const char* what;
    PayloadType type;
    const char* body;
  } cases[] = {
      {"CP attribute value past the payload", PayloadType::kCp, "01 000000 0001 0004 c612"},
      {"CP INTERNAL_IP4_ADDRESS of 3 octets", PayloadType::kCp, "01 000000 0001 0003 c61200"},
      {"CP INTERNAL_IP6_ADDRESS without prefix length", PayloadType::kCp,
       "01 000000 0008 0010 20010db8000000000000000000000007"},
      {"TSi without selectors", PayloadType::kTsi, "00 000000"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    HandRolledInitiator peer(GatewayConnection());
    peer.host.serves_vips = true;
    peer.host.vip_pool = {Sel("198.18.0.7")};
    ASSERT_TRUE(peer.Init());
    std::vector<Payload> rest = peer.ChildPayloads();
    const Payload bad{c.type, OtherPayload{static_cast<std::uint8_t>(c.type), false, test_tools::FromHex(c.body)}};
    if (c.type == PayloadType::kTsi) {
      rest[1] = bad;
    } else {
      rest.insert(rest.begin(), bad);
    }
    const auto resp = peer.Auth(std::move(rest));
    ASSERT_TRUE(resp);
    ASSERT_EQ(resp->payloads.size(), 1u);
    EXPECT_NE(resp->FindNotify(NotifyType::kInvalidSyntax), nullptr);
    EXPECT_EQ(peer.counters.invalid_messages, 1u);
    EXPECT_EQ(peer.responder->state(), State::kInitAnswered);
    EXPECT_EQ(peer.host.vip_requests, 0);
    EXPECT_TRUE(peer.host.installed.empty());
  }
}

// Malformed certificates in IKE_AUTH (issue 12): a responder expecting a certificate gets CERT
// payloads that are not one — DER garbage, an empty one, a truncated real certificate, an
// unsupported encoding first — each with an RFC 7427 signature AUTH. It answers
// AUTHENTICATION_FAILED inside SK (2.21.2), counts the failure as a certificate one, installs
// nothing and keeps no half-authenticated SA. A CERT payload too short for its encoding octet
// is a malformed message: INVALID_SYNTAX, as for any other payload.
TEST(IkeSaCert, MalformedCertificatesInIkeAuthAreRefusedAndCounted) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("spigot-ike-badcert-" + std::to_string(getpid()))).string();
  test_tools::TestPki pki(dir);
  const auto root = pki.Ca("root", "C=CH, O=Example, CN=Root");
  const auto alice = pki.Issue("alice", root, "C=CH, O=Example, CN=alice", test_tools::TestKey::kEcP256, {});
  std::string error;
  auto rconn = GatewayConnection();
  rconn->remote_auth = AuthMethod::kPubkey;
  rconn->remote_id_any = true;
  rconn->trust = pki::TrustStore::Load({root.cert_path}, {}, &error);
  ASSERT_TRUE(rconn->trust) << error;
  const auto real = pki::LocalCredentials::Load(alice.cert_path, alice.key_path, &error);
  ASSERT_TRUE(real) << error;
  const Bytes der = real->cert.Der();

  const struct {
    const char* what;
    std::uint8_t encoding;
    Bytes data;
  } bad_certs[] = {
      {"random octets", kCertX509Signature, test_tools::FromHex("3082 0102 deadbeef 00112233 4455")},
      {"empty", kCertX509Signature, {}},
      {"a certificate cut in half", kCertX509Signature, Bytes(der.begin(), der.begin() + der.size() / 2)},
      {"a certificate with trailing octets", kCertX509Signature, [&] {
         Bytes b = der;
         b.insert(b.end(), {0x00, 0x01, 0x02});
         return b;
       }()},
      {"hash and URL encoding first", 12, test_tools::FromHex("00112233445566778899aabbccddeeff00112233")},
  };
  for (const auto& c : bad_certs) {
    SCOPED_TRACE(c.what);
    HandRolledInitiator peer(rconn);
    ASSERT_TRUE(peer.Init());
    std::vector<Payload> chain = {
        {PayloadType::kIdi, ParseIdentity("C=CH, O=Example, CN=alice")->ToPayload()},
        {PayloadType::kCert, CertPayload{c.encoding, c.data}},
        // AlgorithmIdentifier of ecdsa-with-SHA256 (RFC 7427 A.4.3), then a signature of junk.
        {PayloadType::kAuth, AuthPayload{pki::kAuthDigitalSignature,
                                         test_tools::FromHex("0c 300a06082a8648ce3d040302 3006020101020101")}}};
    for (auto& p : peer.ChildPayloads()) chain.push_back(std::move(p));
    const auto resp = peer.AuthChain(std::move(chain));
    ASSERT_TRUE(resp);
    EXPECT_NE(resp->FindNotify(NotifyType::kAuthenticationFailed), nullptr);
    EXPECT_EQ(peer.counters.auth_failures, 1u);
    EXPECT_EQ(peer.counters.cert_failures, 1u);
    EXPECT_NE(peer.responder->state(), State::kEstablished);
    EXPECT_TRUE(peer.host.installed.empty());
  }
  {
    SCOPED_TRACE("CERT payload without its encoding octet");
    HandRolledInitiator peer(rconn);
    ASSERT_TRUE(peer.Init());
    std::vector<Payload> chain = {
        {PayloadType::kIdi, ParseIdentity("C=CH, O=Example, CN=alice")->ToPayload()},
        {PayloadType::kCert, OtherPayload{static_cast<std::uint8_t>(PayloadType::kCert), false, {}}},
        {PayloadType::kAuth, AuthPayload{pki::kAuthDigitalSignature, test_tools::FromHex("0c 300a06082a8648ce3d040302 00")}}};
    const auto resp = peer.AuthChain(std::move(chain));
    ASSERT_TRUE(resp);
    EXPECT_NE(resp->FindNotify(NotifyType::kInvalidSyntax), nullptr);
    EXPECT_EQ(peer.counters.invalid_messages, 1u);
    EXPECT_TRUE(peer.host.installed.empty());
  }
  std::filesystem::remove_all(dir);
}

// 3.15.1: the R bit of an attribute type is ignored on receipt — a request for 0x8001 is a
// request for INTERNAL_IP4_ADDRESS — and the reply carries the address.
TEST(IkeSaCp, ReservedBitOfARequestedAttributeIsIgnored) {
  HandRolledInitiator peer(GatewayConnection());
  peer.host.serves_vips = true;
  peer.host.vip_pool = {Sel("198.18.0.7")};
  ASSERT_TRUE(peer.Init());
  std::vector<Payload> rest = peer.ChildPayloads();
  rest.insert(rest.begin(), Payload{PayloadType::kCp, OtherPayload{47, false, test_tools::FromHex("01 000000 8001 0000")}});
  const auto resp = peer.Auth(std::move(rest));
  ASSERT_TRUE(resp);
  EXPECT_EQ(resp->FirstError(), nullptr);
  const auto* cp = resp->Find<CpPayload>(PayloadType::kCp);
  ASSERT_NE(cp, nullptr);
  EXPECT_EQ(cp->cfg_type, kCfgReply);
  EXPECT_EQ(cp->attributes, (std::vector<CpAttribute>{{kInternalIp4Address, {198, 18, 0, 7}}}));
  const auto* tsi = resp->Find<TsPayload>(PayloadType::kTsi);
  ASSERT_NE(tsi, nullptr);
  EXPECT_EQ(tsi->selectors, std::vector<TrafficSelector>{Sel("198.18.0.7")});
  EXPECT_EQ(peer.responder->state(), State::kEstablished);
  EXPECT_EQ(peer.host.installed.size(), 1u);
}

// What the gateway's CFG_REPLY holds: the address, the DNS servers, and the subnets as
// INTERNAL_IP4_SUBNET (address, netmask) — ranges that are not a prefix are left out.
TEST(IkeSaCp, CfgReplyCarriesDnsAndSubnets) {
  HandRolledInitiator peer(GatewayConnection());
  peer.host.serves_vips = true;
  peer.host.vip_pool = {Sel("198.18.0.7")};
  peer.host.vip_dns4 = {{203, 0, 113, 53}, {1, 2, 3}};  // the second is no IPv4 address
  TrafficSelector not_a_prefix = Sel("198.51.100.0/24");
  not_a_prefix.end[3] = 0x7E;
  peer.host.vip_subnets = {Sel("198.51.100.0/24"), Sel("0.0.0.0/0"), not_a_prefix};
  ASSERT_TRUE(peer.Init());
  std::vector<Payload> rest = peer.ChildPayloads();
  rest.insert(rest.begin(), Payload{PayloadType::kCp, CpPayload{kCfgRequest, {{kInternalIp4Address, {}}, {kInternalIp4Dns, {}}}}});
  const auto resp = peer.Auth(std::move(rest));
  ASSERT_TRUE(resp);
  const auto* cp = resp->Find<CpPayload>(PayloadType::kCp);
  ASSERT_NE(cp, nullptr);
  EXPECT_EQ(cp->attributes, (std::vector<CpAttribute>{
                                {kInternalIp4Address, {198, 18, 0, 7}},
                                {kInternalIp4Dns, {203, 0, 113, 53}},
                                {kInternalIp4Subnet, {198, 51, 100, 0, 255, 255, 255, 0}},
                                {kInternalIp4Subnet, {0, 0, 0, 0, 0, 0, 0, 0}},
                            }));
}

// ---- MOBIKE address lists (RFC 4555 3.6) and return routability (3.5, 3.7)

Payload MobikeNotify(NotifyType type, Bytes data = {}) {
  return {PayloadType::kNotify, NotifyPayload{ProtocolId::kNone, {}, type, std::move(data)}};
}

Address V4(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d) {
  Address x;
  x.ip[0] = a, x.ip[1] = b, x.ip[2] = c, x.ip[3] = d;
  return x;
}
Address V6(std::uint8_t last) {
  Address x;
  x.family = 6;
  x.ip[0] = 0x20, x.ip[1] = 0x01, x.ip[2] = 0x0d, x.ip[3] = 0xb8, x.ip[15] = last;
  return x;
}

// Both sides send their other addresses in IKE_AUTH (the one in use left out) and keep the
// peer's; a side with only the address in use says NO_ADDITIONAL_ADDRESSES; a reload that
// changes the list sends the new one in an INFORMATIONAL, which replaces the old.
TEST(IkeSaMobike, AddressListsGoBothWaysAndAReloadSendsTheNewOne) {
  auto iconn = TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  iconn->local_addresses = {V4(192, 0, 2, 1), V4(192, 0, 2, 11), V6(0x11)};
  auto rconn = TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  rconn->local_addresses = {V4(192, 0, 2, 2)};
  LoopbackPair pair(iconn, rconn);
  pair.initiator->Initiate(T(0));
  pair.Pump(T(0));
  ASSERT_EQ(pair.initiator->state(), State::kEstablished);
  ASSERT_TRUE(pair.responder->mobike());
  EXPECT_EQ(pair.responder->peer_addresses(), (std::vector<Address>{V4(192, 0, 2, 11), V6(0x11)}));
  EXPECT_TRUE(pair.initiator->peer_addresses().empty()) << "NO_ADDITIONAL_ADDRESSES";
  EXPECT_EQ(pair.rcounters.mobike_additional_addresses, 2u);
  EXPECT_EQ(pair.icounters.mobike_address_lists_sent, 1u);
  EXPECT_EQ(pair.rcounters.mobike_address_lists_sent, 1u);

  // The same list again: nothing to say. Another one: an INFORMATIONAL with it.
  pair.responder->UpdateConnection(rconn, T(1));
  EXPECT_TRUE(pair.ihost.inbox.empty());
  auto reloaded = std::make_shared<ConnectionParams>(*rconn);
  reloaded->local_addresses = {V4(192, 0, 2, 2), V4(192, 0, 2, 13), V6(0x13)};
  pair.responder->UpdateConnection(reloaded, T(2));
  ASSERT_EQ(pair.ihost.inbox.size(), 1u);
  pair.Pump(T(2));
  EXPECT_EQ(pair.initiator->peer_addresses(), (std::vector<Address>{V4(192, 0, 2, 13), V6(0x13)}));
  EXPECT_EQ(pair.rcounters.mobike_address_lists_sent, 2u);
  // Back to the one address: the list is emptied by NO_ADDITIONAL_ADDRESSES.
  pair.responder->UpdateConnection(rconn, T(3));
  pair.Pump(T(3));
  EXPECT_TRUE(pair.initiator->peer_addresses().empty());
  EXPECT_EQ(pair.responder->state(), State::kEstablished);
  // Unknown addresses ("%any"): nothing is announced, not even NO_ADDITIONAL_ADDRESSES.
  auto unknown = std::make_shared<ConnectionParams>(*rconn);
  unknown->local_addresses.clear();
  pair.responder->UpdateConnection(unknown, T(4));
  EXPECT_TRUE(pair.ihost.inbox.empty());
}

Payload AddressNotify(NotifyType type, std::size_t len, std::uint8_t fill) {
  return MobikeNotify(type, Bytes(len, fill));
}

// The peer's list through the hand-rolled initiator: address notifies of any length but 4
// (IPv4) or 16 (IPv6), or NO_ADDITIONAL_ADDRESSES with data, are ignored and counted; past
// kMobikeAddresses the rest are ignored and counted; every announcement replaces the list;
// a message whose address notifies are all malformed announces nothing.
TEST(IkeSaMobike, PeerAddressListIsBoundedAndMalformedNotifiesAreIgnored) {
  HandRolledInitiator peer(TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16"));
  ASSERT_TRUE(peer.Init());
  std::vector<Payload> rest = {MobikeNotify(NotifyType::kMobikeSupported)};
  std::size_t malformed = 0;
  for (std::size_t len = 0; len <= 20; ++len) {  // every length around the right ones
    if (len != 4) rest.push_back(AddressNotify(NotifyType::kAdditionalIp4Address, len, 0xC6)), ++malformed;
    if (len != 16) rest.push_back(AddressNotify(NotifyType::kAdditionalIp6Address, len, 0x20)), ++malformed;
  }
  rest.push_back(AddressNotify(NotifyType::kNoAdditionalAddresses, 4, 0)), ++malformed;
  const std::size_t valid = IkeSa::kMobikeAddresses + 4;
  for (std::size_t k = 0; k < valid; ++k) {
    const Address a = V4(198, 51, 100, static_cast<std::uint8_t>(10 + k));
    rest.push_back(MobikeNotify(NotifyType::kAdditionalIp4Address, Bytes(a.bytes().begin(), a.bytes().end())));
  }
  for (auto& p : peer.ChildPayloads()) rest.push_back(std::move(p));
  const auto resp = peer.Auth(std::move(rest));
  ASSERT_TRUE(resp);
  ASSERT_EQ(peer.responder->state(), State::kEstablished);
  EXPECT_NE(resp->FindNotify(NotifyType::kMobikeSupported), nullptr);
  EXPECT_EQ(peer.host.installed.size(), 1u) << "the CHILD SA suffered from the address notifies";
  ASSERT_EQ(peer.responder->peer_addresses().size(), IkeSa::kMobikeAddresses);
  EXPECT_EQ(peer.responder->peer_addresses().front(), V4(198, 51, 100, 10));
  EXPECT_EQ(peer.counters.mobike_address_list_overflow, 4u);
  EXPECT_EQ(peer.counters.mobike_address_malformed, malformed);
  EXPECT_EQ(peer.counters.invalid_messages, 0u);

  const Address here = peer.responder->remote();
  // Only malformed ones: no announcement, the list stays.
  ASSERT_TRUE(peer.Request(Exchange::kInformational, {AddressNotify(NotifyType::kAdditionalIp4Address, 5, 1)}, here, T(2)));
  EXPECT_EQ(peer.responder->peer_addresses().size(), IkeSa::kMobikeAddresses);
  // One IPv6 address: replaces all.
  const Address v6 = V6(7);
  ASSERT_TRUE(peer.Request(Exchange::kInformational,
                           {MobikeNotify(NotifyType::kAdditionalIp6Address, Bytes(v6.bytes().begin(), v6.bytes().end()))},
                           here, T(3)));
  EXPECT_EQ(peer.responder->peer_addresses(), (std::vector<Address>{V6(7)}));
  // NO_ADDITIONAL_ADDRESSES: empty.
  ASSERT_TRUE(peer.Request(Exchange::kInformational, {MobikeNotify(NotifyType::kNoAdditionalAddresses)}, here, T(4)));
  EXPECT_TRUE(peer.responder->peer_addresses().empty());
  EXPECT_EQ(peer.responder->state(), State::kEstablished);
}

// An established MOBIKE SA (hand-rolled initiator) whose peer moves to 192.0.2.9:4500.
struct MovedPeer {
  MovedPeer() : peer(TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16")) {
    if (!peer.Init()) return;
    std::vector<Payload> rest = {MobikeNotify(NotifyType::kMobikeSupported)};
    for (auto& p : peer.ChildPayloads()) rest.push_back(std::move(p));
    if (!peer.Auth(std::move(rest))) return;
    old = peer.responder->remote();
    answer = peer.Request(Exchange::kInformational, {MobikeNotify(NotifyType::kUpdateSaAddresses)}, moved, T(2));
  }
  // The responder's return routability check: its COOKIE2 (empty if none).
  Bytes Cookie2() const {
    if (peer.requests.empty()) return {};
    const NotifyPayload* c = peer.requests.back().FindNotify(NotifyType::kCookie2);
    return c != nullptr ? c->data : Bytes{};
  }
  HandRolledInitiator peer;
  Address old;
  Address moved = RebindAddress(9, 4500);
  std::optional<Message> answer;
};

// 4555 3.5/3.7: the UPDATE_SA_ADDRESSES is answered, the IKE SA moves, and an INFORMATIONAL
// with a fresh COOKIE2 (8-64 octets) goes to the new address; the CHILD SAs keep sending to the
// old one until the right COOKIE2 comes back, then move all at once.
TEST(IkeSaMobike, ReturnRoutabilityCheckWithTheRightCookieMovesTheChildSas) {
  MovedPeer m;
  ASSERT_TRUE(m.answer);
  IkeSa& r = *m.peer.responder;
  EXPECT_EQ(r.remote(), m.moved);
  EXPECT_EQ(r.esp_remote(), m.old);
  EXPECT_TRUE(m.peer.host.esp_moves.empty());
  ASSERT_EQ(m.peer.requests.size(), 1u);
  const Bytes cookie = m.Cookie2();
  EXPECT_GE(cookie.size(), kCookie2MinLen);
  EXPECT_LE(cookie.size(), kCookie2MaxLen);
  EXPECT_EQ(m.peer.counters.mobike_rr_checks, 1u);
  r.Receive(m.peer.Response(m.peer.requests.back(), {MobikeNotify(NotifyType::kCookie2, cookie)}), T(3));
  EXPECT_EQ(m.peer.counters.mobike_rr_passed, 1u);
  EXPECT_EQ(m.peer.counters.mobike_rr_failed, 0u);
  EXPECT_EQ(r.esp_remote(), m.moved);
  ASSERT_EQ(m.peer.host.esp_moves.size(), 1u);
  EXPECT_EQ(m.peer.host.esp_moves[0], m.moved);
  // Another move gets another cookie.
  m.peer.requests.clear();
  ASSERT_TRUE(m.peer.Request(Exchange::kInformational, {MobikeNotify(NotifyType::kUpdateSaAddresses)}, RebindAddress(10, 4500), T(4)));
  ASSERT_EQ(m.peer.requests.size(), 1u);
  EXPECT_NE(m.Cookie2(), cookie);
}

// A response with another COOKIE2, or none, fails the check: counted, the CHILD SAs stay at
// the old address, the IKE SA lives on (the peer's next update checks again).
TEST(IkeSaMobike, ReturnRoutabilityCheckWithAWrongOrMissingCookieFails) {
  for (const bool missing : {false, true}) {
    SCOPED_TRACE(missing ? "missing" : "wrong");
    MovedPeer m;
    ASSERT_TRUE(m.answer);
    IkeSa& r = *m.peer.responder;
    Bytes wrong = m.Cookie2();
    ASSERT_FALSE(wrong.empty());
    wrong[0] ^= 0xFF;
    std::vector<Payload> echo;
    if (!missing) echo.push_back(MobikeNotify(NotifyType::kCookie2, wrong));
    r.Receive(m.peer.Response(m.peer.requests.back(), std::move(echo)), T(3));
    EXPECT_EQ(m.peer.counters.mobike_rr_failed, 1u);
    EXPECT_EQ(m.peer.counters.mobike_rr_passed, 0u);
    EXPECT_EQ(r.esp_remote(), m.old);
    EXPECT_TRUE(m.peer.host.esp_moves.empty());
    EXPECT_EQ(r.state(), State::kEstablished);
    // The next update from the same address is checked again and can pass.
    m.peer.requests.clear();
    ASSERT_TRUE(m.peer.Request(Exchange::kInformational, {MobikeNotify(NotifyType::kUpdateSaAddresses)}, m.moved, T(4)));
    ASSERT_EQ(m.peer.requests.size(), 1u);
    r.Receive(m.peer.Response(m.peer.requests.back(), {MobikeNotify(NotifyType::kCookie2, m.Cookie2())}), T(5));
    EXPECT_EQ(m.peer.counters.mobike_rr_passed, 1u);
    EXPECT_EQ(r.esp_remote(), m.moved);
  }
}

// The check's request is lost: retransmitted unchanged (the same COOKIE2), and the answer to
// the retransmission passes; a duplicate of that answer changes nothing. A check never
// answered fails (counted) when the retransmissions run out, and the IKE SA is declared dead.
TEST(IkeSaMobike, ReturnRoutabilityCheckRetransmittedAndUnanswered) {
  {
    MovedPeer m;
    ASSERT_TRUE(m.answer);
    IkeSa& r = *m.peer.responder;
    const Bytes first = m.peer.request_wire.back();
    const Bytes cookie = m.Cookie2();
    r.Tick(T(2) + std::chrono::seconds(5));
    const auto again = m.peer.Drain();
    ASSERT_EQ(again.size(), 1u) << "not retransmitted";
    EXPECT_EQ(m.peer.request_wire.back(), first) << "a retransmission is the same message";
    const Bytes answer = m.peer.Response(m.peer.requests.back(), {MobikeNotify(NotifyType::kCookie2, cookie)});
    r.Receive(answer, T(8));
    EXPECT_EQ(m.peer.counters.mobike_rr_passed, 1u);
    EXPECT_EQ(m.peer.host.esp_moves.size(), 1u);
    const auto invalid = m.peer.counters.invalid_messages;
    r.Receive(answer, T(9));
    EXPECT_EQ(m.peer.counters.stale_responses, 1u) << "a duplicate answer was taken";
    EXPECT_EQ(m.peer.counters.invalid_messages, invalid);
    EXPECT_EQ(m.peer.counters.mobike_rr_passed, 1u);
    EXPECT_EQ(m.peer.host.esp_moves.size(), 1u);
  }
  {
    MovedPeer m;
    ASSERT_TRUE(m.answer);
    IkeSa& r = *m.peer.responder;
    for (int s = 3; s < 600 && r.state() != State::kDead; ++s) r.Tick(T(s));
    EXPECT_EQ(r.state(), State::kDead);
    EXPECT_EQ(m.peer.counters.mobike_rr_failed, 1u);
    EXPECT_TRUE(m.peer.host.esp_moves.empty());
  }
}

// The peer moves again before the check is answered: the answer to the first check does not
// move the CHILD SAs to the address it checked; the newest address is checked, then they go
// there. A peer that goes back to where the CHILD SAs are needs no check.
TEST(IkeSaMobike, ReturnRoutabilityFollowsTheNewestAddress) {
  MovedPeer m;
  ASSERT_TRUE(m.answer);
  IkeSa& r = *m.peer.responder;
  const Message first = m.peer.requests.back();
  const Bytes first_cookie = m.Cookie2();
  const Address third = RebindAddress(10, 4500);
  ASSERT_TRUE(m.peer.Request(Exchange::kInformational, {MobikeNotify(NotifyType::kUpdateSaAddresses)}, third, T(3)));
  EXPECT_EQ(m.peer.requests.size(), 1u) << "a second check while one is in flight";
  r.Receive(m.peer.Response(first, {MobikeNotify(NotifyType::kCookie2, first_cookie)}), T(3));
  EXPECT_TRUE(m.peer.host.esp_moves.empty()) << "moved to an address the peer has left";
  EXPECT_EQ(r.esp_remote(), m.old);
  const auto out = m.peer.Drain();
  ASSERT_EQ(out.size(), 1u) << "the newest address was not checked";
  ASSERT_FALSE(out[0].header.is_response());
  const NotifyPayload* c2 = out[0].FindNotify(NotifyType::kCookie2);
  ASSERT_NE(c2, nullptr);
  EXPECT_NE(c2->data, first_cookie);
  r.Receive(m.peer.Response(out[0], {MobikeNotify(NotifyType::kCookie2, c2->data)}), T(4));
  ASSERT_EQ(m.peer.host.esp_moves.size(), 1u);
  EXPECT_EQ(m.peer.host.esp_moves[0], third);
  EXPECT_EQ(m.peer.counters.mobike_rr_checks, 2u);
  EXPECT_EQ(m.peer.counters.mobike_rr_passed, 2u);
  // An update from where the CHILD SAs already send: nothing to check, nothing moves.
  m.peer.requests.clear();
  ASSERT_TRUE(m.peer.Request(Exchange::kInformational, {MobikeNotify(NotifyType::kUpdateSaAddresses)}, third, T(5)));
  EXPECT_TRUE(m.peer.requests.empty());
  EXPECT_EQ(m.peer.counters.mobike_rr_checks, 2u);
  EXPECT_EQ(m.peer.host.esp_moves.size(), 1u);
}

}  // namespace
}  // namespace spigot::ike
