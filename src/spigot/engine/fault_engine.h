// Test only (`crypto_engine = "fault"`, `spigot debug crypto-fault`): an AsyncEngine with a
// fault switch, so the watchdog (crypto_engine.h) can be seen to work in a running daemon.
//   kStall: accepted jobs are held, never completed, until the mode changes (they are then
//           handed on, and the ones already taken back are discarded by the engine's Claim).
//   kSlow:  each job is handed on `delay` after it was submitted.
//   kFail:  each job completes at once with kEngineError.
// Bound: held jobs are bounded like the inner queue; beyond it Submit() refuses.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "spigot/engine/async_engine.h"
#include "spigot/io/clock.h"

namespace spigot::engine {

class FaultEngine final : public CryptoEngine {
 public:
  enum class Mode : std::uint8_t { kNormal, kStall, kSlow, kFail };
  // `clock` times kSlow's delay; tests pass a test_tools::FakeClock.
  explicit FaultEngine(AsyncEngine::Options options, io::Clock& clock = io::DefaultClock());
  ~FaultEngine() override;
  const char* name() const override { return "fault"; }
  std::size_t Submit(std::span<const JobRef> jobs) override;
  void Stop() override;

  void SetMode(Mode mode, std::chrono::milliseconds delay = {});
  Mode mode() const;
  // Hands on the held jobs that are due by the clock, on the calling thread. The releaser
  // thread does this as a real clock moves; a test that moves a fake clock calls it.
  void ReleaseDue();
  // Jobs held (stalled or delayed), not yet handed on.
  std::size_t held() const;
  // Late discards happen in the inner engine.
  std::uint64_t late_discarded() const override {
    return CryptoEngine::late_discarded() + inner_.late_discarded();
  }

 private:
  struct Held {
    JobRef ref;
    io::Clock::TimePoint release;
  };
  void Releaser();
  // Takes the held jobs due now off the front and submits them to inner_ (unlocked while it
  // does). Returns false if none was due.
  bool HandOnDue(std::unique_lock<std::mutex>& lock, std::vector<JobRef>& due);

  io::Clock& clock_;
  AsyncEngine inner_;
  std::size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  Mode mode_ = Mode::kNormal;
  std::chrono::milliseconds delay_{0};
  std::vector<Held> held_;  // FIFO of at most capacity_ (erased from the front in batches)
  bool stop_ = false;
  std::thread releaser_;
};

}  // namespace spigot::engine
