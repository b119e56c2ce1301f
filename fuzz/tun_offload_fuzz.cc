// The TUN offload code (io/tun_offload.h) against frames and packets from a hostile kernel or
// peer, checking round trips, not only "no crash":
//   byte 0 bit 0 = 0: the input after 3 bytes is one TUN read (virtio-net header + packet);
//     bytes 1-2 the caller's segment room. Every segment fits it; an accepted GSO frame's
//     segments carry its payload in order with valid checksums, and coalesced again (and cut
//     again where written as one) they are the same bytes.
//   byte 0 bit 0 = 1: the rest is packets with 2-byte length prefixes, each handed to the
//     coalescer (TCP, and UDP as with USO granted) as an opened packet. Nothing is lost or
//     invented: cut again, the writes hold as many packets and bytes as went in.
//   byte 0 bit 1: the writer refuses super-segments (EINVAL), so the fallback runs.
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "spigot/io/tun_offload.h"

namespace {

using spigot::io::ChecksumAdd;
using spigot::io::ChecksumFold;
using spigot::io::GroCoalescer;
using spigot::io::GsoSplitter;
using spigot::io::PseudoHeaderSum;
using spigot::io::TunOffloadCounters;
using spigot::io::TunWriter;
using spigot::io::VirtioNetHdr;
using Bytes = std::vector<std::uint8_t>;

void Check(bool ok) {
  if (!ok) std::abort();
}

struct Recorder : TunWriter {
  bool Write(const VirtioNetHdr& hdr, std::span<const std::uint8_t> packet) override {
    if (refuse_gso && hdr.gso_type != VirtioNetHdr::kGsoNone) {
      errno = EINVAL;
      return false;
    }
    written.push_back({hdr, Bytes(packet.begin(), packet.end())});
    return true;
  }
  struct Frame {
    VirtioNetHdr hdr;
    Bytes packet;
  };
  bool refuse_gso = false;
  std::vector<Frame> written;
};

// The packets a write stands for: itself, or a super-segment cut again.
std::vector<Bytes> Packets(const Recorder::Frame& f) {
  if (f.hdr.gso_type == VirtioNetHdr::kGsoNone) return {f.packet};
  Check(f.hdr.flags == VirtioNetHdr::kNeedsCsum && f.packet.size() <= GroCoalescer::kMaxBytes);
  TunOffloadCounters c;
  GsoSplitter split(c);
  Bytes copy = f.packet;
  Check(split.Start(f.hdr, copy, 65535));
  Check(split.remaining() >= 2 && split.remaining() <= GroCoalescer::kMaxSegments);
  std::vector<Bytes> out;
  Bytes buf(65535);
  while (split.remaining() > 0) {
    const std::size_t n = split.Next(buf);
    out.emplace_back(buf.begin(), buf.begin() + static_cast<long>(n));
  }
  return out;
}

std::size_t L4(const Bytes& p) { return (p[0] >> 4) == 6 ? 40 : (p[0] & 0x0f) * std::size_t{4}; }

bool TransportOk(const Bytes& p) {
  const std::size_t l4 = L4(p);
  const std::uint8_t proto = (p[0] >> 4) == 6 ? p[6] : p[9];
  return ChecksumFold(PseudoHeaderSum(p, proto, p.size() - l4) +
                      ChecksumAdd(std::span(p).subspan(l4))) == 0xffff;
}

void Coalesce(const std::vector<Bytes>& in, bool refuse, std::size_t expect_exact) {
  TunOffloadCounters c;
  GroCoalescer gro(c, /*udp4=*/true, /*udp6=*/true);
  Recorder out;
  out.refuse_gso = refuse;
  for (const Bytes& p : in) gro.Add(p, out);
  gro.Flush(out);
  Check(gro.pending_flows() == 0);
  std::vector<Bytes> back;
  for (const auto& f : out.written)
    for (Bytes& p : Packets(f)) back.push_back(std::move(p));
  Check(back.size() == in.size());
  std::size_t in_bytes = 0, out_bytes = 0;
  for (const Bytes& p : in) in_bytes += p.size();
  for (const Bytes& p : back) out_bytes += p.size();
  Check(in_bytes == out_bytes);
  if (expect_exact) Check(back == in);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  const bool refuse = (data[0] & 2) != 0;
  if ((data[0] & 1) == 0) {
    const std::size_t room = 64 + ((data[1] << 8 | data[2]) % 4096);
    Bytes frame(data + 3, data + size);
    TunOffloadCounters c;
    GsoSplitter split(c);
    if (!split.Start(frame, room)) {
      Check(split.remaining() == 0 && c.bad_vnet_hdr.load() == 1);
      return 0;
    }
    const VirtioNetHdr hdr = VirtioNetHdr::Parse(frame);
    const bool gso = hdr.gso_type != VirtioNetHdr::kGsoNone;
    std::vector<Bytes> segs;
    Bytes buf(room);
    while (split.remaining() > 0) {
      const std::size_t n = split.Next(buf);
      Check(n <= room);
      segs.emplace_back(buf.begin(), buf.begin() + static_cast<long>(n));
    }
    if (!gso) {
      Check(segs.size() == 1 && segs[0].size() == frame.size() - VirtioNetHdr::kSize);
      return 0;
    }
    // The payload, in order, with every checksum valid.
    const Bytes& p0 = segs[0];
    const std::size_t l4 = L4(p0);
    const bool tcp = ((p0[0] >> 4) == 6 ? p0[6] : p0[9]) == 6;
    const std::size_t headers = tcp ? l4 + (p0[l4 + 12] >> 4) * std::size_t{4} : l4 + 8;
    Bytes payload;
    for (const Bytes& s : segs) {
      Check(s.size() > headers && s.size() - headers <= hdr.gso_size);
      Check(TransportOk(s));
      payload.insert(payload.end(), s.begin() + static_cast<long>(headers), s.end());
    }
    const Bytes original(frame.begin() + static_cast<long>(VirtioNetHdr::kSize + headers), frame.end());
    Check(payload == original);
    // Coalesced again, then cut where written as one: the same segments, byte for byte (TCP,
    // and UDP with USO).
    Coalesce(segs, refuse, true);
    return 0;
  }
  std::vector<Bytes> packets;
  for (std::size_t at = 1; at + 2 <= size;) {
    const std::size_t n = std::min<std::size_t>(data[at] << 8 | data[at + 1], size - at - 2);
    packets.emplace_back(data + at + 2, data + at + 2 + n);
    at += 2 + n;
  }
  Coalesce(packets, refuse, false);
  return 0;
}
