#include "spigot/ops/plan.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "spigot/ops/format.h"
#include "spigot/sa/spi_pool.h"  // pool geometry constants only (no code is linked)

namespace spigot::ops {
namespace {

// sa/spi_pool.h: 8 bytes of slot state per slot, in chunks of kChunkSlots; 4 bytes of live SPI
// per slot, in chunks of kLiveChunkSlots.
constexpr std::uint64_t kSlotStateBytes = 8;
constexpr std::uint64_t kLiveSpiBytes = 4;

double Minutes(std::chrono::seconds s) { return double(s.count()) / 60; }

double Utilization(std::uint64_t tunnels, std::chrono::seconds ike, std::chrono::seconds child,
                   double jitter, double capacity) {
  return SteadyRates(tunnels, ike, child, jitter).per_second() / capacity;
}

// Rounds up to whole hours from 1 h on, to whole minutes below.
std::chrono::seconds RoundUpLifetime(double seconds) {
  const double unit = seconds >= 3600 ? 3600 : 60;
  return std::chrono::seconds(static_cast<std::int64_t>(std::ceil(seconds / unit) * unit));
}

std::string Percent(double fraction) {
  return Fixed(fraction * 100, fraction < 0.001 ? 4 : fraction < 0.1 ? 2 : 1) + "%";
}

std::string StormThreshold() {
  return std::to_string(kStormLifetime.count() / 60) + "-minute renegotiation-storm threshold";
}

// Lifetimes: the given ones if the steady load is at most kTargetUtilization of capacity and
// neither is under the storm threshold; else the safe ones, lengthened further in proportion to
// the load if need be.
void RecommendLifetimes(const PlanInput& in, Recommendation& rec) {
  std::chrono::seconds ike = in.ike_lifetime, child = in.child_lifetime;
  std::string ike_why, child_why;
  const auto too_short = [&](std::chrono::seconds given, std::chrono::seconds safe,
                             const char* what) {
    return ConfigDuration(given) + " rekeys every " +
           HumanDuration(double(given.count()) * (1 - in.jitter / 2)) + " on average (with " +
           Percent(in.jitter) + " jitter), under the " + StormThreshold() + "; " +
           ConfigDuration(safe) + " is the safe " + what + " lifetime";
  };
  if (StormLifetime(ike, in.jitter)) {
    ike = kSafeIkeLifetime;
    ike_why = too_short(in.ike_lifetime, ike, "IKE");
  }
  if (StormLifetime(child, in.jitter)) {
    child = kSafeChildLifetime;
    child_why = too_short(in.child_lifetime, child, "CHILD");
  }
  const double given_rho = Utilization(in.tunnels, in.ike_lifetime, in.child_lifetime, in.jitter,
                                       in.capacity_per_second);
  double rho = Utilization(in.tunnels, ike, child, in.jitter, in.capacity_per_second);
  if (rho > kTargetUtilization) {
    // The rate goes as 1 / lifetime: stretching both by rho / target brings the load to target.
    ike = std::max(
        {ike, kSafeIkeLifetime, RoundUpLifetime(double(ike.count()) * rho / kTargetUtilization)});
    child = std::max({child, kSafeChildLifetime,
                      RoundUpLifetime(double(child.count()) * rho / kTargetUtilization)});
    ike = std::min(ike, std::max(in.ike_lifetime, kLongestIkeLifetime));
    child = std::min(child, std::max(in.child_lifetime, kLongestChildLifetime));
    rho = Utilization(in.tunnels, ike, child, in.jitter, in.capacity_per_second);
    const std::string load = "the steady load at the given lifetimes is " + Percent(given_rho) +
                             " of capacity (target <= " + Percent(kTargetUtilization) + ")";
    std::string result =
        "; at " + ConfigDuration(ike) + " / " + ConfigDuration(child) + " it is " + Percent(rho);
    if (rho > kTargetUtilization) {
      result += ", still too high even at the longest lifetimes recommended (" +
                ConfigDuration(kLongestIkeLifetime) + " / " +
                ConfigDuration(kLongestChildLifetime) + "): add workers or gateways";
    }
    if (ike != in.ike_lifetime) ike_why = load + result;
    if (child != in.child_lifetime) child_why = load + result;
  }
  const std::string fine = " as given: at " + ConfigDuration(ike) + " IKE / " +
                           ConfigDuration(child) + " CHILD the steady load is " + Percent(rho) +
                           " of capacity (target <= " + Percent(kTargetUtilization) +
                           ") and the mean lifetime with jitter is not under the " +
                           StormThreshold();
  rec.ike_rekey_time = ike;
  rec.child_rekey_time = child;
  rec.ike_rekey_time_reason = ike_why.empty() ? ConfigDuration(ike) + fine : ike_why;
  rec.child_rekey_time_reason = child_why.empty() ? ConfigDuration(child) + fine : child_why;
}

// max_queue: at least the given one; large enough for the storm's peak backlog (at the given
// lifetimes' load) and for a steady overflow probability below the target (at the recommended
// lifetimes' load, the one that will run).
void RecommendMaxQueue(const PlanResult& plan, Recommendation& rec) {
  const PlanInput& in = plan.input;
  std::uint64_t need = in.max_queue;
  std::string why;
  if (plan.storm) {
    const std::uint64_t storm_need =
        RoundUpPowerOfTwo(std::min(plan.storm->peak_queue_depth, double(kMaxMaxQueue)));
    if (storm_need > need) need = storm_need;
    why +=
        "the storm's peak backlog of " + Fixed(plan.storm->peak_queue_depth, 0) + " negotiations " +
        (storm_need > in.max_queue ? "needs " + std::to_string(storm_need) : std::string("fits"));
    if (!std::isfinite(plan.storm->drain_seconds)) {
      why += " (the steady load alone uses all capacity: the storm never drains)";
    }
  }
  const NegotiationRates run =
      SteadyRates(in.tunnels, rec.ike_rekey_time, rec.child_rekey_time, in.jitter);
  const double mu = in.capacity_per_second / in.workers;
  const std::optional<std::uint32_t> steady =
      SmallestQueueFor(run.per_second(), mu, in.workers, kTargetOverflowProbability);
  if (!why.empty()) why += "; ";
  if (steady) {
    const std::uint64_t steady_need = RoundUpPowerOfTwo(*steady);
    if (steady_need > need) need = steady_need;
    const MmckResult q = SolveMmck(run.per_second(), mu, in.workers,
                                   std::min<std::uint64_t>(need, kMaxMaxQueue) + in.workers);
    why += "the steady overflow probability is " + Probability(q.overflow_probability) +
           " (target < " + Probability(kTargetOverflowProbability) + ")";
  } else {
    why += "no queue size keeps the steady overflow probability below " +
           Probability(kTargetOverflowProbability) +
           ": the load is at or above capacity, see the lifetimes";
  }
  // Never below the given size (which may itself exceed kMaxMaxQueue, a power-of-two ceiling).
  rec.max_queue = need == in.max_queue
                      ? in.max_queue
                      : static_cast<std::uint32_t>(std::min<std::uint64_t>(need, kMaxMaxQueue));
  rec.max_queue_reason =
      std::to_string(rec.max_queue) +
      (rec.max_queue == in.max_queue ? " as given: "
                                     : " (raised from " + std::to_string(in.max_queue) + "): ") +
      why;
}

}  // namespace

std::string Validate(const PlanInput& in) {
  if (in.tunnels == 0 || in.tunnels > kMaxTunnels) {
    return "--tunnels must be 1 to " + std::to_string(kMaxTunnels);
  }
  if (in.ike_lifetime.count() <= 0) return "--ike-lifetime must be longer than 0";
  if (in.child_lifetime.count() <= 0) return "--child-lifetime must be longer than 0";
  if (!(in.jitter >= 0 && in.jitter < 1)) return "--jitter must be in [0, 1)";
  if (!(in.capacity_per_second > 0) || !std::isfinite(in.capacity_per_second)) {
    return "--capacity must be above 0 negotiations per second";
  }
  if (in.workers == 0 || in.workers > 4096) return "--workers must be 1 to 4096";
  if (in.max_queue == 0) return "--max-queue must be at least 1";
  if (in.storm && (in.storm->tunnels == 0 || !(in.storm->seconds > 0))) {
    return "--storm must be N/T with N >= 1 tunnels and T > 0 (e.g. 2000/1s)";
  }
  return {};
}

bool StormLifetime(std::chrono::seconds lifetime, double jitter) {
  return double(lifetime.count()) * (1 - jitter / 2) < double(kStormLifetime.count());
}

NegotiationRates SteadyRates(std::uint64_t tunnels, std::chrono::seconds ike_lifetime,
                             std::chrono::seconds child_lifetime, double jitter) {
  const double shrink = 1 - jitter / 2;
  const double n = double(tunnels);
  return {n / (Minutes(child_lifetime) * shrink), n / (Minutes(ike_lifetime) * shrink)};
}

StormResult StormDrain(const StormSpec& storm, double capacity_per_second, double steady_per_second,
                       std::uint32_t max_queue) {
  StormResult r;
  const double n = double(storm.tunnels);
  r.arrival_per_second = n / storm.seconds;
  r.spare_per_second = capacity_per_second - steady_per_second;
  if (r.spare_per_second <= 0) {
    r.drain_seconds = std::numeric_limits<double>::infinity();
    r.peak_queue_depth = n;
  } else {
    r.drain_seconds = std::max(storm.seconds, n / r.spare_per_second);
    r.peak_queue_depth = std::max(0.0, n - r.spare_per_second * storm.seconds);
  }
  r.exceeds_max_queue = r.peak_queue_depth > max_queue;
  r.overflows = std::max(0.0, r.peak_queue_depth - max_queue);
  return r;
}

MemoryEstimate EstimateMemory(std::uint64_t tunnels, std::uint32_t max_spi) {
  using sa::SpiPool;
  MemoryEstimate m;
  m.spi_slots = std::min<std::uint64_t>(
      {std::uint64_t(kSpisPerTunnel * double(tunnels)) + SpiPool::kQuarantine, max_spi,
       SpiPool::kMaxSlots});
  const auto chunks = [&](std::uint64_t per_chunk) {
    return (m.spi_slots + per_chunk - 1) / per_chunk;
  };
  m.spi_pool_bytes = chunks(SpiPool::kChunkSlots) * SpiPool::kChunkSlots * kSlotStateBytes +
                     chunks(SpiPool::kLiveChunkSlots) * SpiPool::kLiveChunkSlots * kLiveSpiBytes;
  m.total_bytes = tunnels * (m.ike_sa_bytes + m.child_sa_bytes) + m.spi_pool_bytes;
  return m;
}

std::uint32_t RecommendedMaxSpi(std::uint64_t tunnels) {
  const std::uint64_t p = RoundUpPowerOfTwo(double(tunnels) * kSpisPerTunnel * kSpiHeadroom);
  return static_cast<std::uint32_t>(std::clamp<std::uint64_t>(p, kMinMaxSpi, kMaxMaxSpi));
}

std::optional<std::uint32_t> SmallestQueueFor(double lambda, double mu, std::uint32_t c,
                                              double target) {
  const auto overflow = [&](std::uint64_t q) {
    return SolveMmck(lambda, mu, c, q + c).overflow_probability;
  };
  if (overflow(kMaxMaxQueue) >= target) return std::nullopt;
  // P_K falls as K grows: bisect for the first size below target.
  std::uint64_t lo = 1, hi = kMaxMaxQueue;
  if (overflow(lo) < target) return static_cast<std::uint32_t>(lo);
  while (hi - lo > 1) {  // overflow(lo) >= target > overflow(hi)
    const std::uint64_t mid = lo + (hi - lo) / 2;
    (overflow(mid) < target ? hi : lo) = mid;
  }
  return static_cast<std::uint32_t>(hi);
}

PlanResult MakePlan(const PlanInput& in) {
  PlanResult p;
  p.input = in;
  p.nominal = SteadyRates(in.tunnels, in.ike_lifetime, in.child_lifetime, 0);
  p.with_jitter = SteadyRates(in.tunnels, in.ike_lifetime, in.child_lifetime, in.jitter);
  const double mu = in.capacity_per_second / in.workers;
  p.queue = SolveMmck(p.with_jitter.per_second(), mu, in.workers,
                      std::uint64_t{in.max_queue} + in.workers);
  if (in.storm) {
    p.storm =
        StormDrain(*in.storm, in.capacity_per_second, p.with_jitter.per_second(), in.max_queue);
  }
  Recommendation& rec = p.recommended;
  rec.max_spi = RecommendedMaxSpi(in.tunnels);
  const double spis = double(in.tunnels) * kSpisPerTunnel * kSpiHeadroom;
  rec.max_spi_reason = Fixed(kSpisPerTunnel, 0) +
                       " SPIs per tunnel (1 inbound + 1 while a CHILD "
                       "rekey overlaps old and new SA) x " +
                       std::to_string(in.tunnels) + " tunnels x " + Fixed(kSpiHeadroom, 2) +
                       " headroom = " + Fixed(spis, 0) + ", rounded up to a power of two";
  if (spis > kMaxMaxSpi) {
    rec.max_spi_reason += "; that is past the pool's limit of " + std::to_string(kMaxMaxSpi) +
                          ": split the tunnels across gateways";
  } else if (spis < kMinMaxSpi) {
    rec.max_spi_reason += " and at least " + std::to_string(kMinMaxSpi) + ", the smallest pool";
  }
  rec.max_spi_reason +=
      " (new negotiations stop at max_spi - the rekey reserve; at 2.1 SPIs per tunnel the tunnels "
      "stay within that for any reserve up to half the pool)";
  RecommendLifetimes(in, rec);
  RecommendMaxQueue(p, rec);
  p.memory = EstimateMemory(in.tunnels, rec.max_spi);
  return p;
}

nlohmann::ordered_json PlanJson(const PlanResult& p) {
  const PlanInput& in = p.input;
  const double mean_factor = 1 - in.jitter / 2;
  // JSON has no infinity: a storm that never drains says null.
  const auto finite = [](double v) -> nlohmann::ordered_json {
    return std::isfinite(v) ? nlohmann::ordered_json(v) : nlohmann::ordered_json(nullptr);
  };
  nlohmann::ordered_json j = {
      {"tunnels", in.tunnels},
      {"ike_lifetime", ConfigDuration(in.ike_lifetime)},
      {"child_lifetime", ConfigDuration(in.child_lifetime)},
      {"child_negotiations_per_minute", p.nominal.child_per_minute},
      {"ike_negotiations_per_minute", p.nominal.ike_per_minute},
      {"negotiations_per_minute", p.nominal.per_minute()},
      {"with_jitter",
       {{"jitter", in.jitter},
        {"note",
         "rekeys happen at lifetime * (1 - U(0, jitter)): mean lifetimes are shorter by "
         "jitter/2 and the rates higher; the queue model uses these rates"},
        {"mean_ike_lifetime_seconds", double(in.ike_lifetime.count()) * mean_factor},
        {"mean_child_lifetime_seconds", double(in.child_lifetime.count()) * mean_factor},
        {"child_negotiations_per_minute", p.with_jitter.child_per_minute},
        {"ike_negotiations_per_minute", p.with_jitter.ike_per_minute},
        {"negotiations_per_minute", p.with_jitter.per_minute()}}},
      {"model", "M/M/c/K"},
      {"workers", in.workers},
      {"max_queue", in.max_queue},
      {"capacity_per_second", in.capacity_per_second},
      {"capacity_source", in.capacity_source},
      {"arrival_per_second", p.with_jitter.per_second()},
      {"queue_utilization", p.queue.utilization},
      {"overflow_probability", p.queue.overflow_probability},
      {"mean_queue_depth", p.queue.mean_queue_length},
      {"mean_wait_seconds", p.queue.mean_wait_seconds},
  };
  if (p.storm) {
    j["storm"] = {{"tunnels", in.storm->tunnels},
                  {"seconds", in.storm->seconds},
                  {"arrival_per_second", p.storm->arrival_per_second},
                  {"spare_capacity_per_second", p.storm->spare_per_second},
                  {"drain_seconds", finite(p.storm->drain_seconds)},
                  {"peak_queue_depth", p.storm->peak_queue_depth},
                  {"exceeds_max_queue", p.storm->exceeds_max_queue},
                  {"overflows", p.storm->overflows}};
  } else {
    j["storm"] = nullptr;
  }
  j["memory_bytes"] = p.memory.total_bytes;
  j["memory"] = {{"ike_sa_bytes", p.memory.ike_sa_bytes},
                 {"ike_sa_bytes_source", "estimate (spigot bench ike --pairs)"},
                 {"child_sa_bytes", p.memory.child_sa_bytes},
                 {"child_sa_bytes_source", "measured (spigot bench sad)"},
                 {"spi_pool_slots", p.memory.spi_slots},
                 {"spi_pool_bytes", p.memory.spi_pool_bytes}};
  const Recommendation& r = p.recommended;
  j["recommended"] = {{"max_spi", r.max_spi},
                      {"max_queue", r.max_queue},
                      {"ike_rekey_time", ConfigDuration(r.ike_rekey_time)},
                      {"child_rekey_time", ConfigDuration(r.child_rekey_time)},
                      {"reasons",
                       {{"max_spi", r.max_spi_reason},
                        {"max_queue", r.max_queue_reason},
                        {"ike_rekey_time", r.ike_rekey_time_reason},
                        {"child_rekey_time", r.child_rekey_time_reason}}}};
  return j;
}

std::string PlanText(const PlanResult& p) {
  const PlanInput& in = p.input;
  const double mean_factor = 1 - in.jitter / 2;
  std::string s;
  s += "spigot plan: " + std::to_string(in.tunnels) + " tunnels, IKE lifetime " +
       ConfigDuration(in.ike_lifetime) + ", CHILD lifetime " + ConfigDuration(in.child_lifetime) +
       "\n\n";
  s += "negotiations: " + Fixed(p.nominal.child_per_minute, 1) + " CHILD + " +
       Fixed(p.nominal.ike_per_minute, 1) + " IKE = " + Fixed(p.nominal.per_minute(), 1) +
       " per minute (tunnels / lifetime)\n";
  s += "  rekey jitter " + Percent(in.jitter) + ": rekeys come at lifetime x (1 - U(0, " +
       Fixed(in.jitter, 2) + ")), so the mean lifetimes are " +
       HumanDuration(double(in.ike_lifetime.count()) * mean_factor) + " IKE and " +
       HumanDuration(double(in.child_lifetime.count()) * mean_factor) + " CHILD\n" +
       "  and the rate " + Fixed(p.with_jitter.child_per_minute, 1) + " + " +
       Fixed(p.with_jitter.ike_per_minute, 1) + " = " + Fixed(p.with_jitter.per_minute(), 1) +
       " per minute (" + Fixed(p.with_jitter.per_second(), 3) + "/s); the model below uses it\n\n";
  s += "capacity: " + Fixed(in.capacity_per_second, 0) + " negotiations/s (" + in.capacity_source +
       ")\n";
  s += "queue (M/M/c/K, c = " + std::to_string(in.workers) + " workers, K = max_queue " +
       std::to_string(in.max_queue) + " + c): utilization " + Percent(p.queue.utilization) +
       ", overflow probability " + Probability(p.queue.overflow_probability) + ", mean wait " +
       HumanDuration(p.queue.mean_wait_seconds) + "\n";
  if (p.storm) {
    const StormResult& st = *p.storm;
    s += "storm: " + std::to_string(in.storm->tunnels) + " tunnels in " +
         HumanDuration(in.storm->seconds) + " (" + Fixed(st.arrival_per_second, 0) + "/s): ";
    if (!std::isfinite(st.drain_seconds)) {
      s += "never drains, the steady load uses all capacity";
    } else {
      s += "drains in " + HumanDuration(st.drain_seconds) + ", peak queue depth " +
           Fixed(st.peak_queue_depth, 0);
    }
    s += st.exceeds_max_queue
             ? ", EXCEEDS max_queue " + std::to_string(in.max_queue) + ": " +
                   Fixed(st.overflows, 0) + " negotiations refused (STATUS_IPSEC_QUEUE_OVERFLOW)\n"
             : ", fits max_queue " + std::to_string(in.max_queue) + "\n";
  }
  s += "memory: " + HumanBytes(double(p.memory.total_bytes)) + " = " + std::to_string(in.tunnels) +
       " x (" + std::to_string(p.memory.ike_sa_bytes) + " B per IKE SA with the rest of its tunnel + " +
       std::to_string(p.memory.child_sa_bytes) + " B per CHILD SA in the SA database; both "
       "measured) + " +
       HumanBytes(double(p.memory.spi_pool_bytes)) + " SPI pool\n\n";
  const Recommendation& r = p.recommended;
  s += "recommended:\n";
  s += "  [global]\n";
  s += "  max_spi = " + std::to_string(r.max_spi) + "\n    # " + r.max_spi_reason + "\n";
  s += "  max_queue = " + std::to_string(r.max_queue) + "\n    # " + r.max_queue_reason + "\n";
  s += "  [[connection]]\n";
  s += "  ike_rekey_time = \"" + ConfigDuration(r.ike_rekey_time) + "\"\n    # " +
       r.ike_rekey_time_reason + "\n";
  s += "  child_rekey_time = \"" + ConfigDuration(r.child_rekey_time) + "\"\n    # " +
       r.child_rekey_time_reason + "\n";
  return s;
}

}  // namespace spigot::ops
