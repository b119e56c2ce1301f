// Every rejection reason of esp::Open, sequence exhaustion of esp::Seal, and the RFC 3948
// classifier. Known-answer tests and suite round trips are in esp_kat_test.cc.
#include "spigot/esp/esp.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace spigot::esp {
namespace {

using crypto::EspSuite;

constexpr std::uint32_t kSpi = 0x11223344;

std::vector<std::uint8_t> Ipv4(std::size_t len) {
  std::vector<std::uint8_t> p(len, 0xAB);
  p[0] = 0x45;
  p[1] = 0;
  p[2] = static_cast<std::uint8_t>(len >> 8);
  p[3] = static_cast<std::uint8_t>(len);
  return p;
}

class EspFixture : public ::testing::TestWithParam<EspSuite> {
 protected:
  void SetUp() override {
    std::vector<std::uint8_t> key(crypto::SuiteInfo(GetParam()).keymat_len());
    for (std::size_t i = 0; i < key.size(); ++i) key[i] = static_cast<std::uint8_t>(i * 7 + 1);
    ASSERT_TRUE(cipher_.Init(mgr(), GetParam(), key));
  }
  crypto::ImbManager& mgr() { return crypto::ImbManager::ForThisThread(); }

  // Seals `inner` with sequence number `seq`; returns the ESP packet bytes.
  std::vector<std::uint8_t> SealPacket(const std::vector<std::uint8_t>& inner, std::uint64_t seq,
                                       bool esn = false, std::uint8_t nh = kNextHeaderIpv4) {
    std::vector<std::uint8_t> buf(kSealHeadroom + inner.size() + kSealTailroom);
    std::memcpy(buf.data() + kSealHeadroom, inner.data(), inner.size());
    PacketView pkt{buf, kSealHeadroom, inner.size()};
    OutboundState out{kSpi, esn, seq};
    EXPECT_EQ(Seal(mgr(), cipher_, out, nh, pkt), Status::kOk);
    return {buf.begin() + static_cast<long>(pkt.offset),
            buf.begin() + static_cast<long>(pkt.offset + pkt.length)};
  }

  Status OpenPacket(std::vector<std::uint8_t> esp, InboundState& in,
                    std::vector<std::uint8_t>* inner = nullptr) {
    PacketView pkt{esp, 0, esp.size()};
    std::uint8_t nh = 0;
    const Status st = Open(mgr(), cipher_, in, pkt, nh);
    if (inner != nullptr && st == Status::kOk) inner->assign(pkt.bytes().begin(), pkt.bytes().end());
    return st;
  }

  crypto::EspCipher cipher_;
};

TEST_P(EspFixture, ShortPacketsAreShortAtEveryLength) {
  const auto esp = SealPacket(Ipv4(40), 1);
  const auto& info = crypto::SuiteInfo(GetParam());
  const std::size_t min = kEspHeaderLen + info.iv_len + std::max<std::size_t>(info.pad_align, 2) +
                          info.icv_len;
  for (std::size_t n = 0; n < esp.size(); ++n) {
    InboundState in{kSpi, ReplayWindow(64, false)};
    const Status st = OpenPacket({esp.begin(), esp.begin() + static_cast<long>(n)}, in);
    if (n < min) {
      EXPECT_EQ(st, Status::kShort) << n;
    } else {
      EXPECT_NE(st, Status::kOk) << n;  // misaligned (kMalformed) or failing the ICV
    }
    EXPECT_EQ(in.replay.highest(), 0u) << "a truncated packet moved the window, length " << n;
  }
}

TEST_P(EspFixture, ReasonsForRejection) {
  const auto inner = Ipv4(100);
  const auto esp = SealPacket(inner, 7);
  {
    InboundState in{kSpi, ReplayWindow(64, false)};
    std::vector<std::uint8_t> got;
    EXPECT_EQ(OpenPacket(esp, in, &got), Status::kOk);
    EXPECT_EQ(got, inner);
    EXPECT_EQ(OpenPacket(esp, in), Status::kReplay);
  }
  {
    InboundState in{kSpi + 1, ReplayWindow(64, false)};
    EXPECT_EQ(OpenPacket(esp, in), Status::kUnknownSpi);
  }
  for (std::size_t i : {std::size_t{4}, std::size_t{8}, esp.size() / 2, esp.size() - 1}) {
    InboundState in{kSpi, ReplayWindow(64, false)};
    auto bad = esp;
    bad[i] ^= 0x01;  // sequence number, IV, ciphertext or ICV
    EXPECT_EQ(OpenPacket(bad, in), Status::kBadIcv) << i;
    EXPECT_EQ(in.replay.highest(), 0u) << "a forgery moved the window";
    EXPECT_EQ(OpenPacket(esp, in), Status::kOk) << "the genuine packet after a forgery";
  }
  {
    InboundState in{kSpi, ReplayWindow(64, false)};
    in.replay.Update(1000);
    EXPECT_EQ(OpenPacket(esp, in), Status::kReplay);  // too old
  }
  {
    InboundState in{kSpi, ReplayWindow(64, false)};
    auto bad = esp;
    bad.push_back(0);  // breaks the alignment of the payload
    EXPECT_EQ(OpenPacket(bad, in), Status::kMalformed);
  }
}

TEST_P(EspFixture, ContentChecksAfterDecryption) {
  // A dummy packet (next header 59, RFC 4303 2.6) is dropped silently.
  {
    InboundState in{kSpi, ReplayWindow(64, false)};
    EXPECT_EQ(OpenPacket(SealPacket(Ipv4(40), 1, false, kNextHeaderNone), in), Status::kDummy);
  }
  // Transport-mode next headers (TCP) are not tunnel mode.
  {
    InboundState in{kSpi, ReplayWindow(64, false)};
    EXPECT_EQ(OpenPacket(SealPacket(Ipv4(40), 1, false, 6), in), Status::kMalformed);
  }
  // Next header says IPv6, the packet is IPv4.
  {
    InboundState in{kSpi, ReplayWindow(64, false)};
    EXPECT_EQ(OpenPacket(SealPacket(Ipv4(60), 1, false, kNextHeaderIpv6), in), Status::kMalformed);
  }
  // IPv4 total length larger than what was decrypted.
  {
    auto inner = Ipv4(60);
    inner[3] = 61;
    InboundState in{kSpi, ReplayWindow(64, false)};
    EXPECT_EQ(OpenPacket(SealPacket(inner, 1), in), Status::kMalformed);
  }
  // IPv4 total length smaller: the rest is TFC padding (RFC 4303 2.7) and is cut off.
  {
    auto inner = Ipv4(60);
    inner[3] = 50;
    InboundState in{kSpi, ReplayWindow(64, false)};
    std::vector<std::uint8_t> got;
    EXPECT_EQ(OpenPacket(SealPacket(inner, 1), in, &got), Status::kOk);
    EXPECT_EQ(got.size(), 50u);
  }
}

TEST_P(EspFixture, BadPaddingIsDetected) {
  // Build a packet by hand whose pad bytes are not 1, 2, 3, ... (RFC 4303 2.4).
  const auto& info = crypto::SuiteInfo(GetParam());
  auto inner = Ipv4(33);
  const std::size_t payload = (inner.size() + 2 + info.pad_align - 1) / info.pad_align * info.pad_align;
  const std::size_t pad = payload - inner.size() - 2;
  ASSERT_GT(pad, 0u);
  std::vector<std::uint8_t> pkt(kEspHeaderLen + info.iv_len + payload + info.icv_len);
  std::uint8_t* p = pkt.data();
  p[0] = kSpi >> 24, p[1] = (kSpi >> 16) & 0xFF, p[2] = (kSpi >> 8) & 0xFF, p[3] = kSpi & 0xFF;
  p[7] = 1;  // sequence number 1
  std::uint8_t* iv = p + kEspHeaderLen;
  for (std::size_t i = 0; i < info.iv_len; ++i) iv[i] = static_cast<std::uint8_t>(0xA0 + i);
  std::uint8_t* body = iv + info.iv_len;
  std::memcpy(body, inner.data(), inner.size());
  for (std::size_t i = 0; i < pad; ++i) body[inner.size() + i] = static_cast<std::uint8_t>(i + 1);
  body[inner.size() + pad - 1] ^= 0x80;  // the last pad byte is wrong
  body[payload - 2] = static_cast<std::uint8_t>(pad);
  body[payload - 1] = kNextHeaderIpv4;
  std::uint8_t* icv = body + payload;
  if (info.aead) {
    const std::uint8_t aad[8] = {p[0], p[1], p[2], p[3], 0, 0, 0, 1};
    cipher_.SealAead(mgr(), iv, aad, {body, payload}, icv);
  } else {
    cipher_.EncryptCbc(mgr(), iv, {body, payload});
    cipher_.Mac(mgr(), {p, kEspHeaderLen + info.iv_len + payload}, icv);
  }
  InboundState in{kSpi, ReplayWindow(64, false)};
  EXPECT_EQ(OpenPacket(pkt, in), Status::kBadPadding);
  // Authentic, so its sequence number is used up.
  EXPECT_EQ(in.replay.highest(), 1u);
}

TEST_P(EspFixture, SequenceNumbersNeverWrap) {
  const auto inner = Ipv4(40);
  std::vector<std::uint8_t> buf(kSealHeadroom + inner.size() + kSealTailroom);
  auto seal = [&](OutboundState& out) {
    std::memcpy(buf.data() + kSealHeadroom, inner.data(), inner.size());
    PacketView pkt{buf, kSealHeadroom, inner.size()};
    return Seal(mgr(), cipher_, out, kNextHeaderIpv4, pkt);
  };
  OutboundState out32{kSpi, false, 0xFFFFFFFFull};
  EXPECT_EQ(seal(out32), Status::kOk);  // 2^32 - 1 is the last one sent
  EXPECT_EQ(seal(out32), Status::kSeqExhausted);
  EXPECT_EQ(seal(out32), Status::kSeqExhausted);

  OutboundState out64{kSpi, true, 0xFFFFFFFFull};
  EXPECT_EQ(seal(out64), Status::kOk);
  EXPECT_EQ(out64.next_seq, 1ull << 32);  // ESN carries on past 2^32
  EXPECT_EQ(seal(out64), Status::kOk);
  out64.next_seq = ~0ull;
  EXPECT_EQ(seal(out64), Status::kOk);  // 2^64 - 1
  EXPECT_EQ(seal(out64), Status::kSeqExhausted);
}

// Copies of one SA on several data-path threads share one counter (shared_next_seq): every
// number is taken once, none after the last, and the counter never wraps back to 1.
TEST_P(EspFixture, SharedSequenceCounterIsTakenOnceAndStopsAtTheLast) {
  const auto inner = Ipv4(40);
  std::vector<std::uint8_t> buf(kSealHeadroom + inner.size() + kSealTailroom);
  auto seal = [&](OutboundState& out) {
    std::memcpy(buf.data() + kSealHeadroom, inner.data(), inner.size());
    PacketView pkt{buf, kSealHeadroom, inner.size()};
    return Seal(mgr(), cipher_, out, kNextHeaderIpv4, pkt);
  };
  std::atomic<std::uint64_t> shared{1};
  OutboundState a{kSpi, false, 1, &shared}, b{kSpi, false, 1, &shared};
  EXPECT_EQ(seal(a), Status::kOk);
  EXPECT_EQ(buf[kSealHeadroom - 8 - crypto::SuiteInfo(GetParam()).iv_len + 7], 1);
  EXPECT_EQ(seal(b), Status::kOk);
  EXPECT_EQ(buf[kSealHeadroom - 8 - crypto::SuiteInfo(GetParam()).iv_len + 7], 2) << "b repeated a's number";
  EXPECT_EQ(shared.load(), 3u);
  EXPECT_EQ(a.next_seq, 1u) << "the private counter is not used";
  shared = 0xFFFFFFFFull;
  EXPECT_EQ(seal(b), Status::kOk);  // 2^32 - 1, the last without ESN
  EXPECT_EQ(seal(a), Status::kSeqExhausted);
  EXPECT_EQ(seal(b), Status::kSeqExhausted);
  EXPECT_EQ(shared.load(), 1ull << 32) << "the counter must stay at the first number it cannot give";
  std::atomic<std::uint64_t> shared64{~0ull};
  OutboundState e{kSpi, true, 1, &shared64};
  EXPECT_EQ(seal(e), Status::kOk);  // 2^64 - 1
  EXPECT_EQ(seal(e), Status::kSeqExhausted);
  EXPECT_EQ(seal(e), Status::kSeqExhausted);
  EXPECT_EQ(shared64.load(), 0u);
  // A packet refused for want of room takes no number.
  std::vector<std::uint8_t> tight(inner);
  PacketView none{tight, 0, tight.size()};
  shared = 5;
  EXPECT_EQ(Seal(mgr(), cipher_, a, kNextHeaderIpv4, none), Status::kNoRoom);
  EXPECT_EQ(shared.load(), 5u);
}

TEST_P(EspFixture, IvIsNeverReusedAcrossPackets) {
  const auto& info = crypto::SuiteInfo(GetParam());
  const auto a = SealPacket(Ipv4(40), 1);
  const auto b = SealPacket(Ipv4(40), 2);
  EXPECT_NE(std::vector<std::uint8_t>(a.begin() + 8, a.begin() + 8 + info.iv_len),
            std::vector<std::uint8_t>(b.begin() + 8, b.begin() + 8 + info.iv_len));
}

TEST_P(EspFixture, NoRoomIsReported) {
  auto inner = Ipv4(40);
  std::vector<std::uint8_t> buf(inner);
  PacketView pkt{buf, 0, buf.size()};
  OutboundState out{kSpi, false, 1};
  EXPECT_EQ(Seal(mgr(), cipher_, out, kNextHeaderIpv4, pkt), Status::kNoRoom);
  EXPECT_EQ(out.next_seq, 1u);  // nothing consumed
}

INSTANTIATE_TEST_SUITE_P(AllSuites, EspFixture,
                         ::testing::Values(EspSuite::kAesGcm128, EspSuite::kAesGcm256,
                                           EspSuite::kChaCha20Poly1305,
                                           EspSuite::kAesCbc128HmacSha256,
                                           EspSuite::kAesCbc256HmacSha256,
                                           EspSuite::kAesCbc128HmacSha1,
                                           EspSuite::kAesCbc256HmacSha1),
                         [](const auto& info) {
                           std::string name(crypto::SuiteInfo(info.param).name);
                           std::erase(name, '-');
                           return name;
                         });

TEST(UdpEncap, Classify) {
  std::span<const std::uint8_t> inner;
  const std::uint8_t keepalive[] = {0xFF};
  EXPECT_EQ(ClassifyUdpEncap(keepalive, inner), UdpPayload::kKeepalive);
  const std::uint8_t ike[] = {0, 0, 0, 0, 1, 2, 3};
  EXPECT_EQ(ClassifyUdpEncap(ike, inner), UdpPayload::kIke);
  EXPECT_EQ(inner.size(), 3u);
  EXPECT_EQ(inner.data(), ike + 4);
  const std::uint8_t esp[] = {0, 0, 1, 0, 0, 0, 0, 1};
  EXPECT_EQ(ClassifyUdpEncap(esp, inner), UdpPayload::kEsp);
  EXPECT_EQ(inner.size(), 8u);
  const std::uint8_t short_esp[] = {0, 0, 1, 0, 0};
  EXPECT_EQ(ClassifyUdpEncap(short_esp, inner), UdpPayload::kMalformed);
  const std::uint8_t tiny[] = {0, 0};
  EXPECT_EQ(ClassifyUdpEncap(tiny, inner), UdpPayload::kMalformed);
  EXPECT_EQ(ClassifyUdpEncap({}, inner), UdpPayload::kMalformed);
}

}  // namespace
}  // namespace spigot::esp
