// The negotiation queue (`max_queue`, Windows' MaxQ): IKE work waiting for the control thread,
// bounded, with three priorities (DESIGN.md, causes 1 and 2):
//   kEstablished  requests on established IKE SAs: rekeys, deletes, liveness (never refused
//                 while lower-priority work waits: it is evicted instead)
//   kHalfOpen     exchanges continuing a half-open IKE SA (IKE_AUTH)
//   kNew          new IKE_SA_INIT requests and acquires
// When the queue is full an arrival is refused if nothing of lower priority is queued;
// otherwise the newest item of the lowest priority present is evicted to make room. Refusals
// and evictions return / count STATUS_IPSEC_QUEUE_OVERFLOW (0xC000A010) in `overflows`.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>

namespace spigot::engine {

inline constexpr std::uint32_t kStatusSuccess = 0;
inline constexpr std::uint32_t kStatusIpsecQueueOverflow = 0xC000A010;

enum class Priority : std::uint8_t { kEstablished = 0, kHalfOpen = 1, kNew = 2 };
inline constexpr int kPriorities = 3;

class NegotiationQueue {
 public:
  using Work = std::function<void()>;

  struct Stats {
    std::uint64_t submitted = 0;
    std::uint64_t overflows = 0;  // refused arrivals + evicted items
    std::uint64_t evicted = 0;    // of which: queued work dropped for higher-priority work
    std::uint64_t processed = 0;
    std::uint64_t by_priority_overflow[kPriorities] = {};
  };

  explicit NegotiationQueue(std::size_t max_depth) : max_(max_depth < 1 ? 1 : max_depth) {}

  // Returns kStatusSuccess or kStatusIpsecQueueOverflow (the work was not queued).
  std::uint32_t Submit(Priority p, Work work);
  // Runs up to `max_items` queued items, highest priority first, FIFO within a priority, and
  // none below `lowest` (new work waits while the IKE worker pool is full, say, and rekeys
  // and deletes go on).
  std::size_t Run(std::size_t max_items, Priority lowest = Priority::kNew);

  void SetMaxDepth(std::size_t max_depth) { max_ = max_depth < 1 ? 1 : max_depth; }
  std::size_t max_depth() const { return max_; }
  std::size_t depth() const { return q_[0].size() + q_[1].size() + q_[2].size(); }
  std::size_t depth(Priority p) const { return q_[static_cast<int>(p)].size(); }
  const Stats& stats() const { return stats_; }

 private:
  std::size_t max_;
  std::deque<Work> q_[kPriorities];
  Stats stats_;
};

}  // namespace spigot::engine
