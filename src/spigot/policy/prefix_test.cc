#include "spigot/policy/prefix.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <array>
#include <string>

namespace spigot::policy {
namespace {

std::array<std::uint8_t, 4> V4(const char* text) {
  std::array<std::uint8_t, 4> a{};
  EXPECT_EQ(inet_pton(AF_INET, text, a.data()), 1) << text;
  return a;
}

std::array<std::uint8_t, 16> V6(const char* text) {
  std::array<std::uint8_t, 16> a{};
  EXPECT_EQ(inet_pton(AF_INET6, text, a.data()), 1) << text;
  return a;
}

TEST(PrefixTest, ParsesAndPrints) {
  const struct {
    const char* text;
    const char* canonical;
    Family family;
    int len;
  } kCases[] = {
      {"203.0.113.0/24", "203.0.113.0/24", Family::kIpv4, 24},
      {"10.1.2.3/8", "10.0.0.0/8", Family::kIpv4, 8},  // host bits cleared
      {"0.0.0.0/0", "0.0.0.0/0", Family::kIpv4, 0},
      {"255.255.255.255/0", "0.0.0.0/0", Family::kIpv4, 0},
      {"192.0.2.1", "192.0.2.1/32", Family::kIpv4, 32},
      {"10.255.255.255/31", "10.255.255.254/31", Family::kIpv4, 31},
      {"2001:db8::/32", "2001:db8::/32", Family::kIpv6, 32},
      {"2001:db8:ffff::1/33", "2001:db8:8000::/33", Family::kIpv6, 33},
      {"::/0", "::/0", Family::kIpv6, 0},
      {"::1", "::1/128", Family::kIpv6, 128},
      {"fe80::1:2:3:4/127", "fe80::1:2:3:4/127", Family::kIpv6, 127},
      {"::ffff:192.0.2.1/128", "::ffff:192.0.2.1/128", Family::kIpv6, 128},
  };
  for (const auto& c : kCases) {
    const auto p = Prefix::Parse(c.text);
    ASSERT_TRUE(p) << c.text;
    EXPECT_EQ(p->family, c.family) << c.text;
    EXPECT_EQ(p->prefix_len, c.len) << c.text;
    EXPECT_EQ(p->ToString(), c.canonical) << c.text;
  }
}

TEST(PrefixTest, RejectsMalformed) {
  for (const char* text :
       {"", "/", "/24", "10.0.0.0/", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/08",
        "10.0.0.0/8 ", " 10.0.0.0/8", "10.0.0/8", "10.0.0.0.0/8", "256.0.0.0/8", "10.0.0.0/8/8",
        "2001:db8::/129", "2001:db8::/1000", "2001:db8:::/32", "example.com", "10.0.0.0/2a",
        "01.2.3.4/32"}) {
    EXPECT_FALSE(Prefix::Parse(text)) << '"' << text << '"';
  }
}

TEST(PrefixTest, MakeChecksLengthsAndClearsHostBits) {
  const auto a4 = V4("10.1.2.3");
  const auto p = Prefix::Make(Family::kIpv4, a4, 16);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->ToString(), "10.1.0.0/16");
  EXPECT_FALSE(Prefix::Make(Family::kIpv4, a4, 33));
  EXPECT_FALSE(Prefix::Make(Family::kIpv6, a4, 16));
  EXPECT_FALSE(Prefix::Make(static_cast<Family>(5), a4, 16));
  const auto a6 = V6("2001:db8::1");
  EXPECT_TRUE(Prefix::Make(Family::kIpv6, a6, 128));
  EXPECT_FALSE(Prefix::Make(Family::kIpv6, a6, 129));
}

TEST(PrefixTest, ContainsAtTheEdges) {
  const struct {
    const char* prefix;
    const char* addr;
    bool contained;
  } kCases[] = {
      {"10.0.0.0/8", "10.0.0.0", true},
      {"10.0.0.0/8", "10.255.255.255", true},
      {"10.0.0.0/8", "11.0.0.0", false},
      {"10.0.0.0/8", "9.255.255.255", false},
      {"192.168.4.0/22", "192.168.7.255", true},
      {"192.168.4.0/22", "192.168.8.0", false},
      {"192.168.4.0/22", "192.168.3.255", false},
      {"0.0.0.0/0", "255.255.255.255", true},
      {"192.0.2.1/32", "192.0.2.1", true},
      {"192.0.2.1/32", "192.0.2.0", false},
      {"2001:db8::/32", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", true},
      {"2001:db8::/32", "2001:db9::", false},
      {"2001:db8::/33", "2001:db8:7fff::1", true},
      {"2001:db8::/33", "2001:db8:8000::", false},
      {"::/0", "ffff::", true},
      {"::1/128", "::1", true},
      {"::1/128", "::", false},
  };
  for (const auto& c : kCases) {
    const auto p = Prefix::Parse(c.prefix);
    ASSERT_TRUE(p);
    if (p->family == Family::kIpv4) {
      EXPECT_EQ(p->Contains(V4(c.addr)), c.contained) << c.prefix << " " << c.addr;
    } else {
      EXPECT_EQ(p->Contains(V6(c.addr)), c.contained) << c.prefix << " " << c.addr;
    }
  }
}

TEST(PrefixTest, AddressOfTheOtherFamilyIsNotContained) {
  EXPECT_FALSE(Prefix::Parse("0.0.0.0/0")->Contains(V6("::")));
  EXPECT_FALSE(Prefix::Parse("::/0")->Contains(V4("0.0.0.0")));
  EXPECT_FALSE(Prefix::Parse("0.0.0.0/0")->Contains({}));
}

}  // namespace
}  // namespace spigot::policy
