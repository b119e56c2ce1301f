#include "spigot/gateway/child_sa_manager.h"

#include <spdlog/spdlog.h>

#include "spigot/crypto/random.h"
#include "spigot/ike/proposal.h"

namespace spigot::gateway {

ChildSaManager::ChildSaManager(DataPlane& dataplane, ike::TimePoint now)
    : dataplane_(dataplane), rekey_scheduler_(1000, now) {}

const ChildSaManager::Child* ChildSaManager::Find(std::uint32_t spi_in) const {
  auto it = children_.find(spi_in);
  return it == children_.end() ? nullptr : &it->second;
}

bool ChildSaManager::Install(const ike::ChildSaInfo& child, std::uint64_t owner,
                             const std::string& peer, const Connection* conn,
                             const io::Endpoint& peer_natt, const io::IpAddress& source,
                             ike::TimePoint now) {
  sa::ChildSaParams p;
  p.inbound_spi = child.spi_in;
  p.outbound_spi = child.spi_out;
  p.suite = child.algs.suite;
  p.inbound_keymat = child.keymat_in;
  p.outbound_keymat = child.keymat_out;
  p.esn = child.algs.esn;
  if (conn != nullptr) p.replay_window = conn->cfg.replay_window;
  p.rekey_of = child.rekey_of != 0 && sad_.LookupInbound(child.rekey_of) ? child.rekey_of : 0;
  const sa::InstallStatus st = sad_.Install(p, now);
  if (st != sa::InstallStatus::kOk) {
    ++counters_.install_failed;
    spdlog::error("CHILD SA {:08x}: install failed: {}", child.spi_in, sa::ToString(st));
    return false;
  }
  std::vector<policy::Prefix> locals = SelectorPrefixes(child.local_ts);
  std::vector<policy::Prefix> remotes = SelectorPrefixes(child.remote_ts);
  Child rec;
  rec.owner = owner;
  // The SA's own policy: its predecessor's for a rekey, else the peer's with these selectors,
  // else a new one.
  bool created = false;
  if (auto pre = children_.find(child.rekey_of); child.rekey_of != 0 && pre != children_.end()) {
    rec.policy = pre->second.policy;
    policies_.JoinExisting(rec.policy, child.spi_in);
  } else {
    if (policies_.Conflict(peer, locals, remotes) != nullptr) {
      // Only an initiator gets here (a responder refuses with TS_UNACCEPTABLE before): its own
      // configuration overlaps another peer's. The first one keeps the traffic.
      ++counters_.policy_conflicts;
      spdlog::warn("CHILD SA {:08x}: its selectors overlap another peer's CHILD SA", child.spi_in);
    }
    rec.policy = policies_.Join(peer, locals, remotes, child.spi_in, &created);
  }
  rec.spi_out = child.spi_out;
  rec.rekey_of = child.rekey_of;
  rec.counters = std::make_shared<datapath::SaCounters>();
  // A rekey the peer started: keep sending on the old SA until the peer uses the new one.
  const bool switch_now =
      child.rekey_of == 0 || child.we_initiated || children_.count(child.rekey_of) == 0;
  datapath::InboundSpec in;
  in.spi = child.spi_in;
  in.suite = child.algs.suite;
  in.keymat = child.keymat_in;
  in.esn = child.algs.esn;
  in.replay_window = p.replay_window;
  in.policy = rec.policy;
  for (const auto& l : locals) {
    for (const auto& r : remotes) {
      if (l.family == r.family) in.selectors.push_back({l, r});
    }
  }
  in.counters = rec.counters;
  in.report_first_packet = !switch_now;
  in.peer = peer_natt;
  dataplane_.InstallInbound(std::move(in));
  datapath::OutboundSpec out;
  out.policy = rec.policy;
  out.spi = child.spi_out;
  out.suite = child.algs.suite;
  out.keymat = child.keymat_out;
  out.esn = child.algs.esn;
  out.peer = peer_natt;
  out.source = source;
  out.counters = rec.counters;
  // Traffic a trap held for the connection goes out on its first SA.
  out.flush_held = conn != nullptr ? dataplane_.PolicyFor(conn->cfg.name) : policy::kNoPolicy;
  rec.outbound = std::move(out);
  rec.outbound_deferred = !switch_now;
  rec.installed = now;
  if (!switch_now) deferred_successor_[child.rekey_of] = child.spi_in;
  if (child.rekey_of != 0) {
    rekeys_.Record(now);
    ++(child.we_initiated ? counters_.rekeys_completed : counters_.rekeys_answered);
    rekey_scheduler_.Cancel(child.rekey_of);
  } else {
    negotiations_.Record(now);
  }
  if (child.rekey_at != ike::TimePoint::max()) rekey_scheduler_.Schedule(child.spi_in, child.rekey_at);
  if (conn != nullptr && (conn->cfg.child_life_bytes != 0 || conn->cfg.child_life_packets != 0)) {
    // Soft at 80-90 % of the hard value, at random, so SAs set up together do not rekey
    // together (as for the time lifetimes).
    const double soft = 0.8 + 0.1 * crypto::RandomUnit();
    rec.hard_bytes = conn->cfg.child_life_bytes;
    rec.hard_packets = conn->cfg.child_life_packets;
    rec.soft_bytes = static_cast<std::uint64_t>(static_cast<double>(rec.hard_bytes) * soft);
    rec.soft_packets = static_cast<std::uint64_t>(static_cast<double>(rec.hard_packets) * soft);
    volume_limited_.insert(child.spi_in);
  }
  const policy::PolicyId policy = rec.policy;
  children_[child.spi_in] = std::move(rec);
  // The SA first, then the SPD entry that sends traffic to it.
  if (switch_now) UseOutbound(child.spi_in);
  if (created) dataplane_.SetSaPolicy(policy, locals, remotes);
  return true;
}

bool ChildSaManager::Admit(const std::string& peer, const std::vector<ike::TrafficSelector>& local_ts,
                           const std::vector<ike::TrafficSelector>& remote_ts) {
  const std::vector<policy::Prefix> remotes = SelectorPrefixes(remote_ts);
  const std::string* other = policies_.Conflict(peer, SelectorPrefixes(local_ts), remotes);
  if (other == nullptr) return true;
  ++counters_.policy_conflicts;
  std::string claimed;
  for (const auto& r : remotes) claimed += (claimed.empty() ? "" : ", ") + r.ToString();
  // The peer keys hold the identity in binary: the connection's name is what is printable.
  spdlog::warn("{}: CHILD SA for {} refused (TS_UNACCEPTABLE): another peer's CHILD SA has "
               "these addresses", peer.substr(0, peer.find('\0')), claimed);
  return false;
}

void ChildSaManager::Remove(std::uint32_t spi_in, bool linger, ike::TimePoint now) {
  rekey_scheduler_.Cancel(spi_in);
  // The SPI goes back to the pool at once — lingering SAs must not eat the rekey reserve —
  // and cannot come back meanwhile: a freed slot's next SPI differs (SpiPool generations).
  sad_.Remove(spi_in);
  if (linger) {
    lingering_.emplace_back(now + kInboundLinger, spi_in);
  } else {
    dataplane_.RemoveInbound(spi_in);
  }
  std::uint32_t successor = 0;
  if (auto d = deferred_successor_.find(spi_in); d != deferred_successor_.end()) {
    successor = d->second;
    deferred_successor_.erase(d);
  }
  volume_limited_.erase(spi_in);
  auto it = children_.find(spi_in);
  if (it == children_.end()) return;
  const policy::PolicyId policy = it->second.policy;
  const std::uint32_t spi_out = it->second.spi_out;
  children_.erase(it);
  const bool last = policies_.Leave(policy, spi_in);
  auto cur = current_outbound_.find(policy);
  if (cur != current_outbound_.end() && cur->second == spi_in) {
    // The SA carrying the policy's traffic is gone: its successor, else the newest other CHILD
    // SA of the policy, takes over before anything is cleared.
    if (children_.count(successor) == 0) {
      successor = 0;
      ike::TimePoint newest{};
      if (const SaPolicies::Policy* p = policies_.Find(policy)) {
        for (std::uint32_t spi : p->members) {
          auto ch = children_.find(spi);
          if (ch != children_.end() && (successor == 0 || ch->second.installed > newest)) {
            successor = spi;
            newest = ch->second.installed;
          }
        }
      }
    }
    if (successor != 0) {
      UseOutbound(successor);
    } else {
      current_outbound_.erase(cur);
      dataplane_.ClearOutbound(policy, spi_out);
    }
  }
  if (last) dataplane_.RemoveSaPolicy(policy);
}

std::vector<policy::Prefix> SelectorPrefixes(const std::vector<ike::TrafficSelector>& ts) {
  std::vector<policy::Prefix> out;
  for (const auto& t : ts) {
    const bool v4 = t.type == ike::kTsIpv4AddrRange;
    const unsigned bits = v4 ? 32 : 128;
    const std::size_t n = v4 ? 4 : 16;
    unsigned __int128 start = 0, end = 0;
    for (std::size_t i = 0; i < n; ++i) {
      start = start << 8 | t.start[i];
      end = end << 8 | t.end[i];
    }
    // The fewest prefixes that cover [start, end] exactly: at each step the largest aligned
    // block that starts at `start` and ends inside the range.
    using U = unsigned __int128;
    auto low_bits = [](unsigned k) { return k >= 128 ? ~U{0} : (U{1} << k) - 1; };
    if (start > end) continue;
    while (true) {
      unsigned k = 0;
      while (k < bits && (start & low_bits(k + 1)) == 0 && (start | low_bits(k + 1)) <= end) ++k;
      std::array<std::uint8_t, 16> addr{};
      for (std::size_t i = 0; i < n; ++i)
        addr[i] = static_cast<std::uint8_t>(start >> (8 * (n - 1 - i)));
      out.push_back(*policy::Prefix::Make(v4 ? policy::Family::kIpv4 : policy::Family::kIpv6,
                                          std::span(addr).first(n),
                                          static_cast<std::uint8_t>(bits - k)));
      const U last = start | low_bits(k);
      if (last >= end) break;
      start = last + 1;
    }
  }
  return out;
}

bool ChildSaManager::HeardFrom(const std::vector<ike::ChildSaInfo>& children) {
  bool heard = false;
  for (const auto& c : children) {
    auto it = children_.find(c.spi_in);
    if (it == children_.end() || !it->second.counters) continue;
    const std::uint64_t rx = it->second.counters->rx_packets.load(std::memory_order_relaxed);
    if (rx != it->second.rx_seen) {
      it->second.rx_seen = rx;
      heard = true;
    }
  }
  return heard;
}

void ChildSaManager::MovePeer(const std::vector<ike::ChildSaInfo>& children, const io::Endpoint& peer,
                              const io::IpAddress& source) {
  std::vector<std::uint32_t> spis_in, spis_out;
  for (const auto& c : children) {
    auto it = children_.find(c.spi_in);
    if (it == children_.end()) continue;
    spis_in.push_back(c.spi_in);
    spis_out.push_back(it->second.spi_out);
    it->second.outbound.peer = peer;  // a deferred outbound half goes there too when it starts
    it->second.outbound.source = source;
  }
  if (!spis_in.empty()) dataplane_.MovePeer(spis_in, spis_out, peer, source);
}

void ChildSaManager::OnFirstPacket(std::uint32_t spi_in) {
  auto c = children_.find(spi_in);
  if (c == children_.end() || !c->second.outbound_deferred) return;
  if (auto d = deferred_successor_.find(c->second.rekey_of);
      d != deferred_successor_.end() && d->second == spi_in)
    deferred_successor_.erase(d);
  UseOutbound(spi_in);
  ++counters_.outbound_switched_on_traffic;
}

void ChildSaManager::SetOwner(std::uint32_t spi_in, std::uint64_t owner) {
  if (auto it = children_.find(spi_in); it != children_.end()) it->second.owner = owner;
}

void ChildSaManager::UseOutbound(std::uint32_t spi_in) {
  auto c = children_.find(spi_in);
  if (c == children_.end() || c->second.policy == policy::kNoPolicy) return;
  c->second.outbound_deferred = false;
  current_outbound_[c->second.policy] = spi_in;
  dataplane_.SetOutbound(c->second.outbound);  // a copy: the record keeps its own
}

void ChildSaManager::StartDueRekeys(ike::TimePoint now, IkeSaTable& table) {
  for (std::uint32_t spi : rekey_scheduler_.Due(now)) {
    auto c = children_.find(spi);
    if (c == children_.end()) continue;
    SaEntry* owner = table.Find(c->second.owner);
    if (owner == nullptr || !owner->sa->RekeyChild(spi, now)) {
      rekey_scheduler_.Schedule(spi, now + std::chrono::seconds(1));  // busy: try again
    } else {
      table.Schedule(c->second.owner);
    }
  }
}

// Bytes and packets lifetimes (RFC 4301 4.4.2.1): the soft one asks the rekey scheduler for a
// rekey now (it still goes through the rate limit, most overdue first); the hard one deletes
// the SA whether or not its successor is there. Both directions count.
void ChildSaManager::CheckVolumeLifetimes(ike::TimePoint now, IkeSaTable& table) {
  for (std::uint32_t spi : volume_limited_) {
    auto c = children_.find(spi);
    if (c == children_.end() || !c->second.counters) continue;
    Child& ch = c->second;
    const std::uint64_t bytes = ch.counters->bytes.load(std::memory_order_relaxed);
    const std::uint64_t packets = ch.counters->packets.load(std::memory_order_relaxed);
    const bool hard = (ch.hard_bytes != 0 && bytes >= ch.hard_bytes) ||
                      (ch.hard_packets != 0 && packets >= ch.hard_packets);
    const bool soft = (ch.soft_bytes != 0 && bytes >= ch.soft_bytes) ||
                      (ch.soft_packets != 0 && packets >= ch.soft_packets);
    SaEntry* owner = table.Find(ch.owner);
    if (hard && !ch.volume_deleted && owner != nullptr) {
      // Soft and hard crossed between two looks (a burst, a busy tick): start the rekey now,
      // ahead of the DELETE in the IKE SA's queue, so the successor carries the traffic and
      // the policy is never left without an SA.
      if (!ch.volume_rekeyed && owner->sa->RekeyChild(spi, now)) {
        ch.volume_rekeyed = true;
        ++counters_.volume_rekeys;
        rekey_scheduler_.Cancel(spi);
      }
      if (owner->sa->DeleteChild(spi, now)) {
        table.Schedule(ch.owner);
        ch.volume_deleted = true;
        ++counters_.volume_deletes;
        spdlog::warn("CHILD SA {:08x}_i reached its volume lifetime ({} bytes, {} packets) before "
                     "its rekey completed: deleting it", spi, bytes, packets);
      }
    } else if (soft && !ch.volume_rekeyed) {
      ch.volume_rekeyed = true;
      ++counters_.volume_rekeys;
      rekey_scheduler_.Schedule(spi, now);  // StartDueRekeys files the IKE SA
    }
  }
}

void ChildSaManager::ExpireLingering(ike::TimePoint now) {
  while (!lingering_.empty() && lingering_.front().first <= now) {
    dataplane_.RemoveInbound(lingering_.front().second);
    lingering_.pop_front();
  }
}

void ChildSaManager::OnExhausted(policy::PolicyId policy, std::uint32_t spi_out,
                                 ike::TimePoint now, IkeSaTable& table) {
  for (auto& [spi_in, c] : children_) {
    if (c.policy != policy || c.spi_out != spi_out) continue;
    if (SaEntry* owner = table.Find(c.owner)) {
      owner->sa->RekeyChild(spi_in, now);
      table.Schedule(c.owner);
    }
    spdlog::warn("CHILD SA {:08x}_o ran out of sequence numbers: rekeying", spi_out);
  }
}

}  // namespace spigot::gateway
