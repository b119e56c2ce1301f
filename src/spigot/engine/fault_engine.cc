#include "spigot/engine/fault_engine.h"

#include <algorithm>

namespace spigot::engine {
namespace {

}  // namespace

FaultEngine::FaultEngine(AsyncEngine::Options options, io::Clock& clock)
    : clock_(clock), inner_(options), capacity_(std::max<std::size_t>(options.queue_capacity, 1)) {
  held_.reserve(capacity_);
  releaser_ = std::thread([this] { Releaser(); });
}

FaultEngine::~FaultEngine() { Stop(); }

void FaultEngine::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (releaser_.joinable()) releaser_.join();
  inner_.Stop();
}

FaultEngine::Mode FaultEngine::mode() const {
  std::lock_guard<std::mutex> lock(mu_);
  return mode_;
}

void FaultEngine::SetMode(Mode mode, std::chrono::milliseconds delay) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    mode_ = mode;
    delay_ = delay;
    // Leaving a stall: what was held goes on now (the releaser hands it to the inner engine,
    // whose Claim discards the jobs the owner has taken back meanwhile).
    if (mode != Mode::kStall) {
      const auto now = clock_.Now();
      for (Held& h : held_) h.release = std::min(h.release, now + delay);
    }
  }
  cv_.notify_all();
}

std::size_t FaultEngine::Submit(std::span<const JobRef> jobs) {
  std::unique_lock<std::mutex> lock(mu_);
  if (stop_) return 0;
  switch (mode_) {
    case Mode::kNormal:
      if (held_.empty()) {
        lock.unlock();
        const std::size_t n = inner_.Submit(jobs);
        counters_.submitted.fetch_add(n, kRelaxed);
        counters_.refused.fetch_add(jobs.size() - n, kRelaxed);
        return n;
      }
      break;  // behind what is still held, to keep the order
    case Mode::kFail:
      for (const JobRef& ref : jobs) {
        if (Claim(ref)) Complete(ref, JobResult::kEngineError);
      }
      counters_.submitted.fetch_add(jobs.size(), kRelaxed);
      return jobs.size();
    case Mode::kStall:
    case Mode::kSlow:
      break;
  }
  const auto release =
      mode_ == Mode::kStall ? io::Clock::TimePoint::max() : clock_.Now() + delay_;
  const std::size_t n = std::min(jobs.size(), capacity_ - held_.size());
  for (std::size_t i = 0; i < n; ++i) held_.push_back(Held{jobs[i], release});
  counters_.submitted.fetch_add(n, kRelaxed);
  counters_.refused.fetch_add(jobs.size() - n, kRelaxed);
  lock.unlock();
  cv_.notify_all();
  return n;
}

bool FaultEngine::HandOnDue(std::unique_lock<std::mutex>& lock, std::vector<JobRef>& due) {
  const auto now = clock_.Now();
  std::size_t n = 0;
  while (n < held_.size() && held_[n].release <= now) due.push_back(held_[n++].ref);
  held_.erase(held_.begin(), held_.begin() + static_cast<long>(n));
  if (due.empty()) return false;
  lock.unlock();
  const std::size_t accepted = inner_.Submit(due);
  // The inner queue is as large as ours; if it is full anyway the owner's watchdog takes the
  // refused jobs back when their deadline passes.
  counters_.refused.fetch_add(due.size() - accepted, kRelaxed);
  due.clear();
  lock.lock();
  return true;
}

void FaultEngine::ReleaseDue() {
  std::vector<JobRef> due;
  std::unique_lock<std::mutex> lock(mu_);
  HandOnDue(lock, due);
}

std::size_t FaultEngine::held() const {
  std::lock_guard<std::mutex> lock(mu_);
  return held_.size();
}

void FaultEngine::Releaser() {
  std::vector<JobRef> due;
  due.reserve(capacity_);
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (HandOnDue(lock, due)) continue;
    if (held_.empty() || held_.front().release == io::Clock::TimePoint::max())
      cv_.wait(lock);
    else
      cv_.wait_for(lock, held_.front().release - clock_.Now());
  }
}

}  // namespace spigot::engine
