#include "spigot/loadgen/traffic.h"

#include <algorithm>
#include <cstring>

#include "spigot/wire/byte_reader.h"
#include "spigot/wire/byte_writer.h"

namespace spigot::loadgen {
namespace {

constexpr std::uint8_t kIpv4VersionIhl = 0x45;  // version 4, 5 32-bit words (RFC 791 3.1)
constexpr std::uint8_t kTtl = 64;
constexpr std::size_t kIpv4ChecksumOffset = 10;
constexpr std::size_t kIcmpChecksumOffset = 2;

}  // namespace

std::uint16_t InternetChecksum(std::span<const std::uint8_t> data) {
  std::uint32_t sum = 0;
  for (std::size_t i = 0; i + 1 < data.size(); i += 2) sum += (std::uint32_t{data[i]} << 8) | data[i + 1];
  if (data.size() % 2 != 0) sum += std::uint32_t{data.back()} << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum);
}

std::size_t BuildEcho(const Echo& e, std::span<std::uint8_t> out) {
  if (out.size() < kEchoPacketLen) return 0;
  wire::ByteWriter w(out.first(kEchoPacketLen));
  w.WriteU8(kIpv4VersionIhl);
  w.WriteU8(0);  // DSCP/ECN
  w.WriteU16(kEchoPacketLen);
  w.WriteU16(e.seq);  // identification: any value (no fragments)
  w.WriteU16(0);    // flags, fragment offset
  w.WriteU8(kTtl);
  w.WriteU8(kIpProtoIcmp);
  w.WriteU16(0);  // header checksum, patched below
  w.WriteBytes(e.src);
  w.WriteBytes(e.dst);
  w.WriteU8(e.type);
  w.WriteU8(0);   // code
  w.WriteU16(0);  // checksum, patched below
  w.WriteU16(e.id);
  w.WriteU16(e.seq);
  for (std::size_t i = 0; i < kEchoPayloadLen; ++i) w.WriteU8(static_cast<std::uint8_t>(i));
  if (!w.ok()) return 0;
  w.PatchBE(kIpv4ChecksumOffset, InternetChecksum(out.first(kIpv4HeaderLen)), 2);
  w.PatchBE(kIpv4HeaderLen + kIcmpChecksumOffset,
            InternetChecksum(out.subspan(kIpv4HeaderLen, kEchoPacketLen - kIpv4HeaderLen)), 2);
  return w.ok() ? kEchoPacketLen : 0;
}

bool ParseEcho(std::span<const std::uint8_t> packet, Echo& out) {
  wire::ByteReader r(packet);
  std::uint8_t version_ihl = 0, tos = 0, ttl = 0, proto = 0, code = 0;
  std::uint16_t total = 0, ident = 0, frag = 0, sum = 0, icmp_sum = 0;
  std::span<const std::uint8_t> src, dst;
  if (!r.ReadU8(version_ihl) || (version_ihl >> 4) != 4) return false;
  const std::size_t ihl = std::size_t{version_ihl & 0x0fu} * 4;
  if (ihl < kIpv4HeaderLen || packet.size() < ihl) return false;
  if (!r.ReadU8(tos) || !r.ReadU16(total) || !r.ReadU16(ident) || !r.ReadU16(frag) ||
      !r.ReadU8(ttl) || !r.ReadU8(proto) || !r.ReadU16(sum) || !r.ReadBytes(4, src) ||
      !r.ReadBytes(4, dst) || !r.Skip(ihl - kIpv4HeaderLen))
    return false;
  if (proto != kIpProtoIcmp || total < ihl + kIcmpEchoHeaderLen || total > packet.size()) return false;
  if ((frag & 0x3fff) != 0) return false;  // a fragment (MF or an offset)
  if (InternetChecksum(packet.first(ihl)) != 0) return false;
  const auto icmp = packet.subspan(ihl, total - ihl);
  if (InternetChecksum(icmp) != 0) return false;
  if (!r.ReadU8(out.type) || !r.ReadU8(code) || !r.ReadU16(icmp_sum) || !r.ReadU16(out.id) ||
      !r.ReadU16(out.seq))
    return false;
  if ((out.type != kIcmpEchoReply && out.type != kIcmpEchoRequest) || code != 0) return false;
  std::copy(src.begin(), src.end(), out.src.begin());
  std::copy(dst.begin(), dst.end(), out.dst.begin());
  return true;
}

bool ChildTunnel::Init(const ike::ChildSaInfo& child, std::uint32_t replay_window) {
  crypto::ImbManager& mgr = crypto::ImbManager::ForThisThread();
  if (!cipher_out_.Init(mgr, child.algs.suite, child.keymat_out)) return false;
  if (!cipher_in_.Init(mgr, child.algs.suite, child.keymat_in)) return false;
  out_ = esp::OutboundState{child.spi_out, child.algs.esn, 1};
  in_ = esp::InboundState{child.spi_in, esp::ReplayWindow(replay_window, child.algs.esn)};
  return true;
}

esp::Status ChildTunnel::Seal(std::span<const std::uint8_t> inner,
                              std::array<std::uint8_t, kBufferLen>& buffer,
                              std::span<const std::uint8_t>& esp) {
  if (inner.size() > kEchoPacketLen) return esp::Status::kNoRoom;
  std::memcpy(buffer.data() + esp::kSealHeadroom, inner.data(), inner.size());
  esp::PacketView pkt{buffer, esp::kSealHeadroom, inner.size()};
  const esp::Status st = esp::Seal(crypto::ImbManager::ForThisThread(), cipher_out_, out_,
                                   esp::kNextHeaderIpv4, pkt);
  if (st == esp::Status::kOk) esp = pkt.bytes();
  return st;
}

esp::Status ChildTunnel::Open(std::span<std::uint8_t> esp, std::span<const std::uint8_t>& inner) {
  esp::PacketView pkt{esp, 0, esp.size()};
  std::uint8_t next_header = 0;
  const esp::Status st = esp::Open(crypto::ImbManager::ForThisThread(), cipher_in_, in_, pkt, next_header);
  if (st != esp::Status::kOk) return st;
  if (next_header != esp::kNextHeaderIpv4) return esp::Status::kMalformed;
  inner = pkt.bytes();
  return st;
}

}  // namespace spigot::loadgen
