// The text exposition format, version 0.0.4 (Prometheus' "Exposition formats" document): the
// cases its grammar spells out.
#include "spigot/control/exposition.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace spigot::control {
namespace {

using Type = Exposition::Type;

TEST(ExpositionTest, FamilyHeaderAndSamples) {
  Exposition e;
  e.Family("spigot_packets_dropped_total", Type::kCounter, "Packets dropped, by reason.");
  e.Sample({{"reason", "unknown_spi"}}, 3);
  e.Sample({{"reason", "replay"}}, 0);
  e.Family("spigot_child_sas", Type::kGauge, "CHILD SAs installed now.");
  e.Sample({}, 12);
  EXPECT_EQ(e.text(),
            "# HELP spigot_packets_dropped_total Packets dropped, by reason.\n"
            "# TYPE spigot_packets_dropped_total counter\n"
            "spigot_packets_dropped_total{reason=\"unknown_spi\"} 3\n"
            "spigot_packets_dropped_total{reason=\"replay\"} 0\n"
            "# HELP spigot_child_sas CHILD SAs installed now.\n"
            "# TYPE spigot_child_sas gauge\n"
            "spigot_child_sas 12\n");
  EXPECT_EQ(e.invalid(), 0u);
}

TEST(ExpositionTest, LabelValuesAndHelpAreEscaped) {
  // Label values: backslash, double quote and line feed; HELP: backslash and line feed only.
  EXPECT_EQ(Exposition::EscapeLabelValue(R"(a\b"c)" "\n" "d"), R"(a\\b\"c\nd)");
  EXPECT_EQ(Exposition::EscapeHelp(R"(say "x" \ y)" "\n" "z"), R"(say "x" \\ y\nz)");
  Exposition e;
  e.Family("spigot_connection_child_sas", Type::kGauge, "per\nconnection \\ count");
  e.Sample({{"connection", "site \"a\"\\b\nc"}, {"state", ""}}, 1);
  EXPECT_EQ(e.text(),
            "# HELP spigot_connection_child_sas per\\nconnection \\\\ count\n"
            "# TYPE spigot_connection_child_sas gauge\n"
            "spigot_connection_child_sas{connection=\"site \\\"a\\\"\\\\b\\nc\",state=\"\"} 1\n");
  // UTF-8 passes through untouched.
  EXPECT_EQ(Exposition::EscapeLabelValue("büro"), "büro");
}

TEST(ExpositionTest, Values) {
  EXPECT_EQ(Exposition::FormatValue(0), "0");
  EXPECT_EQ(Exposition::FormatValue(-7), "-7");
  // Past 2^53 the shortest form that reads back the same (a 64-bit counter near its end).
  EXPECT_EQ(Exposition::FormatValue(18446744073709551615.0), "18446744073709551616");
  EXPECT_EQ(Exposition::FormatValue(1e300), "1e+300");
  EXPECT_EQ(Exposition::FormatValue(9007199254740991.0), "9007199254740991");
  EXPECT_EQ(Exposition::FormatValue(0.005), "0.005");
  EXPECT_EQ(Exposition::FormatValue(1.0 / 3), "0.3333333333333333");
  EXPECT_EQ(Exposition::FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(Exposition::FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(Exposition::FormatValue(std::nan("")), "NaN");
}

TEST(ExpositionTest, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  engine::Histogram h{0.01, 0.1, 1};
  for (double v : {0.001, 0.01, 0.05, 0.5, 0.5, 3.0}) h.Observe(v);
  EXPECT_EQ(h.counts(), (std::vector<std::uint64_t>{2, 1, 2, 1}));  // 0.01 is in le="0.01"
  Exposition e;
  e.Family("spigot_ike_negotiation_seconds", Type::kHistogram, "Negotiation latency.");
  e.Histogram({{"connection", "site"}}, h);
  EXPECT_EQ(e.text(),
            "# HELP spigot_ike_negotiation_seconds Negotiation latency.\n"
            "# TYPE spigot_ike_negotiation_seconds histogram\n"
            "spigot_ike_negotiation_seconds_bucket{connection=\"site\",le=\"0.01\"} 2\n"
            "spigot_ike_negotiation_seconds_bucket{connection=\"site\",le=\"0.1\"} 3\n"
            "spigot_ike_negotiation_seconds_bucket{connection=\"site\",le=\"1\"} 5\n"
            "spigot_ike_negotiation_seconds_bucket{connection=\"site\",le=\"+Inf\"} 6\n"
            "spigot_ike_negotiation_seconds_sum{connection=\"site\"} 4.061\n"
            "spigot_ike_negotiation_seconds_count{connection=\"site\"} 6\n");
  // Empty: every bucket 0, +Inf 0, sum 0, count 0.
  Exposition empty;
  empty.Family("spigot_negotiation_queue_wait_seconds", Type::kHistogram, "Queue wait.");
  empty.Histogram({}, engine::Histogram{0.5});
  EXPECT_EQ(empty.text(),
            "# HELP spigot_negotiation_queue_wait_seconds Queue wait.\n"
            "# TYPE spigot_negotiation_queue_wait_seconds histogram\n"
            "spigot_negotiation_queue_wait_seconds_bucket{le=\"0.5\"} 0\n"
            "spigot_negotiation_queue_wait_seconds_bucket{le=\"+Inf\"} 0\n"
            "spigot_negotiation_queue_wait_seconds_sum 0\n"
            "spigot_negotiation_queue_wait_seconds_count 0\n");
}

TEST(ExpositionTest, NamesAreChecked) {
  EXPECT_TRUE(Exposition::ValidName("spigot_child_sas"));
  EXPECT_TRUE(Exposition::ValidName("job:rate5m"));
  EXPECT_FALSE(Exposition::ValidName(""));
  EXPECT_FALSE(Exposition::ValidName("9lives"));
  EXPECT_FALSE(Exposition::ValidName("spigot-sas"));
  EXPECT_TRUE(Exposition::ValidLabelName("reason"));
  EXPECT_FALSE(Exposition::ValidLabelName("__name__"));  // reserved
  EXPECT_FALSE(Exposition::ValidLabelName("a:b"));
  EXPECT_FALSE(Exposition::ValidLabelName("1a"));
}

#ifdef NDEBUG
TEST(ExpositionTest, InvalidNamesAreDroppedAndCountedInRelease) {
  Exposition e;
  e.Family("bad-name", Type::kGauge, "x");
  e.Sample({}, 1);  // no family open: dropped
  e.Family("spigot_ok", Type::kGauge, "x");
  e.Sample({{"bad-label", "v"}}, 1);
  EXPECT_EQ(e.invalid(), 3u);
  EXPECT_EQ(e.text(), "# HELP spigot_ok x\n# TYPE spigot_ok gauge\n");
}
#endif

TEST(ExpositionTest, AFamilyIsWrittenOnce) {
  Exposition e;
  e.Family("spigot_a", Type::kGauge, "A.");
  e.Sample({{"k", "1"}}, 1);
  e.Family("spigot_a", Type::kGauge, "A again.");  // still open: samples continue the family
  e.Sample({{"k", "2"}}, 2);
  e.Family("spigot_b", Type::kGauge, "B.");
  e.Family("spigot_a", Type::kGauge, "A.");  // closed: reopening would split it
  e.Sample({{"k", "3"}}, 3);
  EXPECT_EQ(e.text(),
            "# HELP spigot_a A.\n# TYPE spigot_a gauge\nspigot_a{k=\"1\"} 1\nspigot_a{k=\"2\"} 2\n"
            "# HELP spigot_b B.\n# TYPE spigot_b gauge\n");
  EXPECT_EQ(e.invalid(), 1u);
}

}  // namespace
}  // namespace spigot::control
