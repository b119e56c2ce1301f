#include "spigot/engine/async_engine.h"

#include <algorithm>

namespace spigot::engine {
namespace {

// Jobs a worker takes from the submission queue per lock.
constexpr std::size_t kWorkerBatch = 16;
static_assert(kWorkerBatch <= esp::CryptoBatch::kCapacity);

}  // namespace

AsyncEngine::AsyncEngine(Options options) : queue_(std::max<std::size_t>(options.queue_capacity, 1)) {
  for (std::size_t i = 0; i < std::max<std::size_t>(options.workers, 1); ++i)
    workers_.emplace_back([this] { Worker(); });
}

AsyncEngine::~AsyncEngine() { Stop(); }

void AsyncEngine::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) {
    if (t.joinable()) t.join();
  }
}

std::size_t AsyncEngine::Submit(std::span<const JobRef> jobs) {
  std::size_t n = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return 0;
    n = std::min(jobs.size(), queue_.size() - size_);
    for (std::size_t i = 0; i < n; ++i) queue_[(head_ + size_ + i) % queue_.size()] = jobs[i];
    size_ += n;
  }
  counters_.submitted.fetch_add(n, kRelaxed);
  counters_.refused.fetch_add(jobs.size() - n, kRelaxed);
  if (n > 0) {
    if (workers_.size() > 1 && n > kWorkerBatch) cv_.notify_all();
    else cv_.notify_one();
  }
  return n;
}

void AsyncEngine::Worker() {
  crypto::ImbManager& mgr = crypto::ImbManager::ForThisThread();
  JobRef batch[kWorkerBatch];
  JobRef claimed[kWorkerBatch];
  esp::CryptoBatch crypto_batch;  // the claimed jobs run together (multi-buffer for CBC + HMAC)
  for (;;) {
    std::size_t n = 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || size_ > 0; });
      if (stop_) return;
      n = std::min(size_, kWorkerBatch);
      for (std::size_t i = 0; i < n; ++i) batch[i] = queue_[(head_ + i) % queue_.size()];
      head_ = (head_ + n) % queue_.size();
      size_ -= n;
    }
    std::size_t c = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (!Claim(batch[i])) {
        counters_.late_discarded.fetch_add(1, kRelaxed);
        continue;
      }
      claimed[c++] = batch[i];
    }
    ExecuteAndComplete(mgr, crypto_batch, {claimed, c});
    counters_.completed.fetch_add(c, kRelaxed);
  }
}

}  // namespace spigot::engine
