// TunDevice and Netlink against the real kernel. Each test runs its checks in a forked child
// that first moves into a network namespace of its own (unshare(CLONE_NEWNET)), so the devices,
// addresses and routes it creates never touch the host's network and vanish with the child.
// Only documentation prefixes are used (RFC 5737: 198.51.100.0/24, 203.0.113.0/24; RFC 3849:
// 2001:db8::/32).
//
// Needs root (CAP_SYS_ADMIN for unshare, CAP_NET_ADMIN for TUN and rtnetlink) or, failing that,
// unprivileged user namespaces; without either, or without /dev/net/tun, the tests are skipped
// with the reason.
#include "spigot/io/tun.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "spigot/io/endpoint.h"
#include "spigot/io/netlink.h"
#include "spigot/io/tun_offload.h"
#include "spigot/io/udp_socket.h"

namespace spigot::io {
namespace {

using Bytes = std::vector<std::uint8_t>;

// ---- Running checks in a private network namespace ----------------------------------------

constexpr int kSkipStatus = 77;
int g_skip_fd = -1;  // in the child: where the reason for a skip goes

[[noreturn]] void SkipChild(const std::string& reason) {
  (void)!write(g_skip_fd, reason.data(), reason.size());
  std::fflush(stdout);
  _exit(kSkipStatus);
}

bool WriteFile(const char* path, const std::string& text) {
  const int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  close(fd);
  return ok;
}

// Without root: a user namespace (where we are root, mapped to our own uid) owning a network
// namespace gives CAP_NET_ADMIN over that namespace, which is all TUN and rtnetlink need.
bool EnterUserAndNetns() {
  const uid_t uid = getuid();
  const gid_t gid = getgid();
  if (unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) return false;
  return WriteFile("/proc/self/setgroups", "deny") &&
         WriteFile("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1") &&
         WriteFile("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1");
}

// Runs `body` in a child process inside a new network namespace. gtest failures in the child
// are printed by the child; its exit status carries "failed" back, and the test fails with it.
// Call as the last statement of a test: it may GTEST_SKIP().
void InNewNetns(const std::function<void()>& body) {
  int pipe_fds[2];
  ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0) << std::strerror(errno);
  if (pid == 0) {
    close(pipe_fds[0]);
    g_skip_fd = pipe_fds[1];
    alarm(30);  // a hang becomes SIGALRM, which the parent reports
    if (unshare(CLONE_NEWNET) != 0 && !EnterUserAndNetns()) {
      SkipChild(std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno) +
                " (needs root, or unprivileged user namespaces)");
    }
    body();
    std::fflush(stdout);
    _exit(testing::Test::HasFailure() ? 1 : 0);
  }
  close(pipe_fds[1]);
  std::string skip_reason;
  char buf[256];
  for (ssize_t n; (n = read(pipe_fds[0], buf, sizeof buf)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    skip_reason.append(buf, static_cast<std::size_t>(n));
  }
  close(pipe_fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == kSkipStatus) GTEST_SKIP() << skip_reason;
  ASSERT_TRUE(WIFEXITED(status)) << "the child died by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "checks in the namespace failed (printed above)";
}

// In the child: devices created from now on get no IPv6, so the kernel sends nothing of its
// own through them.
void DisableIpv6() {
  const char* path = "/proc/sys/net/ipv6/conf/default/disable_ipv6";
  if (access(path, F_OK) != 0) return;  // a kernel without IPv6
  EXPECT_TRUE(WriteFile(path, "1")) << std::strerror(errno);
}

// In the child: opens the TUN device, skipping the test when the machine cannot have one.
std::unique_ptr<TunDevice> OpenOrSkip(const std::string& name, int queues) {
  std::string error;
  auto tun = TunDevice::Open(name, queues, &error);
  if (tun == nullptr && (errno == EPERM || errno == EACCES || errno == ENOENT || errno == ENODEV)) {
    SkipChild(error);
  }
  EXPECT_NE(tun, nullptr) << error;
  return tun;
}

std::unique_ptr<Netlink> OpenNetlink() {
  std::string error;
  auto netlink = Netlink::Open(&error);
  EXPECT_NE(netlink, nullptr) << error;
  return netlink;
}

Bytes Address(int family, const char* text) {
  Bytes out(family == AF_INET ? 4 : 16);
  EXPECT_EQ(inet_pton(family, text, out.data()), 1) << text;
  return out;
}

// The TUN device "sptest0" with 2 queues, up with MTU 1400, holding `local`/`local_len` and
// routing `remote`/`remote_len` to itself, as the gateway will set it up.
std::unique_ptr<TunDevice> SetUpTun(Netlink& netlink, int family, const char* local, int local_len,
                                    const char* remote, int remote_len) {
  auto tun = OpenOrSkip("sptest0", 2);
  if (tun == nullptr) return nullptr;
  std::string error;
  EXPECT_TRUE(netlink.SetLinkUp(tun->ifindex(), 1400, &error)) << error;
  EXPECT_TRUE(netlink.AddAddress(tun->ifindex(), family, Address(family, local), local_len, &error))
      << error;
  EXPECT_TRUE(netlink.AddRoute(tun->ifindex(), family, Address(family, remote), remote_len,
                               Address(family, local), &error))
      << error;
  return tun;
}

// ---- Packets ------------------------------------------------------------------------------

std::uint32_t SumWords(std::span<const std::uint8_t> data, std::uint32_t sum = 0) {
  for (std::size_t i = 0; i + 1 < data.size(); i += 2) sum += (data[i] << 8) | data[i + 1];
  if (data.size() % 2 != 0) sum += data.back() << 8;
  return sum;
}

std::uint16_t FinishChecksum(std::uint32_t sum) {
  while (sum >> 16 != 0) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum);
}

void PutU16(Bytes& b, std::size_t at, std::uint16_t v) {
  b[at] = static_cast<std::uint8_t>(v >> 8);
  b[at + 1] = static_cast<std::uint8_t>(v);
}

// An IPv4/UDP packet with a correct header checksum and UDP checksum 0 ("none", RFC 768).
Bytes Ipv4UdpPacket(const Bytes& src, const Bytes& dst, std::uint16_t sport, std::uint16_t dport,
                    const Bytes& payload) {
  Bytes p(20 + 8 + payload.size(), 0);
  p[0] = 0x45;                                         // version 4, IHL 5 words
  PutU16(p, 2, static_cast<std::uint16_t>(p.size()));  // total length
  PutU16(p, 4, 0x1234);                                // identification
  PutU16(p, 6, 0x4000);                                // DF
  p[8] = 64;                                           // TTL
  p[9] = IPPROTO_UDP;
  std::copy(src.begin(), src.end(), p.begin() + 12);
  std::copy(dst.begin(), dst.end(), p.begin() + 16);
  PutU16(p, 10, FinishChecksum(SumWords(std::span(p).first(20))));
  PutU16(p, 20, sport);
  PutU16(p, 22, dport);
  PutU16(p, 24, static_cast<std::uint16_t>(8 + payload.size()));
  std::copy(payload.begin(), payload.end(), p.begin() + 28);
  return p;
}

// An IPv6/UDP packet; the UDP checksum is mandatory over IPv6 (RFC 8200 8.1).
Bytes Ipv6UdpPacket(const Bytes& src, const Bytes& dst, std::uint16_t sport, std::uint16_t dport,
                    const Bytes& payload) {
  const auto udp_len = static_cast<std::uint16_t>(8 + payload.size());
  Bytes p(40 + udp_len, 0);
  p[0] = 0x60;  // version 6
  PutU16(p, 4, udp_len);
  p[6] = IPPROTO_UDP;
  p[7] = 64;  // hop limit
  std::copy(src.begin(), src.end(), p.begin() + 8);
  std::copy(dst.begin(), dst.end(), p.begin() + 24);
  PutU16(p, 40, sport);
  PutU16(p, 42, dport);
  PutU16(p, 44, udp_len);
  std::copy(payload.begin(), payload.end(), p.begin() + 48);
  // Pseudo-header: source, destination, upper-layer length, next header.
  std::uint32_t sum = SumWords(std::span(p).subspan(8, 32));
  sum += udp_len + IPPROTO_UDP;
  std::uint16_t checksum = FinishChecksum(SumWords(std::span(p).subspan(40), sum));
  if (checksum == 0) checksum = 0xffff;
  PutU16(p, 46, checksum);
  return p;
}

// Reads packets from every queue of `tun` until one satisfies `wanted` (the kernel also sends
// its own traffic, such as IPv6 router solicitations). Empty after two seconds without one.
Bytes ReadMatching(TunDevice& tun, const std::function<bool(const Bytes&)>& wanted) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  std::array<std::array<std::uint8_t, 2048>, 8> buffers{};
  std::array<PacketSlot, 8> slots;
  for (std::size_t i = 0; i < slots.size(); ++i) slots[i].buffer = buffers[i];
  while (std::chrono::steady_clock::now() < deadline) {
    std::vector<pollfd> fds;
    for (int q = 0; q < tun.queues(); ++q) fds.push_back(pollfd{tun.queue_fd(q), POLLIN, 0});
    if (poll(fds.data(), fds.size(), 100) <= 0) continue;
    for (int q = 0; q < tun.queues(); ++q) {
      if ((fds[static_cast<std::size_t>(q)].revents & POLLIN) == 0) continue;
      const BatchResult r = tun.ReadBatch(q, slots);
      EXPECT_TRUE(r.error == 0 || r.error == EAGAIN) << std::strerror(r.error);
      for (std::size_t i = 0; i < r.count; ++i) {
        EXPECT_FALSE(slots[i].truncated);
        Bytes packet(buffers[i].begin(), buffers[i].begin() + slots[i].length);
        if (wanted(packet)) return packet;
      }
    }
  }
  return {};
}

bool WaitReadable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, 2000) == 1;
}

const Bytes kOutPayload = {'s', 'p', 'i', 'g', 'o', 't', '-', 'o', 'u', 't'};
const Bytes kInPayload = {'s', 'p', 'i', 'g', 'o', 't', '-', 'i', 'n'};

// A datagram the host sends towards the routed prefix comes out of the TUN; a packet written
// into the TUN reaches a socket bound to the device's address. `family` decides the variant.
void RoundTrip(int family, const char* local, int local_len, const char* remote_net, int remote_len,
               const char* remote_host) {
  auto netlink = OpenNetlink();
  ASSERT_NE(netlink, nullptr);
  auto tun = SetUpTun(*netlink, family, local, local_len, remote_net, remote_len);
  ASSERT_NE(tun, nullptr);
  ASSERT_FALSE(testing::Test::HasFailure());
  EXPECT_EQ(tun->name(), "sptest0");
  EXPECT_EQ(tun->queues(), 2);
  EXPECT_EQ(static_cast<unsigned>(tun->ifindex()), if_nametoindex("sptest0"));

  const Bytes local_bytes = Address(family, local);
  const Bytes remote_bytes = Address(family, remote_host);
  const bool v4 = family == AF_INET;

  // Outbound: host socket -> kernel routing -> TUN.
  std::string error;
  auto sender = UdpSocket::Bind(*Endpoint::Parse(v4 ? "0.0.0.0" : "::", 0), {}, &error);
  ASSERT_NE(sender, nullptr) << error;
  ASSERT_TRUE(sender->SendTo(*Endpoint::Parse(remote_host, 9), kOutPayload))
      << std::strerror(errno);
  const std::size_t header = v4 ? 20 : 40;
  const Bytes out = ReadMatching(*tun, [&](const Bytes& p) {
    return p.size() >= header + 8 && (p[0] >> 4) == (v4 ? 4 : 6) && p[v4 ? 9 : 6] == IPPROTO_UDP;
  });
  ASSERT_FALSE(out.empty()) << "no UDP packet came out of the TUN";
  const std::size_t ihl = v4 ? (out[0] & 0x0f) * 4u : 40u;
  const std::size_t addr_size = local_bytes.size();
  EXPECT_EQ(Bytes(out.begin() + (v4 ? 12 : 8), out.begin() + (v4 ? 12 : 8) + addr_size),
            local_bytes)
      << "source";
  EXPECT_EQ(Bytes(out.begin() + (v4 ? 16 : 24), out.begin() + (v4 ? 16 : 24) + addr_size),
            remote_bytes)
      << "destination";
  EXPECT_EQ((out[ihl + 2] << 8) | out[ihl + 3], 9) << "destination port";
  EXPECT_EQ(Bytes(out.begin() + ihl + 8, out.end()), kOutPayload);

  // Inbound: a packet written into the TUN -> kernel -> socket bound to the local address.
  auto receiver = UdpSocket::Bind(*Endpoint::Parse(local, 0), {}, &error);
  ASSERT_NE(receiver, nullptr) << error;
  const std::uint16_t port = receiver->local_endpoint().port();
  const Bytes in = v4 ? Ipv4UdpPacket(remote_bytes, local_bytes, 9999, port, kInPayload)
                      : Ipv6UdpPacket(remote_bytes, local_bytes, 9999, port, kInPayload);
  // A new IPv6 address gets its local route from a kernel work queue a moment after the ACK
  // (netlink.h); until then the packet is dropped, so write it again, as a real peer would.
  bool arrived = false;
  for (int attempt = 0; attempt < 20 && !arrived; ++attempt) {
    ASSERT_TRUE(tun->Write(1, in)) << std::strerror(errno);
    pollfd p{receiver->fd(), POLLIN, 0};
    arrived = poll(&p, 1, 100) == 1;
  }
  ASSERT_TRUE(arrived) << "the written packet never reached the socket";
  std::array<std::uint8_t, 2048> buffer{};
  RecvSlot slot{buffer};
  const BatchResult r = receiver->RecvBatch(std::span(&slot, 1));
  ASSERT_EQ(r.count, 1u);
  EXPECT_EQ(Bytes(buffer.begin(), buffer.begin() + slot.length), kInPayload);
  EXPECT_EQ(slot.peer, *Endpoint::Parse(remote_host, 9999)) << slot.peer.ToString();
}

// ---- TunDevice --------------------------------------------------------------------------

TEST(TunDevice, Ipv4RoundTrip) {
  InNewNetns([] { RoundTrip(AF_INET, "198.51.100.1", 24, "203.0.113.0", 24, "203.0.113.5"); });
}

TEST(TunDevice, Ipv6RoundTrip) {
  InNewNetns(
      [] { RoundTrip(AF_INET6, "2001:db8::1", 64, "2001:db8:ffff::", 48, "2001:db8:ffff::5"); });
}

TEST(TunDevice, ReadBatchDrainsAndMarksTruncation) {
  InNewNetns([] {
    DisableIpv6();  // no router solicitations or MLD reports among the packets counted below
    auto netlink = OpenNetlink();
    ASSERT_NE(netlink, nullptr);
    auto tun = SetUpTun(*netlink, AF_INET, "198.51.100.1", 24, "203.0.113.0", 24);
    ASSERT_NE(tun, nullptr);
    std::string error;
    auto sender = UdpSocket::Bind(*Endpoint::Parse("198.51.100.1", 0), {}, &error);
    ASSERT_NE(sender, nullptr) << error;
    // One flow: the kernel puts all three on the same queue.
    const Endpoint peer = *Endpoint::Parse("203.0.113.5", 9);
    ASSERT_TRUE(sender->SendTo(peer, Bytes(1000, 0xAB)));
    ASSERT_TRUE(sender->SendTo(peer, kOutPayload));
    ASSERT_TRUE(sender->SendTo(peer, kOutPayload));

    // A 100-byte slot takes the head of the 1028-byte packet, which is consumed, not left in
    // the queue for the next slot.
    std::array<std::uint8_t, 100> small{};
    std::array<std::array<std::uint8_t, 2048>, 3> large{};
    std::array<PacketSlot, 4> slots = {PacketSlot{small}, PacketSlot{large[0]},
                                       PacketSlot{large[1]}, PacketSlot{large[2]}};
    std::array<pollfd, 2> fds = {pollfd{tun->queue_fd(0), POLLIN, 0},
                                 pollfd{tun->queue_fd(1), POLLIN, 0}};
    ASSERT_EQ(tun->queues(), 2);
    ASSERT_GT(poll(fds.data(), fds.size(), 2000), 0);
    const int queue = (fds[0].revents & POLLIN) != 0 ? 0 : 1;
    std::size_t got = 0;
    for (int tries = 0; got < 3 && tries < 20; ++tries) {
      const BatchResult r = tun->ReadBatch(queue, std::span(slots).subspan(got));
      EXPECT_TRUE(r.error == 0 || r.error == EAGAIN) << std::strerror(r.error);
      got += r.count;
      if (got < 3) WaitReadable(tun->queue_fd(queue));
    }
    ASSERT_EQ(got, 3u);
    EXPECT_TRUE(slots[0].truncated);
    EXPECT_EQ(slots[0].length, small.size());
    EXPECT_EQ(small[0], 0x45);
    EXPECT_EQ(small[99], 0xAB);
    for (std::size_t i = 1; i < 3; ++i) {
      EXPECT_FALSE(slots[i].truncated);
      EXPECT_EQ(slots[i].length, 20u + 8 + kOutPayload.size());
    }

    // Drained: nothing, and EAGAIN says why the batch stopped.
    const BatchResult empty = tun->ReadBatch(queue, slots);
    EXPECT_EQ(empty.count, 0u);
    EXPECT_EQ(empty.error, EAGAIN);
    EXPECT_EQ(tun->ReadBatch(1 - queue, slots).count, 0u);
  });
}

TEST(TunDevice, WriteBatchDeliversInOrderAndStopsAtABadPacket) {
  InNewNetns([] {
    auto netlink = OpenNetlink();
    ASSERT_NE(netlink, nullptr);
    auto tun = SetUpTun(*netlink, AF_INET, "198.51.100.1", 24, "203.0.113.0", 24);
    ASSERT_NE(tun, nullptr);
    std::string error;
    auto receiver = UdpSocket::Bind(*Endpoint::Parse("198.51.100.1", 0), {}, &error);
    ASSERT_NE(receiver, nullptr) << error;
    const Bytes src = Address(AF_INET, "203.0.113.5");
    const Bytes dst = Address(AF_INET, "198.51.100.1");
    const std::uint16_t port = receiver->local_endpoint().port();
    const Bytes a = Ipv4UdpPacket(src, dst, 1000, port, {'a'});
    const Bytes b = Ipv4UdpPacket(src, dst, 1001, port, {'b', 'b'});
    const Bytes not_ip = {0x00, 0x01, 0x02, 0x03};  // first nibble neither 4 nor 6
    const std::vector<std::span<const std::uint8_t>> packets = {a, b, not_ip, a};

    const BatchResult r = tun->WriteBatch(0, packets);
    EXPECT_EQ(r.count, 2u);
    EXPECT_EQ(r.error, EINVAL) << std::strerror(r.error);

    std::array<std::array<std::uint8_t, 64>, 4> buffers{};
    std::array<RecvSlot, 4> slots;
    for (std::size_t i = 0; i < slots.size(); ++i) slots[i].buffer = buffers[i];
    std::size_t received = 0;
    while (received < 2 && WaitReadable(receiver->fd())) {
      received += receiver->RecvBatch(std::span(slots).subspan(received)).count;
    }
    ASSERT_EQ(received, 2u);
    EXPECT_EQ(slots[0].peer.port(), 1000);
    EXPECT_EQ(slots[0].length, 1u);
    EXPECT_EQ(slots[1].peer.port(), 1001);
    EXPECT_EQ(slots[1].length, 2u);
  });
}

TEST(TunDevice, AttachAndNamingRules) {
  InNewNetns([] {
    std::string error;
    // A name template: the kernel picks the number.
    {
      auto tun = OpenOrSkip("sptest%d", 1);
      ASSERT_NE(tun, nullptr);
      EXPECT_EQ(tun->name(), "sptest0");
    }
    // Non-persistent: gone with its last queue.
    EXPECT_EQ(if_nametoindex("sptest0"), 0u);

    auto single = OpenOrSkip("sptest0", 1);
    ASSERT_NE(single, nullptr);
    // Not up yet: the kernel refuses packets.
    const Bytes packet = Ipv4UdpPacket(Address(AF_INET, "203.0.113.5"),
                                       Address(AF_INET, "198.51.100.1"), 1, 2, {'x'});
    EXPECT_FALSE(single->Write(0, packet));
    EXPECT_EQ(errno, EIO);
    // A single-queue device in use cannot take a second reader...
    EXPECT_EQ(TunDevice::Open("sptest0", 1, &error), nullptr);
    EXPECT_EQ(errno, EBUSY);
    EXPECT_EQ(error.rfind("cannot create TUN device sptest0: Device or resource busy", 0), 0u)
        << error;
    // ...nor be reopened multi-queue.
    EXPECT_EQ(TunDevice::Open("sptest0", 2, &error), nullptr);
    EXPECT_EQ(errno, EINVAL);
    EXPECT_NE(error.find("multi_queue"), std::string::npos) << error;
    single.reset();

    // A multi-queue device accepts more queues, from this or another owner (see tun.h).
    auto multi = OpenOrSkip("sptest0", 2);
    ASSERT_NE(multi, nullptr);
    auto more = TunDevice::Open("sptest0", 3, &error);
    ASSERT_NE(more, nullptr) << error;
    EXPECT_EQ(more->ifindex(), multi->ifindex());
    for (int q = 0; q < 3; ++q) {
      EXPECT_TRUE(fcntl(more->queue_fd(q), F_GETFL) & O_NONBLOCK) << q;
    }
  });
}

TEST(TunDevice, RejectsBadArgumentsWithoutTouchingTheKernel) {
  std::string error;
  EXPECT_EQ(TunDevice::Open("a-name-far-too-long", 1, &error), nullptr);
  EXPECT_NE(error.find("1 to 15 characters"), std::string::npos) << error;
  EXPECT_EQ(TunDevice::Open("sptest0", 0, &error), nullptr);
  EXPECT_NE(error.find("1 to 256"), std::string::npos) << error;
  EXPECT_EQ(TunDevice::Open("sptest0", TunDevice::kMaxQueues + 1, &error), nullptr);
}

// ---- Offloads (IFF_VNET_HDR, TUNSETOFFLOAD) ---------------------------------------------------

// In the child: the device "sptest1" with offloads, up with MTU 1400 at 198.51.100.1/24 and
// routing 203.0.113.0/24 into itself.
std::unique_ptr<TunDevice> SetUpOffloadTun(Netlink& netlink, unsigned refuse = 0) {
  std::string error;
  auto tun = TunDevice::Open("sptest1", 1, &error, TunDevice::OffloadRequest{true, refuse});
  if (tun == nullptr && (errno == EPERM || errno == EACCES || errno == ENOENT || errno == ENODEV)) {
    SkipChild(error);
  }
  EXPECT_NE(tun, nullptr) << error;
  if (tun == nullptr) return nullptr;
  EXPECT_TRUE(netlink.SetLinkUp(tun->ifindex(), 1400, &error)) << error;
  EXPECT_TRUE(netlink.AddAddress(tun->ifindex(), AF_INET, Address(AF_INET, "198.51.100.1"), 24, &error))
      << error;
  EXPECT_TRUE(netlink.AddRoute(tun->ifindex(), AF_INET, Address(AF_INET, "203.0.113.0"), 24,
                               Address(AF_INET, "198.51.100.1"), &error))
      << error;
  return tun;
}

// Reads frames until `wanted` took `count` of the packets GsoSplitter makes of them, in order;
// fewer after two seconds.
std::vector<Bytes> ReadSplitMatching(TunDevice& tun, TunOffloadCounters& counters,
                                     const std::function<bool(const Bytes&)>& wanted,
                                     std::size_t count = 1) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  Bytes frame(VirtioNetHdr::kSize + 65536 + 1);
  Bytes segment(2048);
  GsoSplitter split(counters);
  std::vector<Bytes> out;
  while (out.size() < count && std::chrono::steady_clock::now() < deadline) {
    pollfd p{tun.queue_fd(0), POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    std::size_t n = 0;
    if (!tun.ReadFrame(0, frame, n)) continue;
    EXPECT_LT(n, frame.size());
    if (!split.Start(std::span(frame).first(n), segment.size())) continue;
    while (split.remaining() > 0) {
      Bytes packet(segment.begin(), segment.begin() + static_cast<long>(split.Next(segment)));
      if (wanted(packet)) out.push_back(std::move(packet));
    }
  }
  return out;
}

bool TransportChecksumValid(const Bytes& p) {
  const std::size_t ihl = (p[0] & 0x0f) * 4u;
  std::uint32_t sum = SumWords(std::span(p).subspan(12, 8)) + p[9] + static_cast<std::uint32_t>(p.size() - ihl);
  return FinishChecksum(SumWords(std::span(p).subspan(ihl), sum)) == 0;
}

TEST(TunDevice, OffloadsAreAskedForAndTheRefusedOnesFallBack) {
  InNewNetns([] {
    constexpr unsigned kTso = TunDevice::kOffloadCsum | TunDevice::kOffloadTso4 | TunDevice::kOffloadTso6;
    constexpr unsigned kUso = TunDevice::kOffloadUso4 | TunDevice::kOffloadUso6;
    std::string error;
    {
      auto tun = TunDevice::Open("sptest1", 1, &error, TunDevice::OffloadRequest{true});
      if (tun == nullptr && (errno == EPERM || errno == EACCES || errno == ENOENT)) SkipChild(error);
      ASSERT_NE(tun, nullptr) << error;
      EXPECT_TRUE(tun->vnet_hdr());
      EXPECT_EQ(tun->offloads() & kTso, kTso);  // TSO on TUN is as old as IFF_VNET_HDR (2.6.27)
      // USO from Linux 6.2: all of it, or none after one refusal.
      const unsigned uso = tun->offloads() & kUso;
      EXPECT_TRUE(uso == kUso ? tun->offload_refusals() == 0 : uso == 0 && tun->offload_refusals() == 1);
      // A device with headers reads frames, not packets.
      std::array<std::uint8_t, 64> buffer{};
      std::array<PacketSlot, 1> slots{PacketSlot{buffer}};
      EXPECT_EQ(tun->ReadBatch(0, slots).error, EINVAL);
    }
    {  // USO refused, as by a kernel before 6.2: TSO still.
      auto tun = TunDevice::Open("sptest1", 1, &error, TunDevice::OffloadRequest{true, TunDevice::kOffloadUso4});
      ASSERT_NE(tun, nullptr) << error;
      EXPECT_EQ(tun->offloads(), kTso);
      EXPECT_EQ(tun->offload_refusals(), 1);
    }
    {  // Even checksum offload refused: headers, but every packet plain and whole.
      auto tun = TunDevice::Open("sptest1", 1, &error, TunDevice::OffloadRequest{true, TunDevice::kOffloadCsum});
      ASSERT_NE(tun, nullptr) << error;
      EXPECT_TRUE(tun->vnet_hdr());
      EXPECT_EQ(tun->offloads(), 0u);
      EXPECT_EQ(tun->offload_refusals(), 3);
    }
    {  // Not asked: as before.
      auto tun = TunDevice::Open("sptest1", 1, &error, TunDevice::OffloadRequest{false});
      ASSERT_NE(tun, nullptr) << error;
      EXPECT_FALSE(tun->vnet_hdr());
      EXPECT_EQ(tun->offloads(), 0u);
    }
  });
}

// A UDP GSO send (UDP_SEGMENT) routed into the TUN: one USO super-segment where the kernel
// grants USO, plain datagrams with partial checksums otherwise; either way GsoSplitter gives
// back each datagram whole, with a checksum that verifies.
TEST(TunDevice, AUdpGsoSendReadsAsDatagramsWithValidChecksums) {
  InNewNetns([] {
    DisableIpv6();
    auto netlink = OpenNetlink();
    ASSERT_NE(netlink, nullptr);
    auto tun = SetUpOffloadTun(*netlink);
    ASSERT_NE(tun, nullptr);
    ASSERT_FALSE(testing::Test::HasFailure());
    const int fd = socket(AF_INET, SOCK_DGRAM, 0);
    ASSERT_GE(fd, 0);
    const int segment = 1000;
    ASSERT_EQ(setsockopt(fd, SOL_UDP, UDP_SEGMENT, &segment, sizeof segment), 0) << std::strerror(errno);
    Bytes data(3 * 1000 + 321);
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(i * 13 + (i >> 8));
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(9);
    inet_pton(AF_INET, "203.0.113.5", &to.sin_addr);
    ASSERT_EQ(sendto(fd, data.data(), data.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to),
              static_cast<ssize_t>(data.size()))
        << std::strerror(errno);
    close(fd);
    TunOffloadCounters counters;
    Bytes received;
    const std::vector<Bytes> datagrams = ReadSplitMatching(
        *tun, counters,
        [](const Bytes& p) { return p.size() > 28 && (p[0] >> 4) == 4 && p[9] == IPPROTO_UDP && p[23] == 9; },
        4);
    ASSERT_EQ(datagrams.size(), 4u);
    for (std::size_t i = 0; i < 4; ++i) {
      const Bytes& p = datagrams[i];
      EXPECT_EQ(p.size(), 28u + (i < 3 ? 1000u : 321u));
      EXPECT_EQ((p[2] << 8 | p[3]), static_cast<int>(p.size())) << "IPv4 total length";
      EXPECT_EQ(FinishChecksum(SumWords(std::span(p).first(20))), 0) << "IPv4 header checksum";
      EXPECT_TRUE(TransportChecksumValid(p)) << "UDP checksum of datagram " << i;
      received.insert(received.end(), p.begin() + 28, p.end());
    }
    EXPECT_EQ(received, data);
    if ((tun->offloads() & TunDevice::kOffloadUso4) != 0) {
      EXPECT_EQ(counters.super_segments.load(), 1u);
      EXPECT_EQ(counters.segments_split.load(), 4u);
    } else {
      EXPECT_GE(counters.csum_completed.load(), 4u);
    }
    EXPECT_EQ(counters.bad_vnet_hdr.load(), 0u);
  });
}

// A TCP super-segment written as GroCoalescer writes it is taken by the kernel as one segment:
// to a port with no socket it answers one RST (RFC 9293 3.10.7.1: seq = the segment's ACK).
TEST(TunDevice, ACoalescedTcpWriteIsTakenByTheKernel) {
  InNewNetns([] {
    DisableIpv6();
    auto netlink = OpenNetlink();
    ASSERT_NE(netlink, nullptr);
    auto tun = SetUpOffloadTun(*netlink);
    ASSERT_NE(tun, nullptr);
    ASSERT_FALSE(testing::Test::HasFailure());
    // Three segments of 1000 bytes from 203.0.113.5:40000 to 198.51.100.1:9, ACK 0x01020304.
    const Bytes src = Address(AF_INET, "203.0.113.5"), dst = Address(AF_INET, "198.51.100.1");
    std::vector<Bytes> segments;
    for (std::uint32_t i = 0; i < 3; ++i) {
      Bytes p(40 + 1000, 0);
      p[0] = 0x45;
      PutU16(p, 2, static_cast<std::uint16_t>(p.size()));
      PutU16(p, 4, static_cast<std::uint16_t>(7 + i));
      PutU16(p, 6, 0x4000);
      p[8] = 64;
      p[9] = IPPROTO_TCP;
      std::copy(src.begin(), src.end(), p.begin() + 12);
      std::copy(dst.begin(), dst.end(), p.begin() + 16);
      PutU16(p, 10, FinishChecksum(SumWords(std::span(p).first(20))));
      PutU16(p, 20, 40000);
      PutU16(p, 22, 9);
      const std::uint32_t seq = 5000 + i * 1000;
      PutU16(p, 24, static_cast<std::uint16_t>(seq >> 16));
      PutU16(p, 26, static_cast<std::uint16_t>(seq));
      PutU16(p, 28, 0x0102);
      PutU16(p, 30, 0x0304);
      p[32] = 0x50;
      p[33] = 0x10;  // ACK
      PutU16(p, 34, 1000);
      for (std::size_t k = 40; k < p.size(); ++k) p[k] = static_cast<std::uint8_t>(k + i);
      const std::uint32_t pseudo = SumWords(std::span(p).subspan(12, 8)) + IPPROTO_TCP + 1020;
      PutU16(p, 36, FinishChecksum(SumWords(std::span(p).subspan(20), pseudo)));
      segments.push_back(p);
    }
    struct Writer : TunWriter {
      TunDevice& tun;
      std::vector<VirtioNetHdr> headers;
      explicit Writer(TunDevice& t) : tun(t) {}
      bool Write(const VirtioNetHdr& hdr, std::span<const std::uint8_t> packet) override {
        headers.push_back(hdr);
        return tun.WriteFrame(0, hdr, packet);
      }
    } writer(*tun);
    TunOffloadCounters counters;
    GroCoalescer gro(counters);
    for (const Bytes& s : segments) gro.Add(s, writer);
    gro.Flush(writer);
    ASSERT_EQ(writer.headers.size(), 1u);
    EXPECT_EQ(writer.headers[0].gso_type, VirtioNetHdr::kGsoTcpV4);
    EXPECT_EQ(counters.coalesced_writes.load(), 1u) << "the kernel refused it";
    EXPECT_EQ(counters.fallbacks.load(), 0u);
    TunOffloadCounters read_counters;
    const std::vector<Bytes> rsts = ReadSplitMatching(*tun, read_counters, [](const Bytes& p) {
      return p.size() >= 40 && (p[0] >> 4) == 4 && p[9] == IPPROTO_TCP && (p[33] & 0x04) != 0;
    });
    ASSERT_EQ(rsts.size(), 1u) << "no RST: the kernel dropped the super-segment";
    const Bytes& rst = rsts[0];
    EXPECT_EQ((rst[20] << 8 | rst[21]), 9);
    EXPECT_EQ((rst[22] << 8 | rst[23]), 40000);
    EXPECT_EQ(Bytes(rst.begin() + 24, rst.begin() + 28), (Bytes{1, 2, 3, 4})) << "seq = our ACK";
    EXPECT_TRUE(TransportChecksumValid(rst));
  });
}

// ---- Netlink ------------------------------------------------------------------------------

TEST(Netlink, RepeatedRequestsSucceedAndConflictsAreErrors) {
  InNewNetns([] {
    auto netlink = OpenNetlink();
    ASSERT_NE(netlink, nullptr);
    auto tun = SetUpTun(*netlink, AF_INET, "198.51.100.1", 24, "203.0.113.0", 24);
    ASSERT_NE(tun, nullptr);
    const int ifindex = tun->ifindex();
    const Bytes local = Address(AF_INET, "198.51.100.1");
    const Bytes net = Address(AF_INET, "203.0.113.0");
    std::string error;

    // Applying the same configuration again is fine.
    EXPECT_TRUE(netlink->SetLinkUp(ifindex, 1400, &error)) << error;
    EXPECT_TRUE(netlink->AddAddress(ifindex, AF_INET, local, 24, &error)) << error;
    EXPECT_TRUE(netlink->AddRoute(ifindex, AF_INET, net, 24, {}, &error)) << error;

    // The same prefix through another device is a conflict, reported as such.
    auto other = OpenOrSkip("sptest1", 1);
    ASSERT_NE(other, nullptr);
    ASSERT_TRUE(netlink->SetLinkUp(other->ifindex(), 1400, &error)) << error;
    EXPECT_FALSE(netlink->AddRoute(other->ifindex(), AF_INET, net, 24, {}, &error));
    EXPECT_EQ(errno, EEXIST);
    EXPECT_EQ(error.rfind("netlink: add route 203.0.113.0/24 dev sptest1: File exists", 0), 0u)
        << error;
    // Deleting "our" route through the other device deletes nothing and is not an error...
    EXPECT_TRUE(netlink->DeleteRoute(other->ifindex(), AF_INET, net, 24, &error)) << error;
    // ...the route through sptest0 is still there, and can go away twice.
    EXPECT_TRUE(netlink->AddRoute(ifindex, AF_INET, net, 24, {}, &error)) << error;
    EXPECT_TRUE(netlink->DeleteRoute(ifindex, AF_INET, net, 24, &error)) << error;
    EXPECT_TRUE(netlink->DeleteRoute(ifindex, AF_INET, net, 24, &error)) << error;
    // Now the other device may have it.
    EXPECT_TRUE(netlink->AddRoute(other->ifindex(), AF_INET, net, 24, {}, &error)) << error;

    // Errors name the request and carry the kernel's reason.
    EXPECT_FALSE(netlink->SetLinkUp(ifindex, 100000, &error));
    EXPECT_EQ(error.rfind("netlink: set link sptest0 up mtu 100000: Invalid argument", 0), 0u)
        << error;
    EXPECT_FALSE(netlink->AddRoute(9999, AF_INET, net, 24, {}, &error));
    EXPECT_EQ(error.rfind("netlink: add route 203.0.113.0/24 dev ifindex 9999: No such device", 0),
              0u)
        << error;
    EXPECT_FALSE(
        netlink->AddRoute(ifindex, AF_INET, Address(AF_INET, "203.0.113.1"), 24, {}, &error));
    EXPECT_EQ(error.rfind("netlink: add route 203.0.113.1/24 dev sptest0: Invalid argument", 0), 0u)
        << error;
    EXPECT_FALSE(netlink->AddAddress(ifindex, AF_INET6, local, 24, &error));
    EXPECT_NE(error.find("4-byte address, expected 16"), std::string::npos) << error;
  });
}

TEST(Netlink, LinkStatsCountTheTunQueueOverflowingAndEveryPacketRead) {
  InNewNetns([] {
    DisableIpv6();  // only the datagrams below go into the device
    auto netlink = OpenNetlink();
    ASSERT_NE(netlink, nullptr);
    auto tun = OpenOrSkip("sptest0", 1);
    ASSERT_NE(tun, nullptr);
    std::string error;
    ASSERT_TRUE(netlink->SetLinkUp(tun->ifindex(), 1400, &error)) << error;
    ASSERT_TRUE(netlink->AddAddress(tun->ifindex(), AF_INET, Address(AF_INET, "198.51.100.1"), 24,
                                    &error))
        << error;
    ASSERT_TRUE(netlink->AddRoute(tun->ifindex(), AF_INET, Address(AF_INET, "203.0.113.0"), 24,
                                  Address(AF_INET, "198.51.100.1"), &error))
        << error;
    LinkStats before;
    ASSERT_TRUE(netlink->GetLinkStats(tun->ifindex(), before, &error)) << error;
    EXPECT_EQ(before.tx_dropped, 0u);
    auto sender = UdpSocket::Bind(*Endpoint::Parse("198.51.100.1", 0), {}, &error);
    ASSERT_NE(sender, nullptr) << error;
    // More than the device's queue holds (txqueuelen, 500 by default), nobody reading.
    constexpr std::size_t kSent = 800;
    const Endpoint peer = *Endpoint::Parse("203.0.113.5", 9);
    std::size_t sent = 0;
    for (std::size_t i = 0; i < kSent; ++i) sent += sender->SendTo(peer, Bytes(8, 1));
    std::array<std::array<std::uint8_t, 2048>, 32> buffers{};
    std::array<PacketSlot, 32> slots;
    std::size_t read = 0;
    for (;;) {
      for (std::size_t i = 0; i < slots.size(); ++i) slots[i] = PacketSlot{buffers[i]};
      const BatchResult r = tun->ReadBatch(0, slots);
      read += r.count;
      if (r.count == 0) break;
    }
    LinkStats after;
    ASSERT_TRUE(netlink->GetLinkStats(tun->ifindex(), after, &error)) << error;
    EXPECT_GT(after.tx_dropped, 0u) << "sent " << sent << ", read " << read;
    EXPECT_EQ(after.tx_dropped + read, sent) << "read " << read;
    EXPECT_EQ(after.tx_packets, read);
    EXPECT_EQ(after.rx_packets, 0u);
    EXPECT_FALSE(netlink->GetLinkStats(9999, after, &error));
    EXPECT_EQ(error.rfind("netlink: get link ifindex 9999 stats: No such device", 0), 0u) << error;
  });
}

TEST(Netlink, Ipv6AddressIsUsableAtOnceAndRoutesRepeat) {
  InNewNetns([] {
    auto netlink = OpenNetlink();
    ASSERT_NE(netlink, nullptr);
    auto tun = SetUpTun(*netlink, AF_INET6, "2001:db8::1", 64, "2001:db8:ffff::", 48);
    ASSERT_NE(tun, nullptr);
    std::string error;
    // IFA_F_NODAD: bindable immediately, no tentative period.
    auto socket = UdpSocket::Bind(*Endpoint::Parse("2001:db8::1", 0), {}, &error);
    EXPECT_NE(socket, nullptr) << error;
    const Bytes net = Address(AF_INET6, "2001:db8:ffff::");
    EXPECT_TRUE(
        netlink->AddAddress(tun->ifindex(), AF_INET6, Address(AF_INET6, "2001:db8::1"), 64, &error))
        << error;
    EXPECT_TRUE(netlink->AddRoute(tun->ifindex(), AF_INET6, net, 48, {}, &error)) << error;
    EXPECT_TRUE(netlink->DeleteRoute(tun->ifindex(), AF_INET6, net, 48, &error)) << error;
    EXPECT_TRUE(netlink->DeleteRoute(tun->ifindex(), AF_INET6, net, 48, &error)) << error;
  });
}

}  // namespace
}  // namespace spigot::io
