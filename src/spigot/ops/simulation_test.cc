#include "spigot/ops/simulation.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "spigot/ops/queue_model.h"

namespace spigot::ops {
namespace {

SimulationInput Busy() {
  SimulationInput in;
  in.arrival_per_second = 5;
  in.storms = DailyStorms({2000, 1});
  in.workers = 2;
  in.service_per_second = 50;
  in.max_queue = 500;
  return in;
}

TEST(Simulation, ReproducibleWithTheFixedSeed) {
  const SimulationResult a = Simulate(Busy());
  const SimulationResult b = Simulate(Busy());
  EXPECT_EQ(a.peak_depth, b.peak_depth);
  EXPECT_EQ(a.arrivals, b.arrivals);
  EXPECT_EQ(a.overflows, b.overflows);
  EXPECT_EQ(a.peak_at_seconds, b.peak_at_seconds);
  EXPECT_EQ(a.peak_depth.size(), 1440u);
  EXPECT_EQ(Busy().seed, kSimulationSeed);

  SimulationInput other = Busy();
  other.seed = kSimulationSeed + 1;
  EXPECT_NE(Simulate(other).arrivals, a.arrivals);
  // Pinned: std::mt19937 is fully specified and the uniform and exponential are ours (not the
  // std:: distributions, which differ between standard libraries): only a libm whose log rounds
  // differently could change this day.
  EXPECT_EQ(a.arrivals, 435760u);
  EXPECT_EQ(a.overflows, 2769u);
}

TEST(Simulation, QueueNeverExceedsItsBound) {
  // Storms of 2000 in 1 s against 100/s and 500 places: the queue fills and overflows.
  const SimulationInput in = Busy();
  const SimulationResult r = Simulate(in);
  EXPECT_EQ(r.peak, in.max_queue);
  EXPECT_LE(*std::max_element(r.peak_depth.begin(), r.peak_depth.end()), in.max_queue);
  EXPECT_GT(r.overflows, 2 * 1000u);  // about 2000 - 100 - 500 refused per storm
  EXPECT_LT(r.overflows, 2 * 1600u);
  EXPECT_EQ(r.arrivals, r.admitted + r.overflows);
  std::uint64_t by_interval = 0;
  for (std::uint64_t n : r.overflows_by_interval) by_interval += n;
  EXPECT_EQ(by_interval, r.overflows);
  EXPECT_GT(r.overflows_by_interval[8 * 60], 0u);
  EXPECT_EQ(r.overflows_by_interval[12 * 60], 0u);
  EXPECT_LE(r.admitted - r.completed, in.max_queue + in.workers);
  // The storms are where the queue is: 08:00 and 17:00, quiet in between.
  EXPECT_EQ(r.peak_depth[8 * 60], in.max_queue);
  EXPECT_EQ(r.peak_depth[17 * 60], in.max_queue);
  EXPECT_LT(r.peak_depth[12 * 60], 50u);
  EXPECT_GE(r.peak_at_seconds, 8 * 3600.0);
  EXPECT_LT(r.peak_at_seconds, 8 * 3600.0 + 60);
}

TEST(Simulation, AgreesWithTheModelInSteadyState) {
  // c = 2, mu = 1, lambda = 1.8 (rho = 0.9), 8 waiting places: M/M/2/10.
  SimulationInput in;
  in.arrival_per_second = 1.8;
  in.workers = 2;
  in.service_per_second = 1;
  in.max_queue = 8;
  in.duration_seconds = 2e6;
  in.sample_seconds = 1000;
  const SimulationResult r = Simulate(in);
  const MmckResult m = SolveMmck(1.8, 1, 2, 10);
  const double refused = double(r.overflows) / double(r.arrivals);
  EXPECT_NEAR(refused, m.overflow_probability, 0.05 * m.overflow_probability);
  EXPECT_NEAR(double(r.arrivals), 1.8 * 2e6, 5 * std::sqrt(1.8 * 2e6));
}

TEST(Simulation, StormAloneDrainsAsPlanned) {
  // No steady load; 2000 in 1 s at 1000/s: about 1000 wait at the end of the storm.
  SimulationInput in;
  in.storms = DailyStorms({2000, 1});
  in.workers = 4;
  in.service_per_second = 250;
  in.max_queue = 65536;
  const SimulationResult r = Simulate(in);
  EXPECT_EQ(r.overflows, 0u);
  EXPECT_NEAR(double(r.peak), 1000, 150);
  EXPECT_EQ(r.completed, r.arrivals);
  EXPECT_EQ(r.peak_depth[0], 0u);
  EXPECT_EQ(r.peak_depth[8 * 60 + 1], 0u);  // drained within the minute
}

TEST(Simulation, PlanParameters) {
  PlanInput in;
  in.tunnels = 500;
  in.ike_lifetime = std::chrono::hours(8);
  in.child_lifetime = std::chrono::minutes(30);
  in.capacity_per_second = 1000;
  in.workers = 2;
  in.storm = StormSpec{2000, 1};
  const SimulationInput sim = SimulationFor(MakePlan(in));
  EXPECT_NEAR(sim.arrival_per_second, MakePlan(in).with_jitter.per_second(), 1e-15);
  EXPECT_EQ(sim.service_per_second, 500);
  EXPECT_EQ(sim.max_queue, 65536u);
  ASSERT_EQ(sim.storms.size(), 2u);
  EXPECT_EQ(sim.storms[0].start_seconds, 8 * 3600);
  EXPECT_EQ(sim.storms[1].start_seconds, 17 * 3600);
  EXPECT_NEAR(ExpectedEvents(sim), 2 * (sim.arrival_per_second * 86400 + 4000), 1e-6);
}

TEST(Simulation, SvgHasTheCurveTheLimitAndTheAxes) {
  const SimulationInput in = Busy();
  const std::string svg = RenderSvg(in, Simulate(in), "test <plan> & more");
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_EQ(svg.substr(svg.size() - 7), "</svg>\n");
  EXPECT_NE(svg.find("test &lt;plan&gt; &amp; more"), std::string::npos);
  EXPECT_NE(svg.find("<polyline"), std::string::npos);
  EXPECT_NE(svg.find("stroke=\"#d00000\""), std::string::npos);  // the overflow line, red
  EXPECT_NE(svg.find("max_queue 500"), std::string::npos);
  EXPECT_NE(svg.find(">08:00<"), std::string::npos);
  EXPECT_NE(svg.find(">24:00<"), std::string::npos);
  EXPECT_NE(svg.find(">100<"), std::string::npos);
  EXPECT_NE(svg.find("storm 2000/1s at 08:00"), std::string::npos);
  EXPECT_NE(svg.find("a minute with overflows"), std::string::npos);
  // One point per minute.
  const std::size_t begin = svg.find("points=\"");
  const std::size_t end = svg.find('"', begin + 8);
  const std::string points = svg.substr(begin + 8, end - begin - 8);
  EXPECT_EQ(std::count(points.begin(), points.end(), ','), 1440);
  // Every element closed: as many '<' as '>'.
  EXPECT_EQ(std::count(svg.begin(), svg.end(), '<'), std::count(svg.begin(), svg.end(), '>'));
}

}  // namespace
}  // namespace spigot::ops
