#include "spigot/io/udp_socket.h"

#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace spigot::io {

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
  }
  int received;
  do {
    received = recvmmsg(fd_, recv_msgs_.data(), static_cast<unsigned>(n), MSG_DONTWAIT, nullptr);
  } while (received < 0 && errno == EINTR);
  if (received < 0) return BatchResult{0, errno};

  for (int i = 0; i < received; ++i) {
    RecvSlot& slot = slots[i];
    const mmsghdr& m = recv_msgs_[i];
    slot.length = std::min<std::size_t>(m.msg_len, slot.buffer.size());
    slot.truncated = (m.msg_hdr.msg_flags & MSG_TRUNC) != 0;
    slot.peer = Endpoint::FromSockaddr(reinterpret_cast<const sockaddr*>(&recv_addrs_[i]),
                                       m.msg_hdr.msg_namelen);
  }
  return BatchResult{static_cast<std::size_t>(received), 0};
}

BatchResult UdpSocket::SendBatch(std::span<const SendItem> items) {
  const std::size_t n = std::min(items.size(), kMaxBatch);
  for (std::size_t i = 0; i < n; ++i) {
    // iovec's base is not const-qualified; sendmmsg does not write through it.
    send_iov_[i] = iovec{const_cast<std::uint8_t*>(items[i].data.data()), items[i].data.size()};
    msghdr& h = send_msgs_[i].msg_hdr;
    h = msghdr{};
    h.msg_name = const_cast<sockaddr*>(items[i].peer.sockaddr_ptr());
    h.msg_namelen = items[i].peer.sockaddr_len();
    h.msg_iov = &send_iov_[i];
    h.msg_iovlen = 1;
  }
  // sendmmsg stops at the first datagram that fails and reports only the count; calling again
  // from there returns that datagram's error.
  std::size_t done = 0;
  while (done < n) {
    const int sent =
        sendmmsg(fd_, send_msgs_.data() + done, static_cast<unsigned>(n - done), MSG_DONTWAIT);
    if (sent < 0) {
      if (errno == EINTR) continue;
      return BatchResult{done, errno};
    }
    done += static_cast<std::size_t>(sent);
  }
  return BatchResult{done, 0};
}

bool UdpSocket::SendTo(const Endpoint& peer, std::span<const std::uint8_t> data) {
  ssize_t sent;
  do {
    sent = sendto(fd_, data.data(), data.size(), MSG_DONTWAIT, peer.sockaddr_ptr(),
                  peer.sockaddr_len());
  } while (sent < 0 && errno == EINTR);
  return sent >= 0;
}

}  // namespace spigot::io
