// Crypto engines and the watchdog: async output equals inline output; a stalled engine's jobs
// are taken back after the timeout and redone inline in order; late completions are discarded;
// a probe brings the engine back; failed jobs are redone; every bound refuses at its edge.
#include "spigot/engine/crypto_engine.h"

#include <gtest/gtest.h>

#include <cstring>
#include <thread>
#include <vector>

#include "spigot/engine/async_engine.h"
#include "spigot/engine/fault_engine.h"
#include "spigot/engine/inline_engine.h"

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
  void SetUp() override {
    std::vector<std::uint8_t> key(crypto::SuiteInfo(crypto::EspSuite::kAesGcm128).keymat_len(), 0x11);
    ASSERT_TRUE(cipher_.Init(mgr(), crypto::EspSuite::kAesGcm128, key));
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
  // Polls until `n` jobs were delivered or a second passed (engines run on other threads).
  std::vector<Delivered> PollUntil(CryptoPipeline& p, std::size_t n) {
    std::vector<Delivered> all;
    const auto give_up = io::DefaultClock().Now() + 1s;
    while (all.size() < n && io::DefaultClock().Now() < give_up) {
      for (auto& d : Poll(p, io::DefaultClock().Now())) all.push_back(std::move(d));
      std::this_thread::sleep_for(200us);
    }
    return all;
  }

  crypto::EspCipher cipher_;
  esp::PacketView views_[64];
};

TEST_F(PipelineTest, AsyncSealEqualsInlineInOrder) {
  AsyncEngine engine({.workers = 2, .queue_capacity = 64});
  EngineMonitor monitor(engine, {.stall_timeout = 1000ms});
  CryptoPipeline p(monitor, 64, kBuf);
  const auto now = io::DefaultClock().Now();
  for (std::size_t i = 0; i < 40; ++i) ASSERT_GE(Submit(p, i, now), 0);
  p.Flush(mgr());
  const auto got = PollUntil(p, 40);
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
    p.Commit(slot, cipher_, op, buf.data(), io::DefaultClock().Now());
  }
  p.Flush(mgr());
  const auto got = PollUntil(p, 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].result, JobResult::kOk);
  EXPECT_EQ(got[1].result, JobResult::kAuthFailed);
}

TEST_F(PipelineTest, StallFiresAfterTimeoutAndRedoesInFlightJobsInlineInOrder) {
  FaultEngine engine({.workers = 1, .queue_capacity = 64});
  std::vector<EngineMonitor::Event> events;
  EngineMonitor monitor(engine, {.stall_timeout = 50ms},
                        [&](const EngineMonitor::Event& e) { events.push_back(e); });
  CryptoPipeline p(monitor, 16, kBuf);
  engine.SetMode(FaultEngine::Mode::kStall);
  const auto t0 = io::DefaultClock().Now();
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
  FaultEngine engine({.workers = 1, .queue_capacity = 64});
  EngineMonitor monitor(engine, {.stall_timeout = 50ms});
  CryptoPipeline p(monitor, 4, kBuf);
  engine.SetMode(FaultEngine::Mode::kStall);
  const auto t0 = io::DefaultClock().Now();
  for (std::size_t i = 0; i < 3; ++i) ASSERT_GE(Submit(p, i, t0), 0);
  p.Flush(mgr());
  ASSERT_EQ(Poll(p, t0 + 60ms).size(), 3u);
  // The slots are reused for new packets, submitted while the engine still holds the old
  // references; then the engine wakes up and tries to complete the old jobs.
  const auto t1 = io::DefaultClock().Now();
  engine.SetMode(FaultEngine::Mode::kStall);
  for (std::size_t i = 3; i < 6; ++i) ASSERT_GE(Submit(p, i, t1), 0);
  // Not flushed: the new jobs are only in the ring, so only the stale references can run.
  engine.SetMode(FaultEngine::Mode::kNormal);
  const auto give_up = io::DefaultClock().Now() + 1s;
  while (engine.late_discarded() < 3 && io::DefaultClock().Now() < give_up) std::this_thread::sleep_for(1ms);
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
  FaultEngine engine({.workers = 1});
  std::vector<EngineMonitor::Event> events;
  EngineMonitor monitor(engine, {.stall_timeout = 20ms, .probe_interval = 10ms},
                        [&](const EngineMonitor::Event& e) { events.push_back(e); });
  CryptoPipeline p(monitor, 4, kBuf);
  engine.SetMode(FaultEngine::Mode::kStall);
  auto t = io::DefaultClock().Now();
  ASSERT_GE(Submit(p, 0, t), 0);
  p.Flush(mgr());
  ASSERT_EQ(Poll(p, t + 20ms).size(), 1u);
  ASSERT_TRUE(monitor.stalled());

  // Stalled: probes go out every interval and get no answer.
  for (int i = 0; i < 5; ++i) {
    std::this_thread::sleep_for(25ms);
    monitor.Tick(io::DefaultClock().Now());
  }
  EXPECT_TRUE(monitor.stalled());
  EXPECT_GE(monitor.stats().probes, 2u);

  engine.SetMode(FaultEngine::Mode::kNormal);
  const auto give_up = io::DefaultClock().Now() + 2s;
  while (monitor.stalled() && io::DefaultClock().Now() < give_up) {
    std::this_thread::sleep_for(5ms);
    monitor.Tick(io::DefaultClock().Now());
  }
  EXPECT_FALSE(monitor.stalled());
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].kind, EngineMonitor::Event::Kind::kRecovered);
  EXPECT_GE(events[1].probes, 1u);
  // Back in service: jobs go to the engine again.
  EXPECT_FALSE(p.Bypass());
  ASSERT_GE(Submit(p, 1, io::DefaultClock().Now()), 0);
  p.Flush(mgr());
  const auto got = PollUntil(p, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].bytes, Expected(1));
  EXPECT_EQ(monitor.stats().fallbacks, 1u);
}

TEST_F(PipelineTest, ProbeFailingWithAnErrorKeepsTheEngineOut) {
  FaultEngine engine({.workers = 1});
  EngineMonitor monitor(engine, {.stall_timeout = 20ms, .probe_interval = 5ms});
  CryptoPipeline p(monitor, 4, kBuf);
  engine.SetMode(FaultEngine::Mode::kFail);
  ASSERT_GE(Submit(p, 0, io::DefaultClock().Now()), 0);
  p.Flush(mgr());
  ASSERT_EQ(Poll(p, io::DefaultClock().Now()).size(), 1u);
  ASSERT_TRUE(monitor.stalled());
  for (int i = 0; i < 10; ++i) {
    std::this_thread::sleep_for(6ms);
    monitor.Tick(io::DefaultClock().Now());
  }
  EXPECT_TRUE(monitor.stalled());
  EXPECT_GE(monitor.stats().probes, 2u);
}

TEST_F(PipelineTest, FailedJobsAreRedoneInlineAndTakeTheEngineOut) {
  FaultEngine engine({.workers = 1});
  std::vector<EngineMonitor::Event> events;
  EngineMonitor monitor(engine, {.stall_timeout = 50ms},
                        [&](const EngineMonitor::Event& e) { events.push_back(e); });
  CryptoPipeline p(monitor, 8, kBuf);
  engine.SetMode(FaultEngine::Mode::kFail);
  const auto t0 = io::DefaultClock().Now();
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
  FaultEngine engine({.workers = 1});
  EngineMonitor monitor(engine, {.stall_timeout = 200ms});
  CryptoPipeline p(monitor, 8, kBuf);
  engine.SetMode(FaultEngine::Mode::kSlow, 10ms);
  const auto t0 = io::DefaultClock().Now();
  for (std::size_t i = 0; i < 4; ++i) ASSERT_GE(Submit(p, i, t0), 0);
  p.Flush(mgr());
  EXPECT_TRUE(Poll(p, io::DefaultClock().Now()).empty());
  const auto got = PollUntil(p, 4);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_GE(io::DefaultClock().Now() - t0, 10ms);
  for (std::size_t i = 0; i < 4; ++i) EXPECT_EQ(got[i].bytes, Expected(i));
  EXPECT_FALSE(monitor.stalled());
  EXPECT_EQ(monitor.stats().fallbacks, 0u);
}

TEST_F(PipelineTest, SlowEnginePastTheDeadlineStalls) {
  FaultEngine engine({.workers = 1});
  EngineMonitor monitor(engine, {.stall_timeout = 20ms});
  CryptoPipeline p(monitor, 8, kBuf);
  engine.SetMode(FaultEngine::Mode::kSlow, 200ms);
  const auto t0 = io::DefaultClock().Now();
  for (std::size_t i = 0; i < 4; ++i) ASSERT_GE(Submit(p, i, t0), 0);
  p.Flush(mgr());
  std::this_thread::sleep_for(25ms);
  const auto got = Poll(p, io::DefaultClock().Now());
  ASSERT_EQ(got.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) EXPECT_EQ(got[i].bytes, Expected(i));
  EXPECT_TRUE(monitor.stalled());
  EXPECT_EQ(monitor.stats().fallbacks, 4u);
}

TEST_F(PipelineTest, RingBoundRefusesAndCounts) {
  FaultEngine engine({.workers = 1});
  EngineMonitor monitor(engine, {.stall_timeout = 50ms});
  CryptoPipeline p(monitor, 4, kBuf);
  engine.SetMode(FaultEngine::Mode::kStall);
  const auto t0 = io::DefaultClock().Now();
  for (std::size_t i = 0; i < 4; ++i) ASSERT_GE(Submit(p, i, t0), 0);
  EXPECT_EQ(Submit(p, 4, t0), -1);
  EXPECT_EQ(monitor.stats().ring_full, 1u);
  p.Flush(mgr());
  EXPECT_EQ(Poll(p, t0 + 50ms).size(), 4u);
  EXPECT_GE(Submit(p, 4, t0), 0);  // room again
}

TEST_F(PipelineTest, EngineQueueBoundRefusesAndTheOwnerDoesTheRestInOrder) {
  FaultEngine engine({.workers = 1, .queue_capacity = 2});
  EngineMonitor monitor(engine, {.stall_timeout = 50ms});
  CryptoPipeline p(monitor, 8, kBuf);
  engine.SetMode(FaultEngine::Mode::kStall);
  const auto t0 = io::DefaultClock().Now();
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
  const auto t0 = io::DefaultClock().Now();
  ASSERT_GE(Submit(p, 0, t0), 0);
  p.Flush(mgr());
  const auto got = Poll(p, t0);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].bytes, Expected(0));
}

TEST(MakeEngine, KnowsTheConfiguredNames) {
  EXPECT_STREQ(MakeEngine("inline")->name(), "inline");
  EXPECT_STREQ(MakeEngine("async")->name(), "async");
  EXPECT_STREQ(MakeEngine("fault")->name(), "fault");
  EXPECT_EQ(MakeEngine("qat"), nullptr);
}

}  // namespace
}  // namespace spigot::engine
