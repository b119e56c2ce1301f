// Traffic selectors as written in the configuration: `local_ts = "203.0.113.0/24, 2001:db8::/32"`.
//
// A selector is an address range in CIDR form. A bare address means the single host (/32 or
// /128). Host bits below the prefix are accepted and cleared ("10.1.2.3/8" is 10.0.0.0/8), the
// way `ip route` treats them; anything else malformed is rejected.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace spigot::config {

enum class AddressFamily : std::uint8_t { kIpv4, kIpv6 };

struct TrafficSelector {
  AddressFamily family = AddressFamily::kIpv4;
  // Network address in network byte order: bytes [0, 4) for IPv4, [0, 16) for IPv6; bits past
  // prefix_len (and bytes past the family's length) are zero.
  std::array<std::uint8_t, 16> network{};
  std::uint8_t prefix_len = 0;  // 0..32 (IPv4) or 0..128 (IPv6)

  std::size_t address_length() const { return family == AddressFamily::kIpv4 ? 4 : 16; }
  // "203.0.113.0/24", "2001:db8::/32".
  std::string ToString() const;
  bool operator==(const TrafficSelector&) const = default;
};

// Parses one selector. On failure returns false and says why in `error` (without naming the
// key; the caller adds that).
bool ParseTrafficSelector(std::string_view text, TrafficSelector& out, std::string& error);

// Parses a comma-separated list; whitespace around entries is ignored. An empty list (or only
// whitespace) gives no selectors; an empty entry ("a,,b", "a,") is an error.
bool ParseTrafficSelectors(std::string_view text, std::vector<TrafficSelector>& out,
                           std::string& error);

}  // namespace spigot::config
