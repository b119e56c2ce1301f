#include "spigot/sa/cipher_cache.h"

#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "spigot/crypto/random.h"

namespace spigot::sa {
namespace {

using crypto::EspSuite;
constexpr std::size_t kGcm128Keymat = 16 + 4;

struct Owner {
  std::array<std::uint8_t, kGcm128Keymat> keymat;
  std::uint32_t handle = CipherCache::kNoEntry;
};

std::vector<Owner> MakeOwners(std::size_t n) {
  std::vector<Owner> owners(n);
  for (Owner& o : owners) crypto::RandomBytes(o.keymat);
  return owners;
}

// Ciphertext and tag of a fixed plaintext: equal iff the expanded keys are.
std::vector<std::uint8_t> Fingerprint(crypto::ImbManager& mgr, const crypto::EspCipher& c) {
  std::vector<std::uint8_t> out(32 + 16, 0x5A);
  const std::uint8_t iv[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  const std::uint8_t aad[8] = {};
  c.SealAead(mgr, iv, aad, std::span(out).first(32), out.data() + 32);
  return out;
}

std::vector<std::uint8_t> Reference(crypto::ImbManager& mgr, const Owner& o) {
  crypto::EspCipher c;
  EXPECT_TRUE(c.Init(mgr, EspSuite::kAesGcm128, o.keymat));
  return Fingerprint(mgr, c);
}

TEST(CipherCacheTest, BoundIsRespectedAndEvictedOwnersReexpand) {
  crypto::ImbManager mgr;
  CipherCache cache(4);
  std::vector<Owner> owners = MakeOwners(10);
  for (int round = 0; round < 3; ++round) {
    for (Owner& o : owners) {
      const crypto::EspCipher* c = cache.Get(o.handle, mgr, EspSuite::kAesGcm128, o.keymat);
      ASSERT_NE(c, nullptr);
      EXPECT_EQ(Fingerprint(mgr, *c), Reference(mgr, o));
      EXPECT_LE(cache.size(), 4u);
    }
  }
  std::size_t holding = 0;
  for (const Owner& o : owners) holding += o.handle != CipherCache::kNoEntry;
  EXPECT_EQ(holding, 4u);  // evicted owners had their handle reset
  const CipherCacheStats st = cache.stats();
  EXPECT_EQ(st.misses, 30u);  // a cyclic scan larger than the cache misses every time
  EXPECT_EQ(st.evictions, 26u);
  EXPECT_EQ(st.hits, 0u);
}

TEST(CipherCacheTest, ClockKeepsAReferencedEntry) {
  crypto::ImbManager mgr;
  CipherCache cache(4);
  std::vector<Owner> owners = MakeOwners(50);
  Owner& hot = owners[0];
  for (Owner& o : owners) {
    ASSERT_NE(cache.Get(hot.handle, mgr, EspSuite::kAesGcm128, hot.keymat), nullptr);
    ASSERT_NE(cache.Get(o.handle, mgr, EspSuite::kAesGcm128, o.keymat), nullptr);
  }
  EXPECT_EQ(cache.stats().misses, 50u);  // the hot owner expanded once
  EXPECT_NE(hot.handle, CipherCache::kNoEntry);
}

TEST(CipherCacheTest, ReleaseWipesAndFreesTheEntry) {
  crypto::ImbManager mgr;
  CipherCache cache(2);
  std::vector<Owner> owners = MakeOwners(3);
  cache.Get(owners[0].handle, mgr, EspSuite::kAesGcm128, owners[0].keymat);
  cache.Get(owners[1].handle, mgr, EspSuite::kAesGcm128, owners[1].keymat);
  cache.Release(owners[0].handle);
  EXPECT_EQ(owners[0].handle, CipherCache::kNoEntry);
  EXPECT_EQ(cache.size(), 1u);
  cache.Get(owners[2].handle, mgr, EspSuite::kAesGcm128, owners[2].keymat);
  EXPECT_EQ(cache.stats().evictions, 0u);  // took the released entry
  EXPECT_NE(owners[1].handle, CipherCache::kNoEntry);
}

TEST(CipherCacheTest, BadKeymatIsCountedNotCached) {
  crypto::ImbManager mgr;
  CipherCache cache(2);
  std::uint32_t handle = CipherCache::kNoEntry;
  const std::uint8_t short_key[10] = {};
  EXPECT_EQ(cache.Get(handle, mgr, EspSuite::kAesGcm128, short_key), nullptr);
  EXPECT_EQ(handle, CipherCache::kNoEntry);
  EXPECT_EQ(cache.stats().expand_failures, 1u);
  EXPECT_EQ(cache.size(), 0u);
}

TEST(CipherCacheTest, LoweringCapacityEvictsPastTheBound) {
  crypto::ImbManager mgr;
  CipherCache cache(8);
  std::vector<Owner> owners = MakeOwners(8);
  for (Owner& o : owners) cache.Get(o.handle, mgr, EspSuite::kAesGcm128, o.keymat);
  cache.SetCapacity(3);
  EXPECT_EQ(cache.size(), 3u);
  std::size_t holding = 0;
  for (const Owner& o : owners) holding += o.handle != CipherCache::kNoEntry;
  EXPECT_EQ(holding, 3u);
  for (Owner& o : owners) {
    const crypto::EspCipher* c = cache.Get(o.handle, mgr, EspSuite::kAesGcm128, o.keymat);
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(Fingerprint(mgr, *c), Reference(mgr, o));
  }
  EXPECT_LE(cache.size(), 3u);
}

}  // namespace
}  // namespace spigot::sa
