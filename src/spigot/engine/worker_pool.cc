#include "spigot/engine/worker_pool.h"

#include <algorithm>

namespace spigot::engine {

WorkerPool::WorkerPool(std::size_t threads, std::size_t capacity)
    : capacity_(std::max<std::size_t>(1, capacity)) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  threads_.reserve(threads);
  for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { WorkerMain(); });
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

bool WorkerPool::TrySubmit(Job job) {
  if (in_flight() >= capacity_) {
    ++refused_;
    return false;
  }
  in_flight_.fetch_add(1, std::memory_order_acq_rel);
  ++submitted_;
  {
    std::lock_guard lock(mu_);
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
  return true;
}

WorkerPool::Stats WorkerPool::stats() const {
  return Stats{submitted_, completed_.load(std::memory_order_relaxed), refused_};
}

void WorkerPool::WorkerMain() {
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, and nothing left to do
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
    completed_.fetch_add(1, std::memory_order_relaxed);
    in_flight_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

}  // namespace spigot::engine
