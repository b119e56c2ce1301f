// Where the gateway's crypto-heavy IKE jobs run (STYLE.md 2: an interface where tests step
// in). engine::WorkerPool (worker_pool.h) is the real one: a fixed set of threads behind a
// bounded queue. test_tools::ManualExecutor queues jobs until the test runs them on its own
// thread, so a gateway test decides when work finishes and never waits for a thread.
//
// Contract for every implementation: at most capacity() jobs are queued or running; TrySubmit
// never blocks and refuses when full (counted in Stats::refused); a job reports its result
// itself (for example by posting to the control thread's event loop) and calls nothing on the
// executor it runs on, except that ManualExecutor lets it submit more.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

namespace spigot::engine {

class Executor {
 public:
  using Job = std::function<void()>;

  struct Stats {
    std::uint64_t submitted = 0;
    std::uint64_t completed = 0;
    std::uint64_t refused = 0;  // TrySubmit with the executor full
  };

  virtual ~Executor() = default;

  // Takes the job, or refuses it (false, counted) when capacity() jobs are queued or running.
  virtual bool TrySubmit(Job job) = 0;
  // Room for this many more jobs now: capacity() - in_flight().
  virtual std::size_t free() const = 0;
  // Threads the jobs run on; 0: they run on the caller's thread when it says so.
  virtual std::size_t threads() const = 0;
  virtual std::size_t capacity() const = 0;
  // Jobs queued or running.
  virtual std::size_t in_flight() const = 0;
  virtual Stats stats() const = 0;
};

}  // namespace spigot::engine
