#include "spigot/gateway/address_pools.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <initializer_list>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string_view>

#include "spigot/test_tools/fake_clock.h"

namespace spigot::gateway {
namespace {

using PoolsResult = AddressPools::AcquireResult;
using PoolsFamily = policy::Family;

// Pools as the configuration parser makes them: `tables` are [[pool]] bodies "name|addrs".
std::vector<config::PoolConfig> PoolsFromToml(std::initializer_list<const char*> tables) {
  std::string toml;
  for (std::string_view table : tables) {
    const std::size_t bar = table.find('|');
    toml += "[[pool]]\nname = \"" + std::string(table.substr(0, bar)) + "\"\naddrs = \"" +
            std::string(table.substr(bar + 1)) + "\"\n";
  }
  const config::LoadResult r = config::LoadString(toml, "pools-test.toml");
  EXPECT_TRUE(r.ok) << r.error;
  return r.config.pools;
}

AddressPools::Lease PoolsLease(const std::string& pool, const char* address) {
  return AddressPools::Lease{pool, *policy::Prefix::Parse(address)};
}

class PoolsTempDir {
 public:
  PoolsTempDir() {
    std::string pattern = std::filesystem::temp_directory_path() / "spigot-pools-XXXXXX";
    path_ = mkdtemp(pattern.data());
  }
  ~PoolsTempDir() { std::filesystem::remove_all(path_); }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

class AddressPoolsTest : public ::testing::Test {
 protected:
  // One holder of `identity`'s address from `names`; fails the test unless kOk.
  std::string Acquire(const std::string& identity, std::vector<std::string> names = {"rw"},
                      PoolsFamily family = PoolsFamily::kIpv4) {
    AddressPools::Lease lease;
    const PoolsResult result = pools_.Acquire(names, family, identity, &lease);
    EXPECT_EQ(result, PoolsResult::kOk) << identity;
    if (result != PoolsResult::kOk) return "";
    EXPECT_EQ(lease.address.prefix_len, policy::MaxPrefixLength(family));
    return lease.pool + " " + lease.address.ToString();
  }

  PoolsResult TryAcquire(const std::string& identity, std::vector<std::string> names = {"rw"},
                           PoolsFamily family = PoolsFamily::kIpv4) {
    AddressPools::Lease lease;
    return pools_.Acquire(names, family, identity, &lease);
  }

  bool Release(const std::string& identity, const std::string& acquired) {
    const std::size_t space = acquired.find(' ');
    return pools_.Release(identity, PoolsLease(acquired.substr(0, space),
                                               acquired.substr(space + 1).c_str()));
  }

  AddressPools::PoolStats StatsOf(const std::string& name) const {
    for (const AddressPools::PoolStats& s : pools_.Stats()) {
      if (s.name == name) return s;
    }
    ADD_FAILURE() << "no pool " << name;
    return {};
  }

  test_tools::FakeClock clock_;
  AddressPools pools_{clock_};
};

TEST_F(AddressPoolsTest, DistinctAddressesAndExhaustionExactlyAtSize) {
  pools_.Apply(PoolsFromToml({"rw|10.0.0.8/29"}));  // 10.0.0.9 .. 10.0.0.14
  EXPECT_EQ(StatsOf("rw").size, 6u);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(Acquire("user" + std::to_string(i)), "rw 10.0.0." + std::to_string(9 + i) + "/32");
  }
  EXPECT_EQ(TryAcquire("user6"), PoolsResult::kExhausted);
  EXPECT_EQ(TryAcquire("user7"), PoolsResult::kExhausted);
  const AddressPools::PoolStats s = StatsOf("rw");
  EXPECT_EQ(s.online, 6u);
  EXPECT_EQ(s.offline, 0u);
  EXPECT_EQ(s.exhausted, 2u);
  // An identity already holding an address still gets it from a full pool.
  EXPECT_EQ(Acquire("user3"), "rw 10.0.0.12/32");
}

// RADIUS Framed-IP-Address: the address itself, from the pool whose range holds it.
TEST_F(AddressPoolsTest, AcquireAddressTakesTheAddressNamedOrSaysWhyNot) {
  pools_.Apply(PoolsFromToml({"rw|10.0.0.8/29"}));  // 10.0.0.9 .. 10.0.0.14
  const auto take = [&](const std::string& identity, const char* address) -> std::string {
    AddressPools::Lease lease;
    if (pools_.AcquireAddress({"rw"}, *policy::Prefix::Parse(address), identity, &lease) != PoolsResult::kOk) return "-";
    return lease.pool + " " + lease.address.ToString();
  };
  EXPECT_EQ(take("alice", "10.0.0.12"), "rw 10.0.0.12/32");  // never used: taken out of the middle
  EXPECT_EQ(Acquire("bob"), "rw 10.0.0.9/32");                // the pool still hands out the rest
  EXPECT_EQ(take("carol", "10.0.0.12"), "-");                 // online for alice
  EXPECT_EQ(take("carol", "10.0.0.99"), "-");                 // outside the pool
  EXPECT_EQ(take("alice", "10.0.0.12"), "rw 10.0.0.12/32");  // alice again: a second holder
  EXPECT_EQ(StatsOf("rw").online, 2u);
  EXPECT_EQ(take("alice", "10.0.0.13"), "-");                 // alice is online with another address
  EXPECT_TRUE(Release("alice", "rw 10.0.0.12/32"));
  EXPECT_TRUE(Release("alice", "rw 10.0.0.12/32"));
  EXPECT_EQ(StatsOf("rw").offline, 1u);
  // RADIUS gives alice's offline address to carol: the authenticator decides.
  EXPECT_EQ(take("carol", "10.0.0.12"), "rw 10.0.0.12/32");
  EXPECT_EQ(StatsOf("rw").offline, 0u);
  // ... and alice, offline nowhere now, gets a fresh address from the pool.
  EXPECT_EQ(Acquire("alice"), "rw 10.0.0.10/32");
  // An identity's offline lease goes back to the pool when RADIUS names another address.
  EXPECT_TRUE(Release("carol", "rw 10.0.0.12/32"));
  EXPECT_EQ(take("carol", "10.0.0.14"), "rw 10.0.0.14/32");
  EXPECT_EQ(StatsOf("rw").offline, 0u);
  EXPECT_EQ(StatsOf("rw").online, 3u);
  for (int i = 0; i < 3; ++i) Acquire("u" + std::to_string(i));  // 10.0.0.11, 10.0.0.12 (freed), 10.0.0.13
  EXPECT_EQ(TryAcquire("u9"), PoolsResult::kExhausted);
}

TEST_F(AddressPoolsTest, StickyReconnect) {
  pools_.Apply(PoolsFromToml({"rw|10.0.0.8/29"}));
  const std::string alice = Acquire("alice");
  EXPECT_TRUE(Release("alice", alice));
  EXPECT_EQ(StatsOf("rw").offline, 1u);
  const std::string bob = Acquire("bob");
  EXPECT_NE(bob, alice);  // a new identity gets a never-used address, not alice's
  EXPECT_EQ(Acquire("alice"), alice);
  EXPECT_EQ(StatsOf("rw").online, 2u);
  EXPECT_EQ(StatsOf("rw").offline, 0u);
}

TEST_F(AddressPoolsTest, ReleaseIsCountedPerHolder) {
  pools_.Apply(PoolsFromToml({"rw|10.0.0.8/29"}));
  const std::string first = Acquire("alice");
  EXPECT_EQ(Acquire("alice"), first);  // a second IKE SA of alice shares the address
  EXPECT_FALSE(Release("bob", first));  // not bob's to give back
  EXPECT_FALSE(Release("alice", "rw 10.0.0.13"));  // not alice's address
  EXPECT_FALSE(Release("alice", "other 10.0.0.9"));  // no such pool

  EXPECT_TRUE(Release("alice", first));
  EXPECT_EQ(StatsOf("rw").online, 1u);  // the other IKE SA still holds it
  EXPECT_TRUE(Release("alice", first));
  EXPECT_EQ(StatsOf("rw").online, 0u);
  EXPECT_EQ(StatsOf("rw").offline, 1u);
  EXPECT_FALSE(Release("alice", first));  // once more than held: refused, nothing changes
  EXPECT_EQ(StatsOf("rw").offline, 1u);
}

TEST_F(AddressPoolsTest, OfflineLeasesAreReclaimedOnlyWhenNeverUsedOnesAreGone) {
  pools_.Apply(PoolsFromToml({"rw|10.0.0.8/29"}));
  const std::string a = Acquire("a");  // .9
  const std::string b = Acquire("b");  // .10
  const std::string c = Acquire("c");  // .11
  EXPECT_TRUE(Release("c", c));        // c first: released longest ago
  EXPECT_TRUE(Release("a", a));
  EXPECT_EQ(Acquire("d"), "rw 10.0.0.12/32");
  EXPECT_EQ(Acquire("e"), "rw 10.0.0.13/32");
  EXPECT_EQ(Acquire("f"), "rw 10.0.0.14/32");
  EXPECT_EQ(StatsOf("rw").exhausted, 0u);
  // No never-used address left: the oldest offline lease (c's) goes, then a's.
  EXPECT_EQ(Acquire("g"), c);
  EXPECT_EQ(Acquire("h"), a);
  EXPECT_EQ(TryAcquire("i"), PoolsResult::kExhausted);
  // a's address has a new owner: a is refused like anyone else.
  EXPECT_EQ(TryAcquire("a"), PoolsResult::kExhausted);
  EXPECT_FALSE(Release("a", a));
  EXPECT_TRUE(Release("h", a));
  EXPECT_EQ(Acquire("a"), a);  // h's offline lease reclaimed by a
  EXPECT_EQ(StatsOf("rw").exhausted, 2u);
}

TEST_F(AddressPoolsTest, FirstPoolWithRoomButOwnLeaseFirst) {
  pools_.Apply(PoolsFromToml({"small|10.0.0.4/30", "big|10.1.0.0/16"}));
  const std::vector<std::string> both{"small", "big"};
  EXPECT_EQ(Acquire("a", both), "small 10.0.0.5/32");
  EXPECT_EQ(Acquire("b", both), "small 10.0.0.6/32");
  // small is full (a and b online): c goes to big rather than evicting anyone.
  const std::string c = Acquire("c", both);
  EXPECT_EQ(c, "big 10.1.0.1/32");
  EXPECT_TRUE(Release("a", "small 10.0.0.5"));
  EXPECT_TRUE(Release("c", c));
  // small has room now (a's offline lease), yet c gets its own address back from big.
  EXPECT_EQ(Acquire("c", both), c);
  // A new identity: small has no never-used address but big has: big, before reclaiming a's.
  EXPECT_EQ(Acquire("d", both), "big 10.1.0.2/32");
  EXPECT_EQ(StatsOf("small").exhausted, 0u);
}

TEST_F(AddressPoolsTest, NoPoolForFamily) {
  pools_.Apply(PoolsFromToml({"rw|10.0.0.8/29"}));
  EXPECT_EQ(TryAcquire("a", {"rw"}, PoolsFamily::kIpv6), PoolsResult::kNoPoolForFamily);
  EXPECT_EQ(TryAcquire("a", {"nope"}), PoolsResult::kNoPoolForFamily);
  EXPECT_EQ(TryAcquire("a", {}), PoolsResult::kNoPoolForFamily);
  EXPECT_EQ(StatsOf("rw").exhausted, 0u);
}

TEST_F(AddressPoolsTest, Ipv6Pool) {
  pools_.Apply(PoolsFromToml({"rw|10.0.0.8/29", "rw6|2001:db8:1::/112"}));
  const std::vector<std::string> both{"rw", "rw6"};
  EXPECT_EQ(StatsOf("rw6").size, 65535u);  // ::0 is the subnet-router anycast address
  EXPECT_EQ(Acquire("alice", both, PoolsFamily::kIpv6), "rw6 2001:db8:1::1/128");
  EXPECT_EQ(Acquire("alice", both, PoolsFamily::kIpv4), "rw 10.0.0.9/32");
  EXPECT_EQ(Acquire("bob", both, PoolsFamily::kIpv6), "rw6 2001:db8:1::2/128");
  EXPECT_TRUE(Release("alice", "rw6 2001:db8:1::1"));
  EXPECT_EQ(Acquire("alice", both, PoolsFamily::kIpv6), "rw6 2001:db8:1::1/128");
  EXPECT_EQ(StatsOf("rw6").family, PoolsFamily::kIpv6);
  EXPECT_EQ(StatsOf("rw6").online, 2u);
  EXPECT_EQ(StatsOf("rw").online, 1u);
}

TEST_F(AddressPoolsTest, RangePool) {
  pools_.Apply(PoolsFromToml({"rw|198.18.0.10-198.18.0.12"}));
  EXPECT_EQ(StatsOf("rw").size, 3u);
  EXPECT_EQ(Acquire("a"), "rw 198.18.0.10/32");
  EXPECT_EQ(Acquire("b"), "rw 198.18.0.11/32");
  EXPECT_EQ(Acquire("c"), "rw 198.18.0.12/32");
  EXPECT_EQ(TryAcquire("d"), PoolsResult::kExhausted);
}

TEST_F(AddressPoolsTest, ReloadWithTheSamePoolsKeepsEverything) {
  const std::vector<config::PoolConfig> config = PoolsFromToml({"rw|10.0.0.8/29"});
  pools_.Apply(config);
  const std::string a = Acquire("a");
  const std::string b = Acquire("b");
  EXPECT_TRUE(Release("b", b));
  pools_.Apply(config);
  EXPECT_EQ(StatsOf("rw").online, 1u);
  EXPECT_EQ(StatsOf("rw").offline, 1u);
  EXPECT_EQ(Acquire("b"), b);
  EXPECT_TRUE(Release("a", a));
}

TEST_F(AddressPoolsTest, ReloadGrowsAPool) {
  pools_.Apply(PoolsFromToml({"rw|10.0.0.8/29"}));
  for (int i = 0; i < 6; ++i) Acquire("user" + std::to_string(i));
  EXPECT_EQ(TryAcquire("late"), PoolsResult::kExhausted);
  pools_.Apply(PoolsFromToml({"rw|10.0.0.0/28"}));  // 10.0.0.1 .. 10.0.0.14
  EXPECT_EQ(StatsOf("rw").size, 14u);
  EXPECT_EQ(StatsOf("rw").online, 6u);
  EXPECT_EQ(StatsOf("rw").exhausted, 1u);  // the counter survives the reload
  EXPECT_EQ(Acquire("user0"), "rw 10.0.0.9/32");  // kept
  for (int i = 1; i <= 8; ++i) {
    EXPECT_EQ(Acquire("new" + std::to_string(i)), "rw 10.0.0." + std::to_string(i) + "/32");
  }
  EXPECT_EQ(TryAcquire("late"), PoolsResult::kExhausted);

  // Growing upwards, too: the gained addresses follow, none handed out twice.
  pools_.Apply(PoolsFromToml({"rw|10.0.0.1-10.0.0.16"}));
  EXPECT_EQ(Acquire("late"), "rw 10.0.0.15/32");
  EXPECT_EQ(Acquire("later"), "rw 10.0.0.16/32");
  EXPECT_EQ(TryAcquire("latest"), PoolsResult::kExhausted);
}

TEST_F(AddressPoolsTest, ReloadShrinksAPoolAndRetiresOnlineLeasesOutsideIt) {
  pools_.Apply(PoolsFromToml({"rw|10.0.0.8/29"}));
  const std::string alice = Acquire("alice");  // .9
  const std::string bob = Acquire("bob");      // .10
  const std::string carol = Acquire("carol");  // .11
  const std::string dave = Acquire("dave");    // .12
  EXPECT_TRUE(Release("bob", bob));
  EXPECT_TRUE(Release("dave", dave));

  pools_.Apply(PoolsFromToml({"rw|10.0.0.9-10.0.0.10"}));
  EXPECT_EQ(StatsOf("rw").size, 2u);
  EXPECT_EQ(StatsOf("rw").online, 1u);   // alice
  EXPECT_EQ(StatsOf("rw").offline, 1u);  // bob; dave's offline lease is gone
  EXPECT_EQ(pools_.retired_online(), 1u);  // carol keeps .11 until she lets go
  EXPECT_EQ(Acquire("carol"), "rw 10.0.0.10/32");  // a second SA of carol: only bob's is left
  EXPECT_EQ(TryAcquire("erin"), PoolsResult::kExhausted);

  // Growing back while carol still holds .11: .11 is not handed out.
  pools_.Apply(PoolsFromToml({"rw|10.0.0.8/29"}));
  EXPECT_EQ(Acquire("erin"), "rw 10.0.0.12/32");
  EXPECT_EQ(Acquire("frank"), "rw 10.0.0.13/32");
  EXPECT_EQ(Acquire("grace"), "rw 10.0.0.14/32");
  EXPECT_EQ(TryAcquire("heidi"), PoolsResult::kExhausted);
  EXPECT_TRUE(Release("carol", carol));  // the retired lease: gone, .11 back to the pool
  EXPECT_EQ(pools_.retired_online(), 0u);
  EXPECT_FALSE(Release("carol", carol));
  EXPECT_EQ(Acquire("heidi"), "rw 10.0.0.11/32");
  EXPECT_TRUE(Release("alice", alice));
}

TEST_F(AddressPoolsTest, ReloadRemovesAPool) {
  pools_.Apply(PoolsFromToml({"rw|10.0.0.8/29", "other|10.1.0.0/29"}));
  const std::string alice = Acquire("alice");
  const std::string bob = Acquire("bob");
  EXPECT_TRUE(Release("bob", bob));

  pools_.Apply(PoolsFromToml({"other|10.1.0.0/29"}));
  ASSERT_EQ(pools_.Stats().size(), 1u);
  EXPECT_EQ(pools_.retired_online(), 1u);  // alice; bob's offline lease is dropped
  EXPECT_EQ(TryAcquire("carol"), PoolsResult::kNoPoolForFamily);
  const std::vector<AddressPools::LeaseInfo> leases = pools_.Leases();
  ASSERT_EQ(leases.size(), 1u);
  EXPECT_EQ(leases[0].identity, "alice");
  EXPECT_EQ(leases[0].pool, "rw");
  EXPECT_TRUE(leases[0].retired);

  // Back again while alice still holds her address: it is not handed out.
  pools_.Apply(PoolsFromToml({"other|10.1.0.0/29", "rw|10.0.0.8/29"}));
  EXPECT_EQ(Acquire("bob"), "rw 10.0.0.10/32");
  EXPECT_TRUE(Release("alice", alice));
  EXPECT_EQ(pools_.retired_online(), 0u);
  EXPECT_EQ(Acquire("carol"), "rw 10.0.0.9/32");
}

TEST_F(AddressPoolsTest, ReloadChangesAPoolsFamily) {
  pools_.Apply(PoolsFromToml({"rw|10.0.0.8/29"}));
  const std::string alice = Acquire("alice");
  pools_.Apply(PoolsFromToml({"rw|2001:db8::/120"}));
  EXPECT_EQ(pools_.retired_online(), 1u);
  EXPECT_EQ(Acquire("alice", {"rw"}, PoolsFamily::kIpv6), "rw 2001:db8::1/128");
  EXPECT_TRUE(Release("alice", alice));
  EXPECT_EQ(pools_.retired_online(), 0u);
}

TEST_F(AddressPoolsTest, LeasesAndTheirTimes) {
  pools_.Apply(PoolsFromToml({"rw|10.0.0.8/29"}));
  const io::Clock::TimePoint start = clock_.Now();
  const std::string alice = Acquire("alice");
  clock_.Advance(std::chrono::seconds(5));
  Acquire("bob");
  clock_.Advance(std::chrono::seconds(5));
  EXPECT_TRUE(Release("alice", alice));

  const std::vector<AddressPools::LeaseInfo> leases = pools_.Leases();
  ASSERT_EQ(leases.size(), 2u);
  EXPECT_EQ(leases[0].identity, "alice");
  EXPECT_EQ(leases[0].address.ToString(), "10.0.0.9/32");
  EXPECT_EQ(leases[0].holders, 0u);
  EXPECT_EQ(leases[0].since, start + std::chrono::seconds(10));  // released then
  EXPECT_EQ(leases[1].identity, "bob");
  EXPECT_EQ(leases[1].holders, 1u);
  EXPECT_EQ(leases[1].since, start + std::chrono::seconds(5));   // acquired then
  EXPECT_FALSE(leases[1].retired);
}

TEST_F(AddressPoolsTest, LeasesJson) {
  pools_.Apply(PoolsFromToml({"rw|10.0.0.8/29", "rw6|2001:db8::/32"}));
  Acquire("alice");
  const std::string bob = Acquire("bob");
  Acquire("carol", {"rw6"}, PoolsFamily::kIpv6);
  EXPECT_TRUE(Release("bob", bob));
  TryAcquire("dave", {"rw6"}, PoolsFamily::kIpv4);  // no pool for the family: not "exhausted"

  const nlohmann::json expected = nlohmann::json::parse(R"({
    "pools": [
      {"name": "rw", "family": "ipv4", "size": 6, "in_use": 1, "offline": 1, "exhausted": 0,
       "leases": [{"identity": "alice", "address": "10.0.0.9"}]},
      {"name": "rw6", "family": "ipv6", "size": 18446744073709551615, "in_use": 1, "offline": 0,
       "exhausted": 0, "leases": [{"identity": "carol", "address": "2001:db8::1"}]}
    ],
    "retired": []
  })");
  EXPECT_EQ(pools_.LeasesJson(), expected) << pools_.LeasesJson().dump(2);
}

TEST_F(AddressPoolsTest, SaveAndLoadRoundTrip) {
  PoolsTempDir dir;
  const std::string path = dir.File("leases.json");
  const std::vector<config::PoolConfig> config =
      PoolsFromToml({"rw|10.0.0.8/29", "rw6|2001:db8:1::/112"});
  pools_.Apply(config);
  const std::string a = Acquire("a");                                // .9, stays online
  const std::string b = Acquire("b");                                // .10
  const std::string c = Acquire("c");                                // .11
  const std::string six = Acquire("a", {"rw6"}, PoolsFamily::kIpv6);     // ::1
  EXPECT_TRUE(Release("c", c));  // c released before b: reclaimed first
  EXPECT_TRUE(Release("b", b));
  std::string error;
  ASSERT_TRUE(pools_.Save(path, &error)) << error;
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  // A restart: the same configuration, the lease file loaded.
  AddressPools restarted(clock_);
  restarted.Apply(config);
  ASSERT_TRUE(restarted.Load(path, &error)) << error;
  const std::vector<AddressPools::PoolStats> stats = restarted.Stats();
  ASSERT_EQ(stats.size(), 2u);
  EXPECT_EQ(stats[0].online, 0u);   // no IKE SA survives a restart
  EXPECT_EQ(stats[0].offline, 3u);
  EXPECT_EQ(stats[1].offline, 1u);

  AddressPools::Lease lease;
  ASSERT_EQ(restarted.Acquire({"rw"}, PoolsFamily::kIpv4, "b", &lease), PoolsResult::kOk);
  EXPECT_EQ("rw " + lease.address.ToString(), b);  // sticky across the restart
  ASSERT_EQ(restarted.Acquire({"rw6"}, PoolsFamily::kIpv6, "a", &lease), PoolsResult::kOk);
  EXPECT_EQ("rw6 " + lease.address.ToString(), six);
  for (const char* fresh : {"d", "e", "f"}) {  // never-used ones first: .12, .13, .14
    ASSERT_EQ(restarted.Acquire({"rw"}, PoolsFamily::kIpv4, fresh, &lease), PoolsResult::kOk);
  }
  ASSERT_EQ(restarted.Acquire({"rw"}, PoolsFamily::kIpv4, "g", &lease), PoolsResult::kOk);
  EXPECT_EQ("rw " + lease.address.ToString(), c);  // c's lease was released longest ago
  ASSERT_EQ(restarted.Acquire({"rw"}, PoolsFamily::kIpv4, "h", &lease), PoolsResult::kOk);
  EXPECT_EQ("rw " + lease.address.ToString(), a);  // a was online: saved after the offline ones

  // Saving the restarted state and loading it once more gives the same leases.
  ASSERT_TRUE(restarted.Save(path, &error)) << error;
  AddressPools again(clock_);
  again.Apply(config);
  ASSERT_TRUE(again.Load(path, &error)) << error;
  EXPECT_EQ(again.Leases().size(), restarted.Leases().size());
}

TEST_F(AddressPoolsTest, SaveTakesIdentitiesThatAreNotUtf8) {
  PoolsTempDir dir;
  pools_.Apply(PoolsFromToml({"rw|10.0.0.8/29"}));
  Acquire("CN=caf\xe9");  // Latin-1, as a peer may send it
  std::string error;
  ASSERT_TRUE(pools_.Save(dir.File("leases.json"), &error)) << error;
  AddressPools restarted(clock_);
  restarted.Apply(PoolsFromToml({"rw|10.0.0.8/29"}));
  ASSERT_TRUE(restarted.Load(dir.File("leases.json"), &error)) << error;
  EXPECT_EQ(restarted.Leases().size(), 1u);
}

TEST_F(AddressPoolsTest, LoadIgnoresWhatNoLongerFits) {
  PoolsTempDir dir;
  const std::string path = dir.File("leases.json");
  pools_.Apply(PoolsFromToml({"rw|10.0.0.8/29", "gone|10.1.0.0/29"}));
  Acquire("a");                // .9
  Acquire("b");                // .10
  Acquire("c");                // .11
  Acquire("x", {"gone"});
  std::string error;
  ASSERT_TRUE(pools_.Save(path, &error)) << error;

  AddressPools restarted(clock_);
  restarted.Apply(PoolsFromToml({"rw|10.0.0.10-10.0.0.20"}));
  ASSERT_TRUE(restarted.Load(path, &error)) << error;
  const std::vector<AddressPools::LeaseInfo> leases = restarted.Leases();
  ASSERT_EQ(leases.size(), 2u);  // a's .9 is outside the range now; pool "gone" is gone
  EXPECT_EQ(leases[0].identity, "b");
  EXPECT_EQ(leases[1].identity, "c");
  AddressPools::Lease lease;
  ASSERT_EQ(restarted.Acquire({"rw"}, PoolsFamily::kIpv4, "a", &lease), PoolsResult::kOk);
  EXPECT_EQ(lease.address.ToString(), "10.0.0.12/32");
}

TEST_F(AddressPoolsTest, LoadRefusesAFileItDidNotWrite) {
  PoolsTempDir dir;
  pools_.Apply(PoolsFromToml({"rw|10.0.0.8/29"}));
  std::string error;
  EXPECT_TRUE(pools_.Load(dir.File("missing.json"), &error)) << error;  // the first start

  const auto load = [&](const std::string& content) {
    const std::string path = dir.File("bad.json");
    std::ofstream(path, std::ios::binary) << content;
    error.clear();
    EXPECT_FALSE(pools_.Load(path, &error)) << content;
    return error.substr(path.size());
  };
  EXPECT_EQ(load("{"), ": not a lease file (not JSON)");
  EXPECT_EQ(load(R"({"version": 2, "pools": []})"),
            ": not a lease file (\"version\": 1 expected)");
  EXPECT_EQ(load(R"({"version": 1})"), ": not a lease file (no \"pools\")");
  EXPECT_EQ(load(R"({"version": 1, "pools": [{"name": "rw"}]})"),
            ": not a lease file (a pool without \"name\" or \"leases\")");
  EXPECT_EQ(load(R"({"version": 1, "pools": [{"name": "rw", "leases": [{"identity": "a"}]}]})"),
            ": not a lease file (a lease without \"identity\" or \"address\")");
  // One bad entry after a good one: nothing is loaded.
  EXPECT_EQ(load(R"({"version": 1, "pools": [{"name": "rw", "leases": [
                   {"identity": "a", "address": "10.0.0.9"},
                   {"identity": "b", "address": "10.0.0.0/8"}]}]})"),
            ": not a lease file (\"10.0.0.0/8\" is not an address)");
  EXPECT_TRUE(pools_.Leases().empty());

  EXPECT_FALSE(pools_.Save(dir.File("no/such/dir/leases.json"), &error));
  EXPECT_EQ(error.rfind(dir.File("no/such/dir/leases.json") + ": cannot create ", 0), 0u)
      << error;
}

TEST_F(AddressPoolsTest, AMillionAddressPoolIsNotMaterialised) {
  // 10.0.0.1 + 999,999 = 10.15.66.64: exactly 1,000,000 addresses.
  pools_.Apply(PoolsFromToml({"rw|10.0.0.1-10.15.66.64", "huge|2001:db8::/32"}));
  EXPECT_EQ(StatsOf("rw").size, 1000000u);
  EXPECT_EQ(StatsOf("huge").size, std::numeric_limits<std::uint64_t>::max());  // 2^96 - 1
  AddressPools::Lease lease;
  for (int i = 0; i < 100000; ++i) {
    ASSERT_EQ(pools_.Acquire({"rw"}, PoolsFamily::kIpv4, "user" + std::to_string(i), &lease),
              PoolsResult::kOk);
  }
  EXPECT_EQ(lease.address.ToString(), "10.1.134.160/32");  // 10.0.0.0 + 100,000
  for (int i = 0; i < 100000; i += 2) {
    ASSERT_TRUE(pools_.Release("user" + std::to_string(i),
                               AddressPools::Lease{"rw", *policy::Prefix::Parse(
                                               "10." + std::to_string((i + 1) >> 16) + "." +
                                               std::to_string(((i + 1) >> 8) & 0xff) + "." +
                                               std::to_string((i + 1) & 0xff))}));
  }
  EXPECT_EQ(StatsOf("rw").online, 50000u);
  EXPECT_EQ(StatsOf("rw").offline, 50000u);
  ASSERT_EQ(pools_.Acquire({"rw"}, PoolsFamily::kIpv4, "user0", &lease), PoolsResult::kOk);
  EXPECT_EQ(lease.address.ToString(), "10.0.0.1/32");

  // 2^96 addresses cost nothing until used.
  for (int i = 0; i < 1000; ++i) {
    ASSERT_EQ(pools_.Acquire({"huge"}, PoolsFamily::kIpv6, "user" + std::to_string(i), &lease),
              PoolsResult::kOk);
  }
  EXPECT_EQ(lease.address.ToString(), "2001:db8::3e8/128");
  pools_.Apply(PoolsFromToml({"rw|10.0.0.0/8", "huge|2001:db8::/33"}));  // grown and shrunk
  EXPECT_EQ(StatsOf("rw").online, 50001u);
  EXPECT_EQ(StatsOf("huge").online, 1000u);
}

}  // namespace
}  // namespace spigot::gateway
