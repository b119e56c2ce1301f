#include "spigot/loadgen/results.h"

#include <gtest/gtest.h>

#include "spigot/loadgen/spi_set.h"

namespace spigot::loadgen {
namespace {

TEST(Percentile, NearestRank) {
  std::vector<double> none;
  EXPECT_EQ(Percentile(none, 50), 0);
  std::vector<double> one{7};
  EXPECT_EQ(Percentile(one, 50), 7);
  EXPECT_EQ(Percentile(one, 99), 7);
  // 1..100 shuffled: p50 is the 50th value, p99 the 99th, p100 the largest.
  std::vector<double> v;
  for (int i = 100; i >= 1; --i) v.push_back(i);
  EXPECT_EQ(Percentile(v, 50), 50);
  EXPECT_EQ(Percentile(v, 99), 99);
  EXPECT_EQ(Percentile(v, 100), 100);
  std::vector<double> four{4, 1, 3, 2};
  EXPECT_EQ(Percentile(four, 50), 2);
  EXPECT_EQ(Percentile(four, 99), 4);
}

TEST(Results, MergeAddsCountsReasonsAndSamples) {
  const TimePoint t0 = TimePoint{} + std::chrono::hours(1);
  Results a, b;
  a.established = 3;
  a.failed = 1;
  a.failures["peer unreachable"] = 1;
  a.latency_ms = {1, 2, 3};
  a.first_started = t0 + std::chrono::seconds(1);
  a.last_established = t0 + std::chrono::seconds(2);
  b.established = 1;
  b.failed = 2;
  b.failures["peer unreachable"] = 1;
  b.failures["peer: AUTHENTICATION_FAILED"] = 1;
  b.latency_ms = {4};
  b.first_started = t0;
  b.last_established = t0 + std::chrono::seconds(4);
  a.Merge(b);
  EXPECT_EQ(a.established, 4u);
  EXPECT_EQ(a.failed, 3u);
  EXPECT_EQ(a.failures["peer unreachable"], 2u);
  EXPECT_EQ(a.failures["peer: AUTHENTICATION_FAILED"], 1u);
  EXPECT_EQ(a.latency_ms.size(), 4u);
  EXPECT_DOUBLE_EQ(a.EstablishRate(), 1.0);  // 4 in 4 s
  Results empty;
  EXPECT_EQ(empty.EstablishRate(), 0);
}

TEST(ChildSpiSet, UniqueAtLeast256InItsShardAndBounded) {
  ChildSpiSet s(2, 3, 5000);
  std::set<std::uint32_t> seen;
  for (int i = 0; i < 5000; ++i) {
    const auto spi = s.Allocate();
    ASSERT_TRUE(spi);
    EXPECT_GE(*spi, ChildSpiSet::kMinSpi);
    EXPECT_EQ(*spi % 3, 2u);
    EXPECT_TRUE(seen.insert(*spi).second);
  }
  EXPECT_FALSE(s.Allocate()) << "past the capacity";
  const std::uint32_t first = *seen.begin();
  s.Release(first);
  EXPECT_FALSE(s.Contains(first));
  EXPECT_TRUE(s.Allocate());
  s.Release(12345);  // not allocated: nothing happens
  EXPECT_EQ(s.size(), 5000u);
}

// A shard whose only low values are below 256 still never hands those out.
TEST(ChildSpiSet, NeverBelowTheReservedRange) {
  ChildSpiSet s(0, 1u << 24, 64);  // 256 values per shard: 0, 2^24, 2*2^24, ...
  for (int i = 0; i < 64; ++i) {
    const auto spi = s.Allocate();
    ASSERT_TRUE(spi);
    EXPECT_GE(*spi, ChildSpiSet::kMinSpi);
  }
}

}  // namespace
}  // namespace spigot::loadgen
