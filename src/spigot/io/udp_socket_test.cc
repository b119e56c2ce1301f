#include "spigot/io/udp_socket.h"

#include <gtest/gtest.h>
#include <poll.h>

#include <array>
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

}  // namespace
}  // namespace spigot::io
