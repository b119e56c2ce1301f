#include "spigot/sa/sa_database.h"

namespace spigot::sa {

const char* ToString(InstallStatus s) {
  switch (s) {
    case InstallStatus::kOk: return "ok";
    case InstallStatus::kSpiNotReserved: return "spi_not_reserved";
    case InstallStatus::kBadOutboundSpi: return "bad_outbound_spi";
    case InstallStatus::kBadKeymat: return "bad_keymat";
    case InstallStatus::kBadLifetimes: return "bad_lifetimes";
    case InstallStatus::kUnknownPredecessor: return "unknown_predecessor";
  }
  return "?";
}

SaDatabase::SaDatabase(std::uint32_t cipher_cache_capacity) : cache_(cipher_cache_capacity) {}

SaDatabase::SaDatabase(const SpiPool::RoundKeys& keys, std::uint32_t cipher_cache_capacity)
    : pool_(keys), cache_(cipher_cache_capacity) {}

SaDatabase::~SaDatabase() {
  for (std::uint32_t slot = 0; slot < pool_.slots(); ++slot) {
    if (pool_.IsActiveSlot(slot)) RecordAt(slot)->~ChildSa();
  }
}

bool SaDatabase::ReleaseSpi(std::uint32_t spi) {
  return pool_.StateOf(spi) == SpiState::kReserved && pool_.Free(spi);
}

InstallStatus SaDatabase::Install(const ChildSaParams& p, TimePoint now) {
  if (pool_.StateOf(p.inbound_spi) != SpiState::kReserved) return InstallStatus::kSpiNotReserved;
  if (p.outbound_spi < esp::kMinSpi) return InstallStatus::kBadOutboundSpi;
  const std::size_t keymat_len = crypto::SuiteInfo(p.suite).keymat_len();
  if (p.inbound_keymat.size() != keymat_len || p.outbound_keymat.size() != keymat_len) {
    return InstallStatus::kBadKeymat;
  }
  if (!p.lifetimes.Valid()) return InstallStatus::kBadLifetimes;
  ChildSa* old = nullptr;
  if (p.rekey_of != 0) {
    old = LookupInbound(p.rekey_of);
    if (old == nullptr) return InstallStatus::kUnknownPredecessor;
  }
  const std::uint32_t slot = pool_.SlotOf(p.inbound_spi);
  ChunkMemory& chunk = records_[slot >> SpiPool::kChunkBits];
  if (!chunk) chunk = ChunkMemory(std::size_t{SpiPool::kChunkSlots} * sizeof(ChildSa));
  new (RecordAt(slot)) ChildSa(p, now);
  pool_.Activate(p.inbound_spi);
  // In a rekey collision (RFC 7296 2.8.1) both new SAs name the old one; the later one wins
  // the link until the loser is removed.
  if (old != nullptr) old->rekeyed_by_ = p.inbound_spi;
  ++size_;
  return InstallStatus::kOk;
}

void SaDatabase::Destroy(ChildSa* sa) {
  for (std::uint32_t& handle : sa->cipher_) cache_.Release(handle);
  sa->~ChildSa();
}

bool SaDatabase::Remove(std::uint32_t inbound_spi) {
  ChildSa* sa = LookupInbound(inbound_spi);
  if (sa == nullptr) return false;
  if (ChildSa* prev = LookupInbound(sa->rekey_of_); prev && prev->rekeyed_by_ == inbound_spi) {
    prev->rekeyed_by_ = 0;
  }
  if (ChildSa* next = LookupInbound(sa->rekeyed_by_); next && next->rekey_of_ == inbound_spi) {
    next->rekey_of_ = 0;
  }
  Destroy(sa);
  pool_.Free(inbound_spi);
  --size_;
  return true;
}

}  // namespace spigot::sa
