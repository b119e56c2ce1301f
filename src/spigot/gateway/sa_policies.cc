#include "spigot/gateway/sa_policies.h"

#include <algorithm>

namespace spigot::gateway {

std::string SaPolicies::SelectorKey(const std::string& peer,
                                    const std::vector<policy::Prefix>& locals,
                                    const std::vector<policy::Prefix>& remotes) {
  std::string key = peer;
  auto add = [&key](char side, const policy::Prefix& p) {
    key.push_back(side);
    key.push_back(static_cast<char>(p.family));
    key.append(reinterpret_cast<const char*>(p.address.data()), policy::AddressLength(p.family));
    key.push_back(static_cast<char>(p.prefix_len));
  };
  for (const auto& p : locals) add('L', p);
  for (const auto& p : remotes) add('R', p);
  return key;
}

policy::PolicyId SaPolicies::Join(const std::string& peer, std::vector<policy::Prefix> locals,
                                  std::vector<policy::Prefix> remotes, std::uint32_t spi_in,
                                  bool* created) {
  // Order-independent: TSi {a, b} and {b, a} are one set of selectors.
  auto order = [](const policy::Prefix& a, const policy::Prefix& b) {
    return std::tie(a.family, a.address, a.prefix_len) < std::tie(b.family, b.address, b.prefix_len);
  };
  std::sort(locals.begin(), locals.end(), order);
  std::sort(remotes.begin(), remotes.end(), order);
  const std::string key = SelectorKey(peer, locals, remotes);
  if (auto it = by_selectors_.find(key); it != by_selectors_.end()) {
    policies_[it->second].members.push_back(spi_in);
    *created = false;
    return it->second;
  }
  policy::PolicyId id;
  if (!free_ids_.empty()) {
    id = free_ids_.back();
    free_ids_.pop_back();
  } else {
    id = next_id_++;
  }
  for (const auto& r : remotes) claims_.emplace(KeyOf(r), id);
  by_selectors_.emplace(key, id);
  policies_[id] = Policy{peer, std::move(locals), std::move(remotes), {spi_in}};
  *created = true;
  return id;
}

void SaPolicies::JoinExisting(policy::PolicyId id, std::uint32_t spi_in) {
  if (auto it = policies_.find(id); it != policies_.end()) it->second.members.push_back(spi_in);
}

bool SaPolicies::Leave(policy::PolicyId id, std::uint32_t spi_in) {
  auto it = policies_.find(id);
  if (it == policies_.end()) return false;
  auto& m = it->second.members;
  m.erase(std::remove(m.begin(), m.end(), spi_in), m.end());
  if (!m.empty()) return false;
  for (const auto& r : it->second.remotes) {
    auto [b, e] = claims_.equal_range(KeyOf(r));
    for (auto c = b; c != e; ++c) {
      if (c->second == id) {
        claims_.erase(c);
        break;
      }
    }
  }
  by_selectors_.erase(SelectorKey(it->second.peer, it->second.locals, it->second.remotes));
  policies_.erase(it);
  free_ids_.push_back(id);
  return true;
}

bool SaPolicies::LocalsOverlap(policy::PolicyId id,
                               const std::vector<policy::Prefix>& locals) const {
  const Policy& p = policies_.at(id);
  for (const auto& a : p.locals) {
    for (const auto& b : locals) {
      if (a.Overlaps(b)) return true;
    }
  }
  return false;
}

const std::string* SaPolicies::Conflict(const std::string& peer,
                                        const std::vector<policy::Prefix>& locals,
                                        const std::vector<policy::Prefix>& remotes) const {
  auto other = [&](policy::PolicyId id) -> const std::string* {
    const Policy& p = policies_.at(id);
    return p.peer != peer && LocalsOverlap(id, locals) ? &p.peer : nullptr;
  };
  for (const auto& r : remotes) {
    // Claims inside r (or equal to it): their network addresses lie in r's range, and the
    // index is ordered by address.
    std::array<std::uint8_t, 16> last = r.address;
    const std::size_t n = policy::AddressLength(r.family);
    for (std::size_t bit = r.prefix_len; bit < n * 8; ++bit) last[bit / 8] |= 0x80 >> (bit % 8);
    for (auto c = claims_.lower_bound({r.family, r.address, 0});
         c != claims_.end() && std::get<0>(c->first) == r.family && std::get<1>(c->first) <= last;
         ++c) {
      if (const std::string* hit = other(c->second)) return hit;
    }
    // Claims that contain r: one exact lookup per shorter length.
    for (unsigned len = 0; len < r.prefix_len; ++len) {
      const auto shorter = policy::Prefix::Make(r.family, std::span(r.address).first(n),
                                                static_cast<std::uint8_t>(len));
      auto [b, e] = claims_.equal_range(KeyOf(*shorter));
      for (auto c = b; c != e; ++c) {
        if (const std::string* hit = other(c->second)) return hit;
      }
    }
  }
  return nullptr;
}

const SaPolicies::Policy* SaPolicies::Find(policy::PolicyId id) const {
  auto it = policies_.find(id);
  return it == policies_.end() ? nullptr : &it->second;
}

}  // namespace spigot::gateway
