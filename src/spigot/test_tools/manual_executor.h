// An engine::Executor whose jobs run when the test says so, on the test's thread, in the order
// they were submitted. A gateway test decides when IKE work finishes: no threads, no waiting.
//
// Bound: at most `capacity` jobs queued or running, like WorkerPool; past it TrySubmit refuses
// and counts it. A job may submit more (they queue behind); RunAll() runs until none is left.
// Not thread-safe: one thread submits and runs.
#pragma once

#include <algorithm>
#include <cstddef>
#include <deque>
#include <utility>

#include "spigot/engine/executor.h"

namespace spigot::test_tools {

class ManualExecutor final : public engine::Executor {
 public:
  explicit ManualExecutor(std::size_t capacity) : capacity_(std::max<std::size_t>(1, capacity)) {}

  bool TrySubmit(Job job) override {
    if (in_flight() >= capacity_) {
      ++stats_.refused;
      return false;
    }
    ++stats_.submitted;
    queue_.push_back(std::move(job));
    return true;
  }
  std::size_t free() const override { return capacity_ - std::min(capacity_, in_flight()); }
  std::size_t threads() const override { return 0; }
  std::size_t capacity() const override { return capacity_; }
  // Queued jobs, plus the one running (a job that submits more sees itself counted).
  std::size_t in_flight() const override { return queue_.size() + running_; }
  Stats stats() const override { return stats_; }

  // Jobs waiting to run.
  std::size_t pending() const { return queue_.size(); }
  // Runs the oldest queued job; false if there was none.
  bool RunOne() {
    if (queue_.empty()) return false;
    Job job = std::move(queue_.front());
    queue_.pop_front();
    ++running_;
    job();
    --running_;
    ++stats_.completed;
    return true;
  }
  // Runs queued jobs, and the ones they submit, until none is left. Returns how many ran.
  std::size_t RunAll() {
    std::size_t n = 0;
    while (RunOne()) ++n;
    return n;
  }

 private:
  const std::size_t capacity_;
  std::deque<Job> queue_;  // at most capacity_ (with running_)
  std::size_t running_ = 0;
  Stats stats_;
};

}  // namespace spigot::test_tools
