// GsoSplitter and GroCoalescer against packets built here, with every checksum checked by a
// plain RFC 1071 byte loop written for the tests (not the library's ChecksumAdd).
#include "spigot/io/tun_offload.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace spigot::io::tun_offload_test {

using Bytes = std::vector<std::uint8_t>;

constexpr std::uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10,
                       kCwr = 0x80;
constexpr std::size_t kMaxSegment = 2048;

std::uint16_t Be16(const std::uint8_t* p) { return static_cast<std::uint16_t>(p[0] << 8 | p[1]); }
std::uint32_t Be32(const std::uint8_t* p) {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}
void SetBe16(std::uint8_t* p, std::uint32_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}

// RFC 1071, the slow way: big-endian 16-bit words, a last odd byte padded with zero.
std::uint32_t NaiveSum(const std::uint8_t* p, std::size_t n, std::uint32_t sum = 0) {
  for (std::size_t i = 0; i < n; i += 2) {
    sum += static_cast<std::uint32_t>(p[i]) << 8;
    if (i + 1 < n) sum += p[i + 1];
  }
  return sum;
}
std::uint16_t NaiveFold(std::uint32_t s) {
  while (s > 0xffff) s = (s & 0xffff) + (s >> 16);
  return static_cast<std::uint16_t>(s);
}
std::uint32_t NaivePseudo(const Bytes& p, std::size_t l4, std::uint8_t proto) {
  const std::size_t len = p.size() - l4;
  if ((p[0] >> 4) == 6) return NaiveSum(&p[8], 32) + (len >> 16) + (len & 0xffff) + proto;
  return NaiveSum(&p[12], 8) + proto + static_cast<std::uint32_t>(len);
}
std::size_t L4Offset(const Bytes& p) { return (p[0] >> 4) == 6 ? 40 : (p[0] & 0x0f) * 4u; }
bool NaiveL4Ok(const Bytes& p) {
  const std::size_t l4 = L4Offset(p);
  const std::uint8_t proto = (p[0] >> 4) == 6 ? p[6] : p[9];
  return NaiveFold(NaivePseudo(p, l4, proto) + NaiveSum(&p[l4], p.size() - l4)) == 0xffff;
}
bool NaiveIpv4HeaderOk(const Bytes& p) { return NaiveFold(NaiveSum(p.data(), L4Offset(p))) == 0xffff; }

struct TcpSpec {
  bool v6 = false;
  std::uint32_t seq = 1000, ack = 77777;
  std::uint8_t flags = kAck;
  Bytes options;                  // a multiple of 4
  Bytes ip_options;               // IPv4 only, a multiple of 4
  std::uint8_t ttl = 64, tos = 0;
  std::uint16_t id = 0x1234;
  bool df = true;
  std::uint16_t sport = 40000, dport = 5201, window = 501;
  std::uint8_t src_last = 1;      // varies the source address
  Bytes payload;
};

Bytes Payload(std::size_t n, std::uint8_t seed = 0) {
  Bytes b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::uint8_t>(i * 7 + seed + (i >> 8));
  return b;
}

// A valid TCP segment with correct checksums.
Bytes BuildTcp(const TcpSpec& s) {
  const std::size_t ip = s.v6 ? 40 : 20 + s.ip_options.size();
  const std::size_t tcp = 20 + s.options.size();
  Bytes p(ip + tcp + s.payload.size());
  if (s.v6) {
    p[0] = 0x60 | (s.tos >> 4);
    p[1] = static_cast<std::uint8_t>(s.tos << 4);
    SetBe16(&p[4], static_cast<std::uint32_t>(p.size() - 40));
    p[6] = 6;
    p[7] = s.ttl;
    const std::uint8_t src[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0xa, 0, 0, 0, 0, 0, 0, 0, 0, 0, s.src_last};
    const std::uint8_t dst[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0xb, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    std::memcpy(&p[8], src, 16);
    std::memcpy(&p[24], dst, 16);
  } else {
    p[0] = static_cast<std::uint8_t>(0x40 | (ip / 4));
    p[1] = s.tos;
    SetBe16(&p[2], static_cast<std::uint32_t>(p.size()));
    SetBe16(&p[4], s.id);
    SetBe16(&p[6], s.df ? 0x4000 : 0);
    p[8] = s.ttl;
    p[9] = 6;
    const std::uint8_t addrs[8] = {198, 51, 100, s.src_last, 203, 0, 113, 1};
    std::memcpy(&p[12], addrs, 8);
    std::copy(s.ip_options.begin(), s.ip_options.end(), p.begin() + 20);
    SetBe16(&p[10], static_cast<std::uint16_t>(~NaiveFold(NaiveSum(p.data(), ip))));
  }
  std::uint8_t* t = &p[ip];
  SetBe16(t, s.sport);
  SetBe16(t + 2, s.dport);
  SetBe16(t + 4, s.seq >> 16);
  SetBe16(t + 6, s.seq);
  SetBe16(t + 8, s.ack >> 16);
  SetBe16(t + 10, s.ack);
  t[12] = static_cast<std::uint8_t>((tcp / 4) << 4);
  t[13] = s.flags;
  SetBe16(t + 14, s.window);
  std::copy(s.options.begin(), s.options.end(), t + 20);
  std::copy(s.payload.begin(), s.payload.end(), t + tcp);
  SetBe16(t + 16, static_cast<std::uint16_t>(~NaiveFold(NaivePseudo(p, ip, 6) + NaiveSum(t, p.size() - ip))));
  return p;
}

Bytes BuildUdp(bool v6, const Bytes& payload, std::uint16_t id = 0x0500, bool df = false,
               std::uint16_t sport = 5353) {
  const std::size_t ip = v6 ? 40 : 20;
  Bytes p(ip + 8 + payload.size());
  if (v6) {
    p[0] = 0x60;
    SetBe16(&p[4], static_cast<std::uint32_t>(p.size() - 40));
    p[6] = 17;
    p[7] = 64;
    p[8] = 0x20;
    p[9] = 0x01;
    p[23] = 1;
    p[24] = 0x20;
    p[25] = 0x01;
    p[39] = 2;
  } else {
    p[0] = 0x45;
    SetBe16(&p[2], static_cast<std::uint32_t>(p.size()));
    SetBe16(&p[4], id);
    SetBe16(&p[6], df ? 0x4000 : 0);
    p[8] = 64;
    p[9] = 17;
    const std::uint8_t addrs[8] = {198, 51, 100, 1, 203, 0, 113, 1};
    std::memcpy(&p[12], addrs, 8);
    SetBe16(&p[10], static_cast<std::uint16_t>(~NaiveFold(NaiveSum(p.data(), 20))));
  }
  SetBe16(&p[ip], sport);
  SetBe16(&p[ip + 2], 9999);
  SetBe16(&p[ip + 4], static_cast<std::uint32_t>(8 + payload.size()));
  std::copy(payload.begin(), payload.end(), p.begin() + ip + 8);
  std::uint16_t c = static_cast<std::uint16_t>(~NaiveFold(NaivePseudo(p, ip, 17) + NaiveSum(&p[ip], p.size() - ip)));
  SetBe16(&p[ip + 6], c == 0 ? 0xffff : c);
  return p;
}

// What the kernel hands a TUN reader: the header, then the packet with a partial checksum
// (the folded pseudo-header sum in the field).
Bytes Frame(const VirtioNetHdr& h, Bytes packet) {
  if (h.flags & VirtioNetHdr::kNeedsCsum) {
    const std::size_t l4 = h.csum_start;
    const std::uint8_t proto = (packet[0] >> 4) == 6 ? packet[6] : packet[9];
    SetBe16(&packet[l4 + h.csum_offset], NaiveFold(NaivePseudo(packet, l4, proto)));
  }
  Bytes f(VirtioNetHdr::kSize);
  h.Serialize(f);
  f.insert(f.end(), packet.begin(), packet.end());
  return f;
}

VirtioNetHdr GsoHdr(std::uint8_t type, std::size_t l4, std::size_t headers, std::size_t gso_size, bool tcp = true) {
  VirtioNetHdr h;
  h.flags = VirtioNetHdr::kNeedsCsum;
  h.gso_type = type;
  h.hdr_len = static_cast<std::uint16_t>(headers);
  h.gso_size = static_cast<std::uint16_t>(gso_size);
  h.csum_start = static_cast<std::uint16_t>(l4);
  h.csum_offset = tcp ? 16 : 6;
  return h;
}

std::vector<Bytes> SplitAll(GsoSplitter& s) {
  std::vector<Bytes> out;
  Bytes buf(kMaxSegment);
  while (s.remaining() > 0) out.emplace_back(buf.begin(), buf.begin() + static_cast<long>(s.Next(buf)));
  return out;
}

// The segments a sender would have sent for this super-segment's payload, built independently.
std::vector<Bytes> ExpectedSegments(TcpSpec spec, std::size_t gso_size) {
  std::vector<Bytes> out;
  const Bytes all = spec.payload;
  const std::uint8_t flags = spec.flags;
  const std::uint32_t seq = spec.seq;
  const std::uint16_t id = spec.id;
  const std::size_t n = (all.size() + gso_size - 1) / gso_size;
  for (std::size_t i = 0; i < n; ++i) {
    spec.payload.assign(all.begin() + static_cast<long>(i * gso_size),
                        all.begin() + static_cast<long>(std::min(all.size(), (i + 1) * gso_size)));
    spec.seq = seq + static_cast<std::uint32_t>(i * gso_size);
    spec.id = static_cast<std::uint16_t>(id + i);
    spec.flags = flags;
    if (i > 0) spec.flags &= static_cast<std::uint8_t>(~kCwr);
    if (i + 1 < n) spec.flags &= static_cast<std::uint8_t>(~(kFin | kPsh));
    out.push_back(BuildTcp(spec));
  }
  return out;
}

// ---------------------------------------------------------------- checksum

TEST(TunOffloadChecksum, MatchesTheByteLoopAtEveryLengthAndAlignment) {
  std::mt19937 rng(7);
  Bytes data(300);
  for (auto& b : data) b = static_cast<std::uint8_t>(rng());
  for (std::size_t off = 0; off < 9; ++off) {
    for (std::size_t n = 0; n + off <= data.size(); ++n) {
      ASSERT_EQ(ChecksumFold(ChecksumAdd({data.data() + off, n})), NaiveFold(NaiveSum(data.data() + off, n)))
          << "offset " << off << " length " << n;
    }
  }
  // All ones: the sum saturates at 0xffff and must not wrap to 0.
  Bytes ones(64, 0xff);
  EXPECT_EQ(ChecksumFold(ChecksumAdd(ones)), 0xffff);
}

// ---------------------------------------------------------------- splitting

struct SplitCase {
  bool v6;
  Bytes options;
  std::size_t payload;
  std::size_t gso_size;
  std::uint8_t flags;
};

TEST(TunOffloadSplit, TcpSuperSegmentsBecomeTheSegmentsASenderWouldSend) {
  const Bytes timestamps = {1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2};
  const SplitCase cases[] = {
      {false, timestamps, 5000, 1348, kAck | kPsh},        // last short, PSH only on it
      {false, {}, 4 * 1360, 1360, kAck | kPsh | kFin},     // exact multiple, FIN last
      {false, timestamps, 1001 * 3 + 1, 1001, kAck | kCwr},  // odd sizes; CWR only first
      {false, {}, 700, 1360, kAck},                        // shorter than one segment
      {true, timestamps, 9999, 1328, kAck | kPsh},
      {true, {}, 65535 - 60, 1440, kAck},                  // the largest the kernel sends
  };
  for (const SplitCase& c : cases) {
    SCOPED_TRACE(testing::Message() << "v6 " << c.v6 << " payload " << c.payload << " gso " << c.gso_size);
    TcpSpec spec;
    spec.v6 = c.v6;
    spec.options = c.options;
    spec.flags = c.flags;
    spec.seq = 0xfffff000;  // wraps inside the super-segment
    spec.payload = Payload(c.payload);
    const Bytes super = BuildTcp(spec);
    const std::size_t l4 = c.v6 ? 40 : 20;
    TunOffloadCounters counters;
    GsoSplitter split(counters);
    Bytes frame = Frame(GsoHdr(c.v6 ? VirtioNetHdr::kGsoTcpV6 : VirtioNetHdr::kGsoTcpV4, l4,
                               l4 + 20 + c.options.size(), c.gso_size),
                        super);
    ASSERT_TRUE(split.Start(frame, kMaxSegment));
    const std::vector<Bytes> got = SplitAll(split);
    const std::vector<Bytes> want = ExpectedSegments(spec, c.gso_size);
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i], want[i]) << "segment " << i;
      EXPECT_TRUE(NaiveL4Ok(got[i])) << "segment " << i;
      if (!c.v6) {
        EXPECT_TRUE(NaiveIpv4HeaderOk(got[i])) << "segment " << i;
      }
    }
    EXPECT_EQ(counters.super_segments.load(), 1u);
    EXPECT_EQ(counters.segments_split.load(), want.size());
    EXPECT_EQ(counters.bad_vnet_hdr.load(), 0u);
  }
}

TEST(TunOffloadSplit, UdpSuperSegmentsGetTheirOwnLengthsAndChecksums) {
  for (const bool v6 : {false, true}) {
    SCOPED_TRACE(v6 ? "IPv6" : "IPv4");
    const std::size_t l4 = v6 ? 40 : 20;
    const Bytes payload = Payload(1200 * 3 + 77, 3);
    TunOffloadCounters counters;
    GsoSplitter split(counters);
    Bytes frame = Frame(GsoHdr(VirtioNetHdr::kGsoUdpL4, l4, l4 + 8, 1200, false), BuildUdp(v6, payload));
    ASSERT_TRUE(split.Start(frame, kMaxSegment));
    const std::vector<Bytes> got = SplitAll(split);
    ASSERT_EQ(got.size(), 4u);
    for (std::size_t i = 0; i < got.size(); ++i) {
      const Bytes piece(payload.begin() + static_cast<long>(i * 1200),
                        payload.begin() + static_cast<long>(std::min(payload.size(), (i + 1) * 1200)));
      Bytes want = BuildUdp(v6, piece);
      if (!v6) {  // the kernel numbers the datagrams on
        SetBe16(&want[4], 0x0500 + i);
        SetBe16(&want[10], 0);
        SetBe16(&want[10], static_cast<std::uint16_t>(~NaiveFold(NaiveSum(want.data(), 20))));
      }
      EXPECT_EQ(got[i], want) << "datagram " << i;
      EXPECT_TRUE(NaiveL4Ok(got[i]));
    }
  }
}

TEST(TunOffloadSplit, PlainPacketsPassAndPartialChecksumsAreCompleted) {
  TcpSpec spec;
  spec.payload = Payload(333);
  const Bytes tcp = BuildTcp(spec);
  TunOffloadCounters counters;
  GsoSplitter split(counters);
  // No flags: passed as it is, even with a wrong checksum (not ours to judge).
  Bytes bad = tcp;
  bad[30] ^= 1;
  Bytes frame = Frame(VirtioNetHdr{}, bad);
  ASSERT_TRUE(split.Start(frame, kMaxSegment));
  EXPECT_EQ(SplitAll(split), std::vector<Bytes>{bad});
  // NEEDS_CSUM, for TCP and UDP, IPv4 and IPv6.
  spec.v6 = true;
  for (const Bytes& packet : {tcp, BuildTcp(spec), BuildUdp(false, Payload(99)), BuildUdp(true, Payload(1))}) {
    const bool v6 = (packet[0] >> 4) == 6;
    const bool is_tcp = (v6 ? packet[6] : packet[9]) == 6;
    VirtioNetHdr h;
    h.flags = VirtioNetHdr::kNeedsCsum;
    h.csum_start = v6 ? 40 : 20;
    h.csum_offset = is_tcp ? 16 : 6;
    Bytes f = Frame(h, packet);
    ASSERT_TRUE(split.Start(f, kMaxSegment));
    const std::vector<Bytes> got = SplitAll(split);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0], packet);
  }
  EXPECT_EQ(counters.csum_completed.load(), 4u);
  EXPECT_EQ(counters.bad_vnet_hdr.load(), 0u);
}

TEST(TunOffloadSplit, HeadersThatContradictThePacketAreDroppedAndCounted) {
  TcpSpec spec;
  spec.payload = Payload(3000);
  const Bytes tcp4 = BuildTcp(spec);
  const VirtioNetHdr good = GsoHdr(VirtioNetHdr::kGsoTcpV4, 20, 40, 1360);
  struct Bad {
    const char* what;
    VirtioNetHdr hdr;
    Bytes packet;
  };
  std::vector<Bad> cases;
  const auto with = [&](const char* what, auto change_hdr, auto change_packet) {
    Bad b{what, good, tcp4};
    change_hdr(b.hdr);
    change_packet(b.packet);
    cases.push_back(b);
  };
  const auto none = [](auto&) {};
  with("UFO", [](VirtioNetHdr& h) { h.gso_type = VirtioNetHdr::kGsoUdp; }, none);
  with("unknown gso_type", [](VirtioNetHdr& h) { h.gso_type = 2; }, none);
  with("gso_type 0x7f", [](VirtioNetHdr& h) { h.gso_type = 0x7f; }, none);
  with("ECN without a type", [](VirtioNetHdr& h) { h.gso_type = VirtioNetHdr::kGsoEcn; }, none);
  with("TCPV6 on IPv4", [](VirtioNetHdr& h) { h.gso_type = VirtioNetHdr::kGsoTcpV6; }, none);
  with("UDP_L4 on TCP", [](VirtioNetHdr& h) { h.gso_type = VirtioNetHdr::kGsoUdpL4; h.csum_offset = 6; }, none);
  with("gso_size 0", [](VirtioNetHdr& h) { h.gso_size = 0; }, none);
  with("csum_start off the header", [](VirtioNetHdr& h) { h.csum_start = 24; }, none);
  with("csum_offset not TCP's", [](VirtioNetHdr& h) { h.csum_offset = 6; }, none);
  with("segment larger than the buffers", [](VirtioNetHdr& h) { h.gso_size = 2020; }, none);
  with("IHL 4", none, [](Bytes& p) { p[0] = 0x44; });
  with("IHL beyond the packet", none, [](Bytes& p) { p.resize(30); p[0] = 0x4f; });
  with("a fragment", none, [](Bytes& p) { p[6] |= 0x20; });
  with("not TCP", none, [](Bytes& p) { p[9] = 17; });
  with("TCP data offset 4", none, [](Bytes& p) { p[32] = 0x40; });
  with("TCP header beyond the packet", none, [](Bytes& p) { p[32] = 0xf0; p.resize(50); });
  with("no payload", none, [](Bytes& p) { p.resize(40); });
  with("version 5", none, [](Bytes& p) { p[0] = 0x55; });
  with("empty packet", none, [](Bytes& p) { p.clear(); });
  const auto shorter = [](Bytes& p) { p.resize(1040); };  // fits the buffers as a plain packet
  with("plain: checksum field past the end", [](VirtioNetHdr& h) { h.gso_type = 0; h.csum_start = 1030; }, shorter);
  with("plain: csum_start 65535", [](VirtioNetHdr& h) { h.gso_type = 0; h.csum_start = 65535; h.csum_offset = 65535; }, shorter);
  with("plain: longer than the buffers", [](VirtioNetHdr& h) { h = VirtioNetHdr{}; }, none);
  for (const Bad& b : cases) {
    TunOffloadCounters counters;
    GsoSplitter split(counters);
    Bytes frame(VirtioNetHdr::kSize);
    b.hdr.Serialize(frame);
    frame.insert(frame.end(), b.packet.begin(), b.packet.end());
    EXPECT_FALSE(split.Start(frame, kMaxSegment)) << b.what;
    EXPECT_EQ(split.remaining(), 0u) << b.what;
    EXPECT_EQ(counters.bad_vnet_hdr.load(), 1u) << b.what;
    EXPECT_EQ(counters.super_segments.load(), 0u) << b.what;
  }
  // Shorter than a header.
  TunOffloadCounters counters;
  GsoSplitter split(counters);
  Bytes short_frame(9);
  EXPECT_FALSE(split.Start(short_frame, kMaxSegment));
  EXPECT_EQ(counters.bad_vnet_hdr.load(), 1u);
}

TEST(TunOffloadSplit, EveryTruncatedPrefixIsRefusedOrSplitWithinBounds) {
  TcpSpec spec;
  spec.options = {1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2};
  spec.payload = Payload(2900);
  const Bytes full = Frame(GsoHdr(VirtioNetHdr::kGsoTcpV4, 20, 52, 1348), BuildTcp(spec));
  Bytes buf(kMaxSegment);
  for (std::size_t n = 0; n <= full.size(); ++n) {
    Bytes frame(full.begin(), full.begin() + static_cast<long>(n));
    TunOffloadCounters counters;
    GsoSplitter split(counters);
    if (!split.Start(frame, kMaxSegment)) continue;
    std::size_t total = 0;
    while (split.remaining() > 0) {
      const std::size_t len = split.Next(buf);
      ASSERT_LE(len, kMaxSegment);
      Bytes seg(buf.begin(), buf.begin() + static_cast<long>(len));
      EXPECT_TRUE(NaiveL4Ok(seg)) << "prefix " << n;
      total += len - 52;
    }
    EXPECT_EQ(total, n - VirtioNetHdr::kSize - 52) << "prefix " << n;
  }
}

// ---------------------------------------------------------------- coalescing

struct Written {
  VirtioNetHdr hdr;
  Bytes packet;
};

class Recorder : public TunWriter {
 public:
  bool Write(const VirtioNetHdr& hdr, std::span<const std::uint8_t> packet) override {
    if (refuse_gso && hdr.gso_type != VirtioNetHdr::kGsoNone) {
      errno = EINVAL;
      return false;
    }
    written.push_back({hdr, Bytes(packet.begin(), packet.end())});
    return true;
  }
  bool refuse_gso = false;
  std::vector<Written> written;
};

// What the kernel does with a written super-segment it must pass on: finish the checksum and
// cut it at gso_size (here with the splitter, whose output the split tests pinned down).
std::vector<Bytes> Resegment(const Written& w) {
  TunOffloadCounters counters;
  GsoSplitter split(counters);
  Bytes copy = w.packet;
  EXPECT_TRUE(split.Start(w.hdr, copy, 65535));
  std::vector<Bytes> out;
  Bytes buf(65535);
  while (split.remaining() > 0) out.emplace_back(buf.begin(), buf.begin() + static_cast<long>(split.Next(buf)));
  return out;
}

std::vector<Bytes> Segments(TcpSpec spec, std::size_t count, std::size_t size, std::size_t last = 0) {
  std::vector<Bytes> out;
  for (std::size_t i = 0; i < count; ++i) {
    spec.payload = Payload(i + 1 == count && last != 0 ? last : size, static_cast<std::uint8_t>(i));
    out.push_back(BuildTcp(spec));
    spec.seq += static_cast<std::uint32_t>(spec.payload.size());
    ++spec.id;
  }
  return out;
}

TEST(TunOffloadCoalesce, ConsecutiveSegmentsOfAFlowBecomeOneSuperSegment) {
  for (const bool v6 : {false, true}) {
    SCOPED_TRACE(v6 ? "IPv6" : "IPv4");
    TcpSpec spec;
    spec.v6 = v6;
    spec.options = {1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 8};
    std::vector<Bytes> segs = Segments(spec, 5, 1348, 501);
    segs.back()[(v6 ? 40 : 20) + 13] |= kPsh;  // PSH on the last, as a sender sets it
    const std::size_t l4 = v6 ? 40 : 20;
    {  // fix the checksum after setting PSH
      Bytes& p = segs.back();
      SetBe16(&p[l4 + 16], 0);
      SetBe16(&p[l4 + 16], static_cast<std::uint16_t>(~NaiveFold(NaivePseudo(p, l4, 6) + NaiveSum(&p[l4], p.size() - l4))));
    }
    TunOffloadCounters counters;
    GroCoalescer gro(counters);
    Recorder out;
    for (const Bytes& s : segs) gro.Add(s, out);
    gro.Flush(out);
    ASSERT_EQ(out.written.size(), 1u);
    const Written& w = out.written[0];
    EXPECT_EQ(w.hdr.flags, VirtioNetHdr::kNeedsCsum);
    EXPECT_EQ(w.hdr.gso_type, v6 ? VirtioNetHdr::kGsoTcpV6 : VirtioNetHdr::kGsoTcpV4);
    EXPECT_EQ(w.hdr.gso_size, 1348);
    EXPECT_EQ(w.hdr.hdr_len, l4 + 32);
    EXPECT_EQ(w.hdr.csum_start, l4);
    EXPECT_EQ(w.hdr.csum_offset, 16);
    EXPECT_EQ(w.packet.size(), l4 + 32 + 4 * 1348 + 501);
    if (v6) {
      EXPECT_EQ(Be16(&w.packet[4]), w.packet.size() - 40);
    } else {
      EXPECT_EQ(Be16(&w.packet[2]), w.packet.size());
      EXPECT_TRUE(NaiveIpv4HeaderOk(w.packet));
    }
    EXPECT_EQ(w.packet[l4 + 13], kAck | kPsh);
    // The partial checksum, finished as the kernel finishes it, verifies.
    Bytes done = w.packet;
    SetBe16(&done[l4 + 16], static_cast<std::uint16_t>(~NaiveFold(NaiveSum(&done[l4], done.size() - l4))));
    EXPECT_TRUE(NaiveL4Ok(done));
    // Cut again, it is the segments that came in, byte for byte.
    EXPECT_EQ(Resegment(w), segs);
    EXPECT_EQ(counters.coalesced_writes.load(), 1u);
    EXPECT_EQ(counters.coalesced_segments.load(), 5u);
    EXPECT_EQ(gro.pending_flows(), 0u);
  }
}

TEST(TunOffloadCoalesce, ASegmentOfAnotherFlowInBetweenDoesNotSplitEither) {
  TcpSpec a, b;
  b.src_last = 2;
  b.seq = 5;
  const std::vector<Bytes> sa = Segments(a, 4, 1000), sb = Segments(b, 3, 800, 100);
  TunOffloadCounters counters;
  GroCoalescer gro(counters);
  Recorder out;
  const Bytes udp = BuildUdp(false, Payload(10));
  gro.Add(sa[0], out);
  gro.Add(sb[0], out);
  gro.Add(sa[1], out);
  gro.Add(udp, out);  // not TCP: written at once
  gro.Add(sb[1], out);
  gro.Add(sa[2], out);
  gro.Add(sb[2], out);  // short: closes b, written at once
  gro.Add(sa[3], out);
  gro.Flush(out);
  ASSERT_EQ(out.written.size(), 3u);
  EXPECT_EQ(out.written[0].packet, udp);
  EXPECT_EQ(Resegment(out.written[1]), sb);
  EXPECT_EQ(Resegment(out.written[2]), sa);
  EXPECT_EQ(counters.coalesced_segments.load(), 7u);
}

// Datagrams of one UDP flow as a sender's stack numbers them (IPv4 IDs running on): `count` of
// `size` bytes of payload, then one of `last` if not 0.
std::vector<Bytes> Datagrams(bool v6, std::size_t count, std::size_t size, std::size_t last = 0,
                             std::uint16_t sport = 5353) {
  std::vector<Bytes> out;
  for (std::size_t i = 0; i < count + (last ? 1 : 0); ++i) {
    out.push_back(BuildUdp(v6, Payload(i < count ? size : last, static_cast<std::uint8_t>(i)),
                           static_cast<std::uint16_t>(0x0500 + i), false, sport));
  }
  return out;
}

TEST(TunOffloadCoalesceUdp, DatagramsOfAFlowBecomeOneUsoSuperSegmentWhereTheTunTookUso) {
  for (const bool v6 : {false, true}) {
    SCOPED_TRACE(v6 ? "IPv6" : "IPv4");
    const std::size_t l4 = v6 ? 40 : 20;
    const std::vector<Bytes> dgrams = Datagrams(v6, 6, 36, 20);  // the last one short
    TunOffloadCounters counters;
    GroCoalescer gro(counters, /*udp4=*/true, /*udp6=*/true);
    Recorder out;
    for (const Bytes& d : dgrams) gro.Add(d, out);
    gro.Flush(out);
    ASSERT_EQ(out.written.size(), 1u);
    const Written& w = out.written[0];
    EXPECT_EQ(w.hdr.flags, VirtioNetHdr::kNeedsCsum);
    EXPECT_EQ(w.hdr.gso_type, VirtioNetHdr::kGsoUdpL4);
    EXPECT_EQ(w.hdr.gso_size, 36);
    EXPECT_EQ(w.hdr.hdr_len, l4 + 8);
    EXPECT_EQ(w.hdr.csum_start, l4);
    EXPECT_EQ(w.hdr.csum_offset, 6);
    ASSERT_EQ(w.packet.size(), l4 + 8 + 6 * 36 + 20);
    // IP and UDP lengths cover the whole super-datagram (what __udp_gso_segment expects).
    EXPECT_EQ(Be16(&w.packet[v6 ? 4 : 2]), w.packet.size() - (v6 ? 40 : 0));
    EXPECT_EQ(Be16(&w.packet[l4 + 4]), w.packet.size() - l4);
    if (!v6) {
      EXPECT_TRUE(NaiveIpv4HeaderOk(w.packet));
    }
    // The partial checksum, finished as the kernel finishes it, verifies.
    Bytes done = w.packet;
    SetBe16(&done[l4 + 6], static_cast<std::uint16_t>(~NaiveFold(NaiveSum(&done[l4], done.size() - l4))));
    EXPECT_TRUE(NaiveL4Ok(done));
    // Cut again, it is the datagrams that came in, byte for byte.
    EXPECT_EQ(Resegment(w), dgrams);
    EXPECT_EQ(counters.coalesced_writes.load(), 1u);
    EXPECT_EQ(counters.coalesced_segments.load(), 7u);
  }
}

TEST(TunOffloadCoalesceUdp, WithoutUsoEveryDatagramGoesAsItCame) {
  for (const bool v6 : {false, true}) {
    const std::vector<Bytes> dgrams = Datagrams(v6, 4, 36);
    TunOffloadCounters counters;
    // USO for the other family only.
    GroCoalescer gro(counters, /*udp4=*/v6, /*udp6=*/!v6);
    Recorder out;
    for (const Bytes& d : dgrams) gro.Add(d, out);
    gro.Flush(out);
    ASSERT_EQ(out.written.size(), 4u);
    for (std::size_t i = 0; i < 4; ++i) {
      EXPECT_EQ(out.written[i].hdr.gso_type, VirtioNetHdr::kGsoNone);
      EXPECT_EQ(out.written[i].packet, dgrams[i]);
    }
    EXPECT_EQ(counters.coalesced_writes.load(), 0u);
  }
}

TEST(TunOffloadCoalesceUdp, TheRulesKeepDatagramsApart) {
  TunOffloadCounters counters;
  GroCoalescer gro(counters, true, true);
  Recorder out;
  const auto run = [&](const std::vector<Bytes>& in) {
    out.written.clear();
    for (const Bytes& d : in) gro.Add(d, out);
    gro.Flush(out);
    std::vector<Bytes> back;
    for (const Written& w : out.written) {
      if (w.hdr.gso_type == VirtioNetHdr::kGsoNone) {
        back.push_back(w.packet);
      } else {
        for (Bytes& d : Resegment(w)) back.push_back(std::move(d));
      }
    }
    EXPECT_EQ(back, in) << "every datagram written once, in order within its flow";
    return out.written.size();
  };
  // A longer datagram after the first: the first goes alone, the longer one starts anew.
  std::vector<Bytes> d = Datagrams(false, 3, 36);
  d[1] = BuildUdp(false, Payload(40, 1), 0x0501);
  d[2] = BuildUdp(false, Payload(40, 2), 0x0502);
  EXPECT_EQ(run(d), 2u);
  // After a short one nothing more joins.
  d = Datagrams(false, 2, 36, 10);
  d.push_back(BuildUdp(false, Payload(36, 9), 0x0503));
  EXPECT_EQ(run(d), 2u);
  // Sent without a checksum (IPv4's 0): written as it came, not merged (the kernel would add one).
  d = Datagrams(false, 3, 36);
  SetBe16(&d[1][26], 0);
  EXPECT_EQ(run(d), 3u);
  // A bad checksum: never merged, passed untouched for the kernel to drop, and counted.
  d = Datagrams(false, 3, 36);
  d[1][30] ^= 0x40;
  const std::uint64_t bad = counters.bad_csum_passed.load();
  EXPECT_EQ(run(d), 3u);
  EXPECT_EQ(counters.bad_csum_passed.load(), bad + 1);
  // Without DF the IDs must run on, as the kernel's resegmentation numbers them.
  d = Datagrams(false, 3, 36);
  d[2] = BuildUdp(false, Payload(36, 2), 0x0600);
  EXPECT_EQ(run(d), 2u);
  // With DF the IDs do not matter (RFC 6864: an atomic datagram's ID means nothing); the
  // kernel numbers the pieces on from the first.
  d = {BuildUdp(false, Payload(36, 0), 7, true), BuildUdp(false, Payload(36, 1), 3, true)};
  out.written.clear();
  for (const Bytes& p : d) gro.Add(p, out);
  gro.Flush(out);
  ASSERT_EQ(out.written.size(), 1u);
  const std::vector<Bytes> df = Resegment(out.written[0]);
  ASSERT_EQ(df.size(), 2u);
  EXPECT_EQ(df[0], d[0]);
  EXPECT_EQ(Be16(&df[1][4]), 8u);
  EXPECT_TRUE(NaiveIpv4HeaderOk(df[1]));
  EXPECT_TRUE(std::equal(df[1].begin() + 20, df[1].end(), d[1].begin() + 20)) << "the same UDP datagram";
  // Another flow in between (other source port) splits neither; a TCP segment with the same
  // addresses and ports is not the UDP flow.
  const std::vector<Bytes> a = Datagrams(false, 3, 36), b = Datagrams(false, 2, 36, 0, 6000);
  TcpSpec t;
  t.sport = 5353;
  t.dport = 9999;
  t.payload = Payload(36);
  const Bytes tcp = BuildTcp(t);
  out.written.clear();
  for (const Bytes* p : {&a[0], &b[0], &tcp, &a[1], &b[1], &a[2]}) gro.Add(*p, out);
  gro.Flush(out);
  std::vector<Bytes> got_a, got_b;
  for (const Written& w : out.written) {
    if (w.packet == tcp) continue;
    const std::vector<Bytes> segs = w.hdr.gso_type == VirtioNetHdr::kGsoNone ? std::vector<Bytes>{w.packet} : Resegment(w);
    for (const Bytes& seg : segs) (Be16(&seg[20]) == 5353 ? got_a : got_b).push_back(seg);
  }
  EXPECT_EQ(got_a, a);
  EXPECT_EQ(got_b, b);
  EXPECT_EQ(out.written.size(), 3u) << "a's three, b's two, the TCP segment";
}

TEST(TunOffloadCoalesceUdp, AKernelThatRefusesTheSuperSegmentGetsTheDatagramsOneByOne) {
  TunOffloadCounters counters;
  GroCoalescer gro(counters, true, true);
  Recorder out;
  out.refuse_gso = true;
  const std::vector<Bytes> d = Datagrams(true, 5, 36);
  for (const Bytes& p : d) gro.Add(p, out);
  gro.Flush(out);
  ASSERT_EQ(out.written.size(), 5u);
  for (std::size_t i = 0; i < 5; ++i) EXPECT_EQ(out.written[i].packet, d[i]);
  EXPECT_EQ(counters.fallbacks.load(), 1u);
}

TEST(TunOffloadCoalesce, TheKernelsRulesKeepSegmentsApart) {
  TcpSpec spec;
  const std::size_t kPay = 1000;
  struct Case {
    const char* what;
    std::function<void(std::vector<TcpSpec>&)> change;  // of three segments' specs
    std::size_t writes;  // the three segments in how many writes
  };
  const std::vector<Case> cases = {
      {"all alike", [](auto&) {}, 1},
      {"a gap in sequence", [](auto& s) { s[1].seq += 1; s[2].seq += 1; }, 2},
      {"going back in sequence", [](auto& s) { std::swap(s[1].seq, s[2].seq); }, 3},
      {"PSH in the middle", [](auto& s) { s[1].flags |= kPsh; }, 2},
      {"PSH on the first", [](auto& s) { s[0].flags |= kPsh; }, 2},
      {"FIN on the last", [](auto& s) { s[2].flags |= kFin; }, 2},
      {"SYN", [](auto& s) { s[1].flags |= kSyn; }, 3},
      {"RST", [](auto& s) { s[1].flags = kRst; }, 3},
      {"URG", [](auto& s) { s[1].flags |= 0x20; }, 3},
      {"CWR", [](auto& s) { s[1].flags |= kCwr; }, 3},
      {"another ACK", [](auto& s) { s[1].ack += 1000; s[2].ack += 1000; }, 2},
      {"another TTL", [](auto& s) { s[1].ttl = 63; s[2].ttl = 63; }, 2},
      {"another TOS (CE)", [](auto& s) { s[2].tos = 3; }, 2},
      {"other TCP options", [](auto& s) { for (auto& x : s) x.options = {1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}; s[2].options[7] = 2; }, 2},
      {"other IP options", [](auto& s) { for (auto& x : s) x.ip_options = {1, 1, 1, 0}; s[1].ip_options = {1, 1, 1, 1}; }, 3},
      {"same IP options", [](auto& s) { for (auto& x : s) x.ip_options = {1, 1, 1, 0}; }, 1},
      {"no DF, IDs running on", [](auto& s) { for (auto& x : s) x.df = false; }, 1},
      {"no DF, IDs jumping", [](auto& s) { for (auto& x : s) x.df = false; s[2].id += 5; }, 2},
      {"DF, IDs jumping", [](auto& s) { s[2].id += 5; }, 1},
      {"larger after smaller", [](auto& s) { s[1].payload.resize(kPay - 1); s[2].seq -= 1; }, 2},
      {"smaller last", [](auto& s) { s[2].payload.resize(10); }, 1},
      {"empty segment (pure ACK)", [](auto& s) { s[1].payload.clear(); s[2].seq -= kPay; }, 3},
      {"another window (the latest is kept)", [](auto& s) { s[2].window = 9; }, 1},
  };
  for (const Case& c : cases) {
    std::vector<TcpSpec> specs(3, spec);
    for (std::size_t i = 0; i < 3; ++i) {
      specs[i].payload = Payload(kPay, static_cast<std::uint8_t>(i));
      specs[i].seq = spec.seq + static_cast<std::uint32_t>(i * kPay);
      specs[i].id = static_cast<std::uint16_t>(spec.id + i);
    }
    c.change(specs);
    std::vector<Bytes> segs;
    for (const TcpSpec& s : specs) segs.push_back(BuildTcp(s));
    TunOffloadCounters counters;
    GroCoalescer gro(counters);
    Recorder out;
    for (const Bytes& s : segs) gro.Add(s, out);
    gro.Flush(out);
    EXPECT_EQ(out.written.size(), c.writes) << c.what;
    // Nothing lost, nothing reordered, every byte as sent (cut again where coalesced).
    std::vector<Bytes> all;
    for (const Written& w : out.written) {
      if (w.hdr.gso_type == VirtioNetHdr::kGsoNone) {
        all.push_back(w.packet);
      } else {
        for (Bytes& s : Resegment(w)) all.push_back(std::move(s));
      }
    }
    if (std::string(c.what).find("window") != std::string::npos) {
      ASSERT_EQ(all.size(), 3u);
      EXPECT_EQ(Be16(&all[0][34]), 9) << "the latest window";
      continue;
    }
    if (std::string(c.what) == "no DF, IDs jumping" || std::string(c.what) == "DF, IDs jumping") {
      // With DF the kernel numbers resegmented datagrams on: compare all but ID and checksum.
      ASSERT_EQ(all.size(), 3u) << c.what;
      for (std::size_t i = 0; i < 3; ++i) {
        EXPECT_TRUE(std::equal(all[i].begin() + 20, all[i].end(), segs[i].begin() + 20)) << c.what;
      }
      continue;
    }
    EXPECT_EQ(all, segs) << c.what;
  }
}

TEST(TunOffloadCoalesce, BadChecksumsAreNeverCoalescedAndPassUntouched) {
  TcpSpec spec;
  std::vector<Bytes> segs = Segments(spec, 4, 1200);
  segs[2][100] ^= 0x40;  // payload corrupted after the checksum was made
  TunOffloadCounters counters;
  GroCoalescer gro(counters);
  Recorder out;
  for (const Bytes& s : segs) gro.Add(s, out);
  gro.Flush(out);
  ASSERT_EQ(out.written.size(), 3u);
  EXPECT_EQ(Resegment(out.written[0]), (std::vector<Bytes>{segs[0], segs[1]}));
  EXPECT_EQ(out.written[1].hdr.gso_type, VirtioNetHdr::kGsoNone);
  EXPECT_EQ(out.written[1].packet, segs[2]);
  EXPECT_EQ(out.written[2].packet, segs[3]);
  EXPECT_EQ(counters.bad_csum_passed.load(), 1u);
  // A bad head: alone, untouched; the next segment starts over.
  segs = Segments(spec, 3, 1200);
  segs[0][60] ^= 1;
  out.written.clear();
  for (const Bytes& s : segs) gro.Add(s, out);
  gro.Flush(out);
  ASSERT_EQ(out.written.size(), 2u);
  EXPECT_EQ(out.written[0].packet, segs[0]);
  EXPECT_EQ(Resegment(out.written[1]), (std::vector<Bytes>{segs[1], segs[2]}));
  EXPECT_EQ(counters.bad_csum_passed.load(), 2u);
}

TEST(TunOffloadCoalesce, SuperSegmentsStopAtSixtyFourSegmentsAndSixtyFourKilobytes) {
  TcpSpec spec;
  {
    const std::vector<Bytes> segs = Segments(spec, 70, 100);
    TunOffloadCounters counters;
    GroCoalescer gro(counters);
    Recorder out;
    for (const Bytes& s : segs) gro.Add(s, out);
    gro.Flush(out);
    ASSERT_EQ(out.written.size(), 2u);
    EXPECT_EQ(Resegment(out.written[0]).size(), 64u);
    EXPECT_EQ(Resegment(out.written[1]).size(), 6u);
  }
  {
    const std::vector<Bytes> segs = Segments(spec, 50, 1400);
    TunOffloadCounters counters;
    GroCoalescer gro(counters);
    Recorder out;
    for (const Bytes& s : segs) gro.Add(s, out);
    gro.Flush(out);
    ASSERT_EQ(out.written.size(), 2u);
    EXPECT_LE(out.written[0].packet.size(), 65535u);
    EXPECT_EQ(Resegment(out.written[0]).size(), 46u);  // 40 + 46 x 1400 = 64440; 47 would not fit
    std::vector<Bytes> all = Resegment(out.written[0]);
    for (Bytes& s : Resegment(out.written[1])) all.push_back(std::move(s));
    EXPECT_EQ(all, segs);
  }
}

TEST(TunOffloadCoalesce, MoreFlowsThanSlotsWriteTheOldestFirstAndLoseNothing) {
  std::vector<std::vector<Bytes>> flows;
  for (int f = 0; f < 11; ++f) {
    TcpSpec spec;
    spec.src_last = static_cast<std::uint8_t>(10 + f);
    flows.push_back(Segments(spec, 3, 500));
  }
  TunOffloadCounters counters;
  GroCoalescer gro(counters);
  Recorder out;
  for (std::size_t i = 0; i < 3; ++i)
    for (const auto& f : flows) gro.Add(f[i], out);
  EXPECT_LE(gro.pending_flows(), GroCoalescer::kMaxFlows);
  gro.Flush(out);
  // Per flow: its segments in order, every byte.
  for (const auto& f : flows) {
    std::vector<Bytes> got;
    for (const Written& w : out.written) {
      std::vector<Bytes> segs = w.hdr.gso_type == VirtioNetHdr::kGsoNone ? std::vector<Bytes>{w.packet} : Resegment(w);
      for (Bytes& s : segs)
        if (s[15] == f[0][15]) got.push_back(std::move(s));
    }
    EXPECT_EQ(got, f);
  }
}

TEST(TunOffloadCoalesce, ARefusedSuperSegmentIsResentAsItsSegments) {
  TcpSpec spec;
  spec.v6 = true;
  const std::vector<Bytes> segs = Segments(spec, 6, 1300, 13);
  TunOffloadCounters counters;
  GroCoalescer gro(counters);
  Recorder out;
  out.refuse_gso = true;  // as a kernel that takes no GSO from userspace would
  for (const Bytes& s : segs) gro.Add(s, out);
  gro.Flush(out);
  std::vector<Bytes> got;
  for (const Written& w : out.written) {
    EXPECT_EQ(w.hdr.gso_type, VirtioNetHdr::kGsoNone);
    got.push_back(w.packet);
  }
  EXPECT_EQ(got, segs);
  EXPECT_EQ(counters.fallbacks.load(), 1u);
  EXPECT_EQ(counters.coalesced_writes.load(), 0u);
}

TEST(TunOffloadCoalesce, WhatIsNotTcpOrNotWholePassesAsItCame) {
  TcpSpec spec;
  spec.payload = Payload(100);
  Bytes trailing = BuildTcp(spec);
  trailing.push_back(0);  // longer than its IP header says
  Bytes fragment = BuildTcp(spec);
  fragment[6] = 0x20;  // MF
  const std::vector<Bytes> odd = {{}, {0x45}, {0x60, 0, 0}, trailing, fragment, BuildUdp(true, Payload(5)),
                                  Bytes(40, 0x45), Bytes(60, 0x60)};
  TunOffloadCounters counters;
  GroCoalescer gro(counters);
  Recorder out;
  for (const Bytes& p : odd) gro.Add(p, out);
  gro.Flush(out);
  ASSERT_EQ(out.written.size(), odd.size());
  for (std::size_t i = 0; i < odd.size(); ++i) EXPECT_EQ(out.written[i].packet, odd[i]) << i;
}

}  // namespace spigot::io::tun_offload_test
