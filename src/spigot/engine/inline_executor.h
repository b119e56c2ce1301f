// An engine::Executor without threads: every job runs at once, on the thread that submits it
// (the control thread), as the gateway did all its IKE public-key and DH work before issue 17.
// For measurements only: storm_test's comparison runs, and the daemon under
// SPIGOT_BENCH_IKE_INLINE=1 (bench/storm.sh's workers-vs-inline case). Never refuses a job and
// always has room: nothing is ever queued.
#pragma once

#include <cstddef>

#include "spigot/engine/executor.h"

namespace spigot::engine {

class InlineExecutor final : public Executor {
 public:
  bool TrySubmit(Job job) override {
    ++stats_.submitted;
    job();
    ++stats_.completed;
    return true;
  }
  std::size_t free() const override { return 1; }
  std::size_t threads() const override { return 0; }
  std::size_t capacity() const override { return 1; }
  std::size_t in_flight() const override { return 0; }
  Stats stats() const override { return stats_; }

 private:
  Stats stats_;
};

}  // namespace spigot::engine
