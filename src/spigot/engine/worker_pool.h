// A fixed pool of worker threads for the crypto-heavy part of IKE (DH and key derivation of a
// responder's IKE_SA_INIT), fed from the negotiation queue (DESIGN.md, cause 2). The daemon's
// Executor (executor.h); tests use test_tools::ManualExecutor instead.
//
// Bounds (STYLE.md 7): at most `capacity` jobs are queued or running. The pool never blocks
// its caller: TrySubmit refuses when full (counted in Stats::refused), and the control thread
// keeps new work in the negotiation queue until `free()` says there is room, so the backlog
// is visible as queue_depth and governed by max_queue.
//
// Threading: TrySubmit, free(), in_flight() and stats() are for one submitting thread (the
// control thread); jobs run on the workers; a job reports its result itself (for example by
// posting to the control thread's event loop), and must call nothing on the pool.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "spigot/engine/executor.h"

namespace spigot::engine {

class WorkerPool final : public Executor {
 public:
  // threads == 0: one per core (std::thread::hardware_concurrency, at least 1).
  WorkerPool(std::size_t threads, std::size_t capacity);
  ~WorkerPool() override;  // finishes the jobs already queued, then joins
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  bool TrySubmit(Job job) override;
  std::size_t threads() const override { return threads_.size(); }
  std::size_t capacity() const override { return capacity_; }
  std::size_t in_flight() const override { return in_flight_.load(std::memory_order_acquire); }
  std::size_t free() const override { return capacity_ - std::min(capacity_, in_flight()); }
  Stats stats() const override;

 private:
  void WorkerMain();

  const std::size_t capacity_;
  std::atomic<std::size_t> in_flight_{0};
  std::atomic<std::uint64_t> completed_{0};
  std::uint64_t submitted_ = 0, refused_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;  // guarded by mu_; at most capacity_
  bool stopping_ = false;  // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace spigot::engine
