#include "spigot/esp/replay_window.h"

#include <algorithm>
#include <bit>

#include "spigot/esp/constants.h"

namespace spigot::esp {
namespace {
constexpr std::uint32_t kBlockBits = 64;
}

ReplayWindow::ReplayWindow(std::uint32_t size, bool esn)
    : size_(std::clamp(size, kMinReplayWindow, kMaxReplayWindow)), esn_(esn) {
  // RFC 6479 3: the ring holds one block more than the window, so advancing never clears a
  // block that still has bits inside the window; a power of two makes the index a mask.
  blocks_ = std::bit_ceil((size_ + kBlockBits - 1) / kBlockBits + 1);
  bitmap_ = std::make_unique<std::uint64_t[]>(blocks_);
}

ReplayWindow::Verdict ReplayWindow::Check(std::uint32_t seq_low, std::uint64_t& seq_full) const {
  if (!esn_) {
    seq_full = seq_low;
    if (seq_low == 0) return Verdict::kTooOld;  // never sent (RFC 4303 3.3.3: first is 1)
  } else {
    // RFC 4303 Appendix A2.2: infer the high half from where seq_low falls relative to the
    // bottom of the window.
    const std::uint32_t th = static_cast<std::uint32_t>(top_ >> 32);
    const std::uint32_t tl = static_cast<std::uint32_t>(top_);
    const std::uint32_t w = size_;
    const std::uint32_t bottom = tl - w + 1;  // mod 2^32
    std::uint64_t hi;
    if (tl >= w - 1) {
      // Case A: the window lies within one high-half epoch.
      hi = seq_low >= bottom ? th : std::uint64_t{th} + 1;
    } else {
      // Case B: the window straddles an epoch boundary.
      // In the first epoch there is no earlier one: such a packet is ahead of the window.
      if (seq_low >= bottom && th != 0) {
        hi = th - 1;
      } else {
        hi = th;
      }
    }
    if (hi > 0xFFFFFFFFu) return Verdict::kTooOld;  // past 2^64 - 1: cannot happen legitimately
    seq_full = hi << 32 | seq_low;
    if (seq_full == 0) return Verdict::kTooOld;
  }
  if (seq_full > top_) return Verdict::kOk;
  if (top_ - seq_full >= size_) return Verdict::kTooOld;
  return Seen(seq_full) ? Verdict::kReplay : Verdict::kOk;
}

bool ReplayWindow::Seen(std::uint64_t seq) const {
  const std::uint64_t block = (seq / kBlockBits) & (blocks_ - 1);
  return (bitmap_[block] >> (seq % kBlockBits)) & 1u;
}

void ReplayWindow::Update(std::uint64_t seq) {
  if (seq > top_) {
    // RFC 6479 3: clear the blocks the window slides over, at most the whole ring.
    const std::uint64_t old_block = top_ / kBlockBits;
    const std::uint64_t new_block = seq / kBlockBits;
    const std::uint64_t clear = std::min<std::uint64_t>(new_block - old_block, blocks_);
    for (std::uint64_t i = 1; i <= clear; ++i) bitmap_[(old_block + i) & (blocks_ - 1)] = 0;
    top_ = seq;
  }
  bitmap_[(seq / kBlockBits) & (blocks_ - 1)] |= std::uint64_t{1} << (seq % kBlockBits);
}

}  // namespace spigot::esp
