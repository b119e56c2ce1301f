#include "spigot/config/traffic_selector.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace spigot::config {
namespace {

struct GoodCase {
  const char* text;
  AddressFamily family;
  const char* canonical;  // ToString() after parsing: host bits cleared
};

TEST(TrafficSelectorTest, ParsesCidrAndBareAddresses) {
  const GoodCase cases[] = {
      {"203.0.113.0/24", AddressFamily::kIpv4, "203.0.113.0/24"},
      {"0.0.0.0/0", AddressFamily::kIpv4, "0.0.0.0/0"},
      {"192.0.2.7", AddressFamily::kIpv4, "192.0.2.7/32"},
      {"  10.1.2.3/8 ", AddressFamily::kIpv4, "10.0.0.0/8"},  // host bits cleared
      {"198.51.100.77/30", AddressFamily::kIpv4, "198.51.100.76/30"},
      {"2001:db8::/32", AddressFamily::kIpv6, "2001:db8::/32"},
      {"::/0", AddressFamily::kIpv6, "::/0"},
      {"::1", AddressFamily::kIpv6, "::1/128"},
      {"2001:db8:1234:5678::1/61", AddressFamily::kIpv6, "2001:db8:1234:5678::/61"},
      {"2001:db8:ffff::/33", AddressFamily::kIpv6, "2001:db8:8000::/33"},
  };
  for (const GoodCase& c : cases) {
    TrafficSelector ts;
    std::string error;
    ASSERT_TRUE(ParseTrafficSelector(c.text, ts, error)) << c.text << ": " << error;
    EXPECT_EQ(ts.family, c.family) << c.text;
    EXPECT_EQ(ts.ToString(), c.canonical) << c.text;
  }
}

TEST(TrafficSelectorTest, NetworkBytesAndPrefix) {
  TrafficSelector ts;
  std::string error;
  ASSERT_TRUE(ParseTrafficSelector("10.255.3.4/12", ts, error));
  EXPECT_EQ(ts.prefix_len, 12);
  EXPECT_EQ(ts.address_length(), 4u);
  const std::array<std::uint8_t, 16> expected = {10, 240};
  EXPECT_EQ(ts.network, expected);

  ASSERT_TRUE(ParseTrafficSelector("fe80::1:2/64", ts, error));
  EXPECT_EQ(ts.prefix_len, 64);
  EXPECT_EQ(ts.address_length(), 16u);
  const std::array<std::uint8_t, 16> link_local = {0xfe, 0x80};
  EXPECT_EQ(ts.network, link_local);
}

TEST(TrafficSelectorTest, RejectsBadSyntax) {
  for (const char* text : {"", "10.0.0.0/", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/8x",
                           "10.0.0/8", "300.0.0.0/8", "2001:db8::/129", "2001:db8:::/32",
                           "example.com/24", "10.0.0.0/8/8", "10.0.0.0 /8", "%any"}) {
    TrafficSelector ts;
    std::string error;
    EXPECT_FALSE(ParseTrafficSelector(text, ts, error)) << text;
    EXPECT_FALSE(error.empty()) << text;
  }
}

TEST(TrafficSelectorTest, ParsesLists) {
  std::vector<TrafficSelector> list;
  std::string error;
  ASSERT_TRUE(ParseTrafficSelectors("10.0.0.0/8, 2001:db8::/32 ,192.0.2.1", list, error));
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].ToString(), "10.0.0.0/8");
  EXPECT_EQ(list[1].ToString(), "2001:db8::/32");
  EXPECT_EQ(list[2].ToString(), "192.0.2.1/32");

  ASSERT_TRUE(ParseTrafficSelectors("  ", list, error));
  EXPECT_TRUE(list.empty());

  EXPECT_FALSE(ParseTrafficSelectors("10.0.0.0/8,,10.1.0.0/16", list, error));
  EXPECT_FALSE(ParseTrafficSelectors("10.0.0.0/8,", list, error));
  EXPECT_FALSE(ParseTrafficSelectors("10.0.0.0/8, 10.1.0.0/99", list, error));
  EXPECT_NE(error.find("10.1.0.0/99"), std::string::npos) << error;
}

}  // namespace
}  // namespace spigot::config
