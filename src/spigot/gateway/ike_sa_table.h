// The gateway's IKE SAs, by our own SPI (SPIi for those we initiated, SPIr for the others),
// with the deadline heap that drives their timers and the two indexes a responder needs:
// half-open SAs by (peer's SPIi, peer address), so a retransmitted IKE_SA_INIT finds the SA
// it created (RFC 7296 2.1) — for kInitRetransmitWindow after it is established, too — and
// the SPIs of SAs an IKE worker is still answering.
//
// Timers: every IKE SA deadline (retransmits, half-open and liveness timers, lifetimes; see
// ike/ike_sa.h) is filed in one heap. A tick works the due entries only, O(due log n), not a
// walk of every SA; Sweep() walks all of them now and then as a safety net and counts the
// deadlines the heap missed (want 0).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "spigot/ike/ike_sa.h"

namespace spigot::gateway {

using HalfOpenKey = std::pair<std::uint64_t, std::string>;  // (peer's SPIi, peer address)

struct SaEntry {
  std::unique_ptr<ike::IkeSa> sa;
  bool natt = false;                     // IKE moved to port 4500 (2.23)
  std::optional<HalfOpenKey> half_open;  // a responder's, until established or gone
  // The deadline this SA is filed under in the heap (max: none), never later than its real
  // next deadline. A heap entry with another time is stale.
  ike::TimePoint scheduled = ike::TimePoint::max();
  // Its key in the peer index (IndexPeer), empty until it is established.
  std::string peer_key;
  // When its negotiation began (IKE_SA_INIT sent or received), for the negotiation-latency
  // histogram; zero for an IKE rekey's replacement (not a negotiation of a new peer).
  ike::TimePoint started{};
};

class IkeSaTable {
 public:
  // Our SPI of `sa`: SPIi if we initiated it, SPIr otherwise.
  static std::uint64_t OurSpi(const ike::IkeSa& sa);

  SaEntry* Find(std::uint64_t ours);
  const SaEntry* Find(std::uint64_t ours) const;
  SaEntry& Insert(std::uint64_t ours, SaEntry entry);
  std::size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  std::map<std::uint64_t, SaEntry>& entries() { return entries_; }
  const std::map<std::uint64_t, SaEntry>& entries() const { return entries_; }

  // A fresh SPI of ours: random, never 0, unused here and on the workers.
  std::uint64_t NewSpi() const;

  // Files SA `ours` in the heap under its next deadline (after anything that may change it: a
  // received message, a request, a timer). A dead SA is filed as due now, to be removed. Also
  // files the SAs noted by NoteAdopted.
  void Schedule(std::uint64_t ours);
  // An IKE SA a rekey created, filed on the next Schedule call (once the old SA's exchange,
  // which starts the new one's queued requests, is over).
  void NoteAdopted(std::uint64_t ours) { adopted_.push_back(ours); }
  // Ticks the SAs whose filed deadline has come, removes the dead ones, files the rest again.
  void TickDue(ike::TimePoint now);
  // Ticks every SA (the safety net); counts in timers_missed() those overdue by more than
  // `slack`, which the heap should have had.
  void Sweep(ike::TimePoint now, ike::TimePoint::duration slack);
  std::uint64_t timers_missed() const { return timers_missed_; }

  // Half-open responders.
  // How long an established responder stays findable by its half-open key: an initiator
  // retransmits IKE_SA_INIT for 1 + 2 + 4 + 8 + 16 s, and a copy can arrive (or leave the
  // negotiation queue) after IKE_AUTH established the SA. Without this it would create a
  // second IKE SA, a DH on a worker and a half-open SA holding memory and counting towards
  // cookie_threshold until the half-open timeout (30 s) — thousands of them in a login storm.
  // Found, the copy reaches the established SA, which drops it (message ID 0 is done).
  static constexpr auto kInitRetransmitWindow = std::chrono::seconds(32);
  std::optional<std::uint64_t> FindHalfOpen(const HalfOpenKey& key) const;
  void AddHalfOpen(const HalfOpenKey& key, std::uint64_t ours) { half_open_[key] = ours; }
  void ForgetHalfOpen(SaEntry& e);
  // SA `e` is established: no longer half-open (half_open_count), but its key still finds it
  // until now + kInitRetransmitWindow (or until it is gone).
  void RetireHalfOpen(SaEntry& e, ike::TimePoint now);
  std::size_t half_open_count() const { return half_open_.size(); }
  std::size_t retired_half_open_count() const { return retired_.size(); }

  // Established IKE SAs by (connection, peer identity): what unique identities look up, in
  // O(SAs of that peer) rather than a walk of the table. An SA leaves the index when it leaves
  // the table.
  static std::string PeerKey(const ike::IkeSa& sa);  // empty if the peer is not authenticated
  void IndexPeer(std::uint64_t ours);
  std::vector<std::uint64_t> FindByPeer(const std::string& key) const;

  // IKE SAs on a worker (not yet in the table).
  void MarkOffloaded(std::uint64_t ours) { offloaded_.insert(ours); }
  void UnmarkOffloaded(std::uint64_t ours) { offloaded_.erase(ours); }
  bool IsOffloaded(std::uint64_t ours) const { return offloaded_.count(ours) != 0; }
  std::size_t offloaded_count() const { return offloaded_.size(); }

 private:
  // Ticks one SA whose deadline has come; removes it if it is dead. False if removed.
  bool TickOne(std::map<std::uint64_t, SaEntry>::iterator it, ike::TimePoint now);

  std::map<std::uint64_t, SaEntry> entries_;
  using TimerEntry = std::pair<ike::TimePoint, std::uint64_t>;
  std::priority_queue<TimerEntry, std::vector<TimerEntry>, std::greater<TimerEntry>> timers_;
  std::vector<std::uint64_t> adopted_;
  std::map<HalfOpenKey, std::uint64_t> half_open_;  // includes those on a worker
  // Established responders' half-open keys (RetireHalfOpen), and when each goes, oldest first
  // (the window is one constant, so retirement order is expiry order). Bound: the SAs
  // established in the last kInitRetransmitWindow.
  std::map<HalfOpenKey, std::uint64_t> retired_;
  std::deque<std::pair<ike::TimePoint, HalfOpenKey>> retired_order_;
  void ExpireRetired(ike::TimePoint now);
  std::unordered_multimap<std::string, std::uint64_t> by_peer_;
  std::set<std::uint64_t> offloaded_;  // at most the worker pool's capacity
  std::uint64_t timers_missed_ = 0;
};

}  // namespace spigot::gateway
