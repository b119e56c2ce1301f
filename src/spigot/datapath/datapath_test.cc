// The data path fed packets the way its threads are: a peer's OutboundPath seals, our
// InboundPath opens, hostile input is counted under its reason and never delivered.
#include "spigot/datapath/datapath.h"

#include <gtest/gtest.h>

#include <poll.h>

#include <cstring>

namespace spigot::datapath {
namespace {

constexpr policy::PolicyId kPolicy = 7;
constexpr std::uint32_t kSpi = 0xC0DE0001;
using Clock = std::chrono::steady_clock;

std::unique_ptr<const policy::SpdSnapshot> Snapshot(const char* local, const char* remote) {
  policy::SpdBuilder b;
  b.Add(kPolicy, *policy::Prefix::Parse(local), *policy::Prefix::Parse(remote));
  return b.Build();
}

// An IPv4 UDP packet from `src` to `dst` (dotted quads' last octet in the given /24s).
std::vector<std::uint8_t> Ipv4(std::array<std::uint8_t, 4> src, std::array<std::uint8_t, 4> dst,
                               std::size_t len = 84, std::uint8_t fill = 0x11) {
  std::vector<std::uint8_t> p(len, fill);
  p[0] = 0x45;
  p[2] = static_cast<std::uint8_t>(len >> 8);
  p[3] = static_cast<std::uint8_t>(len);
  p[8] = 64;
  p[9] = 17;
  std::memcpy(&p[12], src.data(), 4);
  std::memcpy(&p[16], dst.data(), 4);
  return p;
}

struct Fixture : ::testing::Test {
  Fixture()
      : our_spd(Snapshot("198.51.100.0/24", "203.0.113.0/24")),
        peer_spd(Snapshot("203.0.113.0/24", "198.51.100.0/24")),
        inbound(counters, our_spd),
        peer_out(peer_counters, peer_spd, [this](policy::PolicyId id) { acquired.push_back(id); return true; },
                 nullptr),
        our_reader(*our_spd.RegisterReader()),
        peer_reader(*peer_spd.RegisterReader()) {
    keymat.Resize(crypto::SuiteInfo(crypto::EspSuite::kAesGcm128).keymat_len());
    for (std::size_t i = 0; i < keymat.size(); ++i) keymat.data()[i] = static_cast<std::uint8_t>(i);
  }

  void InstallPair(bool report_first_packet = false, io::Endpoint peer = {}) {
    InboundSpec in;
    in.spi = kSpi;
    in.keymat = keymat;
    in.policy = kPolicy;
    in.counters = sa_counters;
    in.report_first_packet = report_first_packet;
    in.peer = peer;
    ASSERT_TRUE(inbound.Install(std::move(in)));
    inbound.ApplyCommands();
    OutboundSpec out;
    out.policy = kPolicy;
    out.spi = kSpi;
    out.keymat = keymat;
    out.peer = *io::Endpoint::Parse("192.0.2.1", 4500);
    ASSERT_TRUE(peer_out.SetSa(std::move(out)));
    peer_out.ApplyCommands(mgr(), [this](const io::Endpoint&, std::span<const std::uint8_t> d) {
      flushed.emplace_back(d.begin(), d.end());
    });
  }

  // The peer seals an inner packet; returns the datagram (empty if not sent).
  std::vector<std::uint8_t> PeerSends(const std::vector<std::uint8_t>& inner) {
    std::vector<std::uint8_t> buf(esp::kSealHeadroom + inner.size() + esp::kSealTailroom);
    std::memcpy(buf.data() + esp::kSealHeadroom, inner.data(), inner.size());
    esp::PacketView pkt{buf, esp::kSealHeadroom, inner.size()};
    const io::Endpoint* peer = nullptr;
    if (peer_out.Process(mgr(), peer_reader, pkt, peer, Clock::now()) != OutboundPath::Verdict::kSend) return {};
    return {pkt.bytes().begin(), pkt.bytes().end()};
  }

  InboundPath::Verdict Receive(std::vector<std::uint8_t> datagram, std::vector<std::uint8_t>* inner = nullptr,
                               const io::Endpoint& from = {}) {
    esp::PacketView pkt{datagram, 0, datagram.size()};
    std::span<const std::uint8_t> ike;
    const auto v = inbound.Process(mgr(), our_reader, pkt, ike, {}, from);
    if (inner != nullptr && v == InboundPath::Verdict::kDeliver) inner->assign(pkt.bytes().begin(), pkt.bytes().end());
    return v;
  }

  static crypto::ImbManager& mgr() { return crypto::ImbManager::ForThisThread(); }

  Counters counters, peer_counters;
  policy::Spd our_spd, peer_spd;
  InboundPath inbound;
  OutboundPath peer_out;
  policy::Spd::Reader our_reader, peer_reader;
  crypto::SecureBytes keymat;
  std::shared_ptr<SaCounters> sa_counters = std::make_shared<SaCounters>();
  std::vector<policy::PolicyId> acquired;
  std::vector<std::vector<std::uint8_t>> flushed;
};

using In = InboundPath::Verdict;


// One eventfd write per wake-up, not per command: pushes into a queue the thread has not
// drained yet ride on the first one's wake-up, and none is lost.
TEST(Mailbox, WakesOncePerDrainAndDeliversEveryCommand) {
  Mailbox<int> box;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(box.Push(i));
  EXPECT_EQ(box.wakeups(), 1u);
  pollfd p{box.fd(), POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, 0), 1) << "the first push did not make the eventfd readable";
  std::vector<int> got;
  box.Drain([&](int c) { got.push_back(c); });
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(poll(&p, 1, 0), 0) << "the drain left the eventfd readable";
  ASSERT_TRUE(box.Push(3));
  EXPECT_EQ(box.wakeups(), 2u) << "a push into the drained queue must wake the thread again";
  ASSERT_EQ(poll(&p, 1, 0), 1);
  box.Drain([&](int c) { got.push_back(c); });
  EXPECT_EQ(got.back(), 3);
}

TEST_F(Fixture, DeliversAndCounts) {
  InstallPair();
  const auto inner = Ipv4({203, 0, 113, 5}, {198, 51, 100, 7});
  std::vector<std::uint8_t> got;
  ASSERT_EQ(Receive(PeerSends(inner), &got), In::kDeliver);
  EXPECT_EQ(got, inner);
  EXPECT_EQ(counters.rx_packets.load(), 1u);
  EXPECT_EQ(sa_counters->packets.load(), 1u);
}

// The new SA of a rekey the peer started reports its first authentic packet, once; forged or
// replayed packets do not count.
TEST_F(Fixture, FirstAuthenticPacketIsReportedOnce) {
  std::vector<std::uint32_t> reported;
  inbound.OnFirstPacket([&](std::uint32_t spi) { reported.push_back(spi); });
  InstallPair(true);
  const auto inner = Ipv4({203, 0, 113, 5}, {198, 51, 100, 7});
  auto first = PeerSends(inner);
  auto forged = first;
  forged.back() ^= 1;
  EXPECT_EQ(Receive(forged), In::kDrop);
  EXPECT_TRUE(reported.empty()) << "a forged packet counted as the peer using the SA";
  ASSERT_EQ(Receive(first), In::kDeliver);
  EXPECT_EQ(reported, std::vector<std::uint32_t>{kSpi});
  EXPECT_EQ(Receive(first), In::kDrop);  // replay
  ASSERT_EQ(Receive(PeerSends(inner)), In::kDeliver);
  EXPECT_EQ(reported.size(), 1u);
}

// RFC 7296 2.23: an SA's packet from another source is reported only if it is authentic and the
// newest yet; once per new source; and MovePeer makes the new source the peer. A forged packet,
// or a replay of an old packet from elsewhere, reports nothing.
TEST_F(Fixture, NewSourceIsReportedOnlyForAuthenticNewestPackets) {
  const io::Endpoint peer = *io::Endpoint::Parse("192.0.2.2", 4500);
  const io::Endpoint moved = *io::Endpoint::Parse("192.0.2.2", 61000);
  const io::Endpoint spoofer = *io::Endpoint::Parse("192.0.2.66", 4500);
  std::vector<std::pair<std::uint32_t, std::string>> reports;
  inbound.OnNewSource([&](std::uint32_t spi, const io::Endpoint& from) {
    reports.emplace_back(spi, from.ToString());
    return true;
  });
  InstallPair(false, peer);
  const auto inner = Ipv4({203, 0, 113, 5}, {198, 51, 100, 7});
  auto p1 = PeerSends(inner), p2 = PeerSends(inner), p3 = PeerSends(inner);
  ASSERT_EQ(Receive(p2, nullptr, peer), In::kDeliver);
  EXPECT_TRUE(reports.empty());
  auto forged = p3;
  forged.back() ^= 1;
  EXPECT_EQ(Receive(forged, nullptr, spoofer), In::kDrop);
  EXPECT_EQ(Receive(p2, nullptr, spoofer), In::kDrop);  // a replay
  // p1 is authentic and inside the window, but older than p2: delivered, not a reason to move.
  EXPECT_EQ(Receive(p1, nullptr, spoofer), In::kDeliver);
  EXPECT_TRUE(reports.empty()) << reports.front().second;
  ASSERT_EQ(Receive(p3, nullptr, moved), In::kDeliver);
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0], std::make_pair(kSpi, moved.ToString()));
  ASSERT_EQ(Receive(PeerSends(inner), nullptr, moved), In::kDeliver);
  EXPECT_EQ(reports.size(), 1u) << "the same new source is reported once";
  ASSERT_TRUE(inbound.MovePeer({kSpi}, moved));
  inbound.ApplyCommands();
  ASSERT_EQ(Receive(PeerSends(inner), nullptr, moved), In::kDeliver);
  EXPECT_EQ(reports.size(), 1u);
  ASSERT_EQ(Receive(PeerSends(inner), nullptr, peer), In::kDeliver);  // and back
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[1].second, peer.ToString());
}

// A report the control thread refused is made again on the next such packet.
TEST_F(Fixture, RefusedNewSourceReportIsRepeated) {
  const io::Endpoint peer = *io::Endpoint::Parse("192.0.2.2", 4500);
  const io::Endpoint moved = *io::Endpoint::Parse("192.0.2.2", 61000);
  int calls = 0;
  inbound.OnNewSource([&](std::uint32_t, const io::Endpoint&) { return ++calls > 1; });
  InstallPair(false, peer);
  const auto inner = Ipv4({203, 0, 113, 5}, {198, 51, 100, 7});
  for (int i = 0; i < 3; ++i) ASSERT_EQ(Receive(PeerSends(inner), nullptr, moved), In::kDeliver);
  EXPECT_EQ(calls, 2);
}

// MovePeer on the outbound side: the SA's next packet goes to the new peer.
TEST_F(Fixture, OutboundMovePeerRedirectsTheNextPacket) {
  InstallPair();
  const auto inner = Ipv4({203, 0, 113, 5}, {198, 51, 100, 7});
  const auto sent_to = [&] {
    std::vector<std::uint8_t> buf(esp::kSealHeadroom + inner.size() + esp::kSealTailroom);
    std::memcpy(buf.data() + esp::kSealHeadroom, inner.data(), inner.size());
    esp::PacketView pkt{buf, esp::kSealHeadroom, inner.size()};
    const io::Endpoint* to = nullptr;
    EXPECT_EQ(peer_out.Process(mgr(), peer_reader, pkt, to, Clock::now()), OutboundPath::Verdict::kSend);
    return to != nullptr ? to->ToString() : std::string("none");
  };
  EXPECT_EQ(sent_to(), "192.0.2.1:4500");
  ASSERT_TRUE(peer_out.MovePeer({kSpi + 1}, *io::Endpoint::Parse("192.0.2.9", 4500)));  // another SA
  ASSERT_TRUE(peer_out.MovePeer({kSpi}, *io::Endpoint::Parse("192.0.2.1", 61001)));
  peer_out.ApplyCommands(mgr(), [](const io::Endpoint&, std::span<const std::uint8_t>) {});
  EXPECT_EQ(sent_to(), "192.0.2.1:61001");
}

// An SA idle for a whole ReleaseIdleKeys period gives its expanded keys back, and its next
// packet expands them again; sequence numbers and the replay window carry on.
TEST_F(Fixture, IdleSasReleaseTheirExpandedKeysAndExpandThemAgainOnUse) {
  InstallPair();
  const auto inner = Ipv4({203, 0, 113, 5}, {198, 51, 100, 7});
  auto first = PeerSends(inner);
  ASSERT_EQ(Receive(first), In::kDeliver);
  EXPECT_EQ(inbound.expanded_keys(), 1u);
  EXPECT_EQ(peer_out.expanded_keys(), 1u);
  EXPECT_EQ(inbound.ReleaseIdleKeys(), 0u);  // used since the last call: kept
  EXPECT_EQ(peer_out.ReleaseIdleKeys(), 0u);
  EXPECT_EQ(inbound.ReleaseIdleKeys(), 1u);  // a whole period without a packet
  EXPECT_EQ(peer_out.ReleaseIdleKeys(), 1u);
  EXPECT_EQ(inbound.expanded_keys(), 0u);
  EXPECT_EQ(peer_out.expanded_keys(), 0u);
  EXPECT_EQ(Receive(first), In::kDrop);  // still a replay
  EXPECT_EQ(counters.replay.load(), 1u);
  std::vector<std::uint8_t> got;
  ASSERT_EQ(Receive(PeerSends(inner), &got), In::kDeliver);
  EXPECT_EQ(got, inner);
  EXPECT_EQ(inbound.expanded_keys(), 1u);
  EXPECT_EQ(peer_out.expanded_keys(), 1u);
  EXPECT_EQ(counters.rx_packets.load(), 2u);
  EXPECT_EQ(counters.bad_icv.load(), 0u);
}

TEST_F(Fixture, HostileInputIsCountedUnderItsReasonAndNeverDelivered) {
  InstallPair();
  const auto good = PeerSends(Ipv4({203, 0, 113, 5}, {198, 51, 100, 7}));
  ASSERT_EQ(Receive(good), In::kDeliver);

  EXPECT_EQ(Receive(good), In::kDrop);  // replayed
  EXPECT_EQ(counters.replay.load(), 1u);

  auto bad_icv = PeerSends(Ipv4({203, 0, 113, 5}, {198, 51, 100, 7}));
  bad_icv.back() ^= 0x40;
  EXPECT_EQ(Receive(bad_icv), In::kDrop);
  EXPECT_EQ(counters.bad_icv.load(), 1u);

  auto unknown = PeerSends(Ipv4({203, 0, 113, 5}, {198, 51, 100, 7}));
  unknown[3] ^= 0x01;
  EXPECT_EQ(Receive(unknown), In::kDrop);
  EXPECT_EQ(counters.unknown_spi.load(), 1u);

  const auto truncated = PeerSends(Ipv4({203, 0, 113, 5}, {198, 51, 100, 7}));
  EXPECT_EQ(Receive({truncated.begin(), truncated.begin() + 20}), In::kDrop);
  EXPECT_EQ(Receive({truncated.begin(), truncated.begin() + 3}), In::kDrop);
  EXPECT_EQ(counters.malformed.load(), 2u);

  // An authentic packet whose inner addresses are outside the CHILD SA's selectors.
  const auto outside = PeerSends(Ipv4({203, 0, 113, 5}, {198, 51, 100, 7}));
  auto spoofed_inner = Ipv4({192, 0, 2, 99}, {198, 51, 100, 7});
  // The peer's SPD would not send it; seal it through the peer's SA by hand instead.
  {
    std::vector<std::uint8_t> buf(esp::kSealHeadroom + spoofed_inner.size() + esp::kSealTailroom);
    std::memcpy(buf.data() + esp::kSealHeadroom, spoofed_inner.data(), spoofed_inner.size());
    esp::PacketView pkt{buf, esp::kSealHeadroom, spoofed_inner.size()};
    crypto::EspCipher c;
    ASSERT_TRUE(c.Init(mgr(), crypto::EspSuite::kAesGcm128, keymat));
    esp::OutboundState st{kSpi, false, 1000};
    ASSERT_EQ(esp::Seal(mgr(), c, st, esp::kNextHeaderIpv4, pkt), esp::Status::kOk);
    EXPECT_EQ(Receive({pkt.bytes().begin(), pkt.bytes().end()}), In::kDrop);
    EXPECT_EQ(counters.selector_mismatch.load(), 1u);
  }
  (void)outside;

  // Random bytes of every small length.
  std::uint64_t x = 88172645463325252ull;
  for (std::size_t len = 0; len < 300; ++len) {
    std::vector<std::uint8_t> junk(len);
    for (auto& b : junk) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      b = static_cast<std::uint8_t>(x);
    }
    if (len >= 4) junk[0] = 0xAA;  // not the non-ESP marker
    EXPECT_NE(Receive(junk), In::kDeliver) << len;
  }
  EXPECT_EQ(counters.rx_packets.load(), 1u) << "something hostile was delivered";

  // The tunnel keeps working.
  EXPECT_EQ(Receive(PeerSends(Ipv4({203, 0, 113, 5}, {198, 51, 100, 7}))), In::kDeliver);
}

// A road warrior's SA carries its own narrowed selectors (its inner /32): the inbound check
// uses them, not the connection's wider policy, so one peer cannot send as another.
TEST_F(Fixture, AnSasOwnSelectorsDecideWhatItMayCarry) {
  InboundSpec in;
  in.spi = kSpi;
  in.keymat = keymat;
  in.policy = kPolicy;  // the connection's policy would admit all of 203.0.113.0/24
  in.selectors.push_back({*policy::Prefix::Parse("198.51.100.0/24"),
                          *policy::Prefix::Parse("203.0.113.5")});
  ASSERT_TRUE(inbound.Install(std::move(in)));
  inbound.ApplyCommands();
  auto seal = [&](const std::vector<std::uint8_t>& inner, std::uint32_t seq) {
    std::vector<std::uint8_t> buf(esp::kSealHeadroom + inner.size() + esp::kSealTailroom);
    std::memcpy(buf.data() + esp::kSealHeadroom, inner.data(), inner.size());
    esp::PacketView pkt{buf, esp::kSealHeadroom, inner.size()};
    crypto::EspCipher c;
    EXPECT_TRUE(c.Init(mgr(), crypto::EspSuite::kAesGcm128, keymat));
    esp::OutboundState st{kSpi, false, seq};
    EXPECT_EQ(esp::Seal(mgr(), c, st, esp::kNextHeaderIpv4, pkt), esp::Status::kOk);
    return std::vector<std::uint8_t>(pkt.bytes().begin(), pkt.bytes().end());
  };
  EXPECT_EQ(Receive(seal(Ipv4({203, 0, 113, 5}, {198, 51, 100, 7}), 1)), In::kDeliver);
  // Another peer's inner address, inside the connection's remote_ts: dropped and counted.
  EXPECT_EQ(Receive(seal(Ipv4({203, 0, 113, 6}, {198, 51, 100, 7}), 2)), In::kDrop);
  EXPECT_EQ(counters.selector_mismatch.load(), 1u);
  EXPECT_EQ(counters.rx_packets.load(), 1u);
}

TEST_F(Fixture, IkeAndKeepalivesAreSeparated) {
  std::vector<std::uint8_t> ike = {0, 0, 0, 0, 1, 2, 3, 4};
  esp::PacketView pkt{ike, 0, ike.size()};
  std::span<const std::uint8_t> msg;
  EXPECT_EQ(inbound.Process(mgr(), our_reader, pkt, msg), In::kIke);
  EXPECT_EQ(msg.size(), 4u);
  EXPECT_EQ(Receive({0xFF}), In::kDrop);
  EXPECT_EQ(counters.keepalives.load(), 1u);
}

TEST_F(Fixture, OutboundWithoutPolicyOrSaIsDropped) {
  std::vector<std::uint8_t> buf(esp::kSealHeadroom + 84 + esp::kSealTailroom);
  auto send = [&](std::vector<std::uint8_t> inner) {
    std::memcpy(buf.data() + esp::kSealHeadroom, inner.data(), inner.size());
    esp::PacketView pkt{buf, esp::kSealHeadroom, inner.size()};
    const io::Endpoint* peer = nullptr;
    return peer_out.Process(mgr(), peer_reader, pkt, peer, Clock::now());
  };
  EXPECT_EQ(send(Ipv4({203, 0, 113, 5}, {192, 0, 2, 1})), OutboundPath::Verdict::kDrop);
  EXPECT_EQ(peer_counters.no_policy.load(), 1u);
  EXPECT_EQ(send(Ipv4({203, 0, 113, 5}, {198, 51, 100, 1})), OutboundPath::Verdict::kDrop);
  EXPECT_EQ(peer_counters.no_sa.load(), 1u);
  EXPECT_TRUE(acquired.empty());
}

TEST_F(Fixture, TrapHoldsAcquiresOnceOverflowsExactlyAndFlushesInOrder) {
  ASSERT_TRUE(peer_out.SetTrap(kPolicy, true));
  peer_out.ApplyCommands(mgr(), [](const io::Endpoint&, std::span<const std::uint8_t>) {});
  const std::size_t bound = policy::AcquireQueueOptions{}.max_packets_per_acquire;
  const std::size_t burst = bound + 10;
  std::size_t held = 0, dropped = 0;
  for (std::size_t i = 0; i < burst; ++i) {
    auto inner = Ipv4({203, 0, 113, 5}, {198, 51, 100, 1}, 84, static_cast<std::uint8_t>(i));
    std::vector<std::uint8_t> buf(esp::kSealHeadroom + inner.size() + esp::kSealTailroom);
    std::memcpy(buf.data() + esp::kSealHeadroom, inner.data(), inner.size());
    esp::PacketView pkt{buf, esp::kSealHeadroom, inner.size()};
    const io::Endpoint* peer = nullptr;
    const auto v = peer_out.Process(mgr(), peer_reader, pkt, peer, Clock::now());
    (v == OutboundPath::Verdict::kHeld ? held : dropped)++;
  }
  EXPECT_EQ(held, bound);
  EXPECT_EQ(dropped, burst - bound);
  EXPECT_EQ(peer_counters.no_sa_queue_full.load(), burst - bound) << "every overflow counted, exactly";
  ASSERT_EQ(acquired.size(), 1u) << "one acquire per policy, not per packet";
  EXPECT_EQ(peer_counters.acquires.load(), 1u);
  // The SA comes up: the held packets go out first, in order, and decrypt on our side.
  InstallPair();
  ASSERT_EQ(flushed.size(), bound);
  for (std::size_t i = 0; i < flushed.size(); ++i) {
    std::vector<std::uint8_t> inner;
    ASSERT_EQ(Receive(flushed[i], &inner), In::kDeliver) << i;
    EXPECT_EQ(inner[40], static_cast<std::uint8_t>(i)) << "held packets reordered";
  }
}

TEST_F(Fixture, FailedNegotiationDropsTheHeldPacketsCounted) {
  ASSERT_TRUE(peer_out.SetTrap(kPolicy, true));
  peer_out.ApplyCommands(mgr(), [](const io::Endpoint&, std::span<const std::uint8_t>) {});
  for (int i = 0; i < 5; ++i) {
    auto inner = Ipv4({203, 0, 113, 5}, {198, 51, 100, 1});
    std::vector<std::uint8_t> buf(esp::kSealHeadroom + inner.size() + esp::kSealTailroom);
    std::memcpy(buf.data() + esp::kSealHeadroom, inner.data(), inner.size());
    esp::PacketView pkt{buf, esp::kSealHeadroom, inner.size()};
    const io::Endpoint* peer = nullptr;
    peer_out.Process(mgr(), peer_reader, pkt, peer, Clock::now());
  }
  ASSERT_TRUE(peer_out.AcquireFailed(kPolicy));
  peer_out.ApplyCommands(mgr(), [](const io::Endpoint&, std::span<const std::uint8_t>) {});
  EXPECT_EQ(peer_counters.acquire_dropped.load(), 5u);
}

}  // namespace
}  // namespace spigot::datapath
