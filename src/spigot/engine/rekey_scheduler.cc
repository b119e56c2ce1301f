#include "spigot/engine/rekey_scheduler.h"

#include <algorithm>

namespace spigot::engine {

namespace {
double Burst(double rate) { return std::max(1.0, rate / 10); }
}  // namespace

RekeyScheduler::RekeyScheduler(double max_per_second, TimePoint now)
    : rate_(std::max(max_per_second, 0.001)), tokens_(Burst(rate_)), refilled_(now) {}

void RekeyScheduler::SetRate(double max_per_second) {
  rate_ = std::max(max_per_second, 0.001);
  tokens_ = std::min(tokens_, Burst(rate_));
  while (window_.size() > WindowCap()) window_.pop_front();
}

std::size_t RekeyScheduler::WindowCap() const {
  return std::max<std::size_t>(1, static_cast<std::size_t>(rate_));
}

void RekeyScheduler::Schedule(std::uint32_t spi, TimePoint due) {
  const std::uint64_t v = next_version_++;
  live_[spi] = v;
  heap_.push({due, spi, v});
  ++stats_.scheduled;
  Compact();
}

void RekeyScheduler::Cancel(std::uint32_t spi) {
  live_.erase(spi);
  Compact();
}

void RekeyScheduler::Refill(TimePoint now) {
  if (now <= refilled_) return;
  const double secs = std::chrono::duration<double>(now - refilled_).count();
  tokens_ = std::min(Burst(rate_), tokens_ + secs * rate_);
  refilled_ = now;
}

std::vector<std::uint32_t> RekeyScheduler::Due(TimePoint now) {
  Refill(now);
  while (!window_.empty() && now - window_.front() >= std::chrono::seconds(1)) window_.pop_front();
  std::vector<std::uint32_t> out;
  while (!heap_.empty() && heap_.top().due <= now) {
    const Entry e = heap_.top();
    auto it = live_.find(e.spi);
    if (it == live_.end() || it->second != e.version) {  // cancelled or rescheduled
      heap_.pop();
      continue;
    }
    if (tokens_ < 1.0 || window_.size() >= WindowCap()) {
      ++stats_.deferred;
      break;
    }
    tokens_ -= 1.0;
    window_.push_back(now);
    stats_.peak_per_second = std::max<std::uint64_t>(stats_.peak_per_second, window_.size());
    heap_.pop();
    live_.erase(it);
    out.push_back(e.spi);
    ++stats_.started;
    const auto lag = std::chrono::duration_cast<std::chrono::microseconds>(now - e.due).count();
    stats_.max_start_lag_us = std::max<std::uint64_t>(stats_.max_start_lag_us, static_cast<std::uint64_t>(lag));
  }
  return out;
}

std::size_t RekeyScheduler::Overdue(TimePoint now) const {
  std::size_t n = 0;
  auto copy = heap_;
  while (!copy.empty() && copy.top().due <= now) {
    auto it = live_.find(copy.top().spi);
    if (it != live_.end() && it->second == copy.top().version) ++n;
    copy.pop();
  }
  return n;
}

void RekeyScheduler::Compact() {
  // Stale entries (cancelled or rescheduled) are dropped when they outnumber live ones.
  if (heap_.size() < 64 || heap_.size() < 2 * live_.size()) return;
  std::vector<Entry> keep;
  keep.reserve(live_.size());
  while (!heap_.empty()) {
    const Entry& e = heap_.top();
    auto it = live_.find(e.spi);
    if (it != live_.end() && it->second == e.version) keep.push_back(e);
    heap_.pop();
  }
  heap_ = decltype(heap_)(std::greater<Entry>(), std::move(keep));
}

}  // namespace spigot::engine
