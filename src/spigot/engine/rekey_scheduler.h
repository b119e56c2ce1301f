// Spreads CHILD SA rekeys over time (DESIGN.md, cause 2: renegotiation storms).
//
// Every installed CHILD SA has a soft-lifetime deadline (already jittered by the IKE SA). The
// scheduler keeps them in one min-heap by deadline and hands out due rekeys most overdue first,
// through a token bucket of `max_per_second` (burst: a tenth of a second's worth, so they come
// as a steady stream rather than a burst per second) and a sliding one-second window holding
// the starts of the last second: no window of one second ever sees more than max_per_second
// starts (at least one), so a wave of simultaneous expiries becomes a stream the peers and
// the worker threads can absorb.
// Bound: one entry per CHILD SA (the SPI pool bounds those); removed SAs are skipped lazily
// and compacted when they make up most of the heap.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <queue>
#include <unordered_map>
#include <vector>

#include "spigot/io/clock.h"

namespace spigot::engine {

class RekeyScheduler {
 public:
  using TimePoint = io::Clock::TimePoint;

  struct Stats {
    std::uint64_t scheduled = 0;
    std::uint64_t started = 0;   // handed out by Due()
    std::uint64_t deferred = 0;  // Due() calls that left due rekeys waiting for tokens
    std::uint64_t peak_per_second = 0;  // most starts seen within one second
    // The latest start: how long after its due time Due() handed a rekey out, in microseconds
    // (the caller's tick period, the rate limit and the caller's own lateness add up here).
    std::uint64_t max_start_lag_us = 0;
  };

  explicit RekeyScheduler(double max_per_second, TimePoint now);

  void SetRate(double max_per_second);
  double rate() const { return rate_; }
  // (Re)schedules the rekey of CHILD SA `spi` (our inbound SPI) at `due`.
  void Schedule(std::uint32_t spi, TimePoint due);
  // Forgets `spi` (deleted, or replaced by its rekey).
  void Cancel(std::uint32_t spi);
  // The rekeys to start now, most overdue first, at most what the token bucket allows.
  std::vector<std::uint32_t> Due(TimePoint now);
  // CHILD SAs past their deadline and not yet handed out.
  std::size_t Overdue(TimePoint now) const;
  std::size_t size() const { return live_.size(); }
  const Stats& stats() const { return stats_; }

 private:
  struct Entry {
    TimePoint due;
    std::uint32_t spi;
    std::uint64_t version;
    bool operator>(const Entry& o) const { return due > o.due; }
  };
  void Refill(TimePoint now);
  void Compact();
  std::size_t WindowCap() const;

  double rate_;
  double tokens_;
  TimePoint refilled_;
  std::deque<TimePoint> window_;  // starts in the last second; at most WindowCap()
  std::uint64_t next_version_ = 1;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap_;
  std::unordered_map<std::uint32_t, std::uint64_t> live_;  // spi -> version of its entry
  Stats stats_;
};

}  // namespace spigot::engine
