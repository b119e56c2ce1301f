// The name of an outbound policy (one CHILD SA's traffic selectors) across the policy module.
#pragma once

#include <cstdint>

namespace spigot::policy {

// Chosen by the control thread (for example, the connection's index); any value but kNoPolicy.
using PolicyId = std::uint32_t;

// "No policy matches": the packet is not for any tunnel (sent in clear or dropped by the caller).
inline constexpr PolicyId kNoPolicy = 0xFFFFFFFF;

// 2^64 / phi: Fibonacci hashing (multiply, keep the top bits) for the policy module's tables.
inline constexpr std::uint64_t kGolden = 0x9E3779B97F4A7C15;

}  // namespace spigot::policy
