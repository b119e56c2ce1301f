// udp_spray: the traffic of bench/tunnel.sh's "1,000 tunnels" case, which neither iperf3 nor a
// script can make: UDP datagrams spread round-robin over many (source, destination) address
// pairs — pair k from SRC_BASE+k to DST_BASE+k, one tunnel's selectors each — as fast as
// sendmmsg(2) goes, or at a given rate; and the sink that counts them on the far side.
//
//   udp_spray send [--gso] SRC_BASE DST_BASE PAIRS PORT SIZE SECONDS [PPS]
//   udp_spray sink [--gro] PORT SECONDS [SIZE]   prints "received N datagrams, B bytes in S s"
//                                        (only datagrams of SIZE bytes, if given; others "stray")
//
// --gso sends each message as 64 datagrams of SIZE bytes in one UDP_SEGMENT super-datagram, so
// the sender's system calls stop being the bottleneck for small packets; --gro has the sink take
// them in coalesced (UDP_GRO) and count the datagrams inside. The tunnel in between still sees,
// seals and opens every datagram on its own (its TUN hands super-datagrams over only where it
// negotiated USO offloads, and splits them).
//
// Each datagram's source is set per message (IP_PKTINFO), so one socket serves every pair; the
// addresses must exist on the sender's host. Benchmark tool only, not part of spigot.
#include <arpa/inet.h>
#include <netinet/udp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kBatch = 64;
constexpr int kSegments = 64;  // datagrams per --gso message: the kernel's UDP_MAX_SEGMENTS

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

// argv without a leading FLAG, and whether it was there.
bool TakeFlag(int& argc, char**& argv, const char* flag) {
  if (argc < 3 || std::strcmp(argv[2], flag) != 0) return false;
  argv[2] = argv[1];
  ++argv;
  --argc;
  return true;
}

bool ParseV4(const char* text, std::uint32_t& out) {
  in_addr a{};
  if (inet_pton(AF_INET, text, &a) != 1) return false;
  out = ntohl(a.s_addr);
  return true;
}

int Send(int argc, char** argv) {
  const bool gso = TakeFlag(argc, argv, "--gso");
  if (argc < 8) return 2;
  std::uint32_t src_base = 0, dst_base = 0;
  if (!ParseV4(argv[2], src_base) || !ParseV4(argv[3], dst_base)) {
    std::fprintf(stderr, "udp_spray: bad address\n");
    return 2;
  }
  const int pairs = std::atoi(argv[4]);
  const int port = std::atoi(argv[5]);
  const int size = std::atoi(argv[6]);
  const double seconds = std::atof(argv[7]);
  const double pps = argc > 8 ? std::atof(argv[8]) : 0;
  if (pairs < 1 || port < 1 || port > 65535 || size < 16 || size > 65000 || seconds <= 0) return 2;

  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  const int on = 1;
  setsockopt(fd, SOL_IP, IP_FREEBIND, &on, sizeof(on));
  const int per_message = gso ? kSegments : 1;
  if (gso) {
    const int segment = size;
    if (size * kSegments > 65000 || setsockopt(fd, SOL_UDP, UDP_SEGMENT, &segment, sizeof(segment)) != 0) {
      std::perror("udp_spray send: UDP_SEGMENT");
      return 1;
    }
  }
  std::vector<std::uint8_t> payload(static_cast<std::size_t>(size * per_message), 0x5a);
  std::vector<sockaddr_in> dst(kBatch);
  std::vector<iovec> iov(kBatch);
  std::vector<mmsghdr> msgs(kBatch);
  std::vector<std::array<char, CMSG_SPACE(sizeof(in_pktinfo))>> control(kBatch);

  std::uint64_t sent = 0, failed = 0;
  std::uint32_t next = 0;
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  for (;;) {
    const auto now = Clock::now();
    if (now >= end) break;
    if (pps > 0) {
      const double due = std::chrono::duration<double>(now - start).count() * pps;
      if (static_cast<double>((sent + failed) * per_message) >= due) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        continue;
      }
    }
    for (int i = 0; i < kBatch; ++i) {
      const std::uint32_t k = next;
      next = (next + 1) % static_cast<std::uint32_t>(pairs);
      dst[i] = sockaddr_in{};
      dst[i].sin_family = AF_INET;
      dst[i].sin_port = htons(static_cast<std::uint16_t>(port));
      dst[i].sin_addr.s_addr = htonl(dst_base + k);
      iov[i] = iovec{payload.data(), payload.size()};
      msgs[i] = mmsghdr{};
      msgs[i].msg_hdr.msg_name = &dst[i];
      msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in);
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_control = control[i].data();
      msgs[i].msg_hdr.msg_controllen = control[i].size();
      cmsghdr* c = CMSG_FIRSTHDR(&msgs[i].msg_hdr);
      c->cmsg_level = SOL_IP;
      c->cmsg_type = IP_PKTINFO;
      c->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
      in_pktinfo info{};
      info.ipi_spec_dst.s_addr = htonl(src_base + k);
      std::memcpy(CMSG_DATA(c), &info, sizeof(info));
    }
    int done = 0;
    while (done < kBatch) {
      const int n = sendmmsg(fd, msgs.data() + done, static_cast<unsigned>(kBatch - done), 0);
      if (n <= 0) {  // e.g. ENOBUFS with the TUN's queue full: that datagram is lost here
        ++failed;
        ++done;
        continue;
      }
      done += n;
      sent += static_cast<std::uint64_t>(n);
    }
  }
  sent *= static_cast<std::uint64_t>(per_message);
  failed *= static_cast<std::uint64_t>(per_message);
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("sent %llu datagrams (%d bytes) over %d pairs in %.2f s (%.0f/s), %llu refused\n",
              static_cast<unsigned long long>(sent), size, pairs, secs, static_cast<double>(sent) / secs,
              static_cast<unsigned long long>(failed));
  close(fd);
  return 0;
}

int Sink(int argc, char** argv) {
  const bool gro = TakeFlag(argc, argv, "--gro");
  if (argc < 4) return 2;
  const int port = std::atoi(argv[2]);
  const double seconds = std::atof(argv[3]);
  const long size = argc > 4 ? std::atol(argv[4]) : -1;
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  const int on = 1;
  const int buf = 32 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof(buf));
  if (gro && setsockopt(fd, SOL_UDP, UDP_GRO, &on, sizeof(on)) != 0) {
    std::perror("udp_spray sink: UDP_GRO");
    return 1;
  }
  sockaddr_in any{};
  any.sin_family = AF_INET;
  any.sin_port = htons(static_cast<std::uint16_t>(port));
  if (bind(fd, reinterpret_cast<sockaddr*>(&any), sizeof(any)) != 0) {
    std::perror("udp_spray sink: bind");
    return 1;
  }
  timeval tv{0, 200000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  // A coalesced message carries up to 64 KiB.
  const std::size_t room = gro ? 65536 : 2048;
  std::vector<std::uint8_t> bufs(room * kBatch);
  std::vector<iovec> iov(kBatch);
  std::vector<mmsghdr> msgs(kBatch);
  std::vector<std::array<char, CMSG_SPACE(sizeof(int))>> control(kBatch);
  const auto reset = [&] {
    for (int i = 0; i < kBatch; ++i) {
      iov[i] = iovec{bufs.data() + room * static_cast<std::size_t>(i), room};
      msgs[i] = mmsghdr{};
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_control = control[i].data();
      msgs[i].msg_hdr.msg_controllen = control[i].size();
    }
  };
  std::printf("listening\n");
  std::fflush(stdout);
  std::uint64_t packets = 0, bytes = 0, stray = 0;
  Clock::time_point first{}, last{};
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < end) {
    reset();
    const int n = recvmmsg(fd, msgs.data(), kBatch, 0, nullptr);
    if (n <= 0) continue;
    const auto now = Clock::now();
    for (int i = 0; i < n; ++i) {
      // A coalesced message: equal datagrams of the UDP_GRO size, the last one possibly shorter.
      unsigned segment = msgs[i].msg_len;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c != nullptr; c = CMSG_NXTHDR(&msgs[i].msg_hdr, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
          int g = 0;
          std::memcpy(&g, CMSG_DATA(c), sizeof(g));
          if (g > 0) segment = static_cast<unsigned>(g);
        }
      }
      for (unsigned off = 0; off < msgs[i].msg_len; off += segment) {
        const unsigned len = std::min(segment, msgs[i].msg_len - off);
        if (size >= 0 && len != static_cast<unsigned>(size)) {
          ++stray;
          continue;
        }
        if (packets == 0) first = now;
        last = now;
        ++packets;
        bytes += len;
      }
    }
  }
  const double secs = std::chrono::duration<double>(last - first).count();
  std::printf("received %llu datagrams, %llu bytes in %.2f s (%llu stray)\n",
              static_cast<unsigned long long>(packets), static_cast<unsigned long long>(bytes), secs,
              static_cast<unsigned long long>(stray));
  close(fd);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  int rc = 2;
  if (mode == "send") rc = Send(argc, argv);
  if (mode == "sink") rc = Sink(argc, argv);
  if (rc == 2) {
    std::fprintf(stderr,
                 "usage: udp_spray send [--gso] SRC_BASE DST_BASE PAIRS PORT SIZE SECONDS [PPS]\n"
                 "       udp_spray sink [--gro] PORT SECONDS [SIZE]\n");
  }
  return rc;
}
