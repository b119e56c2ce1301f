// Inbound CHILD SA SPIs for the load generator, which carries no traffic and so needs no SA
// database: random, unique, never below 256 (RFC 4303 2.1 reserves 1-255, and 0 means "none").
// Each worker thread owns one set; shard/shards partition the SPI space between them
// (spi % shards == shard), so SPIs are unique across the process without a lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <unordered_set>

namespace spigot::loadgen {

class ChildSpiSet {
 public:
  static constexpr std::uint32_t kMinSpi = 256;

  // `capacity`: at most this many SPIs allocated at once (the bound; past it Allocate refuses).
  ChildSpiSet(std::uint32_t shard, std::uint32_t shards, std::size_t capacity);

  // nullopt when `capacity` SPIs are in use.
  std::optional<std::uint32_t> Allocate();
  // Releasing an SPI that is not allocated does nothing.
  void Release(std::uint32_t spi) { in_use_.erase(spi); }
  bool Contains(std::uint32_t spi) const { return in_use_.count(spi) != 0; }
  std::size_t size() const { return in_use_.size(); }

 private:
  std::uint32_t shard_;
  std::uint32_t shards_;
  std::size_t capacity_;
  std::unordered_set<std::uint32_t> in_use_;
};

}  // namespace spigot::loadgen
