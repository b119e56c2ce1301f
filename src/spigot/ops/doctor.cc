#include "spigot/ops/doctor.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>

#include "spigot/ops/format.h"
#include "spigot/ops/plan.h"

namespace spigot::ops {
namespace {

// `spigot stats --json` is a few kilobytes; a file far past that is not a snapshot.
constexpr std::uintmax_t kMaxSnapshotBytes = 16 << 20;

// A counter as a number: whole numbers without decimals, rates with one.
std::string Num(double v) { return Fixed(v, v == std::floor(v) ? 0 : 1); }

std::string Pct(double part, double whole) {
  const double pct = 100 * part / whole;
  return Fixed(pct, pct > 0 && pct < 1 ? 2 : 1) + "%";
}

std::string Brief(const nlohmann::json& v) {
  std::string s = v.dump();
  return s.size() > 40 ? s.substr(0, 37) + "..." : s;
}

// Reads `obj[key]` into `out` if present: a number >= 0 (null reads as absent).
bool ReadNumber(const nlohmann::json& obj, const char* key, const std::string& path, double& out,
                std::string& error) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return true;
  if (!it->is_number() || it->get<double>() < 0 || !std::isfinite(it->get<double>())) {
    error = path + key + ": expected a number >= 0, got " + Brief(*it);
    return false;
  }
  out = it->get<double>();
  return true;
}

bool ReadString(const nlohmann::json& obj, const char* key, const std::string& path,
                std::string& out, std::string& error) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return true;
  if (!it->is_string()) {
    error = path + key + ": expected a string, got " + Brief(*it);
    return false;
  }
  out = it->get<std::string>();
  return true;
}

// `obj[key]` if it is an object, an empty object if absent; null and an error otherwise.
const nlohmann::json* Section(const nlohmann::json& obj, const char* key, std::string& error) {
  static const nlohmann::json kEmpty = nlohmann::json::object();
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return &kEmpty;
  if (!it->is_object()) {
    error = std::string(key) + ": expected an object, got " + Brief(*it);
    return nullptr;
  }
  return &*it;
}

// The engines that run on the data-path threads: nothing to stall, nothing to fall back from.
bool InlineEngine(const std::string& name) { return name == "inline" || name == "ipsec-mb"; }

// A stalled or failing crypto engine: stalls counted, stalled now, or jobs reported failed.
bool EngineTrouble(const Counters& c) {
  return c.engine_stalls > 0 || c.engine_state == "stalled" || c.engine_failed > 0;
}

// The cause a queue overflow is attributed to (doctor.h): exactly one, or none.
enum class Overflow { kNone, kSpiPool, kEngine, kStorm, kAddressPool, kLogins };

// The overflow as evidence, for the finding it is attributed to.
std::string OverflowEvidence(const Counters& c) {
  std::string s = "queue_overflows " + Num(c.queue_overflows) + " (queue_depth " +
                  Num(c.queue_depth) + " of max_queue " + Num(c.max_queue);
  if (c.new_overflows_reported) s += ", " + Num(c.new_overflows) + " of them new negotiations";
  s += ")";
  if (c.no_sa_queue_full > 0) {
    s += "; packets_dropped.no_sa_queue_full " + Num(c.no_sa_queue_full);
  }
  return s;
}

std::string EngineEvidence(const Counters& c) {
  const std::string engine = c.engine_name.empty() ? "(unnamed)" : "\"" + c.engine_name + "\"";
  std::string s = "crypto_engine " + engine + " state \"" + c.engine_state + "\", stalls " +
                  Num(c.engine_stalls) + ", fallbacks " + Num(c.engine_fallbacks);
  if (c.engine_failed > 0) s += ", failed " + Num(c.engine_failed);
  return s;
}

// config.cc: global.ike_workers is 0..256.
constexpr double kMaxIkeWorkers = 256;

// A new max_queue: twice the old (or the default), a power of two, capped.
double DoubledQueue(const Counters& c) {
  const double old_queue = c.max_queue > 0 ? c.max_queue : kDefaultMaxQueue;
  return std::min<double>(double(RoundUpPowerOfTwo(2 * old_queue)), kMaxMaxQueue);
}

std::optional<Finding> PoolExhausted(const Counters& c) {
  if (c.max_spi <= 0) return std::nullopt;
  const double reserve = c.spi_reserve ? *c.spi_reserve : std::floor(c.max_spi / 16);
  const double new_limit = c.max_spi - reserve;
  const bool near_full = c.active_sas >= kPoolFullFraction * c.max_spi;
  const bool refusing = c.failed_sas > 0 && c.spi_in_use >= new_limit;
  if (!near_full && !refusing) return std::nullopt;

  Finding f{"spi_pool_exhausted", "", ""};
  f.evidence = "active_sas " + Num(c.active_sas) + " of max_spi " + Num(c.max_spi) + " (" +
               Pct(c.active_sas, c.max_spi) + ", limit " + Fixed(kPoolFullFraction * 100, 0) +
               "%); spi_in_use " + Num(c.spi_in_use) + ", new negotiations are refused from " +
               Num(new_limit) + " (max_spi - rekey reserve " + Num(reserve) + "); failed_sas " +
               Num(c.failed_sas);
  if (c.queue_overflows > 0) f.evidence += "; queue_overflows " + Num(c.queue_overflows);

  const double used = std::max(c.active_sas, c.spi_in_use);
  const double want = std::max(2 * c.max_spi, used / kPoolTargetFraction);
  const double max_spi = std::min<double>(double(RoundUpPowerOfTwo(want)), kMaxMaxSpi);
  const bool queue_pressure =
      c.queue_overflows > 0 || (c.max_queue > 0 && c.queue_depth >= c.max_queue / 2);
  const double old_queue = c.max_queue > 0 ? c.max_queue : kDefaultMaxQueue;
  const double max_queue =
      queue_pressure ? std::min<double>(double(RoundUpPowerOfTwo(2 * old_queue)), kMaxMaxQueue)
                     : old_queue;
  const std::string queue_why =
      queue_pressure ? "doubled: queue_depth " + Num(c.queue_depth) + ", queue_overflows " +
                           Num(c.queue_overflows)
                     : "unchanged: queue_depth " + Num(c.queue_depth) + ", no overflows";
  if (c.max_spi >= kMaxMaxSpi) {
    f.fix =
        "max_spi is already at its limit of " + Num(kMaxMaxSpi) +
        ": split the tunnels across more gateways; in [global] keep max_queue = " + Num(max_queue) +
        " (" + queue_why + "), then run `spigot reload`";
    return f;
  }
  f.fix = "in [global] set max_spi = " + Num(max_spi) + " (the pool is then " + Pct(used, max_spi) +
          " full) and max_queue = " + Num(max_queue) + " (" + queue_why +
          "), then run `spigot reload` (no restart needed)";
  if (max_spi < want)
    f.fix +=
        "; " + Num(kMaxMaxSpi) + " is the pool's limit: also split the tunnels across gateways";
  return f;
}

std::optional<Finding> RenegotiationStorm(const Counters& c, Overflow overflow) {
  constexpr double kNone = std::numeric_limits<double>::infinity();
  const double rekey_minutes =
      c.active_sas > 0 && c.rekeys_per_minute > 0 ? c.active_sas / c.rekeys_per_minute : kNone;
  const double negotiation_minutes = c.active_sas > 0 && c.negotiations_per_minute > 0
                                         ? c.active_sas / c.negotiations_per_minute
                                         : kNone;
  const auto short_lifetime = [](double seconds) {
    return seconds > 0 &&
           StormLifetime(std::chrono::seconds(std::int64_t(seconds)), kDefaultJitter);
  };
  const bool short_child = short_lifetime(c.child_lifetime);
  const bool short_ike = short_lifetime(c.ike_lifetime);
  std::vector<std::string> evidence;
  if (rekey_minutes < kStormMinutes) {
    evidence.push_back("rekeys_per_minute " + Num(c.rekeys_per_minute) + " with active_sas " +
                       Num(c.active_sas) + ": each CHILD SA is rekeyed every " +
                       Fixed(rekey_minutes, 1) + " minutes (under " + Num(kStormMinutes) + ")");
  }
  // Negotiations of new peers are a login storm's, not renegotiations: the negotiation rate is
  // a renegotiation storm's evidence only while rekeys are at least half of it.
  const bool mostly_rekeys = 2 * c.rekeys_per_minute >= c.negotiations_per_minute;
  if (negotiation_minutes < kStormMinutes && mostly_rekeys) {
    evidence.push_back("negotiations_per_minute " + Num(c.negotiations_per_minute) +
                       " with active_sas " + Num(c.active_sas) +
                       ": one negotiation per CHILD SA every " + Fixed(negotiation_minutes, 1) +
                       " minutes (under " + Num(kStormMinutes) + ")");
  }
  const auto configured = [](const char* what, double seconds) {
    return std::string("configured ") + what + " " + Num(seconds) + " s (" +
           ConfigDuration(std::chrono::seconds(std::int64_t(seconds))) + ") rekeys every " +
           Fixed(seconds * (1 - kDefaultJitter / 2) / 60, 1) + " minutes on average with " +
           Fixed(kDefaultJitter * 100, 0) + "% rekey jitter (under " + Num(kStormMinutes) + ")";
  };
  if (short_child) evidence.push_back(configured("child_lifetime", c.child_lifetime));
  if (short_ike) evidence.push_back(configured("ike_lifetime", c.ike_lifetime));
  if (evidence.empty()) return std::nullopt;

  Finding f{"renegotiation_storm", "", ""};
  for (const auto& e : evidence) f.evidence += (f.evidence.empty() ? "" : "; ") + e;
  if (overflow == Overflow::kStorm) {
    f.evidence += "; " + OverflowEvidence(c) + ": the renegotiations fill the queue, while " +
                  EngineEvidence(c) + " is healthy";
  }
  const auto at_least = [](double given, std::chrono::seconds floor) {
    return std::max(std::chrono::seconds(std::int64_t(given)), floor);
  };
  const std::chrono::seconds ike = at_least(c.ike_lifetime, kSafeIkeLifetime);
  const std::chrono::seconds child = at_least(c.child_lifetime, kSafeChildLifetime);
  f.fix = "in each [[connection]] set ike_rekey_time = \"" + ConfigDuration(ike) +
          "\" and child_rekey_time = \"" + ConfigDuration(child) +
          "\" (IKE >= " + ConfigDuration(kSafeIkeLifetime) +
          ", CHILD >= " + ConfigDuration(kSafeChildLifetime) + "), then run `spigot reload`";
  const double tunnels = c.tunnels > 0 ? c.tunnels : c.active_sas;
  if (tunnels > 0) {
    const NegotiationRates r = SteadyRates(std::uint64_t(tunnels), ike, child, kDefaultJitter);
    f.fix += "; " + Num(tunnels) + " tunnels then negotiate " + Fixed(r.child_per_minute, 1) +
             " CHILD + " + Fixed(r.ike_per_minute, 1) + " IKE SAs per minute (with " +
             Fixed(kDefaultJitter * 100, 0) + "% rekey jitter); `spigot plan --tunnels " +
             Num(tunnels) + " --ike-lifetime " + ConfigDuration(ike) + " --child-lifetime " +
             ConfigDuration(child) + "` shows how that fits this machine";
  }
  return f;
}

std::optional<Finding> OffloadStall(const Counters& c, Overflow overflow) {
  if (!EngineTrouble(c)) return std::nullopt;
  Finding f{"offload_stall", EngineEvidence(c), ""};
  if (overflow == Overflow::kEngine) {
    f.evidence += "; " + OverflowEvidence(c);
    if (c.max_spi > 0) {
      f.evidence += "; while active_sas " + Num(c.active_sas) + " is only " +
                    Pct(c.active_sas, c.max_spi) + " of max_spi " + Num(c.max_spi) +
                    ": the SPI pool is not what is full";
    }
  }
  if (!InlineEngine(c.engine_name)) {
    f.fix =
        "in [global] set crypto_engine = \"inline\" (intel-ipsec-mb on the data-path threads, "
        "nothing to stall), then restart spigot (the crypto engine is chosen at startup; "
        "`spigot reload` reports it as restart_required); crypto_engine.stalls and "
        "queue_overflows should stop rising";
    if (c.engine_fallbacks > 0) {
      f.fix += " (the " + Num(c.engine_fallbacks) +
               " fallbacks show the watchdog already moved jobs to the inline engine)";
    }
  } else {
    f.fix = "the inline engine itself reports trouble: check spigot's log for the crypto errors "
            "and the CPU (intel-ipsec-mb needs AES-NI), then restart spigot";
  }
  return f;
}

// Overflows that neither the pools, the engine nor a storm explain: new peers arrive faster
// than the IKE workers answer their IKE_SA_INIT (DH), and the queue of new work spills.
std::optional<Finding> LoginStorm(const Counters& c, Overflow overflow) {
  if (overflow != Overflow::kLogins) return std::nullopt;
  Finding f{"login_storm", OverflowEvidence(c), ""};
  f.evidence += "; half_open_ike_sas " + Num(c.half_open_ike_sas) + ", negotiations_per_minute " +
                Num(c.negotiations_per_minute);
  if (c.worker_threads > 0) {
    f.evidence += "; ike_workers " + Num(c.worker_threads) + " threads, " +
                  Num(c.worker_in_flight) + " of " + Num(c.worker_capacity) + " jobs in flight";
  }
  f.evidence += "; cookies_sent " + Num(c.cookies_sent) + "; " + EngineEvidence(c) +
                " is healthy, and no renegotiation storm";
  if (c.max_spi > 0) {
    f.evidence += "; active_sas " + Num(c.active_sas) + " is " + Pct(c.active_sas, c.max_spi) +
                  " of max_spi " + Num(c.max_spi);
  }
  const double threads = c.worker_threads > 0 ? c.worker_threads : 1;
  const double more_workers = std::min(2 * threads, double(kMaxIkeWorkers));
  f.fix = "add capacity for the logins: in [global] set ike_workers = " + Num(more_workers) +
          " (now " + (c.worker_threads > 0 ? Num(c.worker_threads) : std::string("unknown")) +
          "; at most one per core, a restart applies it) and max_queue = " +
          Num(DoubledQueue(c)) +
          " (room for the burst), and lower cookie_threshold below the half-open peak of " +
          Num(c.half_open_ike_sas) +
          " (cookies make a new peer prove its address before it costs a DH), then run `spigot "
          "reload` for max_queue and cookie_threshold; if the workers are already one per core, "
          "spread the peers over more gateways";
  return f;
}

}  // namespace

bool ParseCounters(const nlohmann::json& j, Counters& out, std::string& error) {
  if (!j.is_object()) {
    error = "expected a JSON object (the output of `spigot stats --json`), got " + Brief(j);
    return false;
  }
  Counters c;
  const nlohmann::json* dropped = Section(j, "packets_dropped", error);
  const nlohmann::json* engine = dropped ? Section(j, "crypto_engine", error) : nullptr;
  const nlohmann::json* config = engine ? Section(j, "config", error) : nullptr;
  if (config == nullptr) return false;
  double reserve = 0;
  const bool ok =
      ReadNumber(j, "active_sas", "", c.active_sas, error) &&
      ReadNumber(j, "pending_sas", "", c.pending_sas, error) &&
      ReadNumber(j, "failed_sas", "", c.failed_sas, error) &&
      ReadNumber(j, "ike_sas", "", c.ike_sas, error) &&
      ReadNumber(j, "max_spi", "", c.max_spi, error) &&
      ReadNumber(j, "spi_in_use", "", c.spi_in_use, error) &&
      ReadNumber(j, "spi_reserve", "", reserve, error) &&
      ReadNumber(j, "max_queue", "", c.max_queue, error) &&
      ReadNumber(j, "queue_depth", "", c.queue_depth, error) &&
      ReadNumber(j, "queue_overflows", "", c.queue_overflows, error) &&
      ReadNumber(j, "negotiations_per_minute", "", c.negotiations_per_minute, error) &&
      ReadNumber(j, "rekeys_per_minute", "", c.rekeys_per_minute, error) &&
      ReadNumber(*dropped, "no_sa_queue_full", "packets_dropped.", c.no_sa_queue_full, error) &&
      ReadString(*engine, "name", "crypto_engine.", c.engine_name, error) &&
      ReadString(*engine, "state", "crypto_engine.", c.engine_state, error) &&
      ReadNumber(*engine, "stalls", "crypto_engine.", c.engine_stalls, error) &&
      ReadNumber(*engine, "fallbacks", "crypto_engine.", c.engine_fallbacks, error) &&
      ReadNumber(*engine, "failed", "crypto_engine.", c.engine_failed, error) &&
      ReadNumber(j, "half_open_ike_sas", "", c.half_open_ike_sas, error) &&
      ReadNumber(*config, "ike_lifetime", "config.", c.ike_lifetime, error) &&
      ReadNumber(*config, "child_lifetime", "config.", c.child_lifetime, error) &&
      ReadNumber(*config, "tunnels", "config.", c.tunnels, error);
  if (!ok) return false;
  if (j.contains("spi_reserve") && !j["spi_reserve"].is_null()) c.spi_reserve = reserve;
  if (j.contains("pools") && !j["pools"].is_null()) {
    if (!j["pools"].is_array()) {
      error = "pools: expected an array";
      return false;
    }
    for (const auto& p : j["pools"]) {
      Counters::AddressPool pool;
      if (!p.is_object()) {
        error = "pools: expected objects";
        return false;
      }
      if (!ReadString(p, "name", "pools[].", pool.name, error) ||
          !ReadNumber(p, "size", "pools[].", pool.size, error) ||
          !ReadNumber(p, "in_use", "pools[].", pool.in_use, error) ||
          !ReadNumber(p, "exhausted", "pools[].", pool.exhausted, error))
        return false;
      c.pools.push_back(std::move(pool));
    }
  }
  // Optional (older snapshots have none): the queue's overflows by priority, the IKE workers,
  // cookies. Read leniently, like the sections below.
  const auto number_at = [&j](std::initializer_list<const char*> path, double& out) {
    const nlohmann::json* at = &j;
    for (const char* key : path) {
      if (!at->is_object() || !at->contains(key)) return false;
      at = &(*at)[key];
    }
    if (!at->is_number() || at->get<double>() < 0) return false;
    out = at->get<double>();
    return true;
  };
  c.new_overflows_reported = number_at({"queue", "overflows_by_priority", "new"}, c.new_overflows);
  number_at({"ike_workers", "threads"}, c.worker_threads);
  number_at({"ike_workers", "capacity"}, c.worker_capacity);
  number_at({"ike_workers", "in_flight"}, c.worker_in_flight);
  number_at({"ike", "cookies_sent"}, c.cookies_sent);
  // Optional (older snapshots have none): ike.eap_logins.
  if (j.contains("ike") && j["ike"].is_object() && j["ike"].contains("eap_logins") && j["ike"]["eap_logins"].is_object()) {
    const auto& e = j["ike"]["eap_logins"];
    const auto num = [](const nlohmann::json& o, const char* k) {
      return o.is_object() && o.contains(k) && o[k].is_number() ? o[k].get<double>() : 0.0;
    };
    c.eap_throttled = num(e, "throttled");
    if (e.contains("backoff")) c.eap_backing_off = num(e["backoff"], "backing_off");
    for (const char* method : {"mschapv2", "tls", "radius"}) {
      if (e.contains(method)) c.eap_failures += num(e[method], "failure");
    }
  }
  // Optional (older snapshots have none, and it is null without [radius]).
  if (j.contains("radius") && j["radius"].is_object()) {
    const auto& r = j["radius"];
    if (r.contains("timeouts") && r["timeouts"].is_number()) c.radius_timeouts = r["timeouts"].get<double>();
    if (r.contains("failovers") && r["failovers"].is_number()) c.radius_failovers = r["failovers"].get<double>();
    if (r.contains("servers") && r["servers"].is_array()) {
      for (const auto& s : r["servers"]) {
        if (s.is_object() && s.value("dead", false) && s.contains("address") && s["address"].is_string()) {
          c.radius_dead.push_back(s["address"].get<std::string>());
        }
      }
    }
  }
  out = c;
  return true;
}

bool LoadSnapshot(const std::string& path, Counters& out, std::string& error) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    error = path + ": is a directory, not a snapshot file";
    return false;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = path + ": cannot open: " + std::strerror(errno);
    return false;
  }
  if (const auto size = std::filesystem::file_size(path, ec); !ec && size > kMaxSnapshotBytes) {
    error = path + ": " + std::to_string(size) + " bytes, more than a snapshot's limit of " +
            std::to_string(kMaxSnapshotBytes);
    return false;
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    error = path + ": cannot read: " + std::strerror(errno);
    return false;
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::parse_error& e) {  // carries the byte position and the reason
    error = path + ": not valid JSON: " + e.what();
    return false;
  }
  std::string reason;
  if (!ParseCounters(j, out, reason)) {
    error = path + ": " + reason;
    return false;
  }
  return true;
}

namespace {

// The remote-access twin of SPI exhaustion: road warriors refused a virtual IP
// (INTERNAL_ADDRESS_FAILURE) because their pool had no address left. One finding per pool.
bool AddressPoolFull(const Counters::AddressPool& p) {
  // Full now, or near full after refusals; refusals alone are history (a reload that grew
  // the pool fixed them), as failed_sas is for the SPI pool.
  const bool full = p.size > 0 && p.in_use >= p.size;
  const bool refusing = p.exhausted > 0 && p.in_use >= kPoolFullFraction * p.size;
  return full || refusing;
}

std::optional<Finding> AddressPoolExhausted(const Counters& c, Overflow overflow) {
  std::string evidence, fix;
  for (const auto& p : c.pools) {
    if (!AddressPoolFull(p)) continue;
    if (!evidence.empty()) evidence += "; ";
    evidence += "pool " + p.name + ": " + Num(p.in_use) + " of " + Num(p.size) + " addresses in use (" +
                Pct(p.in_use, p.size) + "), " + Num(p.exhausted) +
                " peers refused a virtual IP (INTERNAL_ADDRESS_FAILURE)";
    // Room for twice the peers seen, as a prefix length of the family's size.
    const double want = std::max(2 * (p.in_use + p.exhausted), 2 * p.size);
    int bits = 0;
    while (bits < 32 && std::pow(2.0, bits) < want + 2) ++bits;
    if (!fix.empty()) fix += "; ";
    fix += "in [[pool]] name = \"" + p.name + "\" give addrs at least " + Num(want) +
           " addresses (an IPv4 /" + std::to_string(32 - bits) +
           ", or a second pool listed in the connection's `pools`)";
  }
  if (evidence.empty()) return std::nullopt;
  if (overflow == Overflow::kAddressPool) {
    evidence += "; " + OverflowEvidence(c) + ": refused peers retry, " + EngineEvidence(c) +
                " is healthy";
  }
  return Finding{"pool_exhausted", evidence, fix + ", then run `spigot reload`: leases in use are kept"};
}

// Repeated failed EAP logins from one address for one user put it in a back-off; attempts
// during it are refused without a password check. Either means someone is guessing.
std::optional<Finding> PasswordGuessing(const Counters& c) {
  if (c.eap_throttled <= 0 && c.eap_backing_off <= 0) return std::nullopt;
  return Finding{"password_guessing",
                 Num(c.eap_failures) + " failed EAP logins, " + Num(c.eap_throttled) +
                     " attempts refused unchecked by the back-off, " + Num(c.eap_backing_off) +
                     " (user, address) pairs in a back-off now",
                 "find the addresses in spigot's log (\"EAP login from ADDRESS refused unchecked\") and drop them "
                 "at the firewall (nftables); make sure the users' passwords are strong, or move them to "
                 "certificates; a user who mistyped waits at most 60 s per attempt and is never locked out "
                 "from another address"};
}

// RADIUS servers that do not answer: eap-radius logins wait for every retry of a dead server
// before the next is tried, and fail when none answers.
std::optional<Finding> RadiusUnreachable(const Counters& c) {
  if (c.radius_timeouts <= 0 && c.radius_dead.empty()) return std::nullopt;
  std::string dead;
  for (const auto& a : c.radius_dead) dead += (dead.empty() ? "" : ", ") + a;
  return Finding{"radius_unreachable",
                 Num(c.radius_timeouts) + " EAP logins failed because no RADIUS server answered, " +
                     Num(c.radius_failovers) + " requests moved to the next server" +
                     (dead.empty() ? std::string() : "; not answering now: " + dead),
                 "check that the RADIUS servers run and reach spigot (radius.servers, UDP 1812, the shared "
                 "secret: a wrong secret looks like silence, see radius.dropped.bad_authenticator); list a "
                 "second server in radius.servers for failover; established tunnels are not affected"};
}

// doctor.h: the first cause the evidence supports.
Overflow AttributeOverflow(const Counters& c, bool spi_pool_exhausted, bool storm) {
  if (c.queue_overflows <= 0) return Overflow::kNone;
  if (spi_pool_exhausted) return Overflow::kSpiPool;
  if (EngineTrouble(c)) return Overflow::kEngine;
  if (storm) return Overflow::kStorm;
  if (std::any_of(c.pools.begin(), c.pools.end(), AddressPoolFull)) return Overflow::kAddressPool;
  if (c.max_spi > 0 && c.active_sas >= kPoolFarBelowFraction * c.max_spi) return Overflow::kNone;
  return Overflow::kLogins;
}

}  // namespace

std::vector<Finding> Diagnose(const Counters& c) {
  std::optional<Finding> spi = PoolExhausted(c);
  const bool storm = RenegotiationStorm(c, Overflow::kNone).has_value();
  const Overflow overflow = AttributeOverflow(c, spi.has_value(), storm);
  std::vector<Finding> findings;
  if (spi) findings.push_back(std::move(*spi));
  for (auto rule : {RenegotiationStorm, OffloadStall, LoginStorm, AddressPoolExhausted}) {
    if (auto f = rule(c, overflow)) findings.push_back(std::move(*f));
  }
  for (auto rule : {PasswordGuessing, RadiusUnreachable}) {
    if (auto f = rule(c)) findings.push_back(std::move(*f));
  }
  return findings;
}

nlohmann::ordered_json FindingsJson(const std::vector<Finding>& findings) {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const Finding& f : findings) {
    list.push_back({{"cause", f.cause}, {"evidence", f.evidence}, {"fix", f.fix}});
  }
  return {{"findings", std::move(list)}};
}

std::string FindingsText(const Counters& c, const std::vector<Finding>& findings) {
  if (findings.empty()) {
    std::string s = "all is well: active_sas " + Num(c.active_sas);
    if (c.max_spi > 0)
      s += " of max_spi " + Num(c.max_spi) + " (" + Pct(c.active_sas, c.max_spi) + ")";
    s += ", failed_sas " + Num(c.failed_sas) + ", queue_depth " + Num(c.queue_depth) +
         " of max_queue " + Num(c.max_queue) + ", queue_overflows " + Num(c.queue_overflows) +
         ", " + Num(c.negotiations_per_minute) + " negotiations and " + Num(c.rekeys_per_minute) +
         " rekeys per minute, crypto engine " +
         (c.engine_name.empty() ? std::string("(unnamed)") : c.engine_name) + " " +
         (c.engine_state.empty() ? std::string("") : c.engine_state + " ") + "with " +
         Num(c.engine_stalls) + " stalls\n";
    return s;
  }
  std::string s =
      std::to_string(findings.size()) + (findings.size() == 1 ? " finding\n" : " findings\n");
  for (const Finding& f : findings) {
    s += "\n" + f.cause + "\n  evidence: " + f.evidence + "\n  fix:      " + f.fix + "\n";
  }
  return s;
}

}  // namespace spigot::ops
