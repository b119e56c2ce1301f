// The CSPRNG: OpenSSL's DRBG (RAND_bytes), seeded by the kernel. Thread-safe.
#pragma once

#include <cstdint>
#include <span>

namespace spigot::crypto {

// Fills `out` with cryptographically strong random bytes. Aborts if the DRBG fails: continuing
// with predictable SPIs, nonces or IVs would be worse than stopping.
void RandomBytes(std::span<std::uint8_t> out);
std::uint32_t RandomU32();
std::uint64_t RandomU64();
// Uniform in [0, 1): RandomU32() / 2^32, for jitter.
double RandomUnit();

}  // namespace spigot::crypto
