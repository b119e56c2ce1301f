#include "spigot/engine/worker_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <latch>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "spigot/test_tools/manual_executor.h"
#include "spigot/test_tools/wait_until.h"

namespace spigot::engine {
namespace {

using namespace std::chrono_literals;

TEST(WorkerPool, RunsEveryJobOnTheWorkers) {
  WorkerPool pool(2, 1000);
  EXPECT_EQ(pool.threads(), 2u);
  std::atomic<int> sum{0};
  std::mutex mu;
  std::set<std::thread::id> ids;
  std::latch ran(100);
  for (int i = 1; i <= 100; ++i) {
    ASSERT_TRUE(pool.TrySubmit([&, i] {
      sum += i;
      {
        std::lock_guard lock(mu);
        ids.insert(std::this_thread::get_id());
      }
      ran.count_down();
    }));
  }
  ran.wait();
  // The pool counts a job after it returns: wait for that bookkeeping too.
  ASSERT_TRUE(test_tools::WaitUntil([&] { return pool.in_flight() == 0; }));
  EXPECT_EQ(sum.load(), 5050);
  EXPECT_EQ(pool.stats().completed, 100u);
  EXPECT_EQ(ids.count(std::this_thread::get_id()), 0u);
}

TEST(WorkerPool, RefusesPastCapacityAndCountsIt) {
  WorkerPool pool(1, 3);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  // The blockers hold every slot until the test releases them (30 s: a broken test ends).
  auto blocker = [released] { released.wait_for(30s); };
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(pool.TrySubmit(blocker));
  EXPECT_EQ(pool.free(), 0u);
  EXPECT_FALSE(pool.TrySubmit([] {}));
  EXPECT_EQ(pool.stats().refused, 1u);
  release.set_value();
  ASSERT_TRUE(test_tools::WaitUntil([&] { return pool.free() == 3; }));
  EXPECT_EQ(pool.stats().completed, 3u);
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

TEST(ManualExecutor, RunsJobsOnlyWhenToldInOrderOnTheCallingThread) {
  test_tools::ManualExecutor manual(8);
  Executor& executor = manual;  // what the gateway sees
  EXPECT_EQ(executor.threads(), 0u);
  std::vector<int> order;
  std::set<std::thread::id> ids;
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(executor.TrySubmit([&, i] {
      order.push_back(i);
      ids.insert(std::this_thread::get_id());
    }));
  }
  EXPECT_TRUE(order.empty());
  EXPECT_EQ(manual.pending(), 3u);
  EXPECT_EQ(executor.in_flight(), 3u);
  EXPECT_EQ(executor.free(), 5u);
  EXPECT_TRUE(manual.RunOne());
  EXPECT_EQ(order, (std::vector<int>{1}));
  EXPECT_EQ(manual.RunAll(), 2u);
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(ids, std::set<std::thread::id>{std::this_thread::get_id()});
  EXPECT_FALSE(manual.RunOne());
  EXPECT_EQ(executor.in_flight(), 0u);
  const Executor::Stats s = executor.stats();
  EXPECT_EQ(s.submitted, 3u);
  EXPECT_EQ(s.completed, 3u);
  EXPECT_EQ(s.refused, 0u);
}

TEST(ManualExecutor, RefusesPastCapacityAndCountsIt) {
  test_tools::ManualExecutor manual(2);
  EXPECT_EQ(manual.capacity(), 2u);
  ASSERT_TRUE(manual.TrySubmit([] {}));
  ASSERT_TRUE(manual.TrySubmit([] {}));
  EXPECT_EQ(manual.free(), 0u);
  EXPECT_FALSE(manual.TrySubmit([] {}));
  EXPECT_EQ(manual.stats().refused, 1u);
  EXPECT_EQ(manual.pending(), 2u);
  ASSERT_TRUE(manual.RunOne());
  EXPECT_EQ(manual.free(), 1u);
  EXPECT_TRUE(manual.TrySubmit([] {}));
  EXPECT_EQ(manual.stats().submitted, 3u);
}

TEST(ManualExecutor, JobsMaySubmitMoreAndRunAllRunsThemTooWhileARunningJobHoldsItsSlot) {
  test_tools::ManualExecutor manual(2);
  std::vector<int> order;
  bool third_refused = false;
  ASSERT_TRUE(manual.TrySubmit([&] {
    order.push_back(1);
    // Running, this job still counts against capacity, as on a WorkerPool.
    EXPECT_EQ(manual.in_flight(), 1u);
    EXPECT_TRUE(manual.TrySubmit([&] { order.push_back(2); }));
    third_refused = !manual.TrySubmit([&] { order.push_back(3); });
  }));
  EXPECT_EQ(manual.RunAll(), 2u);
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
  EXPECT_TRUE(third_refused);
  EXPECT_EQ(manual.pending(), 0u);
  EXPECT_EQ(manual.stats().completed, 2u);
  EXPECT_EQ(manual.stats().refused, 1u);
}

}  // namespace
}  // namespace spigot::engine
