// Crypto engines and the watchdog: async output equals inline output; a stalled engine's jobs
// are taken back after the timeout and redone inline in order; late completions are discarded;
// a probe brings the engine back; failed jobs are redone; every bound refuses at its edge.
// Time is a FakeClock: deadlines, the watchdog and the fault engine's delays move only when a
// test advances it, so no case sleeps or depends on the machine's speed.
#include "spigot/engine/crypto_engine.h"

#include <gtest/gtest.h>
#include <poll.h>

#include <cstring>
#include <vector>

#include "spigot/engine/async_engine.h"
#include "spigot/engine/fault_engine.h"
#include "spigot/engine/inline_engine.h"
#include "spigot/test_tools/fake_clock.h"
#include "spigot/test_tools/wait_until.h"

namespace spigot::engine {
namespace {

using namespace std::chrono_literals;

constexpr std::size_t kBuf = 2048;
constexpr std::size_t kHead = 64;

std::vector<std::uint8_t> Inner(std::size_t len, std::uint8_t fill) {
  std::vector<std::uint8_t> p(len, fill);
  p[0] = 0x45;
  p[2] = static_cast<std::uint8_t>(len >> 8);
  p[3] = static_cast<std::uint8_t>(len);
  return p;
}

class PipelineTest : public ::testing::Test {
 protected:
  void SetUp() override { UseSuite(crypto::EspSuite::kAesGcm128); }
  void UseSuite(crypto::EspSuite suite) {
    std::vector<std::uint8_t> key(crypto::SuiteInfo(suite).keymat_len(), 0x11);
    ASSERT_TRUE(cipher_.Init(mgr(), suite, key));
  }
  crypto::ImbManager& mgr() { return crypto::ImbManager::ForThisThread(); }

  // The ESP packet that sealing packet number `i` inline gives (sequence number i + 1).
  std::vector<std::uint8_t> Expected(std::size_t i) {
    const auto inner = Inner(100 + i, static_cast<std::uint8_t>(i));
    std::vector<std::uint8_t> buf(kBuf);
    std::memcpy(buf.data() + kHead, inner.data(), inner.size());
    esp::PacketView pkt{buf, kHead, inner.size()};
    esp::OutboundState out{0x1000, false, i + 1};
    EXPECT_EQ(esp::Seal(mgr(), cipher_, out, esp::kNextHeaderIpv4, pkt), esp::Status::kOk);
    return {pkt.bytes().begin(), pkt.bytes().end()};
  }

  // Frames packet number `i` in a pipeline slot and commits it. Returns the slot, or -1.
  long Submit(CryptoPipeline& p, std::size_t i, io::Clock::TimePoint now) {
    std::size_t slot;
    std::span<std::uint8_t> buf;
    if (!p.Reserve(slot, buf)) return -1;
    const auto inner = Inner(100 + i, static_cast<std::uint8_t>(i));
    std::memcpy(buf.data() + kHead, inner.data(), inner.size());
    esp::PacketView pkt{buf, kHead, inner.size()};
    esp::OutboundState out{0x1000, false, i + 1};
    esp::CryptoOp op;
    EXPECT_EQ(esp::SealPrepare(cipher_, out, esp::kNextHeaderIpv4, pkt, op), esp::Status::kOk);
    views_[slot] = pkt;
    p.Commit(slot, cipher_, op, pkt.buffer.data() + pkt.offset, now);
    return static_cast<long>(slot);
  }

  struct Delivered {
    std::size_t slot;
    JobResult result;
    std::vector<std::uint8_t> bytes;
  };
  std::vector<Delivered> Poll(CryptoPipeline& p, io::Clock::TimePoint now) {
    std::vector<Delivered> out;
    p.Poll(mgr(), now, [&](std::size_t slot, JobResult r) {
      const auto b = views_[slot].bytes();
      out.push_back({slot, r, {b.begin(), b.end()}});
    });
    return out;
  }
  // Polls at `now` until `n` jobs were delivered. The engine completes them on its own
  // threads; between polls this waits on the pipeline's completion signal, as the data-path
  // threads do. Gives up after 30 s (a broken engine), whatever the machine's speed.
  std::vector<Delivered> PollUntil(CryptoPipeline& p, std::size_t n, io::Clock::TimePoint now) {
    std::vector<Delivered> all;
    const auto give_up = std::chrono::steady_clock::now() + 30s;
    for (;;) {
      for (auto& d : Poll(p, now)) all.push_back(std::move(d));
      if (all.size() >= n || std::chrono::steady_clock::now() >= give_up) return all;
      pollfd pfd{p.signal_fd(), POLLIN, 0};
      ::poll(&pfd, 1, 1000);
    }
  }

  test_tools::FakeClock clock_;
  crypto::EspCipher cipher_;
  esp::PacketView views_[128];
};

TEST_F(PipelineTest, AsyncSealEqualsInlineInOrder) {
  AsyncEngine engine({.workers = 2, .queue_capacity = 64});
  EngineMonitor monitor(engine, {.stall_timeout = 1000ms});
  CryptoPipeline p(monitor, 64, kBuf);
  const auto now = clock_.Now();
  for (std::size_t i = 0; i < 40; ++i) ASSERT_GE(Submit(p, i, now), 0);
  p.Flush(mgr());
  const auto got = PollUntil(p, 40, now);
  ASSERT_EQ(got.size(), 40u);
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].result, JobResult::kOk);
    EXPECT_EQ(got[i].bytes, Expected(i)) << "packet " << i;
  }
  const auto s = monitor.stats();
  EXPECT_EQ(s.completed, 40u);
  EXPECT_EQ(s.fallbacks, 0u);
  EXPECT_EQ(s.state, EngineMonitor::State::kOk);
  EXPECT_EQ(p.in_flight(), 0u);
}

TEST_F(PipelineTest, AsyncOpenVerifiesAndRejectsForgeries) {
  AsyncEngine engine({.workers = 1});
  EngineMonitor monitor(engine, {.stall_timeout = 1000ms});
  CryptoPipeline p(monitor, 8, kBuf);
  std::vector<esp::InboundState> in;
  in.push_back(esp::InboundState{0x1000, esp::ReplayWindow(64)});
  for (std::size_t i = 0; i < 2; ++i) {
    auto packet = Expected(i);
    if (i == 1) packet[30] ^= 1;  // forged
    std::size_t slot;
    std::span<std::uint8_t> buf;
    ASSERT_TRUE(p.Reserve(slot, buf));
    std::memcpy(buf.data(), packet.data(), packet.size());
    views_[slot] = esp::PacketView{buf, 0, packet.size()};
    esp::CryptoOp op;
    ASSERT_EQ(esp::OpenPrepare(cipher_, in[0], views_[slot], op), esp::Status::kOk);
    p.Commit(slot, cipher_, op, buf.data(), clock_.Now());
  }
  p.Flush(mgr());
  const auto got = PollUntil(p, 2, clock_.Now());
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].result, JobResult::kOk);
  EXPECT_EQ(got[1].result, JobResult::kAuthFailed);
}

TEST_F(PipelineTest, StallFiresAfterTimeoutAndRedoesInFlightJobsInlineInOrder) {
  FaultEngine engine({.workers = 1, .queue_capacity = 64}, clock_);
  std::vector<EngineMonitor::Event> events;
  EngineMonitor monitor(engine, {.stall_timeout = 50ms},
                        [&](const EngineMonitor::Event& e) { events.push_back(e); });
  CryptoPipeline p(monitor, 16, kBuf);
  engine.SetMode(FaultEngine::Mode::kStall);
  const auto t0 = clock_.Now();
  for (std::size_t i = 0; i < 5; ++i) ASSERT_GE(Submit(p, i, t0), 0);
  p.Flush(mgr());
  EXPECT_GE(p.WaitMs(t0), 50);  // the owner sleeps no longer than the deadline
  EXPECT_LE(p.WaitMs(t0), 51);

  // Before the deadline nothing moves.
  EXPECT_TRUE(Poll(p, t0 + 49ms).empty());
  EXPECT_FALSE(monitor.stalled());

  const auto got = Poll(p, t0 + 50ms);
  ASSERT_EQ(got.size(), 5u);
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].result, JobResult::kOk);
    EXPECT_EQ(got[i].bytes, Expected(i)) << "packet " << i;
  }
  const auto s = monitor.stats();
  EXPECT_EQ(s.state, EngineMonitor::State::kStalled);
  EXPECT_EQ(s.stalls, 1u);
  EXPECT_EQ(s.fallbacks, 5u);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, EngineMonitor::Event::Kind::kStalled);
  EXPECT_EQ(events[0].in_flight, 5u);

  // While stalled and empty, the owner works inline.
  EXPECT_TRUE(p.Bypass());
  EXPECT_EQ(monitor.stats().bypassed, 1u);
}

TEST_F(PipelineTest, LateCompletionOfATakenBackJobIsDiscarded) {
  FaultEngine engine({.workers = 1, .queue_capacity = 64}, clock_);
  EngineMonitor monitor(engine, {.stall_timeout = 50ms});
  CryptoPipeline p(monitor, 4, kBuf);
  engine.SetMode(FaultEngine::Mode::kStall);
  const auto t0 = clock_.Now();
  for (std::size_t i = 0; i < 3; ++i) ASSERT_GE(Submit(p, i, t0), 0);
  p.Flush(mgr());
  clock_.Advance(60ms);
  const auto t1 = clock_.Now();
  ASSERT_EQ(Poll(p, t1).size(), 3u);
  // The slots are reused for new packets, submitted while the engine still holds the old
  // references; then the engine wakes up and tries to complete the old jobs.
  engine.SetMode(FaultEngine::Mode::kStall);
  for (std::size_t i = 3; i < 6; ++i) ASSERT_GE(Submit(p, i, t1), 0);
  // Not flushed: the new jobs are only in the ring, so only the stale references can run.
  engine.SetMode(FaultEngine::Mode::kNormal);
  ASSERT_TRUE(test_tools::WaitUntil([&] { return engine.late_discarded() >= 3; }));
  EXPECT_EQ(engine.late_discarded(), 3u);
  // The stale references neither ran nor completed the new jobs: the engine is still out of
  // service, so the owner takes the new jobs back and their bytes are sealed exactly once.
  const auto got = Poll(p, t1);
  ASSERT_EQ(got.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(got[i].bytes, Expected(i + 3));
  EXPECT_EQ(monitor.stats().fallbacks, 6u);
  EXPECT_EQ(monitor.stats().completed, 0u);
}

TEST_F(PipelineTest, ProbeBringsTheEngineBackOnlyWhenItCompletesWork) {
  FaultEngine engine({.workers = 1}, clock_);
  std::vector<EngineMonitor::Event> events;
  EngineMonitor monitor(engine, {.stall_timeout = 20ms, .probe_interval = 10ms},
                        [&](const EngineMonitor::Event& e) { events.push_back(e); });
  CryptoPipeline p(monitor, 4, kBuf);
  engine.SetMode(FaultEngine::Mode::kStall);
  ASSERT_GE(Submit(p, 0, clock_.Now()), 0);
  p.Flush(mgr());
  clock_.Advance(20ms);
  ASSERT_EQ(Poll(p, clock_.Now()).size(), 1u);
  ASSERT_TRUE(monitor.stalled());

  // Stalled: a probe goes out every interval, gets no answer, and is taken back at its deadline
  // so the next one can go.
  for (int i = 0; i < 5; ++i) {
    clock_.Advance(25ms);
    monitor.Tick(clock_.Now());
  }
  EXPECT_TRUE(monitor.stalled());
  EXPECT_EQ(monitor.stats().probes, 5u);

  // The engine answers the probe now out; Tick at a fixed time, so its deadline cannot pass
  // while the engine's thread gets to it.
  engine.SetMode(FaultEngine::Mode::kNormal);
  const auto now = clock_.Now();
  EXPECT_TRUE(test_tools::WaitUntil([&] {
    monitor.Tick(now);
    return !monitor.stalled();
  }));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].kind, EngineMonitor::Event::Kind::kRecovered);
  EXPECT_EQ(events[1].probes, 5u);
  EXPECT_EQ(events[1].stalled_for, 125ms);
  // Back in service: jobs go to the engine again.
  EXPECT_FALSE(p.Bypass());
  ASSERT_GE(Submit(p, 1, now), 0);
  p.Flush(mgr());
  const auto got = PollUntil(p, 1, now);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].bytes, Expected(1));
  EXPECT_EQ(monitor.stats().fallbacks, 1u);
}

TEST_F(PipelineTest, ProbeFailingWithAnErrorKeepsTheEngineOut) {
  FaultEngine engine({.workers = 1}, clock_);
  EngineMonitor monitor(engine, {.stall_timeout = 20ms, .probe_interval = 5ms});
  CryptoPipeline p(monitor, 4, kBuf);
  engine.SetMode(FaultEngine::Mode::kFail);
  ASSERT_GE(Submit(p, 0, clock_.Now()), 0);
  p.Flush(mgr());
  ASSERT_EQ(Poll(p, clock_.Now()).size(), 1u);
  ASSERT_TRUE(monitor.stalled());
  for (int i = 0; i < 10; ++i) {
    clock_.Advance(6ms);
    monitor.Tick(clock_.Now());
  }
  EXPECT_TRUE(monitor.stalled());
  EXPECT_GE(monitor.stats().probes, 2u);
}

TEST_F(PipelineTest, FailedJobsAreRedoneInlineAndTakeTheEngineOut) {
  FaultEngine engine({.workers = 1}, clock_);
  std::vector<EngineMonitor::Event> events;
  EngineMonitor monitor(engine, {.stall_timeout = 50ms},
                        [&](const EngineMonitor::Event& e) { events.push_back(e); });
  CryptoPipeline p(monitor, 8, kBuf);
  engine.SetMode(FaultEngine::Mode::kFail);
  const auto t0 = clock_.Now();
  for (std::size_t i = 0; i < 3; ++i) ASSERT_GE(Submit(p, i, t0), 0);
  p.Flush(mgr());
  const auto got = Poll(p, t0);  // failures complete at once: no deadline needed
  ASSERT_EQ(got.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(got[i].result, JobResult::kOk);
    EXPECT_EQ(got[i].bytes, Expected(i));
  }
  const auto s = monitor.stats();
  EXPECT_EQ(s.failed, 3u);
  EXPECT_EQ(s.fallbacks, 3u);
  EXPECT_EQ(s.stalls, 1u);
  EXPECT_EQ(s.state, EngineMonitor::State::kStalled);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, EngineMonitor::Event::Kind::kFailed);
}

TEST_F(PipelineTest, SlowEngineWithinTheDeadlineIsNotAStall) {
  FaultEngine engine({.workers = 1}, clock_);
  EngineMonitor monitor(engine, {.stall_timeout = 200ms});
  CryptoPipeline p(monitor, 8, kBuf);
  engine.SetMode(FaultEngine::Mode::kSlow, 10ms);
  const auto t0 = clock_.Now();
  for (std::size_t i = 0; i < 4; ++i) ASSERT_GE(Submit(p, i, t0), 0);
  p.Flush(mgr());
  // Held by the engine until its clock has moved 10 ms.
  engine.ReleaseDue();
  EXPECT_EQ(engine.held(), 4u);
  EXPECT_TRUE(Poll(p, t0).empty());
  clock_.Advance(9ms);
  engine.ReleaseDue();
  EXPECT_EQ(engine.held(), 4u);
  clock_.Advance(1ms);
  engine.ReleaseDue();
  EXPECT_EQ(engine.held(), 0u);
  const auto got = PollUntil(p, 4, clock_.Now());
  ASSERT_EQ(got.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) EXPECT_EQ(got[i].bytes, Expected(i));
  EXPECT_FALSE(monitor.stalled());
  EXPECT_EQ(monitor.stats().fallbacks, 0u);
}

TEST_F(PipelineTest, SlowEnginePastTheDeadlineStalls) {
  FaultEngine engine({.workers = 1}, clock_);
  EngineMonitor monitor(engine, {.stall_timeout = 20ms});
  CryptoPipeline p(monitor, 8, kBuf);
  engine.SetMode(FaultEngine::Mode::kSlow, 200ms);
  const auto t0 = clock_.Now();
  for (std::size_t i = 0; i < 4; ++i) ASSERT_GE(Submit(p, i, t0), 0);
  p.Flush(mgr());
  clock_.Advance(25ms);
  engine.ReleaseDue();
  EXPECT_EQ(engine.held(), 4u);  // due at 200 ms
  const auto got = Poll(p, clock_.Now());
  ASSERT_EQ(got.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) EXPECT_EQ(got[i].bytes, Expected(i));
  EXPECT_TRUE(monitor.stalled());
  EXPECT_EQ(monitor.stats().fallbacks, 4u);
}

TEST_F(PipelineTest, RingBoundRefusesAndCounts) {
  FaultEngine engine({.workers = 1}, clock_);
  EngineMonitor monitor(engine, {.stall_timeout = 50ms});
  CryptoPipeline p(monitor, 4, kBuf);
  engine.SetMode(FaultEngine::Mode::kStall);
  const auto t0 = clock_.Now();
  for (std::size_t i = 0; i < 4; ++i) ASSERT_GE(Submit(p, i, t0), 0);
  EXPECT_EQ(Submit(p, 4, t0), -1);
  EXPECT_EQ(monitor.stats().ring_full, 1u);
  p.Flush(mgr());
  EXPECT_EQ(Poll(p, t0 + 50ms).size(), 4u);
  EXPECT_GE(Submit(p, 4, t0), 0);  // room again
}

TEST_F(PipelineTest, EngineQueueBoundRefusesAndTheOwnerDoesTheRestInOrder) {
  FaultEngine engine({.workers = 1, .queue_capacity = 2}, clock_);
  EngineMonitor monitor(engine, {.stall_timeout = 50ms});
  CryptoPipeline p(monitor, 8, kBuf);
  engine.SetMode(FaultEngine::Mode::kStall);
  const auto t0 = clock_.Now();
  for (std::size_t i = 0; i < 5; ++i) ASSERT_GE(Submit(p, i, t0), 0);
  p.Flush(mgr());  // 2 held by the engine, 3 refused and done here
  EXPECT_EQ(monitor.stats().refused, 3u);
  EXPECT_EQ(engine.counters().refused.load(), 3u);
  // The refused ones wait behind the two the engine holds.
  EXPECT_TRUE(Poll(p, t0 + 10ms).empty());
  const auto got = Poll(p, t0 + 50ms);
  ASSERT_EQ(got.size(), 5u);
  for (std::size_t i = 0; i < 5; ++i) EXPECT_EQ(got[i].bytes, Expected(i));
  EXPECT_EQ(monitor.stats().fallbacks, 2u);
}

TEST_F(PipelineTest, InlineEngineCompletesAtSubmit) {
  InlineEngine engine;
  EngineMonitor monitor(engine, {});
  CryptoPipeline p(monitor, 4, kBuf);
  const auto t0 = clock_.Now();
  ASSERT_GE(Submit(p, 0, t0), 0);
  p.Flush(mgr());
  const auto got = Poll(p, t0);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].bytes, Expected(0));
}

// The engines run the jobs they take together (engine::ExecuteAndComplete): CBC + HMAC through
// the multi-buffer lanes, more than one esp::CryptoBatch's worth at a time for the inline
// engine. Same bytes as sealing one at a time, in order; a forgery among opens fails alone.
TEST_F(PipelineTest, EnginesBatchCbcJobsWithTheSameResultsAsInline) {
  UseSuite(crypto::EspSuite::kAesCbc256HmacSha256);
  InlineEngine inline_engine;
  AsyncEngine async_engine({.workers = 2, .queue_capacity = 128});
  for (CryptoEngine* engine : {static_cast<CryptoEngine*>(&inline_engine),
                               static_cast<CryptoEngine*>(&async_engine)}) {
    EngineMonitor monitor(*engine, {.stall_timeout = 30000ms});
    CryptoPipeline p(monitor, 128, kBuf);
    const auto now = clock_.Now();
    for (std::size_t i = 0; i < 100; ++i) ASSERT_GE(Submit(p, i, now), 0);
    p.Flush(mgr());
    auto got = PollUntil(p, 100, now);
    ASSERT_EQ(got.size(), 100u) << engine->name();
    std::vector<std::vector<std::uint8_t>> sealed;
    for (std::size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].result, JobResult::kOk);
      EXPECT_EQ(got[i].bytes, Expected(i)) << engine->name() << ", packet " << i;
      sealed.push_back(got[i].bytes);
    }
    sealed[50][40] ^= 0x02;  // forged, in the middle
    esp::InboundState in{0x1000, esp::ReplayWindow(1024)};
    for (std::size_t i = 0; i < sealed.size(); ++i) {
      std::size_t slot;
      std::span<std::uint8_t> buf;
      ASSERT_TRUE(p.Reserve(slot, buf));
      std::memcpy(buf.data(), sealed[i].data(), sealed[i].size());
      views_[slot] = esp::PacketView{buf, 0, sealed[i].size()};
      esp::CryptoOp op;
      ASSERT_EQ(esp::OpenPrepare(cipher_, in, views_[slot], op), esp::Status::kOk);
      p.Commit(slot, cipher_, op, buf.data(), now);
    }
    p.Flush(mgr());
    got = PollUntil(p, 100, now);
    ASSERT_EQ(got.size(), 100u) << engine->name();
    for (std::size_t i = 0; i < got.size(); ++i)
      EXPECT_EQ(got[i].result, i == 50 ? JobResult::kAuthFailed : JobResult::kOk) << i;
    EXPECT_EQ(monitor.stats().fallbacks, 0u);
    EXPECT_EQ(monitor.stats().stalls, 0u);
  }
}

TEST(MakeEngine, KnowsTheConfiguredNames) {
  EXPECT_STREQ(MakeEngine("inline")->name(), "inline");
  EXPECT_STREQ(MakeEngine("async")->name(), "async");
  EXPECT_STREQ(MakeEngine("fault")->name(), "fault");
  EXPECT_EQ(MakeEngine("qat"), nullptr);
}

}  // namespace
}  // namespace spigot::engine
