// A day of the negotiation queue, simulated event by event, and its chart (`spigot plan --svg`).
//
// The same engine as the plan's M/M/c/K model, with time-varying arrivals: negotiations arrive
// as a Poisson stream at the steady rate, plus N / T per second during each storm window; c
// workers serve them with exponential service times at mu = R / c each; at most max_queue wait,
// and an arrival that finds the queue full is refused and counted (STATUS_IPSEC_QUEUE_OVERFLOW).
// The planned storm (--storm N/T) comes twice, at 08:00 and 17:00, the start and the end of an
// office day: a choice made for the picture, not a measurement. The queue starts empty at 00:00.
//
// Exact, not approximated: between events the state is constant, and when the arrival rate
// changes (a storm starts or ends) the pending exponential draw is discarded and redrawn at the
// new rate, which memorylessness permits. The random numbers come from std::mt19937 with a fixed
// seed and a hand-written uniform and exponential (the std:: distributions differ between
// standard libraries), so a given input always gives the same day.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "spigot/ops/plan.h"

namespace spigot::ops {

inline constexpr std::uint32_t kSimulationSeed = 20240601;
inline constexpr double kDaySeconds = 86400;
inline constexpr double kSampleSeconds = 60;
inline constexpr double kStormStartHours[] = {8, 17};
// About 10 s of simulation on one core (some 50 ns an event); beyond it the chart is refused,
// not truncated.
inline constexpr double kMaxSimulatedEvents = 2e8;

struct SimStorm {
  double start_seconds = 0;
  std::uint64_t tunnels = 0;
  double seconds = 0;
};

struct SimulationInput {
  double arrival_per_second = 0;  // steady
  std::vector<SimStorm> storms;
  std::uint32_t workers = 1;      // c
  double service_per_second = 0;  // mu, per worker
  std::uint64_t max_queue = 0;    // waiting places
  double duration_seconds = kDaySeconds;
  double sample_seconds = kSampleSeconds;
  std::uint32_t seed = kSimulationSeed;
};

struct SimulationResult {
  // Per sample interval [i * sample, (i + 1) * sample): the most negotiations waiting at once
  // (in service not counted). A per-minute maximum, not a reading at the minute mark, so that a
  // storm drained within seconds still shows.
  std::vector<std::uint64_t> peak_depth;
  std::vector<std::uint64_t> overflows_by_interval;  // arrivals refused in each interval
  std::uint64_t arrivals = 0;
  std::uint64_t admitted = 0;
  std::uint64_t overflows = 0;
  std::uint64_t completed = 0;
  std::uint64_t peak = 0;  // the day's most negotiations waiting at once
  double peak_at_seconds = 0;
};

// The planned storm at each of kStormStartHours.
std::vector<SimStorm> DailyStorms(const StormSpec& storm);
// The plan's engine: jittered steady rate, R / c per worker, the given max_queue, daily storms.
SimulationInput SimulationFor(const PlanResult& plan);
// Arrivals plus completions expected: what the simulation's run time goes with.
double ExpectedEvents(const SimulationInput& in);

// Requires workers >= 1, service_per_second > 0, sample_seconds > 0.
SimulationResult Simulate(const SimulationInput& in);

// The chart: per-minute peak queue depth over the day (log scale), the max_queue overflow line in
// red with a red mark at each minute that refused arrivals, storm windows shaded, hours and depths
// on the axes. `subtitle` says what was planned.
std::string RenderSvg(const SimulationInput& in, const SimulationResult& result,
                      const std::string& subtitle);

}  // namespace spigot::ops
