// The metrics of a real gateway (two in one process, test_tools/gateway_pair.h): the snapshot
// the control thread takes, rendered as a scrape would.
#include "spigot/control/metrics.h"

#include <gtest/gtest.h>

#include <map>
#include <sstream>

#include "spigot/test_tools/gateway_pair.h"

namespace spigot::control {
namespace {

using test_tools::GatewayPair;
using test_tools::SiteConfig;

bool Contains(const std::string& text, const std::string& line) {
  return ("\n" + text).find("\n" + line + "\n") != std::string::npos;
}

// The exposition's own rules, checked line by line: every sample's family was announced by
// "# HELP" and "# TYPE" just before its first sample, no family is announced twice, and the
// samples of one family are contiguous. Returns the sample lines by family.
std::map<std::string, std::vector<std::string>> CheckWellFormed(const std::string& text) {
  std::map<std::string, std::vector<std::string>> families;
  std::map<std::string, std::string> types;
  std::string open;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("# HELP ")) {
      const std::string name = line.substr(7, line.find(' ', 7) - 7);
      EXPECT_EQ(families.count(name), 0u) << "announced twice: " << name;
      families[name];
      open = name;
      continue;
    }
    if (line.starts_with("# TYPE ")) {
      const std::string rest = line.substr(7);
      EXPECT_EQ(rest.substr(0, rest.find(' ')), open) << line;
      types[open] = rest.substr(rest.find(' ') + 1);
      continue;
    }
    const std::string name = line.substr(0, line.find_first_of("{ "));
    const bool belongs = name == open || (types[open] == "histogram" &&
                                          (name == open + "_bucket" || name == open + "_sum" || name == open + "_count")) ||
                         (types[open] == "summary" && (name == open + "_sum" || name == open + "_count"));
    EXPECT_TRUE(belongs) << "sample outside its family: " << line;
    families[open].push_back(line);
  }
  return families;
}

TEST(MetricsTest, AnEstablishedTunnelInTheExposition) {
  GatewayPair p(SiteConfig(1, 2), SiteConfig(2, 1));
  ASSERT_TRUE(p.ok()) << p.error();
  std::string err;
  ASSERT_TRUE(p.a.gw->Initiate("site", &err)) << err;
  p.Pump();
  // What the kernel counted for the sockets and the TUN (the real data plane reads it).
  p.a.dataplane.kernel.udp_ike = {500, 40, 3};
  p.a.dataplane.kernel.udp_natt = {4500, 900, 8};
  p.a.dataplane.kernel.tun_tx_dropped = 5;
  p.a.dataplane.kernel.tun_rx_dropped = 6;

  const nlohmann::json snapshot = MetricsSnapshot(*p.a.gw);
  const nlohmann::json& stats = snapshot["stats"];
  EXPECT_EQ(stats["packets_dropped"]["kernel_rx_overflow"], 11u);
  EXPECT_EQ(stats["packets_dropped"]["kernel_tun_tx_dropped"], 5u);
  EXPECT_EQ(stats["packets_dropped"]["kernel_tun_rx_dropped"], 6u);
  EXPECT_EQ(stats["udp_sockets"]["natt"],
            nlohmann::json({{"port", 4500}, {"received", 900}, {"kernel_rx_overflow", 8}}));
  std::set<std::string> used;
  MetricsServerCounters server;
  server.scrapes = 4;
  server.refused_connections = 2;
  server.snapshot_age_seconds = 0.25;
  const std::string text = RenderMetrics(snapshot, server, &used);
  const auto families = CheckWellFormed(text);

  EXPECT_TRUE(Contains(text, "spigot_child_sas 1")) << text;
  EXPECT_TRUE(Contains(text, "spigot_ike_sas{state=\"established\"} 1")) << text;
  EXPECT_TRUE(Contains(text, "spigot_ike_sas{state=\"half_open\"} 0")) << text;
  EXPECT_TRUE(Contains(text, "spigot_spi_pool_in_use 1")) << text;
  EXPECT_TRUE(Contains(text, "spigot_spi_pool_size 1048576")) << text;
  EXPECT_TRUE(Contains(text, "spigot_negotiation_queue_capacity 65536")) << text;
  EXPECT_TRUE(Contains(text, "spigot_negotiation_queue_depth{priority=\"new\"} 0")) << text;
  EXPECT_TRUE(Contains(text, "spigot_negotiation_queue_overflows_total{priority=\"new\"} 0")) << text;
  EXPECT_TRUE(Contains(text, "spigot_packets_dropped_total{reason=\"unknown_spi\"} 0")) << text;
  EXPECT_TRUE(Contains(text, "spigot_packets_dropped_total{reason=\"kernel_rx_overflow\"} 11")) << text;
  EXPECT_TRUE(Contains(text, "spigot_packets_dropped_total{reason=\"kernel_tun_tx_dropped\"} 5")) << text;
  EXPECT_TRUE(Contains(text, "spigot_udp_datagrams_received_total{socket=\"ike\"} 40")) << text;
  EXPECT_TRUE(Contains(text, "spigot_udp_kernel_rx_overflow_total{socket=\"natt\"} 8")) << text;
  EXPECT_EQ(text.find("udp_sockets_ike_port"), std::string::npos) << "a port is not a metric";
  EXPECT_TRUE(Contains(text, "spigot_connection_ike_sas{connection=\"site\",state=\"established\"} 1")) << text;
  EXPECT_TRUE(Contains(text, "spigot_connection_child_sas{connection=\"site\"} 1")) << text;
  EXPECT_TRUE(Contains(text, "spigot_ike_established_total 1")) << text;
  EXPECT_TRUE(Contains(text, "spigot_metrics_scrapes_total 4")) << text;
  EXPECT_TRUE(Contains(text, "spigot_metrics_connections_refused_total 2")) << text;
  EXPECT_TRUE(Contains(text, "spigot_metrics_snapshot_age_seconds 0.25")) << text;
  EXPECT_TRUE(Contains(text, "# TYPE spigot_ike_negotiation_seconds histogram")) << text;
  // One negotiation observed (the fake clock did not move: in the first bucket), and the
  // queue work it took.
  EXPECT_TRUE(Contains(text, "spigot_ike_negotiation_seconds_count 1")) << text;
  EXPECT_TRUE(Contains(text, "spigot_ike_negotiation_seconds_bucket{le=\"0.005\"} 1")) << text;
  EXPECT_TRUE(Contains(text, "spigot_ike_negotiation_seconds_bucket{le=\"+Inf\"} 1")) << text;
  EXPECT_EQ(families.count("spigot_negotiation_queue_wait_seconds"), 1u);
  EXPECT_EQ(snapshot["histograms"]["queue_wait_seconds"]["count"], 0u)
      << "the initiator's queue carried no request (the responder's does)";
  EXPECT_GE(MetricsSnapshot(*p.b.gw)["histograms"]["queue_wait_seconds"]["count"].get<int>(), 2);

  // Every number of `spigot stats --json` is in the exposition: read by a named family, or
  // exported as spigot_stats_<path>.
  std::vector<std::string> fallback;
  std::function<void(const nlohmann::json&, const std::string&)> walk = [&](const nlohmann::json& j,
                                                                             const std::string& at) {
    if (j.is_object()) {
      for (const auto& [k, v] : j.items()) walk(v, at + "/" + k);
      return;
    }
    if (!j.is_number() && !j.is_boolean()) return;
    if (used.count(at) != 0 || at.starts_with("/pools/") || at.starts_with("/radius/servers/")) return;
    if (at.starts_with("/bounds/")) return;
    std::string name = "spigot_stats_" + at.substr(1);
    for (char& c : name) c = c == '/' ? '_' : c;
    EXPECT_EQ(families.count(name), 1u) << at << " is not in the exposition";
    fallback.push_back(at);
  };
  walk(snapshot["stats"], "");
  // The named families cover today's stats; a field added later lands in the fallback until
  // it gets a family (this lists them, so the next change sees it).
  for (const auto& f : fallback) std::printf("stats field without a dedicated metric: %s\n", f.c_str());
}

TEST(MetricsTest, DropReasonsPoolsAndNewFieldsFromTheSnapshot) {
  nlohmann::json snapshot = {
      {"stats",
       {{"active_sas", 3},
        {"packets_dropped", {{"unknown_spi", 7}, {"replay", 1}, {"a_new_reason", 2}}},
        {"pools", nlohmann::json::array({{{"name", "rw"}, {"size", 254}, {"in_use", 10}, {"offline", 2}, {"exhausted", 5}}})},
        {"crypto_engine", {{"name", "async"}, {"state", "stalled"}, {"stalls", 2}, {"stall_timeout_ms", 50}}},
        {"radius", {{"rtt_ms", {{"replies", 4}, {"avg", 2.5}, {"max", 7.0}}},
                    {"servers", nlohmann::json::array({{{"address", "192.0.2.10:1812"}, {"dead", true}, {"requests", 9}, {"timeouts", 3}}})}}},
        {"bounds", {{"spi_pool", {{"limit", 256}, {"in_use", 128}, {"dropped", 2}, {"policy", "refuse"}}},
                    {"ike_request_queue", {{"limit", 32}, {"in_use", nullptr}, {"dropped", 0}, {"policy", "refuse"}}}}},
        {"datapath", {{"threads", nlohmann::json::array({{{"rx", 5}, {"tx", 7}, {"handed_over", 0}},
                                                          {{"rx", 0}, {"tx", 3}, {"handed_over", 4}}})},
                      {"steering", "spi"}, {"handed_over", 4}}},
        {"something", {{"added_later", 11}, {"a_string", "x"}}}}},
      {"connections", nlohmann::json::array()}};
  const std::string text = RenderMetrics(snapshot, {});
  CheckWellFormed(text);
  EXPECT_TRUE(Contains(text, "spigot_packets_dropped_total{reason=\"unknown_spi\"} 7")) << text;
  EXPECT_TRUE(Contains(text, "spigot_packets_dropped_total{reason=\"a_new_reason\"} 2")) << text;
  EXPECT_TRUE(Contains(text, "spigot_address_pool_size{pool=\"rw\"} 254")) << text;
  EXPECT_TRUE(Contains(text, "spigot_bound_limit{bound=\"spi_pool\"} 256")) << text;
  EXPECT_TRUE(Contains(text, "spigot_bound_in_use{bound=\"spi_pool\"} 128")) << text;
  EXPECT_TRUE(Contains(text, "spigot_bound_dropped_total{bound=\"spi_pool\"} 2")) << text;
  EXPECT_TRUE(Contains(text, "spigot_bound_limit{bound=\"ike_request_queue\"} 32")) << text;
  EXPECT_FALSE(Contains(text, "spigot_bound_in_use{bound=\"ike_request_queue\"}")) << text;
  EXPECT_FALSE(Contains(text, "spigot_stats_bounds")) << text;
  EXPECT_TRUE(Contains(text, "spigot_address_pool_leases{pool=\"rw\",state=\"online\"} 10")) << text;
  EXPECT_TRUE(Contains(text, "spigot_address_pool_leases{pool=\"rw\",state=\"offline\"} 2")) << text;
  EXPECT_TRUE(Contains(text, "spigot_address_pool_exhausted_total{pool=\"rw\"} 5")) << text;
  EXPECT_TRUE(Contains(text, "spigot_datapath_thread_packets_total{thread=\"0\",direction=\"tx\"} 7")) << text;
  EXPECT_TRUE(Contains(text, "spigot_datapath_thread_packets_total{thread=\"1\",direction=\"rx\"} 0")) << text;
  EXPECT_TRUE(Contains(text, "spigot_datapath_thread_handed_over_total{thread=\"1\"} 4")) << text;
  EXPECT_TRUE(Contains(text, "spigot_crypto_engine_stalled 1")) << text;
  EXPECT_TRUE(Contains(text, "spigot_crypto_engine_info{engine=\"async\"} 1")) << text;
  EXPECT_TRUE(Contains(text, "spigot_crypto_engine_stall_timeout_seconds 0.05")) << text;
  EXPECT_TRUE(Contains(text, "spigot_radius_rtt_seconds_sum 0.01")) << text;
  EXPECT_TRUE(Contains(text, "spigot_radius_rtt_seconds_count 4")) << text;
  EXPECT_TRUE(Contains(text, "spigot_radius_rtt_max_seconds 0.007")) << text;
  EXPECT_TRUE(Contains(text, "spigot_radius_server_up{server=\"192.0.2.10:1812\"} 0")) << text;
  EXPECT_TRUE(Contains(text, "spigot_radius_server_timeouts_total{server=\"192.0.2.10:1812\"} 3")) << text;
  EXPECT_TRUE(Contains(text, "# TYPE spigot_stats_something_added_later untyped")) << text;
  EXPECT_TRUE(Contains(text, "spigot_stats_something_added_later 11")) << text;
  // Absent sections are absent, not zeros.
  EXPECT_EQ(text.find("spigot_ike_negotiation_seconds"), std::string::npos);
  EXPECT_EQ(text.find("spigot_connection_child_sas"), std::string::npos);
  // A snapshot that is not even an object still renders the endpoint's own counters.
  const std::string bare = RenderMetrics(nlohmann::json::array(), {});
  EXPECT_TRUE(Contains(bare, "spigot_metrics_scrapes_total 0")) << bare;
}

}  // namespace
}  // namespace spigot::control
