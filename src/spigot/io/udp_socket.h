// A non-blocking UDP socket with batched I/O (recvmmsg/sendmmsg): one system call moves up to
// kMaxBatch datagrams, into and out of buffers the caller owns.
//
// RecvBatch() and SendBatch() each use their own scratch arrays, so one thread may receive while
// another sends; each of the two must be called by one thread at a time.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "spigot/io/endpoint.h"

namespace spigot::io {

// One datagram slot for RecvBatch().
struct RecvSlot {
  std::span<std::uint8_t> buffer;  // in: where the datagram goes (the caller's memory)
  std::size_t length = 0;          // out: bytes stored in `buffer`
  Endpoint peer;                   // out: the sender
  bool truncated = false;          // out: the datagram was longer than `buffer` (tail lost)
};

// One datagram for SendBatch().
struct SendItem {
  Endpoint peer;
  std::span<const std::uint8_t> data;
};

// `count` datagrams were moved; `error` is 0, or the errno that stopped the batch early
// (EAGAIN: nothing (more) to receive / the send buffer is full). For SendBatch, the datagram at
// index `count` is the one that failed.
struct BatchResult {
  std::size_t count = 0;
  int error = 0;
};

class UdpSocket {
 public:
  // Datagrams per system call; larger batches are cut to this.
  static constexpr std::size_t kMaxBatch = 64;

  struct Options {
    // SO_REUSEPORT: several sockets (one per data-path thread) share the address and the kernel
    // spreads flows across them.
    bool reuse_port = false;
    // SO_REUSEADDR. Off by default: on Linux it lets a second UDP socket bind the same
    // address and port, so a second daemon would start and silently take half the traffic
    // instead of failing with EADDRINUSE.
    bool reuse_addr = false;
    // IPV6_V6ONLY for IPv6 sockets: "::" does not also receive IPv4 (as mapped addresses).
    bool v6_only = true;
  };

  // Binds to `local` (port 0: the kernel picks one; see local_endpoint()). nullptr on failure,
  // with `error` saying what failed ("bind 192.0.2.1:500: Address already in use").
  static std::unique_ptr<UdpSocket> Bind(const Endpoint& local, const Options& options,
                                         std::string* error = nullptr);
  ~UdpSocket();
  UdpSocket(const UdpSocket&) = delete;
  UdpSocket& operator=(const UdpSocket&) = delete;

  int fd() const { return fd_; }
  const Endpoint& local_endpoint() const { return local_; }

  // Receives up to min(slots.size(), kMaxBatch) datagrams without blocking.
  BatchResult RecvBatch(std::span<RecvSlot> slots);
  // Sends up to min(items.size(), kMaxBatch) datagrams without blocking.
  BatchResult SendBatch(std::span<const SendItem> items);
  // One datagram. false: errno says why.
  bool SendTo(const Endpoint& peer, std::span<const std::uint8_t> data);

 private:
  UdpSocket(int fd, const Endpoint& local) : fd_(fd), local_(local) {}

  int fd_;
  Endpoint local_;
  // Scratch space for the system calls: no allocation per batch.
  std::array<mmsghdr, kMaxBatch> recv_msgs_{};
  std::array<iovec, kMaxBatch> recv_iov_{};
  std::array<sockaddr_storage, kMaxBatch> recv_addrs_{};
  std::array<mmsghdr, kMaxBatch> send_msgs_{};
  std::array<iovec, kMaxBatch> send_iov_{};
};

}  // namespace spigot::io
