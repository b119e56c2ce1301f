// The pool of inbound SPIs (DESIGN.md cause 1: `max_spi`).
//
// Each SPI names a slot. SPI = P(generation << 24 | slot), where P is a keyed bijection of the
// 32-bit values (a 4-round Feistel network with random round keys), so:
//   - lookup is P^-1, one array index and one compare: no hash table, no scan, at any size;
//   - consecutive allocations look unrelated on the wire (allocation order is hidden);
//   - a freed slot's generation is bumped, so its next SPI differs, and a stale SPI (an old
//     generation) never matches the slot's current one.
// SPIs are not secrets (they travel in clear, RFC 4303 2.1): P hides order, it is not a
// cryptographic PRP.
//
// Bounds (STYLE.md 7):
//   - max_spi <= kMaxSlots = 2^24 (the slot index is 24 bits); larger values are refused by
//     SetLimits() with kMaxSpiTooLarge.
//   - Admission: kNew allocations fail once in_use >= max_spi - reserve (kNewRefused), kRekey
//     allocations once in_use >= max_spi (kExhausted). Both are counted. The reserve keeps
//     established tunnels able to rekey when the pool is full of new negotiations.
//   - Storage grows in chunks that never move: 8 bytes of slot state per slot in chunks of
//     kChunkSlots, and the 4-byte live SPI per slot that Find() reads in chunks of
//     kLiveChunkSlots (one 2 MiB huge page each, see chunk_memory.h). Slots in use never exceed
//     the peak number of allocated SPIs plus kQuarantine.
//
// Reuse: freed slots go to the back of a FIFO, and a freed slot is not reused while fewer than
// kQuarantine slots are free (fresh slots are taken instead), so between two uses of a slot at
// least kQuarantine - 1 other SPIs are freed. With 256 generations per slot, an SPI comes back
// only after about 256 * kQuarantine (a million) frees.
//
// Not thread-safe: the owner serializes calls.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "spigot/esp/constants.h"
#include "spigot/sa/chunk_memory.h"

namespace spigot::sa {

// Why an SPI is wanted: new negotiations may not take the rekey reserve.
enum class SpiPurpose : std::uint8_t { kNew, kRekey };

enum class SpiStatus : std::uint8_t {
  kOk = 0,
  kNewRefused,  // in_use >= max_spi - reserve: only rekeys are admitted
  kExhausted,   // in_use >= max_spi: nothing is admitted
};
const char* ToString(SpiStatus s);

enum class LimitsStatus : std::uint8_t {
  kOk = 0,
  kMaxSpiTooLarge,   // max_spi > SpiPool::kMaxSlots
  kReserveTooLarge,  // reserve > max_spi
};
const char* ToString(LimitsStatus s);

// What a looked-up SPI refers to.
enum class SpiState : std::uint8_t {
  kUnknown = 0,  // never issued, freed, or of an older generation
  kReserved,     // allocated (e.g. sent in an SA payload), not yet visible to Find()
  kActive,       // visible to Find(): an installed inbound SA
};

struct SpiAllocation {
  SpiStatus status = SpiStatus::kExhausted;
  std::uint32_t spi = 0;   // valid iff status == kOk; never below esp::kMinSpi
  std::uint32_t slot = 0;  // the SPI's slot index, < SpiPool::kMaxSlots
};

struct SpiPoolStats {
  std::uint32_t max_spi = 0;
  std::uint32_t reserve = 0;
  std::uint32_t in_use = 0;  // reserved + active
  std::uint32_t peak_in_use = 0;
  std::uint32_t slots = 0;  // slots ever touched (storage high-water mark)
  std::uint64_t allocations = 0;
  std::uint64_t frees = 0;
  std::uint64_t refused_new = 0;    // kNew allocations refused (kNewRefused or kExhausted)
  std::uint64_t refused_rekey = 0;  // kRekey allocations refused (kExhausted)
  std::uint64_t low_spi_skips = 0;  // generations skipped because P gave a value < 256
};

class SpiPool {
 public:
  static constexpr unsigned kSlotBits = 24;
  static constexpr std::uint32_t kMaxSlots = std::uint32_t{1} << kSlotBits;
  static constexpr std::uint32_t kSlotMask = kMaxSlots - 1;
  static constexpr unsigned kChunkBits = 16;
  static constexpr std::uint32_t kChunkSlots = std::uint32_t{1} << kChunkBits;
  static constexpr std::uint32_t kMaxChunks = kMaxSlots / kChunkSlots;  // 256
  // Live SPIs: 2^19 * 4 bytes = 2 MiB, one huge page per chunk.
  static constexpr unsigned kLiveChunkBits = 19;
  static constexpr std::uint32_t kLiveChunkSlots = std::uint32_t{1} << kLiveChunkBits;
  // Free slots kept before a freed one is reused (see "Reuse" above).
  static constexpr std::uint32_t kQuarantine = 4096;
  static constexpr std::uint32_t kNoSlot = 0xFFFFFFFF;
  using RoundKeys = std::array<std::uint32_t, 4>;

  // Random round keys (crypto::RandomBytes). Limits start at 0: call SetLimits().
  SpiPool();
  // Fixed round keys: reproducible SPIs for tests.
  explicit SpiPool(const RoundKeys& keys);
  SpiPool(const SpiPool&) = delete;
  SpiPool& operator=(const SpiPool&) = delete;

  // Takes effect at once (`spigot reload`). Raising admits immediately; lowering below in_use
  // evicts nothing, it only refuses allocations until usage falls below the new limits.
  LimitsStatus SetLimits(std::uint32_t max_spi, std::uint32_t reserve);
  // A starting point for the reserve: 1/16 of the pool (65,536 of the default 1,048,576).
  static std::uint32_t DefaultReserve(std::uint32_t max_spi) { return max_spi / 16; }

  // O(1). The SPI starts kReserved: Find() does not see it until Activate().
  SpiAllocation Allocate(SpiPurpose purpose);
  // kReserved -> kActive. False if `spi` is not reserved.
  bool Activate(std::uint32_t spi);
  // kReserved or kActive -> free. False if `spi` is unknown (double free, stale, forged).
  bool Free(std::uint32_t spi);

  // The data-path lookup: the slot of an active SPI, or kNoSlot. Any 32-bit input is safe.
  std::uint32_t Find(std::uint32_t spi) const {
    const std::uint32_t slot = Unpermute(spi) & kSlotMask;
    if (slot >= slots_) return kNoSlot;
    // Inactive slots hold 0, which no valid SPI equals.
    return ((LiveAt(slot) == spi) & (spi >= esp::kMinSpi)) ? slot : kNoSlot;
  }
  SpiState StateOf(std::uint32_t spi) const;
  // The slot of a reserved or active SPI, or kNoSlot.
  std::uint32_t SlotOf(std::uint32_t spi) const;
  // For iteration over [0, slots()): whether slot `slot` holds an active SPI.
  bool IsActiveSlot(std::uint32_t slot) const {
    return slot < slots_ && SlotAt(slot).state == State::kActive;
  }
  std::uint32_t slots() const { return slots_; }
  std::uint32_t in_use() const { return in_use_; }
  SpiPoolStats stats() const;

  // The bijection P and its inverse.
  std::uint32_t Permute(std::uint32_t x) const;
  std::uint32_t Unpermute(std::uint32_t spi) const {
    std::uint32_t l = spi >> 16, r = spi & 0xFFFF;
    for (int i = kRounds - 1; i >= 0; --i) {
      const std::uint32_t prev_r = l;
      l = r ^ Round(l, keys_[static_cast<std::size_t>(i)]);
      r = prev_r;
    }
    return l << 16 | r;
  }

 private:
  static constexpr int kRounds = 4;
  enum class State : std::uint8_t { kFree = 0, kReserved, kActive };
  struct Slot {
    std::uint32_t next;  // FIFO successor while kFree
    std::uint8_t gen;    // the generation the next (or current) SPI is made from
    State state;
  };

  // Feistel round function: murmur3's 32-bit finalizer of (half ^ key), cut to 16 bits.
  static std::uint32_t Round(std::uint32_t half, std::uint32_t key) {
    std::uint32_t x = half ^ key;
    x ^= x >> 16;
    x *= 0x85EBCA6Bu;
    x ^= x >> 13;
    x *= 0xC2B2AE35u;
    x ^= x >> 16;
    return x & 0xFFFF;
  }
  Slot& SlotAt(std::uint32_t slot) { return chunks_[slot >> kChunkBits][slot & (kChunkSlots - 1)]; }
  const Slot& SlotAt(std::uint32_t slot) const {
    return chunks_[slot >> kChunkBits][slot & (kChunkSlots - 1)];
  }
  // The slot's SPI while kActive, else 0.
  std::uint32_t* LiveChunk(std::uint32_t slot) const {
    return static_cast<std::uint32_t*>(live_[slot >> kLiveChunkBits].get());
  }
  std::uint32_t& LiveAt(std::uint32_t slot) {
    return LiveChunk(slot)[slot & (kLiveChunkSlots - 1)];
  }
  std::uint32_t LiveAt(std::uint32_t slot) const {
    return LiveChunk(slot)[slot & (kLiveChunkSlots - 1)];
  }
  // The slot `spi` names if it is reserved or active at its current generation, else kNoSlot.
  std::uint32_t Resolve(std::uint32_t spi) const;
  std::uint32_t TakeSlot();

  RoundKeys keys_;
  std::array<std::unique_ptr<Slot[]>, kMaxChunks> chunks_;
  std::array<ChunkMemory, kMaxSlots / kLiveChunkSlots> live_;
  std::uint32_t slots_ = 0;  // slots [0, slots_) exist
  std::uint32_t free_head_ = kNoSlot;
  std::uint32_t free_tail_ = kNoSlot;
  std::uint32_t free_count_ = 0;
  std::uint32_t max_spi_ = 0;
  std::uint32_t reserve_ = 0;
  std::uint32_t in_use_ = 0;
  std::uint32_t peak_in_use_ = 0;
  std::uint64_t allocations_ = 0;
  std::uint64_t frees_ = 0;
  std::uint64_t refused_new_ = 0;
  std::uint64_t refused_rekey_ = 0;
  std::uint64_t low_spi_skips_ = 0;
};

}  // namespace spigot::sa
