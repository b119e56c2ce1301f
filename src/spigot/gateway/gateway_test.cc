// Two gateways back to back in one process (test_tools/gateway_pair.h): the control thread's
// behaviour — establishment, rekeys, make-before-break, lifetimes, admission, acquires, the
// SPI pool, reload, shutdown — driven the way peers and operators drive it, with the fake clock.
#include "spigot/gateway/gateway.h"

#include <gtest/gtest.h>

#include <set>

#include "spigot/bounds.h"
#include "spigot/control/gateway_commands.h"
#include "spigot/ike/endpoint.h"
#include "spigot/test_tools/gateway_pair.h"

namespace spigot::gateway {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using test_tools::Datagram;
using test_tools::GatewayPair;
using test_tools::Node;
using test_tools::SiteConfig;
using Kind = test_tools::FakeDataPlane::Event::Kind;

// The responder keeps several IKE SAs of one peer identity (the tests that initiate the same
// connection many times); without it, unique = "replace" keeps only the newest.
constexpr const char* kManyIkeSas = "unique = \"no\"\n";

std::size_t Established(const Gateway& gw) {
  std::size_t n = 0;
  for (const auto& [ours, e] : gw.ike_sas().entries())
    n += e.sa->state() == ike::IkeSa::State::kEstablished;
  return n;
}

std::set<std::uint32_t> InboundSpis(const Gateway& gw) {
  std::set<std::uint32_t> spis;
  for (const auto& [ours, e] : gw.ike_sas().entries())
    for (const auto& c : e.sa->children()) spis.insert(c.spi_in);
  return spis;
}

std::uint32_t OnlyInboundSpi(const Gateway& gw) {
  const auto spis = InboundSpis(gw);
  return spis.size() == 1 ? *spis.begin() : 0;
}

// What every test expects after its last step: no packet sent on an SA the peer lacked, no
// simulated packet lost, and no policy left without an outbound SA unless `clears_allowed`.
void ExpectCleanDataPath(GatewayPair& p, bool clears_allowed = false) {
  EXPECT_TRUE(p.violations.empty()) << p.violations.front();
  EXPECT_EQ(p.a.lost_packets + p.b.lost_packets, 0u);
  // Every IKE SA deadline came from the heap; the safety sweep found none it had missed.
  EXPECT_EQ(p.a.gw->ike_sas().timers_missed() + p.b.gw->ike_sas().timers_missed(), 0u);
  if (!clears_allowed) {
    EXPECT_EQ(p.a.dataplane.Count(Kind::kClearOutbound), 0u);
    EXPECT_EQ(p.b.dataplane.Count(Kind::kClearOutbound), 0u);
  }
}

// A and B with one tunnel up, initiated by `initiator`.
void Establish(GatewayPair& p, Node& initiator) {
  ASSERT_TRUE(p.ok()) << p.error();
  std::string err;
  ASSERT_TRUE(initiator.gw->Initiate("site", &err)) << err;
  p.Pump();
  ASSERT_EQ(Established(*p.a.gw), 1u);
  ASSERT_EQ(Established(*p.b.gw), 1u);
}

TEST(GatewayTest, EstablishesATunnelWhicheverSideInitiates) {
  for (int initiator = 0; initiator < 2; ++initiator) {
    GatewayPair p(SiteConfig(1, 2), SiteConfig(2, 1));
    Establish(p, initiator == 0 ? p.a : p.b);
    for (Node* n : {&p.a, &p.b}) {
      EXPECT_EQ(n->gw->children().sad().size(), 1u);
      EXPECT_EQ(n->dataplane.inbound.size(), 1u);
      ASSERT_EQ(n->dataplane.outbound.size(), 1u);
      EXPECT_EQ(n->dataplane.outbound.begin()->second.peer.port(), 4500);
      EXPECT_EQ(n->gw->counters().ike_established, 1u);
    }
    // The responder answered the IKE_SA_INIT on a worker, and checked and made the IKE_AUTH
    // MACs (PSK) on one; the initiator made its MAC and checked the responder's on workers.
    Node& responder = initiator == 0 ? p.b : p.a;
    Node& init_side = p.Peer(responder);
    EXPECT_EQ(responder.workers.stats().completed, 2u);
    EXPECT_EQ(responder.gw->ike_counters().auth_offloaded, 1u);
    EXPECT_EQ(init_side.workers.stats().completed, 2u);
    EXPECT_EQ(init_side.gw->ike_counters().auth_offloaded, 2u);
    EXPECT_EQ(responder.gw->ike_counters().auth_inline + init_side.gw->ike_counters().auth_inline, 0u);
    p.Traffic();
    EXPECT_EQ(p.a.delivered_packets, 1u);
    EXPECT_EQ(p.b.delivered_packets, 1u);
    ExpectCleanDataPath(p);
  }
}

TEST(GatewayTest, ChildRekeyFromEitherSideIsMakeBeforeBreak) {
  GatewayPair p(SiteConfig(1, 2), SiteConfig(2, 1));
  Establish(p, p.a);
  for (Node* rekeyer : {&p.a, &p.b}) {
    Node& other = p.Peer(*rekeyer);
    const std::uint32_t old_in = OnlyInboundSpi(*rekeyer->gw);
    ASSERT_EQ(rekeyer->gw->Rekey("site", false), 1);
    p.Pump();
    p.Traffic();
    EXPECT_NE(OnlyInboundSpi(*rekeyer->gw), old_in);
    EXPECT_EQ(rekeyer->gw->children().sad().size(), 1u);
    EXPECT_EQ(other.gw->children().sad().size(), 1u);
    EXPECT_EQ(rekeyer->gw->children().counters().rekeys_completed, 1u);
    EXPECT_EQ(other.gw->children().counters().rekeys_answered, 1u);
    // The old inbound SA lingers for ESP queued behind the DELETE, then goes.
    EXPECT_EQ(rekeyer->dataplane.inbound.count(old_in), 1u);
    p.Advance(ChildSaManager::kInboundLinger + milliseconds(200));
    EXPECT_EQ(rekeyer->dataplane.inbound.count(old_in), 0u);
    EXPECT_EQ(rekeyer->dataplane.inbound.size(), 1u);
  }
  ExpectCleanDataPath(p);
}

TEST(GatewayTest, ResponderSwitchesOutboundOnThePeersFirstPacket) {
  GatewayPair p(SiteConfig(1, 2), SiteConfig(2, 1));
  Establish(p, p.a);
  const std::uint32_t a_old = OnlyInboundSpi(*p.a.gw);
  // A's DELETE of the old SA is lost: only A's traffic on the new SA can tell B to switch.
  p.net.drop = [](const Datagram& d) {
    const ike::Header h = d.Header();
    return h.exchange == ike::Exchange::kInformational && !h.is_response() && h.from_initiator();
  };
  ASSERT_EQ(p.a.gw->Rekey("site", false), 1);
  p.Pump();
  // A keeps the old SA until its DELETE is answered: two CHILD SAs, the new one and a_old.
  std::set<std::uint32_t> a_spis = InboundSpis(*p.a.gw);
  ASSERT_EQ(a_spis.size(), 2u);
  a_spis.erase(a_old);
  const std::uint32_t a_new = *a_spis.begin();
  // B still sends on the old SA, which A keeps until its DELETE is answered.
  EXPECT_EQ(p.b.dataplane.outbound.begin()->second.spi, a_old);
  p.Traffic();
  EXPECT_EQ(p.b.dataplane.outbound.begin()->second.spi, a_new);
  EXPECT_EQ(p.b.gw->children().counters().outbound_switched_on_traffic, 1u);
  p.net.drop = nullptr;
  p.Advance(seconds(5));  // A's DELETE is retransmitted and gets through
  p.Traffic();
  EXPECT_EQ(p.a.gw->children().sad().size(), 1u);
  EXPECT_EQ(p.b.gw->children().sad().size(), 1u);
  ExpectCleanDataPath(p);
}

TEST(GatewayTest, IkeRekeyFromEitherSideKeepsTheChildSas) {
  GatewayPair p(SiteConfig(1, 2), SiteConfig(2, 1));
  Establish(p, p.a);
  const std::uint32_t a_child = OnlyInboundSpi(*p.a.gw);
  for (Node* rekeyer : {&p.a, &p.b}) {
    const std::uint64_t old_spi = p.a.gw->ike_sas().entries().begin()->first;
    ASSERT_EQ(rekeyer->gw->Rekey("site", true), 1);
    p.Pump();
    p.Advance(Gateway::kTickPeriod);  // the tick removes the old IKE SA, deleted
    p.Traffic();
    for (Node* n : {&p.a, &p.b}) {
      ASSERT_EQ(n->gw->ike_sas().size(), 1u);
      EXPECT_EQ(Established(*n->gw), 1u);
    }
    EXPECT_NE(p.a.gw->ike_sas().entries().begin()->first, old_spi);
    EXPECT_EQ(OnlyInboundSpi(*p.a.gw), a_child);
  }
  // The CHILD SA now belongs to the new IKE SA: its rekey is sent there.
  ASSERT_EQ(p.a.gw->Rekey("site", false), 1);
  p.Pump();
  EXPECT_NE(OnlyInboundSpi(*p.a.gw), a_child);
  EXPECT_EQ(p.a.gw->children().counters().rekeys_completed, 1u);
  ExpectCleanDataPath(p);
}

// Issue 17: the DH of CREATE_CHILD_SA with PFS and of IKE rekeys runs on the IKE workers, both
// roles: our key pair before the request, the shared secret at the peer's request or response.
constexpr const char* kPfs = "esp_proposals = \"aes128gcm16-x25519\"\n";

TEST(GatewayTest, PfsChildAndIkeRekeysRunOnTheWorkersFromEitherSide) {
  GatewayPair p(SiteConfig(1, 2, "", kPfs), SiteConfig(2, 1, "", kPfs));
  Establish(p, p.a);
  for (int round = 0; round < 2; ++round) {
    for (Node* rekeyer : {&p.a, &p.b}) {
      const std::uint32_t old_in = OnlyInboundSpi(*rekeyer->gw);
      ASSERT_EQ(rekeyer->gw->Rekey("site", false), 1);
      p.Pump();
      EXPECT_NE(OnlyInboundSpi(*rekeyer->gw), old_in);
      ASSERT_EQ(rekeyer->gw->Rekey("site", true), 1);
      p.Pump();
      p.Advance(Gateway::kTickPeriod);  // the tick removes the old IKE SA, deleted
      p.Traffic();
      for (Node* n : {&p.a, &p.b}) {
        ASSERT_EQ(n->gw->ike_sas().size(), 1u);
        EXPECT_EQ(Established(*n->gw), 1u);
        EXPECT_EQ(n->gw->children().sad().size(), 1u);
      }
    }
  }
  for (Node* n : {&p.a, &p.b}) {
    const ike::IkeCounters& c = n->gw->ike_counters();
    // Per side: 2 rekeys of its own (key pair and shared secret each), 2 of the peer's.
    EXPECT_EQ(c.child_pfs_offloaded, 6u);
    EXPECT_EQ(c.ike_rekey_offloaded, 6u);
    EXPECT_EQ(c.child_pfs_inline + c.ike_rekey_inline, 0u);
    EXPECT_EQ(c.child_failures, 0u);
    EXPECT_EQ(n->gw->children().counters().rekeys_completed, 2u);
    EXPECT_EQ(n->gw->children().counters().rekeys_answered, 2u);
  }
  const nlohmann::json stats = control::StatsJson(*p.b.gw);
  EXPECT_EQ(stats["ike"]["child_pfs_offloaded"], 6);
  EXPECT_EQ(stats["ike"]["ike_rekey_offloaded"], 6);
  EXPECT_EQ(stats["bounds"]["ike_offload_held"]["dropped"], 0);
  ExpectCleanDataPath(p);
}

// No IKE worker free: the rekey is answered at once on the control thread, counted.
TEST(GatewayTest, PfsRekeyIsAnsweredInlineWhenNoWorkerIsFree) {
  GatewayPair p(SiteConfig(1, 2, "", kPfs), SiteConfig(2, 1, "", kPfs), GatewayPair::kWorkers, 1);
  Establish(p, p.a);
  // B's one worker is busy whenever a CREATE_CHILD_SA request reaches it.
  p.net.drop = [&](const Datagram& d) {
    const ike::Header h = d.Header();
    if (h.exchange == ike::Exchange::kCreateChildSa && !h.is_response() && d.to.AddressString() == "192.0.2.2")
      (void)p.b.workers.TrySubmit([] {});
    return false;
  };
  ASSERT_EQ(p.a.gw->Rekey("site", false), 1);
  p.Pump();
  ASSERT_EQ(p.a.gw->Rekey("site", true), 1);
  p.Pump();
  p.Advance(Gateway::kTickPeriod);
  p.Traffic();
  const ike::IkeCounters& b = p.b.gw->ike_counters();
  EXPECT_EQ(b.child_pfs_inline, 1u);
  EXPECT_EQ(b.ike_rekey_inline, 1u);
  EXPECT_EQ(b.child_pfs_offloaded + b.ike_rekey_offloaded, 0u);
  EXPECT_EQ(p.a.gw->ike_counters().child_pfs_offloaded, 2u);
  EXPECT_EQ(p.a.gw->children().counters().rekeys_completed, 1u);
  EXPECT_EQ(Established(*p.a.gw), 1u);
  EXPECT_EQ(Established(*p.b.gw), 1u);
  ExpectCleanDataPath(p);
}

// Step by step: the peer's retransmission while B's worker has the request is dropped and
// counted; an operator's delete of the IKE SA meanwhile waits for the exchange, then goes out.
TEST(GatewayTest, RetransmissionAndDeleteWhileARekeyIsOnAWorker) {
  GatewayPair p(SiteConfig(1, 2, "", kPfs), SiteConfig(2, 1, "", kPfs));
  Establish(p, p.a);
  const auto deliver = [&](Node& to) {
    ASSERT_FALSE(p.net.in_flight.empty());
    Datagram d = std::move(p.net.in_flight.front());
    p.net.in_flight.pop_front();
    to.gw->ReceiveIke(d.bytes, d.from, d.natt);
    to.gw->WorkQueue();
  };
  ASSERT_EQ(p.a.gw->Rekey("site", true), 1);
  ASSERT_EQ(p.a.workers.pending(), 1u);  // A's key pair
  p.a.workers.RunAll();
  p.a.loop.RunPosted();
  ASSERT_EQ(p.net.in_flight.size(), 1u);
  const Datagram request = p.net.in_flight.front();
  deliver(p.b);
  ASSERT_EQ(p.b.workers.pending(), 1u);
  p.net.in_flight.push_back(request);  // A's retransmission, while B's worker has it
  deliver(p.b);
  EXPECT_EQ(p.b.gw->ike_counters().offload_retransmits, 1u);
  EXPECT_TRUE(p.net.in_flight.empty()) << "answered before the work was done";
  EXPECT_EQ(p.b.gw->Terminate("site"), 1);
  EXPECT_TRUE(p.net.in_flight.empty()) << "a DELETE in the middle of the exchange";
  p.Pump();
  p.Advance(Gateway::kTickPeriod);
  EXPECT_EQ(p.b.gw->ike_counters().ike_rekey_offloaded, 1u);
  EXPECT_EQ(p.a.gw->ike_sas().size(), 0u);
  EXPECT_EQ(p.b.gw->ike_sas().size(), 0u);
  EXPECT_EQ(p.a.gw->children().sad().size(), 0u);
  EXPECT_EQ(p.b.gw->children().sad().size(), 0u);
  ExpectCleanDataPath(p, true);
}

// Both sides rekey the IKE SA at once (RFC 7296 2.8.2): each answers the other's, the new IKE
// SA created with the lowest nonce is deleted by its creator, the other keeps the CHILD SA and
// its creator deletes the old one. Over the rounds, both sides' SAs survive sometimes.
TEST(GatewayTest, SimultaneousIkeRekeysLeaveOneIkeSa) {
  GatewayPair p(SiteConfig(1, 2), SiteConfig(2, 1));
  Establish(p, p.a);
  const std::uint32_t a_child = OnlyInboundSpi(*p.a.gw);
  constexpr std::uint64_t kRounds = 24;
  for (std::uint64_t round = 1; round <= kRounds; ++round) {
    const std::uint64_t a_before = p.a.gw->ike_sas().entries().begin()->first;
    ASSERT_EQ(p.a.gw->Rekey("site", true), 1);
    ASSERT_EQ(p.b.gw->Rekey("site", true), 1);
    p.Pump();
    p.Advance(Gateway::kTickPeriod);  // the tick removes the deleted IKE SAs
    for (Node* n : {&p.a, &p.b}) {
      ASSERT_EQ(n->gw->ike_sas().size(), 1u) << "round " << round;
      EXPECT_EQ(Established(*n->gw), 1u);
      EXPECT_EQ(n->gw->ike_counters().ike_rekey_collisions, round);
      EXPECT_EQ(n->gw->ike_counters().rekey_retries, 0u);
    }
    EXPECT_EQ(p.a.gw->ike_counters().ike_rekey_collisions_ours_redundant +
                  p.b.gw->ike_counters().ike_rekey_collisions_ours_redundant,
              round);
    EXPECT_NE(p.a.gw->ike_sas().entries().begin()->first, a_before);
    EXPECT_EQ(OnlyInboundSpi(*p.a.gw), a_child) << "the CHILD SA was renegotiated";
    p.Traffic();
  }
  EXPECT_GT(p.a.gw->ike_counters().ike_rekey_collisions_ours_redundant, 0u);
  EXPECT_GT(p.b.gw->ike_counters().ike_rekey_collisions_ours_redundant, 0u);
  // The CHILD SA belongs to the surviving IKE SA: its rekey goes through it.
  ASSERT_EQ(p.a.gw->Rekey("site", false), 1);
  p.Pump();
  EXPECT_NE(OnlyInboundSpi(*p.a.gw), a_child);
  p.Traffic();
  ExpectCleanDataPath(p);
}

TEST(GatewayTest, SimultaneousChildRekeysLeaveOnePairOfSas) {
  GatewayPair p(SiteConfig(1, 2), SiteConfig(2, 1));
  Establish(p, p.a);
  const std::uint32_t a_old = OnlyInboundSpi(*p.a.gw);
  ASSERT_EQ(p.a.gw->Rekey("site", false), 1);
  ASSERT_EQ(p.b.gw->Rekey("site", false), 1);
  p.Pump();
  p.Advance(seconds(3));
  p.Traffic();
  ASSERT_EQ(p.a.gw->children().sad().size(), 1u);
  ASSERT_EQ(p.b.gw->children().sad().size(), 1u);
  EXPECT_NE(OnlyInboundSpi(*p.a.gw), a_old);
  // Both sides kept the same survivor: each sends on the other's inbound SA.
  EXPECT_EQ(p.a.dataplane.outbound.begin()->second.spi, OnlyInboundSpi(*p.b.gw));
  EXPECT_EQ(p.b.dataplane.outbound.begin()->second.spi, OnlyInboundSpi(*p.a.gw));
  ExpectCleanDataPath(p);
}

TEST(GatewayTest, TimeLifetimeRekeysAtTheSoftLifetime) {
  const std::string conn = "child_rekey_time = \"60s\"\nchild_lifetime = \"90s\"\n";
  GatewayPair p(SiteConfig(1, 2, "", conn), SiteConfig(2, 1, "", conn));
  Establish(p, p.a);
  const std::uint32_t a_old = OnlyInboundSpi(*p.a.gw);
  p.Advance(seconds(50));  // before the soft lifetime, less its jitter (54-60 s)
  EXPECT_EQ(OnlyInboundSpi(*p.a.gw), a_old);
  for (int i = 0; i < 15; ++i) {
    p.Advance(seconds(1));
    p.Traffic();
  }
  EXPECT_NE(OnlyInboundSpi(*p.a.gw), a_old);
  EXPECT_EQ(p.a.gw->children().sad().size(), 1u);
  EXPECT_EQ(p.b.gw->children().sad().size(), 1u);
  ExpectCleanDataPath(p);
}

// What tests/lifetimes.sh checked with sleeps: CHILD SAs every ~3 s (less jitter) and the IKE
// SA every ~7 s rekey on their own, through the rekey scheduler, under steady traffic. (Both
// sides' IKE rekeys often fall in the same tick here: SimultaneousIkeRekeysAreRetried.)
TEST(GatewayTest, TimeLifetimesRekeyChildAndIkeSasUnderTraffic) {
  const std::string conn = "child_rekey_time = \"3s\"\nike_rekey_time = \"7s\"\n";
  GatewayPair p(SiteConfig(1, 2, "", conn), SiteConfig(2, 1, "", conn));
  Establish(p, p.a);
  const std::uint64_t ike_before = p.a.gw->ike_sas().entries().begin()->first;
  auto ike_rekeyed = [&] {
    for (const auto& [ours, e] : p.a.gw->ike_sas().entries()) {
      if (e.sa->state() == ike::IkeSa::State::kEstablished && ours != ike_before) return true;
    }
    return false;
  };
  int ticks = 0;
  for (; ticks < 120; ++ticks) {  // 12 s
    p.Advance(milliseconds(100));
    p.Traffic();
  }
  const std::uint64_t started = p.a.gw->children().rekey_scheduler().stats().started +
                                p.b.gw->children().rekey_scheduler().stats().started;
  EXPECT_GE(started, 3u);
  EXPECT_LE(started, 9u);  // about one per 2.7-3 s, from whichever side comes first
  // The IKE SA at 7 s less jitter; a collision with a CHILD exchange or the peer's own IKE
  // rekey is refused with TEMPORARY_FAILURE (2.25) and tried again 2-5 s later.
  for (; ticks < 600 && !ike_rekeyed(); ++ticks) {
    p.Advance(milliseconds(100));
    p.Traffic();
  }
  EXPECT_TRUE(ike_rekeyed());
  EXPECT_EQ(Established(*p.a.gw), 1u);
  EXPECT_EQ(p.a.gw->children().sad().size(), 1u);
  EXPECT_GT(p.a.delivered_packets, 100u);
  ExpectCleanDataPath(p);
}

TEST(GatewayTest, VolumeLifetimeRekeysBeforeItDeletes) {
  const std::string conn = "child_life_bytes = 100000\n";
  GatewayPair p(SiteConfig(1, 2, "", conn), SiteConfig(2, 1, "", conn));
  Establish(p, p.a);
  const std::uint32_t a_first = OnlyInboundSpi(*p.a.gw);
  // Soft (80-90 %) crossed: a rekey, no delete.
  for (int i = 0; i < 20 && OnlyInboundSpi(*p.a.gw) == a_first; ++i) {
    p.Traffic(5000);  // both directions count: 10 kB per round on each SA
    p.Advance(milliseconds(100));
  }
  EXPECT_NE(OnlyInboundSpi(*p.a.gw), a_first);
  const std::uint64_t rekeys = p.a.gw->children().counters().volume_rekeys +
                               p.b.gw->children().counters().volume_rekeys;
  EXPECT_GE(rekeys, 1u);
  EXPECT_EQ(p.a.gw->children().counters().volume_deletes, 0u);
  // Soft and hard crossed between two looks: the rekey is started ahead of the DELETE, so the
  // successor carries the traffic.
  const std::uint32_t a_second = OnlyInboundSpi(*p.a.gw);
  p.Traffic(200000);
  p.Advance(milliseconds(300));
  p.Traffic();
  EXPECT_NE(OnlyInboundSpi(*p.a.gw), a_second);
  EXPECT_GE(p.a.gw->children().counters().volume_deletes + p.b.gw->children().counters().volume_deletes, 1u);
  EXPECT_EQ(p.a.gw->children().sad().size(), 1u);
  EXPECT_EQ(p.b.gw->children().sad().size(), 1u);
  ExpectCleanDataPath(p);
}

// B's SPI pool is full (256 tunnels, no reserve): every rekey is refused with
// TEMPORARY_FAILURE and retried; a reload that raises max_spi lets the retries through
// before the hard lifetime — or, without it, the hard lifetime deletes the SAs.
class FullPoolTest : public ::testing::TestWithParam<bool> {};

TEST_P(FullPoolTest, RefusedRekeysAreRetriedUntilTheHardLifetime) {
  const bool raise_limit = GetParam();
  const std::string conn = "child_rekey_time = \"60s\"\nchild_lifetime = \"90s\"\n";
  const std::string b_global = "max_spi = 256\nspi_reserve_percent = 0\n";
  GatewayPair p(SiteConfig(1, 2, "", conn), SiteConfig(2, 1, b_global, conn + kManyIkeSas));
  ASSERT_TRUE(p.ok()) << p.error();
  std::string err;
  for (int i = 0; i < 256; ++i) ASSERT_TRUE(p.a.gw->Initiate("site", &err));
  p.Pump();
  ASSERT_EQ(p.b.gw->children().sad().size(), 256u);
  const std::set<std::uint32_t> before = InboundSpis(*p.a.gw);
  p.Advance(seconds(62));
  EXPECT_GT(p.a.gw->ike_counters().rekey_retries + p.b.gw->ike_counters().rekey_retries, 0u);
  EXPECT_GT(p.b.gw->counters().failed_sas, 0u);
  EXPECT_EQ(p.b.gw->children().sad().size(), 256u);  // nothing lost meanwhile
  if (raise_limit) {
    auto next = config::LoadString(SiteConfig(2, 1, "max_spi = 1024\n", conn), "b.toml");
    ASSERT_TRUE(next.ok);
    ASSERT_TRUE(p.b.gw->Reload(next.config).ok);
  }
  p.Advance(seconds(24));  // to 86 s: past every retry, before the hard lifetime
  p.Traffic();
  if (raise_limit) {
    const std::set<std::uint32_t> after = InboundSpis(*p.a.gw);
    EXPECT_EQ(after.size(), 256u);
    for (std::uint32_t spi : after) EXPECT_EQ(before.count(spi), 0u) << "not rekeyed: " << spi;
    EXPECT_EQ(p.b.gw->children().sad().size(), 256u);
    ExpectCleanDataPath(p);
  } else {
    p.Advance(seconds(10));  // past the hard lifetime
    EXPECT_EQ(p.a.gw->children().sad().size(), 0u);
    EXPECT_EQ(p.b.gw->children().sad().size(), 0u);
    EXPECT_TRUE(p.a.dataplane.outbound.empty());
    EXPECT_TRUE(p.violations.empty()) << p.violations.front();
  }
}

INSTANTIATE_TEST_SUITE_P(RaiseMaxSpi, FullPoolTest, ::testing::Bool());

TEST(GatewayTest, SpiPoolKeepsItsReserveForRekeys) {
  const std::string b_global = "max_spi = 256\nspi_reserve_percent = 50\n";
  GatewayPair p(SiteConfig(1, 2), SiteConfig(2, 1, b_global, kManyIkeSas));
  ASSERT_TRUE(p.ok()) << p.error();
  std::string err;
  for (int i = 0; i < 130; ++i) ASSERT_TRUE(p.a.gw->Initiate("site", &err));
  p.Pump();
  // 128 new CHILD SAs fit beside the reserve; two are refused and counted.
  EXPECT_EQ(p.b.gw->children().sad().size(), 128u);
  EXPECT_EQ(p.b.gw->counters().failed_sas, 2u);
  const nlohmann::json stats = control::StatsJson(*p.b.gw);
  EXPECT_EQ(stats["spi_reserve"], 128);
  EXPECT_EQ(stats["failed_sas"], 2);
  // Every established tunnel can still rekey: the reserve is theirs.
  EXPECT_EQ(p.a.gw->Rekey("site", false), 128);
  p.Pump();
  EXPECT_EQ(p.a.gw->children().counters().rekeys_completed, 128u);
  EXPECT_EQ(p.b.gw->children().sad().size(), 128u);
  ExpectCleanDataPath(p);
}

// Bounds in one place (issue 16 item 6): `spigot stats` shows every row of bounds::kBounds with
// its limit, use, drops and policy; a refused SPI is counted against spi_pool.
TEST(GatewayTest, StatsShowEveryBoundWithItsUseAndDrops) {
  const std::string b_global = "max_spi = 256\nspi_reserve_percent = 50\n";
  GatewayPair p(SiteConfig(1, 2), SiteConfig(2, 1, b_global, kManyIkeSas));
  ASSERT_TRUE(p.ok()) << p.error();
  std::string err;
  for (int i = 0; i < 130; ++i) ASSERT_TRUE(p.a.gw->Initiate("site", &err));
  p.Pump();
  const nlohmann::json b = control::StatsJson(*p.b.gw)["bounds"];
  ASSERT_TRUE(b.is_object());
  EXPECT_EQ(b.size(), bounds::kBounds.size());
  for (const bounds::Bound& row : bounds::kBounds) {
    SCOPED_TRACE(std::string(row.name));
    ASSERT_TRUE(b.contains(std::string(row.name)));
    const nlohmann::json& j = b[std::string(row.name)];
    EXPECT_FALSE(j.value("policy", "").empty());
    ASSERT_TRUE(j.contains("limit"));
    EXPECT_TRUE(j["limit"].is_number());
    EXPECT_TRUE(j.contains("in_use"));
    EXPECT_TRUE(j.contains("dropped"));
  }
  EXPECT_EQ(b["spi_pool"]["limit"], 256);
  EXPECT_EQ(b["spi_pool"]["in_use"], 128);
  EXPECT_EQ(b["spi_pool"]["dropped"], 2);
  EXPECT_EQ(b["negotiation_queue"]["in_use"], 0);
  EXPECT_EQ(b["dataplane_backlog"]["in_use"], 0);
  EXPECT_EQ(b["dataplane_backlog"]["dropped"], 0);
}

// The control thread's lag: each tick is measured against the one before plus kTickPeriod; a
// tick a period or more late makes the next deadline a period after it (the loop's repeating
// timer skips missed periods), so one stall is counted once.
TEST(GatewayTest, TickLagIsHowLateEachTickRanInStats) {
  GatewayPair p(SiteConfig(1, 2), SiteConfig(2, 1));
  ASSERT_TRUE(p.ok()) << p.error();
  Gateway& gw = *p.b.gw;
  gw.Tick();  // the first: its deadline is unknown, not counted
  for (int i = 0; i < 8; ++i) {
    p.clock.Advance(Gateway::kTickPeriod);
    gw.Tick();  // on time
  }
  p.clock.Advance(Gateway::kTickPeriod + std::chrono::milliseconds(3));
  gw.Tick();  // 3 ms late
  p.clock.Advance(Gateway::kTickPeriod + std::chrono::milliseconds(250));
  gw.Tick();  // 253 ms late: the next is due 100 ms after it
  p.clock.Advance(Gateway::kTickPeriod);
  gw.Tick();  // on time
  const nlohmann::json c = control::StatsJson(gw)["control"];
  EXPECT_EQ(c["ticks"], 11);
  EXPECT_EQ(c["tick_lag_us"]["max"], 253000);
  EXPECT_EQ(c["tick_lag_us"]["p50"], 50);  // from above: the first bucket's bound
  EXPECT_EQ(c["tick_lag_us"]["p99"], 253000);  // past the 200 ms bucket: the max
  EXPECT_EQ(gw.tick_lag_seconds().counts()[0], 9u) << "on time: the first bucket";
}

// A data path that has fallen behind on SA commands (bounds::kDataplaneBacklog) holds new
// negotiations in the negotiation queue — nothing lost, nothing installed on top of the backlog —
// and they go on once it drains.
TEST(GatewayTest, DataPathBacklogHoldsNewNegotiationsUntilItDrains) {
  GatewayPair p(SiteConfig(1, 2), SiteConfig(2, 1));
  ASSERT_TRUE(p.ok()) << p.error();
  p.b.dataplane.backlog_ = bounds::kDataplaneBacklog;
  std::string err;
  ASSERT_TRUE(p.a.gw->Initiate("site", &err)) << err;
  p.Pump();
  p.Advance(std::chrono::milliseconds(500));
  EXPECT_EQ(p.b.gw->children().sad().size(), 0u);
  EXPECT_EQ(p.b.gw->counters().dataplane_backlog_holds, 1u);
  nlohmann::json b = control::StatsJson(*p.b.gw)["bounds"];
  EXPECT_EQ(b["dataplane_backlog"]["dropped"], 1);
  EXPECT_GE(b["negotiation_queue"]["in_use"].get<int>(), 1);
  p.b.dataplane.backlog_ = 0;
  p.Advance(std::chrono::seconds(3));
  EXPECT_EQ(p.b.gw->children().sad().size(), 1u);
  EXPECT_EQ(p.a.gw->children().sad().size(), 1u);
  EXPECT_EQ(p.b.gw->counters().dataplane_backlog_holds, 1u);
  EXPECT_EQ(p.b.gw->queue().depth(), 0u);
}

// Control requests whose fields have the wrong types get an answer naming the field (found by
// fuzz/control_fuzz.cc: nlohmann's value() threw type_error, which the control server turned
// into "internal error: [json.exception.type_error.302] ...", and "ms": 1e300 converted to an
// int was undefined behaviour).
TEST(GatewayTest, ControlRequestsWithFieldsOfTheWrongTypeAreAnsweredNotThrown) {
  GatewayPair p(SiteConfig(1, 2), SiteConfig(2, 1));
  ASSERT_TRUE(p.ok()) << p.error();
  const struct {
    const char* request;
    const char* error;
  } cases[] = {
      {R"({"command": 5})", "\"command\" must be a string, got number"},
      {R"({"command": "initiate", "name": ["site"]})", "\"name\" must be a string, got array"},
      {R"({"command": "rekey", "name": "site", "ike": "yes"})", "\"ike\" must be true or false, got string"},
      {R"({"command": "crypto-fault", "action": "slow", "ms": 1e300})", "\"ms\" must be an integer, got number"},
      {R"({"command": "crypto-fault", "action": "slow", "ms": 18446744073709551615})", "\"ms\" is out of range"},
      {R"({"command": "crypto-fault", "action": null})", "\"action\" must be a string, got null"},
      {R"({"command": "hang", "seconds": "10"})", "\"seconds\" must be an integer, got string"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.request);
    nlohmann::json answer;
    ASSERT_NO_THROW(answer = control::HandleCommand(*p.b.gw, nlohmann::json::parse(c.request)));
    EXPECT_EQ(answer, (nlohmann::json{{"error", c.error}}));
  }
  // Well-typed requests are unaffected.
  EXPECT_EQ(control::HandleCommand(*p.b.gw, nlohmann::json::parse(R"({"command": "initiate", "name": "site"})"))["ok"], true);
}

TEST(GatewayTest, CookiesPastTheThresholdAndForTheirHold) {
  // cookie_threshold 0: from the first IKE_SA_INIT on.
  {
    GatewayPair p(SiteConfig(1, 2), SiteConfig(2, 1, "cookie_threshold = 0\n"));
    Establish(p, p.a);
    EXPECT_EQ(p.b.gw->counters().cookies_sent, 1u);
    EXPECT_EQ(p.b.gw->counters().cookies_invalid, 0u);
  }
  GatewayPair p(SiteConfig(1, 2), SiteConfig(2, 1, "cookie_threshold = 2\n", kManyIkeSas));
  ASSERT_TRUE(p.ok()) << p.error();
  std::string err;
  // Two initiators whose IKE_AUTH never arrives stay half-open at B.
  ASSERT_TRUE(p.a.gw->Initiate("site", &err));
  ASSERT_TRUE(p.a.gw->Initiate("site", &err));
  std::set<std::uint64_t> stuck;
  for (const auto& [ours, e] : p.a.gw->ike_sas().entries()) stuck.insert(ours);
  p.net.drop = [&stuck](const Datagram& d) {
    const ike::Header h = d.Header();
    return h.exchange == ike::Exchange::kIkeAuth && stuck.count(h.spi_i) != 0;
  };
  p.Pump();
  EXPECT_EQ(p.b.gw->ike_sas().half_open_count(), 2u);
  EXPECT_EQ(p.b.gw->counters().cookies_sent, 0u);
  // The third is asked for a cookie, and gets in with it.
  ASSERT_TRUE(p.a.gw->Initiate("site", &err));
  p.Pump();
  EXPECT_EQ(p.b.gw->counters().cookies_sent, 1u);
  EXPECT_EQ(Established(*p.b.gw), 1u);
  // The half-open SAs time out (30 s), but cookie mode holds for kCookieHold.
  p.Advance(seconds(35));
  EXPECT_EQ(p.b.gw->ike_sas().half_open_count(), 0u);
  ASSERT_TRUE(p.a.gw->Initiate("site", &err));
  p.Pump();
  EXPECT_EQ(p.b.gw->counters().cookies_sent, 2u);
  p.Advance(seconds(10));  // past the hold
  ASSERT_TRUE(p.a.gw->Initiate("site", &err));
  p.Pump();
  EXPECT_EQ(p.b.gw->counters().cookies_sent, 2u);
  EXPECT_EQ(Established(*p.b.gw), 3u);
}

// A copy of the IKE_SA_INIT request that arrives after IKE_AUTH established the SA (the
// initiator retransmitted it while a backlog held the first one) reaches that SA and is
// dropped; it must not create a second, half-open IKE SA that waits out its timeout.
TEST(GatewayTest, LateIkeSaInitCopyDoesNotCreateASecondSa) {
  GatewayPair p(SiteConfig(1, 2), SiteConfig(2, 1));
  ASSERT_TRUE(p.ok()) << p.error();
  std::optional<Datagram> init;
  p.net.drop = [&init](const Datagram& d) {
    const ike::Header h = d.Header();
    if (h.exchange == ike::Exchange::kIkeSaInit && !h.is_response() && !init) init = d;
    return false;
  };
  Establish(p, p.a);
  ASSERT_TRUE(init.has_value());
  const auto redeliver = [&] {
    p.b.gw->ReceiveIke(init->bytes, init->from, init->natt);
    p.b.gw->WorkQueue();
    p.Pump();
  };
  redeliver();
  EXPECT_EQ(p.b.gw->ike_sas().size(), 1u);
  EXPECT_EQ(p.b.gw->ike_sas().half_open_count(), 0u);
  EXPECT_EQ(p.b.gw->counters().init_in_progress, 1u);
  EXPECT_EQ(Established(*p.b.gw), 1u);
  EXPECT_EQ(p.b.gw->ike_sas().retired_half_open_count(), 1u);
  // The key is kept for the initiator's retransmission window only.
  p.Advance(IkeSaTable::kInitRetransmitWindow + seconds(1));
  EXPECT_EQ(p.b.gw->ike_sas().retired_half_open_count(), 0u);
  EXPECT_EQ(Established(*p.b.gw), 1u);
  ExpectCleanDataPath(p);
}

TEST(GatewayTest, AcquireQueueOverflowIsRefusedWithStatusIpsecQueueOverflow) {
  const std::string site2 =
      "\n[[connection]]\nname = \"site2\"\nlocal_addrs = \"192.0.2.1\"\n"
      "remote_addrs = \"192.0.2.2\"\nlocal_id = \"gw-a\"\nremote_id = \"gw-b\"\n"
      "psk = \"test secret\"\nlocal_ts = \"198.51.100.0/25\"\nremote_ts = \"203.0.113.0/24\"\n";
  // No free IKE worker on A (its one slot holds a job nobody runs): new work, acquires among
  // it, waits in the negotiation queue, max_queue 1.
  GatewayPair p(SiteConfig(1, 2, "max_queue = 1\n") + site2, SiteConfig(2, 1), 1);
  ASSERT_TRUE(p.ok()) << p.error();
  ASSERT_TRUE(p.a.workers.TrySubmit([] {}));
  ASSERT_EQ(p.a.workers.free(), 0u);
  const policy::PolicyId site = p.a.dataplane.PolicyFor("site");
  const policy::PolicyId other = p.a.dataplane.PolicyFor("site2");
  p.a.gw->OnAcquire(site);
  EXPECT_EQ(p.a.gw->queue().depth(), 1u);
  p.a.gw->OnAcquire(other);
  EXPECT_EQ(p.a.gw->queue().stats().overflows, 1u);
  EXPECT_EQ(p.a.gw->counters().acquires_refused, 1u);
  ASSERT_EQ(p.a.dataplane.acquire_failed.size(), 1u);
  EXPECT_EQ(p.a.dataplane.acquire_failed[0], other);
  EXPECT_EQ(engine::kStatusIpsecQueueOverflow, 0xC000A010u);
  const nlohmann::json stats = control::StatsJson(*p.a.gw);
  EXPECT_EQ(stats["queue_overflows"], 1);
  EXPECT_EQ(stats["queue_depth"], 1);
}

TEST(GatewayTest, AcquireInitiatesTheConnection) {
  GatewayPair p(SiteConfig(1, 2), SiteConfig(2, 1));
  ASSERT_TRUE(p.ok()) << p.error();
  p.a.gw->OnAcquire(p.a.dataplane.PolicyFor("site"));
  p.a.gw->OnAcquire(p.a.dataplane.PolicyFor("site"));  // a second packet: one negotiation
  p.Pump();
  EXPECT_EQ(p.a.gw->ike_sas().size(), 1u);
  EXPECT_EQ(Established(*p.a.gw), 1u);
  EXPECT_TRUE(p.a.dataplane.acquire_failed.empty());
  EXPECT_EQ(p.a.dataplane.outbound.size(), 1u);
}

TEST(GatewayTest, ReloadAddsRemovesAndChangesConnections) {
  GatewayPair p(SiteConfig(1, 2), SiteConfig(2, 1, "", kManyIkeSas));
  Establish(p, p.a);
  // Added, with start_action = "start": initiated by the reload. B serves it from "site".
  const std::string site2 =
      "\n[[connection]]\nname = \"site2\"\nlocal_addrs = \"192.0.2.1\"\n"
      "remote_addrs = \"192.0.2.2\"\nlocal_id = \"gw-a\"\nremote_id = \"gw-b\"\n"
      "psk = \"test secret\"\nlocal_ts = \"198.51.100.0/24\"\nremote_ts = \"203.0.113.0/24\"\n"
      "start_action = \"start\"\n";
  auto added = config::LoadString(SiteConfig(1, 2) + site2, "a.toml");
  ASSERT_TRUE(added.ok) << added.error;
  const Gateway::ReloadResult r1 = p.a.gw->Reload(added.config);
  ASSERT_TRUE(r1.ok) << r1.error;
  EXPECT_EQ(r1.diff.added, std::vector<std::string>{"site2"});
  p.Pump();
  EXPECT_EQ(Established(*p.a.gw), 2u);
  EXPECT_EQ(Established(*p.b.gw), 2u);
  // Changed: the running IKE SA takes the new lifetimes.
  auto changed = config::LoadString(SiteConfig(1, 2, "", "child_rekey_time = \"2h\"\n") + site2, "a.toml");
  ASSERT_TRUE(changed.ok) << changed.error;
  const Gateway::ReloadResult r2 = p.a.gw->Reload(changed.config);
  ASSERT_TRUE(r2.ok);
  EXPECT_EQ(r2.diff.changed, std::vector<std::string>{"site"});
  for (const auto& [ours, e] : p.a.gw->ike_sas().entries()) {
    if (e.sa->connection()->name == "site") {
      EXPECT_EQ(e.sa->connection()->child_rekey_time, std::chrono::hours(2));
    }
  }
  // Removed: its IKE SA is deleted on both sides.
  auto removed = config::LoadString(SiteConfig(1, 2, "", "child_rekey_time = \"2h\"\n"), "a.toml");
  const Gateway::ReloadResult r3 = p.a.gw->Reload(removed.config);
  ASSERT_TRUE(r3.ok);
  EXPECT_EQ(r3.diff.removed, std::vector<std::string>{"site2"});
  p.Pump();
  p.Advance(Gateway::kTickPeriod);
  EXPECT_EQ(p.a.gw->ike_sas().size(), 1u);
  EXPECT_EQ(p.b.gw->ike_sas().size(), 1u);
  EXPECT_EQ(p.a.gw->children().sad().size(), 1u);
  EXPECT_EQ(p.b.gw->children().sad().size(), 1u);
  // A limit applied without a restart.
  auto limits = config::LoadString(SiteConfig(1, 2, "max_queue = 7\n", "child_rekey_time = \"2h\"\n"), "a.toml");
  ASSERT_TRUE(p.a.gw->Reload(limits.config).ok);
  EXPECT_EQ(p.a.gw->queue().max_depth(), 7u);
  // A reload that fails leaves everything as it was.
  auto bad = config::LoadString(SiteConfig(1, 2, "", "ike_proposals = \"rot13-md4\"\n"), "a.toml");
  ASSERT_TRUE(bad.ok) << bad.error;  // the proposal is the IKE module's to reject
  const Gateway::ReloadResult r4 = p.a.gw->Reload(bad.config);
  EXPECT_FALSE(r4.ok);
  EXPECT_NE(r4.error.find("connection 'site'"), std::string::npos) << r4.error;
  EXPECT_EQ(p.a.gw->config().global.max_queue, 7u);
  EXPECT_EQ(Established(*p.a.gw), 1u);
}

// A peer that crashed and comes back (RFC 7296 2.4): its first IKE SA carries INITIAL_CONTACT,
// and the responder drops the SAs of its previous life at once — their SPIs with them —
// whatever `unique` says.
TEST(GatewayTest, InitialContactFromARestartedPeerReplacesItsOldSas) {
  GatewayPair p(SiteConfig(1, 2), SiteConfig(2, 1, "", kManyIkeSas));
  Establish(p, p.a);
  const std::uint32_t b_old = OnlyInboundSpi(*p.b.gw);
  p.Restart(p.a, SiteConfig(1, 2));
  ASSERT_TRUE(p.ok()) << p.error();
  std::string err;
  ASSERT_TRUE(p.a.gw->Initiate("site", &err)) << err;
  p.Pump();
  p.Advance(Gateway::kTickPeriod);
  EXPECT_EQ(p.b.gw->counters().unique_replaced, 1u);
  EXPECT_EQ(p.b.gw->ike_sas().size(), 1u);
  EXPECT_EQ(p.b.gw->children().sad().size(), 1u);
  EXPECT_EQ(p.b.gw->children().sad().spi_pool().stats().in_use, 1u);
  EXPECT_NE(OnlyInboundSpi(*p.b.gw), b_old);
  p.Traffic();
  EXPECT_EQ(p.a.lost_packets + p.b.lost_packets, 0u);
  EXPECT_GE(p.a.delivered_packets, 1u);
  EXPECT_GE(p.b.delivered_packets, 1u);
}

// A second IKE SA of the same peer without INITIAL_CONTACT (A still has its first one), under
// each `unique` policy of the responder.
TEST(GatewayTest, UniquePolicyForASecondIkeSaOfOnePeer) {
  struct Case {
    const char* unique;
    std::size_t ike_sas;  // each side, at the end
    bool first_survives;
  };
  for (const Case& c : {Case{"replace", 1, false}, Case{"no", 2, true}, Case{"keep", 1, true}}) {
    SCOPED_TRACE(c.unique);
    GatewayPair p(SiteConfig(1, 2), SiteConfig(2, 1, "", std::string("unique = \"") + c.unique + "\"\n"));
    Establish(p, p.a);
    const std::uint64_t first = p.a.gw->ike_sas().entries().begin()->first;
    std::string err;
    ASSERT_TRUE(p.a.gw->Initiate("site", &err)) << err;
    p.Pump();
    p.Advance(Gateway::kTickPeriod);
    EXPECT_EQ(Established(*p.a.gw), c.ike_sas);
    EXPECT_EQ(Established(*p.b.gw), c.ike_sas);
    EXPECT_EQ(p.b.gw->children().sad().size(), c.ike_sas);
    EXPECT_EQ(p.a.gw->ike_sas().Find(first) != nullptr, c.first_survives);
    EXPECT_EQ(p.b.gw->counters().unique_replaced, c.unique == std::string("replace") ? 1u : 0u);
    EXPECT_EQ(p.b.gw->counters().unique_refused, c.unique == std::string("keep") ? 1u : 0u);
    p.Traffic();
    EXPECT_EQ(p.a.lost_packets + p.b.lost_packets, 0u);
  }
}

TEST(GatewayTest, ShutdownDeletesEverySa) {
  GatewayPair p(SiteConfig(1, 2, "", kManyIkeSas), SiteConfig(2, 1, "", kManyIkeSas));
  Establish(p, p.a);
  std::string err;
  ASSERT_TRUE(p.b.gw->Initiate("site", &err));
  p.Pump();
  ASSERT_EQ(Established(*p.a.gw), 2u);
  p.a.gw->Shutdown();
  EXPECT_FALSE(p.a.gw->finished());
  p.Pump();
  p.Advance(Gateway::kTickPeriod);  // the tick removes the IKE SAs the DELETEs finished
  EXPECT_TRUE(p.a.gw->finished());
  EXPECT_EQ(p.a.gw->ike_sas().size(), 0u);
  EXPECT_EQ(p.b.gw->ike_sas().size(), 0u);
  EXPECT_EQ(p.a.gw->children().sad().size(), 0u);
  EXPECT_EQ(p.b.gw->children().sad().size(), 0u);
  EXPECT_TRUE(p.a.dataplane.inbound.empty());  // no linger when shutting down
  p.Advance(ChildSaManager::kInboundLinger + milliseconds(200));
  EXPECT_TRUE(p.b.dataplane.inbound.empty());
}

// More IKE SAs than the window: the DELETEs leave kShutdownBatch per loop turn, never more than
// kShutdownWindow unanswered, the window refilled by the answers (no tick needed).
TEST(GatewayTest, ShutdownPacesItsDeletes) {
  GatewayPair p(SiteConfig(1, 2, "", kManyIkeSas), SiteConfig(2, 1, "", kManyIkeSas));
  ASSERT_TRUE(p.ok()) << p.error();
  constexpr std::size_t kSas = Gateway::kShutdownWindow + Gateway::kShutdownWindow / 2;
  std::string err;
  for (std::size_t i = 0; i < kSas; ++i) ASSERT_TRUE(p.a.gw->Initiate("site", &err)) << err;
  p.Pump(1000000);
  ASSERT_EQ(Established(*p.a.gw), kSas);
  ASSERT_TRUE(p.net.in_flight.empty());
  const auto is_delete = [](const Datagram& d, bool response) {
    const ike::Header h = d.Header();
    return h.exchange == ike::Exchange::kInformational && h.is_response() == response;
  };
  // Unanswered DELETEs: requests on the wire or delivered, minus answers delivered.
  std::size_t requests_delivered = 0, answers_delivered = 0, most_unanswered = 0;
  p.net.drop = [&](const Datagram& d) {
    requests_delivered += is_delete(d, false);
    answers_delivered += is_delete(d, true);
    std::size_t on_wire = 0;
    for (const Datagram& w : p.net.in_flight) on_wire += is_delete(w, false);
    most_unanswered = std::max(most_unanswered, on_wire + requests_delivered - answers_delivered);
    return false;
  };
  p.a.gw->Shutdown();
  EXPECT_EQ(p.net.in_flight.size(), Gateway::kShutdownBatch);  // the first batch, not all
  p.Pump(1000000);
  EXPECT_EQ(requests_delivered, kSas);
  EXPECT_EQ(answers_delivered, kSas);
  EXPECT_LE(most_unanswered, Gateway::kShutdownWindow);
  EXPECT_GT(most_unanswered, Gateway::kShutdownBatch);
  p.Advance(Gateway::kTickPeriod);  // the tick takes the dead IKE SAs out of the table
  EXPECT_TRUE(p.a.gw->finished());
  EXPECT_EQ(p.a.gw->ike_sas().size(), 0u);
  EXPECT_EQ(p.b.gw->ike_sas().size(), 0u);
}

TEST(GatewayTest, ShutdownGivesUpOnSilentPeersAfterTheGrace) {
  GatewayPair p(SiteConfig(1, 2), SiteConfig(2, 1));
  Establish(p, p.a);
  p.net.drop = [](const Datagram&) { return true; };
  p.a.gw->Shutdown();
  p.Advance(Gateway::kShutdownGrace - milliseconds(200));
  EXPECT_FALSE(p.a.gw->finished());
  p.Advance(milliseconds(300));
  EXPECT_TRUE(p.a.gw->finished());
}

// Answers extend the shutdown: a peer still answering is not cut off kShutdownGrace after
// SIGTERM. b gets one of a's DELETEs at 0 s and then one per retransmission round at least 3 s
// after the last (a resends at 1, 3, 7, 15 s): answers at 0, 3 and 7 s keep it going past 5 s;
// then the next round (15 s) is more than the grace away, and a exits at about 7 + 5 s.
TEST(GatewayTest, ShutdownWaitsWhileAnswersComeThenGivesUpAfterTheGrace) {
  GatewayPair p(SiteConfig(1, 2), SiteConfig(2, 1, "", kManyIkeSas));
  ASSERT_TRUE(p.ok()) << p.error();
  std::string err;
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(p.a.gw->Initiate("site", &err)) << err;
  p.Pump();
  ASSERT_EQ(p.a.gw->ike_sas().size(), 10u);
  std::optional<ike::TimePoint> last_pass;
  p.net.drop = [&](const Datagram& d) {
    const ike::Header h = d.Header();
    if (h.exchange != ike::Exchange::kInformational || (h.flags & ike::kFlagResponse) != 0) return false;
    if (last_pass && p.clock.Now() - *last_pass < std::chrono::seconds(3)) return true;
    last_pass = p.clock.Now();
    return false;
  };
  p.a.gw->Shutdown();
  p.Advance(Gateway::kShutdownGrace + milliseconds(500));
  EXPECT_FALSE(p.a.gw->finished()) << "an answer came 3 s in: it goes on";
  p.Advance(std::chrono::seconds(8));  // the answer at 7 s (plus retransmission jitter) + 5 s
  EXPECT_TRUE(p.a.gw->finished()) << "no answer for the grace after 7 s";
  EXPECT_EQ(p.a.gw->ike_sas().size(), 7u);
  EXPECT_EQ(p.b.gw->ike_sas().size(), 7u);
  EXPECT_LT(Gateway::kShutdownGrace, Gateway::kShutdownLimit);
}

// Dead peer detection at scale: traffic is proof of life (no probe), probes stay under their
// per-second budget, and a peer that went silent loses its SAs and SPIs.
TEST(GatewayTest, DeadPeerDetectionProbesOnlySilentPeersWithinItsBudget) {
  const std::string global = "max_dpd_per_second = 5\n";
  const std::string conn = std::string(kManyIkeSas) + "dpd_delay = \"30s\"\n";
  GatewayPair p(SiteConfig(1, 2, global, conn), SiteConfig(2, 1, global, conn));
  ASSERT_TRUE(p.ok()) << p.error();
  std::string err;
  constexpr int kTunnels = 100;
  for (int i = 0; i < kTunnels; ++i) ASSERT_TRUE(p.a.gw->Initiate("site", &err)) << err;
  p.Pump();
  ASSERT_EQ(Established(*p.a.gw), static_cast<std::size_t>(kTunnels));
  auto dpd = [](Gateway& gw, const char* what) -> std::uint64_t {
    return control::StatsJson(gw)["ike"]["dpd"][what];
  };

  // Two minutes with ESP from the peer on every tunnel every 5 s: nobody is probed. (The
  // tunnels share one policy — one peer, the same selectors — so Traffic() would use one.)
  for (int t = 0; t < 24; ++t) {
    for (Node* n : {&p.a, &p.b}) {
      for (auto& [spi, in] : n->dataplane.inbound) in.counters->rx_packets += 1;
    }
    p.Advance(seconds(5));
  }
  EXPECT_EQ(dpd(*p.a.gw, "probes") + dpd(*p.b.gw, "probes"), 0u);
  EXPECT_GT(dpd(*p.a.gw, "skipped_traffic"), 0u);

  // Silence: every tunnel gets probed (by one side or the other: a probe is heard from), never
  // more than 5 a second per gateway although all 100 fall due within the 3 s of jitter.
  auto probes = [&] { return dpd(*p.a.gw, "probes") + dpd(*p.b.gw, "probes"); };
  std::uint64_t last_a = dpd(*p.a.gw, "probes"), last_b = dpd(*p.b.gw, "probes");
  std::uint64_t most = 0;
  for (int t = 0; t < 60; ++t) {
    p.Advance(seconds(1));
    const std::uint64_t a = dpd(*p.a.gw, "probes"), b = dpd(*p.b.gw, "probes");
    most = std::max({most, a - last_a, b - last_b});
    last_a = a;
    last_b = b;
  }
  EXPECT_GE(probes(), static_cast<std::uint64_t>(kTunnels));
  EXPECT_LE(most, 5u);
  EXPECT_GT(dpd(*p.a.gw, "deferred") + dpd(*p.b.gw, "deferred"), 0u);
  EXPECT_EQ(Established(*p.a.gw), static_cast<std::size_t>(kTunnels));  // the peer answered

  // B goes silent: A's probes go unanswered, and its SAs and SPIs are released.
  p.net.drop = [](const Datagram&) { return true; };
  p.Advance(seconds(300));
  EXPECT_EQ(p.a.gw->ike_sas().size(), 0u);
  EXPECT_EQ(p.a.gw->children().sad().size(), 0u);
  EXPECT_EQ(p.a.gw->children().sad().spi_pool().stats().in_use, 0u);
}

// ---------------------------------------------------------------- virtual IPs, initiator side

// A (192.0.2.1) asks B for an IPv4 address (vips); B hands them out of a pool.
std::string VipClientConfig() {
  return "[global]\nlisten = \"192.0.2.1\"\n"
         "\n[[connection]]\nname = \"home\"\nlocal_addrs = \"192.0.2.1\"\n"
         "remote_addrs = \"192.0.2.2\"\nlocal_id = \"rw\"\nremote_id = \"gw\"\n"
         "psk = \"test secret\"\nlocal_ts = \"0.0.0.0/0\"\nvips = \"0.0.0.0\"\n"
         "remote_ts = \"203.0.113.0/24\"\n";
}
std::string VipServerConfig() {
  return "[global]\nlisten = \"192.0.2.2\"\n"
         "\n[[pool]]\nname = \"rw\"\naddrs = \"198.18.0.0/29\"\n"
         "\n[[connection]]\nname = \"rw\"\nlocal_addrs = \"192.0.2.2\"\nremote_addrs = \"%any\"\n"
         "local_id = \"gw\"\nremote_id = \"%any\"\npsk = \"test secret\"\n"
         "local_ts = \"203.0.113.0/24\"\npools = \"rw\"\n";
}

std::vector<std::string> VirtualIpEvents(const test_tools::FakeDataPlane& d) {
  std::vector<std::string> out;
  for (const auto& e : d.events) {
    if (e.kind == Kind::kAddVirtualIp) out.push_back("add " + e.connection + " " + e.address);
    if (e.kind == Kind::kRemoveVirtualIp) out.push_back("remove " + e.connection + " " + e.address);
  }
  return out;
}

TEST(GatewayTest, AssignedVirtualIpGoesOnTheTunUntilTheIkeSaGoesAndSurvivesIkeRekeys) {
  GatewayPair p(VipClientConfig(), VipServerConfig());
  ASSERT_TRUE(p.ok()) << p.error();
  std::string err;
  ASSERT_TRUE(p.a.gw->Initiate("home", &err)) << err;
  p.Pump();
  ASSERT_EQ(Established(*p.a.gw), 1u);
  ASSERT_EQ(p.a.gw->ike_sas().entries().begin()->second.sa->virtual_ips().size(), 1u);
  const std::string vip =
      SelectorPrefixes(p.a.gw->ike_sas().entries().begin()->second.sa->virtual_ips())[0].ToString();
  const std::string added = "add home " + vip;
  ASSERT_EQ(VirtualIpEvents(p.a.dataplane), std::vector<std::string>{added});
  EXPECT_EQ(vip.rfind("198.18.0.", 0), 0u) << vip;
  EXPECT_EQ(p.a.dataplane.virtual_ips["home"], std::set<std::string>{vip});
  // The responder's addresses are the peer's: nothing goes on its TUN.
  EXPECT_TRUE(VirtualIpEvents(p.b.dataplane).empty());
  // Its CHILD SA stands for the address: traffic from it goes into the tunnel.
  const std::string host = vip.substr(0, vip.find('/'));
  EXPECT_NE(p.a.dataplane.OutboundSpiFor(host, "203.0.113.1"), 0u);

  // IKE rekeys from either side (after B's, A's IKE SA is the responder of its rekey): the
  // address stays where it is, no remove and add again.
  for (Node* rekeyer : {&p.a, &p.b}) {
    const std::uint64_t old_spi = p.a.gw->ike_sas().entries().begin()->first;
    ASSERT_EQ(rekeyer->gw->Rekey(rekeyer == &p.a ? "home" : "rw", true), 1);
    p.Pump();
    p.Advance(Gateway::kTickPeriod);  // the tick removes the old IKE SA, deleted
    ASSERT_EQ(p.a.gw->ike_sas().size(), 1u);
    EXPECT_NE(p.a.gw->ike_sas().entries().begin()->first, old_spi);
    EXPECT_EQ(VirtualIpEvents(p.a.dataplane), std::vector<std::string>{added});
    EXPECT_EQ(p.a.dataplane.virtual_ips["home"], std::set<std::string>{vip});
  }

  // Terminated: the address leaves the TUN.
  ASSERT_EQ(p.a.gw->Terminate("home"), 1);
  p.Pump();
  p.Advance(Gateway::kTickPeriod);
  EXPECT_EQ(p.a.gw->ike_sas().size(), 0u);
  EXPECT_EQ(VirtualIpEvents(p.a.dataplane), (std::vector<std::string>{added, "remove home " + vip}));
  EXPECT_TRUE(p.a.dataplane.virtual_ips.empty());

  // Again: the same address comes back (sticky lease) and goes on the TUN again.
  ASSERT_TRUE(p.a.gw->Initiate("home", &err)) << err;
  p.Pump();
  EXPECT_EQ(p.a.dataplane.virtual_ips["home"], std::set<std::string>{vip});
  EXPECT_EQ(p.a.dataplane.Count(Kind::kAddVirtualIp), 2u);
}

// RFC 4555 3.6: the addresses a connection announces with MOBIKE are its literal local_addrs
// when IKE listens on the wildcard address, only the listen address otherwise (the others
// cannot be reached), and none known for "%any".
TEST(GatewayTest, MobikeAddressListIsTheReachableLocalAddrs) {
  const auto conf = [](const char* listen, const char* local_addrs) {
    return std::string("[global]\nlisten = \"") + listen + "\"\n\n[[connection]]\nname = \"rw\"\nlocal_addrs = \"" +
           local_addrs + "\"\nremote_addrs = \"%any\"\nlocal_id = \"gw\"\nremote_id = \"%any\"\n"
           "psk = \"test secret\"\nlocal_ts = \"203.0.113.0/24\"\nremote_ts = \"198.51.100.0/24\"\n";
  };
  const auto addresses = [](const std::string& text) {
    std::vector<std::string> out;
    auto loaded = config::LoadString(text, "b.toml");
    EXPECT_TRUE(loaded.ok) << loaded.error;
    Connections c;
    std::string err;
    EXPECT_TRUE(c.Apply(loaded.config, "b.toml", nullptr, &err)) << err;
    if (const Connection* rw = c.Find("rw"))
      for (const auto& a : rw->params->local_addresses) out.push_back(ike::ToString(a));
    return out;
  };
  EXPECT_EQ(addresses(conf("0.0.0.0", "192.0.2.2, 192.0.2.3, 2001:db8::2, 192.0.2.2")),
            (std::vector<std::string>{"192.0.2.2:0", "192.0.2.3:0", "[2001:db8::2]:0"}));
  EXPECT_EQ(addresses(conf("192.0.2.2", "192.0.2.2, 192.0.2.3")), (std::vector<std::string>{"192.0.2.2:0"}));
  EXPECT_TRUE(addresses(conf("192.0.2.2", "192.0.2.3")).empty());
  EXPECT_TRUE(addresses(conf("0.0.0.0", "%any")).empty());
}

// The host's addresses as a test sets them (netlink in the daemon).
class FakeHost final : public HostNetwork {
 public:
  std::vector<io::IpAddress> Addresses() override { return addresses; }
  io::IpAddress RouteSource(const io::IpAddress&) override { return route_source; }
  std::vector<io::IpAddress> addresses;
  io::IpAddress route_source;
};

io::IpAddress Ip(const char* text) { return io::IpAddress::Of(*io::Endpoint::Parse(text, 0)); }

const ike::IkeSa& OnlySa(const Gateway& gw) {
  EXPECT_EQ(gw.ike_sas().size(), 1u);
  return *gw.ike_sas().entries().begin()->second.sa;
}

// RFC 4555 3.5, spigot the original initiator: A listens on the wildcard address with
// local_addrs %any, so its local address is the source of its route to B (and NAT detection
// finds no NAT). When that address goes and another comes (a burst of address events), A waits
// for the burst to settle, moves the IKE SA and every CHILD SA's ESP source to the new address
// and sends UPDATE_SA_ADDRESSES from it: B follows (after its return routability check, which
// A answers) on the same IKE SA, and traffic flows both ways again.
TEST(GatewayTest, MobikeInitiatorMovesToTheHostsNewAddress) {
  std::string a_toml = SiteConfig(1, 2);
  const auto replace = [&](const std::string& from, const std::string& to) {
    const auto at = a_toml.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    a_toml.replace(at, from.size(), to);
  };
  replace("listen = \"192.0.2.1\"", "listen = \"0.0.0.0\"");
  replace("local_addrs = \"192.0.2.1\"", "local_addrs = \"%any\"");
  GatewayPair p(a_toml, SiteConfig(2, 1));
  FakeHost host;
  host.addresses = {Ip("192.0.2.1"), Ip("198.51.100.1")};
  host.route_source = Ip("192.0.2.1");
  p.a.host = &host;
  p.Restart(p.a, a_toml);
  Establish(p, p.a);
  const ike::IkeSa& a_sa = OnlySa(*p.a.gw);
  const std::uint64_t spi_i = a_sa.spi_i(), spi_r = a_sa.spi_r();
  ASSERT_TRUE(a_sa.mobike());
  EXPECT_EQ(ike::ToString(a_sa.local()), "192.0.2.1:500");
  EXPECT_FALSE(a_sa.nat_detected());  // NAT detection hashed the real address, not 0.0.0.0
  ASSERT_EQ(p.a.dataplane.outbound.size(), 1u);
  EXPECT_EQ(p.a.dataplane.outbound.begin()->second.source, Ip("192.0.2.1"));
  p.Traffic();
  EXPECT_EQ(p.a.delivered_packets + p.b.delivered_packets, 2u);

  // Nothing changed for this SA: an event moves nothing.
  p.a.gw->OnAddressesChanged();
  p.Advance(milliseconds(500));
  EXPECT_EQ(p.a.gw->ike_counters().mobike_updates_sent, 0u);

  // 192.0.2.5 comes, 192.0.2.1 goes: two events; nothing moves until they settle.
  p.a.transport.aliases = {"192.0.2.5"};
  host.addresses = {Ip("192.0.2.1"), Ip("192.0.2.5"), Ip("198.51.100.1")};
  p.a.gw->OnAddressesChanged();
  p.Advance(milliseconds(100));
  host.addresses = {Ip("192.0.2.5"), Ip("198.51.100.1")};
  host.route_source = Ip("192.0.2.5");
  p.a.gw->OnAddressesChanged();
  p.Advance(Gateway::kAddressSettle / 2);
  EXPECT_EQ(p.a.gw->ike_counters().mobike_updates_sent, 0u) << "moved before the burst settled";
  p.Advance(Gateway::kAddressSettle);
  const ike::IkeCounters& ac = p.a.gw->ike_counters();
  EXPECT_EQ(ac.mobike_local_moves, 1u);
  EXPECT_EQ(ac.mobike_updates_sent, 1u);
  const ike::IkeSa& moved = OnlySa(*p.a.gw);
  EXPECT_EQ(moved.spi_i(), spi_i);
  EXPECT_EQ(moved.spi_r(), spi_r);
  EXPECT_EQ(ike::ToString(moved.local()), "192.0.2.5:500");
  EXPECT_FALSE(moved.nat_detected());
  // Every CHILD SA leaves from the new address (one data-plane command).
  EXPECT_EQ(p.a.dataplane.outbound.begin()->second.source, Ip("192.0.2.5"));
  EXPECT_EQ(p.a.dataplane.Count(Kind::kMovePeer), 1u);
  // B followed on the same IKE SA after checking the new address (COOKIE2 echoed by A).
  const ike::IkeSa& b_sa = OnlySa(*p.b.gw);
  EXPECT_EQ(b_sa.spi_i(), spi_i);
  EXPECT_EQ(ike::ToEndpoint(b_sa.remote()).AddressString(), "192.0.2.5");
  const ike::IkeCounters& bc = p.b.gw->ike_counters();
  EXPECT_EQ(bc.mobike_updates, 1u);
  EXPECT_GE(bc.mobike_rr_checks, 1u);
  EXPECT_EQ(bc.mobike_rr_passed, bc.mobike_rr_checks);
  EXPECT_EQ(bc.mobike_rr_failed, 0u);
  ASSERT_EQ(p.b.dataplane.outbound.size(), 1u);
  EXPECT_EQ(p.b.dataplane.outbound.begin()->second.peer.AddressString(), "192.0.2.5");
  const std::uint64_t delivered = p.a.delivered_packets + p.b.delivered_packets;
  p.Traffic();
  EXPECT_EQ(p.a.delivered_packets + p.b.delivered_packets, delivered + 2);
  EXPECT_EQ(Established(*p.a.gw), 1u);
  EXPECT_EQ(Established(*p.b.gw), 1u);

  // Every address gone: nowhere to move; the SA stays and this is counted.
  host.addresses = {};
  host.route_source = {};
  p.a.gw->OnAddressesChanged();
  p.Advance(Gateway::kAddressSettle * 2);
  EXPECT_EQ(p.a.gw->ike_counters().mobike_no_local_address, 1u);
  EXPECT_EQ(p.a.gw->ike_counters().mobike_updates_sent, 1u);
  EXPECT_EQ(ike::ToString(OnlySa(*p.a.gw).local()), "192.0.2.5:500");
  ExpectCleanDataPath(p);
}

// With a literal local_addrs list the initiator moves only among those addresses, keeping the
// one in use while the host has it; on a bound listen address nothing can move.
TEST(GatewayTest, MobikeInitiatorMovesAmongItsLiteralLocalAddrs) {
  std::string a_toml = SiteConfig(1, 2);
  a_toml.replace(a_toml.find("listen = \"192.0.2.1\""), 20, "listen = \"0.0.0.0\"");
  a_toml.replace(a_toml.find("local_addrs = \"192.0.2.1\""), 25, "local_addrs = \"192.0.2.1, 192.0.2.6\"");
  GatewayPair p(a_toml, SiteConfig(2, 1));
  FakeHost host;
  host.addresses = {Ip("192.0.2.1"), Ip("192.0.2.6"), Ip("192.0.2.9")};
  host.route_source = Ip("192.0.2.9");  // not in local_addrs: never chosen
  p.a.host = &host;
  p.a.transport.aliases = {"192.0.2.6"};
  p.Restart(p.a, a_toml);
  Establish(p, p.a);
  EXPECT_EQ(ike::ToString(OnlySa(*p.a.gw).local()), "192.0.2.1:500");
  p.a.gw->OnAddressesChanged();
  p.Advance(Gateway::kAddressSettle * 2);
  EXPECT_EQ(p.a.gw->ike_counters().mobike_local_moves, 0u);  // 192.0.2.1 is still there
  host.addresses = {Ip("192.0.2.6"), Ip("192.0.2.9")};
  p.a.gw->OnAddressesChanged();
  p.Advance(Gateway::kAddressSettle * 2);
  EXPECT_EQ(p.a.gw->ike_counters().mobike_local_moves, 1u);
  EXPECT_EQ(ike::ToString(OnlySa(*p.a.gw).local()), "192.0.2.6:500");
  EXPECT_EQ(ike::ToEndpoint(OnlySa(*p.b.gw).remote()).AddressString(), "192.0.2.6");
  p.Traffic();
  ExpectCleanDataPath(p);
}

// A route to the peer that leads into our own tunnel (its preferred source our virtual IP) is
// no path: the initiator keeps the address it has while the host still has it.
TEST(GatewayTest, MobikeInitiatorIgnoresARouteIntoItsOwnTunnel) {
  std::string a_toml = VipClientConfig();
  a_toml.replace(a_toml.find("listen = \"192.0.2.1\""), 20, "listen = \"0.0.0.0\"");
  a_toml.replace(a_toml.find("local_addrs = \"192.0.2.1\""), 25, "local_addrs = \"%any\"");
  GatewayPair p(a_toml, VipServerConfig());
  FakeHost host;
  host.addresses = {Ip("192.0.2.1")};
  host.route_source = Ip("192.0.2.1");
  p.a.host = &host;
  p.Restart(p.a, a_toml);
  ASSERT_TRUE(p.ok()) << p.error();
  std::string err;
  ASSERT_TRUE(p.a.gw->Initiate("home", &err)) << err;
  p.Pump();
  ASSERT_EQ(Established(*p.a.gw), 1u);
  const ike::IkeSa& sa = OnlySa(*p.a.gw);
  ASSERT_TRUE(sa.mobike());
  ASSERT_EQ(sa.virtual_ips().size(), 1u);
  io::IpAddress vip;
  vip.family = AF_INET;
  std::copy(sa.virtual_ips()[0].start.begin(), sa.virtual_ips()[0].start.begin() + 4, vip.bytes.begin());
  host.addresses.push_back(vip);
  host.route_source = vip;
  p.a.gw->OnAddressesChanged();
  p.Advance(Gateway::kAddressSettle * 2);
  EXPECT_EQ(p.a.gw->ike_counters().mobike_local_moves, 0u);
  EXPECT_EQ(ike::ToString(OnlySa(*p.a.gw).local()), "192.0.2.1:500");
  // The outer address gone as well: nowhere to go.
  host.addresses = {vip};
  p.a.gw->OnAddressesChanged();
  p.Advance(Gateway::kAddressSettle * 2);
  EXPECT_EQ(p.a.gw->ike_counters().mobike_local_moves, 0u);
  EXPECT_EQ(p.a.gw->ike_counters().mobike_no_local_address, 1u);
}

}  // namespace
}  // namespace spigot::gateway
