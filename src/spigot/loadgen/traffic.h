// Traffic for `spigot loadgen --vips --traffic`: each simulated road warrior sends ICMP echo
// requests from its virtual IP through its own CHILD SA and opens the replies that come back on
// it. Nothing here touches a socket: the worker hands datagrams in and out.
//
// An echo request (RFC 792) in an IPv4 header (RFC 791), both built with a ByteWriter:
//   IPv4 header 20 + ICMP header 8 + kEchoPayloadLen = 60 bytes, so that with the ESP
//   overhead of AES-GCM (8 + 8 + pad + 2 + 16) and UDP/IP (8 + 20) a packet stays far below
//   any MTU.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "spigot/crypto/esp_cipher.h"
#include "spigot/esp/esp.h"
#include "spigot/ike/ike_sa.h"

namespace spigot::loadgen {

using Ipv4 = std::array<std::uint8_t, 4>;

inline constexpr std::size_t kIpv4HeaderLen = 20;      // RFC 791 3.1, no options
inline constexpr std::size_t kIcmpEchoHeaderLen = 8;   // RFC 792: type, code, sum, id, seq
inline constexpr std::size_t kEchoPayloadLen = 32;
inline constexpr std::size_t kEchoPacketLen = kIpv4HeaderLen + kIcmpEchoHeaderLen + kEchoPayloadLen;
inline constexpr std::uint8_t kIpProtoIcmp = 1;
inline constexpr std::uint8_t kIcmpEchoReply = 0;
inline constexpr std::uint8_t kIcmpEchoRequest = 8;

// The RFC 1071 Internet checksum of `data`.
std::uint16_t InternetChecksum(std::span<const std::uint8_t> data);

struct Echo {
  std::uint8_t type = kIcmpEchoRequest;  // kIcmpEchoRequest or kIcmpEchoReply
  Ipv4 src{};
  Ipv4 dst{};
  std::uint16_t id = 0;
  std::uint16_t seq = 0;
};

// Writes the echo request or reply `e` to `out`, which must hold kEchoPacketLen bytes; returns
// the bytes written (0 if `out` is too short).
std::size_t BuildEcho(const Echo& e, std::span<std::uint8_t> out);

// Parses `packet` as an IPv4 ICMP echo request or reply (not a fragment) with valid lengths
// and checksums; false for anything else.
bool ParseEcho(std::span<const std::uint8_t> packet, Echo& out);

// Both directions of one CHILD SA, as the peer's side sees them: we seal with spi_out and
// keymat_out, and open what arrives for spi_in with keymat_in. Owned by one thread; Seal() and
// Open() use that thread's ImbManager.
class ChildTunnel {
 public:
  // ESP room around an inner packet of at most kEchoPacketLen bytes.
  static constexpr std::size_t kBufferLen = esp::kSealHeadroom + kEchoPacketLen + esp::kSealTailroom;

  // False if the keys do not fit the suite.
  bool Init(const ike::ChildSaInfo& child, std::uint32_t replay_window = esp::kDefaultReplayWindow);
  std::uint32_t spi_in() const { return in_.spi; }

  // Seals `inner` (an IPv4 packet of at most kEchoPacketLen bytes) into `buffer`; `esp` is the
  // ESP packet (SPI first) inside it. Status as esp::Seal.
  esp::Status Seal(std::span<const std::uint8_t> inner, std::array<std::uint8_t, kBufferLen>& buffer,
                   std::span<const std::uint8_t>& esp);
  // Opens the ESP packet `esp` in place; on kOk `inner` is the IPv4 packet inside it.
  esp::Status Open(std::span<std::uint8_t> esp, std::span<const std::uint8_t>& inner);

 private:
  crypto::EspCipher cipher_out_;
  crypto::EspCipher cipher_in_;
  esp::OutboundState out_;
  esp::InboundState in_;
};

}  // namespace spigot::loadgen
