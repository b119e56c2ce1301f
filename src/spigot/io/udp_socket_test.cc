#include "spigot/io/udp_socket.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <cstring>
#include <string>
#include <vector>

namespace spigot::io {
namespace {

std::unique_ptr<UdpSocket> BindOrDie(const char* address, UdpSocket::Options options = {}) {
  std::string error;
  auto socket = UdpSocket::Bind(*Endpoint::Parse(address, 0), options, &error);
  EXPECT_NE(socket, nullptr) << error;
  return socket;
}

bool WaitReadable(const UdpSocket& socket) {
  pollfd p{socket.fd(), POLLIN, 0};
  return poll(&p, 1, 2000) == 1;
}

// Sends kCount datagrams of different sizes in one SendBatch and receives them with RecvBatch,
// on the loopback address of one family.
void BatchRoundTrip(const char* loopback) {
  auto rx = BindOrDie(loopback);
  auto tx = BindOrDie(loopback);
  ASSERT_TRUE(rx && tx);
  EXPECT_NE(rx->local_endpoint().port(), 0);

  constexpr std::size_t kCount = 10;
  std::vector<std::vector<std::uint8_t>> payloads;
  std::vector<SendItem> items;
  for (std::size_t i = 0; i < kCount; ++i) {
    payloads.emplace_back(100 + i * 37, static_cast<std::uint8_t>(i));
  }
  for (const auto& p : payloads) items.push_back(SendItem{rx->local_endpoint(), p});
  const BatchResult sent = tx->SendBatch(items);
  EXPECT_EQ(sent.count, kCount);
  EXPECT_EQ(sent.error, 0);

  std::array<std::array<std::uint8_t, 2048>, kCount + 2> buffers{};
  std::array<RecvSlot, kCount + 2> slots;
  for (std::size_t i = 0; i < slots.size(); ++i) slots[i].buffer = buffers[i];
  std::size_t received = 0;
  while (received < kCount && WaitReadable(*rx)) {
    const BatchResult r = rx->RecvBatch(std::span(slots).subspan(received));
    ASSERT_TRUE(r.error == 0 || r.error == EAGAIN) << r.error;
    received += r.count;
  }
  ASSERT_EQ(received, kCount);
  for (std::size_t i = 0; i < kCount; ++i) {
    EXPECT_EQ(slots[i].length, payloads[i].size()) << i;
    EXPECT_FALSE(slots[i].truncated);
    EXPECT_TRUE(std::equal(payloads[i].begin(), payloads[i].end(), buffers[i].begin())) << i;
    EXPECT_EQ(slots[i].peer, tx->local_endpoint()) << slots[i].peer.ToString();
  }

  // Drained: EAGAIN, nothing received.
  const BatchResult empty = rx->RecvBatch(slots);
  EXPECT_EQ(empty.count, 0u);
  EXPECT_EQ(empty.error, EAGAIN);
}

TEST(UdpSocketTest, BatchRoundTripIpv4) { BatchRoundTrip("127.0.0.1"); }

TEST(UdpSocketTest, BatchRoundTripIpv6) {
  std::string error;
  if (UdpSocket::Bind(*Endpoint::Parse("::1", 0), {}, &error) == nullptr) {
    GTEST_SKIP() << "no IPv6 loopback: " << error;
  }
  BatchRoundTrip("::1");
}

// A receive queue too small for a burst: the kernel drops the rest, and sent = read + dropped,
// from the control messages alone and from SO_MEMINFO.
TEST(UdpSocketTest, KernelDropsAccountForEveryDatagramSent) {
  auto rx = BindOrDie("127.0.0.1");
  auto tx = BindOrDie("127.0.0.1");
  ASSERT_TRUE(rx && tx);
  ASSERT_TRUE(rx->EnableDropCounter()) << std::strerror(errno);
  // The smallest buffer the kernel allows (it doubles the value and raises it to its minimum):
  // a few KiB, far less than the burst's truesize.
  const int small = 1;
  ASSERT_EQ(setsockopt(rx->fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
  constexpr std::size_t kBurst = 200;
  const std::vector<std::uint8_t> payload(200, 0x5a);
  std::size_t sent = 0;
  for (std::size_t i = 0; i < kBurst; ++i) sent += tx->SendTo(rx->local_endpoint(), payload);
  ASSERT_EQ(sent, kBurst);  // loopback: delivered (or dropped) inside sendto

  std::array<std::array<std::uint8_t, 2048>, 16> buffers{};
  std::array<RecvSlot, 16> slots;
  const auto drain = [&] {
    std::size_t n = 0;
    for (;;) {
      for (std::size_t i = 0; i < slots.size(); ++i) slots[i] = RecvSlot{buffers[i]};
      const BatchResult r = rx->RecvBatch(slots);
      n += r.count;
      if (r.count < slots.size()) return n;
    }
  };
  const std::size_t read = drain();
  ASSERT_GT(read, 0u);
  ASSERT_LT(read, kBurst) << "the kernel dropped nothing: the queue held the whole burst";
  EXPECT_EQ(rx->receive_counters().datagrams.load(), read);
  // Every datagram read was queued before the first drop, so none carried a count yet; the
  // next one does.
  EXPECT_EQ(rx->receive_counters().kernel_drops.load(), 0u);
  ASSERT_TRUE(tx->SendTo(rx->local_endpoint(), payload));
  ASSERT_EQ(drain(), 1u);
  EXPECT_EQ(rx->receive_counters().kernel_drops.load(), kBurst - read);
  EXPECT_EQ(rx->receive_counters().datagrams.load(), read + 1);

  // More drops, none read since: SO_MEMINFO sees them, and a stale reading changes nothing.
  for (std::size_t i = 0; i < kBurst; ++i) ASSERT_TRUE(tx->SendTo(rx->local_endpoint(), payload));
  const std::uint64_t total = rx->KernelDrops();
  const std::size_t queued = drain();
  EXPECT_EQ(total, 2 * kBurst - read - queued);
  EXPECT_EQ(rx->receive_counters().kernel_drops.load(), total);
  EXPECT_EQ(rx->receive_counters().datagrams.load() + total, 2 * kBurst + 1);
}

TEST(UdpSocketTest, NoDropsNoCount) {
  auto rx = BindOrDie("127.0.0.1");
  auto tx = BindOrDie("127.0.0.1");
  ASSERT_TRUE(rx && tx);
  ASSERT_TRUE(rx->EnableDropCounter());
  const std::vector<std::uint8_t> payload(100, 1);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(tx->SendTo(rx->local_endpoint(), payload));
  std::array<std::array<std::uint8_t, 2048>, 8> buffers{};
  std::array<RecvSlot, 8> slots;
  for (std::size_t i = 0; i < slots.size(); ++i) slots[i] = RecvSlot{buffers[i]};
  ASSERT_TRUE(WaitReadable(*rx));
  EXPECT_EQ(rx->RecvBatch(slots).count, 5u);
  EXPECT_EQ(rx->KernelDrops(), 0u);
  EXPECT_EQ(rx->receive_counters().datagrams.load(), 5u);
}

TEST(UdpSocketTest, SendToAndTruncation) {
  auto rx = BindOrDie("127.0.0.1");
  auto tx = BindOrDie("127.0.0.1");
  const std::vector<std::uint8_t> big(1000, 0xAB);
  ASSERT_TRUE(tx->SendTo(rx->local_endpoint(), big));
  ASSERT_TRUE(WaitReadable(*rx));

  std::array<std::uint8_t, 64> small{};
  RecvSlot slot{small};
  const BatchResult r = rx->RecvBatch(std::span(&slot, 1));
  ASSERT_EQ(r.count, 1u);
  EXPECT_TRUE(slot.truncated);
  EXPECT_EQ(slot.length, small.size());
  EXPECT_EQ(small[63], 0xAB);
}

TEST(UdpSocketTest, SendBatchReportsTheFailingDatagram) {
  auto rx = BindOrDie("127.0.0.1");
  auto tx = BindOrDie("127.0.0.1");
  const std::vector<std::uint8_t> ok(10, 1);
  const std::vector<std::uint8_t> too_big(70000, 2);  // over the 65507-byte UDP/IPv4 maximum
  const std::vector<SendItem> items = {{rx->local_endpoint(), ok},
                                       {rx->local_endpoint(), too_big},
                                       {rx->local_endpoint(), ok}};
  const BatchResult r = tx->SendBatch(items);
  EXPECT_EQ(r.count, 1u);
  EXPECT_EQ(r.error, EMSGSIZE);
}

TEST(UdpSocketTest, PortInUseIsAnErrorUnlessShared) {
  auto first = BindOrDie("127.0.0.1");
  std::string error;
  EXPECT_EQ(UdpSocket::Bind(first->local_endpoint(), {}, &error), nullptr);
  EXPECT_EQ(error, "bind " + first->local_endpoint().ToString() + ": Address already in use");

  UdpSocket::Options shared;
  shared.reuse_port = true;
  auto a = BindOrDie("127.0.0.1", shared);
  EXPECT_NE(UdpSocket::Bind(a->local_endpoint(), shared, &error), nullptr) << error;
}

// UDP GSO and GRO (udp_socket.h). The kernel may lack either: those tests skip then.

std::unique_ptr<UdpSocket> BindWithGsoOrSkip(bool* have) {
  auto socket = BindOrDie("127.0.0.1");
  *have = socket && socket->EnableGso();
  return socket;
}

// kGsoTestRun datagrams of kGsoTestSize bytes and a short last one, each byte telling its
// datagram and position apart from the others.
constexpr std::size_t kGsoTestRun = 20;
constexpr std::size_t kGsoTestSize = 1200;
constexpr std::size_t kGsoTestShort = 333;

std::vector<std::vector<std::uint8_t>> GsoTestPayloads() {
  std::vector<std::vector<std::uint8_t>> out;
  for (std::size_t i = 0; i <= kGsoTestRun; ++i) {
    out.emplace_back(i < kGsoTestRun ? kGsoTestSize : kGsoTestShort);
    for (std::size_t b = 0; b < out.back().size(); ++b)
      out.back()[b] = static_cast<std::uint8_t>(i * 7 + b);
  }
  return out;
}

// Receives until `expected` datagrams arrived (or 2 s pass without any), splitting GRO
// buffers; each datagram's bytes and sender.
struct GsoTestDatagram {
  std::vector<std::uint8_t> bytes;
  Endpoint peer;
};
std::vector<GsoTestDatagram> ReceiveDatagrams(UdpSocket& rx, std::size_t expected) {
  std::vector<std::uint8_t> memory(8 * UdpSocket::kGroBufferSize);
  std::array<RecvSlot, 8> slots;
  std::vector<GsoTestDatagram> out;
  while (out.size() < expected && WaitReadable(rx)) {
    for (std::size_t i = 0; i < slots.size(); ++i)
      slots[i] = RecvSlot{{memory.data() + i * UdpSocket::kGroBufferSize, UdpSocket::kGroBufferSize}};
    const BatchResult r = rx.RecvBatch(slots);
    EXPECT_TRUE(r.error == 0 || r.error == EAGAIN) << r.error;
    for (std::size_t i = 0; i < r.count; ++i) {
      EXPECT_FALSE(slots[i].truncated);
      for (std::size_t k = 0; k < DatagramCount(slots[i]); ++k) {
        const auto d = Datagram(slots[i], k);
        out.push_back({{d.begin(), d.end()}, slots[i].peer});
      }
    }
  }
  return out;
}

void ExpectDatagrams(const std::vector<GsoTestDatagram>& got,
                     const std::vector<std::vector<std::uint8_t>>& want, const Endpoint& from) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].bytes, want[i]) << "datagram " << i << " of " << got[i].bytes.size() << " bytes";
    EXPECT_EQ(got[i].peer, from) << i;
  }
}

TEST(UdpSocketGsoTest, OneGsoSendArrivesAsEqualDatagramsAndAShortLast) {
  bool have = false;
  auto tx = BindWithGsoOrSkip(&have);
  if (!have) GTEST_SKIP() << "no UDP GSO in this kernel";
  auto rx = BindOrDie("127.0.0.1");  // no GRO: the kernel segments before it queues
  const auto payloads = GsoTestPayloads();
  std::vector<SendItem> items;
  for (const auto& p : payloads) items.push_back({rx->local_endpoint(), p});

  const BatchResult sent = tx->SendBatch(items);
  EXPECT_EQ(sent.count, payloads.size());
  EXPECT_EQ(sent.error, 0);
  EXPECT_EQ(tx->offload_counters().gso_sends.load(), 1u);
  EXPECT_EQ(tx->offload_counters().gso_segments.load(), payloads.size());
  EXPECT_EQ(tx->offload_counters().gso_fallbacks.load(), 0u);

  const auto got = ReceiveDatagrams(*rx, payloads.size());
  ExpectDatagrams(got, payloads, tx->local_endpoint());
  EXPECT_EQ(rx->offload_counters().gro_batches.load(), 0u);
}

// Runs end at another peer, a larger datagram and a shorter one; each receiver sees its own
// datagrams in order.
TEST(UdpSocketGsoTest, RunsSplitAtPeerAndSizeChanges) {
  bool have = false;
  auto tx = BindWithGsoOrSkip(&have);
  if (!have) GTEST_SKIP() << "no UDP GSO in this kernel";
  auto a = BindOrDie("127.0.0.1");
  auto b = BindOrDie("127.0.0.1");
  const std::vector<std::pair<UdpSocket*, std::size_t>> plan = {
      {a.get(), 500}, {a.get(), 500}, {a.get(), 200}, {a.get(), 500}, {a.get(), 900},
      {b.get(), 500}, {b.get(), 500}, {a.get(), 500}, {a.get(), 500}, {a.get(), 500}};
  std::vector<std::vector<std::uint8_t>> payloads, to_a, to_b;
  std::vector<SendItem> items;
  for (std::size_t i = 0; i < plan.size(); ++i) {
    payloads.emplace_back(plan[i].second, static_cast<std::uint8_t>(i + 1));
    (plan[i].first == a.get() ? to_a : to_b).push_back(payloads.back());
  }
  for (std::size_t i = 0; i < plan.size(); ++i)
    items.push_back({plan[i].first->local_endpoint(), payloads[i]});

  const BatchResult sent = tx->SendBatch(items);
  EXPECT_EQ(sent.count, plan.size());
  EXPECT_EQ(sent.error, 0);
  // (500 500 200) (500) (900) (500 500) (500 500 500): three runs of several.
  EXPECT_EQ(tx->offload_counters().gso_sends.load(), 3u);
  EXPECT_EQ(tx->offload_counters().gso_segments.load(), 8u);
  ExpectDatagrams(ReceiveDatagrams(*a, to_a.size()), to_a, tx->local_endpoint());
  ExpectDatagrams(ReceiveDatagrams(*b, to_b.size()), to_b, tx->local_endpoint());
}

// A GSO send into a GRO socket stays one buffer on loopback: split back, it is exactly the
// datagrams sent; datagrams sent one by one around it arrive as before.
TEST(UdpSocketGsoTest, GroReceiverGetsTheDatagramsSent) {
  bool have = false;
  auto tx = BindWithGsoOrSkip(&have);
  if (!have) GTEST_SKIP() << "no UDP GSO in this kernel";
  auto rx = BindOrDie("127.0.0.1");
  if (!rx->EnableGro()) GTEST_SKIP() << "no UDP GRO in this kernel";
  auto plain = BindOrDie("127.0.0.1");

  const std::vector<std::uint8_t> before(77, 0xB0), after(1500, 0xA0);
  ASSERT_TRUE(plain->SendTo(rx->local_endpoint(), before));
  ASSERT_TRUE(WaitReadable(*rx));
  auto payloads = GsoTestPayloads();
  std::vector<SendItem> items;
  for (const auto& p : payloads) items.push_back({rx->local_endpoint(), p});
  ASSERT_EQ(tx->SendBatch(items).count, payloads.size());
  ASSERT_TRUE(plain->SendTo(rx->local_endpoint(), after));

  const auto got = ReceiveDatagrams(*rx, payloads.size() + 2);
  ASSERT_EQ(got.size(), payloads.size() + 2);
  EXPECT_EQ(got.front().bytes, before);
  EXPECT_EQ(got.front().peer, plain->local_endpoint());
  EXPECT_EQ(got.back().bytes, after);
  EXPECT_EQ(got.back().peer, plain->local_endpoint());
  ExpectDatagrams({got.begin() + 1, got.end() - 1}, payloads, tx->local_endpoint());
  EXPECT_EQ(rx->offload_counters().gro_batches.load(), 1u);
  EXPECT_EQ(rx->offload_counters().gro_segments.load(), payloads.size());
}

// A GRO buffer's last datagram may be shorter; one that fits exactly is not split.
TEST(UdpSocketGsoTest, DatagramSplitsAGroBuffer) {
  std::array<std::uint8_t, 10> buffer{0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  RecvSlot slot{buffer};
  slot.length = 10;
  EXPECT_EQ(DatagramCount(slot), 1u);
  EXPECT_EQ(Datagram(slot, 0).size(), 10u);
  slot.segment_size = 4;
  ASSERT_EQ(DatagramCount(slot), 3u);
  EXPECT_EQ(Datagram(slot, 1).front(), 4);
  EXPECT_EQ(Datagram(slot, 1).size(), 4u);
  EXPECT_EQ(Datagram(slot, 2).front(), 8);
  EXPECT_EQ(Datagram(slot, 2).size(), 2u);
  slot.segment_size = 5;
  ASSERT_EQ(DatagramCount(slot), 2u);
  EXPECT_EQ(Datagram(slot, 1).size(), 5u);
}

// A device that refuses GSO (forced by the test hook): the run goes out one datagram each,
// GSO stays off, and the fallback is counted.
TEST(UdpSocketGsoTest, RefusedGsoFallsBackToOneDatagramEach) {
  bool have = false;
  auto tx = BindWithGsoOrSkip(&have);
  if (!have) GTEST_SKIP() << "no UDP GSO in this kernel";
  auto rx = BindOrDie("127.0.0.1");
  const std::vector<std::uint8_t> lone(64, 0x55);
  auto payloads = GsoTestPayloads();
  payloads.insert(payloads.begin(), lone);
  std::vector<SendItem> items;
  for (const auto& p : payloads) items.push_back({rx->local_endpoint(), p});

  tx->RefuseNextGsoForTest();
  const BatchResult sent = tx->SendBatch(items);
  EXPECT_EQ(sent.count, payloads.size());
  EXPECT_EQ(sent.error, 0);
  EXPECT_FALSE(tx->gso());
  EXPECT_EQ(tx->offload_counters().gso_fallbacks.load(), 1u);
  EXPECT_EQ(tx->offload_counters().gso_sends.load(), 0u);
  ExpectDatagrams(ReceiveDatagrams(*rx, payloads.size()), payloads, tx->local_endpoint());

  // And the next batch goes out plain from the start.
  EXPECT_EQ(tx->SendBatch(items).count, payloads.size());
  EXPECT_EQ(tx->offload_counters().gso_sends.load(), 0u);
  ExpectDatagrams(ReceiveDatagrams(*rx, payloads.size()), payloads, tx->local_endpoint());
}

// With GSO on, a datagram the kernel refuses is still the one reported, after the ones sent.
TEST(UdpSocketGsoTest, SendBatchReportsTheFailingDatagramWithGso) {
  bool have = false;
  auto tx = BindWithGsoOrSkip(&have);
  if (!have) GTEST_SKIP() << "no UDP GSO in this kernel";
  auto rx = BindOrDie("127.0.0.1");
  const std::vector<std::uint8_t> ok(10, 1);
  const std::vector<std::uint8_t> too_big(70000, 2);
  const std::vector<SendItem> items = {{rx->local_endpoint(), ok},
                                       {rx->local_endpoint(), ok},
                                       {rx->local_endpoint(), too_big},
                                       {rx->local_endpoint(), ok}};
  const BatchResult r = tx->SendBatch(items);
  EXPECT_EQ(r.count, 2u);
  EXPECT_EQ(r.error, EMSGSIZE);
  EXPECT_EQ(tx->offload_counters().gso_fallbacks.load(), 0u);
}

// IP_PKTINFO on a wildcard socket: each datagram says which local address it came to, and a
// datagram sent with a source leaves from it (a single one and a GSO-able batch alike; a change
// of source inside a batch starts a new message). 127.0.0.1 and 127.0.0.2 are both on lo.
TEST(UdpSocketTest, PacketInfoReceivesTheDestinationAndSendsFromTheSource) {
  auto rx = BindOrDie("0.0.0.0");
  auto tx = BindOrDie("0.0.0.0");
  ASSERT_TRUE(rx && tx);
  ASSERT_TRUE(rx->EnablePacketInfo());
  tx->EnableGso();
  const std::uint16_t rx_port = rx->local_endpoint().port();
  const IpAddress one = IpAddress::Of(*Endpoint::Parse("127.0.0.1", 0));
  const IpAddress two = IpAddress::Of(*Endpoint::Parse("127.0.0.2", 0));
  const std::vector<std::uint8_t> payload(200, 7);
  // To 127.0.0.2 from 127.0.0.1, then to 127.0.0.1 from 127.0.0.2: three each, in one batch.
  std::vector<SendItem> items;
  for (int i = 0; i < 3; ++i) items.push_back(SendItem{Endpoint::From(two, rx_port), payload, one});
  for (int i = 0; i < 3; ++i) items.push_back(SendItem{Endpoint::From(one, rx_port), payload, two});
  const BatchResult sent = tx->SendBatch(items);
  ASSERT_EQ(sent.count, items.size());
  ASSERT_TRUE(tx->SendTo(Endpoint::From(two, rx_port), payload, two));
  std::array<std::array<std::uint8_t, UdpSocket::kGroBufferSize>, 8> buffers{};
  std::array<RecvSlot, 8> slots;
  for (std::size_t i = 0; i < slots.size(); ++i) slots[i].buffer = buffers[i];
  std::size_t received = 0;
  while (received < 7 && WaitReadable(*rx)) {
    const BatchResult r = rx->RecvBatch(std::span(slots).subspan(received));
    ASSERT_TRUE(r.error == 0 || r.error == EAGAIN) << r.error;
    received += r.count;
  }
  ASSERT_EQ(received, 7u);
  for (std::size_t i = 0; i < 7; ++i) {
    // 0-2: to 127.0.0.2 from .1; 3-5: to .1 from .2; 6: to .2 from .2.
    EXPECT_EQ(slots[i].local, i < 3 || i == 6 ? two : one) << i;
    EXPECT_EQ(IpAddress::Of(slots[i].peer), i < 3 ? one : two) << i << " " << slots[i].peer.ToString();
    EXPECT_EQ(slots[i].peer.port(), tx->local_endpoint().port());
  }
  // A source that is not ours fails the send (EINVAL), as after the address went away.
  const IpAddress gone = IpAddress::Of(*Endpoint::Parse("192.0.2.77", 0));
  EXPECT_FALSE(tx->SendTo(Endpoint::From(one, rx_port), payload, gone));
  // A socket bound to one address ignores the source: it always sends from that address.
  auto bound = BindOrDie("127.0.0.1");
  ASSERT_TRUE(bound->SendTo(Endpoint::From(one, rx_port), payload, two));
  ASSERT_TRUE(WaitReadable(*rx));
  ASSERT_EQ(rx->RecvBatch(std::span(slots).first(1)).count, 1u);
  EXPECT_EQ(IpAddress::Of(slots[0].peer), one);

  // IPv6 (IPV6_RECVPKTINFO / IPV6_PKTINFO), on ::1.
  auto rx6 = BindOrDie("::");
  auto tx6 = BindOrDie("::");
  ASSERT_TRUE(rx6 && tx6);
  ASSERT_TRUE(rx6->EnablePacketInfo());
  const IpAddress loop6 = IpAddress::Of(*Endpoint::Parse("::1", 0));
  ASSERT_TRUE(tx6->SendTo(Endpoint::From(loop6, rx6->local_endpoint().port()), payload, loop6));
  ASSERT_TRUE(WaitReadable(*rx6));
  ASSERT_EQ(rx6->RecvBatch(std::span(slots).first(1)).count, 1u);
  EXPECT_EQ(slots[0].local, loop6);
  EXPECT_EQ(IpAddress::Of(slots[0].peer), loop6);
}

}  // namespace
}  // namespace spigot::io
