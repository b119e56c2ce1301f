// CHILD SAs' own policies (sa_policies.h): selectors as prefixes, claims between peers, and a
// concentrator with three road warriors on one %any connection, each tunnel carrying only its
// own peer's traffic (test_tools/gateway_pair.h with extra nodes).
#include "spigot/gateway/sa_policies.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <set>

#include "spigot/control/gateway_commands.h"
#include "spigot/gateway/child_sa_manager.h"
#include "spigot/ike/traffic_selectors.h"
#include "spigot/test_tools/gateway_pair.h"

namespace spigot::gateway {
namespace {

using std::chrono::seconds;
using test_tools::GatewayPair;
using test_tools::Node;

policy::Prefix P(const char* text) { return *policy::Prefix::Parse(text); }

std::vector<std::string> PrefixStrings(const std::vector<ike::TrafficSelector>& ts) {
  std::vector<std::string> out;
  for (const auto& p : SelectorPrefixes(ts)) out.push_back(p.ToString());
  return out;
}

ike::TrafficSelector Range(const char* from, const char* to) {
  ike::TrafficSelector ts = *ike::SelectorFromCidr(from);
  const ike::TrafficSelector end = *ike::SelectorFromCidr(to);
  ts.end = end.end;
  return ts;
}

TEST(SelectorPrefixesTest, RangesBecomeTheFewestCoveringPrefixes) {
  EXPECT_EQ(PrefixStrings({*ike::SelectorFromCidr("10.1.0.1")}),
            std::vector<std::string>{"10.1.0.1/32"});
  EXPECT_EQ(PrefixStrings({*ike::SelectorFromCidr("203.0.113.0/24")}),
            std::vector<std::string>{"203.0.113.0/24"});
  EXPECT_EQ(PrefixStrings({*ike::SelectorFromCidr("0.0.0.0/0")}),
            std::vector<std::string>{"0.0.0.0/0"});
  EXPECT_EQ(PrefixStrings({*ike::SelectorFromCidr("::/0")}), std::vector<std::string>{"::/0"});
  EXPECT_EQ(PrefixStrings({*ike::SelectorFromCidr("2001:db8::1")}),
            std::vector<std::string>{"2001:db8::1/128"});
  // 10.0.0.1 - 10.0.0.6: .1/32, .2/31, .4/31, .6/32.
  EXPECT_EQ(PrefixStrings({Range("10.0.0.1", "10.0.0.6")}),
            (std::vector<std::string>{"10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"}));
  // Up to the last address of the space, without wrapping.
  EXPECT_EQ(PrefixStrings({Range("255.255.255.254", "255.255.255.255")}),
            std::vector<std::string>{"255.255.255.254/31"});
}

TEST(SaPoliciesTest, OnePolicyPerPeerAndSelectorsRekeysJoin) {
  SaPolicies p;
  bool created = false;
  const auto a = p.Join("peer-a", {P("203.0.113.0/24")}, {P("10.1.0.1/32")}, 100, &created);
  EXPECT_TRUE(created);
  EXPECT_GE(a, kFirstSaPolicy);
  // The same peer, the same selectors (in another order): the same policy.
  EXPECT_EQ(p.Join("peer-a", {P("203.0.113.0/24")}, {P("10.1.0.1/32")}, 101, &created), a);
  EXPECT_FALSE(created);
  const auto b = p.Join("peer-b", {P("203.0.113.0/24")}, {P("10.2.0.1/32")}, 200, &created);
  EXPECT_TRUE(created);
  EXPECT_NE(a, b);
  p.JoinExisting(b, 201);  // a rekey's successor
  EXPECT_EQ(p.Find(b)->members, (std::vector<std::uint32_t>{200, 201}));
  EXPECT_FALSE(p.Leave(b, 200));
  EXPECT_TRUE(p.Leave(b, 201));  // the last one: gone, its id free again
  EXPECT_EQ(p.Find(b), nullptr);
  EXPECT_EQ(p.Join("peer-c", {P("203.0.113.0/24")}, {P("10.3.0.1/32")}, 300, &created), b);
}

TEST(SaPoliciesTest, OverlapsWithAnotherPeerAreConflicts) {
  SaPolicies p;
  bool created = false;
  p.Join("peer-a", {P("203.0.113.0/24")}, {P("10.1.0.1/32")}, 100, &created);
  p.Join("peer-b", {P("203.0.113.0/24")}, {P("10.2.0.0/16")}, 200, &created);
  const std::vector<policy::Prefix> local{P("203.0.113.0/24")};
  // The same address, a prefix around it, one inside another's prefix: conflicts.
  ASSERT_NE(p.Conflict("peer-x", local, {P("10.1.0.1/32")}), nullptr);
  EXPECT_EQ(*p.Conflict("peer-x", local, {P("10.1.0.1/32")}), "peer-a");
  EXPECT_EQ(*p.Conflict("peer-x", local, {P("10.1.0.0/24")}), "peer-a");
  EXPECT_EQ(*p.Conflict("peer-x", local, {P("10.2.3.4/32")}), "peer-b");
  EXPECT_NE(p.Conflict("peer-x", local, {P("0.0.0.0/0")}), nullptr);
  // Disjoint addresses, another local side, or the same peer: no conflict.
  EXPECT_EQ(p.Conflict("peer-x", local, {P("10.3.0.1/32")}), nullptr);
  EXPECT_EQ(p.Conflict("peer-x", {P("198.51.100.0/24")}, {P("10.1.0.1/32")}), nullptr);
  EXPECT_EQ(p.Conflict("peer-a", local, {P("10.1.0.0/24")}), nullptr);
  EXPECT_EQ(p.Conflict("peer-x", local, {P("2001:db8::1/128")}), nullptr);
}

// ---------------------------------------------------------------- a concentrator

// The concentrator (B, 192.0.2.2): one connection for any peer, its network 203.0.113.0/24,
// peers' inner addresses anywhere in 10.0.0.0/8.
std::string Concentrator() {
  return "[global]\nlisten = \"192.0.2.2\"\nmax_rekeys_per_second = 1000\n"
         "\n[[connection]]\nname = \"rw\"\nlocal_addrs = \"192.0.2.2\"\nremote_addrs = \"%any\"\n"
         "local_id = \"gw\"\nremote_id = \"%any\"\npsk = \"test secret\"\n"
         "local_ts = \"203.0.113.0/24\"\nremote_ts = \"10.0.0.0/8\"\n";
}

// A road warrior at 192.0.2.`host` as `id`, with the inner address(es) `inner`.
std::string RoadWarrior(int host, const std::string& id, const std::string& inner) {
  const std::string me = "192.0.2." + std::to_string(host);
  return "[global]\nlisten = \"" + me + "\"\nmax_rekeys_per_second = 1000\n"
         "\n[[connection]]\nname = \"home\"\nlocal_addrs = \"" + me +
         "\"\nremote_addrs = \"192.0.2.2\"\nlocal_id = \"" + id +
         "\"\nremote_id = \"gw\"\npsk = \"test secret\"\nlocal_ts = \"" + inner +
         "\"\nremote_ts = \"203.0.113.0/24\"\n";
}

std::size_t EstablishedSas(const Gateway& gw) {
  std::size_t n = 0;
  for (const auto& [ours, e] : gw.ike_sas().entries())
    n += e.sa->state() == ike::IkeSa::State::kEstablished;
  return n;
}

std::size_t ChildSas(const Gateway& gw) {
  std::size_t n = 0;
  for (const auto& [ours, e] : gw.ike_sas().entries()) n += e.sa->children().size();
  return n;
}

struct Crowd {
  Crowd() : p(RoadWarrior(1, "peer1", "10.1.0.1"), Concentrator()) {
    peers = {&p.a, &p.AddNode("192.0.2.3", RoadWarrior(3, "peer2", "10.2.0.1")),
             &p.AddNode("192.0.2.4", RoadWarrior(4, "peer3", "10.3.0.1"))};
  }
  // The node that would open a packet the concentrator sends to `inner`, or null.
  Node* ReceiverOf(const std::string& inner) {
    const std::uint32_t spi = p.b.dataplane.OutboundSpiFor("203.0.113.1", inner);
    for (Node* n : p.nodes()) {
      if (n->dataplane.inbound.count(spi) != 0) return n;
    }
    return nullptr;
  }
  GatewayPair p;
  std::vector<Node*> peers;
  const std::vector<std::string> inner = {"10.1.0.1", "10.2.0.1", "10.3.0.1"};
};

TEST(ConcentratorTest, EveryRoadWarriorGetsItsOwnTraffic) {
  Crowd c;
  ASSERT_TRUE(c.p.ok()) << c.p.error();
  std::string err;
  for (Node* n : c.peers) ASSERT_TRUE(n->gw->Initiate("home", &err)) << err;
  c.p.Pump();
  ASSERT_EQ(EstablishedSas(*c.p.b.gw), 3u);
  ASSERT_EQ(ChildSas(*c.p.b.gw), 3u);
  EXPECT_EQ(c.p.b.gw->children().policies().size(), 3u);
  EXPECT_EQ(c.p.b.dataplane.sa_policies.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    // Replies to each peer's inner address leave on that peer's SA.
    EXPECT_EQ(c.ReceiverOf(c.inner[i]), c.peers[i]) << c.inner[i];
    // Each SA's inbound check admits its own peer's address only.
    const std::uint32_t spi = c.peers[i]->dataplane.outbound.begin()->second.spi;
    const auto& in = c.p.b.dataplane.inbound.at(spi);
    ASSERT_EQ(in.selectors.size(), 1u);
    EXPECT_EQ(in.selectors[0].remote.ToString(), c.inner[i] + "/32");
    EXPECT_EQ(in.selectors[0].local.ToString(), "203.0.113.0/24");
  }
  EXPECT_EQ(c.ReceiverOf("10.4.0.1"), nullptr);  // nobody's address: no SA carries it
  c.p.Traffic();
  EXPECT_TRUE(c.p.violations.empty()) << c.p.violations.front();
  for (Node* n : c.p.nodes()) EXPECT_EQ(n->lost_packets, 0u);
}

TEST(ConcentratorTest, AnotherPeersAddressIsRefusedWithTsUnacceptable) {
  Crowd c;
  ASSERT_TRUE(c.p.ok()) << c.p.error();
  std::string err;
  for (Node* n : c.peers) ASSERT_TRUE(n->gw->Initiate("home", &err)) << err;
  c.p.Pump();
  // A fourth peer claims 10.1.0.0/16, which holds peer1's address.
  Node& intruder = c.p.AddNode("192.0.2.5", RoadWarrior(5, "peer4", "10.1.0.0/16"));
  ASSERT_TRUE(c.p.ok()) << c.p.error();
  ASSERT_TRUE(intruder.gw->Initiate("home", &err)) << err;
  c.p.Pump();
  EXPECT_EQ(ChildSas(*c.p.b.gw), 3u);
  EXPECT_TRUE(intruder.dataplane.inbound.empty());
  EXPECT_EQ(c.p.b.gw->children().counters().policy_conflicts, 1u);
  EXPECT_EQ(control::StatsJson(*c.p.b.gw)["policies"]["conflicts"], 1);
  EXPECT_EQ(c.ReceiverOf("10.1.0.1"), c.peers[0]);  // peer1 keeps its traffic
}

TEST(ConcentratorTest, RekeysAndReconnectsKeepOnePolicyPerPeer) {
  Crowd c;
  ASSERT_TRUE(c.p.ok()) << c.p.error();
  std::string err;
  for (Node* n : c.peers) ASSERT_TRUE(n->gw->Initiate("home", &err)) << err;
  c.p.Pump();
  const auto before = c.p.b.dataplane.sa_policies;

  // Peer 2 rekeys its CHILD SA: the successor takes over the same policy.
  const std::uint32_t old_spi = c.p.b.dataplane.OutboundSpiFor("203.0.113.1", "10.2.0.1");
  ASSERT_EQ(c.peers[1]->gw->Rekey("home", false), 1);
  c.p.Pump();
  c.p.Advance(std::chrono::seconds(3));  // the old SA's inbound half lingers, then goes
  EXPECT_EQ(c.p.b.dataplane.sa_policies.size(), 3u);
  for (const auto& [id, pairs] : before) EXPECT_EQ(c.p.b.dataplane.sa_policies.count(id), 1u);
  EXPECT_NE(c.p.b.dataplane.OutboundSpiFor("203.0.113.1", "10.2.0.1"), old_spi);
  EXPECT_EQ(c.ReceiverOf("10.2.0.1"), c.peers[1]);

  // Peer 3 goes: its policy goes with its last SA; the others keep theirs.
  ASSERT_EQ(c.peers[2]->gw->Terminate("home"), 1);
  c.p.Pump();
  EXPECT_EQ(c.p.b.dataplane.sa_policies.size(), 2u);
  EXPECT_EQ(c.ReceiverOf("10.3.0.1"), nullptr);
  EXPECT_EQ(c.ReceiverOf("10.1.0.1"), c.peers[0]);

  // Peer 1 crashes and comes back (INITIAL_CONTACT): same identity, same address — its new
  // CHILD SA takes over its policy at once, and the old SAs go.
  c.p.Restart(c.p.a, RoadWarrior(1, "peer1", "10.1.0.1"));
  ASSERT_TRUE(c.p.a.gw->Initiate("home", &err)) << err;
  c.p.Pump();
  EXPECT_EQ(c.p.b.gw->children().counters().policy_conflicts, 0u);
  EXPECT_EQ(c.ReceiverOf("10.1.0.1"), &c.p.a);
  EXPECT_EQ(c.p.b.dataplane.sa_policies.size(), 2u);
  EXPECT_EQ(EstablishedSas(*c.p.b.gw), 2u);
}

// ---------------------------------------------------------------- virtual IPs from a pool

// The concentrator with a pool of six addresses (198.18.0.0/29 without network and broadcast):
// remote_ts is "dynamic", each peer's own virtual IP.
std::string PoolConcentrator(const std::string& addrs = "198.18.0.0/29") {
  return "[global]\nlisten = \"192.0.2.2\"\nmax_rekeys_per_second = 1000\n"
         "\n[[pool]]\nname = \"rw\"\naddrs = \"" + addrs + "\"\ndns = \"203.0.113.53\"\n"
         "\n[[connection]]\nname = \"rw\"\nlocal_addrs = \"192.0.2.2\"\nremote_addrs = \"%any\"\n"
         "local_id = \"gw\"\nremote_id = \"%any\"\npsk = \"test secret\"\n"
         "local_ts = \"203.0.113.0/24\"\npools = \"rw\"\n";
}

// A road warrior that asks for an IPv4 address.
std::string VipRoadWarrior(int host, const std::string& id) {
  const std::string me = "192.0.2." + std::to_string(host);
  return "[global]\nlisten = \"" + me + "\"\nmax_rekeys_per_second = 1000\n"
         "\n[[connection]]\nname = \"home\"\nlocal_addrs = \"" + me +
         "\"\nremote_addrs = \"192.0.2.2\"\nlocal_id = \"" + id +
         "\"\nremote_id = \"gw\"\npsk = \"test secret\"\nlocal_ts = \"0.0.0.0/0\"\n"
         "vips = \"0.0.0.0\"\nremote_ts = \"203.0.113.0/24\"\n";
}

std::string VirtualIpOf(const Gateway& gw) {
  for (const auto& [ours, e] : gw.ike_sas().entries()) {
    if (!e.sa->virtual_ips().empty()) return ike::ToString(e.sa->virtual_ips()[0]);
  }
  return "";
}

TEST(ConcentratorTest, PoolGivesEachRoadWarriorItsOwnAddressUntilItIsFull) {
  GatewayPair p(VipRoadWarrior(1, "rw1"), PoolConcentrator());
  std::vector<Node*> peers{&p.a};
  for (int i = 2; i <= 8; ++i)
    peers.push_back(&p.AddNode("192.0.2." + std::to_string(i + 1), VipRoadWarrior(i + 1, "rw" + std::to_string(i))));
  ASSERT_TRUE(p.ok()) << p.error();
  std::string err;
  for (Node* n : peers) ASSERT_TRUE(n->gw->Initiate("home", &err)) << err;
  p.Pump();
  // Six addresses, eight peers: six CHILD SAs, each to its own address; two refused.
  std::set<std::string> addresses;
  std::size_t with_child = 0;
  for (Node* n : peers) {
    const std::string vip = VirtualIpOf(*n->gw);
    if (n->dataplane.inbound.empty()) {
      EXPECT_EQ(vip, "") << "an address without a CHILD SA";
      continue;
    }
    ++with_child;
    ASSERT_NE(vip, "");
    addresses.insert(vip);
    // The concentrator sends the peer's traffic to its SA, and nobody else's.
    const std::string host = vip.substr(0, vip.find('/'));
    EXPECT_EQ(p.b.dataplane.OutboundSpiFor("203.0.113.1", host),
              n->dataplane.inbound.begin()->first) << host;
  }
  EXPECT_EQ(with_child, 6u);
  EXPECT_EQ(addresses.size(), 6u);
  EXPECT_EQ(p.b.gw->counters().pool_refused, 2u);
  const nlohmann::json stats = control::StatsJson(*p.b.gw);
  EXPECT_EQ(stats["pools"][0]["in_use"], 6);
  EXPECT_EQ(stats["pools"][0]["exhausted"], 2);
  const nlohmann::json leases = p.b.gw->pools().LeasesJson();
  EXPECT_EQ(leases["pools"][0]["leases"].size(), 6u);

  // A reload with a bigger pool admits the others; the six keep their addresses.
  const auto before = addresses;
  const config::LoadResult bigger = config::LoadString(PoolConcentrator("198.18.0.0/28"), "b.toml");
  ASSERT_TRUE(bigger.ok) << bigger.error;
  ASSERT_TRUE(p.b.gw->Reload(bigger.config).ok);
  for (Node* n : peers) {
    if (n->dataplane.inbound.empty()) {
      n->gw->Terminate("home");
      p.Pump();
      ASSERT_TRUE(n->gw->Initiate("home", &err)) << err;
    }
  }
  p.Pump();
  addresses.clear();
  for (Node* n : peers) {
    EXPECT_FALSE(n->dataplane.inbound.empty());
    addresses.insert(VirtualIpOf(*n->gw));
  }
  EXPECT_EQ(addresses.size(), 8u);
  for (const auto& a : before) EXPECT_EQ(addresses.count(a), 1u) << a;
}

TEST(ConcentratorTest, AReconnectingRoadWarriorGetsItsAddressBack) {
  GatewayPair p(VipRoadWarrior(1, "rw1"), PoolConcentrator());
  Node& other = p.AddNode("192.0.2.3", VipRoadWarrior(3, "rw2"));
  ASSERT_TRUE(p.ok()) << p.error();
  std::string err;
  ASSERT_TRUE(p.a.gw->Initiate("home", &err)) << err;
  p.Pump();
  const std::string first = VirtualIpOf(*p.a.gw);
  ASSERT_NE(first, "");
  // It crashes and comes back (INITIAL_CONTACT): the old IKE SA goes, the lease stays its own.
  p.Restart(p.a, VipRoadWarrior(1, "rw1"));
  ASSERT_TRUE(other.gw->Initiate("home", &err)) << err;
  ASSERT_TRUE(p.a.gw->Initiate("home", &err)) << err;
  p.Pump();
  EXPECT_EQ(VirtualIpOf(*p.a.gw), first);
  EXPECT_NE(VirtualIpOf(*other.gw), first);
  EXPECT_EQ(control::StatsJson(*p.b.gw)["pools"][0]["in_use"], 2);
  // It leaves: the lease goes offline, and still is its own.
  ASSERT_EQ(p.a.gw->Terminate("home"), 1);
  p.Pump();
  EXPECT_EQ(control::StatsJson(*p.b.gw)["pools"][0]["in_use"], 1);
  ASSERT_TRUE(p.a.gw->Initiate("home", &err)) << err;
  p.Pump();
  EXPECT_EQ(VirtualIpOf(*p.a.gw), first);
}

// global.leases_file: the concentrator restarts and a returning peer gets its address back.
TEST(ConcentratorTest, LeasesSurviveARestartOfTheConcentrator) {
  const std::string file = ::testing::TempDir() + "/spigot_leases_test.json";
  std::remove(file.c_str());
  std::string b_toml = PoolConcentrator();
  b_toml.insert(b_toml.find("max_rekeys"), "leases_file = \"" + file + "\"\n");
  GatewayPair p(VipRoadWarrior(1, "rw1"), b_toml);
  Node& other = p.AddNode("192.0.2.3", VipRoadWarrior(3, "rw2"));
  ASSERT_TRUE(p.ok()) << p.error();
  std::string err;
  ASSERT_TRUE(p.a.gw->Initiate("home", &err)) << err;
  p.Pump();
  const std::string first = VirtualIpOf(*p.a.gw);
  ASSERT_NE(first, "");
  p.Advance(seconds(3));  // saved within kLeasesSaveInterval
  // Both restart; the other peer comes first and must not get rw1's address.
  p.Restart(p.b, b_toml);
  p.Restart(p.a, VipRoadWarrior(1, "rw1"));
  ASSERT_TRUE(p.ok()) << p.error();
  ASSERT_TRUE(other.gw->Initiate("home", &err)) << err;
  p.Pump();
  EXPECT_NE(VirtualIpOf(*other.gw), first);
  ASSERT_TRUE(p.a.gw->Initiate("home", &err)) << err;
  p.Pump();
  EXPECT_EQ(VirtualIpOf(*p.a.gw), first);
  std::remove(file.c_str());
}

// global.lease_db: the lease is in the database once the CFG_REPLY is out — no interval, no
// save on the way down — so a concentrator that comes back gives it to its identity again.
TEST(ConcentratorTest, LeaseDbHoldsTheLeaseAsSoonAsTheReplyIsOut) {
  const std::string db = ::testing::TempDir() + "/spigot_lease_db_test.db";
  for (const char* suffix : {"", "-wal", "-shm"}) std::remove((db + suffix).c_str());
  std::string b_toml = PoolConcentrator();
  b_toml.insert(b_toml.find("max_rekeys"), "lease_db = \"" + db + "\"\n");
  GatewayPair p(VipRoadWarrior(1, "rw1"), b_toml);
  Node& other = p.AddNode("192.0.2.3", VipRoadWarrior(3, "rw2"));
  ASSERT_TRUE(p.ok()) << p.error();
  EXPECT_EQ(control::StatsJson(*p.b.gw)["lease_db"]["state"], "created");
  std::string err;
  ASSERT_TRUE(p.a.gw->Initiate("home", &err)) << err;
  p.Pump();
  const std::string first = VirtualIpOf(*p.a.gw);
  ASSERT_NE(first, "");
  EXPECT_EQ(control::StatsJson(*p.b.gw)["lease_db"]["writes"], 2);  // the start, and rw1's lease
  p.Restart(p.b, b_toml);
  p.Restart(p.a, VipRoadWarrior(1, "rw1"));
  ASSERT_TRUE(p.ok()) << p.error();
  const nlohmann::json status = control::StatsJson(*p.b.gw)["lease_db"];
  EXPECT_EQ(status["state"], "ok");
  EXPECT_EQ(status["loaded"], 1);
  ASSERT_TRUE(other.gw->Initiate("home", &err)) << err;
  p.Pump();
  EXPECT_NE(VirtualIpOf(*other.gw), first);
  ASSERT_TRUE(p.a.gw->Initiate("home", &err)) << err;
  p.Pump();
  EXPECT_EQ(VirtualIpOf(*p.a.gw), first);
  for (const char* suffix : {"", "-wal", "-shm"}) std::remove((db + suffix).c_str());
}

}  // namespace
}  // namespace spigot::gateway
