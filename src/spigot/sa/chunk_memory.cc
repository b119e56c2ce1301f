#include "spigot/sa/chunk_memory.h"

#include <sys/mman.h>

#include <cstdint>
#include <new>

namespace spigot::sa {

ChunkMemory::ChunkMemory(std::size_t bytes) {
  bytes_ = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  // Map one huge page more than needed, then trim to a 2 MiB-aligned range.
  const std::size_t span = bytes_ + kHugePage;
  void* p = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  const auto start = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t aligned = (start + kHugePage - 1) & ~(std::uintptr_t{kHugePage} - 1);
  if (aligned > start) munmap(p, aligned - start);
  const std::size_t tail = start + span - (aligned + bytes_);
  if (tail > 0) munmap(reinterpret_cast<void*>(aligned + bytes_), tail);
  base_ = reinterpret_cast<void*>(aligned);
  madvise(base_, bytes_, MADV_HUGEPAGE);  // advice only: without THP, 4 KiB pages work too
}

ChunkMemory& ChunkMemory::operator=(ChunkMemory&& o) noexcept {
  if (this != &o) {
    if (base_ != nullptr) munmap(base_, bytes_);
    base_ = std::exchange(o.base_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

ChunkMemory::~ChunkMemory() {
  if (base_ != nullptr) munmap(base_, bytes_);
}

}  // namespace spigot::sa
