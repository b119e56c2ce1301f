#include "spigot/io/udp_socket.h"

#include <netinet/in.h>
#include <linux/sock_diag.h>
#include <netinet/udp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace spigot::io {

std::size_t DatagramCount(const RecvSlot& slot) {
  if (slot.segment_size == 0 || slot.length <= slot.segment_size) return 1;
  return (slot.length + slot.segment_size - 1) / slot.segment_size;
}

std::span<std::uint8_t> Datagram(const RecvSlot& slot, std::size_t i) {
  if (slot.segment_size == 0) return slot.buffer.first(slot.length);
  const std::size_t start = i * slot.segment_size;
  return slot.buffer.subspan(start, std::min(slot.segment_size, slot.length - start));
}

std::unique_ptr<UdpSocket> UdpSocket::Bind(const Endpoint& local, const Options& options,
                                           std::string* error) {
  const auto fail = [&](const std::string& what, int fd) -> std::unique_ptr<UdpSocket> {
    const int saved = errno;
    if (error != nullptr) *error = what + ": " + std::strerror(saved);
    if (fd >= 0) close(fd);
    errno = saved;
    return nullptr;
  };
  if (!local.valid()) {
    errno = EAFNOSUPPORT;
    return fail("bind " + local.ToString(), -1);
  }
  const int fd = socket(local.family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_UDP);
  if (fd < 0) return fail("socket", -1);

  const int on = 1;
  const int v6_only = options.v6_only ? 1 : 0;
  if (options.reuse_addr && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0) {
    return fail("setsockopt SO_REUSEADDR", fd);
  }
  if (options.reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0) {
    return fail("setsockopt SO_REUSEPORT", fd);
  }
  if (local.family() == AF_INET6 &&
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6_only, sizeof v6_only) != 0) {
    return fail("setsockopt IPV6_V6ONLY", fd);
  }
  if (bind(fd, local.sockaddr_ptr(), local.sockaddr_len()) != 0) {
    return fail("bind " + local.ToString(), fd);
  }
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof bound;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_len) != 0) {
    return fail("getsockname", fd);
  }
  return std::unique_ptr<UdpSocket>(
      new UdpSocket(fd, Endpoint::FromSockaddr(reinterpret_cast<sockaddr*>(&bound), bound_len)));
}

UdpSocket::~UdpSocket() { close(fd_); }

bool UdpSocket::EnableGso() {
  // Kernels without UDP GSO reject the option with ENOPROTOOPT; reading it changes nothing.
  int size = 0;
  socklen_t len = sizeof size;
  const bool on = getsockopt(fd_, SOL_UDP, UDP_SEGMENT, &size, &len) == 0;
  gso_.store(on, std::memory_order_relaxed);
  return on;
}

bool UdpSocket::EnableGro() {
  const int on = 1;
  gro_ = setsockopt(fd_, SOL_UDP, UDP_GRO, &on, sizeof on) == 0;
  return gro_;
}

bool UdpSocket::EnableDropCounter() {
  const int on = 1;
  rxq_ovfl_ = setsockopt(fd_, SOL_SOCKET, SO_RXQ_OVFL, &on, sizeof on) == 0;
  return rxq_ovfl_;
}

void UdpSocket::NoteKernelDrops(std::uint32_t seen) const {
  std::uint64_t total = receive_.kernel_drops.load(std::memory_order_relaxed);
  for (;;) {
    const std::uint32_t delta = seen - static_cast<std::uint32_t>(total);
    // 0: nothing new. Past half the range: a reading older than the one already merged.
    if (delta == 0 || delta > UINT32_MAX / 2) return;
    if (receive_.kernel_drops.compare_exchange_weak(total, total + delta,
                                                    std::memory_order_relaxed))
      return;
  }
}

std::uint64_t UdpSocket::KernelDrops() const {
  std::uint32_t meminfo[SK_MEMINFO_VARS] = {};
  socklen_t len = sizeof meminfo;
  if (getsockopt(fd_, SOL_SOCKET, SO_MEMINFO, meminfo, &len) == 0 &&
      len > SK_MEMINFO_DROPS * sizeof(std::uint32_t)) {
    NoteKernelDrops(meminfo[SK_MEMINFO_DROPS]);
  }
  return receive_.kernel_drops.load(std::memory_order_relaxed);
}

bool UdpSocket::EnablePacketInfo() {
  const int on = 1;
  pktinfo_ = local_.family() == AF_INET
                 ? setsockopt(fd_, IPPROTO_IP, IP_PKTINFO, &on, sizeof on) == 0
                 : setsockopt(fd_, IPPROTO_IPV6, IPV6_RECVPKTINFO, &on, sizeof on) == 0;
  return pktinfo_;
}

std::size_t UdpSocket::PutSource(msghdr& h, std::size_t used, const IpAddress& source) const {
  if (!wildcard_ || source.family != local_.family()) return 0;
  // CMSG_NXTHDR needs msg_controllen to cover the next header: walk by hand instead.
  auto* c = reinterpret_cast<cmsghdr*>(static_cast<char*>(h.msg_control) + used);
  if (source.family == AF_INET) {
    in_pktinfo info{};
    std::memcpy(&info.ipi_spec_dst, source.bytes.data(), 4);  // the source; ifindex 0: any
    c->cmsg_level = IPPROTO_IP;
    c->cmsg_type = IP_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof info);
    std::memcpy(CMSG_DATA(c), &info, sizeof info);
    return CMSG_SPACE(sizeof info);
  }
  in6_pktinfo info{};
  std::memcpy(&info.ipi6_addr, source.bytes.data(), 16);
  c->cmsg_level = IPPROTO_IPV6;
  c->cmsg_type = IPV6_PKTINFO;
  c->cmsg_len = CMSG_LEN(sizeof info);
  std::memcpy(CMSG_DATA(c), &info, sizeof info);
  return CMSG_SPACE(sizeof info);
}

BatchResult UdpSocket::RecvBatch(std::span<RecvSlot> slots) {
  const std::size_t n = std::min(slots.size(), kMaxBatch);
  for (std::size_t i = 0; i < n; ++i) {
    recv_iov_[i] = iovec{slots[i].buffer.data(), slots[i].buffer.size()};
    msghdr& h = recv_msgs_[i].msg_hdr;
    h = msghdr{};
    h.msg_name = &recv_addrs_[i];
    h.msg_namelen = sizeof(sockaddr_storage);
    h.msg_iov = &recv_iov_[i];
    h.msg_iovlen = 1;
    if (gro_ || rxq_ovfl_ || pktinfo_) {
      h.msg_control = recv_control_[i].bytes;
      h.msg_controllen = sizeof recv_control_[i].bytes;
    }
  }
  int received;
  do {
    received = recvmmsg(fd_, recv_msgs_.data(), static_cast<unsigned>(n), MSG_DONTWAIT, nullptr);
  } while (received < 0 && errno == EINTR);
  if (received < 0) return BatchResult{0, errno};

  std::uint64_t gro_batches = 0, gro_segments = 0, datagrams = 0;
  // The kernel's drop count as the newest datagram carried it (0: none carried one, which the
  // kernel does while the socket has dropped nothing).
  std::uint32_t drops = 0;
  for (int i = 0; i < received; ++i) {
    RecvSlot& slot = slots[i];
    const mmsghdr& m = recv_msgs_[i];
    slot.length = std::min<std::size_t>(m.msg_len, slot.buffer.size());
    slot.truncated = (m.msg_hdr.msg_flags & MSG_TRUNC) != 0;
    slot.peer = Endpoint::FromSockaddr(reinterpret_cast<const sockaddr*>(&recv_addrs_[i]),
                                       m.msg_hdr.msg_namelen);
    slot.segment_size = 0;
    slot.local = IpAddress{};
    if (gro_ || rxq_ovfl_ || pktinfo_) {
      msghdr& h = recv_msgs_[i].msg_hdr;
      for (cmsghdr* c = CMSG_FIRSTHDR(&h); c != nullptr; c = CMSG_NXTHDR(&h, c)) {
        // The datagram's destination: the header's address (ipi_addr), not ipi_spec_dst (the
        // address the kernel would answer from, which differs for a broadcast).
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO &&
            c->cmsg_len >= CMSG_LEN(sizeof(in_pktinfo))) {
          in_pktinfo info;
          std::memcpy(&info, CMSG_DATA(c), sizeof info);
          slot.local.family = AF_INET;
          std::memcpy(slot.local.bytes.data(), &info.ipi_addr, 4);
          continue;
        }
        if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO &&
            c->cmsg_len >= CMSG_LEN(sizeof(in6_pktinfo))) {
          in6_pktinfo info;
          std::memcpy(&info, CMSG_DATA(c), sizeof info);
          slot.local.family = AF_INET6;
          std::memcpy(slot.local.bytes.data(), &info.ipi6_addr, 16);
          continue;
        }
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL &&
            c->cmsg_len >= CMSG_LEN(sizeof(std::uint32_t))) {
          std::memcpy(&drops, CMSG_DATA(c), sizeof drops);
        }
        // UDP_GRO carries the segment size (an int) when the kernel coalesced; without it
        // the buffer is one datagram.
        if (c->cmsg_level != SOL_UDP || c->cmsg_type != UDP_GRO ||
            c->cmsg_len < CMSG_LEN(sizeof(int)))
          continue;
        int size = 0;
        std::memcpy(&size, CMSG_DATA(c), sizeof size);
        if (size > 0 && slot.length > static_cast<std::size_t>(size)) {
          slot.segment_size = static_cast<std::size_t>(size);
        }
      }
    }
    datagrams += DatagramCount(slot);
    if (slot.segment_size != 0) {
      ++gro_batches;
      gro_segments += DatagramCount(slot);
    }
  }
  receive_.datagrams.fetch_add(datagrams, std::memory_order_relaxed);
  if (drops != 0) NoteKernelDrops(drops);
  if (gro_batches != 0) {
    offload_.gro_batches.fetch_add(gro_batches, std::memory_order_relaxed);
    offload_.gro_segments.fetch_add(gro_segments, std::memory_order_relaxed);
  }
  return BatchResult{static_cast<std::size_t>(received), 0};
}

std::size_t UdpSocket::BuildSendMessages(std::span<const SendItem> items, std::size_t from,
                                         std::size_t n) {
  const bool gso = gso_.load(std::memory_order_relaxed);
  std::size_t m = 0;
  for (std::size_t i = from; i < n; ++m) {
    // A run: one peer, datagrams of `size` bytes, and at most one shorter one, last.
    const std::size_t size = items[i].data.size();
    std::size_t j = i + 1;
    if (gso && size > 0 && size < gso_refused_size_) {
      std::size_t total = size;
      while (j < n && j - i < kMaxGsoSegments && items[j].peer == items[i].peer &&
             items[j].source == items[i].source) {
        const std::size_t next = items[j].data.size();
        if (next == 0 || next > size || total + next > kMaxGsoBytes) break;
        total += next;
        ++j;
        if (next < size) break;
      }
    }
    msghdr& h = send_msgs_[m].msg_hdr;
    h = msghdr{};
    h.msg_name = const_cast<sockaddr*>(items[i].peer.sockaddr_ptr());
    h.msg_namelen = items[i].peer.sockaddr_len();
    h.msg_iov = &send_iov_[i];
    h.msg_iovlen = j - i;
    std::size_t control = 0;
    h.msg_control = send_control_[m].bytes;
    if (j - i > 1) {
      auto* c = reinterpret_cast<cmsghdr*>(send_control_[m].bytes);
      c->cmsg_level = SOL_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(std::uint16_t));
      const auto segment = static_cast<std::uint16_t>(size);
      std::memcpy(CMSG_DATA(c), &segment, sizeof segment);
      control = CMSG_SPACE(sizeof(std::uint16_t));
    }
    if (!items[i].source.empty()) control += PutSource(h, control, items[i].source);
    h.msg_controllen = control;
    if (control == 0) h.msg_control = nullptr;
    send_first_[m] = i;
    send_count_[m] = j - i;
    i = j;
  }
  return m;
}

bool UdpSocket::GsoRefused(std::size_t m, int error) {
  if (send_count_[m] < 2) return false;
  if (error == EIO) {
    // The device cannot checksum (or segment) for us: every GSO message would fail.
    gso_.store(false, std::memory_order_relaxed);
  } else if (error == EINVAL || error == EMSGSIZE) {
    // A segment the path cannot carry unfragmented: plain datagrams are fragmented instead.
    gso_refused_size_ = std::min(gso_refused_size_, send_iov_[send_first_[m]].iov_len);
  } else {
    return false;
  }
  offload_.gso_fallbacks.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void UdpSocket::CountGsoSends(std::uint64_t messages, std::uint64_t segments) {
  if (messages == 0) return;
  offload_.gso_sends.fetch_add(messages, std::memory_order_relaxed);
  offload_.gso_segments.fetch_add(segments, std::memory_order_relaxed);
}

BatchResult UdpSocket::SendBatch(std::span<const SendItem> items) {
  const std::size_t n = std::min(items.size(), kMaxBatch);
  for (std::size_t i = 0; i < n; ++i) {
    // iovec's base is not const-qualified; sendmmsg does not write through it.
    send_iov_[i] = iovec{const_cast<std::uint8_t*>(items[i].data.data()), items[i].data.size()};
  }
  std::size_t messages = BuildSendMessages(items, 0, n);
  // sendmmsg stops at the first message that fails and reports only the count; calling again
  // from there returns that message's error.
  std::size_t done = 0;  // messages
  std::uint64_t gso_sends = 0, gso_segments = 0;
  while (done < messages) {
    std::size_t limit = messages;
    int sent;
    if (refuse_next_gso_) {
      // The test hook: stop before the first GSO message and fail that one.
      limit = done;
      while (limit < messages && send_count_[limit] < 2) ++limit;
    }
    if (limit == done) {
      refuse_next_gso_ = false;
      errno = EIO;
      sent = -1;
    } else {
      sent = sendmmsg(fd_, send_msgs_.data() + done, static_cast<unsigned>(limit - done),
                      MSG_DONTWAIT);
    }
    if (sent < 0) {
      const int error = errno;
      if (error == EINTR) continue;
      if (!GsoRefused(done, error)) {
        CountGsoSends(gso_sends, gso_segments);
        return BatchResult{send_first_[done], error};
      }
      // Again from the refused run, without GSO for it; the messages before it are sent.
      messages = BuildSendMessages(items, send_first_[done], n);
      done = 0;
      continue;
    }
    for (int k = 0; k < sent; ++k, ++done) {
      if (send_count_[done] > 1) {
        ++gso_sends;
        gso_segments += send_count_[done];
      }
    }
  }
  CountGsoSends(gso_sends, gso_segments);
  return BatchResult{n, 0};
}

bool UdpSocket::SendTo(const Endpoint& peer, std::span<const std::uint8_t> data,
                       const IpAddress& source) {
  ssize_t sent;
  Control control;
  msghdr h{};
  iovec iov{const_cast<std::uint8_t*>(data.data()), data.size()};
  h.msg_name = const_cast<sockaddr*>(peer.sockaddr_ptr());
  h.msg_namelen = peer.sockaddr_len();
  h.msg_iov = &iov;
  h.msg_iovlen = 1;
  if (!source.empty()) {
    h.msg_control = control.bytes;
    h.msg_controllen = PutSource(h, 0, source);
    if (h.msg_controllen == 0) h.msg_control = nullptr;
  }
  do {
    sent = sendmsg(fd_, &h, MSG_DONTWAIT);
  } while (sent < 0 && errno == EINTR);
  return sent >= 0;
}

}  // namespace spigot::io
