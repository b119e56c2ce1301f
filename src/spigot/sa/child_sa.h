// A CHILD SA record: the inbound SA (our SPI) and the outbound SA (the peer's SPI) negotiated
// together (RFC 7296 1.3), with their raw keys, sequence and replay state, lifetimes and
// traffic counters.
//
// This is the "cold" half of an SA, kept for every installed SA: about 300 bytes inline plus the
// replay bitmap (256 bytes for a 1024-packet window). The expanded keys (crypto::EspCipher,
// ~1 KB per direction for AES-GCM) live only in the SaDatabase's bounded CipherCache.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <limits>
#include <span>

#include "spigot/crypto/esp_cipher.h"
#include "spigot/crypto/secure_bytes.h"
#include "spigot/esp/constants.h"
#include "spigot/esp/esp.h"

namespace spigot::sa {

using TimePoint = std::chrono::steady_clock::time_point;

enum class Direction : std::uint8_t { kInbound = 0, kOutbound = 1 };

// RFC 4301 4.4.2.1: an SA lifetime in time, bytes and packets. Zero means no limit.
struct Lifetime {
  std::chrono::seconds time{0};
  std::uint64_t bytes = 0;
  std::uint64_t packets = 0;
};

// The soft limit asks for a rekey, the hard one ends the SA. Each soft limit that is set must
// be below the matching hard limit, if that is set.
struct Lifetimes {
  Lifetime soft;
  Lifetime hard;

  bool Valid() const;
};

// What the caller must do after a lifetime check.
enum class LifetimeAction : std::uint8_t {
  kNone = 0,
  kRekey,   // a soft limit was reached: start a rekey (reported once per SA)
  kDelete,  // a hard limit was reached: stop using the SA and delete it (reported every time)
};
const char* ToString(LifetimeAction a);

// Bytes are what the caller counts per packet (spigot counts inner-packet bytes).
struct TrafficCounters {
  std::uint64_t bytes = 0;
  std::uint64_t packets = 0;
};

// What installing a CHILD SA takes. Key material layout: crypto/esp_cipher.h.
struct ChildSaParams {
  std::uint32_t inbound_spi = 0;   // from SaDatabase::AllocateSpi(), still reserved
  std::uint32_t outbound_spi = 0;  // the peer's, >= esp::kMinSpi
  crypto::EspSuite suite = crypto::EspSuite::kAesGcm128;
  std::span<const std::uint8_t> inbound_keymat;
  std::span<const std::uint8_t> outbound_keymat;
  std::uint32_t replay_window = esp::kDefaultReplayWindow;
  bool esn = false;
  Lifetimes lifetimes;
  // The inbound SPI of the installed CHILD SA this one rekeys (RFC 7296 2.8); 0 for a new one.
  std::uint32_t rekey_of = 0;
};

class ChildSa {
 public:
  static constexpr std::uint32_t kNoCipher = 0xFFFFFFFF;

  // `params` must have been validated (SaDatabase::Install does).
  ChildSa(const ChildSaParams& params, TimePoint now);
  ChildSa(const ChildSa&) = delete;
  ChildSa& operator=(const ChildSa&) = delete;

  // Data-path state, passed to esp::Open() and esp::Seal().
  esp::InboundState inbound;
  esp::OutboundState outbound;

  std::uint32_t inbound_spi() const { return inbound.spi; }
  std::uint32_t outbound_spi() const { return outbound.spi; }
  crypto::EspSuite suite() const { return suite_; }
  TimePoint installed_at() const { return installed_at_; }
  // TimePoint::max() when there is no time limit: deadlines for the caller's timers.
  TimePoint soft_deadline() const { return soft_at_; }
  TimePoint hard_deadline() const { return hard_at_; }
  const TrafficCounters& traffic(Direction dir) const { return traffic_[Index(dir)]; }
  std::span<const std::uint8_t> keymat(Direction dir) const { return keymat_[Index(dir)].span(); }
  bool soft_expired() const { return soft_fired_; }
  // Rekey links (inbound SPIs, 0: none): the SA this one replaces, the SA that replaces it.
  std::uint32_t rekey_of() const { return rekey_of_; }
  std::uint32_t rekeyed_by() const { return rekeyed_by_; }

  // Data path: counts one packet of `bytes` protected or accepted on `dir`, and says what to do
  // after it. Byte and packet limits apply to each direction's SA separately.
  LifetimeAction Count(Direction dir, std::uint64_t bytes) {
    TrafficCounters& t = traffic_[Index(dir)];
    t.bytes += bytes;
    ++t.packets;
    if (t.bytes >= hard_bytes_ || t.packets >= hard_packets_) return LifetimeAction::kDelete;
    if (!soft_fired_ && (t.bytes >= soft_bytes_ || t.packets >= soft_packets_)) {
      soft_fired_ = true;
      return LifetimeAction::kRekey;
    }
    return LifetimeAction::kNone;
  }
  // Timers: the time limits against `now` (the caller's clock).
  LifetimeAction CheckTime(TimePoint now);

 private:
  friend class SaDatabase;
  static constexpr std::uint64_t kNoLimit = std::numeric_limits<std::uint64_t>::max();
  static std::size_t Index(Direction dir) { return static_cast<std::size_t>(dir); }

  std::array<crypto::InlineSecret<crypto::kMaxEspKeymatLen>, 2> keymat_;
  std::array<TrafficCounters, 2> traffic_;
  // Byte and packet limits with "no limit" stored as kNoLimit, so Count() only compares.
  std::uint64_t soft_bytes_, hard_bytes_, soft_packets_, hard_packets_;
  TimePoint installed_at_, soft_at_, hard_at_;
  std::array<std::uint32_t, 2> cipher_ = {kNoCipher, kNoCipher};  // CipherCache handles
  std::uint32_t rekey_of_;
  std::uint32_t rekeyed_by_ = 0;
  crypto::EspSuite suite_;
  bool soft_fired_ = false;
};

}  // namespace spigot::sa
