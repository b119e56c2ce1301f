// `spigot plan`: capacity planning before deployment (DESIGN.md cause 2, issue 6).
//
// From the number of tunnels, their lifetimes and the machine's negotiation capacity:
//   - the steady negotiation rate, CHILD and IKE SAs separately and summed: every tunnel
//     renegotiates each SA once per lifetime, so rate = tunnels / lifetime;
//   - rekey jitter: a rekey happens at lifetime * (1 - U(0, jitter)) (ike/ike_sa.cc Jittered),
//     so the mean lifetime is lifetime * (1 - jitter / 2) and the long-run rate is higher by
//     1 / (1 - jitter / 2). The contract fields (`*_negotiations_per_minute`) are the plain
//     tunnels / lifetime figures; `with_jitter` holds the jittered ones, which the queue model,
//     the storm and the recommendations use;
//   - the negotiation queue as an M/M/c/K queue (queue_model.h): c workers, K = max_queue + c,
//     a total capacity of R negotiations per second (R / c per worker), each negotiation (new
//     tunnel, CHILD rekey or IKE rekey) costed as one full handshake, which over-estimates rekeys;
//   - a login storm of N tunnels in T seconds on top of the steady load;
//   - memory for the SAs and the SPI pool;
//   - recommended max_spi, max_queue, ike_rekey_time, child_rekey_time, each with its reason.
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "spigot/ops/queue_model.h"

namespace spigot::ops {

// Resident memory of one CHILD SA (its inbound and outbound halves, keys, replay window and SPI
// slot) in the SA database: measured by `spigot bench sad --sas 1000000`, 608.0 bytes per SA on
// x86-64 (Release build at commit 787c8a1).
inline constexpr std::uint64_t kChildSaBytes = 608;
// Resident memory of the rest of a tunnel in the daemon: its IKE SA, the data-path halves of its
// CHILD SA, the gateway's records. Measured: `bench/storm.sh build 0 0 100000` held 100,000
// IKE SAs with their CHILD SAs in a peak RSS of 605.6 MiB (commit 5cb4785), 6,350 bytes per
// tunnel all told; less the SA database's share above, rounded up.
inline constexpr std::uint64_t kIkeSaBytes = 5800;

// CHILD or IKE SAs renegotiated more often than this, on average, are a renegotiation storm
// (`spigot doctor` flags them; see StormLifetime()).
inline constexpr std::chrono::seconds kStormLifetime = std::chrono::minutes(5);
// What lifetimes a storm is fixed with: the Windows defaults, 8 h main mode, 1 h quick mode.
inline constexpr std::chrono::seconds kSafeIkeLifetime = std::chrono::hours(8);
inline constexpr std::chrono::seconds kSafeChildLifetime = std::chrono::hours(1);
// Longest lifetimes the plan recommends; beyond them the answer is more workers or gateways.
inline constexpr std::chrono::seconds kLongestIkeLifetime = std::chrono::hours(168);
inline constexpr std::chrono::seconds kLongestChildLifetime = std::chrono::hours(24);
// Steady load the recommended lifetimes aim below: half the capacity is left for login storms,
// retransmissions and retries.
inline constexpr double kTargetUtilization = 0.5;
// Steady overflow probability the recommended max_queue aims below.
inline constexpr double kTargetOverflowProbability = 1e-6;
// SPI pool sizing: a tunnel holds 1 inbound SPI and a second one while a CHILD rekey overlaps
// the old and new SA (make-before-break), plus 5% headroom; rounded up to a power of two and
// kept within what config accepts.
inline constexpr double kSpisPerTunnel = 2;
inline constexpr double kSpiHeadroom = 1.05;
inline constexpr std::uint32_t kMinMaxSpi = 256;
inline constexpr std::uint32_t kMaxMaxSpi = std::uint32_t{1} << 24;  // sa::SpiPool::kMaxSlots
inline constexpr std::uint32_t kDefaultMaxQueue = 65536;
inline constexpr std::uint32_t kMaxMaxQueue = std::uint32_t{1} << 31;  // a power of two in u32
inline constexpr double kDefaultJitter = 0.10;  // ConnectionParams::rekey_jitter
// Far past one gateway (2^24 SPIs), and small enough that byte counts stay exact in 64 bits.
inline constexpr std::uint64_t kMaxTunnels = 1'000'000'000;

struct StormSpec {
  std::uint64_t tunnels = 0;  // N tunnels log in ...
  double seconds = 0;         // ... spread over T seconds
};

struct PlanInput {
  std::uint64_t tunnels = 0;
  std::chrono::seconds ike_lifetime{0};    // > 0
  std::chrono::seconds child_lifetime{0};  // > 0
  double jitter = kDefaultJitter;          // [0, 1)
  double capacity_per_second = 0;          // R: negotiations per second, all workers together
  std::string capacity_source;             // how R was obtained, for the output
  std::uint32_t workers = 1;               // c
  std::uint32_t max_queue = kDefaultMaxQueue;
  std::optional<StormSpec> storm;
};

// Empty if the input can be planned, else what is wrong with it.
std::string Validate(const PlanInput& in);

struct NegotiationRates {
  double child_per_minute = 0;
  double ike_per_minute = 0;
  double per_minute() const { return child_per_minute + ike_per_minute; }
  double per_second() const { return per_minute() / 60; }
};

// Whether a configured lifetime makes a renegotiation storm: with rekey jitter its mean,
// lifetime * (1 - jitter / 2), is under kStormLifetime. So 5m with 10% jitter (4.75 min on
// average) is one, as `spigot doctor` would find from the running gateway's rekey rate.
bool StormLifetime(std::chrono::seconds lifetime, double jitter);

// tunnels / lifetime per minute, each lifetime shortened on average by jitter / 2.
NegotiationRates SteadyRates(std::uint64_t tunnels, std::chrono::seconds ike_lifetime,
                             std::chrono::seconds child_lifetime, double jitter);

struct StormResult {
  double arrival_per_second = 0;  // N / T
  double spare_per_second = 0;    // R less the steady load: what drains the storm
  // max(T, N / spare): the storm's last negotiation is done. Infinite if spare <= 0.
  double drain_seconds = 0;
  // max(0, N - spare * T): the backlog when the last tunnel of the storm has arrived.
  double peak_queue_depth = 0;
  bool exceeds_max_queue = false;
  double overflows = 0;  // max(0, peak - max_queue): refused with STATUS_IPSEC_QUEUE_OVERFLOW
};

// A fluid approximation: arrivals at N / T for T seconds, served at the spare capacity.
StormResult StormDrain(const StormSpec& storm, double capacity_per_second, double steady_per_second,
                       std::uint32_t max_queue);

struct MemoryEstimate {
  std::uint64_t ike_sa_bytes = kIkeSaBytes;      // each, an estimate
  std::uint64_t child_sa_bytes = kChildSaBytes;  // each, measured
  std::uint64_t spi_slots = 0;                   // slots the SPI pool touches
  std::uint64_t spi_pool_bytes = 0;
  std::uint64_t total_bytes = 0;
};

// tunnels * (IKE SA + CHILD SA) + the SPI pool's storage for 2 SPIs per tunnel plus its reuse
// quarantine, in whole chunks (sa/spi_pool.h). The CHILD figure already holds a slot per SA, so
// the pool term counts those twice: the estimate errs high by 12 bytes per tunnel.
MemoryEstimate EstimateMemory(std::uint64_t tunnels, std::uint32_t max_spi);

struct Recommendation {
  std::uint32_t max_spi = 0;
  std::uint32_t max_queue = 0;
  std::chrono::seconds ike_rekey_time{0};
  std::chrono::seconds child_rekey_time{0};
  std::string max_spi_reason, max_queue_reason, ike_rekey_time_reason, child_rekey_time_reason;
};

// The pool for `tunnels`: kSpisPerTunnel * kSpiHeadroom per tunnel, a power of two in
// [kMinMaxSpi, kMaxMaxSpi].
std::uint32_t RecommendedMaxSpi(std::uint64_t tunnels);

// The smallest max_queue whose steady overflow probability is below `target`, or nullopt when
// none is (utilization >= 1: the queue fills whatever its size).
std::optional<std::uint32_t> SmallestQueueFor(double lambda, double mu, std::uint32_t c,
                                              double target);

struct PlanResult {
  PlanInput input;
  NegotiationRates nominal;      // tunnels / lifetime
  NegotiationRates with_jitter;  // tunnels / (lifetime (1 - jitter / 2)): what the model uses
  MmckResult queue;
  std::optional<StormResult> storm;
  MemoryEstimate memory;
  Recommendation recommended;
};

// Requires Validate(in) to be empty.
PlanResult MakePlan(const PlanInput& in);

// The `spigot plan --json` object (DESIGN.md, machine-readable output).
nlohmann::ordered_json PlanJson(const PlanResult& plan);
// The same for people.
std::string PlanText(const PlanResult& plan);

}  // namespace spigot::ops
