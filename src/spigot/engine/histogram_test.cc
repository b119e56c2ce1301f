#include "spigot/engine/histogram.h"

#include <gtest/gtest.h>

namespace spigot::engine {
namespace {

// Quantiles from above: the bound of the bucket the rank falls in, never more than the largest
// observation (which also answers for the overflow bucket).
TEST(Histogram, QuantilesAreTheirBucketsBoundCappedAtTheMax) {
  Histogram h{0.001, 0.01, 0.1};
  EXPECT_EQ(h.Quantile(0.5), 0);
  EXPECT_EQ(h.max(), 0);
  for (int i = 0; i < 98; ++i) h.Observe(0.0004);
  h.Observe(0.05);
  h.Observe(0.3);  // past every bound
  EXPECT_EQ(h.count(), 100u);
  EXPECT_DOUBLE_EQ(h.Quantile(0.5), 0.001);
  EXPECT_DOUBLE_EQ(h.Quantile(0.98), 0.001);
  EXPECT_DOUBLE_EQ(h.Quantile(0.99), 0.1);
  EXPECT_DOUBLE_EQ(h.Quantile(1.0), 0.3);
  EXPECT_DOUBLE_EQ(h.max(), 0.3);

  Histogram one{0.001, 0.01};
  one.Observe(0.002);
  EXPECT_DOUBLE_EQ(one.Quantile(0.5), 0.002) << "the bucket's bound (10 ms) is above the only observation";
  EXPECT_DOUBLE_EQ(one.Quantile(0.99), 0.002);
}

}  // namespace
}  // namespace spigot::engine
