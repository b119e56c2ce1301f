#include "spigot/engine/worker_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>

namespace spigot::engine {
namespace {

void WaitFor(const std::function<bool()>& done) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!done() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

TEST(WorkerPool, RunsEveryJobOnTheWorkers) {
  WorkerPool pool(2, 1000);
  EXPECT_EQ(pool.threads(), 2u);
  std::atomic<int> sum{0};
  std::mutex mu;
  std::set<std::thread::id> ids;
  for (int i = 1; i <= 100; ++i) {
    ASSERT_TRUE(pool.TrySubmit([&, i] {
      sum += i;
      std::lock_guard lock(mu);
      ids.insert(std::this_thread::get_id());
    }));
  }
  WaitFor([&] { return pool.in_flight() == 0; });
  EXPECT_EQ(sum.load(), 5050);
  EXPECT_EQ(pool.stats().completed, 100u);
  EXPECT_EQ(ids.count(std::this_thread::get_id()), 0u);
}

TEST(WorkerPool, RefusesPastCapacityAndCountsIt) {
  WorkerPool pool(1, 3);
  std::atomic<bool> release{false};
  auto blocker = [&] { while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1)); };
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(pool.TrySubmit(blocker));
  EXPECT_EQ(pool.free(), 0u);
  EXPECT_FALSE(pool.TrySubmit([] {}));
  EXPECT_EQ(pool.stats().refused, 1u);
  release = true;
  WaitFor([&] { return pool.free() == 3; });
  EXPECT_EQ(pool.free(), 3u);
  EXPECT_TRUE(pool.TrySubmit([] {}));
}

TEST(WorkerPool, DestructorFinishesQueuedJobs) {
  std::atomic<int> n{0};
  {
    WorkerPool pool(1, 50);
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(pool.TrySubmit([&] { ++n; }));
  }
  EXPECT_EQ(n.load(), 50);
}

TEST(WorkerPool, ZeroThreadsMeansOnePerCore) {
  WorkerPool pool(0, 4);
  EXPECT_EQ(pool.threads(), std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace
}  // namespace spigot::engine
