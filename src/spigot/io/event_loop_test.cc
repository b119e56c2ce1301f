#include "spigot/io/event_loop.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "spigot/test_tools/fake_clock.h"

namespace spigot::io {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using test_tools::FakeClock;

class EventLoopTest : public ::testing::Test {
 protected:
  std::unique_ptr<EventLoop> MakeLoop(std::size_t max_posted = 4096) {
    EventLoop::Options options;
    options.clock = &clock_;
    options.max_posted = max_posted;
    std::string error;
    auto loop = EventLoop::Create(options, &error);
    EXPECT_NE(loop, nullptr) << error;
    return loop;
  }
  // Moves fake time forward and lets the loop fire what is due, without waiting.
  void Advance(EventLoop& loop, std::chrono::nanoseconds d) {
    clock_.Advance(d);
    loop.RunOnce(EventLoop::Duration::zero());
  }

  FakeClock clock_;
};

TEST_F(EventLoopTest, OneShotTimersFireOnceInDeadlineOrder) {
  auto loop = MakeLoop();
  std::vector<std::string> fired;
  loop->AddTimer("b", seconds(2), [&] { fired.push_back("b"); });
  loop->AddTimer("a", seconds(1), [&] { fired.push_back("a"); });
  loop->AddTimer("c", seconds(2), [&] { fired.push_back("c"); });  // same deadline as b: after it
  EXPECT_EQ(loop->pending_timers(), 3u);
  EXPECT_EQ(loop->PendingTimerNames(), (std::vector<std::string>{"a", "b", "c"}));

  Advance(*loop, milliseconds(999));
  EXPECT_TRUE(fired.empty());
  Advance(*loop, milliseconds(1));
  EXPECT_EQ(fired, std::vector<std::string>{"a"});
  Advance(*loop, seconds(5));
  EXPECT_EQ(fired, (std::vector<std::string>{"a", "b", "c"}));
  Advance(*loop, seconds(5));
  EXPECT_EQ(fired.size(), 3u);
  EXPECT_EQ(loop->pending_timers(), 0u);
  EXPECT_EQ(loop->stats().timers_fired, 3u);
}

TEST_F(EventLoopTest, RepeatingTimerFiresEveryPeriodAndSkipsMissedOnes) {
  auto loop = MakeLoop();
  int ticks = 0;
  const auto id = loop->AddRepeatingTimer("dpd", seconds(10), [&] { ++ticks; });
  for (int i = 0; i < 5; ++i) Advance(*loop, seconds(10));
  EXPECT_EQ(ticks, 5);

  // A long stall: one tick, not a burst of the 100 missed ones; then back to the period.
  Advance(*loop, seconds(1000));
  EXPECT_EQ(ticks, 6);
  Advance(*loop, seconds(9));
  EXPECT_EQ(ticks, 6);
  Advance(*loop, seconds(1));
  EXPECT_EQ(ticks, 7);

  EXPECT_TRUE(loop->CancelTimer(id));
  EXPECT_FALSE(loop->CancelTimer(id));
  Advance(*loop, seconds(100));
  EXPECT_EQ(ticks, 7);
}

TEST_F(EventLoopTest, CancelBeforeDeadline) {
  auto loop = MakeLoop();
  bool fired = false;
  const auto id = loop->AddTimer("ike.retransmit", seconds(1), [&] { fired = true; });
  EXPECT_TRUE(loop->CancelTimer(id));
  Advance(*loop, seconds(2));
  EXPECT_FALSE(fired);
  EXPECT_FALSE(loop->CancelTimer(0));
}

TEST_F(EventLoopTest, CallbacksMayCancelAndReschedule) {
  auto loop = MakeLoop();
  int self_cancelling = 0;
  EventLoop::TimerId self = 0;
  self = loop->AddRepeatingTimer("self", seconds(1), [&] {
    ++self_cancelling;
    EXPECT_TRUE(loop->CancelTimer(self));
  });
  bool victim_fired = false;
  EventLoop::TimerId victim = 0;
  loop->AddTimer("killer", seconds(1), [&] { loop->CancelTimer(victim); });
  victim = loop->AddTimer("victim", seconds(1), [&] { victim_fired = true; });
  Advance(*loop, seconds(5));
  EXPECT_EQ(self_cancelling, 1);
  EXPECT_FALSE(victim_fired);
  EXPECT_EQ(loop->pending_timers(), 0u);
}

TEST_F(EventLoopTest, ZeroDelayTimerAddedByATimerWaitsForTheNextIteration) {
  auto loop = MakeLoop();
  int runs = 0;
  std::function<void()> rearm = [&] {
    ++runs;
    loop->AddTimer("again", EventLoop::Duration::zero(), rearm);
  };
  loop->AddTimer("first", EventLoop::Duration::zero(), rearm);
  loop->RunOnce(EventLoop::Duration::zero());
  EXPECT_EQ(runs, 1);
  loop->RunOnce(EventLoop::Duration::zero());
  EXPECT_EQ(runs, 2);
}

TEST_F(EventLoopTest, ManyCancelledTimersDoNotAccumulate) {
  auto loop = MakeLoop();
  int fired = 0;
  for (int i = 0; i < 100000; ++i) {
    const auto id = loop->AddTimer("retransmit", seconds(30), [&] { ++fired; });
    loop->CancelTimer(id);
  }
  loop->AddTimer("last", seconds(30), [&] { ++fired; });
  EXPECT_EQ(loop->pending_timers(), 1u);
  Advance(*loop, seconds(30));
  EXPECT_EQ(fired, 1);
}

TEST_F(EventLoopTest, ReadableFdCallsBack) {
  auto loop = MakeLoop();
  const int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  int calls = 0;
  ASSERT_TRUE(loop->AddReader(fd, [&] {
    std::uint64_t value;
    ASSERT_EQ(read(fd, &value, sizeof value), 8);
    ++calls;
  }));
  EXPECT_FALSE(loop->AddReader(fd, [] {}));
  EXPECT_EQ(errno, EEXIST);

  loop->RunOnce(EventLoop::Duration::zero());
  EXPECT_EQ(calls, 0);
  const std::uint64_t one = 1;
  ASSERT_EQ(write(fd, &one, sizeof one), 8);
  loop->RunOnce(milliseconds(1000));
  EXPECT_EQ(calls, 1);

  EXPECT_TRUE(loop->RemoveReader(fd));
  EXPECT_FALSE(loop->RemoveReader(fd));
  ASSERT_EQ(write(fd, &one, sizeof one), 8);
  loop->RunOnce(EventLoop::Duration::zero());
  EXPECT_EQ(calls, 1);
  close(fd);
}

TEST_F(EventLoopTest, ReaderRemovedByAnEarlierCallbackIsNotCalled) {
  auto loop = MakeLoop();
  const int a = eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC);  // both readable at once
  const int b = eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC);
  int calls = 0;
  // Whichever runs first removes both: the other must not run.
  ASSERT_TRUE(loop->AddReader(a, [&] { ++calls; loop->RemoveReader(a); loop->RemoveReader(b); }));
  ASSERT_TRUE(loop->AddReader(b, [&] { ++calls; loop->RemoveReader(a); loop->RemoveReader(b); }));
  loop->RunOnce(EventLoop::Duration::zero());
  EXPECT_EQ(calls, 1);
  close(a);
  close(b);
}

TEST_F(EventLoopTest, PostFromAnotherThreadRunsOnTheLoopThread) {
  auto loop = MakeLoop();
  const std::thread::id loop_thread = std::this_thread::get_id();
  std::atomic<int> ran{0};
  std::thread poster([&] {
    for (int i = 0; i < 100; ++i) {
      while (!loop->Post([&] {
        EXPECT_EQ(std::this_thread::get_id(), loop_thread);
        ++ran;
      })) {
        std::this_thread::yield();
      }
    }
    loop->Post([&] { loop->Stop(); });
  });
  loop->Run();  // returns once the last posted callback has stopped it
  poster.join();
  EXPECT_EQ(ran.load(), 100);
  EXPECT_EQ(loop->stats().posted, 101u);
}

TEST_F(EventLoopTest, StopFromAnotherThreadEndsRun) {
  auto loop = MakeLoop();
  std::thread stopper([&] {
    std::this_thread::sleep_for(milliseconds(20));
    loop->Stop();
  });
  loop->Run();  // would block forever without the wakeup
  stopper.join();

  loop->Stop();  // before Run(): Run() returns at once
  loop->Run();
}

TEST_F(EventLoopTest, PostQueueIsBoundedAndRefusalsAreCounted) {
  auto loop = MakeLoop(/*max_posted=*/4);
  int ran = 0;
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(loop->Post([&] { ++ran; }));
  EXPECT_FALSE(loop->Post([&] { ++ran; }));
  EXPECT_FALSE(loop->Post([&] { ++ran; }));
  EXPECT_EQ(loop->stats().posted, 4u);
  EXPECT_EQ(loop->stats().post_refused, 2u);

  loop->RunOnce(milliseconds(1000));
  EXPECT_EQ(ran, 4);
  EXPECT_TRUE(loop->Post([&] { ++ran; }));  // room again once drained
  loop->RunOnce(milliseconds(1000));
  EXPECT_EQ(ran, 5);
}

TEST_F(EventLoopTest, SignalsArriveAsCallbacks) {
  auto loop = MakeLoop();
  std::vector<int> got;
  ASSERT_TRUE(loop->OnSignal(SIGHUP, [&] { got.push_back(SIGHUP); }));
  ASSERT_TRUE(loop->OnSignal(SIGTERM, [&] { got.push_back(SIGTERM); }));
  ASSERT_TRUE(loop->OnSignal(SIGINT, [&] { got.push_back(SIGINT); }));

  // Directed at this thread, which blocks them: they wait in the signalfd.
  ASSERT_EQ(pthread_kill(pthread_self(), SIGHUP), 0);
  loop->RunOnce(milliseconds(1000));
  ASSERT_EQ(pthread_kill(pthread_self(), SIGTERM), 0);
  loop->RunOnce(milliseconds(1000));
  EXPECT_EQ(got, (std::vector<int>{SIGHUP, SIGTERM}));
  EXPECT_EQ(loop->stats().signals, 2u);
}

TEST_F(EventLoopTest, RunWaitsForTheNextTimerWithTheRealClock) {
  auto loop = EventLoop::Create({});
  ASSERT_NE(loop, nullptr);
  const auto start = std::chrono::steady_clock::now();
  loop->AddTimer("stop", milliseconds(30), [&] { loop->Stop(); });
  loop->Run();
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(30));
}

}  // namespace
}  // namespace spigot::io
