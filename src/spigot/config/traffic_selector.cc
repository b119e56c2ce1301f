#include "spigot/config/traffic_selector.h"

#include <arpa/inet.h>

#include <charconv>

#include "spigot/config/text.h"

namespace spigot::config {

std::string TrafficSelector::ToString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(family == AddressFamily::kIpv4 ? AF_INET : AF_INET6, network.data(), buf, sizeof buf);
  return std::string(buf) + "/" + std::to_string(prefix_len);
}

bool ParseTrafficSelector(std::string_view text, TrafficSelector& out, std::string& error) {
  text = Trim(text);
  const std::size_t slash = text.find('/');
  const std::string address(text.substr(0, slash));

  TrafficSelector ts;
  std::size_t max_prefix = 0;
  if (inet_pton(AF_INET, address.c_str(), ts.network.data()) == 1) {
    ts.family = AddressFamily::kIpv4;
    max_prefix = 32;
  } else if (inet_pton(AF_INET6, address.c_str(), ts.network.data()) == 1) {
    ts.family = AddressFamily::kIpv6;
    max_prefix = 128;
  } else {
    error = "\"" + std::string(text) + "\" is not an address or CIDR prefix (like 10.0.0.0/8 or 2001:db8::/32)";
    return false;
  }

  std::size_t prefix = max_prefix;
  if (slash != std::string_view::npos) {
    const std::string_view digits = text.substr(slash + 1);
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
    if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() ||
        prefix > max_prefix) {
      error = "\"" + std::string(text) + "\": prefix length must be 0.." +
              std::to_string(max_prefix);
      return false;
    }
  }
  ts.prefix_len = static_cast<std::uint8_t>(prefix);

  // Clear the host bits.
  for (std::size_t bit = prefix; bit < max_prefix; ++bit) {
    ts.network[bit / 8] &= static_cast<std::uint8_t>(~(0x80u >> (bit % 8)));
  }
  out = ts;
  return true;
}

bool ParseTrafficSelectors(std::string_view text, std::vector<TrafficSelector>& out,
                           std::string& error) {
  std::vector<TrafficSelector> result;
  for (std::string_view item : SplitList(text)) {
    if (item.empty()) {
      error = "empty entry in the comma-separated list";
      return false;
    }
    TrafficSelector ts;
    if (!ParseTrafficSelector(item, ts, error)) return false;
    result.push_back(ts);
  }
  out = std::move(result);
  return true;
}

}  // namespace spigot::config
