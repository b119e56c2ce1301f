// ESP protocol constants, each with its source.
#pragma once

#include <cstddef>
#include <cstdint>

namespace spigot::esp {

// RFC 4303 2: SPI (4) + Sequence Number (4).
inline constexpr std::size_t kEspHeaderLen = 4 + 4;
// RFC 4303 2: Pad Length (1) + Next Header (1).
inline constexpr std::size_t kEspTrailerLen = 1 + 1;
// RFC 4303 2.1: SPIs 1-255 are reserved by IANA; 0 is for local use and never on the wire.
inline constexpr std::uint32_t kMinSpi = 256;
// RFC 4303 2.4: at most 255 bytes of padding.
inline constexpr std::size_t kMaxPad = 255;
// Room an in-place seal needs around the inner packet: header + the longest IV (CBC, 16) before;
// up to 15 bytes of CBC padding + trailer + ICV (16) after.
inline constexpr std::size_t kSealHeadroom = kEspHeaderLen + 16;
inline constexpr std::size_t kSealTailroom = 15 + kEspTrailerLen + 16;

// Next Header values in tunnel mode (IANA protocol numbers; RFC 4303 2.6 for 59).
inline constexpr std::uint8_t kNextHeaderIpv4 = 4;
inline constexpr std::uint8_t kNextHeaderIpv6 = 41;
inline constexpr std::uint8_t kNextHeaderNone = 59;  // dummy packet: discard silently

// RFC 3948 2.2: a UDP-4500 payload starting with four zero octets is IKE ("non-ESP marker").
inline constexpr std::size_t kNonEspMarkerLen = 4;
// RFC 3948 2.3: a NAT-keepalive is a single 0xFF octet.
inline constexpr std::uint8_t kNatKeepalive = 0xFF;
// RFC 3948 2.1 / RFC 7296 2.23: the UDP port for IKE with NAT-T and ESP-in-UDP.
inline constexpr std::uint16_t kNatTPort = 4500;

// RFC 4303 2.2 / RFC 6479: anti-replay window sizes this implementation accepts.
inline constexpr std::uint32_t kMinReplayWindow = 64;
inline constexpr std::uint32_t kMaxReplayWindow = 65536;
inline constexpr std::uint32_t kDefaultReplayWindow = 1024;

}  // namespace spigot::esp
