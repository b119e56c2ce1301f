// Events per minute over a sliding window of 60 one-second buckets: O(1) to record and to
// read, a fixed 60 counters of memory whatever the rate.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>

#include "spigot/io/clock.h"

namespace spigot::gateway {

class RateWindow {
 public:
  using TimePoint = io::Clock::TimePoint;

  void Record(TimePoint now, std::uint32_t n = 1) {
    Advance(now);
    buckets_[static_cast<std::size_t>(second_ % 60)] += n;
  }
  // Events in the last 60 s (the current, partial second included).
  double PerMinute(TimePoint now) {
    Advance(now);
    std::uint64_t sum = 0;
    for (std::uint32_t b : buckets_) sum += b;
    return static_cast<double>(sum);
  }

 private:
  void Advance(TimePoint now) {
    const std::int64_t s =
        std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
    if (started_ && s <= second_) return;
    if (!started_ || s - second_ >= 60) {
      buckets_.fill(0);
    } else {
      for (std::int64_t t = second_ + 1; t <= s; ++t) buckets_[static_cast<std::size_t>(t % 60)] = 0;
    }
    second_ = s;
    started_ = true;
  }

  std::array<std::uint32_t, 60> buckets_{};
  std::int64_t second_ = 0;
  bool started_ = false;
};

}  // namespace spigot::gateway
