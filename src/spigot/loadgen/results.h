// What a load generator run measured: one Results per worker thread, merged at the end, and
// the figures the report prints.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace spigot::loadgen {

using TimePoint = std::chrono::steady_clock::time_point;

struct Results {
  std::uint64_t started = 0;      // initiators that sent IKE_SA_INIT
  std::uint64_t established = 0;  // IKE SA and first CHILD SA up
  std::uint64_t failed = 0;       // died (or got no CHILD SA) before that; reasons in `failures`
  std::uint64_t aborted = 0;      // still negotiating when the run ended (SIGINT): not failures
  std::uint64_t lost = 0;         // established, then gone before the end; reasons in `losses`
  std::uint64_t rekeys_completed = 0;      // CHILD SAs installed that replace another
  std::uint64_t retransmits = 0;           // IKE requests of ours sent again (2.4)
  std::uint64_t send_failed = 0;           // datagrams the kernel refused (full buffer, ...)
  std::uint64_t deletes_unanswered = 0;    // IKE SAs whose DELETE got no answer in the grace time
  std::map<std::string, std::uint64_t> failures;  // IkeSa::failure() -> count
  std::map<std::string, std::uint64_t> losses;
  std::vector<double> latency_ms;  // Initiate to IKE SA + CHILD SA established, one per SA
  // --vips: the IPv4 virtual IPs assigned (host byte order), one per established initiator.
  std::vector<std::uint32_t> virtual_ips;
  // --traffic: initiators that sent their echo requests, by the replies they got back.
  std::uint64_t peers_all_replies = 0;
  std::uint64_t peers_some_replies = 0;
  std::uint64_t peers_no_replies = 0;
  std::uint64_t echo_sent = 0;      // echo requests sealed and handed to the kernel
  std::uint64_t echo_received = 0;  // distinct expected replies opened on the right CHILD SA
  // Echo traffic lost on our side, by reason -> count: what came back and was not a reply
  // (esp::ToString(status) of Open, "unknown SPI", "not an expected echo reply", "duplicate
  // reply") and requests not sent ("seal: " + status, "no CHILD SA to send on"; refused by the
  // kernel: send_failed).
  std::map<std::string, std::uint64_t> traffic_drops;
  // Mobility (--move-to): initiators moved (UPDATE_SA_ADDRESSES sent), answered, and those that
  // got an echo reply at the new address (with traffic); established ones not moved (no
  // MOBIKE, or not up at the move); latencies from the move to the answer / that reply.
  std::uint64_t moved = 0;
  std::uint64_t move_answered = 0;
  std::uint64_t move_recovered = 0;
  std::uint64_t move_skipped = 0;
  std::vector<double> move_answer_ms;
  std::vector<double> move_recover_ms;
  TimePoint first_started = TimePoint::max();
  TimePoint last_established = TimePoint::min();

  void Merge(const Results& other);
  // Distinct addresses in virtual_ips.
  std::size_t DistinctVirtualIps() const;
  // Established per second, from the first IKE_SA_INIT to the last establishment; 0 if none.
  double EstablishRate() const;
};

// The p-th percentile (0 < p <= 100) by the nearest-rank method; 0 for no samples. Sorts
// `samples`.
double Percentile(std::vector<double>& samples, double p);

}  // namespace spigot::loadgen
