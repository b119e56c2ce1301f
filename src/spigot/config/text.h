// Small string helpers shared by the config parsers (internal to config/).
#pragma once

#include <string_view>
#include <vector>

namespace spigot::config {

inline std::string_view Trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\r\n";
  const std::size_t begin = s.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return {};
  return s.substr(begin, s.find_last_not_of(kSpace) - begin + 1);
}

// Splits "a, b ,c" into {"a", "b", "c"}. A blank string gives no items; blank items in a
// non-blank string are kept (as "") so the caller can reject them.
inline std::vector<std::string_view> SplitList(std::string_view s) {
  std::vector<std::string_view> items;
  if (Trim(s).empty()) return items;
  while (true) {
    const std::size_t comma = s.find(',');
    items.push_back(Trim(s.substr(0, comma)));
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
  }
  return items;
}

}  // namespace spigot::config
