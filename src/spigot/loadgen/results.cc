#include "spigot/loadgen/results.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

namespace spigot::loadgen {

void Results::Merge(const Results& o) {
  started += o.started;
  established += o.established;
  failed += o.failed;
  aborted += o.aborted;
  lost += o.lost;
  rekeys_completed += o.rekeys_completed;
  retransmits += o.retransmits;
  send_failed += o.send_failed;
  deletes_unanswered += o.deletes_unanswered;
  for (const auto& [why, n] : o.failures) failures[why] += n;
  for (const auto& [why, n] : o.losses) losses[why] += n;
  latency_ms.insert(latency_ms.end(), o.latency_ms.begin(), o.latency_ms.end());
  virtual_ips.insert(virtual_ips.end(), o.virtual_ips.begin(), o.virtual_ips.end());
  peers_all_replies += o.peers_all_replies;
  peers_some_replies += o.peers_some_replies;
  peers_no_replies += o.peers_no_replies;
  echo_sent += o.echo_sent;
  echo_received += o.echo_received;
  for (const auto& [why, n] : o.traffic_drops) traffic_drops[why] += n;
  moved += o.moved;
  move_answered += o.move_answered;
  move_recovered += o.move_recovered;
  move_skipped += o.move_skipped;
  move_answer_ms.insert(move_answer_ms.end(), o.move_answer_ms.begin(), o.move_answer_ms.end());
  move_recover_ms.insert(move_recover_ms.end(), o.move_recover_ms.begin(), o.move_recover_ms.end());
  first_started = std::min(first_started, o.first_started);
  last_established = std::max(last_established, o.last_established);
}

std::size_t Results::DistinctVirtualIps() const {
  return std::unordered_set<std::uint32_t>(virtual_ips.begin(), virtual_ips.end()).size();
}

double Results::EstablishRate() const {
  if (established == 0) return 0;
  const double seconds = std::chrono::duration<double>(last_established - first_started).count();
  // All established within one clock tick: report the count rather than divide by ~0.
  return seconds > 1e-3 ? static_cast<double>(established) / seconds : static_cast<double>(established);
}

double Percentile(std::vector<double>& samples, double p) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  const double rank = std::ceil(p / 100.0 * static_cast<double>(samples.size()));
  const std::size_t i = rank < 1 ? 0 : static_cast<std::size_t>(rank) - 1;
  return samples[std::min(i, samples.size() - 1)];
}

}  // namespace spigot::loadgen
