// A bounded cache of expanded ESP keys (crypto::EspCipher, ~1 KB each for AES-GCM).
//
// Every SA keeps its raw key material; only SAs that carry traffic need expanded keys, and a
// million idle SAs must not pay 2 KB each for them. Entries are expanded on first use and
// evicted by CLOCK (second chance): a hit sets the entry's reference bit, and the eviction hand
// clears set bits until it finds a clear one.
//
// Bound (STYLE.md 7): at most capacity() entries (default kDefaultCapacity, 64 MiB of GCM keys).
// On a miss at the bound, the hand evicts one entry; the owner whose entry is evicted gets its
// handle reset and re-expands on its next use. Counters: hits, misses, evictions.
//
// Owners hold a handle (a std::uint32_t, kNoEntry when they have no entry) at an address that
// stays fixed while the handle holds an entry: eviction writes kNoEntry through it.
//
// Not thread-safe. A returned cipher is valid until the next Get(), Release() or SetCapacity()
// on this cache (a later miss may evict it), so use it before asking for another one.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "spigot/crypto/esp_cipher.h"

namespace spigot::sa {

struct CipherCacheStats {
  std::uint32_t capacity = 0;
  std::uint32_t size = 0;  // entries holding expanded keys
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;  // expansions
  std::uint64_t evictions = 0;
  std::uint64_t expand_failures = 0;  // key material that did not fit its suite
};

class CipherCache {
 public:
  static constexpr std::uint32_t kNoEntry = 0xFFFFFFFF;
  static constexpr std::uint32_t kDefaultCapacity = 65536;

  // `capacity` is raised to at least 1.
  explicit CipherCache(std::uint32_t capacity = kDefaultCapacity);
  CipherCache(const CipherCache&) = delete;
  CipherCache& operator=(const CipherCache&) = delete;

  // The expanded keys of the owner of `handle`: a hit if `handle` holds an entry, otherwise
  // `keymat` is expanded into a free or evicted entry and `handle` set to it. Null if `keymat`
  // does not fit `suite` (counted; `handle` stays kNoEntry).
  const crypto::EspCipher* Get(std::uint32_t& handle, crypto::ImbManager& mgr,
                               crypto::EspSuite suite, std::span<const std::uint8_t> keymat) {
    if (handle != kNoEntry) [[likely]] {
      Entry& e = *entries_[handle];
      e.referenced = true;
      ++hits_;
      return &e.cipher;
    }
    return Miss(handle, mgr, suite, keymat);
  }
  // Wipes and frees the owner's entry, if any; `handle` becomes kNoEntry.
  void Release(std::uint32_t& handle);
  // Takes effect at once: lowering it evicts the entries past the new bound.
  void SetCapacity(std::uint32_t capacity);

  std::uint32_t capacity() const { return capacity_; }
  std::uint32_t size() const { return static_cast<std::uint32_t>(entries_.size() - free_.size()); }
  CipherCacheStats stats() const;

 private:
  struct Entry {
    crypto::EspCipher cipher;
    std::uint32_t* owner = nullptr;  // null while free
    bool referenced = false;
  };

  const crypto::EspCipher* Miss(std::uint32_t& handle, crypto::ImbManager& mgr,
                                crypto::EspSuite suite, std::span<const std::uint8_t> keymat);
  std::uint32_t TakeEntry();
  void Evict(Entry& e);

  std::uint32_t capacity_;
  std::vector<std::unique_ptr<Entry>> entries_;  // grows up to capacity_; entries never move
  std::vector<std::uint32_t> free_;              // released entries, reused first
  std::uint32_t hand_ = 0;
  std::uint64_t hits_ = 0;
  std::uint64_t misses_ = 0;
  std::uint64_t evictions_ = 0;
  std::uint64_t expand_failures_ = 0;
};

}  // namespace spigot::sa
