// The road warriors' echo traffic: the RFC 1071 checksum, echo requests and replies, and a
// CHILD SA's two directions sealing and opening each other's packets.
#include "spigot/loadgen/traffic.h"

#include <gtest/gtest.h>

#include <vector>

namespace spigot::loadgen {
namespace {

constexpr Ipv4 kVip = {198, 18, 0, 7};
constexpr Ipv4 kDst = {203, 0, 113, 1};

// The request turned into the reply a host would send (RFC 792: addresses swapped, type 0).
std::vector<std::uint8_t> ReplyTo(std::span<const std::uint8_t> request) {
  Echo e;
  EXPECT_TRUE(ParseEcho(request, e));
  std::vector<std::uint8_t> p(kEchoPacketLen);
  BuildEcho(Echo{kIcmpEchoReply, e.dst, e.src, e.id, e.seq}, p);
  return p;
}

std::size_t BuildEchoRequest(const Ipv4& src, const Ipv4& dst, std::uint16_t id, std::uint16_t seq,
                             std::span<std::uint8_t> out) {
  return BuildEcho(Echo{kIcmpEchoRequest, src, dst, id, seq}, out);
}

TEST(Traffic, ChecksumOfRfc1071Example) {
  // RFC 1071 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2; the checksum is its complement.
  const std::uint8_t data[] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
  EXPECT_EQ(InternetChecksum(data), static_cast<std::uint16_t>(~0xddf2));
}

TEST(Traffic, EchoRequestHasValidChecksumsAndFields) {
  std::uint8_t p[kEchoPacketLen];
  ASSERT_EQ(BuildEchoRequest(kVip, kDst, 0x1234, 3, p), kEchoPacketLen);
  EXPECT_EQ(p[0], 0x45);
  EXPECT_EQ(p[9], kIpProtoIcmp);
  EXPECT_EQ(InternetChecksum(std::span(p).first(kIpv4HeaderLen)), 0);
  EXPECT_EQ(InternetChecksum(std::span(p).subspan(kIpv4HeaderLen)), 0);
  EXPECT_EQ(p[kIpv4HeaderLen], kIcmpEchoRequest);
  std::uint8_t small[kEchoPacketLen - 1];
  EXPECT_EQ(BuildEchoRequest(kVip, kDst, 1, 1, small), 0u);
}

TEST(Traffic, ParsesTheReplyAndRejectsTheRest) {
  std::uint8_t req[kEchoPacketLen];
  BuildEchoRequest(kVip, kDst, 0x1234, 3, req);
  Echo r;
  ASSERT_TRUE(ParseEcho(req, r));
  EXPECT_EQ(r.type, kIcmpEchoRequest);
  auto reply = ReplyTo(req);
  ASSERT_TRUE(ParseEcho(reply, r));
  EXPECT_EQ(r.type, kIcmpEchoReply);
  EXPECT_EQ(r.src, kDst);
  EXPECT_EQ(r.dst, kVip);
  EXPECT_EQ(r.id, 0x1234);
  EXPECT_EQ(r.seq, 3);
  // Every truncated prefix is refused.
  for (std::size_t n = 0; n < reply.size(); ++n) {
    EXPECT_FALSE(ParseEcho(std::span(reply).first(n), r)) << n;
  }
  auto bad = reply;
  bad[kIpv4HeaderLen + 10] ^= 1;  // payload: the ICMP checksum no longer holds
  EXPECT_FALSE(ParseEcho(bad, r));
  bad = reply;
  bad[8] ^= 1;  // TTL: the header checksum no longer holds
  EXPECT_FALSE(ParseEcho(bad, r));
}

ike::ChildSaInfo Child(std::uint32_t in, std::uint32_t out, std::uint8_t key_in, std::uint8_t key_out) {
  ike::ChildSaInfo c;
  c.spi_in = in;
  c.spi_out = out;
  c.algs.suite = crypto::EspSuite::kAesGcm128;
  const std::size_t len = crypto::SuiteInfo(c.algs.suite).keymat_len();
  c.keymat_in = crypto::SecureBytes(std::vector<std::uint8_t>(len, key_in));
  c.keymat_out = crypto::SecureBytes(std::vector<std::uint8_t>(len, key_out));
  return c;
}

TEST(Traffic, TunnelSealsForItsPeerAndOpensWhatItSends) {
  // The peer and the responder see one CHILD SA from both ends: SPIs and keys crossed.
  ChildTunnel peer, responder;
  ASSERT_TRUE(peer.Init(Child(0x1001, 0x2002, 0xaa, 0xbb)));
  ASSERT_TRUE(responder.Init(Child(0x2002, 0x1001, 0xbb, 0xaa)));
  std::uint8_t req[kEchoPacketLen];
  BuildEchoRequest(kVip, kDst, 7, 1, req);
  std::array<std::uint8_t, ChildTunnel::kBufferLen> buf;
  std::span<const std::uint8_t> esp;
  ASSERT_EQ(peer.Seal(req, buf, esp), esp::Status::kOk);
  std::vector<std::uint8_t> wire(esp.begin(), esp.end());
  std::span<const std::uint8_t> inner;
  ASSERT_EQ(responder.Open(wire, inner), esp::Status::kOk);
  ASSERT_TRUE(std::equal(inner.begin(), inner.end(), std::begin(req), std::end(req)));
  // The same packet again is a replay.
  std::vector<std::uint8_t> again(esp.begin(), esp.end());
  EXPECT_EQ(responder.Open(again, inner), esp::Status::kReplay);

  const auto reply = ReplyTo(req);
  ASSERT_EQ(responder.Seal(reply, buf, esp), esp::Status::kOk);
  wire.assign(esp.begin(), esp.end());
  std::vector<std::uint8_t> forged = wire;
  forged.back() ^= 1;
  EXPECT_EQ(peer.Open(forged, inner), esp::Status::kBadIcv);
  ASSERT_EQ(peer.Open(wire, inner), esp::Status::kOk);
  Echo r;
  ASSERT_TRUE(ParseEcho(inner, r));
  EXPECT_EQ(r.seq, 1);
}

}  // namespace
}  // namespace spigot::loadgen
