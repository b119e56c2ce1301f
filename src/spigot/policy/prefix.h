// An address prefix (CIDR) of either family: the unit traffic selectors are made of.
//
// Self-contained on purpose (policy depends on no other spigot module); config's
// TrafficSelector parses the same text and converts with Prefix::Make.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace spigot::policy {

// The IP version number, as in the first nibble of the IP header.
enum class Family : std::uint8_t { kIpv4 = 4, kIpv6 = 6 };

constexpr std::size_t AddressLength(Family f) { return f == Family::kIpv4 ? 4 : 16; }
constexpr std::uint8_t MaxPrefixLength(Family f) { return f == Family::kIpv4 ? 32 : 128; }

struct Prefix {
  Family family = Family::kIpv4;
  // Network byte order: bytes [0, 4) for IPv4, [0, 16) for IPv6. Invariant (kept by Parse and
  // Make): bits past prefix_len, and bytes past the family's length, are zero.
  std::array<std::uint8_t, 16> address{};
  std::uint8_t prefix_len = 0;  // 0..32 (IPv4) or 0..128 (IPv6)

  // "203.0.113.0/24", "2001:db8::/32", or a bare address (a host: /32 or /128). Host bits below
  // the length are cleared ("10.1.2.3/8" is 10.0.0.0/8), as config's selector parser does.
  // Rejected: whitespace, a length out of range or with a sign or leading zero, anything
  // inet_pton(3) does not take.
  static std::optional<Prefix> Parse(std::string_view cidr);

  // From an address of the family's length; nullopt if the length or prefix_len is wrong.
  // Host bits are cleared.
  static std::optional<Prefix> Make(Family family, std::span<const std::uint8_t> address,
                                    std::uint8_t prefix_len);

  // Whether `addr` (exactly AddressLength(family) bytes, network order) lies in the prefix.
  // An address of any other length is not contained.
  bool Contains(std::span<const std::uint8_t> addr) const;

  // Whether the two share an address: same family, and the shorter contains the longer.
  bool Overlaps(const Prefix& other) const;

  std::string ToString() const;
  bool operator==(const Prefix&) const = default;
};

}  // namespace spigot::policy
