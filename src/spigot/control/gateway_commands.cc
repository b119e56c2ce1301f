#include "spigot/control/gateway_commands.h"

#include <fmt/format.h>

#include <cstdint>
#include <map>
#include <string_view>

#include "spigot/bounds.h"
#include "spigot/ike/endpoint.h"
#include "spigot/ike/traffic_selectors.h"
#include "spigot/pki/certificate.h"

namespace spigot::control {
namespace {


nlohmann::json SelectorsJson(const std::vector<ike::TrafficSelector>& ts) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& t : ts) out.push_back(ike::ToString(t));
  return out;
}

nlohmann::json ReloadJson(const gateway::Gateway::ReloadResult& r) {
  if (!r.ok) return {{"error", r.error}};
  return {{"ok", true},
          {"added", r.diff.added},
          {"removed", r.diff.removed},
          {"changed", r.diff.changed},
          {"restart_required", r.diff.restart_required}};
}

// Virtual IP pools in stats: size, in use, and how often a peer found one full (what doctor's
// pool_exhausted reads), plus the peers refused an address for any reason.
// IKE fragmentation (RFC 7383): sent, reassembled, and fragments dropped by reason.
nlohmann::json EapLoginsJson(const ike::IkeCounters& c, eap::Method m) {
  return {{"success", c.eap_login(m).success}, {"failure", c.eap_login(m).failure}};
}

nlohmann::json FragmentsJson(const ike::FragmentCounters& f) {
  return {{"messages_fragmented", f.messages_fragmented}, {"sent", f.fragments_sent},
          {"received", f.fragments_received}, {"reassembled", f.messages_reassembled},
          {"timed_out", f.timed_out}, {"replaced", f.replaced},
          {"dropped",
           {{"not_negotiated", f.not_negotiated}, {"bad_icv", f.bad_icv},
            {"malformed", f.malformed}, {"duplicate", f.duplicate}, {"too_many", f.too_many},
            {"too_large", f.too_large}, {"stale", f.stale}}}};
}

nlohmann::json PoolsJson(const gateway::Gateway& gw) {
  nlohmann::json pools = nlohmann::json::array();
  for (const auto& p : gw.pools().Stats()) {
    pools.push_back({{"name", p.name},
                     {"size", p.size},
                     {"in_use", p.online},
                     {"offline", p.offline},
                     {"exhausted", p.exhausted}});
  }
  return pools;
}

// RADIUS behind eap-radius: null until a [radius] table was configured.
nlohmann::json RadiusJson(const gateway::Gateway& gw) {
  const radius::Client* client = gw.radius();
  if (client == nullptr) return nullptr;
  const radius::Client::Stats r = client->stats();
  nlohmann::json servers = nlohmann::json::array();
  for (const auto& s : r.servers) {
    servers.push_back({{"address", s.address}, {"dead", s.dead}, {"requests", s.requests}, {"timeouts", s.timeouts}});
  }
  const double rtt_avg_ms = r.rtt.count == 0 ? 0.0 : static_cast<double>(r.rtt.sum.count()) / 1000.0 / static_cast<double>(r.rtt.count);
  return {{"requests", r.requests},
          {"outstanding", r.outstanding},
          {"retransmits", r.retransmits},
          {"accepts", r.accepts},
          {"rejects", r.rejects},
          {"challenges", r.challenges},
          {"timeouts", r.timeouts},
          {"failovers", r.failovers},
          {"refused_full", r.refused_full},
          {"refused_invalid", r.refused_invalid},
          {"send_errors", r.send_errors},
          {"rtt_ms", {{"replies", r.rtt.count}, {"avg", rtt_avg_ms}, {"max", static_cast<double>(r.rtt.max.count()) / 1000.0}}},
          {"dropped",
           {{"malformed", r.dropped.malformed},
            {"wrong_source", r.dropped.wrong_source},
            {"unknown_id", r.dropped.unknown_id},
            {"late", r.dropped.late},
            {"bad_authenticator", r.dropped.bad_authenticator},
            {"bad_message_authenticator", r.dropped.bad_message_authenticator}}},
          {"servers", servers},
          {"framed_ip_refused", gw.counters().framed_ip_refused},
          {"eap_resumed_inline", gw.counters().eap_resumed_inline}};
}

}  // namespace

std::string CheckRequestFields(const nlohmann::json& req) {
  for (const char* key : {"command", "name", "action", "thread"}) {
    if (const auto it = req.find(key); it != req.end() && !it->is_string())
      return std::string("\"") + key + "\" must be a string, got " + it->type_name();
  }
  if (const auto it = req.find("ike"); it != req.end() && !it->is_boolean())
    return std::string("\"ike\" must be true or false, got ") + it->type_name();
  for (const char* key : {"ms", "seconds"}) {
    const auto it = req.find(key);
    if (it == req.end()) continue;
    if (!it->is_number_integer())
      return std::string("\"") + key + "\" must be an integer, got " + it->type_name();
    if (it->is_number_unsigned() && it->get<std::uint64_t>() > std::uint64_t{INT64_MAX})
      return std::string("\"") + key + "\" is out of range";
  }
  return {};
}

nlohmann::json HandleCommand(gateway::Gateway& gw, const nlohmann::json& req) {
  if (std::string bad = CheckRequestFields(req); !bad.empty()) return {{"error", std::move(bad)}};
  const std::string cmd = req.value("command", "");
  const std::string name = req.value("name", "");
  if (cmd == "sas") return SasJson(gw);
  if (cmd == "stats") return StatsJson(gw);
  if (cmd == "leases") return gw.pools().LeasesJson();
  if (cmd == "reload") return ReloadJson(gw.Reload());
  if (cmd == "initiate") {
    std::string err;
    if (!gw.Initiate(name, &err)) return {{"error", err}};
    return {{"ok", true}, {"message", "initiating " + name}};
  }
  if (cmd == "rekey") {
    const bool ike = req.value("ike", false);
    const int n = gw.Rekey(name, ike);
    if (n == 0) return {{"error", "nothing to rekey for connection '" + name + "'"}};
    return {{"ok", true},
            {"message", "rekeying " + std::to_string(n) + (ike ? " IKE SA(s)" : " CHILD SA(s)")}};
  }
  if (cmd == "crypto-fault")
    return gw.dataplane().CryptoFault(req.value("action", ""), req.value("ms", std::int64_t{0}));
  if (cmd == "terminate") {
    const int n = gw.Terminate(name);
    if (n == 0) return {{"error", "no IKE SA for connection '" + name + "'"}};
    return {{"ok", true}, {"message", "deleting " + std::to_string(n) + " IKE SA(s)"}};
  }
  return {{"error", "unknown command '" + cmd + "'"}};
}

nlohmann::json SasJson(const gateway::Gateway& gw) {
  const ike::TimePoint now = gw.Now();
  auto secs = [&](ike::TimePoint t) -> nlohmann::json {
    if (t == ike::TimePoint::max()) return nullptr;
    return std::chrono::duration_cast<std::chrono::seconds>(t - now).count();
  };
  nlohmann::json ikes = nlohmann::json::array();
  for (const auto& [ours, e] : gw.ike_sas().entries()) {
    const ike::IkeSa& sa = *e.sa;
    nlohmann::json j = {
        {"name", sa.connection() ? sa.connection()->name : ""},
        {"state", ike::ToString(sa.state())},
        {"role", sa.role() == ike::IkeSa::Role::kInitiator ? "initiator" : "responder"},
        {"spi_i", fmt::format("{:016x}", sa.spi_i())},
        {"spi_r", fmt::format("{:016x}", sa.spi_r())},
        {"local", ike::ToString(sa.local())},
        {"remote", ike::ToString(sa.remote())},
        {"algorithms", sa.algorithms() ? ike::Describe(*sa.algorithms()) : ""},
        {"nat_detected", sa.nat_detected()},
        {"rekeyed", sa.rekeyed()},  // replaced by a rekey, waiting for its DELETE
    };
    if (sa.mobike()) {
      // RFC 4555: the peer's additional addresses (3.6), and where ESP goes while a return
      // routability check of its new address runs (3.7).
      nlohmann::json addrs = nlohmann::json::array();
      for (const auto& a : sa.peer_addresses()) addrs.push_back(ike::ToEndpoint(a).AddressString());
      j["mobike"] = {{"peer_addresses", std::move(addrs)}, {"esp_remote", ike::ToString(sa.esp_remote())}};
    }
    // RADIUS Class attributes of the login (RFC 2865 5.25), kept for accounting: hex.
    if (const auto& classes = sa.eap_authorization().classes; !classes.empty()) {
      nlohmann::json cls = nlohmann::json::array();
      for (const auto& c : classes) {
        std::string hex;
        for (std::uint8_t b : c) hex += fmt::format("{:02x}", b);
        cls.push_back(hex);
      }
      j["radius_class"] = cls;
    }
    nlohmann::json children = nlohmann::json::array();
    for (const auto& c : sa.children()) {
      nlohmann::json cj = {{"spi_in", fmt::format("{:08x}", c.spi_in)},
                           {"spi_out", fmt::format("{:08x}", c.spi_out)},
                           {"algorithms", ike::Describe(c.algs)},
                           {"local_ts", SelectorsJson(c.local_ts)},
                           {"remote_ts", SelectorsJson(c.remote_ts)},
                           {"state", "INSTALLED"}};
      cj["installed_seconds_ago"] =
          std::chrono::duration_cast<std::chrono::seconds>(now - c.installed).count();
      cj["rekey_in_seconds"] = secs(c.rekey_at);
      cj["expires_in_seconds"] = secs(c.expire_at);
      if (const auto* rec = gw.children().Find(c.spi_in); rec != nullptr && rec->counters) {
        // One counter pair per CHILD SA, fed by both directions' threads.
        cj["packets"] = rec->counters->packets.load();
        cj["bytes"] = rec->counters->bytes.load();
      }
      children.push_back(std::move(cj));
    }
    j["children"] = std::move(children);
    ikes.push_back(std::move(j));
  }
  return {{"ike_sas", std::move(ikes)}};
}

// `spigot stats` "bounds": for each row of bounds::kBounds, its limit, its use now (null where
// the bound is per IKE SA or per message, or where the data path owns the figure), what it has
// dropped, refused, evicted or held (null where nothing counts it), and its policy. The
// daemon's own bounds (control_posts, control_clients) are filled in by app/daemon.cc.
nlohmann::json BoundsJson(gateway::Gateway& gw) {
  const auto& g = gw.config().global;
  const auto& c = gw.counters();
  const auto& ic = gw.ike_counters();
  const auto pool = gw.children().sad().spi_pool().stats();
  const engine::NegotiationQueue& q = gw.queue();
  const engine::Executor& workers = gw.workers();
  const datapath::Counters& dp = gw.dataplane().counters();
  const nlohmann::json engine = gw.dataplane().CryptoEngineStats();
  const nlohmann::json dataplane = gw.dataplane().BoundsStats();
  const auto eap = gw.EapThrottleStats();
  const auto certs = pki::GetCertificateCacheStats();
  const radius::Client* radius = gw.radius();
  const auto figure = [](const nlohmann::json& j, const char* key) -> nlohmann::json {
    return j.is_object() && j.contains(key) ? j[key] : nlohmann::json(nullptr);
  };
  std::map<std::string_view, nlohmann::json> use = {
      {"negotiation_queue", {{"limit", g.max_queue}, {"in_use", q.depth()}, {"dropped", q.stats().overflows}}},
      {"spi_pool", {{"limit", g.max_spi}, {"in_use", pool.in_use}, {"peak", pool.peak_in_use},
                    {"dropped", pool.refused_new + pool.refused_rekey}}},
      {"half_open_ike_sas",
       {{"limit", g.cookie_threshold}, {"in_use", gw.ike_sas().half_open_count()}, {"dropped", c.cookies_sent}}},
      {"ike_request_queue", {{"limit", bounds::kIkeRequestQueue}, {"in_use", nullptr}, {"dropped", ic.requests_queue_full}}},
      {"ike_fragments", {{"limit", bounds::kIkeFragmentsPerMessage}, {"in_use", nullptr},
                         {"dropped", ic.fragments.too_many + ic.fragments.too_large}}},
      {"ike_workers", {{"limit", workers.capacity()}, {"in_use", workers.in_flight()}, {"dropped", workers.stats().refused}}},
      {"ike_offload_held", {{"limit", bounds::kIkeOffloadHeld}, {"in_use", nullptr}, {"dropped", ic.offload_held_dropped}}},
      {"mobike_peer_addresses", {{"limit", bounds::kMobikePeerAddresses}, {"in_use", nullptr},
                                 {"dropped", ic.mobike_address_list_overflow}}},
      {"control_posts", {{"limit", bounds::kControlPosts}, {"in_use", nullptr}, {"dropped", nullptr}}},
      {"dataplane_mailbox", figure(dataplane, "dataplane_mailbox")},
      {"dataplane_backlog", figure(dataplane, "dataplane_backlog")},
      {"handoff", figure(dataplane, "handoff")},
      {"crypto_ring", {{"limit", bounds::kCryptoRing}, {"in_use", figure(engine, "in_flight")},
                       {"dropped", figure(engine, "ring_full")}}},
      {"multibuffer_batch", {{"limit", bounds::kMultiBufferBatch}, {"in_use", nullptr}, {"dropped", 0}}},
      {"acquire_hold", {{"limit", bounds::kAcquirePacketsPerPolicy}, {"in_use", nullptr},
                        {"dropped", dp.no_sa_queue_full.load() + dp.acquire_dropped.load()}}},
      {"radius_requests",
       {{"limit", gw.config().radius.max_requests}, {"in_use", radius != nullptr ? nlohmann::json(radius->stats().outstanding) : nullptr},
        {"dropped", radius != nullptr ? nlohmann::json(radius->stats().refused_full) : nullptr}}},
      {"eap_login_table", {{"limit", bounds::kEapLoginTable}, {"in_use", eap.entries}, {"dropped", eap.evicted}}},
      {"control_clients", {{"limit", bounds::kControlClients}, {"in_use", nullptr}, {"dropped", nullptr}}},
      {"certificate_cache", {{"limit", certs.capacity}, {"in_use", certs.entries}, {"dropped", certs.evictions}}},
  };
  if (use["dataplane_mailbox"].is_object()) use["dataplane_mailbox"]["dropped"] = 0;  // held, never dropped
  if (use["dataplane_backlog"].is_object()) use["dataplane_backlog"]["dropped"] = c.dataplane_backlog_holds;
  nlohmann::json out = nlohmann::json::object();
  for (const bounds::Bound& b : bounds::kBounds) {
    nlohmann::json j = use.count(b.name) != 0 && use[b.name].is_object() ? use[b.name] : nlohmann::json::object();
    j["policy"] = b.policy;
    out[std::string(b.name)] = std::move(j);
  }
  return out;
}

namespace {
std::uint64_t Microseconds(double seconds) { return static_cast<std::uint64_t>(seconds * 1e6 + 0.5); }
}  // namespace

nlohmann::json StatsJson(gateway::Gateway& gw) {
  const ike::TimePoint now = gw.Now();
  const gateway::IkeSaTable& table = gw.ike_sas();
  std::size_t half_open = table.offloaded_count(), established = 0;
  for (const auto& [ours, e] : table.entries()) {
    if (e.sa->state() == ike::IkeSa::State::kEstablished) ++established;
    else if (e.sa->state() != ike::IkeSa::State::kDead) ++half_open;
  }
  const auto& g = gw.config().global;
  // The shortest configured lifetimes, for `spigot doctor` (its snapshot "config" object).
  std::int64_t ike_life = 0, child_life = 0;
  for (const auto& [name, c] : gw.connections().all()) {
    const auto shorter = [](std::int64_t cur, std::chrono::seconds v) {
      return v.count() > 0 && (cur == 0 || v.count() < cur) ? v.count() : cur;
    };
    ike_life = shorter(ike_life, c.cfg.ike_rekey_time);
    child_life = shorter(child_life, c.cfg.child_rekey_time);
  }
  gateway::ChildSaManager& children = gw.children();
  const auto pool = children.sad().spi_pool().stats();
  const engine::RekeyScheduler& rekeys = children.rekey_scheduler();
  const auto& cc = children.counters();
  const auto& c = gw.counters();
  const auto& ic = gw.ike_counters();
  const auto eap_throttle = gw.EapThrottleStats();
  const engine::NegotiationQueue& q = gw.queue();
  const engine::Executor& workers = gw.workers();
  const datapath::Counters& dp = gw.dataplane().counters();
  const gateway::KernelCounters kernel = gw.dataplane().kernel_counters();
  const auto socket_json = [](const gateway::KernelCounters::Socket& s) {
    return nlohmann::json{{"port", s.port}, {"received", s.received}, {"kernel_rx_overflow", s.rx_overflow}};
  };
  return {
      {"active_sas", children.sad().size()},
      // CHILD SAs being negotiated: one for each IKE SA not yet established (IKE_AUTH
      // carries the first CHILD SA).
      {"pending_sas", half_open},
      {"failed_sas", c.failed_sas},
      {"ike_sas", established},
      {"half_open_ike_sas", half_open},
      {"max_spi", g.max_spi},
      {"spi_in_use", pool.in_use},
      {"spi_reserve", gw.spi_reserve()},
      {"max_queue", g.max_queue},
      {"queue_depth", q.depth()},
      {"queue_overflows", q.stats().overflows},
      {"queue",
       {{"established", q.depth(engine::Priority::kEstablished)},
        {"half_open", q.depth(engine::Priority::kHalfOpen)},
        {"new", q.depth(engine::Priority::kNew)},
        {"processed", q.stats().processed},
        {"evicted", q.stats().evicted},
        {"overflows_by_priority",
         {{"established", q.stats().by_priority_overflow[int(engine::Priority::kEstablished)]},
          {"half_open", q.stats().by_priority_overflow[int(engine::Priority::kHalfOpen)]},
          {"new", q.stats().by_priority_overflow[int(engine::Priority::kNew)]}}},
        {"acquires_refused", c.acquires_refused}}},
      {"virtual_ip_refused", c.pool_refused},
      // CHILD SAs' own outbound policies (one per peer's tunnel), and CHILD SAs refused
      // because another peer's policy has their addresses.
      {"policies", {{"child_sa", children.policies().size()}, {"conflicts", cc.policy_conflicts}}},
      {"pools", PoolsJson(gw)},
      {"lease_db", gw.lease_store() != nullptr ? gw.lease_store()->StatusJson() : nlohmann::json(nullptr)},
      {"radius", RadiusJson(gw)},
      {"negotiations_per_minute", children.NegotiationsPerMinute(now)},
      // The control thread's lag (Gateway::tick_lag_seconds): how late its tick ran, in
      // microseconds; p50 and p99 from above (the histogram's bucket bound), max exact.
      {"control",
       {{"ticks", gw.tick_lag_seconds().count()},
        {"tick_lag_us",
         {{"p50", Microseconds(gw.tick_lag_seconds().Quantile(0.5))},
          {"p99", Microseconds(gw.tick_lag_seconds().Quantile(0.99))},
          {"max", Microseconds(gw.tick_lag_seconds().max())}}}}},
      {"rekeys_per_minute", children.RekeysPerMinute(now)},
      {"rekeys",
       {{"max_per_second", rekeys.rate()}, {"scheduled", rekeys.size()},
        {"overdue", rekeys.Overdue(now)}, {"started", rekeys.stats().started},
        {"deferred_by_rate_limit", rekeys.stats().deferred},
        {"peak_per_second", rekeys.stats().peak_per_second},
        {"max_start_lag_us", rekeys.stats().max_start_lag_us},
        {"completed", cc.rekeys_completed}, {"answered", cc.rekeys_answered},
        {"outbound_switched_on_traffic", cc.outbound_switched_on_traffic},
        {"by_volume", cc.volume_rekeys}, {"volume_deletes", cc.volume_deletes}}},
      {"packets_dropped",
       {{"replay", dp.replay.load()}, {"bad_icv", dp.bad_icv.load()},
        {"unknown_spi", dp.unknown_spi.load()}, {"no_sa_queue_full", dp.no_sa_queue_full.load()},
        {"selector_mismatch", dp.selector_mismatch.load()}, {"malformed", dp.malformed.load()},
        {"no_policy", dp.no_policy.load()}, {"no_sa", dp.no_sa.load()},
        {"seq_exhausted", dp.seq_exhausted.load()}, {"acquire_failed", dp.acquire_dropped.load()},
        {"ike_forward_refused", dp.ike_forward_refused.load()},
        {"send_failed", dp.send_failed.load()}, {"tun_write_failed", dp.tun_write_failed.load()},
        // Dropped by the kernel before spigot saw them (UDP 500 and 4500 receive queues full;
        // the TUN's queue to spigot full) or after spigot wrote them (TUN rx_dropped: the
        // kernel counts the writes it refused there, which tun_write_failed counts too).
        {"kernel_rx_overflow", kernel.udp_ike.rx_overflow + kernel.udp_natt.rx_overflow},
        {"kernel_tun_tx_dropped", kernel.tun_tx_dropped},
        {"kernel_tun_rx_dropped", kernel.tun_rx_dropped}}},
      // Per socket: datagrams read, and dropped by the kernel for want of room (the sum of the
      // two is every datagram the host received on the port).
      {"udp_sockets", {{"ike", socket_json(kernel.udp_ike)}, {"natt", socket_json(kernel.udp_natt)}}},
      {"traffic",
       {{"tx_packets", dp.tx_packets.load()}, {"tx_bytes", dp.tx_bytes.load()},
        {"rx_packets", dp.rx_packets.load()}, {"rx_bytes", dp.rx_bytes.load()},
        {"keepalives", dp.keepalives.load()}, {"acquires", dp.acquires.load()},
        // RFC 4303 2.6: authentic ESP packets with next header 59 (traffic flow confidentiality
        // padding), discarded as the RFC says — not a drop.
        {"dummy_discarded", dp.dummy.load()},
        {"udp_offload", gw.dataplane().UdpOffloadStats()},
        {"tun_offload", gw.dataplane().TunOffloadStats()}}},
      {"crypto_engine", gw.dataplane().CryptoEngineStats()},
      {"datapath", gw.dataplane().DatapathStats()},
      {"ike",
       {{"received", c.ike_received}, {"invalid", c.ike_invalid + ic.invalid_messages},
        {"truncated", c.ike_truncated},
        {"unknown_spi", c.ike_unknown_spi}, {"for_deleted_sa", ic.for_deleted_sa},
        {"no_connection", c.ike_no_connection},
        {"retransmits", ic.retransmits},
        // 2.4: exchanges of ours abandoned after the last retransmission (the IKE SA with them).
        {"gave_up",
         {{"ike_sa_init", ic.gave_up.ike_sa_init}, {"ike_auth", ic.gave_up.ike_auth},
          {"create_child_sa", ic.gave_up.create_child_sa}, {"informational", ic.gave_up.informational}}},
        {"half_open_expired", ic.half_open_expired}, {"rekeyed_expired", ic.rekeyed_expired},
        {"auth_failures", ic.auth_failures}, {"cert_failures", ic.cert_failures},
        {"auth_offloaded", ic.auth_offloaded}, {"auth_inline", ic.auth_inline},
        {"eap_offloaded", ic.eap_offloaded}, {"eap_inline", ic.eap_inline},
        {"child_pfs_offloaded", ic.child_pfs_offloaded}, {"child_pfs_inline", ic.child_pfs_inline},
        {"ike_rekey_offloaded", ic.ike_rekey_offloaded}, {"ike_rekey_inline", ic.ike_rekey_inline},
        {"offload", {{"retransmits", ic.offload_retransmits}, {"held", ic.offload_held},
                     {"held_dropped", ic.offload_held_dropped}}},
        {"eap_logins",
         {{"mschapv2", EapLoginsJson(ic, eap::Method::kMschapV2)},
          {"tls", EapLoginsJson(ic, eap::Method::kTls)},
          {"radius", EapLoginsJson(ic, eap::Method::kRadius)},
          {"throttled", ic.eap_throttled},
          {"backoff", {{"entries", eap_throttle.entries}, {"backing_off", eap_throttle.backing_off},
                       {"evicted", eap_throttle.evicted}}}}},
        {"child_failures", ic.child_failures}, {"established", c.ike_established},
        {"rekey_retries", ic.rekey_retries},
        // 2.1: copies of messages already handled (retransmissions, duplicates on the way).
        {"duplicates",
         {{"requests_answered_again", ic.requests_answered_again}, {"stale_requests", ic.stale_requests},
          {"stale_responses", ic.stale_responses}}},
        {"peer_moved", {{"followed", ic.peer_moved}, {"ignored", ic.peer_move_ignored}}},
        {"mobike", {{"negotiated", ic.mobike_negotiated}, {"updates", ic.mobike_updates}, {"refused", ic.mobike_refused},
                    {"rr_checks", ic.mobike_rr_checks}, {"rr_passed", ic.mobike_rr_passed},
                    {"rr_failed", ic.mobike_rr_failed}, {"rr_skipped", ic.mobike_rr_skipped},
                    {"local_moves", ic.mobike_local_moves}, {"updates_sent", ic.mobike_updates_sent},
                    {"no_local_address", ic.mobike_no_local_address},
                    {"additional_addresses", ic.mobike_additional_addresses},
                    {"address_list_overflow", ic.mobike_address_list_overflow},
                    {"address_malformed", ic.mobike_address_malformed},
                    {"address_lists_sent", ic.mobike_address_lists_sent}}},
        {"ike_rekey_collisions",
         {{"resolved", ic.ike_rekey_collisions}, {"ours_redundant", ic.ike_rekey_collisions_ours_redundant}}},
        {"weak_proposals_refused",
         {{"modp1024", ic.weak_refused_modp1024}, {"3des", ic.weak_refused_3des}}},
        {"dpd", {{"probes", ic.dpd_probes}, {"skipped_traffic", ic.dpd_skipped_traffic},
                 {"deferred", ic.dpd_deferred}, {"max_per_second", gw.MaxDpdPerSecond()}}},
        {"fragments", FragmentsJson(ic.fragments)},
        {"cookies_sent", c.cookies_sent}, {"cookies_invalid", c.cookies_invalid},
        {"init_in_progress", c.init_in_progress},
        {"unique_replaced", c.unique_replaced}, {"unique_refused", c.unique_refused},
        {"timers_missed", table.timers_missed()}}},
      {"config", {{"ike_lifetime", ike_life}, {"child_lifetime", child_life}, {"tunnels", established}}},
      {"ike_workers",
       {{"threads", workers.threads()}, {"capacity", workers.capacity()},
        {"in_flight", workers.in_flight()}, {"completed", workers.stats().completed}}},
      {"bounds", BoundsJson(gw)},
  };
}

}  // namespace spigot::control
