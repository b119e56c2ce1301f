#include "spigot/io/tun_offload.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <cerrno>
#include <cstring>

namespace spigot::io {
namespace {

constexpr std::uint8_t kProtoTcp = 6;
constexpr std::uint8_t kProtoUdp = 17;
constexpr std::size_t kIpv4MinHeader = 20;  // RFC 791 3.1, IHL 5
constexpr std::size_t kIpv6Header = 40;     // RFC 8200 3
constexpr std::size_t kTcpMinHeader = 20;   // RFC 9293 3.1, Data Offset 5
constexpr std::size_t kUdpHeader = 8;       // RFC 768
// Offsets of the checksum field in the transport header (virtio csum_offset).
constexpr std::size_t kTcpCsumOffset = 16;
constexpr std::size_t kUdpCsumOffset = 6;
// TCP flags (RFC 9293 3.1, RFC 3168 6.1): the byte at offset 13.
constexpr std::uint8_t kTcpFin = 0x01, kTcpPsh = 0x08, kTcpAck = 0x10, kTcpCwr = 0x80;
// IPv4 Flags and Fragment Offset (bytes 6-7): DF, MF, offset.
constexpr std::uint16_t kIpv4Df = 0x4000;
constexpr std::uint16_t kIpv4FragMask = 0x3fff;  // MF and the offset: not a fragment when 0

std::uint16_t Get16(const std::uint8_t* p) { return static_cast<std::uint16_t>((p[0] << 8) | p[1]); }
std::uint32_t Get32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}
void Put16(std::uint8_t* p, std::uint32_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}
void Put32(std::uint8_t* p, std::uint32_t v) {
  Put16(p, v >> 16);
  Put16(p + 2, v);
}

// Fills in the IPv4 header checksum of the header `p[0, ihl)`.
void SetIpv4HeaderChecksum(std::uint8_t* p, std::size_t ihl) {
  Put16(p + 10, 0);
  Put16(p + 10, static_cast<std::uint16_t>(~ChecksumFold(ChecksumAdd({p, ihl}))));
}

// The transport checksum of `packet` (headers from l4 on) verifies.
bool TransportChecksumOk(std::span<const std::uint8_t> packet, std::size_t l4, std::uint8_t proto) {
  const std::uint64_t sum =
      PseudoHeaderSum(packet, proto, packet.size() - l4) + ChecksumAdd(packet.subspan(l4));
  return ChecksumFold(sum) == 0xffff;
}

}  // namespace

VirtioNetHdr VirtioNetHdr::Parse(std::span<const std::uint8_t> b) {
  assert(b.size() >= kSize);
  VirtioNetHdr h;
  h.flags = b[0];
  h.gso_type = b[1];
  std::memcpy(&h.hdr_len, &b[2], 2);  // host byte order (legacy virtio on a TUN device)
  std::memcpy(&h.gso_size, &b[4], 2);
  std::memcpy(&h.csum_start, &b[6], 2);
  std::memcpy(&h.csum_offset, &b[8], 2);
  return h;
}

void VirtioNetHdr::Serialize(std::span<std::uint8_t> b) const {
  assert(b.size() >= kSize);
  b[0] = flags;
  b[1] = gso_type;
  std::memcpy(&b[2], &hdr_len, 2);
  std::memcpy(&b[4], &gso_size, 2);
  std::memcpy(&b[6], &csum_start, 2);
  std::memcpy(&b[8], &csum_offset, 2);
}

// ---------------------------------------------------------------- checksums

std::uint64_t ChecksumAdd(std::span<const std::uint8_t> data, std::uint64_t sum) {
  // Native-order words summed with end-around carry: the ones' complement sum is independent
  // of byte order up to a swap of its two bytes (RFC 1071 2.B), applied once at the end.
  const std::uint8_t* p = data.data();
  std::size_t n = data.size();
  std::uint64_t acc = 0;
  const auto add = [&acc](std::uint64_t w) {
    acc += w;
    acc += acc < w;
  };
  for (; n >= 32; p += 32, n -= 32) {
    std::uint64_t w[4];
    std::memcpy(w, p, 32);
    add(w[0]);
    add(w[1]);
    add(w[2]);
    add(w[3]);
  }
  for (; n >= 8; p += 8, n -= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    add(w);
  }
  if (n >= 4) {
    std::uint32_t w;
    std::memcpy(&w, p, 4);
    add(w);
    p += 4;
    n -= 4;
  }
  if (n >= 2) {
    std::uint16_t w;
    std::memcpy(&w, p, 2);
    add(w);
    p += 2;
    n -= 2;
  }
  if (n == 1) {
    // The odd byte is the high half of a big-endian word padded with zero.
    std::uint16_t w = 0;
    std::memcpy(&w, p, 1);
    add(w);
  }
  std::uint16_t folded = ChecksumFold((acc & 0xffffffffu) + (acc >> 32));
  if constexpr (std::endian::native == std::endian::little) {
    folded = static_cast<std::uint16_t>((folded >> 8) | (folded << 8));
  }
  return sum + folded;
}

std::uint16_t ChecksumFold(std::uint64_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(sum);
}

std::uint64_t PseudoHeaderSum(std::span<const std::uint8_t> packet, std::uint8_t protocol,
                              std::size_t l4_length) {
  if ((packet[0] >> 4) == 6) {
    // Source, destination (bytes 8-40), upper-layer length (32 bits), zero, next header.
    return ChecksumAdd(packet.subspan(8, 32)) + (l4_length >> 16) + (l4_length & 0xffff) + protocol;
  }
  // Source, destination (bytes 12-20), zero, protocol, TCP/UDP length (16 bits).
  return ChecksumAdd(packet.subspan(12, 8)) + protocol + l4_length;
}

// ---------------------------------------------------------------- splitting

bool GsoSplitter::Start(std::span<std::uint8_t> frame, std::size_t max_segment) {
  count_ = next_ = 0;
  if (frame.size() < VirtioNetHdr::kSize) {
    counters_.bad_vnet_hdr.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  return Start(VirtioNetHdr::Parse(frame), frame.subspan(VirtioNetHdr::kSize), max_segment);
}

bool GsoSplitter::Start(const VirtioNetHdr& hdr, std::span<std::uint8_t> packet,
                        std::size_t max_segment) {
  count_ = next_ = 0;
  packet_ = packet;
  const auto bad = [this] {
    counters_.bad_vnet_hdr.fetch_add(1, std::memory_order_relaxed);
    return false;
  };
  const std::size_t size = packet.size();
  if (size == 0) return bad();
  const std::uint8_t type = hdr.gso_type & static_cast<std::uint8_t>(~VirtioNetHdr::kGsoEcn);

  if (hdr.gso_type == VirtioNetHdr::kGsoNone) {
    gso_ = false;
    if (size > max_segment) return bad();
    if ((hdr.flags & VirtioNetHdr::kNeedsCsum) != 0) {
      // The field holds the pseudo-header sum; the sum from csum_start to the end, complemented,
      // finishes it (skb_checksum_help). A result of 0 is sent as 0xffff (the same value in
      // ones' complement; UDP reserves 0 for "no checksum").
      const std::size_t start = hdr.csum_start;
      const std::size_t field = start + hdr.csum_offset;
      if (field + 2 > size) return bad();
      std::uint16_t csum = static_cast<std::uint16_t>(~ChecksumFold(ChecksumAdd(packet.subspan(start))));
      if (csum == 0) csum = 0xffff;
      Put16(&packet[field], csum);
      counters_.csum_completed.fetch_add(1, std::memory_order_relaxed);
    }
    count_ = 1;
    return true;
  }

  gso_ = true;
  const int version = packet[0] >> 4;
  if (type == VirtioNetHdr::kGsoTcpV4) {
    if (version != 4) return bad();
    tcp_ = true;
  } else if (type == VirtioNetHdr::kGsoTcpV6) {
    if (version != 6) return bad();
    tcp_ = true;
  } else if (type == VirtioNetHdr::kGsoUdpL4) {
    if (version != 4 && version != 6) return bad();
    tcp_ = false;
  } else {
    return bad();  // UFO was never granted; ECN alone or anything else is not a gso_type
  }
  v6_ = version == 6;
  const std::uint8_t proto = tcp_ ? kProtoTcp : kProtoUdp;
  if (v6_) {
    // Extension headers are not expected from the stack's TSO/USO: the transport header
    // must follow the fixed header.
    if (size < kIpv6Header || packet[6] != proto) return bad();
    l4_ = kIpv6Header;
  } else {
    if (size < kIpv4MinHeader) return bad();
    l4_ = (packet[0] & 0x0f) * std::size_t{4};
    if (l4_ < kIpv4MinHeader || l4_ > size || packet[9] != proto) return bad();
    if ((Get16(&packet[6]) & kIpv4FragMask) != 0) return bad();
  }
  const std::size_t csum_offset = tcp_ ? kTcpCsumOffset : kUdpCsumOffset;
  if ((hdr.flags & VirtioNetHdr::kNeedsCsum) != 0 &&
      (hdr.csum_start != l4_ || hdr.csum_offset != csum_offset))
    return bad();
  if (tcp_) {
    if (l4_ + kTcpMinHeader > size) return bad();
    const std::size_t doff = (packet[l4_ + 12] >> 4) * std::size_t{4};
    if (doff < kTcpMinHeader) return bad();
    headers_ = l4_ + doff;
  } else {
    headers_ = l4_ + kUdpHeader;
  }
  // hdr_len is a hint (and often wrong from some stacks): the headers are what they say.
  if (headers_ >= size) return bad();  // no payload: not a super-segment
  gso_size_ = hdr.gso_size;
  if (gso_size_ == 0) return bad();
  const std::size_t payload = size - headers_;
  if (headers_ + std::min(gso_size_, payload) > max_segment) return bad();
  count_ = (payload + gso_size_ - 1) / gso_size_;
  counters_.super_segments.fetch_add(1, std::memory_order_relaxed);
  counters_.segments_split.fetch_add(count_, std::memory_order_relaxed);
  return true;
}

std::size_t GsoSplitter::Next(std::span<std::uint8_t> out) {
  assert(next_ < count_);
  const std::size_t i = next_++;
  if (!gso_) {
    std::memcpy(out.data(), packet_.data(), packet_.size());
    return packet_.size();
  }
  const std::size_t from = headers_ + i * gso_size_;
  const std::size_t n = std::min(gso_size_, packet_.size() - from);
  const std::size_t len = headers_ + n;
  std::uint8_t* p = out.data();
  std::memcpy(p, packet_.data(), headers_);
  std::memcpy(p + headers_, packet_.data() + from, n);
  if (v6_) {
    Put16(p + 4, static_cast<std::uint32_t>(len - kIpv6Header));
  } else {
    // Each segment its own datagram: Total Length, and the next Identification
    // (inet_gso_segment without SKB_GSO_TCP_FIXEDID).
    Put16(p + 2, static_cast<std::uint32_t>(len));
    Put16(p + 4, Get16(packet_.data() + 4) + static_cast<std::uint32_t>(i));
    SetIpv4HeaderChecksum(p, l4_);
  }
  std::uint8_t* l4 = p + l4_;
  std::size_t csum_at;
  if (tcp_) {
    Put32(l4 + 4, Get32(packet_.data() + l4_ + 4) + static_cast<std::uint32_t>(i * gso_size_));
    // tcp_gso_segment: CWR only on the first segment, FIN and PSH only on the last.
    std::uint8_t flags = l4[13];
    if (i > 0) flags &= static_cast<std::uint8_t>(~kTcpCwr);
    if (i + 1 < count_) flags &= static_cast<std::uint8_t>(~(kTcpFin | kTcpPsh));
    l4[13] = flags;
    csum_at = kTcpCsumOffset;
  } else {
    Put16(l4 + 4, static_cast<std::uint32_t>(len - l4_));  // UDP Length
    csum_at = kUdpCsumOffset;
  }
  Put16(l4 + csum_at, 0);
  const std::span<const std::uint8_t> seg{p, len};
  const std::uint64_t sum = PseudoHeaderSum(seg, tcp_ ? kProtoTcp : kProtoUdp, len - l4_) +
                            ChecksumAdd(seg.subspan(l4_));
  std::uint16_t csum = static_cast<std::uint16_t>(~ChecksumFold(sum));
  if (csum == 0 && !tcp_) csum = 0xffff;  // RFC 768: 0 means "none"
  Put16(l4 + csum_at, csum);
  return len;
}

// ---------------------------------------------------------------- coalescing

struct GroCoalescer::Segment {
  std::span<const std::uint8_t> packet;
  bool v6 = false;
  bool udp = false;
  std::size_t l4 = 0, headers = 0, payload = 0;
  std::uint32_t seq = 0, ack = 0;
  std::uint8_t flags = 0;
  // May be part of a super-segment: a complete unfragmented TCP segment with data and only ACK
  // (and PSH, which ends the super-segment) set; or a UDP datagram with data and a checksum.
  bool mergeable = false;
};

namespace {

// A TCP segment or UDP datagram with headers we can read (protocol in `proto`), or false (another
// protocol, a fragment, truncated). `lengths_ok`: the IP (and UDP) lengths say what the packet is.
bool ParseTransport(std::span<const std::uint8_t> p, std::uint8_t& proto, bool& v6, std::size_t& l4,
                    bool& lengths_ok) {
  if (p.empty()) return false;
  const int version = p[0] >> 4;
  if (version == 4) {
    if (p.size() < kIpv4MinHeader) return false;
    proto = p[9];
    l4 = (p[0] & 0x0f) * std::size_t{4};
    if (l4 < kIpv4MinHeader || (Get16(&p[6]) & kIpv4FragMask) != 0) return false;
    lengths_ok = Get16(&p[2]) == p.size();
    v6 = false;
  } else if (version == 6) {
    if (p.size() < kIpv6Header) return false;
    proto = p[6];
    l4 = kIpv6Header;
    lengths_ok = kIpv6Header + Get16(&p[4]) == p.size();
    v6 = true;
  } else {
    return false;
  }
  if (proto == kProtoUdp) {
    if (l4 + kUdpHeader > p.size()) return false;
    lengths_ok = lengths_ok && Get16(&p[l4 + 4]) == p.size() - l4;
    return true;
  }
  if (proto != kProtoTcp || l4 + kTcpMinHeader > p.size()) return false;
  const std::size_t doff = (p[l4 + 12] >> 4) * std::size_t{4};
  return doff >= kTcpMinHeader && l4 + doff <= p.size();
}

}  // namespace

GroCoalescer::GroCoalescer(TunOffloadCounters& counters, bool udp4, bool udp6)
    : counters_(counters), udp4_(udp4), udp6_(udp6), flows_(kMaxFlows) {
  for (Flow& f : flows_) f.buf.resize(kMaxBytes);
}

std::size_t GroCoalescer::pending_flows() const {
  return static_cast<std::size_t>(
      std::count_if(flows_.begin(), flows_.end(), [](const Flow& f) { return f.used; }));
}

GroCoalescer::Flow* GroCoalescer::Find(const Segment& s) {
  // The flow: addresses and ports (a different ACK is the same flow, written in order).
  const std::size_t addr_at = s.v6 ? 8 : 12, addr_len = s.v6 ? 32 : 8;
  for (Flow& f : flows_) {
    if (!f.used || f.v6 != s.v6 || f.udp != s.udp) continue;
    if (std::memcmp(f.buf.data() + addr_at, s.packet.data() + addr_at, addr_len) != 0) continue;
    if (std::memcmp(f.buf.data() + f.l4, s.packet.data() + s.l4, 4) != 0) continue;
    return &f;
  }
  return nullptr;
}

bool GroCoalescer::CanAppend(const Flow& f, const Segment& s) const {
  const std::uint8_t* h = f.buf.data();
  const std::uint8_t* p = s.packet.data();
  if (!s.mergeable || f.closed || f.segments >= kMaxSegments) return false;
  if (s.payload > f.gso_size || f.length + s.payload > kMaxBytes) return false;
  if (!s.udp && (s.seq != f.next_seq || s.ack != Get32(h + f.l4 + 8))) return false;
  if (s.l4 != f.l4 || s.headers != f.headers) return false;
  if (s.v6) {
    // Version, traffic class, flow label; hop limit.
    if (std::memcmp(h, p, 4) != 0 || h[7] != p[7]) return false;
  } else {
    // Version/IHL, TOS (with ECN), DF, TTL, options.
    if (h[0] != p[0] || h[1] != p[1] || h[6] != p[6] || h[8] != p[8]) return false;
    if (std::memcmp(h + kIpv4MinHeader, p + kIpv4MinHeader, f.l4 - kIpv4MinHeader) != 0) return false;
    // Without DF the IDs must run on, as the kernel's resegmentation will number them.
    if ((Get16(p + 6) & kIpv4Df) == 0 &&
        Get16(p + 4) != static_cast<std::uint16_t>(Get16(h + 4) + f.segments))
      return false;
  }
  // TCP options equal (timestamps included: the kernel's GRO asks the same).
  return s.udp || std::memcmp(h + f.l4 + kTcpMinHeader, p + s.l4 + kTcpMinHeader,
                     f.headers - f.l4 - kTcpMinHeader) == 0;
}

void GroCoalescer::Start(Flow& f, const Segment& s) {
  std::memcpy(f.buf.data(), s.packet.data(), s.packet.size());
  f.used = true;
  f.age = clock_++;
  f.length = s.packet.size();
  f.segments = 1;
  f.gso_size = s.payload;
  f.l4 = s.l4;
  f.headers = s.headers;
  f.v6 = s.v6;
  f.udp = s.udp;
  f.head_checked = false;
  f.closed = false;
  f.next_seq = s.seq + static_cast<std::uint32_t>(s.payload);
}

void GroCoalescer::Append(Flow& f, const Segment& s) {
  std::memcpy(f.buf.data() + f.length, s.packet.data() + s.headers, s.payload);
  f.length += s.payload;
  ++f.segments;
  if (s.payload < f.gso_size) f.closed = true;  // a short one is the last
  if (f.udp) return;
  f.next_seq += static_cast<std::uint32_t>(s.payload);
  std::uint8_t* tcp = f.buf.data() + f.l4;
  std::memcpy(tcp + 14, s.packet.data() + s.l4 + 14, 2);  // the latest window
  if ((s.flags & kTcpPsh) != 0) {
    tcp[13] |= kTcpPsh;
    f.closed = true;
  }
}

void GroCoalescer::WritePlain(std::span<const std::uint8_t> packet, TunWriter& out) {
  out.Write(VirtioNetHdr{}, packet);
}

void GroCoalescer::WriteFlow(Flow& f, TunWriter& out) {
  f.used = false;
  const std::span<std::uint8_t> pkt{f.buf.data(), f.length};
  if (f.segments == 1) {
    WritePlain(pkt, out);  // untouched
    return;
  }
  std::uint8_t* p = pkt.data();
  if (f.v6) {
    Put16(p + 4, static_cast<std::uint32_t>(f.length - kIpv6Header));
  } else {
    Put16(p + 2, static_cast<std::uint32_t>(f.length));
    SetIpv4HeaderChecksum(p, f.l4);
  }
  // A UDP super-datagram's Length covers all of it: the kernel's resegmentation
  // (__udp_gso_segment) takes it as the length in the pseudo-header sum below.
  if (f.udp) Put16(p + f.l4 + 4, static_cast<std::uint32_t>(f.length - f.l4));
  // CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum; the kernel (or whoever
  // resegments) sums from csum_start and complements.
  const std::size_t csum_offset = f.udp ? kUdpCsumOffset : kTcpCsumOffset;
  Put16(p + f.l4 + csum_offset,
        ChecksumFold(PseudoHeaderSum(pkt, f.udp ? kProtoUdp : kProtoTcp, f.length - f.l4)));
  VirtioNetHdr h;
  h.flags = VirtioNetHdr::kNeedsCsum;
  h.gso_type = f.udp ? VirtioNetHdr::kGsoUdpL4 : f.v6 ? VirtioNetHdr::kGsoTcpV6 : VirtioNetHdr::kGsoTcpV4;
  h.hdr_len = static_cast<std::uint16_t>(f.headers);
  h.gso_size = static_cast<std::uint16_t>(f.gso_size);
  h.csum_start = static_cast<std::uint16_t>(f.l4);
  h.csum_offset = static_cast<std::uint16_t>(csum_offset);
  if (out.Write(h, pkt)) {
    counters_.coalesced_writes.fetch_add(1, std::memory_order_relaxed);
    counters_.coalesced_segments.fetch_add(f.segments, std::memory_order_relaxed);
    return;
  }
  if (errno != EINVAL) return;  // the writer counted it; a plain write would fail alike
  // The kernel refused the super-segment: the segments again, one write each.
  counters_.fallbacks.fetch_add(1, std::memory_order_relaxed);
  TunOffloadCounters scratch_counters;
  GsoSplitter split(scratch_counters);
  std::vector<std::uint8_t> seg(f.headers + f.gso_size);
  if (!split.Start(h, pkt, seg.size())) return;  // cannot happen: we built it
  while (split.remaining() > 0) {
    const std::size_t n = split.Next(seg);
    WritePlain({seg.data(), n}, out);
  }
}

void GroCoalescer::Add(std::span<const std::uint8_t> packet, TunWriter& out) {
  Segment s;
  s.packet = packet;
  bool lengths_ok = false;
  std::uint8_t proto = 0;
  if (!ParseTransport(packet, proto, s.v6, s.l4, lengths_ok) ||
      (proto == kProtoUdp && !(s.v6 ? udp6_ : udp4_))) {
    WritePlain(packet, out);
    return;
  }
  const std::uint8_t* l4 = packet.data() + s.l4;
  s.udp = proto == kProtoUdp;
  if (s.udp) {
    s.headers = s.l4 + kUdpHeader;
    s.payload = packet.size() - s.headers;
    // A datagram sent without a checksum (IPv4's 0) stays as it came.
    s.mergeable = lengths_ok && s.payload > 0 && Get16(l4 + kUdpCsumOffset) != 0;
  } else {
    s.headers = s.l4 + (l4[12] >> 4) * std::size_t{4};
    s.payload = packet.size() - s.headers;
    s.seq = Get32(l4 + 4);
    s.ack = Get32(l4 + 8);
    s.flags = l4[13];
    s.mergeable = lengths_ok && s.payload > 0 &&
                  (s.flags & static_cast<std::uint8_t>(~kTcpPsh)) == kTcpAck;
  }
  const std::uint8_t proto_for_csum = s.udp ? kProtoUdp : kProtoTcp;

  if (Flow* f = Find(s)) {
    if (CanAppend(*f, s)) {
      if (!f->head_checked) {
        if (!TransportChecksumOk({f->buf.data(), f->length}, f->l4, proto_for_csum)) {
          // A head that does not verify goes alone, as it came; this segment may start anew.
          counters_.bad_csum_passed.fetch_add(1, std::memory_order_relaxed);
          WriteFlow(*f, out);
          f = nullptr;
        } else {
          f->head_checked = true;
        }
      }
      if (f != nullptr) {
        if (!TransportChecksumOk(packet, s.l4, proto_for_csum)) {
          counters_.bad_csum_passed.fetch_add(1, std::memory_order_relaxed);
          WriteFlow(*f, out);
          WritePlain(packet, out);
          return;
        }
        Append(*f, s);
        if (f->closed || f->segments == kMaxSegments) WriteFlow(*f, out);
        return;
      }
    } else {
      WriteFlow(*f, out);  // the flow's earlier segments first
    }
  }
  // A new head. One with PSH can take nothing after it: written at once.
  if (!s.mergeable || (!s.udp && (s.flags & kTcpPsh) != 0)) {
    WritePlain(packet, out);
    return;
  }
  Flow* slot = nullptr;
  for (Flow& f : flows_) {
    if (!f.used) {
      slot = &f;
      break;
    }
  }
  if (slot == nullptr) {
    slot = &*std::min_element(flows_.begin(), flows_.end(),
                              [](const Flow& a, const Flow& b) { return a.age < b.age; });
    WriteFlow(*slot, out);
  }
  Start(*slot, s);
}

void GroCoalescer::Flush(TunWriter& out) {
  for (;;) {
    Flow* oldest = nullptr;
    for (Flow& f : flows_) {
      if (f.used && (oldest == nullptr || f.age < oldest->age)) oldest = &f;
    }
    if (oldest == nullptr) return;
    WriteFlow(*oldest, out);
  }
}

}  // namespace spigot::io
