#include "spigot/app/ops_commands.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <thread>

#include "spigot/app/bench_ike.h"
#include "spigot/config/duration.h"
#include "spigot/control/control_client.h"
#include "spigot/ops/doctor.h"
#include "spigot/ops/format.h"
#include "spigot/ops/plan.h"
#include "spigot/ops/simulation.h"

namespace spigot::app {
namespace {

// How long `spigot plan` measures the handshake rate when --capacity is not given.
constexpr double kPlanBenchSeconds = 1.0;

bool ParseLifetime(const char* option, const std::string& text, std::chrono::seconds& out) {
  std::string error;
  if (!config::ParseDuration(text, out, error)) {
    std::fprintf(stderr, "spigot plan: %s: %s\n", option, error.c_str());
    return false;
  }
  return true;
}

// "N/T": N tunnels, T a duration ("1s", "60s", "5m", or plain seconds).
bool ParseStorm(const std::string& text, ops::StormSpec& out) {
  const std::size_t slash = text.find('/');
  std::uint64_t n = 0;
  std::chrono::seconds t{0};
  std::string error;
  const char* end = text.data() + (slash == std::string::npos ? text.size() : slash);
  const auto [ptr, ec] = std::from_chars(text.data(), end, n);
  if (slash == std::string::npos || ec != std::errc() || ptr != end || n == 0 ||
      !config::ParseDuration(text.substr(slash + 1), t, error) || t.count() == 0) {
    std::fprintf(stderr,
                 "spigot plan: --storm: \"%s\" is not N/T (N tunnels >= 1 arriving within T > 0, "
                 "like 2000/1s or 10000/60s)\n",
                 text.c_str());
    return false;
  }
  out = {n, double(t.count())};
  return true;
}

bool WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (out) out << text;
  if (out) out.close();
  if (!out) {
    std::fprintf(stderr, "spigot plan: %s: cannot write: %s\n", path.c_str(), std::strerror(errno));
    return false;
  }
  return true;
}

}  // namespace

int RunDoctor(const DoctorOptions& options) {
  ops::Counters counters;
  std::string error;
  std::string source;
  if (!options.snapshot.empty()) {
    if (!ops::LoadSnapshot(options.snapshot, counters, error)) {
      std::fprintf(stderr, "spigot doctor: %s\n", error.c_str());
      return 1;
    }
    source = "snapshot " + options.snapshot;
  } else {
    const control::RequestResult r =
        control::ControlClient::Request(options.socket, {{"command", "stats"}});
    if (!r.ok) {
      std::fprintf(stderr, "spigot doctor: %s\n", r.error.c_str());
      return r.response.is_object() && r.response.contains("error") ? 1 : 2;
    }
    if (!ops::ParseCounters(r.response, counters, error)) {
      std::fprintf(stderr, "spigot doctor: the daemon's stats: %s\n", error.c_str());
      return 1;
    }
    source = "the daemon at " + options.socket;
  }
  const std::vector<ops::Finding> findings = ops::Diagnose(counters);
  if (options.json) {
    std::cout << ops::FindingsJson(findings).dump(2) << "\n";
  } else {
    std::cout << "spigot doctor (counters from " << source
              << "): " << ops::FindingsText(counters, findings);
  }
  return 0;
}

int RunPlan(const PlanOptions& options) {
  ops::PlanInput in;
  in.tunnels = options.tunnels;
  in.jitter = options.jitter;
  in.max_queue = options.max_queue;
  in.workers =
      options.workers != 0 ? options.workers : std::max(1u, std::thread::hardware_concurrency());
  if (!ParseLifetime("--ike-lifetime", options.ike_lifetime, in.ike_lifetime) ||
      !ParseLifetime("--child-lifetime", options.child_lifetime, in.child_lifetime)) {
    return 1;
  }
  if (!options.storm.empty()) {
    ops::StormSpec storm;
    if (!ParseStorm(options.storm, storm)) return 1;
    in.storm = storm;
  }
  if (options.capacity > 0) {
    in.capacity_per_second = options.capacity;
    in.capacity_source = "given with --capacity";
  } else {
    in.capacity_per_second = 1;  // placeholder, so Validate() checks the rest before measuring
  }
  if (const std::string error = ops::Validate(in); !error.empty()) {
    std::fprintf(stderr, "spigot plan: %s\n", error.c_str());
    return 1;
  }
  if (options.capacity <= 0) {
    if (!options.json) {
      std::fprintf(stderr,
                   "spigot plan: no --capacity: measuring with `spigot bench ike` for %.0f s...\n",
                   kPlanBenchSeconds);
    }
    const ike::HandshakeMeasurement bench = MeasureIkeHandshakes(kPlanBenchSeconds);
    if (!bench.ok) {
      std::fprintf(stderr, "spigot plan: measuring capacity: %s\n", bench.error.c_str());
      return 1;
    }
    in.capacity_per_second = bench.handshakes_per_second * in.workers;
    in.capacity_source =
        "measured by `spigot bench ike`: " + ops::Fixed(bench.handshakes_per_second, 0) +
        " handshakes/s on one thread x " + std::to_string(in.workers) + " workers";
  }
  const ops::PlanResult plan = ops::MakePlan(in);
  nlohmann::ordered_json json = ops::PlanJson(plan);
  std::string text = ops::PlanText(plan);

  if (!options.svg.empty()) {
    const ops::SimulationInput sim = ops::SimulationFor(plan);
    if (ops::ExpectedEvents(sim) > ops::kMaxSimulatedEvents) {
      std::fprintf(stderr,
                   "spigot plan: --svg: a day at this load is about %.0f events, more than the "
                   "%.0f the simulation runs\n",
                   ops::ExpectedEvents(sim), ops::kMaxSimulatedEvents);
      return 1;
    }
    const ops::SimulationResult day = ops::Simulate(sim);
    std::string subtitle = "M/M/c/K engine: " + std::to_string(in.tunnels) + " tunnels (" +
                           ops::ConfigDuration(in.ike_lifetime) + " IKE, " +
                           ops::ConfigDuration(in.child_lifetime) + " CHILD, " +
                           ops::Fixed(plan.with_jitter.per_minute(), 1) +
                           " negotiations/min), c = " + std::to_string(in.workers) +
                           " workers, R = " + ops::Fixed(in.capacity_per_second, 0) + "/s";
    if (in.storm) subtitle += ", storms at 08:00 and 17:00";
    if (!WriteFile(options.svg, ops::RenderSvg(sim, day, subtitle))) return 1;
    nlohmann::ordered_json storms = nlohmann::ordered_json::array();
    for (const ops::SimStorm& s : sim.storms) storms.push_back(s.start_seconds);
    json["simulation"] = {{"svg", options.svg},
                          {"seed", sim.seed},
                          {"storm_start_seconds", storms},
                          {"arrivals", day.arrivals},
                          {"overflows", day.overflows},
                          {"peak_queue_depth", day.peak},
                          {"peak_at_seconds", day.peak_at_seconds}};
    text += "\nsimulated day (seed " + std::to_string(sim.seed) +
            "): " + std::to_string(day.arrivals) + " negotiations, peak queue depth " +
            std::to_string(day.peak) + ", " + std::to_string(day.overflows) +
            " overflows; chart written to " + options.svg + "\n";
  }
  if (options.json) {
    std::cout << json.dump(2) << "\n";
  } else {
    std::cout << text;
  }
  return 0;
}

}  // namespace spigot::app
