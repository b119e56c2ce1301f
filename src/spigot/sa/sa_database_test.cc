#include "spigot/sa/sa_database.h"

#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <vector>

#include "spigot/crypto/random.h"
#include "spigot/esp/esp.h"

namespace spigot::sa {
namespace {

using std::chrono::seconds;
constexpr TimePoint kStart = TimePoint{} + seconds(1'000);
constexpr std::size_t kKeymatLen = 16 + 4;  // AES-GCM-128 key || salt

struct Keys {
  std::array<std::uint8_t, kKeymatLen> in;
  std::array<std::uint8_t, kKeymatLen> out;
};

Keys RandomKeys() {
  Keys k;
  crypto::RandomBytes(k.in);
  crypto::RandomBytes(k.out);
  return k;
}

ChildSaParams Params(std::uint32_t inbound_spi, std::uint32_t outbound_spi, const Keys& keys) {
  ChildSaParams p;
  p.inbound_spi = inbound_spi;
  p.outbound_spi = outbound_spi;
  p.inbound_keymat = keys.in;
  p.outbound_keymat = keys.out;
  return p;
}

// Allocates and installs a CHILD SA; returns its inbound SPI.
std::uint32_t InstallOne(SaDatabase& db, const Keys& keys, SpiPurpose purpose = SpiPurpose::kNew,
                         std::uint32_t rekey_of = 0) {
  const SpiAllocation a = db.AllocateSpi(purpose);
  EXPECT_EQ(a.status, SpiStatus::kOk);
  ChildSaParams p = Params(a.spi, 0x10000 + a.spi % 1000, keys);
  p.rekey_of = rekey_of;
  EXPECT_EQ(db.Install(p, kStart), InstallStatus::kOk);
  return a.spi;
}

TEST(SaDatabaseTest, InstallLookupRemove) {
  SaDatabase db;
  db.SetSpiLimits(100, 10);
  const Keys keys = RandomKeys();
  const SpiAllocation a = db.AllocateSpi(SpiPurpose::kNew);
  ASSERT_EQ(a.status, SpiStatus::kOk);
  EXPECT_EQ(db.LookupInbound(a.spi), nullptr);  // reserved, not installed
  ASSERT_EQ(db.Install(Params(a.spi, 0xABCD0001, keys), kStart), InstallStatus::kOk);
  ChildSa* sa = db.LookupInbound(a.spi);
  ASSERT_NE(sa, nullptr);
  EXPECT_EQ(sa->inbound_spi(), a.spi);
  EXPECT_EQ(sa->outbound_spi(), 0xABCD0001u);
  EXPECT_EQ(sa->inbound.replay.size(), 1024u);
  EXPECT_EQ(sa->outbound.next_seq, 1u);
  EXPECT_EQ(sa->installed_at(), kStart);
  EXPECT_TRUE(std::equal(keys.in.begin(), keys.in.end(), sa->keymat(Direction::kInbound).begin()));
  EXPECT_EQ(db.size(), 1u);
  EXPECT_EQ(db.Install(Params(a.spi, 0xABCD0001, keys), kStart), InstallStatus::kSpiNotReserved);
  EXPECT_TRUE(db.Remove(a.spi));
  EXPECT_EQ(db.LookupInbound(a.spi), nullptr);
  EXPECT_FALSE(db.Remove(a.spi));
  EXPECT_EQ(db.size(), 0u);
  EXPECT_EQ(db.spi_pool().in_use(), 0u);
}

TEST(SaDatabaseTest, InstallValidates) {
  SaDatabase db;
  db.SetSpiLimits(10, 0);
  const Keys keys = RandomKeys();
  const std::uint32_t spi = db.AllocateSpi(SpiPurpose::kNew).spi;
  EXPECT_EQ(db.Install(Params(spi + 1, 0x1000, keys), kStart), InstallStatus::kSpiNotReserved);
  EXPECT_EQ(db.Install(Params(spi, 255, keys), kStart), InstallStatus::kBadOutboundSpi);
  ChildSaParams p = Params(spi, 0x1000, keys);
  p.outbound_keymat = std::span(keys.out).first(16);
  EXPECT_EQ(db.Install(p, kStart), InstallStatus::kBadKeymat);
  p = Params(spi, 0x1000, keys);
  p.suite = crypto::EspSuite::kAesGcm256;  // wants 36 bytes
  EXPECT_EQ(db.Install(p, kStart), InstallStatus::kBadKeymat);
  p = Params(spi, 0x1000, keys);
  p.lifetimes.soft.packets = 10;
  p.lifetimes.hard.packets = 10;
  EXPECT_EQ(db.Install(p, kStart), InstallStatus::kBadLifetimes);
  p = Params(spi, 0x1000, keys);
  p.rekey_of = 0x12345678;
  EXPECT_EQ(db.Install(p, kStart), InstallStatus::kUnknownPredecessor);
  EXPECT_EQ(db.size(), 0u);
  EXPECT_TRUE(db.ReleaseSpi(spi));
  EXPECT_FALSE(db.ReleaseSpi(spi));
  EXPECT_EQ(db.spi_pool().in_use(), 0u);
}

TEST(SaDatabaseTest, RekeyInstallsTheNewPairWhileTheOldStays) {
  SaDatabase db;
  db.SetSpiLimits(2, 1);  // one CHILD SA plus its rekey: the reserve is what makes it fit
  const Keys keys = RandomKeys();
  const std::uint32_t old_spi = InstallOne(db, keys);
  EXPECT_EQ(db.AllocateSpi(SpiPurpose::kNew).status, SpiStatus::kNewRefused);
  const std::uint32_t new_spi = InstallOne(db, RandomKeys(), SpiPurpose::kRekey, old_spi);
  ASSERT_NE(db.LookupInbound(old_spi), nullptr);  // make-before-break
  ASSERT_NE(db.LookupInbound(new_spi), nullptr);
  EXPECT_EQ(db.LookupInbound(old_spi)->rekeyed_by(), new_spi);
  EXPECT_EQ(db.LookupInbound(new_spi)->rekey_of(), old_spi);
  EXPECT_EQ(db.size(), 2u);
  ASSERT_TRUE(db.Remove(old_spi));
  EXPECT_EQ(db.LookupInbound(new_spi)->rekey_of(), 0u);
  EXPECT_EQ(db.size(), 1u);
}

TEST(SaDatabaseTest, ForEachVisitsInstalledOnly) {
  SaDatabase db;
  db.SetSpiLimits(1000, 0);
  std::vector<std::uint32_t> spis;
  for (int i = 0; i < 100; ++i) spis.push_back(InstallOne(db, RandomKeys()));
  const std::uint32_t reserved = db.AllocateSpi(SpiPurpose::kNew).spi;
  for (int i = 0; i < 100; i += 2) db.Remove(spis[static_cast<std::size_t>(i)]);
  std::vector<std::uint32_t> seen;
  db.ForEach([&](const ChildSa& sa) { seen.push_back(sa.inbound_spi()); });
  EXPECT_EQ(seen.size(), 50u);
  EXPECT_EQ(db.size(), 50u);
  for (std::uint32_t spi : seen) EXPECT_NE(spi, reserved);
}

// ESP between two gateways whose databases each cache one expanded key: every Cipher() call
// evicts the previous one, and the traffic still flows.
TEST(SaDatabaseTest, EvictedSasReexpandTransparently) {
  crypto::ImbManager mgr;
  SaDatabase a(1), b(1);
  a.SetSpiLimits(100, 0);
  b.SetSpiLimits(100, 0);
  constexpr int kPairs = 8;
  std::vector<std::uint32_t> a_in, b_in;
  std::vector<Keys> keys;
  for (int i = 0; i < kPairs; ++i) {
    a_in.push_back(a.AllocateSpi(SpiPurpose::kNew).spi);
    b_in.push_back(b.AllocateSpi(SpiPurpose::kNew).spi);
    keys.push_back(RandomKeys());
    const Keys& k = keys.back();
    ChildSaParams pa = Params(a_in.back(), b_in.back(), k);  // a sends with k.out
    const Keys mirrored{k.out, k.in};
    ChildSaParams pb = Params(b_in.back(), a_in.back(), mirrored);
    ASSERT_EQ(a.Install(pa, kStart), InstallStatus::kOk);
    ASSERT_EQ(b.Install(pb, kStart), InstallStatus::kOk);
  }
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < kPairs; ++i) {
      std::array<std::uint8_t, 256> buf{};
      const std::size_t inner_len = 40;
      std::uint8_t* inner = buf.data() + esp::kSealHeadroom;
      inner[0] = 0x45;  // IPv4, IHL 5
      inner[3] = inner_len;
      esp::PacketView pkt{buf, esp::kSealHeadroom, inner_len};
      ChildSa* sa_a = a.LookupInbound(a_in[static_cast<std::size_t>(i)]);
      ASSERT_NE(sa_a, nullptr);
      const crypto::EspCipher* seal = a.Cipher(*sa_a, Direction::kOutbound, mgr);
      ASSERT_NE(seal, nullptr);
      ASSERT_EQ(esp::Seal(mgr, *seal, sa_a->outbound, esp::kNextHeaderIpv4, pkt), esp::Status::kOk);
      std::uint32_t spi = 0;
      ASSERT_TRUE(esp::PeekSpi(pkt.bytes(), spi));
      ChildSa* sa_b = b.LookupInbound(spi);
      ASSERT_NE(sa_b, nullptr);
      const crypto::EspCipher* open = b.Cipher(*sa_b, Direction::kInbound, mgr);
      ASSERT_NE(open, nullptr);
      std::uint8_t next_header = 0;
      ASSERT_EQ(esp::Open(mgr, *open, sa_b->inbound, pkt, next_header), esp::Status::kOk)
          << "round " << round << " pair " << i;
      EXPECT_EQ(pkt.length, inner_len);
      EXPECT_EQ(sa_b->Count(Direction::kInbound, pkt.length), LifetimeAction::kNone);
    }
  }
  EXPECT_EQ(a.cipher_cache().size(), 1u);
  EXPECT_EQ(b.cipher_cache().size(), 1u);
  EXPECT_EQ(a.cipher_cache().stats().misses, 3u * kPairs);
  EXPECT_EQ(a.cipher_cache().stats().evictions, 3u * kPairs - 1);
}

TEST(SaDatabaseTest, RemoveReleasesCachedKeys) {
  crypto::ImbManager mgr;
  SaDatabase db(4);
  db.SetSpiLimits(10, 0);
  const std::uint32_t spi = InstallOne(db, RandomKeys());
  ChildSa* sa = db.LookupInbound(spi);
  ASSERT_NE(db.Cipher(*sa, Direction::kInbound, mgr), nullptr);
  ASSERT_NE(db.Cipher(*sa, Direction::kOutbound, mgr), nullptr);
  ASSERT_NE(db.Cipher(*sa, Direction::kOutbound, mgr), nullptr);
  EXPECT_EQ(db.cipher_cache().size(), 2u);
  EXPECT_EQ(db.cipher_cache().stats().hits, 1u);
  db.Remove(spi);
  EXPECT_EQ(db.cipher_cache().size(), 0u);
}

// The cold record must stay small: the 1 KiB-per-CHILD-SA budget also pays for the replay
// bitmap (256 bytes at window 1024) and the pool slot.
TEST(SaDatabaseTest, RecordSize) { EXPECT_LE(sizeof(ChildSa), 320u); }

}  // namespace
}  // namespace spigot::sa
