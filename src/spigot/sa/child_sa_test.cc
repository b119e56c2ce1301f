// Lifetime accounting (RFC 4301 4.4.2.1), driven by injected time values: no sleeping.
#include "spigot/sa/child_sa.h"

#include <gtest/gtest.h>

#include <vector>

namespace spigot::sa {
namespace {

using std::chrono::seconds;
constexpr TimePoint kT0 = TimePoint{} + seconds(1'000);

ChildSaParams Params(const Lifetimes& lifetimes) {
  ChildSaParams p;
  p.inbound_spi = 0x1000;
  p.outbound_spi = 0x2000;
  p.lifetimes = lifetimes;
  return p;
}

TEST(LifetimesTest, SoftMustBeBelowHard) {
  EXPECT_TRUE((Lifetimes{}).Valid());
  EXPECT_TRUE((Lifetimes{{seconds(10), 0, 0}, {seconds(20), 0, 0}}).Valid());
  EXPECT_FALSE((Lifetimes{{seconds(20), 0, 0}, {seconds(20), 0, 0}}).Valid());
  EXPECT_FALSE((Lifetimes{{seconds(0), 200, 0}, {seconds(0), 100, 0}}).Valid());
  EXPECT_FALSE((Lifetimes{{seconds(0), 0, 5}, {seconds(0), 0, 5}}).Valid());
  EXPECT_TRUE((Lifetimes{{seconds(0), 500, 0}, {seconds(0), 0, 0}}).Valid());  // no hard limit
  EXPECT_TRUE((Lifetimes{{seconds(0), 0, 0}, {seconds(0), 0, 3}}).Valid());    // no soft limit
  EXPECT_FALSE((Lifetimes{{seconds(-1), 0, 0}, {seconds(0), 0, 0}}).Valid());
}

TEST(ChildSaLifetimeTest, Time) {
  ChildSa sa(Params({{seconds(3'000), 0, 0}, {seconds(3'600), 0, 0}}), kT0);
  EXPECT_EQ(sa.soft_deadline(), kT0 + seconds(3'000));
  EXPECT_EQ(sa.hard_deadline(), kT0 + seconds(3'600));
  EXPECT_EQ(sa.CheckTime(kT0), LifetimeAction::kNone);
  EXPECT_EQ(sa.CheckTime(kT0 + seconds(2'999)), LifetimeAction::kNone);
  EXPECT_EQ(sa.CheckTime(kT0 + seconds(3'000)), LifetimeAction::kRekey);
  EXPECT_TRUE(sa.soft_expired());
  EXPECT_EQ(sa.CheckTime(kT0 + seconds(3'001)), LifetimeAction::kNone);  // soft: once
  EXPECT_EQ(sa.CheckTime(kT0 + seconds(3'599)), LifetimeAction::kNone);
  EXPECT_EQ(sa.CheckTime(kT0 + seconds(3'600)), LifetimeAction::kDelete);
  EXPECT_EQ(sa.CheckTime(kT0 + seconds(9'999)), LifetimeAction::kDelete);  // hard: every time
}

TEST(ChildSaLifetimeTest, HardTimeWithoutSoftFiresDelete) {
  ChildSa sa(Params({{}, {seconds(60), 0, 0}}), kT0);
  EXPECT_EQ(sa.soft_deadline(), TimePoint::max());
  EXPECT_EQ(sa.CheckTime(kT0 + seconds(61)), LifetimeAction::kDelete);
  EXPECT_FALSE(sa.soft_expired());
}

TEST(ChildSaLifetimeTest, NoLimitsNeverExpire) {
  ChildSa sa(Params({}), kT0);
  for (int i = 0; i < 1000; ++i) {
    ASSERT_EQ(sa.Count(Direction::kOutbound, 1'500), LifetimeAction::kNone);
  }
  EXPECT_EQ(sa.CheckTime(TimePoint::max() - seconds(1)), LifetimeAction::kNone);
  EXPECT_EQ(sa.traffic(Direction::kOutbound).bytes, 1'500'000u);
  EXPECT_EQ(sa.traffic(Direction::kOutbound).packets, 1'000u);
}

// The action after each packet, for a soft and a hard limit in one unit.
struct CountCase {
  const char* name;
  Lifetimes lifetimes;
  std::uint64_t packet_bytes;
  std::vector<LifetimeAction> expected;  // after packet 1, 2, ...
};

TEST(ChildSaLifetimeTest, BytesAndPacketsTable) {
  using A = LifetimeAction;
  const std::vector<CountCase> cases = {
      {"packets soft 3 hard 5", {{seconds(0), 0, 3}, {seconds(0), 0, 5}}, 100,
       {A::kNone, A::kNone, A::kRekey, A::kNone, A::kDelete, A::kDelete}},
      {"bytes soft 250 hard 400", {{seconds(0), 250, 0}, {seconds(0), 400, 0}}, 100,
       {A::kNone, A::kNone, A::kRekey, A::kDelete}},
      {"bytes exactly at soft", {{seconds(0), 200, 0}, {seconds(0), 1000, 0}}, 100,
       {A::kNone, A::kRekey, A::kNone}},
      {"one packet crosses both", {{seconds(0), 50, 0}, {seconds(0), 150, 0}}, 200, {A::kDelete}},
      {"bytes soft, packets hard", {{seconds(0), 150, 0}, {seconds(0), 0, 4}}, 100,
       {A::kNone, A::kRekey, A::kNone, A::kDelete}},
  };
  for (const CountCase& c : cases) {
    ChildSa sa(Params(c.lifetimes), kT0);
    for (std::size_t i = 0; i < c.expected.size(); ++i) {
      EXPECT_EQ(sa.Count(Direction::kInbound, c.packet_bytes), c.expected[i])
          << c.name << ", packet " << i + 1;
    }
  }
}

TEST(ChildSaLifetimeTest, DirectionsCountSeparatelySoftFiresOnce) {
  ChildSa sa(Params({{seconds(0), 0, 2}, {seconds(0), 0, 4}}), kT0);
  EXPECT_EQ(sa.Count(Direction::kInbound, 10), LifetimeAction::kNone);
  EXPECT_EQ(sa.Count(Direction::kOutbound, 10), LifetimeAction::kNone);
  EXPECT_EQ(sa.Count(Direction::kOutbound, 10), LifetimeAction::kRekey);
  EXPECT_EQ(sa.Count(Direction::kInbound, 10), LifetimeAction::kNone);  // one rekey per CHILD SA
  EXPECT_EQ(sa.Count(Direction::kInbound, 10), LifetimeAction::kNone);
  EXPECT_EQ(sa.Count(Direction::kInbound, 10), LifetimeAction::kDelete);  // inbound's 4th
  EXPECT_EQ(sa.traffic(Direction::kInbound).packets, 4u);
  EXPECT_EQ(sa.traffic(Direction::kOutbound).packets, 2u);
}

TEST(ChildSaLifetimeTest, SoftTimeAfterSoftBytesIsNotReportedAgain) {
  ChildSa sa(Params({{seconds(10), 100, 0}, {seconds(20), 0, 0}}), kT0);
  EXPECT_EQ(sa.Count(Direction::kOutbound, 100), LifetimeAction::kRekey);
  EXPECT_EQ(sa.CheckTime(kT0 + seconds(10)), LifetimeAction::kNone);
  EXPECT_EQ(sa.CheckTime(kT0 + seconds(20)), LifetimeAction::kDelete);
}

}  // namespace
}  // namespace spigot::sa
