#include "spigot/io/process.h"

#include <unistd.h>

#include <fstream>

namespace spigot::io {

std::size_t ResidentSetBytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t size_pages = 0, resident_pages = 0;
  statm >> size_pages >> resident_pages;
  return resident_pages * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

}  // namespace spigot::io
