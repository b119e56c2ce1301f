// An IPv4 or IPv6 address and UDP port: a sockaddr_storage with the accessors sockets and logs
// need.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace spigot::io {

class Endpoint;

// An IP address without a port: the source a datagram is sent from (IP_PKTINFO /
// IPV6_PKTINFO), or the local address a datagram arrived at. Empty (family 0): none, the
// kernel picks the source.
struct IpAddress {
  int family = 0;  // 0, AF_INET or AF_INET6
  std::array<std::uint8_t, 16> bytes{};  // 4 (IPv4) or 16 used, network order
  bool empty() const { return family == 0; }
  bool operator==(const IpAddress&) const = default;
  // The address of `e` (empty if !e.valid()).
  static IpAddress Of(const Endpoint& e);
};

class Endpoint {
 public:
  // An empty endpoint (AF_UNSPEC); valid() is false.
  Endpoint() = default;

  // "192.0.2.1" or "2001:db8::1" (no brackets, no scope) and a port. nullopt if `address` is
  // not an IPv4 or IPv6 literal.
  static std::optional<Endpoint> Parse(std::string_view address, std::uint16_t port);
  // Copies an AF_INET or AF_INET6 sockaddr; anything else (or a short `len`) gives an empty
  // endpoint.
  static Endpoint FromSockaddr(const sockaddr* addr, socklen_t len);

  bool valid() const { return family() == AF_INET || family() == AF_INET6; }
  int family() const { return storage_.ss_family; }
  std::uint16_t port() const;
  // The address in network byte order: 4 bytes (IPv4) or 16 (IPv6); empty if !valid().
  std::span<const std::uint8_t> address_bytes() const;

  const sockaddr* sockaddr_ptr() const { return reinterpret_cast<const sockaddr*>(&storage_); }
  socklen_t sockaddr_len() const;

  // "192.0.2.1", "2001:db8::1".
  std::string AddressString() const;
  // "192.0.2.1:500", "[2001:db8::1]:4500"; "(none)" if !valid().
  std::string ToString() const;

  // Same family, address, port (and IPv6 scope).
  bool operator==(const Endpoint& other) const;
  // The address is 0.0.0.0 or :: (a socket bound to it receives on every local address).
  bool wildcard() const;
  // `address` with `port`; empty if `address` is.
  static Endpoint From(const IpAddress& address, std::uint16_t port);

 private:
  sockaddr_storage storage_{};
};

}  // namespace spigot::io
