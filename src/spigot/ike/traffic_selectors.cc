#include "spigot/ike/traffic_selectors.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace spigot::ike {
namespace {

bool LessEq(const TrafficSelector& t, const std::array<std::uint8_t, 16>& a,
            const std::array<std::uint8_t, 16>& b) {
  return std::memcmp(a.data(), b.data(), t.addr_len()) <= 0;
}

}  // namespace

std::optional<TrafficSelector> SelectorFromCidr(std::string_view cidr) {
  std::string s(cidr);
  int prefix = -1;
  if (const auto slash = s.find('/'); slash != std::string::npos) {
    const std::string p = s.substr(slash + 1);
    if (p.empty() || p.size() > 3 || !std::all_of(p.begin(), p.end(), ::isdigit)) return std::nullopt;
    prefix = std::stoi(p);
    s.resize(slash);
  }
  TrafficSelector ts;
  if (inet_pton(AF_INET, s.c_str(), ts.start.data()) == 1) {
    ts.type = kTsIpv4AddrRange;
  } else if (inet_pton(AF_INET6, s.c_str(), ts.start.data()) == 1) {
    ts.type = kTsIpv6AddrRange;
  } else {
    return std::nullopt;
  }
  const int bits = static_cast<int>(ts.addr_len() * 8);
  if (prefix < 0) prefix = bits;
  if (prefix > bits) return std::nullopt;
  ts.end = ts.start;
  for (int i = prefix; i < bits; ++i) {
    const std::uint8_t bit = static_cast<std::uint8_t>(0x80u >> (i % 8));
    ts.start[static_cast<std::size_t>(i / 8)] &= static_cast<std::uint8_t>(~bit);
    ts.end[static_cast<std::size_t>(i / 8)] |= bit;
  }
  return ts;
}

std::string ToString(const TrafficSelector& ts) {
  char a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];
  const int af = ts.type == kTsIpv4AddrRange ? AF_INET : AF_INET6;
  inet_ntop(af, ts.start.data(), a, sizeof(a));
  inet_ntop(af, ts.end.data(), b, sizeof(b));
  // Print a range that is a prefix as CIDR, as operators write it.
  const int bits = static_cast<int>(ts.addr_len() * 8);
  for (int prefix = 0; prefix <= bits; ++prefix) {
    auto cidr = SelectorFromCidr(std::string(a) + "/" + std::to_string(prefix));
    if (cidr && cidr->start == ts.start && cidr->end == ts.end) {
      std::string out = std::string(a) + "/" + std::to_string(prefix);
      if (ts.ip_protocol != 0) out += "[" + std::to_string(ts.ip_protocol) + "]";
      return out;
    }
  }
  return std::string(a) + ".." + b;
}

std::optional<TrafficSelector> Intersect(const TrafficSelector& a, const TrafficSelector& b) {
  if (a.type != b.type) return std::nullopt;
  if (a.ip_protocol != 0 && b.ip_protocol != 0 && a.ip_protocol != b.ip_protocol)
    return std::nullopt;
  TrafficSelector r = a;
  r.ip_protocol = a.ip_protocol != 0 ? a.ip_protocol : b.ip_protocol;
  r.start_port = std::max(a.start_port, b.start_port);
  r.end_port = std::min(a.end_port, b.end_port);
  if (r.start_port > r.end_port) return std::nullopt;
  r.start = LessEq(a, a.start, b.start) ? b.start : a.start;
  r.end = LessEq(a, a.end, b.end) ? a.end : b.end;
  if (!LessEq(a, r.start, r.end)) return std::nullopt;
  return r;
}

std::vector<TrafficSelector> Narrow(const std::vector<TrafficSelector>& proposed,
                                    const std::vector<TrafficSelector>& configured) {
  std::vector<TrafficSelector> out;
  for (const auto& p : proposed) {
    for (const auto& c : configured) {
      if (auto r = Intersect(p, c); r && std::find(out.begin(), out.end(), *r) == out.end())
        out.push_back(*r);
    }
  }
  return out;
}

bool Contains(const std::vector<TrafficSelector>& outer, const std::vector<TrafficSelector>& inner) {
  for (const auto& i : inner) {
    bool inside = false;
    for (const auto& o : outer) {
      if (auto r = Intersect(i, o); r && *r == i) inside = true;
    }
    if (!inside) return false;
  }
  return true;
}

}  // namespace spigot::ike
