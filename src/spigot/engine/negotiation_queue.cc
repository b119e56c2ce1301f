#include "spigot/engine/negotiation_queue.h"

namespace spigot::engine {

std::uint32_t NegotiationQueue::Submit(Priority p, Work work) {
  ++stats_.submitted;
  const int prio = static_cast<int>(p);
  if (depth() >= max_) {
    // Make room by evicting the newest item of the lowest priority below this one.
    int victim = -1;
    for (int lower = kPriorities - 1; lower > prio; --lower) {
      if (!q_[lower].empty()) {
        victim = lower;
        break;
      }
    }
    if (victim < 0) {
      ++stats_.overflows;
      ++stats_.by_priority_overflow[prio];
      return kStatusIpsecQueueOverflow;
    }
    q_[victim].pop_back();
    ++stats_.overflows;
    ++stats_.evicted;
    ++stats_.by_priority_overflow[victim];
  }
  q_[prio].push_back(std::move(work));
  return kStatusSuccess;
}

std::size_t NegotiationQueue::Run(std::size_t max_items, Priority lowest) {
  const int last = static_cast<int>(lowest);
  std::size_t n = 0;
  while (n < max_items) {
    int prio = 0;
    while (prio <= last && q_[prio].empty()) ++prio;
    if (prio > last) break;
    Work w = std::move(q_[prio].front());
    q_[prio].pop_front();
    ++n;
    ++stats_.processed;
    w();
  }
  return n;
}

}  // namespace spigot::engine
