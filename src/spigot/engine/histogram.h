// A distribution of durations in fixed buckets, for the Prometheus histograms of
// `metrics_listen` (control/metrics.h): how long negotiations take, how long IKE work waits in
// the negotiation queue. Observe() is O(buckets) with no allocation; memory is fixed.
//
// The counts are kept per bucket (an observation lands in the first bucket whose upper bound
// is >= it, or in the overflow bucket past the last bound); the exposition makes them
// cumulative, as Prometheus wants. Not thread-safe: one thread observes and copies.
#pragma once

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <vector>

namespace spigot::engine {

class Histogram {
 public:
  // `bounds`: upper bounds in seconds, strictly increasing.
  Histogram(std::initializer_list<double> bounds)
      : bounds_(bounds), counts_(bounds_.size() + 1, 0) {}

  void Observe(double seconds) {
    std::size_t i = 0;
    while (i < bounds_.size() && seconds > bounds_[i]) ++i;
    ++counts_[i];
    sum_ += seconds;
    ++count_;
    if (seconds > max_) max_ = seconds;
  }
  template <class Rep, class Period>
  void Observe(std::chrono::duration<Rep, Period> d) {
    Observe(std::chrono::duration<double>(d).count());
  }

  const std::vector<double>& bounds() const { return bounds_; }
  // Per bucket, not cumulative: counts()[i] for bounds()[i], the last for "> every bound".
  const std::vector<std::uint64_t>& counts() const { return counts_; }
  double sum() const { return sum_; }
  std::uint64_t count() const { return count_; }
  double max() const { return max_; }  // the largest observation, 0 before any
  // The q-quantile (0 < q <= 1), from above: the upper bound of the bucket it falls in, and at
  // most max() (which the overflow bucket and the top bucket may hold less than). 0 when empty.
  double Quantile(double q) const {
    if (count_ == 0) return 0;
    const double rank = q * static_cast<double>(count_);
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < bounds_.size(); ++i) {
      seen += counts_[i];
      if (static_cast<double>(seen) >= rank) return bounds_[i] < max_ ? bounds_[i] : max_;
    }
    return max_;
  }

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;
  double sum_ = 0;
  std::uint64_t count_ = 0;
  double max_ = 0;
};

}  // namespace spigot::engine
