// The name of an outbound policy (one CHILD SA's traffic selectors) across the policy module.
#pragma once

#include <cstdint>

namespace spigot::policy {

// Chosen by the control thread (for example, the connection's index); any value but kNoPolicy.
using PolicyId = std::uint32_t;

// "No policy matches": the packet is not for any tunnel (sent in clear or dropped by the caller).
inline constexpr PolicyId kNoPolicy = 0xFFFFFFFF;

}  // namespace spigot::policy
