// The Prometheus metrics of `metrics_listen` (GET /metrics, control/metrics_server.h).
//
// Two steps on two threads, so a scrape never touches the gateway:
//   MetricsSnapshot  on the control thread (about once a second, daemon.cc): `spigot stats
//                    --json` plus per-connection SA counts and the latency histograms, as one
//                    JSON object handed to the metrics server;
//   RenderMetrics    on the metrics thread, per scrape: that object in the text exposition
//                    format (exposition.h).
//
// Every number of `spigot stats --json` is exposed: the known fields as named families with
// base units (`_seconds`, `_bytes`, `_total` for counters) and labels (one
// spigot_packets_dropped_total family with a `reason` label, per-pool and per-server labels,
// ...); any other numeric field (a counter added to stats later) as an untyped
// `spigot_stats_<path>` sample, so nothing is left out.
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

namespace spigot::gateway {
class Gateway;
}

namespace spigot::control {

// On the control thread: {"stats": StatsJson, "connections": [{"name", "ike_sas",
// "ike_sas_half_open", "child_sas"}], "histograms": {"negotiation_seconds": {...},
// "queue_wait_seconds": {...}}}.
nlohmann::json MetricsSnapshot(gateway::Gateway& gw);

// What the metrics server counts about itself.
struct MetricsServerCounters {
  std::uint64_t scrapes = 0;              // GET /metrics answered 200
  std::uint64_t refused_connections = 0;  // over the connection bound: 503 and closed
  std::uint64_t bad_requests = 0;         // answered 4xx (size, headers, method, path)
  std::uint64_t timeouts = 0;             // closed at the connection deadline
  std::size_t open_connections = 0;       // accepted and not yet closed
  double snapshot_age_seconds = 0;        // how old the snapshot served is
};

// `used`, if given, receives the JSON pointers of the stats fields that named families consumed
// (for tests; the rest went out as spigot_stats_<path>).
std::string RenderMetrics(const nlohmann::json& snapshot, const MetricsServerCounters& server,
                          std::set<std::string>* used = nullptr);

}  // namespace spigot::control
