#include "spigot/sa/cipher_cache.h"

#include <algorithm>
#include <cassert>

namespace spigot::sa {

CipherCache::CipherCache(std::uint32_t capacity)
    : capacity_(std::max<std::uint32_t>(capacity, 1)) {}

void CipherCache::Evict(Entry& e) {
  *e.owner = kNoEntry;
  e.owner = nullptr;
  e.referenced = false;
  e.cipher.Clear();
}

std::uint32_t CipherCache::TakeEntry() {
  if (!free_.empty()) {
    const std::uint32_t i = free_.back();
    free_.pop_back();
    return i;
  }
  if (entries_.size() < capacity_) {
    entries_.push_back(std::make_unique<Entry>());
    return static_cast<std::uint32_t>(entries_.size() - 1);
  }
  // CLOCK: every entry is owned here (free ones were taken above), so within two turns of the
  // hand some entry has a clear reference bit.
  for (;;) {
    const std::uint32_t i = hand_;
    hand_ = hand_ + 1 == entries_.size() ? 0 : hand_ + 1;
    Entry& e = *entries_[i];
    if (e.referenced) {
      e.referenced = false;
      continue;
    }
    Evict(e);
    ++evictions_;
    return i;
  }
}

const crypto::EspCipher* CipherCache::Miss(std::uint32_t& handle, crypto::ImbManager& mgr,
                                           crypto::EspSuite suite,
                                           std::span<const std::uint8_t> keymat) {
  const std::uint32_t i = TakeEntry();
  Entry& e = *entries_[i];
  if (!e.cipher.Init(mgr, suite, keymat)) {
    ++expand_failures_;
    free_.push_back(i);
    return nullptr;
  }
  ++misses_;
  e.owner = &handle;
  e.referenced = false;  // a second use earns the second chance
  handle = i;
  return &e.cipher;
}

void CipherCache::Release(std::uint32_t& handle) {
  if (handle == kNoEntry) return;
  const std::uint32_t i = handle;
  Entry& e = *entries_[i];
  assert(e.owner == &handle);
  Evict(e);  // resets `handle`
  free_.push_back(i);
}

void CipherCache::SetCapacity(std::uint32_t capacity) {
  capacity_ = std::max<std::uint32_t>(capacity, 1);
  if (entries_.size() <= capacity_) return;
  for (std::size_t i = capacity_; i < entries_.size(); ++i) {
    if (entries_[i]->owner != nullptr) {
      Evict(*entries_[i]);
      ++evictions_;
    }
  }
  entries_.resize(capacity_);
  std::erase_if(free_, [this](std::uint32_t i) { return i >= capacity_; });
  hand_ = 0;
}

CipherCacheStats CipherCache::stats() const {
  CipherCacheStats st;
  st.capacity = capacity_;
  st.size = size();
  st.hits = hits_;
  st.misses = misses_;
  st.evictions = evictions_;
  st.expand_failures = expand_failures_;
  return st;
}

}  // namespace spigot::sa
