// Durations as written in the configuration: "90s", "30m", "4h", "1d", or a plain number of
// seconds ("3600", or a TOML integer handled by the caller).
#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace spigot::config {

// The largest duration accepted: 10 years. Far beyond any sensible lifetime, and small enough
// that `rekey_time * 1.1` and time_point arithmetic never overflow.
inline constexpr std::chrono::seconds kMaxDuration{10LL * 365 * 24 * 3600};

// Parses "<digits>[s|m|h|d]" (surrounding whitespace ignored). On failure returns false and says
// why in `error`.
bool ParseDuration(std::string_view text, std::chrono::seconds& out, std::string& error);

// The shortest exact spelling: 14400s -> "4h", 90s -> "90s", 5400s -> "90m".
std::string FormatDuration(std::chrono::seconds d);

}  // namespace spigot::config
