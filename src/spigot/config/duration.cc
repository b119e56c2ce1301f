#include "spigot/config/duration.h"

#include <charconv>
#include <cstdint>

#include "spigot/config/text.h"

namespace spigot::config {
namespace {

struct Unit {
  char suffix;
  std::int64_t seconds;
};
constexpr Unit kUnits[] = {{'d', 86400}, {'h', 3600}, {'m', 60}, {'s', 1}};

}  // namespace

bool ParseDuration(std::string_view text, std::chrono::seconds& out, std::string& error) {
  const std::string_view original = Trim(text);
  std::string_view digits = original;
  std::int64_t multiplier = 1;
  if (!digits.empty()) {
    for (const Unit& unit : kUnits) {
      if (digits.back() == unit.suffix) {
        multiplier = unit.seconds;
        digits.remove_suffix(1);
        break;
      }
    }
  }
  std::int64_t count = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), count);
  if (digits.empty() || ec == std::errc::invalid_argument || end != digits.data() + digits.size() ||
      count < 0) {
    error = "\"" + std::string(original) +
            "\" is not a duration (a whole number with an optional unit s, m, h or d, like \"90s\" "
            "or \"4h\")";
    return false;
  }
  if (ec == std::errc::result_out_of_range || count > kMaxDuration.count() / multiplier) {
    error = "\"" + std::string(original) + "\" is longer than the maximum of " +
            FormatDuration(kMaxDuration);
    return false;
  }
  out = std::chrono::seconds(count * multiplier);
  return true;
}

std::string FormatDuration(std::chrono::seconds d) {
  for (const Unit& unit : kUnits) {
    if (d.count() != 0 && d.count() % unit.seconds == 0) {
      return std::to_string(d.count() / unit.seconds) + unit.suffix;
    }
  }
  return std::to_string(d.count()) + "s";
}

}  // namespace spigot::config
