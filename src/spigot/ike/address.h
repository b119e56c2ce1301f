// The peer and local address of an IKE SA: what the NAT detection hashes (RFC 7296 2.23) and the
// logs need, without a sockaddr. endpoint.h converts to and from io::Endpoint.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>

namespace spigot::ike {

// An IP address and UDP port.
struct Address {
  int family = 4;  // 4 or 6
  std::array<std::uint8_t, 16> ip{};
  std::uint16_t port = 0;
  std::span<const std::uint8_t> bytes() const { return {ip.data(), family == 4 ? 4u : 16u}; }
  bool operator==(const Address&) const = default;
};

// "192.0.2.1:500", "[2001:db8::1]:4500".
std::string ToString(const Address& a);

}  // namespace spigot::ike
