// `spigot doctor` and `spigot plan`: the operator tools of issue 6, over ops/ (doctor.h, plan.h,
// simulation.h). Exit codes: 0 done (findings or not), 1 bad input (snapshot, options, files),
// 2 the daemon could not be reached.
#pragma once

#include <cstdint>
#include <string>

namespace spigot::app {

struct DoctorOptions {
  std::string socket;    // live counters from this control socket ...
  std::string snapshot;  // ... unless a snapshot file is given
  bool json = false;
};
int RunDoctor(const DoctorOptions& options);

struct PlanOptions {
  std::uint64_t tunnels = 0;
  std::string ike_lifetime = "8h";
  std::string child_lifetime = "1h";
  std::string storm;          // "N/T", e.g. "2000/1s"; empty: none
  double capacity = 0;        // negotiations/s, all workers; 0: measure with `spigot bench ike`
  std::uint32_t workers = 0;  // 0: std::thread::hardware_concurrency()
  std::uint32_t max_queue = 65536;
  double jitter = 0.1;
  bool json = false;
  std::string svg;  // chart file; empty: none
};
int RunPlan(const PlanOptions& options);

}  // namespace spigot::app
