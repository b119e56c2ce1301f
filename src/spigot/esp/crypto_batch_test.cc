// esp::CryptoBatch against the per-packet path: for every suite (the CBC + HMAC ones through
// the multi-buffer scheduler, the AEADs on their direct calls), with and without ESN, every
// batch size from 1 to kCapacity and packets of different lengths, sealing in a batch gives
// the same bytes as esp::Seal one at a time, and opening in a batch gives what esp::Open
// gives; a tampered packet fails alone, in a batch of several SAs and suites.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "spigot/esp/esp.h"

namespace spigot::esp {
// Named: a unity build puts this file beside esp_test.cc and esp_kat_test.cc.
namespace crypto_batch_test {
namespace {

using crypto::EspSuite;

constexpr std::uint32_t kSpi = 0x0BA7C400;

constexpr EspSuite kAllSuites[] = {EspSuite::kAesGcm128,          EspSuite::kAesGcm256,
                                   EspSuite::kChaCha20Poly1305,    EspSuite::kAesCbc128HmacSha256,
                                   EspSuite::kAesCbc256HmacSha256, EspSuite::kAesCbc128HmacSha1,
                                   EspSuite::kAesCbc256HmacSha1};

crypto::ImbManager& Mgr() { return crypto::ImbManager::ForThisThread(); }

// Inner packet number `i`: IPv4, or IPv6 for every third, 20 to 1400 bytes.
std::vector<std::uint8_t> Inner(std::size_t i) {
  const std::size_t len = 40 + (i * 397) % 1361;
  std::vector<std::uint8_t> p(len);
  for (std::size_t k = 0; k < len; ++k) p[k] = static_cast<std::uint8_t>(k * 31 + i);
  if (i % 3 == 2) {
    p[0] = 0x60;
    p[4] = static_cast<std::uint8_t>((len - 40) >> 8);
    p[5] = static_cast<std::uint8_t>(len - 40);
  } else {
    p[0] = 0x45;
    p[2] = static_cast<std::uint8_t>(len >> 8);
    p[3] = static_cast<std::uint8_t>(len);
  }
  return p;
}

std::uint8_t NextHeader(const std::vector<std::uint8_t>& inner) {
  return (inner[0] >> 4) == 6 ? kNextHeaderIpv6 : kNextHeaderIpv4;
}

struct Keyed {
  explicit Keyed(EspSuite suite, std::uint8_t seed = 1) {
    std::vector<std::uint8_t> key(crypto::SuiteInfo(suite).keymat_len());
    for (std::size_t i = 0; i < key.size(); ++i) key[i] = static_cast<std::uint8_t>(i * 13 + seed);
    EXPECT_TRUE(cipher.Init(Mgr(), suite, key));
  }
  crypto::EspCipher cipher;
};

// A buffer holding one packet with seal head- and tailroom.
struct Buffer {
  explicit Buffer(const std::vector<std::uint8_t>& inner)
      : bytes(kSealHeadroom + inner.size() + kSealTailroom) {
    std::memcpy(bytes.data() + kSealHeadroom, inner.data(), inner.size());
    pkt = PacketView{bytes, kSealHeadroom, inner.size()};
  }
  std::vector<std::uint8_t> View() const {
    return {pkt.bytes().begin(), pkt.bytes().end()};
  }
  std::vector<std::uint8_t> bytes;
  PacketView pkt;
};

class CryptoBatchSuite : public ::testing::TestWithParam<std::tuple<EspSuite, bool>> {};

// Every batch size 1..64 in turn, one SA, sequence numbers continuing from batch to batch
// (with ESN starting just below 2^32, so the high half changes within the run).
TEST_P(CryptoBatchSuite, SealAndOpenEqualThePerPacketPathForEveryBatchSize) {
  const auto [suite, esn] = GetParam();
  Keyed k(suite);
  const std::uint64_t first = esn ? 0xFFFFFC00u : 1;  // 2,080 packets cross 2^32
  OutboundState batch_out{kSpi, esn, first}, ref_out{kSpi, esn, first};
  InboundState batch_in{kSpi, ReplayWindow(4096, esn)}, ref_in{kSpi, ReplayWindow(4096, esn)};
  std::size_t next = 0;
  CryptoBatch batch;
  for (std::size_t size = 1; size <= CryptoBatch::kCapacity; ++size) {
    std::vector<Buffer> sealed, reference, opened;
    sealed.reserve(size);
    reference.reserve(size);
    opened.reserve(size);
    std::vector<CryptoOp> ops(size);
    batch.Clear();
    for (std::size_t i = 0; i < size; ++i) {
      const auto inner = Inner(next + i);
      sealed.emplace_back(inner);
      reference.emplace_back(inner);
    }
    for (std::size_t i = 0; i < size; ++i) {
      const auto nh = NextHeader(Inner(next + i));
      ASSERT_EQ(SealPrepare(k.cipher, batch_out, nh, sealed[i].pkt, ops[i]), Status::kOk);
      ASSERT_TRUE(batch.Add(k.cipher, ops[i], sealed[i].pkt.buffer.data() + sealed[i].pkt.offset));
      ASSERT_EQ(Seal(Mgr(), k.cipher, ref_out, nh, reference[i].pkt), Status::kOk);
    }
    EXPECT_EQ(batch.full(), size == CryptoBatch::kCapacity);
    batch.Run(Mgr());
    for (std::size_t i = 0; i < size; ++i) {
      EXPECT_TRUE(batch.ok(i));
      ASSERT_EQ(sealed[i].View(), reference[i].View()) << "batch of " << size << ", packet " << i;
    }
    // Open the batch-sealed packets: in a batch, and one at a time for reference.
    batch.Clear();
    for (std::size_t i = 0; i < size; ++i) {
      opened.emplace_back(sealed[i].View());
      opened[i].pkt = PacketView{opened[i].bytes, 0, sealed[i].pkt.length};
      std::memcpy(opened[i].bytes.data(), sealed[i].pkt.bytes().data(), sealed[i].pkt.length);
      ASSERT_EQ(OpenPrepare(k.cipher, batch_in, opened[i].pkt, ops[i]), Status::kOk);
      ASSERT_TRUE(batch.Add(k.cipher, ops[i], opened[i].bytes.data()));
    }
    batch.Run(Mgr());
    for (std::size_t i = 0; i < size; ++i) {
      ASSERT_TRUE(batch.ok(i)) << "batch of " << size << ", packet " << i;
      std::uint8_t nh = 0;
      std::uint64_t seq = 0;
      ASSERT_EQ(OpenFinish(batch_in, ops[i], opened[i].pkt, nh, &seq), Status::kOk);
      EXPECT_EQ(opened[i].View(), Inner(next + i));
      EXPECT_EQ(seq, first + next + i);
      PacketView ref = reference[i].pkt;
      std::uint8_t ref_nh = 0;
      ASSERT_EQ(Open(Mgr(), k.cipher, ref_in, ref, ref_nh), Status::kOk);
      EXPECT_EQ(nh, ref_nh);
      EXPECT_EQ(opened[i].View(), std::vector<std::uint8_t>(ref.bytes().begin(), ref.bytes().end()));
    }
    EXPECT_EQ(batch_in.replay.highest(), ref_in.replay.highest());
    next += size;
  }
  EXPECT_EQ(batch_out.next_seq, ref_out.next_seq);
}

INSTANTIATE_TEST_SUITE_P(AllSuites, CryptoBatchSuite,
                         ::testing::Combine(::testing::ValuesIn(kAllSuites), ::testing::Bool()),
                         [](const auto& info) {
                           std::string name(crypto::SuiteInfo(std::get<0>(info.param)).name);
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name + (std::get<1>(info.param) ? "_esn" : "");
                         });

// One batch over several SAs of different suites and keys; one packet in the middle has a
// flipped bit (each position class in turn: sequence number, IV, ciphertext, ICV): only it
// fails, its neighbours open, and it leaves its bytes for nobody.
TEST(CryptoBatch, ATamperedPacketFailsAloneInAMixedBatch) {
  const EspSuite suites[] = {EspSuite::kAesCbc256HmacSha256, EspSuite::kAesCbc128HmacSha1,
                             EspSuite::kAesGcm128, EspSuite::kAesCbc128HmacSha256,
                             EspSuite::kAesCbc256HmacSha1};
  std::vector<std::unique_ptr<Keyed>> sas;
  for (std::size_t s = 0; s < std::size(suites); ++s)
    sas.push_back(std::make_unique<Keyed>(suites[s], static_cast<std::uint8_t>(s + 3)));
  constexpr std::size_t kCount = 41;
  constexpr std::size_t kTampered = 20;
  for (int where = 0; where < 4; ++where) {
    std::vector<OutboundState> outs;
    std::vector<InboundState> ins;
    for (std::size_t s = 0; s < sas.size(); ++s) {
      outs.push_back(OutboundState{kSpi + static_cast<std::uint32_t>(s), s % 2 == 1, 1});
      ins.push_back(InboundState{kSpi + static_cast<std::uint32_t>(s), ReplayWindow(1024, s % 2 == 1)});
    }
    std::vector<Buffer> pkts;
    for (std::size_t i = 0; i < kCount; ++i) {
      const auto inner = Inner(i);
      pkts.emplace_back(inner);
      const std::size_t s = i % sas.size();
      ASSERT_EQ(Seal(Mgr(), sas[s]->cipher, outs[s], NextHeader(inner), pkts[i].pkt), Status::kOk);
    }
    const std::size_t ts = kTampered % sas.size();
    const auto& info = crypto::SuiteInfo(suites[ts]);
    const std::size_t positions[] = {4, kEspHeaderLen + 1, kEspHeaderLen + info.iv_len + 5,
                                     pkts[kTampered].pkt.length - 1};
    pkts[kTampered].pkt.bytes()[positions[where]] ^= 0x40;
    CryptoBatch batch;
    std::vector<CryptoOp> ops(kCount);
    for (std::size_t i = 0; i < kCount; ++i) {
      const std::size_t s = i % sas.size();
      ASSERT_EQ(OpenPrepare(sas[s]->cipher, ins[s], pkts[i].pkt, ops[i]), Status::kOk);
      ASSERT_TRUE(batch.Add(sas[s]->cipher, ops[i], pkts[i].pkt.buffer.data() + pkts[i].pkt.offset));
    }
    batch.Run(Mgr());
    for (std::size_t i = 0; i < kCount; ++i) {
      const std::size_t s = i % sas.size();
      if (i == kTampered) {
        EXPECT_FALSE(batch.ok(i)) << "tampered at " << positions[where];
        EXPECT_EQ(OpenFailed(ins[s], ops[i]), Status::kBadIcv);
        continue;
      }
      ASSERT_TRUE(batch.ok(i)) << "packet " << i << ", tampered at " << positions[where];
      std::uint8_t nh = 0;
      ASSERT_EQ(OpenFinish(ins[s], ops[i], pkts[i].pkt, nh), Status::kOk);
      EXPECT_EQ(pkts[i].View(), Inner(i));
    }
  }
}

// A duplicate inside one batch passes the check before the cipher (the window has not moved
// yet); finishing in order makes the second copy a replay, authentic or not.
TEST(CryptoBatch, DuplicatesWithinABatchAreReplaysWhenFinishedInOrder) {
  Keyed k(EspSuite::kAesCbc256HmacSha256);
  OutboundState out{kSpi, false, 1};
  Buffer genuine(Inner(1));
  ASSERT_EQ(Seal(Mgr(), k.cipher, out, kNextHeaderIpv4, genuine.pkt), Status::kOk);
  const auto wire = genuine.View();
  std::vector<std::vector<std::uint8_t>> copies = {wire, wire, wire};
  copies[2][40] ^= 1;  // a forgery with the same sequence number
  InboundState in{kSpi, ReplayWindow(64, false)};
  CryptoBatch batch;
  std::vector<PacketView> pkts;
  std::vector<CryptoOp> ops(copies.size());
  for (std::size_t i = 0; i < copies.size(); ++i) {
    pkts.push_back(PacketView{copies[i], 0, copies[i].size()});
    ASSERT_EQ(OpenPrepare(k.cipher, in, pkts[i], ops[i]), Status::kOk);
    batch.Add(k.cipher, ops[i], copies[i].data());
  }
  batch.Run(Mgr());
  std::uint8_t nh;
  ASSERT_TRUE(batch.ok(0));
  EXPECT_EQ(OpenFinish(in, ops[0], pkts[0], nh), Status::kOk);
  ASSERT_TRUE(batch.ok(1));
  EXPECT_EQ(OpenFinish(in, ops[1], pkts[1], nh), Status::kReplay);
  ASSERT_FALSE(batch.ok(2));
  // Open() one at a time would have refused it at its replay check, before the ICV.
  EXPECT_EQ(OpenFailed(in, ops[2]), Status::kReplay);
}

TEST(CryptoBatch, RefusesBeyondItsCapacity) {
  Keyed k(EspSuite::kAesCbc128HmacSha256);
  CryptoBatch batch;
  std::vector<std::uint8_t> buf(256);
  CryptoOp op{true, false, kSpi, 1, 24, 48};
  for (std::size_t i = 0; i < CryptoBatch::kCapacity; ++i) ASSERT_TRUE(batch.Add(k.cipher, op, buf.data()));
  EXPECT_TRUE(batch.full());
  EXPECT_FALSE(batch.Add(k.cipher, op, buf.data()));
  batch.Clear();
  EXPECT_EQ(batch.size(), 0u);
}

}  // namespace
}  // namespace crypto_batch_test
}  // namespace spigot::esp
