#include "spigot/loadgen/spi_set.h"

#include <algorithm>

#include "spigot/crypto/random.h"

namespace spigot::loadgen {

ChildSpiSet::ChildSpiSet(std::uint32_t shard, std::uint32_t shards, std::size_t capacity)
    : shard_(shard), shards_(std::max<std::uint32_t>(shards, 1)),
      // The shard holds 2^32 / shards SPIs, a few of them below kMinSpi: keep the set sparse
      // enough that a random draw almost always hits a free one.
      capacity_(std::min<std::size_t>(capacity, (std::uint64_t{1} << 32) / shards_ / 2)) {}

std::optional<std::uint32_t> ChildSpiSet::Allocate() {
  if (in_use_.size() >= capacity_) return std::nullopt;
  const std::uint64_t slots = ((std::uint64_t{1} << 32) - shard_ + shards_ - 1) / shards_;
  for (;;) {
    const std::uint64_t spi = crypto::RandomU64() % slots * shards_ + shard_;
    if (spi < kMinSpi) continue;
    if (in_use_.insert(static_cast<std::uint32_t>(spi)).second) return static_cast<std::uint32_t>(spi);
  }
}

}  // namespace spigot::loadgen
