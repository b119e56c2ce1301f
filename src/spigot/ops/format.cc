#include "spigot/ops/format.h"

#include <cmath>
#include <cstdio>

namespace spigot::ops {

std::string ConfigDuration(std::chrono::seconds d) {
  struct Unit {
    char suffix;
    std::int64_t seconds;
  };
  static constexpr Unit kUnits[] = {{'d', 86400}, {'h', 3600}, {'m', 60}, {'s', 1}};
  for (const Unit& unit : kUnits) {
    if (d.count() != 0 && d.count() % unit.seconds == 0) {
      return std::to_string(d.count() / unit.seconds) + unit.suffix;
    }
  }
  return std::to_string(d.count()) + "s";
}

std::string Fixed(double value, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  return buf;
}

std::string HumanDuration(double seconds) {
  if (seconds < 1e-6) return "under 1 us";
  if (seconds < 1e-3) return Fixed(seconds * 1e6, 1) + " us";
  if (seconds < 1) return Fixed(seconds * 1000, 1) + " ms";
  if (seconds < 120) return Fixed(seconds, 1) + " s";
  if (seconds < 7200) return Fixed(seconds / 60, 1) + " min";
  if (seconds < 2 * 86400) return Fixed(seconds / 3600, 1) + " h";
  return Fixed(seconds / 86400, 1) + " d";
}

std::string HumanBytes(double bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  return u == 0 ? Fixed(bytes, 0) + " B" : Fixed(bytes, bytes < 10 ? 2 : 1) + " " + kUnits[u];
}

std::string Probability(double p) {
  if (p == 0) return "below 1e-308";
  char buf[32];
  std::snprintf(buf, sizeof buf, p < 1e-3 ? "%.2g" : "%.4f", p);
  std::string s = buf;
  // "1e-06" -> "1e-6"
  if (const std::size_t e = s.find("e-0"); e != std::string::npos) s.erase(e + 2, 1);
  return s;
}

std::uint64_t RoundUpPowerOfTwo(double v) {
  std::uint64_t p = 1;
  while (double(p) < v && p < (std::uint64_t{1} << 63)) p <<= 1;
  return p;
}

}  // namespace spigot::ops
