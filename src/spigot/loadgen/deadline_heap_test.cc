#include "spigot/loadgen/deadline_heap.h"

#include <gtest/gtest.h>

#include <random>

namespace spigot::loadgen {
namespace {

using TimePoint = DeadlineHeap::TimePoint;
TimePoint T(int ms) { return TimePoint{} + std::chrono::hours(1) + std::chrono::milliseconds(ms); }

std::vector<std::uint64_t> Due(DeadlineHeap& h, int ms) {
  std::vector<std::uint64_t> out;
  h.PopDue(T(ms), out);
  return out;
}

TEST(DeadlineHeap, PopsDueKeysSoonestFirstAndEachOnce) {
  DeadlineHeap h;
  h.Set(3, T(30));
  h.Set(1, T(10));
  h.Set(2, T(20));
  EXPECT_EQ(h.Next(), T(10));
  EXPECT_EQ(Due(h, 20), (std::vector<std::uint64_t>{1, 2}));
  EXPECT_TRUE(Due(h, 20).empty());
  EXPECT_EQ(h.size(), 1u);
  EXPECT_EQ(Due(h, 1000), (std::vector<std::uint64_t>{3}));
  EXPECT_EQ(h.Next(), TimePoint::max());
}

TEST(DeadlineHeap, RescheduleAndCancelLeaveNoGhosts) {
  DeadlineHeap h;
  h.Set(1, T(10));
  h.Set(1, T(50));  // moved later: the entry at 10 is stale
  h.Set(2, T(20));
  h.Cancel(2);
  h.Set(3, T(40));
  h.Set(3, T(5));  // moved earlier
  h.Set(4, T(60));
  h.Set(4, TimePoint::max());  // max cancels
  EXPECT_EQ(Due(h, 30), (std::vector<std::uint64_t>{3}));
  EXPECT_EQ(Due(h, 100), (std::vector<std::uint64_t>{1}));
  EXPECT_EQ(h.size(), 0u);
}

TEST(DeadlineHeap, SameDeadlineSetTwiceIsOneEntry) {
  DeadlineHeap h;
  h.Set(7, T(10));
  h.Set(7, T(10));
  EXPECT_EQ(h.heap_entries(), 1u);
  // Away and back: two entries, but the key still comes out once.
  h.Set(7, T(20));
  h.Set(7, T(10));
  EXPECT_EQ(Due(h, 100), (std::vector<std::uint64_t>{7}));
}

TEST(DeadlineHeap, PopDueHonoursMax) {
  DeadlineHeap h;
  for (std::uint64_t k = 0; k < 10; ++k) h.Set(k, T(static_cast<int>(k)));
  std::vector<std::uint64_t> out;
  EXPECT_EQ(h.PopDue(T(100), out, 4), 4u);
  EXPECT_EQ(out, (std::vector<std::uint64_t>{0, 1, 2, 3}));
  EXPECT_EQ(h.size(), 6u);
}

// Many reschedules of few keys: stale entries are compacted away, never unbounded.
TEST(DeadlineHeap, StaleEntriesStayBounded) {
  DeadlineHeap h;
  std::mt19937 rng(7);
  for (int i = 0; i < 100000; ++i) h.Set(rng() % 100, T(static_cast<int>(rng() % 100000)));
  EXPECT_EQ(h.size(), 100u);
  EXPECT_LE(h.heap_entries(), 2 * h.size() + DeadlineHeap::kCompactSlack + 1);
}

// Against a brute-force model: random sets, cancels and pops over 20,000 keys.
TEST(DeadlineHeap, MatchesAModel) {
  DeadlineHeap h;
  std::map<std::uint64_t, int> model;
  std::mt19937 rng(42);
  int now = 0;
  for (int step = 0; step < 200000; ++step) {
    const std::uint64_t key = rng() % 20000;
    switch (rng() % 4) {
      case 0:
      case 1: {
        const int at = now + static_cast<int>(rng() % 5000);
        h.Set(key, T(at));
        model[key] = at;
        break;
      }
      case 2:
        h.Cancel(key);
        model.erase(key);
        break;
      default: {
        now += static_cast<int>(rng() % 20);
        std::vector<std::uint64_t> got;
        h.PopDue(T(now), got);
        std::vector<std::pair<int, std::uint64_t>> want;
        for (auto it = model.begin(); it != model.end();) {
          if (it->second <= now) {
            want.push_back({it->second, it->first});
            it = model.erase(it);
          } else {
            ++it;
          }
        }
        std::sort(want.begin(), want.end());
        ASSERT_EQ(got.size(), want.size()) << "step " << step;
        for (std::size_t i = 0; i < got.size(); ++i) {
          // Ties in deadline may come out in any order; the deadline order must hold.
          ASSERT_EQ(want[i].first, [&] {
            for (const auto& w : want) if (w.second == got[i]) return w.first;
            return -1;
          }()) << "step " << step;
        }
      }
    }
    ASSERT_EQ(h.size(), model.size());
  }
}

}  // namespace
}  // namespace spigot::loadgen
