// CHILD SAs as the gateway installs them: the SA database (SPI pool, max_spi and its rekey
// reserve), the data plane's inbound and outbound halves, which SA carries each policy's
// outbound traffic, the rekey scheduler, and volume lifetimes.
//
// Make-before-break (RFC 7296 2.8): when a rekey installs a successor, the successor becomes
// the policy's outbound SA before the old one goes; when the SA carrying a policy's traffic is
// removed, its successor (or the newest other CHILD SA of the policy: the survivor of
// simultaneous rekeys, 2.8.1) is set before anything is cleared, so no packet finds the policy
// without an SA in between. For a rekey the peer started, we keep sending on the old SA until
// the peer shows it has the new one: its first packet on it (OnFirstPacket) or its DELETE of
// the old one, whichever comes first.
//
// Timers (all driven by the `now` passed in):
//   child_rekey     - soft lifetime reached: RekeyScheduler hands the SA out (rate-limited,
//                     most overdue first) and StartDueRekeys asks its IKE SA to rekey it.
//   volume_check    - every tick, the SAs with bytes/packets lifetimes: soft asks for a rekey,
//                     hard deletes (CheckVolumeLifetimes).
//   inbound_linger  - a removed SA's inbound half stays in the data plane kInboundLinger,
//                     for ESP queued behind the DELETE (ExpireLingering).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <unordered_map>
#include <utility>

#include "spigot/engine/rekey_scheduler.h"
#include "spigot/gateway/connections.h"
#include "spigot/gateway/ike_sa_table.h"
#include "spigot/gateway/ports.h"
#include "spigot/gateway/rate_window.h"
#include "spigot/gateway/sa_policies.h"
#include "spigot/sa/sa_database.h"

namespace spigot::gateway {

// Traffic selectors (address ranges, RFC 7296 3.13.1) as the fewest prefixes that cover them
// exactly. Ports and protocols are not part of the SPD: a selector counts by its addresses.
std::vector<policy::Prefix> SelectorPrefixes(const std::vector<ike::TrafficSelector>& ts);

class ChildSaManager {
 public:
  // ESP sent before the peer's DELETE may still be queued on UDP 4500 behind the DELETE,
  // which came in on UDP 500 (a different queue).
  static constexpr auto kInboundLinger = std::chrono::seconds(2);

  struct Counters {
    std::uint64_t rekeys_completed = 0;  // CHILD rekeys we started that installed a new SA
    std::uint64_t rekeys_answered = 0;   // CHILD rekeys the peer started
    // Rekeys the peer started whose outbound SA we switched to on its first packet on the new
    // inbound SA (rather than on its DELETE of the old one).
    std::uint64_t outbound_switched_on_traffic = 0;
    std::uint64_t volume_rekeys = 0;   // rekeys asked for by a bytes/packets soft lifetime
    std::uint64_t volume_deletes = 0;  // CHILD SAs deleted at a bytes/packets hard lifetime
    std::uint64_t install_failed = 0;  // refused by the SA database
    // CHILD SAs refused (TS_UNACCEPTABLE) or, as initiator, installed although their
    // selectors overlap another peer's.
    std::uint64_t policy_conflicts = 0;
  };

  // One CHILD SA as the data plane knows it, by inbound SPI.
  struct Child {
    std::uint64_t owner = 0;  // our SPI of the IKE SA that negotiated it
    policy::PolicyId policy = policy::kNoPolicy;
    std::uint32_t spi_out = 0;
    std::uint32_t rekey_of = 0;
    std::shared_ptr<datapath::SaCounters> counters;
    // The outbound half, kept so that it can become the policy's current outbound SA at any
    // time (a rekey's successor, or the survivor when the current one is removed).
    datapath::OutboundSpec outbound;
    // A rekey the peer started, whose outbound switch waits for the peer (see above).
    bool outbound_deferred = false;
    ike::TimePoint installed{};
    // Volume lifetimes (0: none): rekey at the soft values, delete at the hard ones.
    std::uint64_t soft_bytes = 0, hard_bytes = 0, soft_packets = 0, hard_packets = 0;
    bool volume_rekeyed = false, volume_deleted = false;
    std::uint64_t rx_seen = 0;  // SaCounters::rx_packets when HeardFrom last looked
  };

  ChildSaManager(DataPlane& dataplane, ike::TimePoint now);

  sa::SaDatabase& sad() { return sad_; }
  const sa::SaDatabase& sad() const { return sad_; }
  engine::RekeyScheduler& rekey_scheduler() { return rekey_scheduler_; }
  const engine::RekeyScheduler& rekey_scheduler() const { return rekey_scheduler_; }
  const Counters& counters() const { return counters_; }
  const Child* Find(std::uint32_t spi_in) const;
  // CHILD SAs negotiated (new) and rekeyed, per minute.
  double NegotiationsPerMinute(ike::TimePoint now) { return negotiations_.PerMinute(now); }
  double RekeysPerMinute(ike::TimePoint now) { return rekeys_.PerMinute(now); }

  // Installs a negotiated CHILD SA of IKE SA `owner` (our SPI), whose peer is `peer`
  // (IkeSaTable::PeerKey), toward `peer_natt` (the peer's UDP 4500) from `source` (our address;
  // empty: the kernel's pick). `conn` may be null (a
  // connection removed by reload). It serves a policy of its own (SaPolicies): its
  // predecessor's, the peer's with the same selectors, or a new one. False if the SA database
  // refused it (logged, counted).
  bool Install(const ike::ChildSaInfo& child, std::uint64_t owner, const std::string& peer,
               const Connection* conn, const io::Endpoint& peer_natt, const io::IpAddress& source,
               ike::TimePoint now);
  // False (counted in policy_conflicts, logged) if a CHILD SA of `peer` with these selectors
  // would overlap another peer's: the responder refuses it with TS_UNACCEPTABLE.
  bool Admit(const std::string& peer, const std::vector<ike::TrafficSelector>& local_ts,
             const std::vector<ike::TrafficSelector>& remote_ts);
  const SaPolicies& policies() const { return policies_; }
  // Removes CHILD SA `spi_in` (deleted or expired). Its inbound half lingers (kInboundLinger)
  // unless `linger` is false (shutdown).
  void Remove(std::uint32_t spi_in, bool linger, ike::TimePoint now);
  // Whether any of these CHILD SAs received an authentic packet since this was last asked
  // (dead peer detection: traffic is proof of life).
  bool HeardFrom(const std::vector<ike::ChildSaInfo>& children);
  // The first authentic packet on a deferred successor: it becomes the outbound SA.
  void OnFirstPacket(std::uint32_t spi_in);
  // These CHILD SAs' peer (their IKE SA's) is at `peer` (its UDP 4500), and our end at
  // `source`, from now on: all of them in one data-plane command.
  void MovePeer(const std::vector<ike::ChildSaInfo>& children, const io::Endpoint& peer,
                const io::IpAddress& source);
  // An IKE rekey moved CHILD SA `spi_in` to the IKE SA `owner`.
  void SetOwner(std::uint32_t spi_in, std::uint64_t owner);

  // Timers (see above). Each files the IKE SAs it gave a request in `table`.
  void StartDueRekeys(ike::TimePoint now, IkeSaTable& table);
  void CheckVolumeLifetimes(ike::TimePoint now, IkeSaTable& table);
  void ExpireLingering(ike::TimePoint now);
  // The outbound SA of `policy` with SPI `spi_out` ran out of sequence numbers: rekey it.
  void OnExhausted(policy::PolicyId policy, std::uint32_t spi_out, ike::TimePoint now,
                   IkeSaTable& table);

 private:
  void UseOutbound(std::uint32_t spi_in);

  DataPlane& dataplane_;
  sa::SaDatabase sad_;
  engine::RekeyScheduler rekey_scheduler_;
  Counters counters_;
  std::map<std::uint32_t, Child> children_;
  // Old inbound SPI -> the successor whose outbound switch waits for the old SA's deletion.
  std::unordered_map<std::uint32_t, std::uint32_t> deferred_successor_;
  SaPolicies policies_;
  // Per policy, the inbound SPI of the CHILD SA whose outbound half carries its traffic.
  std::unordered_map<policy::PolicyId, std::uint32_t> current_outbound_;
  // CHILD SAs with volume lifetimes, checked every tick (only these: the others need no scan).
  std::set<std::uint32_t> volume_limited_;
  // Removed inbound SPIs whose data-plane half goes at the deadline, oldest first.
  std::deque<std::pair<ike::TimePoint, std::uint32_t>> lingering_;
  RateWindow negotiations_, rekeys_;
};

}  // namespace spigot::gateway
