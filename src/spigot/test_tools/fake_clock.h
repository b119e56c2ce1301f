// A Clock that moves only when the test says so.
#pragma once

#include <atomic>
#include <chrono>

#include "spigot/io/clock.h"

namespace spigot::test_tools {

class FakeClock final : public io::Clock {
 public:
  // Starts an hour past the epoch, so tests may subtract from Now() without going negative.
  explicit FakeClock(TimePoint start = TimePoint{} + std::chrono::hours(1))
      : now_ns_(start.time_since_epoch().count()) {}

  TimePoint Now() const override { return TimePoint(TimePoint::duration(now_ns_.load())); }
  void Advance(std::chrono::nanoseconds d) { now_ns_ += TimePoint::duration(d).count(); }
  void Set(TimePoint t) { now_ns_ = t.time_since_epoch().count(); }

 private:
  // Atomic so a test may read it from a helper thread while the test thread advances it.
  std::atomic<TimePoint::rep> now_ns_;
};

}  // namespace spigot::test_tools
