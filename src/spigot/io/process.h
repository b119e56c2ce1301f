// What the kernel reports about this process, for benchmarks and memory estimates.
#pragma once

#include <cstddef>

namespace spigot::io {

// Resident set size in bytes, from /proc/self/statm (field 2, in pages); 0 if unreadable.
std::size_t ResidentSetBytes();

}  // namespace spigot::io
