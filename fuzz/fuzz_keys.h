// Fixed SAs the fuzz targets and their corpus generator share, so that committed corpus
// entries are valid packets under these keys and the fuzzer starts deep inside Open().
#pragma once

#include <array>
#include <cstdint>

#include "spigot/crypto/esp_cipher.h"

namespace spigot::fuzz {

inline constexpr std::uint32_t kFuzzSpi = 0x0000C0DE;
inline constexpr std::array<crypto::EspSuite, 5> kFuzzSuites = {
    crypto::EspSuite::kAesGcm128, crypto::EspSuite::kAesGcm256,
    crypto::EspSuite::kChaCha20Poly1305, crypto::EspSuite::kAesCbc128HmacSha256,
    crypto::EspSuite::kAesCbc256HmacSha256};

// Key material for suite index i: bytes 0x10 + i, 0x11 + i, ...
inline std::array<std::uint8_t, crypto::kMaxEspKeymatLen> FuzzKeymat(std::size_t i) {
  std::array<std::uint8_t, crypto::kMaxEspKeymatLen> k{};
  for (std::size_t j = 0; j < k.size(); ++j) k[j] = static_cast<std::uint8_t>(0x10 + i + j);
  return k;
}

// Input layout: byte 0 selects the suite (low 3 bits, mod 5), ESN (bit 3) and the mode
// (bit 4: 0 = decapsulate the rest as a UDP-4500 datagram, 1 = round trip the rest as an
// inner payload); the remaining bytes are the datagram or payload.
inline constexpr std::uint8_t kEsnBit = 0x08;
inline constexpr std::uint8_t kRoundTripBit = 0x10;

}  // namespace spigot::fuzz
