#include "spigot/config/duration.h"

#include <gtest/gtest.h>

namespace spigot::config {
namespace {

using std::chrono::seconds;

TEST(DurationTest, ParsesUnits) {
  const struct {
    const char* text;
    long long seconds;
  } cases[] = {
      {"90s", 90}, {"30m", 1800}, {"4h", 14400}, {"1d", 86400}, {"3600", 3600},
      {"0", 0},    {"0s", 0},     {" 2h ", 7200}, {"3650d", 3650LL * 86400},
  };
  for (const auto& c : cases) {
    seconds d{};
    std::string error;
    ASSERT_TRUE(ParseDuration(c.text, d, error)) << c.text << ": " << error;
    EXPECT_EQ(d.count(), c.seconds) << c.text;
  }
}

TEST(DurationTest, RejectsMalformed) {
  for (const char* text : {"", "h", "4x", "-5s", "+5s", "4 h", "1.5h", "4hh", "h4", "4H", "1w",
                           "3651d", "99999999999999999999", "9223372036854775807d"}) {
    seconds d{};
    std::string error;
    EXPECT_FALSE(ParseDuration(text, d, error)) << text;
    EXPECT_NE(error.find('"'), std::string::npos) << text << ": " << error;
  }
}

TEST(DurationTest, FormatsShortestExactUnit) {
  EXPECT_EQ(FormatDuration(seconds{14400}), "4h");
  EXPECT_EQ(FormatDuration(seconds{90}), "90s");
  EXPECT_EQ(FormatDuration(seconds{5400}), "90m");
  EXPECT_EQ(FormatDuration(seconds{86400}), "1d");
  EXPECT_EQ(FormatDuration(seconds{0}), "0s");
}

}  // namespace
}  // namespace spigot::config
