// `spigot doctor`: the troubleshooting table for the three failure causes (DESIGN.md), as code,
// over the counters of `spigot stats --json`, live or saved in a snapshot file.
//
// One reading of the counters is all there is (a snapshot holds one), so "failed SAs climbing
// while the pool is full" is read as: failed_sas > 0 while spi_in_use has reached
// max_spi - reserve, the level at which the pool refuses every new negotiation — from then on
// each new negotiation fails.
//
// Rules (thresholds below):
//   spi_pool_exhausted   active_sas >= 90% of max_spi, or failed_sas > 0 with
//                        spi_in_use >= max_spi - spi_reserve (the rekey reserve: the stats'
//                        "spi_reserve" where present, else max_spi/16, sa::SpiPool's default).
//   renegotiation_storm  active_sas / rekeys_per_minute or active_sas / negotiations_per_minute
//                        (the implied minutes between renegotiations of a CHILD SA; the latter
//                        only while rekeys are at least half the negotiations) under 5, or a
//                        configured lifetime (snapshot "config") whose mean with the default 10%
//                        rekey jitter is under 5 minutes (plan.h StormLifetime(): 5m is one).
//   offload_stall        the crypto engine stalled or failing: crypto_engine.stalls > 0, state
//                        "stalled", or crypto_engine.failed > 0.
//   login_storm          queue_overflows > 0 that nothing else explains (below), with active_sas
//                        under 50% of max_spi: new peers arrive faster than the IKE workers
//                        answer them.
//   pool_exhausted       a virtual IP pool full, or near full after refusals.
//
// A queue overflow is one symptom with several causes; it is attributed to exactly one, the
// first that the evidence supports, and shown in that finding's evidence:
//   1. spi_pool_exhausted (its finding already names the overflows),
//   2. offload_stall (an engine in trouble, whatever else is going on),
//   3. renegotiation_storm (the storm's negotiations fill the queue; no second finding),
//   4. pool_exhausted (refused road warriors retry),
//   5. login_storm (nothing above, and the SPI pool under half full),
// and to none when the SPI pool is between half and 90% full without refusals (ambiguous: the
// pool may be the cause, and is not yet exhausted).
//   password_guessing    EAP logins refused unchecked by the back-off (ike.eap_logins.throttled
//                        > 0) or users in a back-off now: someone is guessing passwords.
//   radius_unreachable   RADIUS requests that no server answered (radius.timeouts > 0) or a
//                        server marked dead now: eap-radius logins fail or wait for failover.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace spigot::ops {

inline constexpr double kPoolFullFraction = 0.90;
inline constexpr double kPoolFarBelowFraction = 0.50;
inline constexpr double kStormMinutes = 5;
// After the fix the pool should be at most this full.
inline constexpr double kPoolTargetFraction = 0.70;

// The counters doctor reads. A missing field reads as 0 (or "" for names).
struct Counters {
  double active_sas = 0;
  double pending_sas = 0;
  double failed_sas = 0;
  double ike_sas = 0;
  double max_spi = 0;
  double spi_in_use = 0;
  std::optional<double> spi_reserve;  // absent from older gateways' stats: see above
  double max_queue = 0;
  double queue_depth = 0;
  double queue_overflows = 0;
  double negotiations_per_minute = 0;
  double rekeys_per_minute = 0;
  double no_sa_queue_full = 0;  // packets_dropped.no_sa_queue_full
  std::string engine_name;      // crypto_engine.name
  std::string engine_state;     // crypto_engine.state
  double engine_stalls = 0;     // crypto_engine.stalls
  double engine_fallbacks = 0;  // crypto_engine.fallbacks
  double engine_failed = 0;     // crypto_engine.failed: jobs the engine reported as failed
  // For login_storm: queue.overflows_by_priority.new (new IKE_SA_INIT requests and acquires
  // refused or evicted), the IKE workers (ike_workers.threads / capacity / in_flight), cookies
  // sent (ike.cookies_sent).
  double new_overflows = 0;
  bool new_overflows_reported = false;
  double half_open_ike_sas = 0;
  double worker_threads = 0;
  double worker_capacity = 0;
  double worker_in_flight = 0;
  double cookies_sent = 0;
  // The snapshot's optional "config" object (seconds; 0: not given).
  double ike_lifetime = 0;
  double child_lifetime = 0;
  double tunnels = 0;
  // "pools" (virtual IP pools): per pool, its size, leases in use and refusals for lack of room.
  struct AddressPool {
    std::string name;
    double size = 0;
    double in_use = 0;
    double exhausted = 0;
  };
  std::vector<AddressPool> pools;
  // ike.eap_logins: failed EAP logins, attempts refused unchecked by the back-off, and the
  // (user, address) pairs in a back-off now.
  double eap_failures = 0;
  double eap_throttled = 0;
  double eap_backing_off = 0;
  // "radius" (null without a [radius] table): logins no server answered, moves to the next
  // server, and the servers marked dead now (their addresses).
  double radius_timeouts = 0;
  double radius_failovers = 0;
  std::vector<std::string> radius_dead;
};

// Reads a `spigot stats --json` object (plus the optional "config" object). False, with the
// reason in `error` ("active_sas: expected a number, got \"lots\""), if it is not an object or a
// field present has the wrong type or a negative value.
bool ParseCounters(const nlohmann::json& j, Counters& out, std::string& error);

// Reads a snapshot file. False, with "FILE: reason" in `error`, if the file cannot be read, is
// not JSON, or fails ParseCounters.
bool LoadSnapshot(const std::string& path, Counters& out, std::string& error);

struct Finding {
  // spi_pool_exhausted | renegotiation_storm | offload_stall | login_storm | pool_exhausted |
  // password_guessing | radius_unreachable
  std::string cause;
  std::string evidence;  // the numbers that show it
  std::string fix;       // the exact configuration change and how to apply it
};

// In the order of the table above; empty when healthy.
std::vector<Finding> Diagnose(const Counters& c);

// {"findings": [{"cause", "evidence", "fix"}, ...]}: DESIGN.md's contract, nothing else.
nlohmann::ordered_json FindingsJson(const std::vector<Finding>& findings);
// For people: each finding with its evidence and fix, or "all is well" with the figures read.
std::string FindingsText(const Counters& c, const std::vector<Finding>& findings);

}  // namespace spigot::ops
