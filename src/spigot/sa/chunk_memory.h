// Memory for the large arrays the data path indexes at random (SPI slots, SA records).
//
// A ChunkMemory is an anonymous mapping, aligned to 2 MiB and advised to use transparent huge
// pages (MADV_HUGEPAGE), so that a random lookup over a million SAs does not also take a TLB
// miss per 4 KiB page. Pages are mapped only as they are touched, and start zeroed.
#pragma once

#include <cstddef>
#include <utility>

namespace spigot::sa {

class ChunkMemory {
 public:
  static constexpr std::size_t kHugePage = std::size_t{2} << 20;

  ChunkMemory() = default;
  // Maps `bytes` (rounded up to whole huge pages). Throws std::bad_alloc if the kernel refuses.
  explicit ChunkMemory(std::size_t bytes);
  ChunkMemory(ChunkMemory&& o) noexcept
      : base_(std::exchange(o.base_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  ChunkMemory& operator=(ChunkMemory&& o) noexcept;
  ~ChunkMemory();

  void* get() const { return base_; }
  explicit operator bool() const { return base_ != nullptr; }

 private:
  void* base_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace spigot::sa
