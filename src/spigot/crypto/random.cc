#include "spigot/crypto/random.h"

#include <openssl/rand.h>

#include <climits>
#include <cstdio>
#include <cstdlib>

namespace spigot::crypto {

void RandomBytes(std::span<std::uint8_t> out) {
  if (out.empty()) return;
  if (out.size() > static_cast<std::size_t>(INT_MAX) ||
      RAND_bytes(out.data(), static_cast<int>(out.size())) != 1) {
    std::fputs("spigot: fatal: the CSPRNG failed\n", stderr);
    std::abort();
  }
}

std::uint32_t RandomU32() {
  std::uint8_t b[4];
  RandomBytes(b);
  return std::uint32_t{b[0]} << 24 | std::uint32_t{b[1]} << 16 | std::uint32_t{b[2]} << 8 | b[3];
}

std::uint64_t RandomU64() { return std::uint64_t{RandomU32()} << 32 | RandomU32(); }

double RandomUnit() { return RandomU32() / 4294967296.0; }  // 2^32: the largest result < 1

}  // namespace spigot::crypto
