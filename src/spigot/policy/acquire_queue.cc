#include "spigot/policy/acquire_queue.h"

#include <algorithm>
#include <bit>
#include <cstring>

namespace spigot::policy {
namespace {


}  // namespace

const char* ToString(HoldStatus s) {
  switch (s) {
    case HoldStatus::kQueued: return "queued";
    case HoldStatus::kOverflow: return "overflow";
    case HoldStatus::kTooLarge: return "too_large";
  }
  return "?";
}

AcquireQueue::AcquireQueue(const AcquireQueueOptions& options) : options_(options) {
  options_.max_packets_per_acquire = std::max<std::uint32_t>(options_.max_packets_per_acquire, 1);
  options_.buffer_size = std::max<std::uint32_t>(options_.buffer_size, 1);
  options_.max_acquires = std::max<std::uint32_t>(options_.max_acquires, 1);
  const std::size_t buffers = std::clamp<std::size_t>(options_.max_bytes / options_.buffer_size,
                                                      1, kNone - 1);
  options_.max_bytes = buffers * options_.buffer_size;

  // Default-initialized: pages are mapped on first write, not here.
  slab_.reset(new std::uint8_t[options_.max_bytes]);
  buffer_next_.resize(buffers);
  buffer_length_.resize(buffers);
  for (std::size_t b = buffers; b-- > 0;) {
    buffer_next_[b] = free_buffers_;
    free_buffers_ = static_cast<std::uint32_t>(b);
  }

  acquires_.resize(options_.max_acquires);
  for (std::size_t a = acquires_.size(); a-- > 0;) {
    acquires_[a].older = free_acquires_;
    free_acquires_ = static_cast<std::uint32_t>(a);
  }
  const auto bits = static_cast<std::uint32_t>(
      std::bit_width(std::size_t{options_.max_acquires} * 2 - 1));
  const std::uint32_t table_bits = std::max<std::uint32_t>(bits, 1);
  index_.assign(std::size_t{1} << table_bits, kNone);
  index_mask_ = (std::uint32_t{1} << table_bits) - 1;
  index_shift_ = static_cast<std::uint8_t>(64 - table_bits);
}

AcquireQueue::~AcquireQueue() = default;

std::uint32_t AcquireQueue::Slot(PolicyId id) const {
  return static_cast<std::uint32_t>((std::uint64_t{id} * kGolden) >> index_shift_);
}

std::uint32_t AcquireQueue::Find(PolicyId id) const {
  for (std::uint32_t i = Slot(id);; i = (i + 1) & index_mask_) {
    const std::uint32_t a = index_[i];
    if (a == kNone) return kNone;
    if (acquires_[a].id == id) return a;
  }
}

std::uint32_t AcquireQueue::Open(PolicyId id, TimePoint now) {
  const std::uint32_t a = free_acquires_;
  if (a == kNone) return kNone;
  Acquire& acq = acquires_[a];
  free_acquires_ = acq.older;
  acq = Acquire{};
  acq.id = id;
  acq.opened = now;
  // Append to the age list (opened times never decrease: see Hold).
  acq.older = newest_;
  if (newest_ != kNone) acquires_[newest_].newer = a;
  newest_ = a;
  if (oldest_ == kNone) oldest_ = a;

  std::uint32_t i = Slot(id);
  while (index_[i] != kNone) i = (i + 1) & index_mask_;
  index_[i] = a;
  ++stats_.acquires_pending;
  ++stats_.acquires_opened;
  return a;
}

std::uint32_t AcquireQueue::Close(std::uint32_t a) {
  Acquire& acq = acquires_[a];

  // Index: find the entry, then backward-shift deletion (no tombstones): move later entries of
  // the probe run into the hole when their home slot does not lie strictly after the hole.
  std::uint32_t hole = Slot(acq.id);
  while (index_[hole] != a) hole = (hole + 1) & index_mask_;
  for (std::uint32_t j = (hole + 1) & index_mask_; index_[j] != kNone;
       j = (j + 1) & index_mask_) {
    const std::uint32_t home = Slot(acquires_[index_[j]].id);
    // Can index_[j] move to `hole`? Only if home is not in the cyclic range (hole, j].
    const bool home_after_hole = ((home - hole - 1) & index_mask_) < ((j - hole) & index_mask_);
    if (!home_after_hole) {
      index_[hole] = index_[j];
      hole = j;
    }
  }
  index_[hole] = kNone;

  if (acq.older != kNone) {
    acquires_[acq.older].newer = acq.newer;
  } else {
    oldest_ = acq.newer;
  }
  if (acq.newer != kNone) {
    acquires_[acq.newer].older = acq.older;
  } else {
    newest_ = acq.older;
  }

  const std::uint32_t head = acq.head;
  acq = Acquire{};
  acq.older = free_acquires_;
  free_acquires_ = a;
  --stats_.acquires_pending;
  return head;
}

void AcquireQueue::FreeBuffer(std::uint32_t b) {
  buffer_next_[b] = free_buffers_;
  free_buffers_ = b;
  --stats_.packets_in_use;
  stats_.bytes_in_use -= options_.buffer_size;
}

std::size_t AcquireQueue::FreeChain(std::uint32_t head) {
  std::size_t n = 0;
  while (head != kNone) {
    const std::uint32_t next = buffer_next_[head];
    FreeBuffer(head);
    head = next;
    ++n;
  }
  return n;
}

HoldResult AcquireQueue::Hold(PolicyId id, std::span<const std::uint8_t> packet,
                              TimePoint now) {
  latest_now_ = std::max(latest_now_, now);
  HoldResult r;
  std::uint32_t a = Find(id);
  if (a == kNone) {
    a = Open(id, latest_now_);
    if (a == kNone) {
      ++stats_.acquires_refused;
      ++stats_.dropped_queue_full;
      return {HoldStatus::kOverflow, false, kStatusIpsecQueueOverflow};
    }
    r.new_acquire = true;
  }
  if (packet.size() > options_.buffer_size) {
    ++stats_.dropped_too_large;
    r.status = HoldStatus::kTooLarge;
    r.ntstatus = kStatusInvalidBufferSize;
    return r;
  }
  Acquire& acq = acquires_[a];
  if (acq.count >= options_.max_packets_per_acquire || free_buffers_ == kNone) {
    ++stats_.dropped_queue_full;
    r.status = HoldStatus::kOverflow;
    r.ntstatus = kStatusIpsecQueueOverflow;
    return r;
  }

  const std::uint32_t b = free_buffers_;
  free_buffers_ = buffer_next_[b];
  if (!packet.empty()) {
    std::memcpy(slab_.get() + std::size_t{b} * options_.buffer_size, packet.data(),
                packet.size());
  }
  buffer_length_[b] = static_cast<std::uint32_t>(packet.size());
  buffer_next_[b] = kNone;
  if (acq.tail == kNone) {
    acq.head = b;
  } else {
    buffer_next_[acq.tail] = b;
  }
  acq.tail = b;
  ++acq.count;
  ++stats_.held;
  ++stats_.packets_in_use;
  stats_.bytes_in_use += options_.buffer_size;
  return r;
}

std::size_t AcquireQueue::Drop(PolicyId id) {
  const std::uint32_t a = Find(id);
  if (a == kNone) return 0;
  const std::size_t n = FreeChain(Close(a));
  stats_.dropped_negotiation_failed += n;
  return n;
}

ExpireResult AcquireQueue::Expire(TimePoint now, std::chrono::nanoseconds max_age) {
  ExpireResult r;
  while (oldest_ != kNone && now - acquires_[oldest_].opened >= max_age) {
    r.packets += FreeChain(Close(oldest_));
    ++r.acquires;
  }
  stats_.dropped_expired += r.packets;
  stats_.acquires_expired += r.acquires;
  return r;
}

std::size_t AcquireQueue::queued(PolicyId id) const {
  const std::uint32_t a = Find(id);
  return a == kNone ? 0 : acquires_[a].count;
}

}  // namespace spigot::policy
