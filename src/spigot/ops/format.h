// Number and duration spellings shared by `spigot doctor` and `spigot plan`.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace spigot::ops {

// A duration as the configuration spells it, in the shortest exact unit: 28800 s -> "8h",
// 5400 s -> "90m", 90 s -> "90s". The same spelling as config::FormatDuration (ops does not link
// the config module; duration_test there and format_test here pin both).
std::string ConfigDuration(std::chrono::seconds d);

// A duration for people: "under 1 us", "2.0 us", "2.0 ms", "45.0 s", "28.5 min", "7.6 h", "3.0 d".
std::string HumanDuration(double seconds);

// Bytes for people, binary units: "608 B", "2.5 MiB", "1.21 GiB".
std::string HumanBytes(double bytes);

// printf("%.*f") into a std::string.
std::string Fixed(double value, int decimals);

// A probability for people: "3.2e-7", "0.0412", and for 0 (what doubles underflow to)
// "below 1e-308".
std::string Probability(double p);

// The smallest power of two >= v (v <= 2^63); 1 for v <= 1.
std::uint64_t RoundUpPowerOfTwo(double v);

}  // namespace spigot::ops
