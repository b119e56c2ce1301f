#include "spigot/ops/plan.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "spigot/ops/format.h"

namespace spigot::ops {
namespace {

using namespace std::chrono_literals;

PlanInput Input(std::uint64_t tunnels, std::chrono::seconds ike, std::chrono::seconds child) {
  PlanInput in;
  in.tunnels = tunnels;
  in.ike_lifetime = ike;
  in.child_lifetime = child;
  in.capacity_per_second = 1000;
  in.capacity_source = "test";
  in.workers = 2;
  return in;
}

// Issue 6: "500 tunnels with a 30-minute CHILD lifetime is 16.7 CHILD negotiations per minute,
// with 5 minutes it is 100".
TEST(Plan, FiveHundredTunnels) {
  NegotiationRates r = SteadyRates(500, 8h, 30min, 0);
  EXPECT_NEAR(r.child_per_minute, 16.7, 0.05);
  EXPECT_NEAR(r.child_per_minute, 500.0 / 30, 1e-12);
  EXPECT_NEAR(r.ike_per_minute, 500.0 / 480, 1e-12);
  EXPECT_NEAR(r.per_minute(), 500.0 / 30 + 500.0 / 480, 1e-12);
  r = SteadyRates(500, 8h, 5min, 0);
  EXPECT_DOUBLE_EQ(r.child_per_minute, 100);
  EXPECT_NEAR(r.per_minute(), 100 + 500.0 / 480, 1e-12);
  EXPECT_NEAR(r.per_second(), (100 + 500.0 / 480) / 60, 1e-12);

  // The contract fields are tunnels / lifetime whatever the jitter.
  for (auto child : {30min, 5min}) {
    const PlanResult p = MakePlan(Input(500, 8h, child));
    const nlohmann::ordered_json j = PlanJson(p);
    EXPECT_NEAR(j["child_negotiations_per_minute"].get<double>(), 500.0 / (child.count()), 1e-12);
    EXPECT_NEAR(j["ike_negotiations_per_minute"].get<double>(), 500.0 / 480, 1e-12);
    EXPECT_NEAR(j["negotiations_per_minute"].get<double>(),
                j["child_negotiations_per_minute"].get<double>() +
                    j["ike_negotiations_per_minute"].get<double>(),
                1e-12);
  }
}

TEST(Plan, JitterShortensTheMeanLifetimeByHalfOfIt) {
  // What ike_sa.cc Jittered() does: lifetime * (1 - jitter * U(0, 1)).
  std::mt19937 rng(1);
  double sum = 0;
  constexpr int kDraws = 1'000'000;
  for (int i = 0; i < kDraws; ++i) sum += 1 - 0.1 * (rng() / 4294967296.0);
  EXPECT_NEAR(sum / kDraws, 0.95, 1e-3);

  const NegotiationRates r = SteadyRates(500, 8h, 30min, 0.1);
  EXPECT_NEAR(r.child_per_minute, 500 / (30 * 0.95), 1e-12);  // 17.54
  EXPECT_NEAR(r.ike_per_minute, 500 / (480 * 0.95), 1e-12);

  const PlanResult p = MakePlan(Input(500, 8h, 30min));
  EXPECT_EQ(p.input.jitter, kDefaultJitter);
  EXPECT_NEAR(p.nominal.child_per_minute, 500.0 / 30, 1e-12);
  EXPECT_NEAR(p.with_jitter.child_per_minute, 500 / (30 * 0.95), 1e-12);
  // The model runs on the jittered rate.
  EXPECT_NEAR(p.queue.utilization, p.with_jitter.per_second() / 1000, 1e-15);
  const nlohmann::ordered_json j = PlanJson(p);
  EXPECT_NEAR(j["with_jitter"]["mean_child_lifetime_seconds"].get<double>(), 1800 * 0.95, 1e-9);
  EXPECT_NEAR(j["with_jitter"]["negotiations_per_minute"].get<double>(), p.with_jitter.per_minute(),
              1e-12);
  EXPECT_NE(PlanText(p).find("rekey jitter 10"), std::string::npos);
}

TEST(Plan, StormDrainTime) {
  // 2000 tunnels in 1 s at 1000/s: 1000 served during the second, 1000 left; 2 s in all.
  StormResult s = StormDrain({2000, 1}, 1000, 0, 65536);
  EXPECT_DOUBLE_EQ(s.arrival_per_second, 2000);
  EXPECT_DOUBLE_EQ(s.drain_seconds, 2);
  EXPECT_DOUBLE_EQ(s.peak_queue_depth, 1000);
  EXPECT_FALSE(s.exceeds_max_queue);
  EXPECT_EQ(s.overflows, 0);
  // Spread wider than capacity needs: drains as it arrives.
  s = StormDrain({10000, 60}, 1000, 0, 65536);
  EXPECT_DOUBLE_EQ(s.drain_seconds, 60);
  EXPECT_DOUBLE_EQ(s.peak_queue_depth, 0);
  // The steady load takes its share first: 100/s capacity, 50/s steady, 50/s spare.
  s = StormDrain({10000, 60}, 100, 50, 65536);
  EXPECT_DOUBLE_EQ(s.spare_per_second, 50);
  EXPECT_DOUBLE_EQ(s.drain_seconds, 200);
  EXPECT_DOUBLE_EQ(s.peak_queue_depth, 7000);
  // Past max_queue: the excess is refused.
  s = StormDrain({100000, 1}, 1000, 0, 65536);
  EXPECT_TRUE(s.exceeds_max_queue);
  EXPECT_DOUBLE_EQ(s.overflows, 99000 - 65536);
  // No spare capacity: never drains.
  s = StormDrain({10, 1}, 100, 100, 65536);
  EXPECT_TRUE(std::isinf(s.drain_seconds));
  EXPECT_DOUBLE_EQ(s.peak_queue_depth, 10);
}

TEST(Plan, StormInPlanAndJson) {
  PlanInput in = Input(500, 8h, 1h);
  in.storm = StormSpec{100000, 1};
  const PlanResult p = MakePlan(in);
  ASSERT_TRUE(p.storm);
  EXPECT_TRUE(p.storm->exceeds_max_queue);
  // The recommended queue holds the peak (99,000 and a little steady load).
  EXPECT_EQ(p.recommended.max_queue, 131072u);
  EXPECT_NE(p.recommended.max_queue_reason.find("raised from 65536"), std::string::npos);
  const nlohmann::ordered_json j = PlanJson(p);
  EXPECT_TRUE(j["storm"]["exceeds_max_queue"].get<bool>());
  EXPECT_NEAR(j["storm"]["drain_seconds"].get<double>(),
              100000 / (1000 - p.with_jitter.per_second()), 1e-9);

  in.capacity_per_second = p.with_jitter.per_second();  // nothing spare
  EXPECT_TRUE(PlanJson(MakePlan(in))["storm"]["drain_seconds"].is_null());
  in.storm.reset();
  EXPECT_TRUE(PlanJson(MakePlan(in))["storm"].is_null());
}

TEST(Plan, RecommendedMaxSpi) {
  EXPECT_EQ(RecommendedMaxSpi(500), 2048u);  // 2 * 500 * 1.05 = 1050
  EXPECT_EQ(RecommendedMaxSpi(487), 1024u);  // 1022.7
  EXPECT_EQ(RecommendedMaxSpi(1), 256u);     // config's minimum
  EXPECT_EQ(RecommendedMaxSpi(400'000), 1u << 20);
  EXPECT_EQ(RecommendedMaxSpi(10'000'000), 1u << 24);  // the pool's limit
  const PlanResult p = MakePlan(Input(10'000'000, 8h, 1h));
  EXPECT_NE(p.recommended.max_spi_reason.find("split the tunnels"), std::string::npos);
}

TEST(Plan, LifetimesKeptWhenTheLoadIsFine) {
  const PlanResult p = MakePlan(Input(500, 8h, 30min));
  EXPECT_EQ(p.recommended.ike_rekey_time, 8h);
  EXPECT_EQ(p.recommended.child_rekey_time, 30min);
  EXPECT_EQ(p.recommended.max_queue, 65536u);
  EXPECT_NE(p.recommended.child_rekey_time_reason.find("30m as given"), std::string::npos);
  // 5 minutes without jitter is not under the 5-minute threshold, and 100/min is nothing for
  // 1000/s.
  PlanInput in = Input(500, 8h, 5min);
  in.jitter = 0;
  EXPECT_EQ(MakePlan(in).recommended.child_rekey_time, 5min);
}

TEST(Plan, StormLifetimeCountsTheJitter) {
  EXPECT_FALSE(StormLifetime(5min, 0));
  EXPECT_TRUE(StormLifetime(5min, 0.1));   // 4.75 min on average
  EXPECT_FALSE(StormLifetime(316s, 0.1));  // 300.2 s
  EXPECT_TRUE(StormLifetime(315s, 0.1));   // 299.25 s
  // With the default jitter, 500 tunnels at 5 minutes are a storm: 1h, as doctor would say.
  const PlanResult p = MakePlan(Input(500, 8h, 5min));
  EXPECT_EQ(p.recommended.child_rekey_time, 1h);
  EXPECT_NE(p.recommended.child_rekey_time_reason.find("5m rekeys every 4.8 min on average"),
            std::string::npos)
      << p.recommended.child_rekey_time_reason;
}

TEST(Plan, ShortLifetimesBecomeSafeOnes) {
  const PlanResult p = MakePlan(Input(500, 4min, 2min));
  EXPECT_EQ(p.recommended.ike_rekey_time, 8h);
  EXPECT_EQ(p.recommended.child_rekey_time, 1h);
  EXPECT_NE(p.recommended.child_rekey_time_reason.find("renegotiation-storm"), std::string::npos);
}

TEST(Plan, HeavyLoadLengthensLifetimesToHalfCapacity) {
  // 1,000,000 tunnels at 1 h / 8 h with 0.95 jitter: about 329 negotiations/s against 400/s.
  PlanInput in = Input(1'000'000, 8h, 1h);
  in.capacity_per_second = 400;
  const PlanResult p = MakePlan(in);
  EXPECT_GT(p.queue.utilization, kTargetUtilization);
  EXPECT_GT(p.recommended.child_rekey_time, 1h);
  EXPECT_GT(p.recommended.ike_rekey_time, 8h);
  EXPECT_EQ(p.recommended.child_rekey_time.count() % 3600, 0);
  const double rho = SteadyRates(in.tunnels, p.recommended.ike_rekey_time,
                                 p.recommended.child_rekey_time, in.jitter)
                         .per_second() /
                     400;
  EXPECT_LE(rho, kTargetUtilization);
  // And the queue that goes with it keeps overflows below the target.
  const MmckResult q = SolveMmck(rho * 400, 200, 2, std::uint64_t{p.recommended.max_queue} + 2);
  EXPECT_LT(q.overflow_probability, kTargetOverflowProbability);

  // Past what lifetimes can fix: capped, and the reason says to add capacity.
  in.capacity_per_second = 1;
  const PlanResult hopeless = MakePlan(in);
  EXPECT_EQ(hopeless.recommended.child_rekey_time, kLongestChildLifetime);
  EXPECT_NE(hopeless.recommended.child_rekey_time_reason.find("add workers"), std::string::npos);
}

TEST(Plan, SmallestQueueForTarget) {
  // M/M/1, rho = 1/2: P_K = (1/2)^(K+1) / (1 - (1/2)^(K+1)), first below 1e-6 at K = 19
  // (2^-20 / (1 - 2^-20) = 9.5e-7; K = 18 gives 1.9e-6), and K = 1 + max_queue.
  EXPECT_EQ(SmallestQueueFor(0.5, 1, 1, 1e-6), std::optional<std::uint32_t>(18));
  // rho = 1: P_K = 1 / (K + 1), below 1e-6 from K = 10^6 on.
  EXPECT_EQ(SmallestQueueFor(1.0, 1, 1, 1e-6), std::optional<std::uint32_t>(999'999));
  // rho > 1: at least (rho - 1) / rho is refused whatever the size.
  EXPECT_EQ(SmallestQueueFor(2.0, 1, 1, 1e-6), std::nullopt);
  EXPECT_EQ(SmallestQueueFor(1e-9, 1, 1, 1e-6), std::optional<std::uint32_t>(1));
}

TEST(Plan, Memory) {
  // 500 tunnels, max_spi 2048: 2048 slots (fewer than 1000 + the 4096 quarantine), one 64 Ki-slot
  // state chunk (512 KiB) and one 512 Ki-slot live chunk (2 MiB).
  const MemoryEstimate m = EstimateMemory(500, 2048);
  EXPECT_EQ(m.spi_slots, 2048u);
  EXPECT_DOUBLE_EQ(m.spi_pool_bytes, 512.0 * 1024 + 2.0 * 1024 * 1024);
  EXPECT_DOUBLE_EQ(m.total_bytes, 500 * (5800.0 + 608) + m.spi_pool_bytes);
  const MemoryEstimate big = EstimateMemory(1'000'000, 1u << 22);
  EXPECT_EQ(big.spi_slots, 2'000'000u + 4096);
  EXPECT_DOUBLE_EQ(big.spi_pool_bytes, 31 * 512.0 * 1024 + 4 * 2.0 * 1024 * 1024);
  EXPECT_DOUBLE_EQ(MakePlan(Input(500, 8h, 1h)).memory.total_bytes, m.total_bytes);
}

TEST(Plan, JsonContract) {
  PlanInput in = Input(500, 8h, 30min);
  in.storm = StormSpec{2000, 1};
  const nlohmann::ordered_json j = PlanJson(MakePlan(in));
  for (const char* key : {"child_negotiations_per_minute", "ike_negotiations_per_minute",
                          "negotiations_per_minute", "queue_utilization", "overflow_probability",
                          "memory_bytes", "capacity_per_second", "mean_wait_seconds"}) {
    ASSERT_TRUE(j.contains(key)) << key;
    EXPECT_TRUE(j[key].is_number()) << key;
  }
  EXPECT_EQ(j["model"], "M/M/c/K");
  const auto& rec = j["recommended"];
  EXPECT_TRUE(rec["max_spi"].is_number_integer());
  EXPECT_TRUE(rec["max_queue"].is_number_integer());
  EXPECT_EQ(rec["max_spi"], 2048);
  EXPECT_EQ(rec["ike_rekey_time"], "8h");
  EXPECT_EQ(rec["child_rekey_time"], "30m");
  for (const char* key : {"max_spi", "max_queue", "ike_rekey_time", "child_rekey_time"}) {
    EXPECT_TRUE(rec["reasons"][key].is_string()) << key;
    EXPECT_FALSE(rec["reasons"][key].get<std::string>().empty()) << key;
  }
  EXPECT_NEAR(j["storm"]["peak_queue_depth"].get<double>(),
              2000 - (1000 - MakePlan(in).with_jitter.per_second()), 1e-9);
}

TEST(Plan, Validate) {
  EXPECT_EQ(Validate(Input(500, 8h, 1h)), "");
  EXPECT_NE(Validate(Input(0, 8h, 1h)), "");
  EXPECT_NE(Validate(Input(500, 0s, 1h)), "");
  PlanInput in = Input(500, 8h, 1h);
  in.jitter = 1;
  EXPECT_NE(Validate(in), "");
  in = Input(500, 8h, 1h);
  in.storm = StormSpec{0, 1};
  EXPECT_NE(Validate(in), "");
}

TEST(Format, ConfigDurationSpellsLikeTheConfig) {
  EXPECT_EQ(ConfigDuration(8h), "8h");
  EXPECT_EQ(ConfigDuration(90min), "90m");
  EXPECT_EQ(ConfigDuration(90s), "90s");
  EXPECT_EQ(ConfigDuration(48h), "2d");
  EXPECT_EQ(ConfigDuration(0s), "0s");
  EXPECT_EQ(RoundUpPowerOfTwo(1050), 2048u);
  EXPECT_EQ(RoundUpPowerOfTwo(1024), 1024u);
  EXPECT_EQ(RoundUpPowerOfTwo(0.5), 1u);
}

}  // namespace
}  // namespace spigot::ops
