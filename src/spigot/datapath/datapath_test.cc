// The data path fed packets the way its threads are: a peer's OutboundPath seals, our
// InboundPath opens, hostile input is counted under its reason and never delivered.
#include "spigot/datapath/datapath.h"
#include "spigot/datapath/handoff.h"

#include <gtest/gtest.h>

#include <poll.h>

#include <algorithm>
#include <cstring>
#include <thread>

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

  InboundSpec OurInbound() {
    InboundSpec in;
    in.spi = kSpi;
    in.keymat = keymat;
    in.policy = kPolicy;
    in.counters = sa_counters;
    return in;
  }

  void InstallPair(bool report_first_packet = false, io::Endpoint peer = {}) {
    InboundSpec in = OurInbound();
    in.report_first_packet = report_first_packet;
    in.peer = peer;
    ASSERT_TRUE(inbound.Install(std::move(in)));
    inbound.ApplyCommands();
    InstallPeerOutbound();
  }

  void InstallPeerOutbound() {
    OutboundSpec out;
    out.policy = kPolicy;
    out.spi = kSpi;
    out.keymat = keymat;
    out.peer = *io::Endpoint::Parse("192.0.2.1", 4500);
    ASSERT_TRUE(peer_out.SetSa(std::move(out)));
    peer_out.ApplyCommands(mgr(), [this](const Route&, std::span<const std::uint8_t> d) {
      flushed.emplace_back(d.begin(), d.end());
    });
  }

  // The peer seals an inner packet; returns the datagram (empty if not sent).
  std::vector<std::uint8_t> PeerSends(const std::vector<std::uint8_t>& inner) {
    std::vector<std::uint8_t> buf(esp::kSealHeadroom + inner.size() + esp::kSealTailroom);
    std::memcpy(buf.data() + esp::kSealHeadroom, inner.data(), inner.size());
    esp::PacketView pkt{buf, esp::kSealHeadroom, inner.size()};
    const Route* peer = nullptr;
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

// An SA whose install command arrived while the batch holding its first packet was being read
// (the peer used it at once): the packet is opened, not dropped as of an unknown SPI.
TEST_F(Fixture, AnSaInstalledWhileItsFirstPacketWasReadOpensIt) {
  InstallPeerOutbound();
  const auto inner = Ipv4({203, 0, 113, 5}, {198, 51, 100, 7});
  const auto datagram = PeerSends(inner);
  ASSERT_TRUE(inbound.Install(OurInbound()));  // pushed, not yet applied
  std::vector<std::uint8_t> got;
  ASSERT_EQ(Receive(datagram, &got), In::kDeliver);
  EXPECT_EQ(got, inner);
  EXPECT_EQ(counters.unknown_spi.load(), 0u);
  // A SPI nobody installs is still unknown.
  auto other = PeerSends(inner);
  other[0] ^= 0xff;
  EXPECT_EQ(Receive(other), In::kDrop);
  EXPECT_EQ(counters.unknown_spi.load(), 1u);
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
    const Route* to = nullptr;
    EXPECT_EQ(peer_out.Process(mgr(), peer_reader, pkt, to, Clock::now()), OutboundPath::Verdict::kSend);
    if (to == nullptr) return std::string("none");
    return to->peer.ToString() +
           (to->source.empty() ? "" : " from " + io::Endpoint::From(to->source, 0).AddressString());
  };
  EXPECT_EQ(sent_to(), "192.0.2.1:4500");
  ASSERT_TRUE(peer_out.MovePeer({kSpi + 1}, *io::Endpoint::Parse("192.0.2.9", 4500)));  // another SA
  ASSERT_TRUE(peer_out.MovePeer({kSpi}, *io::Endpoint::Parse("192.0.2.1", 61001)));
  peer_out.ApplyCommands(mgr(), [](const Route&, std::span<const std::uint8_t>) {});
  EXPECT_EQ(sent_to(), "192.0.2.1:61001");
  // MOBIKE, our side moving: the source changes with the peer, in the same command.
  ASSERT_TRUE(peer_out.MovePeer({kSpi}, *io::Endpoint::Parse("192.0.2.1", 4500),
                                io::IpAddress::Of(*io::Endpoint::Parse("192.0.2.5", 0))));
  peer_out.ApplyCommands(mgr(), [](const Route&, std::span<const std::uint8_t>) {});
  EXPECT_EQ(sent_to(), "192.0.2.1:4500 from 192.0.2.5");
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
    const Route* peer = nullptr;
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
  peer_out.ApplyCommands(mgr(), [](const Route&, std::span<const std::uint8_t>) {});
  const std::size_t bound = policy::AcquireQueueOptions{}.max_packets_per_acquire;
  const std::size_t burst = bound + 10;
  std::size_t held = 0, dropped = 0;
  for (std::size_t i = 0; i < burst; ++i) {
    auto inner = Ipv4({203, 0, 113, 5}, {198, 51, 100, 1}, 84, static_cast<std::uint8_t>(i));
    std::vector<std::uint8_t> buf(esp::kSealHeadroom + inner.size() + esp::kSealTailroom);
    std::memcpy(buf.data() + esp::kSealHeadroom, inner.data(), inner.size());
    esp::PacketView pkt{buf, esp::kSealHeadroom, inner.size()};
    const Route* peer = nullptr;
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
  peer_out.ApplyCommands(mgr(), [](const Route&, std::span<const std::uint8_t>) {});
  for (int i = 0; i < 5; ++i) {
    auto inner = Ipv4({203, 0, 113, 5}, {198, 51, 100, 1});
    std::vector<std::uint8_t> buf(esp::kSealHeadroom + inner.size() + esp::kSealTailroom);
    std::memcpy(buf.data() + esp::kSealHeadroom, inner.data(), inner.size());
    esp::PacketView pkt{buf, esp::kSealHeadroom, inner.size()};
    const Route* peer = nullptr;
    peer_out.Process(mgr(), peer_reader, pkt, peer, Clock::now());
  }
  ASSERT_TRUE(peer_out.AcquireFailed(kPolicy));
  peer_out.ApplyCommands(mgr(), [](const Route&, std::span<const std::uint8_t>) {});
  EXPECT_EQ(peer_counters.acquire_dropped.load(), 5u);
}


// ---------------------------------------------------------------- multi-buffer batches

// Without an engine, CBC + HMAC SAs are sealed and opened in batches (esp::CryptoBatch). The
// reference is esp::Seal / esp::Open one packet at a time with the same keys.
struct BatchSa {
  policy::PolicyId policy;
  std::uint32_t spi;
  crypto::EspSuite suite;
  bool esn;
  const char* remote;  // the outbound policy's destination prefix
};
constexpr BatchSa kBatchSas[] = {
    {7, 0xBA000007, crypto::EspSuite::kAesCbc256HmacSha256, false, "198.51.100.0/26"},
    {8, 0xBA000008, crypto::EspSuite::kAesCbc128HmacSha1, true, "198.51.100.64/26"},
    {9, 0xBA000009, crypto::EspSuite::kAesGcm128, false, "198.51.100.128/26"},
    {10, 0xBA00000A, crypto::EspSuite::kAesCbc256HmacSha1, false, "198.51.100.192/27"},
    {11, 0xBA00000B, crypto::EspSuite::kAesCbc128HmacSha256, true, "198.51.100.224/27"},
};

crypto::SecureBytes BatchKeymat(const BatchSa& sa) {
  crypto::SecureBytes k;
  k.Resize(crypto::SuiteInfo(sa.suite).keymat_len());
  for (std::size_t i = 0; i < k.size(); ++i) k.data()[i] = static_cast<std::uint8_t>(i * 5 + sa.spi);
  return k;
}

// Packet number `i` of a run: to SA i % 5's prefix, 60 to 1400 bytes.
std::vector<std::uint8_t> BatchInner(std::size_t i) {
  const std::uint8_t dst[] = {5, 70, 130, 200, 230};
  return Ipv4({203, 0, 113, static_cast<std::uint8_t>(i)}, {198, 51, 100, dst[i % 5]},
              60 + (i * 211) % 1341, static_cast<std::uint8_t>(i));
}

// The datagram esp::Seal makes of `inner` for `sa` with sequence number `seq`.
std::vector<std::uint8_t> ReferenceSeal(const BatchSa& sa, const std::vector<std::uint8_t>& inner,
                                        std::uint64_t seq) {
  crypto::EspCipher cipher;
  EXPECT_TRUE(cipher.Init(crypto::ImbManager::ForThisThread(), sa.suite, BatchKeymat(sa)));
  std::vector<std::uint8_t> buf(esp::kSealHeadroom + inner.size() + esp::kSealTailroom);
  std::memcpy(buf.data() + esp::kSealHeadroom, inner.data(), inner.size());
  esp::PacketView pkt{buf, esp::kSealHeadroom, inner.size()};
  esp::OutboundState out{sa.spi, sa.esn, seq};
  EXPECT_EQ(esp::Seal(crypto::ImbManager::ForThisThread(), cipher, out, esp::kNextHeaderIpv4, pkt),
            esp::Status::kOk);
  return {pkt.bytes().begin(), pkt.bytes().end()};
}

// Every batch size from 1 to 64 through an OutboundPath with five SAs (four CBC + HMAC, one
// GCM): each datagram is byte for byte what esp::Seal one at a time makes, sequence numbers
// in TUN order per SA, and every packet counted once.
TEST(MultiBuffer, OutboundBatchesSealLikeThePerPacketPath) {
  crypto::ImbManager& mgr = crypto::ImbManager::ForThisThread();
  policy::SpdBuilder b;
  for (const BatchSa& sa : kBatchSas)
    b.Add(sa.policy, *policy::Prefix::Parse("203.0.113.0/24"), *policy::Prefix::Parse(sa.remote));
  policy::Spd spd(b.Build());
  auto reader = *spd.RegisterReader();
  Counters counters;
  OutboundPath out(counters, spd, nullptr, nullptr);
  std::vector<std::shared_ptr<SaCounters>> sa_counters;
  for (const BatchSa& sa : kBatchSas) {
    OutboundSpec spec;
    spec.policy = sa.policy;
    spec.spi = sa.spi;
    spec.suite = sa.suite;
    spec.keymat = BatchKeymat(sa);
    spec.esn = sa.esn;
    spec.peer = *io::Endpoint::Parse("192.0.2.1", static_cast<std::uint16_t>(4500 + sa.policy));
    sa_counters.push_back(std::make_shared<SaCounters>());
    spec.counters = sa_counters.back();
    ASSERT_TRUE(out.SetSa(std::move(spec)));
  }
  out.ApplyCommands(mgr, [](const Route&, std::span<const std::uint8_t>) { FAIL(); });
  std::uint64_t seq[5] = {1, 1, 1, 1, 1};
  std::size_t next = 0, total = 0;
  for (std::size_t size = 1; size <= 64; ++size) {
    std::vector<std::vector<std::uint8_t>> buffers(size);
    std::vector<std::vector<std::uint8_t>> sent;
    std::vector<std::uint16_t> sent_ports, want_ports;
    std::vector<std::vector<std::uint8_t>> want_cbc, want_gcm;
    const OutboundPath::SendFn capture = [&](const Route& to, std::span<const std::uint8_t> d) {
      sent.emplace_back(d.begin(), d.end());
      sent_ports.push_back(to.peer.port());
    };
    for (std::size_t i = 0; i < size; ++i) {
      const auto inner = BatchInner(next + i);
      const std::size_t s = (next + i) % 5;
      buffers[i].assign(esp::kSealHeadroom + inner.size() + esp::kSealTailroom, 0);
      std::memcpy(buffers[i].data() + esp::kSealHeadroom, inner.data(), inner.size());
      esp::PacketView pkt{buffers[i], esp::kSealHeadroom, inner.size()};
      const Route* peer = nullptr;
      const auto v = out.Process(mgr, reader, pkt, peer, Clock::now());
      (kBatchSas[s].suite == crypto::EspSuite::kAesGcm128 ? want_gcm : want_cbc)
          .push_back(ReferenceSeal(kBatchSas[s], inner, seq[s]++));
      if (kBatchSas[s].suite == crypto::EspSuite::kAesGcm128) {
        ASSERT_EQ(v, OutboundPath::Verdict::kSend);  // the AEADs stay on the per-packet path
        EXPECT_EQ(std::vector<std::uint8_t>(pkt.bytes().begin(), pkt.bytes().end()), want_gcm.back());
      } else {
        ASSERT_EQ(v, OutboundPath::Verdict::kQueued);
        want_ports.push_back(static_cast<std::uint16_t>(4500 + kBatchSas[s].policy));
      }
    }
    EXPECT_EQ(out.batched(), want_cbc.size());
    out.FinishBatch(mgr, capture);
    EXPECT_EQ(out.batched(), 0u);
    ASSERT_EQ(sent.size(), want_cbc.size()) << "batch of " << size;
    for (std::size_t k = 0; k < sent.size(); ++k)
      EXPECT_EQ(sent[k], want_cbc[k]) << "batch of " << size << ", CBC packet " << k;
    EXPECT_EQ(sent_ports, want_ports) << "each to its own SA's peer";
    next += size;
    total += size;
  }
  EXPECT_EQ(counters.tx_packets.load(), total);
  std::uint64_t per_sa = 0;
  for (std::size_t s = 0; s < 5; ++s) {
    EXPECT_EQ(sa_counters[s]->packets.load(), seq[s] - 1);
    per_sa += sa_counters[s]->packets.load();
  }
  EXPECT_EQ(per_sa, total);
  EXPECT_EQ(counters.malformed.load(), 0u);
}

// Inbound batches of every size from 1 to 64 over five SAs, each batch with hostile packets
// among good ones: a tampered CBC packet in the middle, a replay of the batch's first packet
// and a packet for an unknown SPI. Only those are dropped, each counted under its reason; all
// their neighbours are delivered, in arrival order per SA, as esp::Open one at a time would.
TEST(MultiBuffer, InboundBatchesDropOnlyTheHostilePacketsAndCountThem) {
  crypto::ImbManager& mgr = crypto::ImbManager::ForThisThread();
  policy::Spd spd(Snapshot("198.51.100.0/24", "203.0.113.0/24"));
  auto reader = *spd.RegisterReader();
  Counters counters;
  InboundPath in(counters, spd);
  std::vector<std::shared_ptr<SaCounters>> sa_counters;
  for (const BatchSa& sa : kBatchSas) {
    InboundSpec spec;
    spec.spi = sa.spi;
    spec.suite = sa.suite;
    spec.keymat = BatchKeymat(sa);
    spec.esn = sa.esn;
    spec.policy = kPolicy;
    sa_counters.push_back(std::make_shared<SaCounters>());
    spec.counters = sa_counters.back();
    ASSERT_TRUE(in.Install(std::move(spec)));
  }
  in.ApplyCommands();
  std::uint64_t seq[5] = {1, 1, 1, 1, 1};
  std::size_t next = 0;
  std::uint64_t want_delivered = 0, want_bad_icv = 0, want_replay = 0, want_unknown = 0;
  std::uint64_t want_sa[5] = {};
  for (std::size_t size = 1; size <= 64; ++size) {
    std::vector<std::vector<std::uint8_t>> datagrams;
    std::vector<std::vector<std::uint8_t>> inners;  // what each datagram should deliver
    for (std::size_t i = 0; i < size; ++i) {
      const std::size_t s = (next + i) % 5;
      inners.push_back(BatchInner(next + i));
      datagrams.push_back(ReferenceSeal(kBatchSas[s], inners.back(), seq[s]++));
    }
    // The packet in the middle, if a CBC one, gets a flipped ciphertext bit.
    std::size_t tampered = size;
    if (size >= 3 && kBatchSas[(next + size / 2) % 5].suite != crypto::EspSuite::kAesGcm128) {
      tampered = size / 2;
      datagrams[tampered][30] ^= 0x08;
      inners[tampered].clear();
      ++want_bad_icv;
    }
    if (size >= 2) {  // a replay of the batch's first packet, and an unknown SPI
      datagrams.push_back(datagrams[0]);
      inners.emplace_back();
      ++want_replay;
      datagrams.push_back(datagrams[size - 1]);
      datagrams.back()[3] ^= 0x55;
      inners.emplace_back();
      ++want_unknown;
    }
    std::vector<std::vector<std::uint8_t>> delivered;
    const InboundPath::DeliverFn deliver = [&](std::span<const std::uint8_t> inner) {
      delivered.emplace_back(inner.begin(), inner.end());
    };
    for (auto& d : datagrams) {
      esp::PacketView pkt{d, 0, d.size()};
      std::span<const std::uint8_t> ike;
      const auto v = in.Process(mgr, reader, pkt, ike, {}, {});
      if (v == In::kDeliver) deliver(pkt.bytes());
      EXPECT_NE(v, In::kIke);
    }
    in.FinishBatch(mgr, reader, deliver);
    EXPECT_EQ(in.batched(), 0u);
    // Per SA, the good packets in arrival order; across SAs GCM (per packet) may come first.
    for (std::size_t s = 0; s < 5; ++s) {
      std::vector<std::vector<std::uint8_t>> want, got;
      for (std::size_t i = 0; i < size; ++i) {
        if ((next + i) % 5 == s && !inners[i].empty()) want.push_back(inners[i]);
      }
      want_sa[s] += want.size();
      for (const auto& d : delivered) {
        if (d[19] == BatchInner(s)[19]) got.push_back(d);  // the destination tells the SA
      }
      EXPECT_EQ(got, want) << "batch of " << size << ", SA " << s;
    }
    want_delivered += size - (tampered < size ? 1 : 0);
    EXPECT_EQ(counters.rx_packets.load(), want_delivered) << "batch of " << size;
    EXPECT_EQ(counters.bad_icv.load(), want_bad_icv) << "batch of " << size;
    EXPECT_EQ(counters.replay.load(), want_replay) << "batch of " << size;
    EXPECT_EQ(counters.unknown_spi.load(), want_unknown) << "batch of " << size;
    next += size;
  }
  for (std::size_t s = 0; s < 5; ++s) EXPECT_EQ(sa_counters[s]->rx_packets.load(), want_sa[s]) << s;
  EXPECT_EQ(counters.malformed.load(), 0u);
  EXPECT_EQ(counters.selector_mismatch.load(), 0u);
}

// A forged copy of a packet that arrives after the genuine one in the same batch is a replay,
// as esp::Open one at a time would count it (replay check before the ICV), not a bad ICV; and
// neither moves the window.
TEST(MultiBuffer, ForgedDuplicateInABatchIsCountedAsOpenWouldCountIt) {
  crypto::ImbManager& mgr = crypto::ImbManager::ForThisThread();
  policy::Spd spd(Snapshot("198.51.100.0/24", "203.0.113.0/24"));
  auto reader = *spd.RegisterReader();
  Counters counters;
  InboundPath in(counters, spd);
  InboundSpec spec;
  spec.spi = kBatchSas[0].spi;
  spec.suite = kBatchSas[0].suite;
  spec.keymat = BatchKeymat(kBatchSas[0]);
  spec.policy = kPolicy;
  ASSERT_TRUE(in.Install(std::move(spec)));
  in.ApplyCommands();
  const auto inner = BatchInner(0);
  auto genuine = ReferenceSeal(kBatchSas[0], inner, 1);
  auto forged = genuine;
  forged[40] ^= 1;
  auto forged_first = ReferenceSeal(kBatchSas[0], inner, 2);
  auto genuine_second = forged_first;
  forged_first[40] ^= 1;
  std::vector<std::vector<std::uint8_t>> batch = {genuine, forged, forged_first, genuine_second};
  std::size_t delivered = 0;
  for (auto& d : batch) {
    esp::PacketView pkt{d, 0, d.size()};
    std::span<const std::uint8_t> ike;
    ASSERT_EQ(in.Process(mgr, reader, pkt, ike, {}, {}), In::kQueued);
  }
  in.FinishBatch(mgr, reader, [&](std::span<const std::uint8_t>) { ++delivered; });
  EXPECT_EQ(delivered, 2u);
  EXPECT_EQ(counters.replay.load(), 1u);   // the forgery after its genuine twin
  EXPECT_EQ(counters.bad_icv.load(), 1u);  // the forgery before it
  EXPECT_EQ(counters.rx_packets.load(), 2u);
}


// ---------------------------------------------------------------- several data-path threads

// Outbound SAs are in every thread's table (app/dataplane.h): the copies, sealing on their own
// threads at once, must never send the same sequence number (RFC 4303 3.3.3; for AES-GCM the
// number is also the IV, and a repeated IV under one key gives the key away).
TEST_F(Fixture, CopiesOfAnOutboundSaOnTwoThreadsNeverRepeatASequenceNumber) {
  constexpr std::size_t kPerThread = 20000;
  OutboundSpec spec;
  spec.policy = kPolicy;
  spec.spi = kSpi;
  spec.keymat = keymat;
  spec.peer = *io::Endpoint::Parse("192.0.2.1", 4500);
  spec.next_seq = std::make_shared<std::atomic<std::uint64_t>>(1);
  std::vector<std::uint32_t> seqs[2];
  auto seal_on_a_thread = [&](int t) {
    crypto::ImbManager& m = crypto::ImbManager::ForThisThread();
    Counters c;
    OutboundPath path(c, peer_spd, nullptr, nullptr);
    auto reader = peer_spd.RegisterReader();
    ASSERT_TRUE(path.SetSa(spec));
    path.ApplyCommands(m, [](const Route&, std::span<const std::uint8_t>) {});
    const auto inner = Ipv4({203, 0, 113, 5}, {198, 51, 100, 7});
    std::vector<std::uint8_t> buf(esp::kSealHeadroom + inner.size() + esp::kSealTailroom);
    for (std::size_t i = 0; i < kPerThread; ++i) {
      std::memcpy(buf.data() + esp::kSealHeadroom, inner.data(), inner.size());
      esp::PacketView pkt{buf, esp::kSealHeadroom, inner.size()};
      const Route* route = nullptr;
      ASSERT_EQ(path.Process(m, *reader, pkt, route, Clock::now()), OutboundPath::Verdict::kSend);
      const auto b = pkt.bytes();
      seqs[t].push_back(std::uint32_t{b[4]} << 24 | std::uint32_t{b[5]} << 16 |
                        std::uint32_t{b[6]} << 8 | b[7]);
    }
  };
  std::thread t0(seal_on_a_thread, 0), t1(seal_on_a_thread, 1);
  t0.join();
  t1.join();
  std::vector<std::uint32_t> all(seqs[0]);
  all.insert(all.end(), seqs[1].begin(), seqs[1].end());
  std::sort(all.begin(), all.end());
  ASSERT_EQ(all.size(), 2 * kPerThread);
  EXPECT_EQ(std::adjacent_find(all.begin(), all.end()), all.end()) << "a sequence number sent twice";
  EXPECT_EQ(all.front(), 1u);
  EXPECT_EQ(all.back(), 2 * kPerThread) << "numbers skipped";
  EXPECT_EQ(spec.next_seq->load(), 2 * kPerThread + 1);
  // Each thread's own packets leave in order.
  for (const auto& s : seqs) EXPECT_TRUE(std::is_sorted(s.begin(), s.end()));
}

// An inbound SA lives on its owner alone (OwnerOf); a datagram another thread received is handed
// over (Handoff) and opened there. The replay window stays exact whichever way a packet came:
// every packet of the peer arrives twice, once on the owner's socket and once on another
// thread's (a duplicate, or a NAT that moved the flow mid-stream), both threads running at once.
// Each is delivered exactly once; every second copy is a replay.
TEST_F(Fixture, ReplayWindowHoldsWhenAnSasPacketsArriveOnTwoThreads) {
  constexpr std::size_t kPackets = 3000;
  constexpr std::size_t kThreads = 2;
  const std::size_t owner = OwnerOf(kSpi, kThreads);
  InstallPeerOutbound();
  ASSERT_TRUE(inbound.Install(OurInbound()));  // on the owner only
  const auto inner = Ipv4({203, 0, 113, 5}, {198, 51, 100, 7});
  std::vector<std::vector<std::uint8_t>> sent;
  for (std::size_t i = 0; i < kPackets; ++i) sent.push_back(PeerSends(inner));
  Handoff owner_inbox;
  const io::Endpoint from = *io::Endpoint::Parse("192.0.2.2", 4500);
  std::atomic<bool> other_done{false};
  // The other thread: every datagram is for an SA it does not own.
  std::thread other([&] {
    for (const auto& d : sent) {
      std::uint32_t spi = 0;
      ASSERT_TRUE(esp::PeekSpi(d, spi));
      ASSERT_NE(OwnerOf(spi, kThreads), 1 - owner);
      while (owner_inbox.TryPush(d, from, {}) == Handoff::Push::kFull) std::this_thread::yield();
      owner_inbox.Wake();
    }
    other_done = true;
  });
  // The owner: its own socket's copies, interleaved with what the inbox holds.
  std::size_t delivered = 0;
  auto open = [&](std::span<std::uint8_t> d) {
    esp::PacketView pkt{d, 0, d.size()};
    std::span<const std::uint8_t> ike;
    if (inbound.Process(mgr(), our_reader, pkt, ike, {}, from) == In::kDeliver) {
      EXPECT_TRUE(std::equal(pkt.bytes().begin(), pkt.bytes().end(), inner.begin(), inner.end()));
      ++delivered;
    }
  };
  auto serve_inbox = [&] {
    const std::size_t n = owner_inbox.Peek(32, [&](Handoff::Item& item) { open(item.datagram()); });
    owner_inbox.Release();
    return n;
  };
  for (std::size_t i = 0; i < kPackets; ++i) {
    auto copy = sent[i];
    open(copy);
    if (i % 7 == 0) serve_inbox();
  }
  for (;;) {
    const bool done = other_done.load();
    if (serve_inbox() == 0 && done) break;
  }
  other.join();
  EXPECT_EQ(delivered, kPackets);
  EXPECT_EQ(counters.rx_packets.load(), kPackets);
  // Copies more than the window behind the newest count as replays too (RFC 4303 3.4.3).
  EXPECT_EQ(counters.replay.load(), kPackets);
  EXPECT_EQ(owner_inbox.pushed(), kPackets);
  EXPECT_EQ(owner_inbox.dropped(), 0u);
}

}  // namespace
}  // namespace spigot::datapath
