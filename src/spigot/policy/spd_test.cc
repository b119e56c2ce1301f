#include "spigot/policy/spd.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace spigot::policy {
namespace {

Prefix P(const char* text) {
  const auto p = Prefix::Parse(text);
  EXPECT_TRUE(p) << text;
  return p.value_or(Prefix{});
}

// An address in text form as (family, bytes).
struct Addr {
  Family family = Family::kIpv4;
  std::array<std::uint8_t, 16> bytes{};
  std::span<const std::uint8_t> span() const {
    return std::span(bytes).first(AddressLength(family));
  }
};

Addr A(const char* text) {
  Addr a;
  if (inet_pton(AF_INET, text, a.bytes.data()) == 1) return a;
  a.family = Family::kIpv6;
  EXPECT_EQ(inet_pton(AF_INET6, text, a.bytes.data()), 1) << text;
  return a;
}

PolicyId Lookup(const SpdSnapshot& spd, const char* src, const char* dst) {
  const Addr s = A(src);
  const Addr d = A(dst);
  EXPECT_EQ(s.family, d.family);
  return spd.LookupOutbound(s.family, s.span(), d.span());
}

bool Allows(const SpdSnapshot& spd, PolicyId id, const char* src, const char* dst) {
  const Addr s = A(src);
  const Addr d = A(dst);
  return spd.Allows(id, s.family, s.span(), d.span());
}

void Add(SpdBuilder& b, PolicyId id, const char* local, const char* remote) {
  ASSERT_EQ(b.Add(id, P(local), P(remote)), SpdBuilder::AddStatus::kOk) << local << " " << remote;
}

TEST(SpdTest, EmptySnapshotMatchesNothing) {
  const auto spd = SpdBuilder().Build();
  EXPECT_EQ(Lookup(*spd, "10.0.0.1", "10.0.0.2"), kNoPolicy);
  EXPECT_EQ(Lookup(*spd, "::1", "::2"), kNoPolicy);
  EXPECT_FALSE(Allows(*spd, 1, "10.0.0.1", "10.0.0.2"));
  EXPECT_EQ(spd->selector_count(), 0u);
  EXPECT_EQ(spd->policy_count(), 0u);
}

TEST(SpdTest, MoreSpecificRemoteWins) {
  SpdBuilder b;
  Add(b, 1, "0.0.0.0/0", "0.0.0.0/0");
  Add(b, 2, "0.0.0.0/0", "10.0.0.0/8");
  Add(b, 3, "0.0.0.0/0", "10.1.0.0/16");
  Add(b, 4, "0.0.0.0/0", "10.1.2.0/24");
  Add(b, 5, "0.0.0.0/0", "10.1.2.3/32");
  const auto spd = b.Build();
  const struct {
    const char* dst;
    PolicyId want;
  } kCases[] = {
      {"10.1.2.3", 5},       {"10.1.2.4", 4},        {"10.1.2.255", 4}, {"10.1.3.0", 3},
      {"10.1.255.255", 3},   {"10.2.0.0", 2},        {"10.255.0.1", 2}, {"11.0.0.0", 1},
      {"9.255.255.255", 1},  {"255.255.255.255", 1}, {"0.0.0.0", 1},
  };
  for (const auto& c : kCases) EXPECT_EQ(Lookup(*spd, "192.0.2.1", c.dst), c.want) << c.dst;
  EXPECT_EQ(spd->distinct_remote_lengths(Family::kIpv4), 5u);
}

TEST(SpdTest, SourceMustBeInTheLocalPrefix) {
  SpdBuilder b;
  Add(b, 1, "192.168.1.0/24", "10.1.0.0/16");
  Add(b, 2, "192.168.2.0/24", "10.1.0.0/16");
  Add(b, 3, "192.168.0.0/16", "10.0.0.0/8");
  const auto spd = b.Build();
  EXPECT_EQ(Lookup(*spd, "192.168.1.7", "10.1.0.1"), 1u);
  EXPECT_EQ(Lookup(*spd, "192.168.2.7", "10.1.0.1"), 2u);
  // No /16 pair takes this source: the walk goes on to the /8.
  EXPECT_EQ(Lookup(*spd, "192.168.3.7", "10.1.0.1"), 3u);
  EXPECT_EQ(Lookup(*spd, "192.169.0.1", "10.1.0.1"), kNoPolicy);
  EXPECT_EQ(Lookup(*spd, "192.168.1.7", "11.0.0.1"), kNoPolicy);
}

TEST(SpdTest, TiesGoToTheLongestLocalThenTheFirstAdded) {
  SpdBuilder b;
  Add(b, 1, "192.168.0.0/16", "10.1.0.0/16");
  Add(b, 2, "192.168.1.0/24", "10.1.0.0/16");
  Add(b, 3, "192.168.1.128/25", "10.0.0.0/8");  // longer local, shorter remote: loses
  Add(b, 9, "192.168.1.0/24", "10.1.0.0/16");   // same pair as 2, added later: never chosen
  const auto spd = b.Build();
  EXPECT_EQ(Lookup(*spd, "192.168.1.200", "10.1.0.1"), 2u);
  EXPECT_EQ(Lookup(*spd, "192.168.2.1", "10.1.0.1"), 1u);
  EXPECT_EQ(Lookup(*spd, "192.168.1.200", "10.2.0.1"), 3u);
  EXPECT_TRUE(Allows(*spd, 9, "10.1.0.1", "192.168.1.200"));  // still its own selector inbound

  b.Remove(2);
  EXPECT_EQ(Lookup(*b.Build(), "192.168.1.200", "10.1.0.1"), 9u);
}

TEST(SpdTest, Ipv6) {
  SpdBuilder b;
  Add(b, 1, "::/0", "::/0");
  Add(b, 2, "2001:db8:a::/48", "2001:db8::/32");
  Add(b, 3, "2001:db8:a::/48", "2001:db8:1::/48");
  Add(b, 4, "2001:db8:a::/48", "2001:db8:1:2:3:4:5:0/127");
  Add(b, 5, "2001:db8:a::1/128", "2001:db8:1:2:3:4:5:6/128");
  Add(b, 6, "2001:db8:b::/48", "2001:db8:1:2::/65");
  const auto spd = b.Build();
  const struct {
    const char* src;
    const char* dst;
    PolicyId want;
  } kCases[] = {
      {"2001:db8:a::1", "2001:db8:1:2:3:4:5:6", 5},
      {"2001:db8:a::2", "2001:db8:1:2:3:4:5:6", 3},  // /127 is 2001:db8:1:2:3:4:5:0-1
      {"2001:db8:a::2", "2001:db8:1:2:3:4:5:1", 4},
      {"2001:db8:a::2", "2001:db8:1:2:3:4:5:2", 3},
      {"2001:db8:a::2", "2001:db8:2::", 2},
      {"2001:db8:b::2", "2001:db8:1:2:7fff::", 6},
      {"2001:db8:b::2", "2001:db8:1:2:8000::", 1},
      {"2001:db8:c::2", "2001:db8:1::", 1},
      {"fe80::1", "2001:db9::", 1},
  };
  for (const auto& c : kCases) EXPECT_EQ(Lookup(*spd, c.src, c.dst), c.want) << c.src << " " << c.dst;
}

TEST(SpdTest, DefaultRoutesAreSeparatePerFamily) {
  SpdBuilder b;
  Add(b, 4, "0.0.0.0/0", "0.0.0.0/0");
  const auto only4 = b.Build();
  EXPECT_EQ(Lookup(*only4, "1.2.3.4", "5.6.7.8"), 4u);
  EXPECT_EQ(Lookup(*only4, "::1", "::2"), kNoPolicy);
  Add(b, 6, "::/0", "::/0");
  const auto both = b.Build();
  EXPECT_EQ(Lookup(*both, "1.2.3.4", "5.6.7.8"), 4u);
  EXPECT_EQ(Lookup(*both, "::1", "::2"), 6u);
  EXPECT_EQ(Lookup(*both, "::ffff:1.2.3.4", "::ffff:5.6.7.8"), 6u);
}

TEST(SpdTest, WrongAddressSizesMatchNothing) {
  SpdBuilder b;
  Add(b, 4, "0.0.0.0/0", "0.0.0.0/0");
  Add(b, 6, "::/0", "::/0");
  const auto spd = b.Build();
  const std::array<std::uint8_t, 16> a{};
  EXPECT_EQ(spd->LookupOutbound(Family::kIpv4, std::span(a), std::span(a).first(4)), kNoPolicy);
  EXPECT_EQ(spd->LookupOutbound(Family::kIpv4, std::span(a).first(3), std::span(a).first(4)),
            kNoPolicy);
  EXPECT_EQ(spd->LookupOutbound(Family::kIpv6, std::span(a).first(4), std::span(a)), kNoPolicy);
  EXPECT_EQ(spd->LookupOutbound(static_cast<Family>(5), std::span(a), std::span(a)), kNoPolicy);
  EXPECT_EQ(spd->LookupOutbound(Family::kIpv4, std::span(a).first(4), std::span(a).first(4)), 4u);
  EXPECT_FALSE(spd->Allows(4, Family::kIpv4, std::span(a), std::span(a).first(4)));
}

TEST(SpdTest, BuilderRefusesWhatCanNeverMatch) {
  SpdBuilder b;
  EXPECT_EQ(b.Add(kNoPolicy, P("10.0.0.0/8"), P("10.0.0.0/8")), SpdBuilder::AddStatus::kReservedId);
  EXPECT_EQ(b.Add(1, P("10.0.0.0/8"), P("2001:db8::/32")), SpdBuilder::AddStatus::kFamilyMismatch);
  Prefix bad = P("10.0.0.0/8");
  bad.prefix_len = 33;
  EXPECT_EQ(b.Add(1, bad, P("10.0.0.0/8")), SpdBuilder::AddStatus::kBadPrefix);
  bad.family = static_cast<Family>(0);
  bad.prefix_len = 8;
  EXPECT_EQ(b.Add(1, P("10.0.0.0/8"), bad), SpdBuilder::AddStatus::kBadPrefix);
  EXPECT_EQ(b.selector_count(), 0u);

  // Host bits set by hand are cleared on Add.
  Prefix sloppy = P("10.0.0.0/8");
  sloppy.address[3] = 7;
  EXPECT_EQ(b.Add(1, P("0.0.0.0/0"), sloppy), SpdBuilder::AddStatus::kOk);
  EXPECT_EQ(Lookup(*b.Build(), "1.1.1.1", "10.9.9.9"), 1u);
}

TEST(SpdTest, Removal) {
  SpdBuilder b;
  Add(b, 1, "0.0.0.0/0", "10.0.0.0/8");
  Add(b, 2, "0.0.0.0/0", "10.1.0.0/16");
  Add(b, 2, "0.0.0.0/0", "10.2.0.0/16");
  Add(b, 3, "::/0", "2001:db8::/32");
  EXPECT_EQ(b.selector_count(), 4u);

  EXPECT_TRUE(b.Remove(2, P("0.0.0.0/0"), P("10.1.0.0/16")));
  EXPECT_FALSE(b.Remove(2, P("0.0.0.0/0"), P("10.1.0.0/16")));
  EXPECT_FALSE(b.Remove(7, P("0.0.0.0/0"), P("10.1.0.0/16")));
  auto spd = b.Build();
  EXPECT_EQ(Lookup(*spd, "1.1.1.1", "10.1.0.1"), 1u);
  EXPECT_EQ(Lookup(*spd, "1.1.1.1", "10.2.0.1"), 2u);
  EXPECT_EQ(spd->policy_count(), 3u);

  EXPECT_EQ(b.Remove(2), 1u);
  EXPECT_EQ(b.Remove(2), 0u);
  spd = b.Build();
  EXPECT_EQ(Lookup(*spd, "1.1.1.1", "10.2.0.1"), 1u);
  EXPECT_FALSE(Allows(*spd, 2, "10.2.0.1", "1.1.1.1"));
  EXPECT_EQ(spd->selector_count(), 2u);

  EXPECT_EQ(b.Remove(1), 1u);
  spd = b.Build();
  EXPECT_EQ(Lookup(*spd, "1.1.1.1", "10.2.0.1"), kNoPolicy);
  EXPECT_EQ(spd->distinct_remote_lengths(Family::kIpv4), 0u);
  EXPECT_EQ(Lookup(*spd, "::1", "2001:db8::1"), 3u);

  b.Clear();
  EXPECT_EQ(Lookup(*b.Build(), "::1", "2001:db8::1"), kNoPolicy);
}

// Inbound: the decrypted inner packet comes FROM the remote side TO the local side.
TEST(SpdTest, AllowsChecksTheInnerPacketAgainstThePolicysSelectors) {
  SpdBuilder b;
  const std::vector<Prefix> locals = {P("192.168.1.0/24"), P("2001:db8:a::/48")};
  const std::vector<Prefix> remotes = {P("10.1.0.0/16"), P("10.9.9.9/32"), P("2001:db8:1::/48")};
  EXPECT_EQ(b.AddCrossProduct(1, locals, remotes), 3u);  // 2 IPv4 pairs, 1 IPv6
  Add(b, 2, "0.0.0.0/0", "0.0.0.0/0");
  const auto spd = b.Build();
  const struct {
    PolicyId id;
    const char* src;
    const char* dst;
    bool allowed;
  } kCases[] = {
      {1, "10.1.2.3", "192.168.1.5", true},
      {1, "10.9.9.9", "192.168.1.255", true},
      {1, "10.9.9.8", "192.168.1.5", false},   // src outside every remote prefix
      {1, "10.1.2.3", "192.168.2.5", false},   // dst outside the local prefix
      {1, "192.168.1.5", "10.1.2.3", false},   // the outbound direction
      {1, "2001:db8:1::1", "2001:db8:a::1", true},
      {1, "2001:db8:2::1", "2001:db8:a::1", false},
      {1, "2001:db8:1::1", "2001:db8:b::1", false},
      {2, "1.2.3.4", "5.6.7.8", true},
      {2, "2001:db8:1::1", "2001:db8:a::1", false},  // policy 2 has no IPv6 selector
      {3, "10.1.2.3", "192.168.1.5", false},         // no such policy
      {kNoPolicy, "10.1.2.3", "192.168.1.5", false},
  };
  for (const auto& c : kCases) {
    EXPECT_EQ(Allows(*spd, c.id, c.src, c.dst), c.allowed) << c.id << " " << c.src << " " << c.dst;
  }
  EXPECT_EQ(spd->selector_count(), 4u);
  EXPECT_EQ(spd->policy_count(), 2u);
}

// ---- Against a brute-force reference ---------------------------------------------------------

struct RefPair {
  PolicyId id;
  Prefix local;
  Prefix remote;
};

// The definition, by scanning everything: longest remote, then longest local, then first added.
PolicyId Reference(const std::vector<RefPair>& pairs, std::span<const std::uint8_t> src,
                   std::span<const std::uint8_t> dst) {
  const RefPair* best = nullptr;
  for (const RefPair& p : pairs) {
    if (!p.remote.Contains(dst) || !p.local.Contains(src)) continue;
    if (best == nullptr || p.remote.prefix_len > best->remote.prefix_len ||
        (p.remote.prefix_len == best->remote.prefix_len &&
         p.local.prefix_len > best->local.prefix_len)) {
      best = &p;
    }
  }
  return best ? best->id : kNoPolicy;
}

// Prefixes clustered around a few "hot" addresses, so that they nest and lookups hit at many
// lengths; lengths are uniform over the whole range, including 0 and the full length.
class RandomSpd {
 public:
  RandomSpd(Family family, std::uint32_t seed) : family_(family), rng_(seed) {
    for (auto& h : hot_) h = RandomAddress();
  }

  std::array<std::uint8_t, 16> RandomAddress() {
    std::array<std::uint8_t, 16> a{};
    for (std::size_t i = 0; i < AddressLength(family_); ++i) a[i] = static_cast<std::uint8_t>(rng_());
    return a;
  }

  // A hot address with some of its low bits flipped.
  std::array<std::uint8_t, 16> NearHot() {
    std::array<std::uint8_t, 16> a = hot_[rng_() % hot_.size()];
    const unsigned bits = AddressLength(family_) * 8;
    const unsigned flips = rng_() % 4;
    for (unsigned f = 0; f < flips; ++f) {
      const unsigned bit = bits - 1 - rng_() % bits;
      a[bit / 8] ^= static_cast<std::uint8_t>(0x80u >> (bit % 8));
    }
    return a;
  }

  Prefix RandomPrefix() {
    const auto a = rng_() % 8 == 0 ? RandomAddress() : NearHot();
    const auto len = static_cast<std::uint8_t>(rng_() % (MaxPrefixLength(family_) + 1u));
    return *Prefix::Make(family_, std::span(a).first(AddressLength(family_)), len);
  }

  std::mt19937& rng() { return rng_; }

 private:
  Family family_;
  std::mt19937 rng_;
  std::array<std::array<std::uint8_t, 16>, 16> hot_;
};

void CheckAgainstReference(Family family, std::uint32_t seed) {
  RandomSpd gen(family, seed);
  SpdBuilder b;
  std::vector<RefPair> pairs;
  for (PolicyId id = 0; id < 3000; ++id) {
    const int n = 1 + static_cast<int>(gen.rng()() % 2);
    for (int k = 0; k < n; ++k) {
      const RefPair p{id, gen.RandomPrefix(), gen.RandomPrefix()};
      ASSERT_EQ(b.Add(p.id, p.local, p.remote), SpdBuilder::AddStatus::kOk);
      pairs.push_back(p);
    }
  }

  const std::size_t len = AddressLength(family);
  auto check = [&](const SpdSnapshot& spd, const std::vector<RefPair>& ref) {
    std::size_t matched = 0;
    for (int i = 0; i < 20000; ++i) {
      const auto src = i % 4 == 0 ? gen.RandomAddress() : gen.NearHot();
      const auto dst = i % 4 == 1 ? gen.RandomAddress() : gen.NearHot();
      const auto s = std::span(src).first(len);
      const auto d = std::span(dst).first(len);
      const PolicyId want = Reference(ref, s, d);
      ASSERT_EQ(spd.LookupOutbound(family, s, d), want) << "lookup " << i;
      matched += want != kNoPolicy;
      // Allows() agrees with the reference for the chosen policy and a random one.
      if (want != kNoPolicy) {
        ASSERT_TRUE(spd.Allows(want, family, d, s));
      }
      const PolicyId other = gen.rng()() % 3000;
      bool ref_allows = false;
      for (const RefPair& p : ref) {
        ref_allows |= p.id == other && p.remote.Contains(d) && p.local.Contains(s);
      }
      ASSERT_EQ(spd.Allows(other, family, d, s), ref_allows) << "allows " << i;
    }
    // The test is only worth something if most lookups hit, at many different lengths.
    EXPECT_GT(matched, 10000u);
  };

  const auto spd = b.Build();
  EXPECT_GT(spd->distinct_remote_lengths(family), MaxPrefixLength(family) * 9u / 10);
  check(*spd, pairs);

  // Remove a third of the policies (and a few single pairs) and check again.
  for (PolicyId id = 0; id < 3000; id += 3) b.Remove(id);
  std::erase_if(pairs, [](const RefPair& p) { return p.id % 3 == 0; });
  for (std::size_t i = 0; i < pairs.size(); i += 50) {
    ASSERT_TRUE(b.Remove(pairs[i].id, pairs[i].local, pairs[i].remote));
    pairs[i].id = kNoPolicy;
  }
  std::erase_if(pairs, [](const RefPair& p) { return p.id == kNoPolicy; });
  check(*b.Build(), pairs);
}

TEST(SpdTest, RandomIpv4PrefixesMatchBruteForce) { CheckAgainstReference(Family::kIpv4, 1); }
TEST(SpdTest, RandomIpv6PrefixesMatchBruteForce) { CheckAgainstReference(Family::kIpv6, 2); }

// ---- Publication -----------------------------------------------------------------------------

TEST(SpdPublishTest, StartsEmptyAndPublishesWithoutReaders) {
  Spd spd;
  auto reader = spd.RegisterReader();
  ASSERT_TRUE(reader);
  {
    auto g = reader->Lock();
    EXPECT_EQ(Lookup(*g, "1.1.1.1", "2.2.2.2"), kNoPolicy);
  }
  SpdBuilder b;
  Add(b, 7, "0.0.0.0/0", "0.0.0.0/0");
  spd.Publish(b.Build());
  EXPECT_EQ(Lookup(*reader->Lock(), "1.1.1.1", "2.2.2.2"), 7u);
  EXPECT_EQ(spd.publications(), 1u);
}

TEST(SpdPublishTest, ReaderSlotsAreBoundedAndReused) {
  Spd spd;
  std::vector<Spd::Reader> readers;
  for (std::size_t i = 0; i < Spd::kMaxReaders; ++i) {
    auto r = spd.RegisterReader();
    ASSERT_TRUE(r) << i;
    readers.push_back(std::move(*r));
  }
  EXPECT_FALSE(spd.RegisterReader());
  readers.pop_back();
  auto r = spd.RegisterReader();
  ASSERT_TRUE(r);
  // A moved-from reader gives its slot to the target; destroying it frees nothing twice.
  Spd::Reader moved = std::move(*r);
  r.reset();
  EXPECT_FALSE(spd.RegisterReader());
}

// Publish blocks while a guard that may hold the old snapshot is open.
TEST(SpdPublishTest, PublishWaitsForOpenGuards) {
  Spd spd;
  auto reader = spd.RegisterReader();
  ASSERT_TRUE(reader);
  std::atomic<bool> published{false};
  std::thread writer;
  {
    auto g = reader->Lock();
    writer = std::thread([&] {
      SpdBuilder b;
      b.Add(1, P("0.0.0.0/0"), P("0.0.0.0/0"));
      spd.Publish(b.Build());
      published = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_FALSE(published.load());
    EXPECT_EQ(Lookup(*g, "1.1.1.1", "2.2.2.2"), kNoPolicy);  // the old snapshot, still alive
  }
  writer.join();
  EXPECT_TRUE(published.load());
  EXPECT_EQ(Lookup(*reader->Lock(), "1.1.1.1", "2.2.2.2"), 1u);
}

// Readers loop on lookups while the control thread publishes a thousand snapshots. Snapshot k
// sends 10.0.0.0/8 to policy k and holds k+1 pairs, so a reader can check that what it sees is
// one whole snapshot (two lookups under one guard agree, the pair count matches the id) and
// that snapshots only move forward. Under ASan (SPIGOT_SANITIZE) this also catches a snapshot
// freed too early.
TEST(SpdPublishTest, ReadersSeeWholeSnapshotsWhilePublishing) {
  constexpr PolicyId kSnapshots = 1000;
  Spd spd;
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> lookups{0};
  auto read_loop = [&](Spd::Reader reader) {
    PolicyId last = 0;
    const Addr src = A("192.168.1.1");
    const Addr dst = A("10.1.2.3");
    std::uint64_t n = 0;
    std::uint64_t iterations = 0;
    while (!done.load(std::memory_order_relaxed)) {
      // More threads than this machine may have cores: a reader preempted inside its guard
      // holds the writer up for a time slice. Yielding between guards, as an event loop does
      // in epoll_wait, keeps the test short; it does not weaken it.
      if (++iterations % 64 == 0) std::this_thread::yield();
      auto g = reader.Lock();
      const PolicyId id = g->LookupOutbound(Family::kIpv4, src.span(), dst.span());
      if (id == kNoPolicy) {
        ASSERT_EQ(last, 0u);  // only the initial empty snapshot
        continue;
      }
      ASSERT_GE(id, last);
      ASSERT_EQ(g->selector_count(), id + 1);
      ASSERT_TRUE(g->Allows(id, Family::kIpv4, dst.span(), src.span()));
      ASSERT_EQ(g->LookupOutbound(Family::kIpv4, src.span(), dst.span()), id);
      last = id;
      ++n;
    }
    lookups += n;
  };
  auto r1 = spd.RegisterReader();
  auto r2 = spd.RegisterReader();
  ASSERT_TRUE(r1 && r2);
  std::thread t1(read_loop, std::move(*r1));
  std::thread t2(read_loop, std::move(*r2));

  SpdBuilder b;
  for (PolicyId k = 1; k <= kSnapshots; ++k) {
    b.Remove(k - 1);
    b.Add(k, P("192.168.0.0/16"), P("10.0.0.0/8"));
    // Filler pairs, so that snapshots are big enough for a use-after-free to show.
    b.Add(kSnapshots + k, P("172.16.0.0/12"), Prefix::Make(Family::kIpv4, std::array<std::uint8_t, 4>{
        20, static_cast<std::uint8_t>(k >> 8), static_cast<std::uint8_t>(k), 0}, 24).value());
    spd.Publish(b.Build());
  }
  done = true;
  t1.join();
  t2.join();
  EXPECT_EQ(spd.publications(), kSnapshots);
  EXPECT_GT(lookups.load(), 0u);
}

// ---- host policies -----------------------------------------------------------------------

TEST(SpdHostTest, HostPoliciesComeFirstAndFallBackToTheTables) {
  Spd spd;
  SpdBuilder b;
  // The connection's policy: what a trap or a "no SA" count hangs on.
  b.Add(1, P("203.0.113.0/24"), P("10.0.0.0/8"), SpdBuilder::Rank::kFallback);
  spd.Publish(b.Build());
  const std::vector<Prefix> local{P("203.0.113.0/24")};
  for (PolicyId id = 100; id < 103; ++id) {
    const std::string inner = "10." + std::to_string(id - 99) + ".0.1";
    ASSERT_TRUE(spd.SetHostPolicy(id, local, std::vector<Prefix>{P(inner.c_str())}));
  }
  auto reader = spd.RegisterReader();
  ASSERT_TRUE(reader);
  EXPECT_EQ(Lookup(*reader->Lock(), "203.0.113.1", "10.1.0.1"), 1u);  // not committed yet
  EXPECT_EQ(spd.CommitHostPolicies(), 3u);
  EXPECT_EQ(spd.CommitHostPolicies(), 0u);  // nothing new: nothing published
  {
    auto g = reader->Lock();
    EXPECT_EQ(Lookup(*g, "203.0.113.1", "10.1.0.1"), 100u);
    EXPECT_EQ(Lookup(*g, "203.0.113.1", "10.2.0.1"), 101u);
    EXPECT_EQ(Lookup(*g, "203.0.113.1", "10.3.0.1"), 102u);
    EXPECT_EQ(Lookup(*g, "203.0.113.1", "10.4.0.1"), 1u);    // nobody's: the connection
    EXPECT_EQ(Lookup(*g, "198.51.100.1", "10.1.0.1"), kNoPolicy);  // source outside local
    EXPECT_EQ(g->host_pair_count(), 3u);
  }
  EXPECT_EQ(spd.host_policy_count(), 3u);
  // A reload of the tables keeps the host policies.
  b.Add(2, P("203.0.113.0/24"), P("192.0.2.0/24"), SpdBuilder::Rank::kFallback);
  spd.Publish(b.Build());
  EXPECT_EQ(Lookup(*reader->Lock(), "203.0.113.1", "10.2.0.1"), 101u);
  EXPECT_EQ(Lookup(*reader->Lock(), "203.0.113.1", "192.0.2.9"), 2u);
  // Removed: back to the connection's policy.
  EXPECT_TRUE(spd.RemoveHostPolicy(101));
  EXPECT_FALSE(spd.RemoveHostPolicy(101));
  spd.CommitHostPolicies();
  EXPECT_EQ(Lookup(*reader->Lock(), "203.0.113.1", "10.2.0.1"), 1u);
  EXPECT_EQ(Lookup(*reader->Lock(), "203.0.113.1", "10.1.0.1"), 100u);
  EXPECT_EQ(spd.host_policy_count(), 2u);
}

TEST(SpdHostTest, RefusesWhatIsNotAHostPolicy) {
  Spd spd;
  const std::vector<Prefix> local{P("203.0.113.0/24")};
  EXPECT_FALSE(spd.SetHostPolicy(kNoPolicy, local, std::vector<Prefix>{P("10.1.0.1")}));
  EXPECT_FALSE(spd.SetHostPolicy(7, local, std::vector<Prefix>{P("10.1.0.0/24")}));
  EXPECT_FALSE(spd.SetHostPolicy(7, local, std::vector<Prefix>{P("2001:db8::1")}));  // no pair
  EXPECT_EQ(spd.host_policy_count(), 0u);
  EXPECT_EQ(spd.CommitHostPolicies(), 0u);
}

TEST(SpdHostTest, LongestLocalThenFirstSetAndBothFamilies) {
  Spd spd;
  ASSERT_TRUE(spd.SetHostPolicy(1, std::vector<Prefix>{P("0.0.0.0/0")}, std::vector<Prefix>{P("10.1.0.1")}));
  ASSERT_TRUE(spd.SetHostPolicy(2, std::vector<Prefix>{P("203.0.113.0/24")}, std::vector<Prefix>{P("10.1.0.1")}));
  ASSERT_TRUE(spd.SetHostPolicy(3, std::vector<Prefix>{P("203.0.113.0/24")}, std::vector<Prefix>{P("10.1.0.1")}));
  ASSERT_TRUE(spd.SetHostPolicy(4, std::vector<Prefix>{P("2001:db8:1::/48"), P("203.0.113.0/24")},
                                std::vector<Prefix>{P("2001:db8:2::7"), P("10.9.0.1")}));
  spd.CommitHostPolicies();
  auto reader = spd.RegisterReader();
  auto g = reader->Lock();
  EXPECT_EQ(Lookup(*g, "203.0.113.5", "10.1.0.1"), 2u);  // the longest local, then the first set
  EXPECT_EQ(Lookup(*g, "198.51.100.5", "10.1.0.1"), 1u);
  EXPECT_EQ(Lookup(*g, "2001:db8:1::1", "2001:db8:2::7"), 4u);
  EXPECT_EQ(Lookup(*g, "203.0.113.5", "10.9.0.1"), 4u);
  EXPECT_EQ(Lookup(*g, "2001:db8:1::1", "2001:db8:2::8"), kNoPolicy);
  EXPECT_EQ(g->host_pair_count(), 5u);  // 1 + 1 + 1 + (one pair per family)
}

// Enough policies for the shards to double a few times, some replaced and removed on the way:
// every lookup agrees with a map of what is set.
TEST(SpdHostTest, ManyPoliciesGrowTheShardsAndAgreeWithAMap) {
  Spd spd;
  std::mt19937 rng(7);
  std::unordered_map<std::uint32_t, PolicyId> expect;  // 198.18.x.y -> policy
  const std::vector<Prefix> local{P("0.0.0.0/0")};
  auto host = [](std::uint32_t n) {
    return Prefix::Make(Family::kIpv4, std::array<std::uint8_t, 4>{198, static_cast<std::uint8_t>(18 + (n >> 16)),
                                                                     static_cast<std::uint8_t>(n >> 8),
                                                                     static_cast<std::uint8_t>(n)}, 32).value();
  };
  constexpr std::uint32_t kPolicies = 60000;  // past 16 shards x 256 pairs: grows several times
  std::unordered_map<PolicyId, std::uint32_t> addr_of;
  for (std::uint32_t i = 0; i < kPolicies; ++i) {
    ASSERT_TRUE(spd.SetHostPolicy(i, local, std::vector<Prefix>{host(i)}));
    expect[i] = i;
    addr_of[i] = i;
    if (i % 1000 == 999) spd.CommitHostPolicies();
  }
  for (std::uint32_t k = 0; k < 5000; ++k) {  // replacements: a policy moves to another address
    const PolicyId id = rng() % kPolicies;
    const std::uint32_t addr = kPolicies + k;
    expect.erase(addr_of[id]);
    ASSERT_TRUE(spd.SetHostPolicy(id, local, std::vector<Prefix>{host(addr)}));
    expect[addr] = id;
    addr_of[id] = addr;
  }
  for (PolicyId id = 0; id < kPolicies; id += 3) {
    ASSERT_TRUE(spd.RemoveHostPolicy(id));
    expect.erase(addr_of[id]);
  }
  spd.CommitHostPolicies();
  auto reader = spd.RegisterReader();
  auto g = reader->Lock();
  EXPECT_GE(g->host_shard_count(), 64u);
  EXPECT_EQ(g->host_pair_count(), expect.size());
  const Addr src = A("192.0.2.1");
  for (std::uint32_t n = 0; n < kPolicies + 5000; ++n) {
    const Prefix d = host(n);
    auto it = expect.find(n);
    ASSERT_EQ(g->LookupOutbound(Family::kIpv4, src.span(), std::span(d.address).first(4)),
              it == expect.end() ? kNoPolicy : it->second) << n;
  }
}

// One change per commit, the whole table checked after each: a commit must carry every earlier
// commit's shards (the directory is double-buffered), including across a doubling of the shards.
TEST(SpdHostTest, EveryCommitPublishesExactlyWhatIsSet) {
  Spd spd;
  auto reader = spd.RegisterReader();
  std::mt19937 rng(99);
  const std::vector<Prefix> local{P("0.0.0.0/0")};
  auto host = [](std::uint32_t n) {
    return std::array<std::uint8_t, 4>{10, 7, static_cast<std::uint8_t>(n >> 8),
                                       static_cast<std::uint8_t>(n)};
  };
  constexpr std::uint32_t kAddresses = 2000;
  std::vector<PolicyId> expect(kAddresses, kNoPolicy);  // address n -> policy
  std::unordered_map<PolicyId, std::uint32_t> addr_of;
  const Addr src = A("192.0.2.1");
  std::size_t shards_seen = 0;
  for (int step = 0; step < 2500; ++step) {
    const std::uint32_t n = rng() % kAddresses;
    if (expect[n] != kNoPolicy && rng() % 3 == 0) {
      ASSERT_TRUE(spd.RemoveHostPolicy(expect[n]));
      addr_of.erase(expect[n]);
      expect[n] = kNoPolicy;
    } else if (expect[n] == kNoPolicy) {
      // A new policy, or one that moves here from its old address.
      const PolicyId id = !addr_of.empty() && rng() % 4 == 0 ? addr_of.begin()->first : step;
      if (auto it = addr_of.find(id); it != addr_of.end()) expect[it->second] = kNoPolicy;
      const auto a = host(n);
      const std::vector<Prefix> remote{*Prefix::Make(Family::kIpv4, a, 32)};
      ASSERT_TRUE(spd.SetHostPolicy(id, local, remote));
      expect[n] = id;
      addr_of[id] = n;
    }
    spd.CommitHostPolicies();
    auto g = reader->Lock();
    shards_seen = std::max(shards_seen, g->host_shard_count());
    for (std::uint32_t k = 0; k < kAddresses; ++k) {
      const auto d = host(k);
      ASSERT_EQ(g->LookupOutbound(Family::kIpv4, src.span(), d), expect[k])
          << "step " << step << " address " << k;
    }
  }
  EXPECT_GT(shards_seen, 16u);
  EXPECT_GT(addr_of.size(), 1000u);
}

// Readers never see a half-built shard or a freed one while host policies come and go.
TEST(SpdHostTest, ReadersSeeConsistentHostPoliciesWhileCommitting) {
  Spd spd;
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> lookups{0};
  const std::vector<Prefix> local{P("203.0.113.0/24")};
  // Policy 1 is always there for 10.0.0.1; others come and go around it.
  ASSERT_TRUE(spd.SetHostPolicy(1, local, std::vector<Prefix>{P("10.0.0.1")}));
  spd.CommitHostPolicies();
  std::atomic<int> reading{0};
  auto read_loop = [&](Spd::Reader reader) {
    const Addr src = A("203.0.113.9");
    const Addr dst = A("10.0.0.1");
    std::uint64_t n = 0;
    while (!done.load(std::memory_order_relaxed)) {
      if (n == 0) ++reading;
      if (n % 64 == 0) std::this_thread::yield();
      auto g = reader.Lock();
      ASSERT_EQ(g->LookupOutbound(Family::kIpv4, src.span(), dst.span()), 1u);
      ++n;
    }
    lookups += n;
  };
  auto r1 = spd.RegisterReader();
  auto r2 = spd.RegisterReader();
  std::thread t1(read_loop, std::move(*r1));
  std::thread t2(read_loop, std::move(*r2));
  // Commits take microseconds: on a busy machine they could all be over before a reader ran.
  while (reading.load() < 2) std::this_thread::yield();
  for (PolicyId k = 2; k < 3000; ++k) {
    const auto addr = Prefix::Make(Family::kIpv4, std::array<std::uint8_t, 4>{10, static_cast<std::uint8_t>(k >> 8),
                                                                              static_cast<std::uint8_t>(k), 1}, 32).value();
    ASSERT_TRUE(spd.SetHostPolicy(k, local, std::vector<Prefix>{addr}));
    if (k % 3 == 0) spd.RemoveHostPolicy(k - 1);
    spd.CommitHostPolicies();
  }
  done = true;
  t1.join();
  t2.join();
  EXPECT_GT(lookups.load(), 0u);
}

// LookupOutboundBatch answers what LookupOutbound answers, key by key, for batches of any size
// (0, 1, around the stride, many strides) mixing: host policies of both families (several per
// remote address, with local prefixes of different lengths), table policies that host policies
// shadow or fall back to, misses, sources outside every local prefix, and malformed keys.
TEST(SpdHostTest, BatchLookupsAgreeWithSingleLookups) {
  std::mt19937 rng(2024);
  Spd spd;
  SpdBuilder b;
  // Tables: the connections' fallbacks over the hosts' networks, and random prefixes.
  b.Add(1, P("203.0.113.0/24"), P("10.0.0.0/8"), SpdBuilder::Rank::kFallback);
  b.Add(2, P("0.0.0.0/0"), P("10.1.0.0/16"));
  b.Add(3, P("2001:db8:aa::/48"), P("2001:db8:bb::/48"), SpdBuilder::Rank::kFallback);
  auto random4 = [&](std::uint8_t first) {
    return std::array<std::uint8_t, 16>{first, static_cast<std::uint8_t>(rng() % 4),
                                        static_cast<std::uint8_t>(rng()),
                                        static_cast<std::uint8_t>(rng())};
  };
  auto random6 = [&] {
    std::array<std::uint8_t, 16> a{0x20, 0x01, 0x0d, 0xb8, 0x00, 0xbb};
    for (int k = 14; k < 16; ++k) a[k] = static_cast<std::uint8_t>(rng());
    return a;
  };
  for (PolicyId id = 10; id < 200; ++id) {
    const auto a = random4(10);
    const auto len = static_cast<std::uint8_t>(8 + rng() % 25);
    b.Add(id, P("203.0.113.0/25"), *Prefix::Make(Family::kIpv4, std::span(a).first(4), len));
    const auto a6 = random6();
    b.Add(id, P("2001:db8:aa::/48"),
          *Prefix::Make(Family::kIpv6, a6, static_cast<std::uint8_t>(48 + rng() % 81)));
  }
  spd.Publish(b.Build());

  const std::vector<Prefix> locals4[] = {{P("203.0.113.0/24")},
                                         {P("203.0.113.128/25")},
                                         {P("0.0.0.0/0")},
                                         {P("203.0.113.0/24"), P("192.0.2.0/24")}};
  const std::vector<Prefix> locals6[] = {{P("2001:db8:aa::/48")}, {P("2001:db8:aa:1::/64")},
                                         {P("::/0")}};
  std::vector<std::array<std::uint8_t, 16>> hosts4;
  std::vector<std::array<std::uint8_t, 16>> hosts6;
  // Enough pairs for the shards to double (past 16 x 64), some addresses taken by two or three
  // policies with different locals, some policies removed again.
  for (PolicyId id = 1000; id < 7000; ++id) {
    const bool v6 = id % 3 == 0;
    const bool again = id % 7 == 0 && !(v6 ? hosts6 : hosts4).empty();
    auto& hosts = v6 ? hosts6 : hosts4;
    const auto addr = again ? hosts[rng() % hosts.size()] : v6 ? random6() : random4(10);
    if (!again) hosts.push_back(addr);
    const auto remote = *Prefix::Make(v6 ? Family::kIpv6 : Family::kIpv4,
                                      std::span(addr).first(v6 ? 16 : 4), v6 ? 128 : 32);
    const auto& locals = v6 ? locals6[rng() % 3] : locals4[rng() % 4];
    ASSERT_TRUE(spd.SetHostPolicy(id, locals, std::vector<Prefix>{remote}));
  }
  for (PolicyId id = 1000; id < 7000; id += 11) ASSERT_TRUE(spd.RemoveHostPolicy(id));

  // Keys: mostly host addresses (some with a source outside their local prefix), table-only and
  // random destinations, and malformed keys.
  std::vector<std::array<std::uint8_t, 16>> addrs;
  addrs.reserve(40000);  // keys point into it
  std::vector<SpdSnapshot::OutboundKey> keys;
  const std::array<std::uint8_t, 16> src4_in{203, 0, 113, 200};
  const std::array<std::uint8_t, 16> src4_low{203, 0, 113, 5};
  const std::array<std::uint8_t, 16> src4_out{198, 51, 100, 1};
  const std::array<std::uint8_t, 16> src6_in{0x20, 0x01, 0x0d, 0xb8, 0x00, 0xaa, 0x00, 0x01};
  const std::array<std::uint8_t, 16> src6_out{0x20, 0x01, 0x0d, 0xb8, 0x00, 0xcc};
  for (int i = 0; i < 20000; ++i) {
    const int kind = static_cast<int>(rng() % 10);
    const bool v6 = rng() % 3 == 0;
    const Family f = v6 ? Family::kIpv6 : Family::kIpv4;
    const std::size_t len = AddressLength(f);
    const auto& hosts = v6 ? hosts6 : hosts4;
    addrs.push_back(kind < 6 ? hosts[rng() % hosts.size()] : v6 ? random6() : random4(10));
    const auto& src = v6 ? (rng() % 4 ? src6_in : src6_out)
                         : (rng() % 4 == 0 ? src4_out : rng() % 2 ? src4_in : src4_low);
    const std::span<const std::uint8_t> d = std::span(addrs.back()).first(len);
    const std::span<const std::uint8_t> s = std::span(src).first(len);
    if (kind == 9) {  // malformed: a short source, a family that does not match, no family
      switch (rng() % 3) {
        case 0: keys.push_back({f, s.first(len - 1), d}); break;
        case 1: keys.push_back({v6 ? Family::kIpv4 : Family::kIpv6, s, d}); break;
        default: keys.push_back({static_cast<Family>(5), s, d}); break;
      }
    } else {
      keys.push_back({f, s, d});
    }
  }

  auto check = [&](const SpdSnapshot& snap, std::size_t& hosts_hit, std::size_t& tables_hit) {
    std::vector<PolicyId> want(keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) {
      want[i] = snap.LookupOutbound(keys[i].family, keys[i].src, keys[i].dst);
      hosts_hit += want[i] >= 1000 && want[i] != kNoPolicy;
      tables_hit += want[i] < 1000;
    }
    std::vector<PolicyId> got(keys.size(), 0xDEAD);
    snap.LookupOutboundBatch(std::span(keys).first(0), std::span(got).first(0));
    EXPECT_EQ(std::count(got.begin(), got.end(), 0xDEADu), std::ssize(got));
    for (const std::size_t batch : {1, 2, 15, 16, 17, 31, 32, 33, 64, 100, 1000}) {
      std::fill(got.begin(), got.end(), 0xDEAD);
      for (std::size_t at = 0; at < keys.size(); at += batch) {
        const std::size_t n = std::min(batch, keys.size() - at);
        snap.LookupOutboundBatch(std::span(keys).subspan(at, n), std::span(got).subspan(at, n));
      }
      for (std::size_t i = 0; i < keys.size(); ++i) {
        ASSERT_EQ(got[i], want[i]) << "batch " << batch << " key " << i;
      }
    }
  };
  auto reader = spd.RegisterReader();
  std::size_t hosts_hit = 0;
  std::size_t tables_hit = 0;
  check(*reader->Lock(), hosts_hit, tables_hit);  // nothing committed: tables only
  EXPECT_EQ(hosts_hit, 0u);
  const std::size_t rebuilt = spd.CommitHostPolicies();
  EXPECT_GT(rebuilt, 16u);  // grown from 16 shards: every one built
  EXPECT_EQ(reader->Lock()->host_shard_count(), rebuilt);
  hosts_hit = tables_hit = 0;
  check(*reader->Lock(), hosts_hit, tables_hit);
  // Worth something only if both kinds of answer, and misses, are common.
  EXPECT_GT(hosts_hit, 8000u);
  EXPECT_GT(tables_hit, 1000u);
  EXPECT_GT(keys.size() - hosts_hit - tables_hit, 1000u);
}

TEST(SpdTest, ConnectionPoliciesLoseTiesToSaPolicies) {
  SpdBuilder b;
  b.Add(1, P("198.51.100.0/24"), P("203.0.113.0/24"), SpdBuilder::Rank::kFallback);
  b.Add(2, P("198.51.100.0/24"), P("203.0.113.0/24"));  // a site-to-site CHILD SA, added later
  const auto spd = b.Build();
  EXPECT_EQ(Lookup(*spd, "198.51.100.1", "203.0.113.1"), 2u);
  EXPECT_TRUE(Allows(*spd, 1, "203.0.113.1", "198.51.100.1"));
}

}  // namespace
}  // namespace spigot::policy
