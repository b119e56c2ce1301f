// The time source for everything that schedules (STYLE.md 2 and 8): timers, lifetimes,
// retransmissions. Tests inject test_tools::FakeClock; production uses SteadyClock.
#pragma once

#include <chrono>

namespace spigot::io {

class Clock {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  virtual ~Clock() = default;
  virtual TimePoint Now() const = 0;
};

// std::chrono::steady_clock: monotonic, unaffected by wall-clock changes.
class SteadyClock final : public Clock {
 public:
  TimePoint Now() const override { return std::chrono::steady_clock::now(); }
};

// A process-wide SteadyClock, for callers that are given no clock.
Clock& DefaultClock();

}  // namespace spigot::io
