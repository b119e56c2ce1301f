// TUN offloads in userspace: what a TUN device opened with IFF_VNET_HDR and TUNSETOFFLOAD
// (io/tun.h) asks of its reader and allows its writer.
//
// Every read() from such a device starts with a virtio-net header (include/uapi/linux/
// virtio_net.h, struct virtio_net_hdr, in host byte order) and may be:
//   - a plain packet, its transport checksum possibly left partial (VIRTIO_NET_HDR_F_NEEDS_CSUM:
//     the field at csum_start + csum_offset holds the pseudo-header sum, the rest is ours);
//   - a super-segment (TSO, gso_type TCPV4/TCPV6; USO, gso_type UDP_L4): one IP and one TCP or
//     UDP header over up to 64 KiB of payload, to be cut into gso_size pieces.
// GsoSplitter turns either into ordinary packets with every header field and checksum as the
// kernel's own segmentation (tcp_gso_segment, __udp_gso_segment) would have made them.
//
// Every write() to the device starts with a virtio-net header too, and may carry a TCP
// super-segment, or (with USO granted) a UDP one, that the kernel's stack takes as one packet
// (the GRO it does for a NIC). GroCoalescer merges consecutive opened segments of one TCP flow
// into one, by the kernel's GRO rules (tcp_gro_receive, inet_gro_receive, ipv6_gro_receive),
// and datagrams of one UDP flow of equal size (the last may be shorter) the way udp_gro_receive
// does for a socket with UDP_GRO; it writes everything else as it came.
//
// Bad input: a header that contradicts its packet (unknown gso_type, offsets outside the
// packet or off the transport header, gso_size 0, segments that do not fit the caller's
// buffers) drops the frame and counts bad_vnet_hdr; it never reads or writes outside a buffer.
// A segment whose checksum is wrong is never coalesced (that would make the kernel trust it):
// it is written untouched and counted (bad_csum_passed), and the kernel drops it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace spigot::io {

// struct virtio_net_hdr (the 10-byte legacy header TUN uses unless TUNSETVNETHDRSZ changes it).
struct VirtioNetHdr {
  static constexpr std::size_t kSize = 10;
  // flags
  static constexpr std::uint8_t kNeedsCsum = 1;  // VIRTIO_NET_HDR_F_NEEDS_CSUM
  static constexpr std::uint8_t kDataValid = 2;  // VIRTIO_NET_HDR_F_DATA_VALID
  // gso_type
  static constexpr std::uint8_t kGsoNone = 0;
  static constexpr std::uint8_t kGsoTcpV4 = 1;
  static constexpr std::uint8_t kGsoUdp = 3;    // UFO (IP fragmentation): never granted
  static constexpr std::uint8_t kGsoTcpV6 = 4;
  static constexpr std::uint8_t kGsoUdpL4 = 5;  // USO (Linux >= 6.2)
  static constexpr std::uint8_t kGsoEcn = 0x80;  // the TCP super-segment had CWR set

  std::uint8_t flags = 0;
  std::uint8_t gso_type = kGsoNone;
  std::uint16_t hdr_len = 0;
  std::uint16_t gso_size = 0;
  std::uint16_t csum_start = 0;
  std::uint16_t csum_offset = 0;

  // `b` holds at least kSize bytes.
  static VirtioNetHdr Parse(std::span<const std::uint8_t> b);
  void Serialize(std::span<std::uint8_t> b) const;
};

// What the offloads did. Written by the data-path threads, read by anyone.
struct TunOffloadCounters {
  std::atomic<std::uint64_t> super_segments{0};     // GSO frames read and split
  std::atomic<std::uint64_t> segments_split{0};     // packets cut from them
  std::atomic<std::uint64_t> csum_completed{0};     // plain packets whose checksum we finished
  std::atomic<std::uint64_t> bad_vnet_hdr{0};       // frames dropped: header and packet disagree
  std::atomic<std::uint64_t> coalesced_writes{0};   // TUN writes of a TCP or UDP super-segment
  std::atomic<std::uint64_t> coalesced_segments{0};  // segments in them
  std::atomic<std::uint64_t> bad_csum_passed{0};    // segments not coalesced: bad checksum
  std::atomic<std::uint64_t> fallbacks{0};          // super-segments the kernel refused, resent
};

// RFC 1071 Internet checksum: the ones' complement sum of `data` as big-endian 16-bit words
// (a last odd byte padded with zero), added to `sum`. Not folded; ChecksumFold() folds.
std::uint64_t ChecksumAdd(std::span<const std::uint8_t> data, std::uint64_t sum = 0);
std::uint16_t ChecksumFold(std::uint64_t sum);
// The TCP/UDP pseudo-header sum of `packet` (IPv4 RFC 793 3.1, IPv6 RFC 8200 8.1) for
// `l4_length` bytes of protocol `protocol`. `packet` starts with a valid IP header.
std::uint64_t PseudoHeaderSum(std::span<const std::uint8_t> packet, std::uint8_t protocol,
                              std::size_t l4_length);

// Cuts what one TUN read returned into packets, one per Next() call.
class GsoSplitter {
 public:
  explicit GsoSplitter(TunOffloadCounters& counters) : counters_(counters) {}

  // `frame`: a virtio-net header and the packet after it. `max_segment`: the largest packet
  // the caller takes from Next(). A plain packet's partial checksum is completed in place.
  // false: the frame is dropped (counted in bad_vnet_hdr) and remaining() is 0.
  bool Start(std::span<std::uint8_t> frame, std::size_t max_segment);
  bool Start(const VirtioNetHdr& hdr, std::span<std::uint8_t> packet, std::size_t max_segment);
  std::size_t remaining() const { return count_ - next_; }
  // Writes the next packet into `out` (at least max_segment bytes) and returns its length.
  // Needs remaining() > 0. The frame must stay unchanged until the last Next().
  std::size_t Next(std::span<std::uint8_t> out);

 private:
  TunOffloadCounters& counters_;
  std::span<const std::uint8_t> packet_;
  std::size_t count_ = 0, next_ = 0;
  bool gso_ = false;
  bool v6_ = false;
  bool tcp_ = false;
  std::size_t l4_ = 0;       // transport header offset
  std::size_t headers_ = 0;  // IP + transport headers
  std::size_t gso_size_ = 0;
};

// Where GroCoalescer's packets go (the TUN device, or a test's recorder).
class TunWriter {
 public:
  virtual ~TunWriter() = default;
  // One frame: `hdr` describes `packet`. false: errno says why (EINVAL: the kernel refused
  // the header).
  virtual bool Write(const VirtioNetHdr& hdr, std::span<const std::uint8_t> packet) = 0;
};

// Merges consecutive in-order segments of a TCP flow, and consecutive datagrams of a UDP flow
// when the TUN took USO; call Add() for every opened packet in the order they arrived and
// Flush() at the end of each batch (before the thread waits).
// Bound: kMaxFlows flows pending at once, each at most kMaxSegments segments and kMaxBytes;
// a new flow past kMaxFlows writes the oldest pending one first (nothing is dropped). Order
// within a flow is kept; packets of different flows may pass each other.
class GroCoalescer {
 public:
  static constexpr std::size_t kMaxFlows = 8;
  static constexpr std::size_t kMaxSegments = 64;
  // IPv4's Total Length is 16 bits: 65535 bytes with the headers (IPv6's Payload Length
  // would allow 40 more; one bound serves both).
  static constexpr std::size_t kMaxBytes = 65535;

  // `udp4` / `udp6`: the device took TUN_F_USO4 / TUN_F_USO6 (without them UDP goes as it came).
  explicit GroCoalescer(TunOffloadCounters& counters, bool udp4 = false, bool udp6 = false);
  // `packet` (an IPv4 or IPv6 packet) is copied or written before Add() returns.
  void Add(std::span<const std::uint8_t> packet, TunWriter& out);
  // Writes every pending super-segment.
  void Flush(TunWriter& out);
  std::size_t pending_flows() const;

 private:
  struct Segment;  // one parsed TCP segment (tun_offload.cc)
  struct Flow {
    bool used = false;
    std::uint64_t age = 0;          // order of creation, for eviction and Flush
    std::vector<std::uint8_t> buf;  // the super-segment: the head's headers, then payloads
    std::size_t length = 0;
    std::size_t segments = 0;
    std::size_t gso_size = 0;       // the head's payload length
    std::size_t l4 = 0, headers = 0;
    bool v6 = false;
    bool udp = false;
    bool head_checked = false;      // the head's checksum was verified (at the first merge)
    bool closed = false;            // ends with PSH or a short segment: nothing may follow
    std::uint32_t next_seq = 0;
  };

  Flow* Find(const Segment& s);
  bool CanAppend(const Flow& f, const Segment& s) const;
  void Start(Flow& f, const Segment& s);
  void Append(Flow& f, const Segment& s);
  void WriteFlow(Flow& f, TunWriter& out);
  void WritePlain(std::span<const std::uint8_t> packet, TunWriter& out);

  TunOffloadCounters& counters_;
  bool udp4_, udp6_;
  std::vector<Flow> flows_;
  std::uint64_t clock_ = 0;
};

}  // namespace spigot::io
