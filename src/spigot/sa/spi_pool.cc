#include "spigot/sa/spi_pool.h"

#include <algorithm>
#include <cassert>

#include "spigot/crypto/random.h"

namespace spigot::sa {

const char* ToString(SpiStatus s) {
  switch (s) {
    case SpiStatus::kOk: return "ok";
    case SpiStatus::kNewRefused: return "new_refused";
    case SpiStatus::kExhausted: return "exhausted";
  }
  return "?";
}

const char* ToString(LimitsStatus s) {
  switch (s) {
    case LimitsStatus::kOk: return "ok";
    case LimitsStatus::kMaxSpiTooLarge: return "max_spi_too_large";
    case LimitsStatus::kReserveTooLarge: return "reserve_too_large";
  }
  return "?";
}

namespace {
SpiPool::RoundKeys RandomRoundKeys() {
  SpiPool::RoundKeys keys;
  for (auto& k : keys) k = crypto::RandomU32();
  return keys;
}
}  // namespace

SpiPool::SpiPool() : SpiPool(RandomRoundKeys()) {}

SpiPool::SpiPool(const RoundKeys& keys) : keys_(keys) {}

LimitsStatus SpiPool::SetLimits(std::uint32_t max_spi, std::uint32_t reserve) {
  if (max_spi > kMaxSlots) return LimitsStatus::kMaxSpiTooLarge;
  if (reserve > max_spi) return LimitsStatus::kReserveTooLarge;
  max_spi_ = max_spi;
  reserve_ = reserve;
  return LimitsStatus::kOk;
}

std::uint32_t SpiPool::Permute(std::uint32_t x) const {
  std::uint32_t l = x >> 16, r = x & 0xFFFF;
  for (int i = 0; i < kRounds; ++i) {
    const std::uint32_t next_r = l ^ Round(r, keys_[static_cast<std::size_t>(i)]);
    l = r;
    r = next_r;
  }
  return l << 16 | r;
}

std::uint32_t SpiPool::TakeSlot() {
  // Fresh slots while the FIFO is shorter than the quarantine; at kMaxSlots the FIFO cannot be
  // empty, since in_use_ < max_spi_ <= kMaxSlots.
  if (free_head_ == kNoSlot || (free_count_ < kQuarantine && slots_ < kMaxSlots)) {
    assert(slots_ < kMaxSlots);
    const std::uint32_t slot = slots_;
    std::unique_ptr<Slot[]>& chunk = chunks_[slot >> kChunkBits];
    if (!chunk) chunk = std::make_unique<Slot[]>(kChunkSlots);  // zeroed: kFree, generation 0
    ChunkMemory& live = live_[slot >> kLiveChunkBits];
    if (!live) live = ChunkMemory(std::size_t{kLiveChunkSlots} * sizeof(std::uint32_t));
    ++slots_;
    return slot;
  }
  const std::uint32_t slot = free_head_;
  free_head_ = SlotAt(slot).next;
  if (free_head_ == kNoSlot) free_tail_ = kNoSlot;
  --free_count_;
  return slot;
}

SpiAllocation SpiPool::Allocate(SpiPurpose purpose) {
  const std::uint32_t limit = purpose == SpiPurpose::kNew ? max_spi_ - reserve_ : max_spi_;
  if (in_use_ >= limit) {
    if (purpose == SpiPurpose::kNew) {
      ++refused_new_;
      return {in_use_ < max_spi_ ? SpiStatus::kNewRefused : SpiStatus::kExhausted, 0, 0};
    }
    ++refused_rekey_;
    return {SpiStatus::kExhausted, 0, 0};
  }
  const std::uint32_t slot = TakeSlot();
  Slot& s = SlotAt(slot);
  // RFC 4303 2.1: SPIs 0-255 are never used. Only 256 of the 2^32 values of P are below 256: a
  // skip happens about once in 2^24 allocations, and all 256 generations of one slot being
  // below 256 (the only way this loop could not end) has probability about 2^-6000.
  std::uint32_t spi = Permute(std::uint32_t{s.gen} << kSlotBits | slot);
  while (spi < esp::kMinSpi) {
    ++s.gen;
    ++low_spi_skips_;
    spi = Permute(std::uint32_t{s.gen} << kSlotBits | slot);
  }
  s.state = State::kReserved;
  ++in_use_;
  peak_in_use_ = std::max(peak_in_use_, in_use_);
  ++allocations_;
  return {SpiStatus::kOk, spi, slot};
}

std::uint32_t SpiPool::Resolve(std::uint32_t spi) const {
  const std::uint32_t x = Unpermute(spi);
  const std::uint32_t slot = x & kSlotMask;
  if (slot >= slots_ || spi < esp::kMinSpi) return kNoSlot;
  const Slot& s = SlotAt(slot);
  if (s.state == State::kFree || s.gen != x >> kSlotBits) return kNoSlot;
  return slot;
}

bool SpiPool::Activate(std::uint32_t spi) {
  const std::uint32_t slot = Resolve(spi);
  if (slot == kNoSlot || SlotAt(slot).state != State::kReserved) return false;
  Slot& s = SlotAt(slot);
  s.state = State::kActive;
  LiveAt(slot) = spi;
  return true;
}

bool SpiPool::Free(std::uint32_t spi) {
  const std::uint32_t slot = Resolve(spi);
  if (slot == kNoSlot) return false;
  Slot& s = SlotAt(slot);
  s.state = State::kFree;
  LiveAt(slot) = 0;
  ++s.gen;  // the slot's next SPI differs from this one
  s.next = kNoSlot;
  if (free_tail_ == kNoSlot) {
    free_head_ = slot;
  } else {
    SlotAt(free_tail_).next = slot;
  }
  free_tail_ = slot;
  ++free_count_;
  --in_use_;
  ++frees_;
  return true;
}

SpiState SpiPool::StateOf(std::uint32_t spi) const {
  const std::uint32_t slot = Resolve(spi);
  if (slot == kNoSlot) return SpiState::kUnknown;
  return SlotAt(slot).state == State::kActive ? SpiState::kActive : SpiState::kReserved;
}

std::uint32_t SpiPool::SlotOf(std::uint32_t spi) const { return Resolve(spi); }

SpiPoolStats SpiPool::stats() const {
  SpiPoolStats st;
  st.max_spi = max_spi_;
  st.reserve = reserve_;
  st.in_use = in_use_;
  st.peak_in_use = peak_in_use_;
  st.slots = slots_;
  st.allocations = allocations_;
  st.frees = frees_;
  st.refused_new = refused_new_;
  st.refused_rekey = refused_rekey_;
  st.low_spi_skips = low_spi_skips_;
  return st;
}

}  // namespace spigot::sa
