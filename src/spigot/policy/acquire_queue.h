// Packets held while their CHILD SA is being negotiated ("trap" policies, DESIGN.md "How a
// packet flows": No SA yet).
//
// An outbound packet matches a policy with no installed SA: Hold() copies it here and, if the
// policy had no pending acquire, says so (new_acquire) so the caller submits an acquire to the
// negotiation queue. When the SA is installed, Flush() hands the packets back in arrival order;
// when the negotiation fails, Drop() discards them; Expire() discards acquires that waited too
// long (an IKE that never answers).
//
// Bounds, drop policy and counters (STYLE.md 7). Every drop is drop-tail: the arriving packet
// is refused, held packets are never evicted.
//   - max_packets_per_acquire (32): a policy's 33rd packet is refused: kOverflow, reported as
//     STATUS_IPSEC_QUEUE_OVERFLOW, counted in dropped_queue_full.
//   - max_bytes (4 MiB), across all policies: each held packet is charged a whole buffer
//     (buffer_size, 2048 bytes) whatever its length, the way the kernel charges an skb's
//     truesize, so the bound is on memory actually pinned: 4 MiB / 2048 = 2048 packets. Past
//     it: kOverflow, dropped_queue_full.
//   - max_acquires (16384) pending acquires: a new policy past it is refused (kOverflow,
//     new_acquire false, dropped_queue_full and acquires_refused); its next packet tries again.
//   - a packet longer than buffer_size cannot be held: kTooLarge, dropped_too_large. spigot
//     sets the TUN MTU, so with the defaults this does not happen.
// An acquire is opened by its policy's first packet even when that packet cannot be held (the
// byte bound is reached): the negotiation must start, or the policy would wait until other
// policies' packets leave.
//
// Memory: one slab of max_bytes / buffer_size buffers, allocated at construction but not
// written (new[] without initialization; a fresh mapping's pages are committed as they are first
// used), a free list (LIFO, so the buffers in use stay warm), and fixed arrays for acquires and
// their index (about 48 bytes per max_acquires). Hold() never allocates.
//
// Thread model: not thread-safe, no lock. The data-path threads share one queue behind a lock
// (datapath::HeldPackets), taken only for packets that have no SA: a policy has one acquire
// and one bound of held packets per gateway, not per thread, and the first thread to take the
// installed SA flushes every thread's held packets. Expire() may be called from each thread's
// timer: a queue expires each acquire once.
//
// Counters: held == flushed + dropped_negotiation_failed + dropped_expired + packets_in_use at
// all times; dropped_queue_full and dropped_too_large count packets that were never held.
// dropped_queue_full is the stats contract's packets_dropped.no_sa_queue_full.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "spigot/bounds.h"
#include "spigot/policy/policy_id.h"

namespace spigot::policy {

// NTSTATUS-style codes, as Windows reports them.
inline constexpr std::uint32_t kStatusSuccess = 0x00000000;
// STATUS_IPSEC_QUEUE_OVERFLOW: what submitting to a full queue returns (DESIGN.md).
inline constexpr std::uint32_t kStatusIpsecQueueOverflow = 0xC000A010;
// STATUS_INVALID_BUFFER_SIZE: the packet does not fit a queue buffer.
inline constexpr std::uint32_t kStatusInvalidBufferSize = 0xC0000206;

enum class HoldStatus : std::uint8_t {
  kQueued = 0,
  kOverflow,  // a bound was reached: the packet is dropped
  kTooLarge,  // longer than buffer_size: the packet is dropped
};
const char* ToString(HoldStatus s);

struct HoldResult {
  HoldStatus status = HoldStatus::kQueued;
  // True for the packet that opened the policy's acquire (it had none pending): the caller
  // submits an acquire for the policy. Can be true with a dropped packet.
  bool new_acquire = false;
  // kStatusSuccess, kStatusIpsecQueueOverflow (kOverflow) or kStatusInvalidBufferSize.
  std::uint32_t ntstatus = kStatusSuccess;
};

struct AcquireQueueOptions {
  std::uint32_t max_packets_per_acquire = bounds::kAcquirePacketsPerPolicy;
  std::size_t max_bytes = bounds::kAcquireBytes;
  std::uint32_t buffer_size = 2048;  // bytes per packet buffer; the longest packet held
  std::uint32_t max_acquires = bounds::kAcquirePolicies;
};

struct AcquireQueueStats {
  std::uint64_t held = 0;                        // packets accepted
  std::uint64_t flushed = 0;                     // handed to Flush()'s callback
  std::uint64_t dropped_queue_full = 0;          // kOverflow (no_sa_queue_full)
  std::uint64_t dropped_too_large = 0;           // kTooLarge
  std::uint64_t dropped_negotiation_failed = 0;  // discarded by Drop()
  std::uint64_t dropped_expired = 0;             // discarded by Expire()
  std::uint64_t acquires_opened = 0;             // new_acquire == true results
  std::uint64_t acquires_refused = 0;            // max_acquires reached
  std::uint64_t acquires_expired = 0;
  std::size_t bytes_in_use = 0;                  // packets_in_use * buffer_size
  std::size_t packets_in_use = 0;
  std::size_t acquires_pending = 0;
};

struct ExpireResult {
  std::size_t acquires = 0;
  std::size_t packets = 0;
};

class AcquireQueue {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  static constexpr std::chrono::seconds kDefaultMaxAge = bounds::kAcquireMaxAge;

  // Option values are clamped to at least 1 (max_bytes to at least one buffer); use
  // options() to see what was applied.
  explicit AcquireQueue(const AcquireQueueOptions& options = {});
  ~AcquireQueue();
  AcquireQueue(const AcquireQueue&) = delete;
  AcquireQueue& operator=(const AcquireQueue&) = delete;

  // Copies `packet` into the policy's queue. `now` should not go backwards between calls (a
  // steady clock); an earlier value is taken as the latest seen.
  HoldResult Hold(PolicyId id, std::span<const std::uint8_t> packet, TimePoint now);

  // The SA is installed: calls deliver(std::span<const std::uint8_t>) for each held packet of
  // `id`, oldest first, and closes the acquire. Returns the number delivered. The span is valid
  // during the call only. deliver may call Hold() (for instance, if the SA went away again),
  // but not Flush(), Drop() or Expire().
  template <typename Deliver>
  std::size_t Flush(PolicyId id, Deliver&& deliver);

  // The negotiation failed: discards the policy's packets and closes its acquire. Returns the
  // number discarded (0, and nothing changes, if no acquire was pending).
  std::size_t Drop(PolicyId id);

  // Closes every acquire opened at or before now - max_age, discarding its packets.
  ExpireResult Expire(TimePoint now, std::chrono::nanoseconds max_age = kDefaultMaxAge);

  bool pending(PolicyId id) const { return Find(id) != kNone; }
  std::size_t queued(PolicyId id) const;
  const AcquireQueueStats& stats() const { return stats_; }
  const AcquireQueueOptions& options() const { return options_; }
  std::size_t buffer_count() const { return buffer_next_.size(); }

 private:
  static constexpr std::uint32_t kNone = 0xFFFFFFFF;

  struct Acquire {
    PolicyId id = kNoPolicy;
    std::uint32_t head = kNone;  // oldest packet's buffer
    std::uint32_t tail = kNone;
    std::uint32_t count = 0;
    TimePoint opened{};
    std::uint32_t older = kNone;  // age list, oldest first; also the free list link
    std::uint32_t newer = kNone;
  };

  std::uint32_t Find(PolicyId id) const;  // acquire index or kNone
  std::uint32_t Open(PolicyId id, TimePoint now);
  // Unlinks acquire `a` from the index and the age list and frees it; returns its first buffer.
  std::uint32_t Close(std::uint32_t a);
  // Frees a chain of buffers starting at `head`; returns how many.
  std::size_t FreeChain(std::uint32_t head);
  // Returns a held packet's buffer to the free list.
  void FreeBuffer(std::uint32_t b);
  std::uint32_t Slot(PolicyId id) const;
  std::span<const std::uint8_t> BufferView(std::uint32_t b) const {
    return {slab_.get() + std::size_t{b} * options_.buffer_size, buffer_length_[b]};
  }

  AcquireQueueOptions options_;
  AcquireQueueStats stats_;

  std::unique_ptr<std::uint8_t[]> slab_;
  std::vector<std::uint32_t> buffer_next_;    // next packet of the same acquire, or free list
  std::vector<std::uint32_t> buffer_length_;
  std::uint32_t free_buffers_ = kNone;

  std::vector<Acquire> acquires_;
  std::uint32_t free_acquires_ = kNone;
  std::uint32_t oldest_ = kNone;
  std::uint32_t newest_ = kNone;
  TimePoint latest_now_{};

  // PolicyId -> acquire index; linear probing, at most half full, backward-shift deletion.
  std::vector<std::uint32_t> index_;
  std::uint32_t index_mask_ = 0;
  std::uint8_t index_shift_ = 63;
};

template <typename Deliver>
std::size_t AcquireQueue::Flush(PolicyId id, Deliver&& deliver) {
  const std::uint32_t a = Find(id);
  if (a == kNone) return 0;
  std::uint32_t b = Close(a);
  std::size_t n = 0;
  while (b != kNone) {
    const std::uint32_t next = buffer_next_[b];
    ++stats_.flushed;
    ++n;
    deliver(BufferView(b));
    FreeBuffer(b);
    b = next;
  }
  return n;
}

}  // namespace spigot::policy
