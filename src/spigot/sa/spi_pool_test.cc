#include "spigot/sa/spi_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <set>
#include <unordered_set>
#include <vector>

namespace spigot::sa {
namespace {

// Fixed keys make the statistical tests reproducible; other tests use random keys.
constexpr SpiPool::RoundKeys kKeys = {0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344};

std::vector<std::uint32_t> AllocateActive(SpiPool& pool, std::size_t n,
                                          SpiPurpose purpose = SpiPurpose::kNew) {
  std::vector<std::uint32_t> spis;
  spis.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const SpiAllocation a = pool.Allocate(purpose);
    EXPECT_EQ(a.status, SpiStatus::kOk) << i;
    EXPECT_TRUE(pool.Activate(a.spi));
    spis.push_back(a.spi);
  }
  return spis;
}

TEST(SpiPoolTest, PermutationIsABijection) {
  SpiPool pool(kKeys);
  for (std::uint32_t x : {0u, 1u, 255u, 256u, 0x00FFFFFFu, 0x01000000u, 0xDEADBEEFu, 0xFFFFFFFFu}) {
    EXPECT_EQ(pool.Unpermute(pool.Permute(x)), x);
    EXPECT_EQ(pool.Permute(pool.Unpermute(x)), x);
  }
}

// RFC 4303 2.1 (never 0-255), and a million live SPIs with no duplicate.
TEST(SpiPoolTest, MillionLiveSpisAreDistinctAndAtLeast256) {
  SpiPool pool;
  ASSERT_EQ(pool.SetLimits(1'000'000, 0), LimitsStatus::kOk);
  std::vector<std::uint32_t> spis = AllocateActive(pool, 1'000'000);
  EXPECT_EQ(pool.Allocate(SpiPurpose::kRekey).status, SpiStatus::kExhausted);
  for (std::uint32_t spi : spis) ASSERT_GE(spi, 256u);
  for (std::size_t i = 0; i < spis.size(); i += 997)
    ASSERT_NE(pool.Find(spis[i]), SpiPool::kNoSlot);
  std::sort(spis.begin(), spis.end());
  EXPECT_EQ(std::adjacent_find(spis.begin(), spis.end()), spis.end());
  EXPECT_EQ(pool.stats().slots, 1'000'000u);
}

TEST(SpiPoolTest, ConsecutiveSpisAreNotSequential) {
  SpiPool pool(kKeys);
  pool.SetLimits(10'001, 0);
  const std::vector<std::uint32_t> spis = AllocateActive(pool, 10'001);
  std::unordered_set<std::uint32_t> steps;
  std::size_t increasing = 0;
  for (std::size_t i = 1; i < spis.size(); ++i) {
    steps.insert(spis[i] - spis[i - 1]);
    increasing += spis[i] > spis[i - 1];
  }
  EXPECT_GT(steps.size(), 9'990u);  // a counter or a fixed stride would give one step
  EXPECT_GT(increasing, 4'500u);
  EXPECT_LT(increasing, 5'500u);
}

// Pearson's chi-squared over 256 buckets of the top and the bottom byte: 255 degrees of
// freedom, mean 255, standard deviation 22.6; 360 is beyond p = 0.0001.
TEST(SpiPoolTest, SpisAreSpreadUniformly) {
  SpiPool pool(kKeys);
  constexpr std::size_t kN = 1 << 18;
  pool.SetLimits(kN, 0);
  std::vector<double> high(256), low(256);
  for (std::uint32_t spi : AllocateActive(pool, kN)) {
    ++high[spi >> 24];
    ++low[spi & 0xFF];
  }
  auto chi2 = [](const std::vector<double>& counts) {
    const double expected = double{kN} / 256;
    double sum = 0;
    for (double c : counts) sum += (c - expected) * (c - expected) / expected;
    return sum;
  };
  EXPECT_LT(chi2(high), 360.0);
  EXPECT_LT(chi2(low), 360.0);
}

// Keys under which slot `slot` (< 4096) maps to an SPI below 256 at generation 0.
bool FindLowSpiKeys(SpiPool::RoundKeys& keys, std::uint32_t& slot) {
  for (std::uint32_t seed = 1; seed < 200'000; ++seed) {
    keys = {seed * 0x9E3779B9u, seed ^ 0x5bd1e995u, seed * 0x85EBCA6Bu, ~seed};
    SpiPool probe(keys);
    for (std::uint32_t v = 0; v < 256; ++v) {
      const std::uint32_t x = probe.Unpermute(v);
      if (x < SpiPool::kQuarantine) {
        slot = x;
        return true;
      }
    }
  }
  return false;
}

TEST(SpiPoolTest, ValueBelow256IsSkippedByBumpingTheGeneration) {
  SpiPool::RoundKeys keys;
  std::uint32_t low_slot = 0;
  ASSERT_TRUE(FindLowSpiKeys(keys, low_slot));
  SpiPool pool(keys);
  pool.SetLimits(SpiPool::kQuarantine, 0);
  ASSERT_LT(pool.Permute(low_slot), 256u);
  SpiAllocation a;
  for (std::uint32_t i = 0; i <= low_slot; ++i) a = pool.Allocate(SpiPurpose::kNew);
  ASSERT_EQ(a.slot, low_slot);
  EXPECT_GE(a.spi, 256u);
  EXPECT_EQ(pool.Unpermute(a.spi), 1u << SpiPool::kSlotBits | low_slot);  // generation 1
  EXPECT_EQ(pool.stats().low_spi_skips, 1u);
  EXPECT_EQ(pool.StateOf(pool.Permute(low_slot)), SpiState::kUnknown);
}

TEST(SpiPoolTest, ReservedSpiIsInvisibleUntilActivated) {
  SpiPool pool;
  pool.SetLimits(10, 0);
  const SpiAllocation a = pool.Allocate(SpiPurpose::kNew);
  ASSERT_EQ(a.status, SpiStatus::kOk);
  EXPECT_EQ(pool.Find(a.spi), SpiPool::kNoSlot);
  EXPECT_EQ(pool.StateOf(a.spi), SpiState::kReserved);
  EXPECT_EQ(pool.SlotOf(a.spi), a.slot);
  EXPECT_TRUE(pool.Activate(a.spi));
  EXPECT_FALSE(pool.Activate(a.spi));
  EXPECT_EQ(pool.Find(a.spi), a.slot);
  EXPECT_EQ(pool.StateOf(a.spi), SpiState::kActive);
}

TEST(SpiPoolTest, FreedAndStaleSpisAreUnknown) {
  SpiPool pool;
  pool.SetLimits(10'000, 0);
  const std::vector<std::uint32_t> old = AllocateActive(pool, 5'000);
  for (std::uint32_t spi : old) ASSERT_TRUE(pool.Free(spi));
  for (std::uint32_t spi : old) {
    EXPECT_EQ(pool.Find(spi), SpiPool::kNoSlot);
    EXPECT_EQ(pool.StateOf(spi), SpiState::kUnknown);
    EXPECT_FALSE(pool.Free(spi));  // double free
  }
  // The FIFO is reused down to kQuarantine - 1 free slots: these 905 allocations all take old
  // slots, at their next generation.
  const std::vector<std::uint32_t> fresh = AllocateActive(pool, 5'000 - SpiPool::kQuarantine + 1);
  EXPECT_EQ(pool.stats().slots, 5'000u);
  const std::set<std::uint32_t> old_set(old.begin(), old.end());
  for (std::uint32_t spi : fresh) EXPECT_EQ(old_set.count(spi), 0u);
  for (std::uint32_t spi : old) EXPECT_EQ(pool.Find(spi), SpiPool::kNoSlot);
  for (std::uint32_t spi : fresh) EXPECT_NE(pool.Find(spi), SpiPool::kNoSlot);
}

TEST(SpiPoolTest, ForgedSpisAreUnknown) {
  SpiPool pool;
  pool.SetLimits(100, 0);
  AllocateActive(pool, 100);
  for (std::uint32_t spi : {0u, 1u, 255u, 256u, 0xFFFFFFFFu}) {
    EXPECT_EQ(pool.Find(spi) == SpiPool::kNoSlot, pool.StateOf(spi) != SpiState::kActive);
  }
  EXPECT_EQ(pool.Find(0), SpiPool::kNoSlot);
  EXPECT_FALSE(pool.Free(0));
  // Every SPI naming a slot past the high-water mark, or a wrong generation, is unknown.
  std::size_t found = 0;
  for (std::uint32_t spi = 0; spi < 1'000'000; ++spi)
    found += pool.Find(spi * 4099u) != SpiPool::kNoSlot;
  EXPECT_LE(found, 100u);
}

TEST(SpiPoolTest, FreeThenAllocateGivesAnotherSpi) {
  SpiPool pool;
  pool.SetLimits(1, 0);
  std::unordered_set<std::uint32_t> seen;
  // A single SA churning: no SPI comes back within 100,000 cycles (bound: 256 * kQuarantine).
  for (int i = 0; i < 100'000; ++i) {
    const SpiAllocation a = pool.Allocate(SpiPurpose::kNew);
    ASSERT_EQ(a.status, SpiStatus::kOk);
    ASSERT_TRUE(seen.insert(a.spi).second) << "cycle " << i;
    ASSERT_TRUE(pool.Free(a.spi));
  }
  EXPECT_LE(pool.stats().slots, SpiPool::kQuarantine + 1);
}

// Admission edges as a table: max_spi 100, reserve 10.
TEST(SpiPoolTest, ReserveAdmissionEdges) {
  SpiPool pool;
  ASSERT_EQ(pool.SetLimits(100, 10), LimitsStatus::kOk);
  AllocateActive(pool, 90, SpiPurpose::kNew);  // in_use 0..89 < 90: admitted
  EXPECT_EQ(pool.Allocate(SpiPurpose::kNew).status, SpiStatus::kNewRefused);  // 90 = 100 - 10
  const std::vector<std::uint32_t> rekeys = AllocateActive(pool, 10, SpiPurpose::kRekey);
  EXPECT_EQ(pool.in_use(), 100u);
  EXPECT_EQ(pool.Allocate(SpiPurpose::kRekey).status, SpiStatus::kExhausted);
  EXPECT_EQ(pool.Allocate(SpiPurpose::kNew).status, SpiStatus::kExhausted);
  pool.Free(rekeys[0]);  // in_use 99: a rekey fits, a new one still does not
  EXPECT_EQ(pool.Allocate(SpiPurpose::kNew).status, SpiStatus::kNewRefused);
  EXPECT_EQ(pool.Allocate(SpiPurpose::kRekey).status, SpiStatus::kOk);
  const SpiPoolStats st = pool.stats();
  EXPECT_EQ(st.refused_new, 3u);
  EXPECT_EQ(st.refused_rekey, 1u);
  EXPECT_EQ(st.peak_in_use, 100u);
}

TEST(SpiPoolTest, ZeroReserveAndZeroPool) {
  SpiPool pool;
  EXPECT_EQ(pool.Allocate(SpiPurpose::kRekey).status, SpiStatus::kExhausted);  // limits start at 0
  pool.SetLimits(1, 1);
  EXPECT_EQ(pool.Allocate(SpiPurpose::kNew).status, SpiStatus::kNewRefused);
  EXPECT_EQ(pool.Allocate(SpiPurpose::kRekey).status, SpiStatus::kOk);
}

TEST(SpiPoolTest, ResizeUpAdmitsImmediately) {
  SpiPool pool;
  pool.SetLimits(50, 5);
  AllocateActive(pool, 45);
  EXPECT_EQ(pool.Allocate(SpiPurpose::kNew).status, SpiStatus::kNewRefused);
  ASSERT_EQ(pool.SetLimits(100, 5), LimitsStatus::kOk);
  EXPECT_EQ(pool.Allocate(SpiPurpose::kNew).status, SpiStatus::kOk);
}

TEST(SpiPoolTest, ResizeDownRefusesNewWithoutEvicting) {
  SpiPool pool;
  pool.SetLimits(100, 0);
  const std::vector<std::uint32_t> spis = AllocateActive(pool, 50);
  ASSERT_EQ(pool.SetLimits(40, 0), LimitsStatus::kOk);
  EXPECT_EQ(pool.Allocate(SpiPurpose::kNew).status, SpiStatus::kExhausted);
  EXPECT_EQ(pool.Allocate(SpiPurpose::kRekey).status, SpiStatus::kExhausted);
  for (std::uint32_t spi : spis) EXPECT_NE(pool.Find(spi), SpiPool::kNoSlot);
  EXPECT_EQ(pool.in_use(), 50u);
  for (int i = 0; i < 10; ++i) pool.Free(spis[static_cast<std::size_t>(i)]);  // in_use 40
  EXPECT_EQ(pool.Allocate(SpiPurpose::kNew).status, SpiStatus::kExhausted);
  pool.Free(spis[10]);  // in_use 39 < 40
  EXPECT_EQ(pool.Allocate(SpiPurpose::kNew).status, SpiStatus::kOk);
}

TEST(SpiPoolTest, LimitsAreValidated) {
  SpiPool pool;
  EXPECT_EQ(pool.SetLimits(SpiPool::kMaxSlots, 0), LimitsStatus::kOk);
  EXPECT_EQ(pool.SetLimits(SpiPool::kMaxSlots + 1, 0), LimitsStatus::kMaxSpiTooLarge);
  EXPECT_EQ(pool.SetLimits(10, 11), LimitsStatus::kReserveTooLarge);
  EXPECT_EQ(pool.stats().max_spi, SpiPool::kMaxSlots);  // a refused change leaves the limits
  EXPECT_EQ(SpiPool::DefaultReserve(1'048'576), 65'536u);
}

}  // namespace
}  // namespace spigot::sa
