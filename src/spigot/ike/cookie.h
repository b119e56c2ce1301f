// Stateless cookies for IKE_SA_INIT (RFC 7296 2.6): once too many IKE SAs are half-open, a
// responder answers IKE_SA_INIT with a COOKIE notify instead of doing DH, and only a request
// that echoes a valid cookie costs it state. Cookie = <secret version (4)> |
// SHA-256(Ni | IPi | SPIi | secret); the secret rotates, and cookies made with the previous
// one stay valid for one more period so that a rotation does not fail initiators mid-retry.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <span>

#include "spigot/crypto/secure_bytes.h"
#include "spigot/ike/message.h"
#include "spigot/io/clock.h"

namespace spigot::ike {

class CookieJar {
 public:
  using TimePoint = io::Clock::TimePoint;
  static constexpr std::chrono::seconds kRotation{60};
  static constexpr std::size_t kCookieLen = 4 + 32;

  explicit CookieJar(TimePoint now);

  Bytes Make(std::span<const std::uint8_t> ni, std::span<const std::uint8_t> initiator_ip,
             std::uint64_t spi_i, TimePoint now);
  bool Verify(std::span<const std::uint8_t> cookie, std::span<const std::uint8_t> ni,
              std::span<const std::uint8_t> initiator_ip, std::uint64_t spi_i, TimePoint now);

 private:
  void Rotate(TimePoint now);
  Bytes Compute(std::uint32_t version, const crypto::SecureBytes& secret,
                std::span<const std::uint8_t> ni, std::span<const std::uint8_t> ip,
                std::uint64_t spi_i) const;

  std::uint32_t version_ = 0;
  crypto::SecureBytes current_, previous_;
  TimePoint rotated_;
};

}  // namespace spigot::ike
