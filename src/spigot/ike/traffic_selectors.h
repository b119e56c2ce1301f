// Traffic selectors as ranges (RFC 7296 3.13.1) and the narrowing of 2.9.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "spigot/ike/message.h"

namespace spigot::ike {

// "198.51.100.0/24", "2001:db8::/32", "192.0.2.7" (a host) to a selector of any protocol and
// port. nullopt on bad syntax.
std::optional<TrafficSelector> SelectorFromCidr(std::string_view cidr);
std::string ToString(const TrafficSelector& ts);

// The intersection of two selectors, if any (same type, overlapping protocol, ports, addresses).
std::optional<TrafficSelector> Intersect(const TrafficSelector& a, const TrafficSelector& b);
// 2.9: every intersection of a proposed selector with a configured one, in the proposed order.
std::vector<TrafficSelector> Narrow(const std::vector<TrafficSelector>& proposed,
                                    const std::vector<TrafficSelector>& configured);
// True if every selector of `inner` lies inside some selector of `outer`.
bool Contains(const std::vector<TrafficSelector>& outer, const std::vector<TrafficSelector>& inner);

}  // namespace spigot::ike
