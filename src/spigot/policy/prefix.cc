#include "spigot/policy/prefix.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace spigot::policy {
namespace {

void ClearHostBits(Prefix& p) {
  const std::size_t bits = MaxPrefixLength(p.family);
  for (std::size_t bit = p.prefix_len; bit < bits; ++bit) {
    p.address[bit / 8] &= static_cast<std::uint8_t>(~(0x80u >> (bit % 8)));
  }
}

}  // namespace

std::optional<Prefix> Prefix::Parse(std::string_view cidr) {
  const std::size_t slash = cidr.find('/');
  const std::string_view address = cidr.substr(0, slash);
  // inet_pton wants a C string; the longest IPv6 text (with an embedded IPv4) fits in 45 bytes.
  char text[INET6_ADDRSTRLEN] = {};
  if (address.empty() || address.size() >= sizeof text) return std::nullopt;
  std::memcpy(text, address.data(), address.size());

  Prefix p;
  if (inet_pton(AF_INET, text, p.address.data()) == 1) {
    p.family = Family::kIpv4;
  } else if (inet_pton(AF_INET6, text, p.address.data()) == 1) {
    p.family = Family::kIpv6;
  } else {
    return std::nullopt;
  }

  unsigned len = MaxPrefixLength(p.family);
  if (slash != std::string_view::npos) {
    const std::string_view digits = cidr.substr(slash + 1);
    if (digits.empty() || digits.size() > 3 || (digits.size() > 1 && digits[0] == '0')) {
      return std::nullopt;
    }
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), len);
    if (ec != std::errc() || end != digits.data() + digits.size() ||
        len > MaxPrefixLength(p.family)) {
      return std::nullopt;
    }
  }
  p.prefix_len = static_cast<std::uint8_t>(len);
  ClearHostBits(p);
  return p;
}

std::optional<Prefix> Prefix::Make(Family family, std::span<const std::uint8_t> address,
                                   std::uint8_t prefix_len) {
  if ((family != Family::kIpv4 && family != Family::kIpv6) ||
      address.size() != AddressLength(family) || prefix_len > MaxPrefixLength(family)) {
    return std::nullopt;
  }
  Prefix p;
  p.family = family;
  std::copy(address.begin(), address.end(), p.address.begin());
  p.prefix_len = prefix_len;
  ClearHostBits(p);
  return p;
}

bool Prefix::Contains(std::span<const std::uint8_t> addr) const {
  if (addr.size() != AddressLength(family)) return false;
  const std::size_t whole = prefix_len / 8;
  if (std::memcmp(addr.data(), address.data(), whole) != 0) return false;
  const unsigned rest = prefix_len % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<std::uint8_t>(0xFF00u >> rest);
  return ((addr[whole] ^ address[whole]) & mask) == 0;
}

bool Prefix::Overlaps(const Prefix& other) const {
  if (family != other.family) return false;
  const Prefix& shorter = prefix_len <= other.prefix_len ? *this : other;
  const Prefix& longer = prefix_len <= other.prefix_len ? other : *this;
  return shorter.Contains(std::span(longer.address).first(AddressLength(family)));
}

std::string Prefix::ToString() const {
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(family == Family::kIpv4 ? AF_INET : AF_INET6, address.data(), text, sizeof text);
  return std::string(text) + "/" + std::to_string(prefix_len);
}

}  // namespace spigot::policy
