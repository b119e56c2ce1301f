// One deadline per key (the load generator keys its IKE SAs by our SPI), soonest first, for
// tens of thousands of keys: a binary min-heap with lazy deletion. Moving or cancelling a
// deadline costs O(log n) and leaves the old heap entry behind; an entry is stale when its
// deadline is no longer the key's current one, and is dropped when it surfaces. Stale entries
// are bounded: when they outnumber the live ones (plus a slack), the heap is rebuilt.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace spigot::loadgen {

class DeadlineHeap {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  // Rebuild once the heap holds this many entries more than twice the live deadlines.
  static constexpr std::size_t kCompactSlack = 1024;

  // Sets `key`'s deadline, replacing any earlier one. TimePoint::max() cancels.
  void Set(std::uint64_t key, TimePoint deadline);
  void Cancel(std::uint64_t key) { current_.erase(key); }
  // Removes the keys whose deadline is <= now and appends them to `out`, soonest first, at most
  // `max` of them. Each key comes out once per Set().
  std::size_t PopDue(TimePoint now, std::vector<std::uint64_t>& out, std::size_t max = SIZE_MAX);
  // The soonest live deadline; TimePoint::max() when there is none.
  TimePoint Next();

  std::size_t size() const { return current_.size(); }  // live deadlines
  std::size_t heap_entries() const { return heap_.size(); }  // live and stale

 private:
  struct Entry {
    TimePoint deadline;
    std::uint64_t key;
  };
  // std::*_heap build a max-heap; "greater" puts the soonest deadline on top.
  static bool Later(const Entry& a, const Entry& b) { return a.deadline > b.deadline; }
  bool Stale(const Entry& e) const;
  void DropStaleTop();
  void CompactIfMostlyStale();

  std::vector<Entry> heap_;
  std::unordered_map<std::uint64_t, TimePoint> current_;
};

}  // namespace spigot::loadgen
