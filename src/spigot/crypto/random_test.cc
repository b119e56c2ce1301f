#include "spigot/crypto/random.h"

#include <gtest/gtest.h>

namespace spigot::crypto {
namespace {

TEST(Random, UnitIsInTheHalfOpenIntervalAndSpreadOverIt) {
  constexpr int kDraws = 10000;
  double sum = 0, lo = 1, hi = 0;
  for (int i = 0; i < kDraws; ++i) {
    const double u = RandomUnit();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    lo = std::min(lo, u);
    hi = std::max(hi, u);
  }
  // Mean of 10,000 uniform draws: 0.5 with a standard deviation of 0.29 / 100; 0.02 is ~7 sigma.
  EXPECT_NEAR(sum / kDraws, 0.5, 0.02);
  EXPECT_LT(lo, 0.01);
  EXPECT_GT(hi, 0.99);
}

}  // namespace
}  // namespace spigot::crypto
