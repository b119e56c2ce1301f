#include "spigot/loadgen/deadline_heap.h"

#include <algorithm>

namespace spigot::loadgen {

void DeadlineHeap::Set(std::uint64_t key, TimePoint deadline) {
  if (deadline == TimePoint::max()) return Cancel(key);
  auto [it, inserted] = current_.try_emplace(key, deadline);
  if (!inserted) {
    if (it->second == deadline) return;  // its entry is in the heap already
    it->second = deadline;
  }
  heap_.push_back({deadline, key});
  std::push_heap(heap_.begin(), heap_.end(), Later);
  CompactIfMostlyStale();
}

bool DeadlineHeap::Stale(const Entry& e) const {
  const auto it = current_.find(e.key);
  return it == current_.end() || it->second != e.deadline;
}

void DeadlineHeap::DropStaleTop() {
  while (!heap_.empty() && Stale(heap_.front())) {
    std::pop_heap(heap_.begin(), heap_.end(), Later);
    heap_.pop_back();
  }
}

std::size_t DeadlineHeap::PopDue(TimePoint now, std::vector<std::uint64_t>& out, std::size_t max) {
  std::size_t n = 0;
  for (DropStaleTop(); n < max && !heap_.empty() && heap_.front().deadline <= now; DropStaleTop()) {
    const std::uint64_t key = heap_.front().key;
    std::pop_heap(heap_.begin(), heap_.end(), Later);
    heap_.pop_back();
    current_.erase(key);
    out.push_back(key);
    ++n;
  }
  return n;
}

DeadlineHeap::TimePoint DeadlineHeap::Next() {
  DropStaleTop();
  return heap_.empty() ? TimePoint::max() : heap_.front().deadline;
}

void DeadlineHeap::CompactIfMostlyStale() {
  if (heap_.size() <= 2 * current_.size() + kCompactSlack) return;
  heap_.clear();
  for (const auto& [key, deadline] : current_) heap_.push_back({deadline, key});
  std::make_heap(heap_.begin(), heap_.end(), Later);
}

}  // namespace spigot::loadgen
