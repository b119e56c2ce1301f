// A non-blocking UDP socket with batched I/O (recvmmsg/sendmmsg): one system call moves up to
// kMaxBatch datagrams, into and out of buffers the caller owns.
//
// Two optional kernel offloads, each probed and off unless asked for (EnableGso, EnableGro);
// refused, the socket behaves exactly as without them:
// - UDP GSO (UDP_SEGMENT, Linux >= 4.18): SendBatch passes a run of consecutive datagrams to
//   one peer, all of one size but a shorter last one, as one message that the kernel (or the
//   NIC) cuts back into datagrams. A device that refuses it (EIO: no checksum offload) turns
//   GSO off for the socket; a size the path refuses (EINVAL: larger than the MTU) is not
//   coalesced again. Either way the refused run is resent one datagram each, and counted.
// - UDP GRO (UDP_GRO, Linux >= 5.0): the kernel may hand RecvBatch several datagrams of one
//   flow back to back in one buffer (RecvSlot::segment_size); DatagramCount()/Datagram() split
//   them. Buffers then need kGroBufferSize bytes, or coalesced datagrams arrive truncated.
//
// Addresses (EnablePacketInfo, IP_PKTINFO / IPV6_RECVPKTINFO): a socket bound to the wildcard
// address (0.0.0.0, ::) receives on every local address and, without help, cannot tell which one
// a datagram came to, nor choose the one it sends from (the kernel picks by route). With packet
// info on, RecvSlot::local is each datagram's destination address; and on a wildcard socket a
// datagram with a source address (SendItem::source) leaves from it (an in_pktinfo / in6_pktinfo
// control message; on a socket bound to one address the source is always that one and is not
// set). A GSO run has one source: a change of source starts a new message.
//
// Drops: with EnableDropCounter() (SO_RXQ_OVFL), every received datagram carries the socket's
// drop count (sk_drops: datagrams the kernel threw away because the receive queue was full,
// SO_RCVBUF, or failed a socket filter or checksum on the way in — in practice the queue), and
// KernelDrops() reads the same count on demand (SO_MEMINFO), so datagrams dropped after the last
// one received are not missed. With receive_counters().datagrams, every datagram the host
// delivered to this socket is accounted for: datagrams + kernel_drops.
//
// RecvBatch() and SendBatch() each use their own scratch arrays, so one thread may receive while
// another sends; each of the two must be called by one thread at a time.
#pragma once

#include <sys/socket.h>

#include <array>
#include <atomic>
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
  // out: 0, `buffer` holds one datagram; else (UDP GRO) it holds length / segment_size
  // datagrams of this size back to back, and a shorter last one if the division leaves some.
  std::size_t segment_size = 0;
  // out, with EnablePacketInfo(): the local address the datagram was sent to; else empty.
  IpAddress local;
};

// The datagrams in a received slot: one, or several with UDP GRO (all from `slot.peer`).
std::size_t DatagramCount(const RecvSlot& slot);
// Datagram i < DatagramCount(slot), inside slot.buffer.
std::span<std::uint8_t> Datagram(const RecvSlot& slot, std::size_t i);

// One datagram for SendBatch().
struct SendItem {
  Endpoint peer;
  std::span<const std::uint8_t> data;
  // The address to send from (a wildcard socket only; see the header); empty: the kernel's pick.
  IpAddress source = {};
};

// `count` datagrams were moved; `error` is 0, or the errno that stopped the batch early
// (EAGAIN: nothing (more) to receive / the send buffer is full). For SendBatch, the datagram at
// index `count` is the one that failed.
struct BatchResult {
  std::size_t count = 0;
  int error = 0;
};

// What the offloads did. Written by the sending and the receiving thread, read by anyone.
struct UdpOffloadCounters {
  std::atomic<std::uint64_t> gso_sends{0};      // messages sent with UDP_SEGMENT
  std::atomic<std::uint64_t> gso_segments{0};   // datagrams in them
  std::atomic<std::uint64_t> gso_fallbacks{0};  // GSO messages refused, resent one datagram each
  std::atomic<std::uint64_t> gro_batches{0};    // received buffers that held several datagrams
  std::atomic<std::uint64_t> gro_segments{0};   // datagrams in them
};

// What RecvBatch() took off the socket and what the kernel dropped before it could.
struct UdpReceiveCounters {
  std::atomic<std::uint64_t> datagrams{0};  // returned by RecvBatch (GRO segments each counted)
  // The socket's sk_drops since it was opened, widened to 64 bits. The kernel's counter is 32
  // bits; the low 32 bits of this one always equal the last value seen, and each newer value
  // adds its difference, so the count survives the kernel's wrap-around.
  std::atomic<std::uint64_t> kernel_drops{0};
};

class UdpSocket {
 public:
  // Datagrams per system call; larger batches are cut to this.
  static constexpr std::size_t kMaxBatch = 64;
  // Datagrams in one GSO message: the kernel's UDP_MAX_SEGMENTS (64 before Linux 6.9, 128
  // since; the lower one works on both).
  static constexpr std::size_t kMaxGsoSegments = 64;
  // Bytes in one GSO message: the largest UDP payload over IPv4, 65535 - 20 (IPv4 header)
  // - 8 (UDP header) = 65507 (IPv6 allows 65535 - 8; the smaller serves both).
  static constexpr std::size_t kMaxGsoBytes = 65535 - 20 - 8;
  // A receive buffer that holds any GRO-coalesced message: 64 KiB.
  static constexpr std::size_t kGroBufferSize = 65536;

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

  // Turns UDP GSO on for SendBatch if the kernel has it (probe: getsockopt UDP_SEGMENT).
  // false: it does not; SendBatch sends one datagram per message, as before.
  bool EnableGso();
  // Turns UDP GRO on (setsockopt UDP_GRO): RecvBatch may then fill a slot with several
  // datagrams, so slots should have kGroBufferSize bytes. false: refused, one per slot.
  bool EnableGro();
  // GSO is on (EnableGso() succeeded and no device refused it since).
  bool gso() const { return gso_.load(std::memory_order_relaxed); }
  bool gro() const { return gro_; }
  const UdpOffloadCounters& offload_counters() const { return offload_; }
  // Turns on SO_RXQ_OVFL: RecvBatch then reads the kernel's drop count from each datagram's
  // control message into receive_counters().kernel_drops. false: refused (errno says why).
  bool EnableDropCounter();
  bool drop_counter() const { return rxq_ovfl_; }
  // Turns on IP_PKTINFO (IPv4) / IPV6_RECVPKTINFO (IPv6): RecvSlot::local is filled. false:
  // refused (errno says why). Sending from a chosen source needs no option.
  bool EnablePacketInfo();
  bool packet_info() const { return pktinfo_; }
  // The kernel's drop count for this socket now (SO_MEMINFO), merged into
  // receive_counters().kernel_drops and returned. Any thread. Without SO_MEMINFO (Linux < 4.12)
  // the count the last datagram carried.
  std::uint64_t KernelDrops() const;
  const UdpReceiveCounters& receive_counters() const { return receive_; }
  // Test hook: the next GSO message fails as a device without checksum offload makes it fail
  // (EIO), without reaching the kernel, so that the fallback runs.
  void RefuseNextGsoForTest() { refuse_next_gso_ = true; }

  // Receives up to min(slots.size(), kMaxBatch) slots without blocking (more datagrams than
  // slots with GRO: see DatagramCount).
  BatchResult RecvBatch(std::span<RecvSlot> slots);
  // Sends up to min(items.size(), kMaxBatch) datagrams without blocking, in order; with GSO
  // on, runs of them in one message each (`count` still counts datagrams).
  BatchResult SendBatch(std::span<const SendItem> items);
  // One datagram, from `source` if the socket is a wildcard one and `source` is of its family.
  // false: errno says why (EINVAL: `source` is no longer an address of this host).
  bool SendTo(const Endpoint& peer, std::span<const std::uint8_t> data,
              const IpAddress& source = {});

 private:
  UdpSocket(int fd, const Endpoint& local)
      : fd_(fd), local_(local), wildcard_(local.wildcard()) {}
  // Fills send_msgs_ from its start with items[from, n) (send_iov_ already holds them): a run
  // per message with GSO, else one datagram each. Returns the number of messages.
  std::size_t BuildSendMessages(std::span<const SendItem> items, std::size_t from, std::size_t n);
  // The message at send_msgs_[m] was refused with `error`: true if it was a GSO message that a
  // plain resend may fix (GSO off, or its segment size not coalesced again), counted.
  bool GsoRefused(std::size_t m, int error);
  void CountGsoSends(std::uint64_t messages, std::uint64_t segments);
  // Merges a reading of the kernel's 32-bit drop counter into receive_.kernel_drops: the
  // difference to the last reading is added; an older reading (another thread's) is ignored.
  void NoteKernelDrops(std::uint32_t seen) const;

  // Appends the source-address control message for `source` at `c` (inside `h`'s control
  // buffer, which has room); returns the bytes used, 0 if the source is not set on this socket.
  std::size_t PutSource(msghdr& h, std::size_t used, const IpAddress& source) const;

  // Control messages: a u16 (UDP_SEGMENT) and a packet info to send; an int (UDP_GRO), a u32
  // (SO_RXQ_OVFL) and a packet info (in6_pktinfo is the larger) received.
  union Control {
    char bytes[CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(std::uint32_t)) +
               CMSG_SPACE(sizeof(in6_pktinfo))];
    cmsghdr align;
  };

  int fd_;
  Endpoint local_;
  // Set by EnableGso(), cleared by the sending thread when a device refuses GSO.
  std::atomic<bool> gso_{false};
  bool gro_ = false;
  bool rxq_ovfl_ = false;
  bool pktinfo_ = false;
  const bool wildcard_;  // bound to 0.0.0.0 or ::: a source may be chosen per datagram
  bool refuse_next_gso_ = false;
  // Segment sizes from this one up were refused (EINVAL: over the path's MTU); not coalesced.
  std::size_t gso_refused_size_ = SIZE_MAX;
  UdpOffloadCounters offload_;
  mutable UdpReceiveCounters receive_;  // KernelDrops() (const) merges what it reads
  // Scratch space for the system calls: no allocation per batch.
  std::array<mmsghdr, kMaxBatch> recv_msgs_{};
  std::array<iovec, kMaxBatch> recv_iov_{};
  std::array<sockaddr_storage, kMaxBatch> recv_addrs_{};
  std::array<Control, kMaxBatch> recv_control_{};
  std::array<mmsghdr, kMaxBatch> send_msgs_{};
  std::array<iovec, kMaxBatch> send_iov_{};
  std::array<Control, kMaxBatch> send_control_{};
  // Per message: its first datagram (index into items) and how many it carries.
  std::array<std::size_t, kMaxBatch> send_first_{};
  std::array<std::size_t, kMaxBatch> send_count_{};
};

}  // namespace spigot::io
