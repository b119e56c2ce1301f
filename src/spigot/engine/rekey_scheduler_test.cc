#include "spigot/engine/rekey_scheduler.h"

#include <gtest/gtest.h>

namespace spigot::engine {
namespace {

using TP = RekeyScheduler::TimePoint;
TP At(double s) { return TP{} + std::chrono::hours(1) + std::chrono::duration_cast<TP::duration>(std::chrono::duration<double>(s)); }

TEST(RekeyScheduler, NothingBeforeItsDeadline) {
  RekeyScheduler s(100, At(0));
  s.Schedule(1, At(10));
  EXPECT_TRUE(s.Due(At(9.99)).empty());
  EXPECT_EQ(s.Due(At(10)), std::vector<std::uint32_t>{1});
  EXPECT_TRUE(s.Due(At(11)).empty()) << "handed out twice";
}

// A wave: 1,000 CHILD SAs all due at the same second, a limit of 50 per second. They must be
// spread over 20 s, never more than 50 in any one-second window, oldest first.
TEST(RekeyScheduler, SpreadsAWaveAtTheRateLimit) {
  RekeyScheduler s(50, At(0));
  for (std::uint32_t i = 0; i < 1000; ++i) s.Schedule(i, At(100) + std::chrono::milliseconds(i));
  std::size_t total = 0;
  std::uint32_t last = 0;
  bool first = true;
  std::vector<std::size_t> per_tick;
  for (int tick = 0; tick < 400; ++tick) {  // 10 ticks per second for 40 s
    const TP now = At(100 + tick * 0.1);
    const auto due = s.Due(now);
    per_tick.push_back(due.size());
    for (std::uint32_t spi : due) {
      if (!first) {
        EXPECT_GT(spi, last) << "not in deadline order";
      }
      last = spi;
      first = false;
    }
    EXPECT_LE(due.size(), 5u) << "more than a tenth of a second's worth at once";
    total += due.size();
  }
  EXPECT_EQ(total, 1000u);
  EXPECT_GT(s.stats().deferred, 0u);
  for (std::size_t i = 0; i + 10 <= per_tick.size(); ++i) {
    std::size_t window = 0;
    for (std::size_t j = i; j < i + 10; ++j) window += per_tick[j];
    EXPECT_LE(window, 50u) << "one-second window starting at tick " << i;
  }
  EXPECT_EQ(s.stats().peak_per_second, 50u);
  // 1,000 at 50/s take 20 s.
  RekeyScheduler t(50, At(0));
  for (std::uint32_t i = 0; i < 1000; ++i) t.Schedule(i, At(100));
  std::size_t by_10s = 0;
  for (int tick = 0; tick <= 100; ++tick) by_10s += t.Due(At(100 + tick * 0.1)).size();
  EXPECT_LE(by_10s, 11u * 50u);
  EXPECT_GE(by_10s, 9u * 50u);
}

TEST(RekeyScheduler, MostOverdueFirst) {
  RekeyScheduler s(1, At(0));
  s.Schedule(7, At(30));
  s.Schedule(8, At(10));
  s.Schedule(9, At(20));
  EXPECT_EQ(s.Due(At(40)), std::vector<std::uint32_t>{8});
  EXPECT_EQ(s.Overdue(At(40)), 2u);
  EXPECT_EQ(s.stats().max_start_lag_us, 30'000'000u);
  EXPECT_EQ(s.Due(At(41)), std::vector<std::uint32_t>{9});
  EXPECT_EQ(s.Due(At(42)), std::vector<std::uint32_t>{7});
  EXPECT_EQ(s.stats().max_start_lag_us, 30'000'000u) << "the latest start is kept";
}

TEST(RekeyScheduler, CancelAndRescheduleAreHonoured) {
  RekeyScheduler s(100, At(0));
  s.Schedule(1, At(10));
  s.Schedule(2, At(10));
  s.Cancel(1);
  s.Schedule(2, At(50));  // moved later
  EXPECT_TRUE(s.Due(At(20)).empty());
  EXPECT_EQ(s.Due(At(50)), std::vector<std::uint32_t>{2});
  // Many cancellations do not grow the heap without bound.
  for (std::uint32_t i = 0; i < 10000; ++i) {
    s.Schedule(100 + i, At(1000));
    s.Cancel(100 + i);
  }
  EXPECT_EQ(s.size(), 0u);
}

}  // namespace
}  // namespace spigot::engine
