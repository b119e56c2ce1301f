#include "spigot/control/metrics.h"

#include <array>
#include <map>
#include <optional>

#include "spigot/control/exposition.h"
#include "spigot/control/gateway_commands.h"
#include "spigot/gateway/gateway.h"

namespace spigot::control {
namespace {

using Type = Exposition::Type;
using json = nlohmann::json;

// One sample: the stats field at `pointer` (a JSON pointer), times `scale`, with `labels`.
struct Source {
  const char* pointer;
  Labels labels = {};
  double scale = 1;
};

struct Family {
  const char* name;
  Type type;
  const char* help;
  std::vector<Source> sources;
};

// A family whose label values are the keys of one stats object (every drop reason, ...): a
// reason added to stats later shows up without a change here.
struct KeyedFamily {
  const char* name;
  Type type;
  const char* help;
  const char* pointer;  // the object
  const char* label;
};

const std::vector<Family>& Families() {
  static const std::vector<Family> kFamilies = {
      {"spigot_child_sas", Type::kGauge, "CHILD SAs installed now.", {{"/active_sas"}}},
      {"spigot_child_sas_pending", Type::kGauge,
       "CHILD SAs being negotiated (one per IKE SA not yet established).", {{"/pending_sas"}}},
      {"spigot_child_sas_failed_total", Type::kCounter, "CHILD SA negotiations that failed.",
       {{"/failed_sas"}}},
      {"spigot_ike_sas", Type::kGauge, "IKE SAs by state.",
       {{"/ike_sas", {{"state", "established"}}}, {"/half_open_ike_sas", {{"state", "half_open"}}}}},
      {"spigot_spi_pool_size", Type::kGauge, "SPIs in the pool (max_spi).", {{"/max_spi"}}},
      {"spigot_spi_pool_in_use", Type::kGauge, "SPIs allocated now.", {{"/spi_in_use"}}},
      {"spigot_spi_pool_rekey_reserve", Type::kGauge,
       "SPIs only rekeys may take: new negotiations are refused from size minus this.",
       {{"/spi_reserve"}}},
      {"spigot_negotiation_queue_capacity", Type::kGauge, "Negotiation queue bound (max_queue).",
       {{"/max_queue"}}},
      {"spigot_negotiation_queue_depth", Type::kGauge, "IKE work waiting in the negotiation queue, by priority.",
       {{"/queue/established", {{"priority", "established"}}},
        {"/queue/half_open", {{"priority", "half_open"}}},
        {"/queue/new", {{"priority", "new"}}}}},
      {"spigot_negotiation_queue_overflows_total", Type::kCounter,
       "STATUS_IPSEC_QUEUE_OVERFLOW: work refused or evicted by a full negotiation queue, by the "
       "priority of the work lost.",
       {{"/queue/overflows_by_priority/established", {{"priority", "established"}}},
        {"/queue/overflows_by_priority/half_open", {{"priority", "half_open"}}},
        {"/queue/overflows_by_priority/new", {{"priority", "new"}}}}},
      {"spigot_negotiation_queue_evicted_total", Type::kCounter,
       "Queued work dropped to make room for higher-priority work (part of the overflows).",
       {{"/queue/evicted"}}},
      {"spigot_negotiation_queue_processed_total", Type::kCounter, "Negotiation queue items run.",
       {{"/queue/processed"}}},
      {"spigot_acquires_refused_total", Type::kCounter,
       "Acquires (outbound packets without an SA) the negotiation queue refused or evicted.",
       {{"/queue/acquires_refused"}}},
      {"spigot_virtual_ip_refused_total", Type::kCounter,
       "CFG_REQUESTs answered with INTERNAL_ADDRESS_FAILURE.", {{"/virtual_ip_refused"}}},
      {"spigot_child_sa_policies", Type::kGauge, "CHILD SAs' own outbound SPD policies.",
       {{"/policies/child_sa"}}},
      {"spigot_child_sa_policy_conflicts_total", Type::kCounter,
       "CHILD SAs refused because another peer's policy holds their addresses.",
       {{"/policies/conflicts"}}},
      {"spigot_child_negotiations_per_second", Type::kGauge,
       "CHILD SA negotiations (new and rekeys) per second, over the last minute.",
       {{"/negotiations_per_minute", {}, 1.0 / 60}}},
      {"spigot_child_rekeys_per_second", Type::kGauge, "CHILD SA rekeys per second, over the last minute.",
       {{"/rekeys_per_minute", {}, 1.0 / 60}}},
      {"spigot_rekeys_max_per_second", Type::kGauge, "The rekey rate limit (max_rekeys_per_second).",
       {{"/rekeys/max_per_second"}}},
      {"spigot_rekeys_scheduled", Type::kGauge, "CHILD rekeys scheduled.", {{"/rekeys/scheduled"}}},
      {"spigot_rekeys_overdue", Type::kGauge, "Scheduled CHILD rekeys past their time, held by the rate limit.",
       {{"/rekeys/overdue"}}},
      {"spigot_rekeys_peak_per_second", Type::kGauge, "Most CHILD rekeys started in one second.",
       {{"/rekeys/peak_per_second"}}},
      {"spigot_rekeys_total", Type::kCounter, "CHILD SA rekeys by outcome.",
       {{"/rekeys/started", {{"event", "started"}}},
        {"/rekeys/deferred_by_rate_limit", {{"event", "deferred_by_rate_limit"}}},
        {"/rekeys/completed", {{"event", "completed"}}},
        {"/rekeys/answered", {{"event", "answered"}}},
        {"/rekeys/outbound_switched_on_traffic", {{"event", "outbound_switched_on_traffic"}}},
        {"/rekeys/by_volume", {{"event", "by_volume"}}},
        {"/rekeys/volume_deletes", {{"event", "volume_delete"}}}}},
      {"spigot_esp_packets_total", Type::kCounter, "ESP packets by direction.",
       {{"/traffic/tx_packets", {{"direction", "tx"}}}, {"/traffic/rx_packets", {{"direction", "rx"}}}}},
      {"spigot_esp_bytes_total", Type::kCounter, "ESP payload bytes by direction.",
       {{"/traffic/tx_bytes", {{"direction", "tx"}}}, {"/traffic/rx_bytes", {{"direction", "rx"}}}}},
      {"spigot_udp_datagrams_received_total", Type::kCounter,
       "Datagrams spigot read from its UDP sockets, by socket (ike: ike_port, natt: natt_port).",
       {{"/udp_sockets/ike/received", {{"socket", "ike"}}}, {"/udp_sockets/natt/received", {{"socket", "natt"}}}}},
      {"spigot_udp_kernel_rx_overflow_total", Type::kCounter,
       "Datagrams the kernel dropped for a spigot UDP socket (its receive queue was full), by socket.",
       {{"/udp_sockets/ike/kernel_rx_overflow", {{"socket", "ike"}}},
        {"/udp_sockets/natt/kernel_rx_overflow", {{"socket", "natt"}}}}},
      {"spigot_natt_keepalives_total", Type::kCounter, "NAT-T keepalives.", {{"/traffic/keepalives"}}},
      {"spigot_esp_dummy_packets_total", Type::kCounter, "Dummy ESP packets (next header 59) discarded.",
       {{"/traffic/dummy_discarded"}}},
      {"spigot_acquires_total", Type::kCounter, "Acquires: outbound packets that found no SA.",
       {{"/traffic/acquires"}}},
      {"spigot_udp_offload_enabled", Type::kGauge, "UDP GSO / GRO in use on UDP 4500 (1) or not (0).",
       {{"/traffic/udp_offload/gso", {{"offload", "gso"}}}, {"/traffic/udp_offload/gro", {{"offload", "gro"}}}}},
      {"spigot_udp_gso_sends_total", Type::kCounter, "UDP GSO sends.", {{"/traffic/udp_offload/gso_sends"}}},
      {"spigot_udp_gso_segments_total", Type::kCounter, "Datagrams sent in UDP GSO sends.",
       {{"/traffic/udp_offload/gso_segments"}}},
      {"spigot_udp_gso_fallbacks_total", Type::kCounter, "UDP GSO sends refused and resent one datagram each.",
       {{"/traffic/udp_offload/gso_fallbacks"}}},
      {"spigot_udp_gro_batches_total", Type::kCounter, "UDP GRO coalesced receives.",
       {{"/traffic/udp_offload/gro_batches"}}},
      {"spigot_udp_gro_segments_total", Type::kCounter, "Datagrams received coalesced by UDP GRO.",
       {{"/traffic/udp_offload/gro_segments"}}},
      {"spigot_crypto_engine_stalled", Type::kGauge, "1 while the crypto engine is stalled (its jobs redone inline).",
       {}},  // from /crypto_engine/state, below
      {"spigot_crypto_engine_stalls_total", Type::kCounter, "Crypto engine stalls (a job past its deadline).",
       {{"/crypto_engine/stalls"}}},
      {"spigot_crypto_engine_fallbacks_total", Type::kCounter, "Crypto jobs redone on the inline engine.",
       {{"/crypto_engine/fallbacks"}}},
      {"spigot_crypto_engine_stall_timeout_seconds", Type::kGauge, "Time a crypto job may take before the engine is declared stalled.",
       {{"/crypto_engine/stall_timeout_ms", {}, 1e-3}}},
      {"spigot_crypto_engine_in_flight", Type::kGauge, "Crypto jobs in the engine now.",
       {{"/crypto_engine/in_flight"}}},
      {"spigot_crypto_engine_jobs_total", Type::kCounter, "Crypto engine jobs by outcome.",
       {{"/crypto_engine/completed", {{"result", "completed"}}},
        {"/crypto_engine/failed", {{"result", "failed"}}},
        {"/crypto_engine/bypassed", {{"result", "bypassed"}}},
        {"/crypto_engine/refused", {{"result", "refused"}}},
        {"/crypto_engine/ring_full", {{"result", "ring_full"}}},
        {"/crypto_engine/abandoned", {{"result", "abandoned"}}},
        {"/crypto_engine/late_discarded", {{"result", "late_discarded"}}}}},
      {"spigot_crypto_engine_probes_total", Type::kCounter, "Probes sent to a stalled engine.",
       {{"/crypto_engine/probes"}}},
      {"spigot_ike_messages_total", Type::kCounter, "IKE datagrams received, and those dropped, by reason.",
       {{"/ike/received", {{"result", "received"}}},
        {"/ike/invalid", {{"result", "invalid"}}},
        {"/ike/truncated", {{"result", "truncated"}}},
        {"/ike/unknown_spi", {{"result", "unknown_spi"}}},
        {"/ike/for_deleted_sa", {{"result", "for_deleted_sa"}}},
        {"/ike/no_connection", {{"result", "no_connection"}}},
        {"/ike/init_in_progress", {{"result", "init_in_progress"}}}}},
      {"spigot_ike_retransmits_total", Type::kCounter, "IKE requests retransmitted.", {{"/ike/retransmits"}}},
      {"spigot_ike_gave_up_total", Type::kCounter,
       "IKE exchanges of ours given up after the last retransmission, by exchange type.",
       {{"/ike/gave_up/ike_sa_init", {{"exchange", "IKE_SA_INIT"}}},
        {"/ike/gave_up/ike_auth", {{"exchange", "IKE_AUTH"}}},
        {"/ike/gave_up/create_child_sa", {{"exchange", "CREATE_CHILD_SA"}}},
        {"/ike/gave_up/informational", {{"exchange", "INFORMATIONAL"}}}}},
      {"spigot_ike_half_open_expired_total", Type::kCounter, "Responder IKE SAs without IKE_AUTH in half_open_timeout.",
       {{"/ike/half_open_expired"}}},
      {"spigot_ike_rekeyed_expired_total", Type::kCounter,
       "Old IKE SAs of a peer's rekey whose DELETE never came, removed by us.", {{"/ike/rekeyed_expired"}}},
      {"spigot_ike_auth_failures_total", Type::kCounter, "IKE_AUTH failures, by kind.",
       {{"/ike/auth_failures", {{"kind", "auth"}}}, {"/ike/cert_failures", {{"kind", "certificate"}}}}},
      {"spigot_ike_auth_total", Type::kCounter, "IKE_AUTH AUTH work (signatures, certificate checks, PSK MACs) by where it ran.",
       {{"/ike/auth_offloaded", {{"where", "worker"}}}, {"/ike/auth_inline", {{"where", "control_thread"}}}}},
      {"spigot_control_ticks_total", Type::kCounter, "Ticks of the control thread's periodic timer (100 ms) measured.",
       {{"/control/ticks"}}},
      // In seconds, Prometheus' base unit (promtool refuses microseconds, "_us" names, and a
      // "quantile" label outside a summary).
      {"spigot_control_tick_lag_stat_seconds", Type::kGauge,
       "How late the control thread's tick ran after its deadline since start: p50 and p99 (from above, to "
       "the histogram's bucket) and max.",
       {{"/control/tick_lag_us/p50", {{"stat", "p50"}}, 1e-6},
        {"/control/tick_lag_us/p99", {{"stat", "p99"}}, 1e-6},
        {"/control/tick_lag_us/max", {{"stat", "max"}}, 1e-6}}},
      {"spigot_rekey_start_lag_max_seconds", Type::kGauge,
       "The latest a CHILD rekey was handed out after it fell due, since start.",
       {{"/rekeys/max_start_lag_us", {}, 1e-6}}},
      {"spigot_ike_eap_public_key_steps_total", Type::kCounter,
       "EAP steps with public-key work (EAP-TLS handshake flights) by where they ran.",
       {{"/ike/eap_offloaded", {{"where", "worker"}}}, {"/ike/eap_inline", {{"where", "control_thread"}}}}},
      {"spigot_ike_dh_total", Type::kCounter,
       "Diffie-Hellman steps of CREATE_CHILD_SA with PFS and of IKE rekeys, by kind and where they ran.",
       {{"/ike/child_pfs_offloaded", {{"kind", "child_pfs"}, {"where", "worker"}}},
        {"/ike/child_pfs_inline", {{"kind", "child_pfs"}, {"where", "control_thread"}}},
        {"/ike/ike_rekey_offloaded", {{"kind", "ike_rekey"}, {"where", "worker"}}},
        {"/ike/ike_rekey_inline", {{"kind", "ike_rekey"}, {"where", "control_thread"}}}}},
      {"spigot_eap_logins_total", Type::kCounter, "EAP logins by method and result.",
       {{"/ike/eap_logins/mschapv2/success", {{"method", "mschapv2"}, {"result", "success"}}},
        {"/ike/eap_logins/mschapv2/failure", {{"method", "mschapv2"}, {"result", "failure"}}},
        {"/ike/eap_logins/tls/success", {{"method", "tls"}, {"result", "success"}}},
        {"/ike/eap_logins/tls/failure", {{"method", "tls"}, {"result", "failure"}}},
        {"/ike/eap_logins/radius/success", {{"method", "radius"}, {"result", "success"}}},
        {"/ike/eap_logins/radius/failure", {{"method", "radius"}, {"result", "failure"}}}}},
      {"spigot_eap_logins_throttled_total", Type::kCounter, "EAP logins refused unchecked by the back-off.",
       {{"/ike/eap_logins/throttled"}}},
      {"spigot_eap_backoff_entries", Type::kGauge, "(user, address) pairs the EAP back-off tracks.",
       {{"/ike/eap_logins/backoff/entries"}}},
      {"spigot_eap_backoff_backing_off", Type::kGauge, "(user, address) pairs in a back-off now.",
       {{"/ike/eap_logins/backoff/backing_off"}}},
      {"spigot_eap_backoff_evicted_total", Type::kCounter, "EAP back-off entries evicted for room.",
       {{"/ike/eap_logins/backoff/evicted"}}},
      {"spigot_ike_child_failures_total", Type::kCounter, "CHILD SA creations refused or failed in IKE.",
       {{"/ike/child_failures"}}},
      {"spigot_ike_established_total", Type::kCounter, "IKE SAs established.", {{"/ike/established"}}},
      {"spigot_ike_rekey_retries_total", Type::kCounter, "Rekeys retried after a collision or refusal.",
       {{"/ike/rekey_retries"}}},
      {"spigot_ike_duplicates_total", Type::kCounter,
       "Copies of IKE messages already handled: requests answered again, stale ones dropped.",
       {{"/ike/duplicates/requests_answered_again", {{"kind", "request_answered_again"}}},
        {"/ike/duplicates/stale_requests", {{"kind", "stale_request"}}},
        {"/ike/duplicates/stale_responses", {{"kind", "stale_response"}}}}},
      {"spigot_ike_dpd_probes_total", Type::kCounter, "Dead peer detection probes, and probes not sent.",
       {{"/ike/dpd/probes", {{"event", "sent"}}},
        {"/ike/dpd/skipped_traffic", {{"event", "skipped_traffic"}}},
        {"/ike/dpd/deferred", {{"event", "deferred"}}}}},
      {"spigot_ike_dpd_max_per_second", Type::kGauge, "Dead peer detection probe rate limit.",
       {{"/ike/dpd/max_per_second"}}},
      {"spigot_ike_fragments_total", Type::kCounter, "IKE fragmentation (RFC 7383) events.",
       {{"/ike/fragments/messages_fragmented", {{"event", "message_fragmented"}}},
        {"/ike/fragments/sent", {{"event", "sent"}}},
        {"/ike/fragments/received", {{"event", "received"}}},
        {"/ike/fragments/reassembled", {{"event", "reassembled"}}},
        {"/ike/fragments/timed_out", {{"event", "timed_out"}}},
        {"/ike/fragments/replaced", {{"event", "replaced"}}}}},
      {"spigot_ike_cookies_total", Type::kCounter, "IKE_SA_INIT cookies (RFC 7296 2.6) sent, and invalid ones received.",
       {{"/ike/cookies_sent", {{"event", "sent"}}}, {"/ike/cookies_invalid", {{"event", "invalid"}}}}},
      {"spigot_ike_unique_total", Type::kCounter, "IKE SAs deleted for uniqueness (unique = replace / keep).",
       {{"/ike/unique_replaced", {{"action", "replaced"}}}, {"/ike/unique_refused", {{"action", "refused"}}}}},
      {"spigot_ike_timers_missed_total", Type::kCounter, "IKE SA deadlines found late by the safety sweep.",
       {{"/ike/timers_missed"}}},
      {"spigot_config_ike_lifetime_seconds", Type::kGauge, "Shortest configured IKE rekey time (0: none).",
       {{"/config/ike_lifetime"}}},
      {"spigot_config_child_lifetime_seconds", Type::kGauge, "Shortest configured CHILD rekey time (0: none).",
       {{"/config/child_lifetime"}}},
      {"spigot_ike_workers", Type::kGauge, "IKE worker threads.", {{"/ike_workers/threads"}}},
      {"spigot_ike_workers_capacity", Type::kGauge, "IKE worker jobs that may be queued or running.",
       {{"/ike_workers/capacity"}}},
      {"spigot_ike_workers_in_flight", Type::kGauge, "IKE worker jobs queued or running now.",
       {{"/ike_workers/in_flight"}}},
      {"spigot_ike_workers_completed_total", Type::kCounter, "IKE worker jobs completed.",
       {{"/ike_workers/completed"}}},
      {"spigot_radius_requests_total", Type::kCounter, "RADIUS Access-Requests sent (first copies).",
       {{"/radius/requests"}}},
      {"spigot_radius_outstanding", Type::kGauge, "RADIUS requests waiting for an answer.",
       {{"/radius/outstanding"}}},
      {"spigot_radius_retransmits_total", Type::kCounter, "RADIUS requests retransmitted.",
       {{"/radius/retransmits"}}},
      {"spigot_radius_replies_total", Type::kCounter, "RADIUS replies by code.",
       {{"/radius/accepts", {{"code", "accept"}}},
        {"/radius/rejects", {{"code", "reject"}}},
        {"/radius/challenges", {{"code", "challenge"}}}}},
      {"spigot_radius_timeouts_total", Type::kCounter, "RADIUS logins no server answered.",
       {{"/radius/timeouts"}}},
      {"spigot_radius_failovers_total", Type::kCounter, "RADIUS requests moved to the next server.",
       {{"/radius/failovers"}}},
      {"spigot_radius_refused_total", Type::kCounter, "RADIUS requests not sent, by reason.",
       {{"/radius/refused_full", {{"reason", "full"}}}, {"/radius/refused_invalid", {{"reason", "invalid"}}}}},
      {"spigot_radius_send_errors_total", Type::kCounter, "RADIUS sends that failed.", {{"/radius/send_errors"}}},
      {"spigot_radius_rtt_max_seconds", Type::kGauge, "Longest RADIUS round trip seen.",
       {{"/radius/rtt_ms/max", {}, 1e-3}}},
      {"spigot_radius_framed_ip_refused_total", Type::kCounter,
       "RADIUS Framed-IP-Addresses not given (outside the pools, or in use).",
       {{"/radius/framed_ip_refused"}}},
      {"spigot_radius_eap_resumed_inline_total", Type::kCounter,
       "RADIUS answers resumed inside the client's callback (the loop's queue was full).",
       {{"/radius/eap_resumed_inline"}}},
  };
  return kFamilies;
}

const std::vector<KeyedFamily>& KeyedFamilies() {
  static const std::vector<KeyedFamily> kKeyed = {
      {"spigot_packets_dropped_total", Type::kCounter, "Packets dropped on the data path, by reason.",
       "/packets_dropped", "reason"},
      {"spigot_ike_fragments_dropped_total", Type::kCounter, "IKE fragments dropped, by reason.",
       "/ike/fragments/dropped", "reason"},
      {"spigot_ike_weak_proposals_refused_total", Type::kCounter,
       "Peers refused for offering only weak transforms (RFC 8247), by transform.",
       "/ike/weak_proposals_refused", "transform"},
      {"spigot_radius_dropped_total", Type::kCounter, "RADIUS replies dropped, by reason.",
       "/radius/dropped", "reason"},
  };
  return kKeyed;
}

std::optional<double> Number(const json& v) {
  if (v.is_number()) return v.get<double>();
  if (v.is_boolean()) return v.get<bool>() ? 1.0 : 0.0;
  return std::nullopt;
}

const json* At(const json& root, const std::string& pointer) {
  const json::json_pointer p(pointer);
  if (!root.contains(p)) return nullptr;
  return &root.at(p);
}

// "/ike/eap_logins" -> "ike_eap_logins"; characters a metric name cannot have become '_'.
std::string NameFromPointer(const std::string& pointer) {
  std::string out;
  for (char c : pointer.substr(1)) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    out += ok ? c : '_';
  }
  return out;
}

// Every numeric (or boolean) leaf of `j` under `pointer`, with its pointer. Arrays are left to
// the families that know their entries (pools, RADIUS servers).
void Leaves(const json& j, const std::string& pointer, std::map<std::string, double>& out) {
  if (j.is_object()) {
    for (const auto& [k, v] : j.items()) Leaves(v, pointer + "/" + k, out);
  } else if (auto n = Number(j)) {
    out[pointer] = *n;
  }
}

void HistogramFamily(Exposition& e, const json& h, const char* name, const char* help) {
  if (!h.is_object()) return;
  const auto bounds = h.value("bounds", std::vector<double>{});
  const auto counts = h.value("counts", std::vector<std::uint64_t>{});
  e.Family(name, Type::kHistogram, help);
  e.Histogram({}, bounds, counts, h.value("sum", 0.0));
}

json HistogramJson(const engine::Histogram& h) {
  return {{"bounds", h.bounds()}, {"counts", h.counts()}, {"sum", h.sum()}, {"count", h.count()}};
}

}  // namespace

json MetricsSnapshot(gateway::Gateway& gw) {
  // Per connection: every configured one (zeros included), and IKE SAs of connections since
  // removed by a reload.
  std::map<std::string, std::array<std::uint64_t, 3>> per;  // established, half-open, CHILD
  for (const auto& [name, c] : gw.connections().all()) per[name];
  for (const auto& [ours, e] : gw.ike_sas().entries()) {
    const ike::IkeSa& sa = *e.sa;
    if (sa.state() == ike::IkeSa::State::kDead) continue;
    auto& n = per[sa.connection() ? sa.connection()->name : ""];
    ++n[sa.state() == ike::IkeSa::State::kEstablished ? 0 : 1];
    n[2] += sa.children().size();
  }
  json connections = json::array();
  for (const auto& [name, n] : per) {
    connections.push_back({{"name", name}, {"ike_sas", n[0]}, {"ike_sas_half_open", n[1]}, {"child_sas", n[2]}});
  }
  return {{"stats", StatsJson(gw)},
          {"connections", std::move(connections)},
          {"histograms",
           {{"negotiation_seconds", HistogramJson(gw.negotiation_seconds())},
            {"queue_wait_seconds", HistogramJson(gw.queue_wait_seconds())},
            {"tick_lag_seconds", HistogramJson(gw.tick_lag_seconds())}}}};
}

std::string RenderMetrics(const json& given, const MetricsServerCounters& server,
                          std::set<std::string>* used) {
  static const json kEmpty = json::object();
  const json& snapshot = given.is_object() ? given : kEmpty;
  const json& stats = snapshot.contains("stats") && snapshot["stats"].is_object() ? snapshot["stats"] : kEmpty;
  std::set<std::string> consumed;
  Exposition e;

  for (const Family& f : Families()) {
    bool opened = false;
    for (const Source& s : f.sources) {
      const json* v = At(stats, s.pointer);
      const std::optional<double> n = v ? Number(*v) : std::nullopt;
      if (!n) continue;
      if (!opened) e.Family(f.name, f.type, f.help);
      opened = true;
      e.Sample(s.labels, *n * s.scale);
      consumed.insert(s.pointer);
    }
    if (std::string_view(f.name) == "spigot_crypto_engine_stalled") {
      if (const json* state = At(stats, "/crypto_engine/state"); state && state->is_string()) {
        e.Family(f.name, f.type, f.help);
        e.Sample({}, *state == "ok" ? 0 : 1);
      }
    }
  }
  for (const KeyedFamily& f : KeyedFamilies()) {
    const json* obj = At(stats, f.pointer);
    if (obj == nullptr || !obj->is_object()) continue;
    bool opened = false;
    for (const auto& [k, v] : obj->items()) {
      const std::optional<double> n = Number(v);
      if (!n || !Exposition::ValidLabelName(f.label)) continue;
      if (!opened) e.Family(f.name, f.type, f.help);
      opened = true;
      e.Sample({{f.label, k}}, *n);
      consumed.insert(std::string(f.pointer) + "/" + k);
    }
  }
  // Fields the families above read in another form, or that are sums of theirs.
  for (const char* p : {"/queue_depth", "/queue_overflows", "/config/tunnels", "/crypto_engine/state",
                        "/udp_sockets/ike/port", "/udp_sockets/natt/port",
                        "/radius/rtt_ms/replies", "/radius/rtt_ms/avg"}) {
    consumed.insert(p);
  }
  if (const json* name = At(stats, "/crypto_engine/name"); name && name->is_string()) {
    e.Family("spigot_crypto_engine_info", Type::kGauge, "The crypto engine in use (value 1).");
    e.Sample({{"engine", name->get<std::string>()}}, 1);
  }
  // RADIUS round trips: a summary without quantiles (sum and count).
  if (const json* rtt = At(stats, "/radius/rtt_ms"); rtt && rtt->is_object()) {
    const double replies = rtt->value("replies", 0.0);
    e.Family("spigot_radius_rtt_seconds", Type::kSummary, "RADIUS round trips of answered requests.");
    e.Sample({}, rtt->value("avg", 0.0) * replies / 1000, "_sum");
    e.Sample({}, replies, "_count");
  }
  // Virtual IP pools, by pool.
  if (const json* pools = At(stats, "/pools"); pools && pools->is_array() && !pools->empty()) {
    struct PoolField {
      const char* name;
      Type type;
      const char* help;
      const char* key;
      const char* state;
    };
    const PoolField fields[] = {
        {"spigot_address_pool_size", Type::kGauge, "Addresses in the virtual IP pool.", "size", nullptr},
        {"spigot_address_pool_leases", Type::kGauge, "Leases of the pool: held by a connected peer (online) or kept for one (offline).", "in_use", "online"},
        {"spigot_address_pool_leases", Type::kGauge, "", "offline", "offline"},
        {"spigot_address_pool_exhausted_total", Type::kCounter, "Peers that found the pool full.", "exhausted", nullptr},
    };
    for (const PoolField& f : fields) {
      e.Family(f.name, f.type, f.help);
      for (const json& p : *pools) {
        if (!p.is_object() || !p.contains(f.key)) continue;
        const std::optional<double> n = Number(p[f.key]);
        if (!n) continue;
        Labels l = {{"pool", p.value("name", "")}};
        if (f.state) l.emplace_back("state", f.state);
        e.Sample(l, *n);
      }
    }
    for (const auto& [i, p] : pools->items()) {
      if (!p.is_object()) continue;
      for (const auto& [k, v] : p.items()) consumed.insert("/pools/" + i + "/" + k);
    }
  }
  // Data-path threads, by thread: ESP packets each sealed and opened, datagrams it handed over.
  if (const json* threads = At(stats, "/datapath/threads"); threads && threads->is_array() && !threads->empty()) {
    e.Family("spigot_datapath_thread_packets_total", Type::kCounter,
             "ESP packets a data-path thread sealed (tx) and opened (rx).");
    for (const auto& [i, t] : threads->items()) {
      if (!t.is_object()) continue;
      for (const char* dir : {"tx", "rx"}) {
        if (!t.contains(dir)) continue;
        if (const std::optional<double> n = Number(t[dir])) e.Sample({{"thread", i}, {"direction", dir}}, *n);
      }
    }
    e.Family("spigot_datapath_thread_handed_over_total", Type::kCounter,
             "ESP datagrams a data-path thread received for an SA another thread owns, and handed over.");
    for (const auto& [i, t] : threads->items()) {
      if (!t.is_object() || !t.contains("handed_over")) continue;
      if (const std::optional<double> n = Number(t["handed_over"])) e.Sample({{"thread", i}}, *n);
    }
  }
  // Bounds (bounds.h), by bound: limit, use now and what each dropped, refused, evicted or held.
  if (const json* bounds = At(stats, "/bounds"); bounds && bounds->is_object() && !bounds->empty()) {
    const struct {
      const char* name;
      Type type;
      const char* help;
      const char* key;
    } fields[] = {
        {"spigot_bound_limit", Type::kGauge, "The bound's limit (bounds.h; a configured one follows reload).", "limit"},
        {"spigot_bound_in_use", Type::kGauge, "The bound's use now (absent where it is per IKE SA or per message).", "in_use"},
        {"spigot_bound_dropped_total", Type::kCounter,
         "Items the bound dropped, refused, evicted or held (its policy says which).", "dropped"},
    };
    for (const auto& f : fields) {
      e.Family(f.name, f.type, f.help);
      for (const auto& [name, b] : bounds->items()) {
        if (!b.is_object() || !b.contains(f.key)) continue;
        if (const std::optional<double> n = Number(b[f.key])) e.Sample({{"bound", name}}, *n);
      }
    }
    for (const auto& [name, b] : bounds->items()) {
      if (!b.is_object()) continue;
      for (const auto& [k, v] : b.items()) consumed.insert("/bounds/" + name + "/" + k);
    }
  }
  // RADIUS servers, by address.
  if (const json* servers = At(stats, "/radius/servers"); servers && servers->is_array() && !servers->empty()) {
    json list = json::array();
    for (const json& s : *servers) {
      if (s.is_object()) list.push_back(s);
    }
    e.Family("spigot_radius_server_up", Type::kGauge, "1 unless the RADIUS server is marked dead.");
    for (const json& s : list) e.Sample({{"server", s.value("address", "")}}, s.value("dead", false) ? 0 : 1);
    e.Family("spigot_radius_server_requests_total", Type::kCounter, "RADIUS requests sent to the server.");
    for (const json& s : list) e.Sample({{"server", s.value("address", "")}}, s.value("requests", 0.0));
    e.Family("spigot_radius_server_timeouts_total", Type::kCounter, "RADIUS requests the server did not answer.");
    for (const json& s : list) e.Sample({{"server", s.value("address", "")}}, s.value("timeouts", 0.0));
  }
  // Per connection.
  if (const json* conns = At(snapshot, "/connections"); conns && conns->is_array() && !conns->empty()) {
    e.Family("spigot_connection_ike_sas", Type::kGauge, "IKE SAs of the connection, by state.");
    for (const json& c : *conns) {
      if (!c.is_object()) continue;
      e.Sample({{"connection", c.value("name", "")}, {"state", "established"}}, c.value("ike_sas", 0.0));
      e.Sample({{"connection", c.value("name", "")}, {"state", "half_open"}}, c.value("ike_sas_half_open", 0.0));
    }
    e.Family("spigot_connection_child_sas", Type::kGauge, "CHILD SAs of the connection's IKE SAs.");
    for (const json& c : *conns) {
      if (c.is_object()) e.Sample({{"connection", c.value("name", "")}}, c.value("child_sas", 0.0));
    }
  }
  // Latencies.
  if (snapshot.contains("histograms") && snapshot["histograms"].is_object()) {
    const json& h = snapshot["histograms"];
    HistogramFamily(e, h.value("negotiation_seconds", json()), "spigot_ike_negotiation_seconds",
                    "IKE SAs from IKE_SA_INIT to ESTABLISHED (IKE_AUTH and the first CHILD SA included).");
    HistogramFamily(e, h.value("queue_wait_seconds", json()), "spigot_negotiation_queue_wait_seconds",
                    "IKE work from its arrival in the negotiation queue to its turn.");
    HistogramFamily(e, h.value("tick_lag_seconds", json()), "spigot_control_tick_lag_seconds",
                    "How late the control thread's tick ran after its deadline.");
  }
  // Everything else in stats: a counter added later is still exported, untyped.
  std::map<std::string, double> leaves;
  Leaves(stats, "", leaves);
  for (const auto& [pointer, value] : leaves) {
    if (consumed.count(pointer) != 0 || pointer.starts_with("/pools/") || pointer.starts_with("/radius/servers/")) continue;
    const std::string name = "spigot_stats_" + NameFromPointer(pointer);
    e.Family(name, Type::kUntyped, "spigot stats field " + pointer.substr(1) + " (no dedicated metric).");
    e.Sample({}, value);
  }
  // The endpoint itself.
  e.Family("spigot_metrics_scrapes_total", Type::kCounter, "GET /metrics requests answered.");
  e.Sample({}, static_cast<double>(server.scrapes));
  e.Family("spigot_metrics_connections_refused_total", Type::kCounter,
           "Connections to the metrics endpoint refused (503) over its connection bound.");
  e.Sample({}, static_cast<double>(server.refused_connections));
  e.Family("spigot_metrics_bad_requests_total", Type::kCounter,
           "Requests to the metrics endpoint answered 4xx (too large, bad headers, method, path).");
  e.Sample({}, static_cast<double>(server.bad_requests));
  e.Family("spigot_metrics_timeouts_total", Type::kCounter,
           "Connections to the metrics endpoint closed at their deadline (slow clients).");
  e.Sample({}, static_cast<double>(server.timeouts));
  e.Family("spigot_metrics_connections_open", Type::kGauge,
           "Connections to the metrics endpoint accepted and not yet closed.");
  e.Sample({}, static_cast<double>(server.open_connections));
  e.Family("spigot_metrics_snapshot_age_seconds", Type::kGauge,
           "Age of the counters served: the control thread publishes them every second; a value "
           "growing past a few seconds means the control thread is stuck.");
  e.Sample({}, server.snapshot_age_seconds);
  if (used != nullptr) *used = std::move(consumed);
  return e.Take();
}

}  // namespace spigot::control
