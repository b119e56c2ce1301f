// The SA database (SAD, RFC 4301 4.4.2): installed CHILD SAs, found by their inbound SPI.
//
// A CHILD SA is stored at its inbound SPI's SpiPool slot, in chunks of SpiPool::kChunkSlots
// records that never move (so record addresses are stable). The data-path lookup is
// SpiPool::Find() plus an address computation: no hash table, no probing.
//
// Hot/cold split: records hold raw key material; expanded keys come from a bounded CipherCache
// through Cipher(). Record chunks are allocated untouched, so memory is paid per slot used.
//
// Lifecycle: AllocateSpi() (the SPI goes into our SA payload) -> Install() once keys are derived
// -> Remove(); or ReleaseSpi() if the negotiation fails. A rekey (RFC 7296 2.8) allocates with
// SpiPurpose::kRekey and installs the new pair with `rekey_of` while the old pair stays until the
// caller removes it (make-before-break).
//
// Bounds: SPI admission and storage as SpiPool; expanded keys as CipherCache.
// Not thread-safe: the owner serializes calls.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <new>

#include "spigot/crypto/esp_cipher.h"
#include "spigot/sa/child_sa.h"
#include "spigot/sa/chunk_memory.h"
#include "spigot/sa/cipher_cache.h"
#include "spigot/sa/spi_pool.h"

namespace spigot::sa {

enum class InstallStatus : std::uint8_t {
  kOk = 0,
  kSpiNotReserved,      // inbound_spi was not allocated here, or is already installed or freed
  kBadOutboundSpi,      // below esp::kMinSpi (RFC 4303 2.1)
  kBadKeymat,           // a key material length does not match the suite
  kBadLifetimes,        // a soft limit at or above its hard limit
  kUnknownPredecessor,  // rekey_of does not name an installed CHILD SA
};
const char* ToString(InstallStatus s);

class SaDatabase {
 public:
  // SPI limits start at 0: call SetSpiLimits().
  explicit SaDatabase(std::uint32_t cipher_cache_capacity = CipherCache::kDefaultCapacity);
  // Fixed SPI round keys, for tests.
  SaDatabase(const SpiPool::RoundKeys& keys, std::uint32_t cipher_cache_capacity);
  ~SaDatabase();
  SaDatabase(const SaDatabase&) = delete;
  SaDatabase& operator=(const SaDatabase&) = delete;

  // See SpiPool::SetLimits: applies at once, never evicts.
  LimitsStatus SetSpiLimits(std::uint32_t max_spi, std::uint32_t reserve) {
    return pool_.SetLimits(max_spi, reserve);
  }
  SpiAllocation AllocateSpi(SpiPurpose purpose) { return pool_.Allocate(purpose); }
  // Frees a reserved SPI whose negotiation failed. False if it is not reserved.
  bool ReleaseSpi(std::uint32_t spi);

  // Makes the CHILD SA visible to LookupInbound(). Keys are copied; the caller wipes its own.
  InstallStatus Install(const ChildSaParams& params, TimePoint now);
  // Removes the CHILD SA whose inbound SPI is `inbound_spi`, wiping its keys (raw and expanded)
  // and freeing the SPI. False if no such CHILD SA is installed.
  bool Remove(std::uint32_t inbound_spi);

  // The data-path lookup (RFC 4301 5.2): the CHILD SA whose inbound SPI is `spi`, or null if
  // unknown, not yet installed, removed or stale. O(1) for any 32-bit input.
  ChildSa* LookupInbound(std::uint32_t spi) {
    const std::uint32_t slot = pool_.Find(spi);
    return slot == SpiPool::kNoSlot ? nullptr : RecordAt(slot);
  }
  const ChildSa* LookupInbound(std::uint32_t spi) const {
    const std::uint32_t slot = pool_.Find(spi);
    return slot == SpiPool::kNoSlot ? nullptr : RecordAt(slot);
  }

  // The expanded keys of `sa`'s `dir` SA, expanded on first use or after an eviction. Valid
  // until the next Cipher() or Remove() call (CipherCache contract). Null only if the cache
  // could not expand the keys (counted in cipher_cache().stats()).
  const crypto::EspCipher* Cipher(ChildSa& sa, Direction dir, crypto::ImbManager& mgr) {
    const std::size_t d = ChildSa::Index(dir);
    return cache_.Get(sa.cipher_[d], mgr, sa.suite_, sa.keymat_[d].span());
  }

  // Installed CHILD SAs.
  std::size_t size() const { return size_; }
  // Calls fn(const ChildSa&) for each installed CHILD SA, in slot order. O(slots).
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    for (std::uint32_t slot = 0; slot < pool_.slots(); ++slot) {
      if (pool_.IsActiveSlot(slot)) fn(static_cast<const ChildSa&>(*RecordAt(slot)));
    }
  }

  const SpiPool& spi_pool() const { return pool_; }
  CipherCache& cipher_cache() { return cache_; }
  const CipherCache& cipher_cache() const { return cache_; }

 private:
  ChildSa* RecordAt(std::uint32_t slot) const {
    auto* chunk = static_cast<ChildSa*>(records_[slot >> SpiPool::kChunkBits].get());
    return std::launder(chunk + (slot & (SpiPool::kChunkSlots - 1)));
  }
  void Destroy(ChildSa* sa);

  SpiPool pool_;
  CipherCache cache_;
  // Record chunk k backs pool slots [k * kChunkSlots, (k + 1) * kChunkSlots), mapped by the
  // first Install() into it; the OS backs its pages only as records are written.
  std::array<ChunkMemory, SpiPool::kMaxChunks> records_;
  std::size_t size_ = 0;
};

}  // namespace spigot::sa
