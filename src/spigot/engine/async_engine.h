// A lookaside crypto engine: jobs go to worker threads through a bounded submission queue and
// complete through their job's state word plus a wake-up signal, the way hardware offload and
// crypto accelerators work (the job protocol is in crypto_engine.h).
//
// Bound (STYLE.md 7): the submission queue holds at most `queue_capacity` jobs. Full: Submit()
// accepts a prefix and the caller runs the rest inline (counted in `refused`), so a slow
// engine costs throughput, never packets.
#pragma once

#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "spigot/engine/crypto_engine.h"

namespace spigot::engine {

class AsyncEngine : public CryptoEngine {
 public:
  struct Options {
    std::size_t workers = 1;
    std::size_t queue_capacity = 4096;
  };
  explicit AsyncEngine(Options options);
  ~AsyncEngine() override;
  const char* name() const override { return "async"; }
  std::size_t Submit(std::span<const JobRef> jobs) override;
  void Stop() override;

 private:
  void Worker();

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<JobRef> queue_;  // ring of queue_capacity
  std::size_t head_ = 0, size_ = 0;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace spigot::engine
