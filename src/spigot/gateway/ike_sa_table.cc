#include "spigot/gateway/ike_sa_table.h"

#include "spigot/crypto/random.h"

namespace spigot::gateway {

std::uint64_t IkeSaTable::OurSpi(const ike::IkeSa& sa) {
  return sa.role() == ike::IkeSa::Role::kInitiator ? sa.spi_i() : sa.spi_r();
}

SaEntry* IkeSaTable::Find(std::uint64_t ours) {
  auto it = entries_.find(ours);
  return it == entries_.end() ? nullptr : &it->second;
}

const SaEntry* IkeSaTable::Find(std::uint64_t ours) const {
  auto it = entries_.find(ours);
  return it == entries_.end() ? nullptr : &it->second;
}

SaEntry& IkeSaTable::Insert(std::uint64_t ours, SaEntry entry) {
  return entries_[ours] = std::move(entry);
}

std::uint64_t IkeSaTable::NewSpi() const {
  std::uint64_t spi;
  do {
    spi = crypto::RandomU64();
  } while (spi == 0 || entries_.count(spi) != 0 || offloaded_.count(spi) != 0);
  return spi;
}

void IkeSaTable::Schedule(std::uint64_t ours) {
  if (!adopted_.empty()) {
    const std::vector<std::uint64_t> adopted = std::move(adopted_);
    adopted_.clear();
    for (std::uint64_t a : adopted) Schedule(a);
  }
  SaEntry* e = Find(ours);
  if (e == nullptr) return;
  const ike::TimePoint next =
      e->sa->state() == ike::IkeSa::State::kDead ? ike::TimePoint::min() : e->sa->NextDeadline();
  // Only an earlier deadline is filed: a later one is found when the filed entry comes due
  // (TickOne ticks only what is due, then the SA is filed again). So each SA has at most one
  // live entry, and one stale one per earlier refiling: the heap stays O(IKE SAs).
  if (next >= e->scheduled) return;
  e->scheduled = next;
  timers_.push({next, ours});
}

bool IkeSaTable::TickOne(std::map<std::uint64_t, SaEntry>::iterator it, ike::TimePoint now) {
  ike::IkeSa& sa = *it->second.sa;
  if (sa.state() != ike::IkeSa::State::kDead && sa.NextDeadline() <= now) sa.Tick(now);
  if (sa.state() == ike::IkeSa::State::kDead) {
    ForgetHalfOpen(it->second);
    if (!it->second.peer_key.empty()) {
      auto [b, e] = by_peer_.equal_range(it->second.peer_key);
      for (auto p = b; p != e; ++p) {
        if (p->second == it->first) {
          by_peer_.erase(p);
          break;
        }
      }
    }
    entries_.erase(it);
    return false;
  }
  return true;
}

void IkeSaTable::TickDue(ike::TimePoint now) {
  ExpireRetired(now);
  // Take the due entries first, then tick them: an SA whose deadline is still due after its
  // tick is filed again and waits for the next tick, rather than being ticked again and again
  // in this one (a deadline that does not move would otherwise hold the control thread).
  std::vector<std::uint64_t> due;
  while (!timers_.empty() && timers_.top().first <= now) {
    const auto [at, ours] = timers_.top();
    timers_.pop();
    auto it = entries_.find(ours);
    if (it == entries_.end() || it->second.scheduled != at) continue;  // gone, or refiled
    it->second.scheduled = ike::TimePoint::max();
    due.push_back(ours);
  }
  for (std::uint64_t ours : due) {
    auto it = entries_.find(ours);
    if (it != entries_.end() && TickOne(it, now)) Schedule(ours);
  }
}

void IkeSaTable::Sweep(ike::TimePoint now, ike::TimePoint::duration slack) {
  std::vector<std::uint64_t> all;
  all.reserve(entries_.size());
  for (const auto& [ours, e] : entries_) all.push_back(ours);
  for (std::uint64_t ours : all) {
    auto it = entries_.find(ours);
    if (it == entries_.end()) continue;
    // now - slack, not deadline + slack: an SA with nothing due has TimePoint::max() (a rekeyed
    // one waiting for the peer's DELETE, say), which must not overflow.
    if (it->second.sa->state() != ike::IkeSa::State::kDead && it->second.sa->NextDeadline() < now - slack)
      ++timers_missed_;
    if (TickOne(it, now)) Schedule(ours);
  }
}

std::string IkeSaTable::PeerKey(const ike::IkeSa& sa) {
  if (!sa.peer_id() || !sa.connection()) return {};
  const ike::Identity& id = *sa.peer_id();
  std::string key = sa.connection()->name;
  key.push_back('\0');
  // After an EAP login the user is the peer (a native client's IKE identity is often only its
  // address, shared by users behind NATs with the same private addresses).
  if (!sa.eap_identity().empty()) {
    key.push_back('E');
    key.append(sa.eap_identity());
    return key;
  }
  key.push_back(static_cast<char>(id.type));
  key.append(id.data.begin(), id.data.end());
  return key;
}

void IkeSaTable::IndexPeer(std::uint64_t ours) {
  SaEntry* e = Find(ours);
  if (e == nullptr || !e->peer_key.empty()) return;
  e->peer_key = PeerKey(*e->sa);
  if (!e->peer_key.empty()) by_peer_.emplace(e->peer_key, ours);
}

std::vector<std::uint64_t> IkeSaTable::FindByPeer(const std::string& key) const {
  std::vector<std::uint64_t> out;
  auto [b, e] = by_peer_.equal_range(key);
  for (auto p = b; p != e; ++p) out.push_back(p->second);
  return out;
}

std::optional<std::uint64_t> IkeSaTable::FindHalfOpen(const HalfOpenKey& key) const {
  if (auto it = half_open_.find(key); it != half_open_.end()) return it->second;
  // An SA that died since is no longer in entries_: the caller finds nothing and drops the copy.
  if (auto it = retired_.find(key); it != retired_.end()) return it->second;
  return std::nullopt;
}

void IkeSaTable::RetireHalfOpen(SaEntry& e, ike::TimePoint now) {
  if (!e.half_open) return;
  const HalfOpenKey key = *e.half_open;
  ForgetHalfOpen(e);
  ExpireRetired(now);
  if (retired_.insert_or_assign(key, OurSpi(*e.sa)).second)
    retired_order_.emplace_back(now + kInitRetransmitWindow, key);
}

void IkeSaTable::ExpireRetired(ike::TimePoint now) {
  while (!retired_order_.empty() && retired_order_.front().first <= now) {
    retired_.erase(retired_order_.front().second);
    retired_order_.pop_front();
  }
}

void IkeSaTable::ForgetHalfOpen(SaEntry& e) {
  if (!e.half_open) return;
  if (auto it = half_open_.find(*e.half_open); it != half_open_.end() && it->second == OurSpi(*e.sa))
    half_open_.erase(it);
  e.half_open.reset();
}

}  // namespace spigot::gateway
