// Policy (SPD) and acquire-queue benchmarks.
//
// BM_SpdLookup: the outbound lookup over 10,000 connections' selectors (IPv4; each connection a
// random local /24 or /16 and a random remote /24 or /16), destinations drawn so that most
// lookups hit a selector, in a pregenerated random order. Two distinct remote lengths: two hash
// probes at most. BM_SpdLookupGuarded adds the ReadGuard per packet (the RCU enter/leave).
// BM_SpdLookupLengths/D shows the cost growing with D, the number of distinct remote prefix
// lengths (the complexity bound), not with the number of selectors; the lookups there miss, the
// worst case (every length probed).
// BM_SpdHostInstall/N, BM_SpdHostLookup/N: per-peer /32 policies (Spd::SetHostPolicy) at N =
// 1k .. 1M peers: one install + commit, and lookups to random peers; BM_SpdRebuildPeers/N is
// what one install would cost if the table were rebuilt whole (the baseline).
// BM_SpdHostInstallBatch/N: 16 installs per commit (a control-thread tick in a login storm).
// BM_SpdHostLookupBatch/N: the same lookups as BM_SpdHostLookup, 32 per LookupOutboundBatch.
// BM_AcquireHold: Hold() of a 1400-byte packet into a trapped policy's queue, then the queue is
// flushed every 32 packets (the per-acquire bound), so every Hold is accepted.
#include <benchmark/benchmark.h>

#include <array>
#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <vector>

#include "spigot/policy/acquire_queue.h"
#include "spigot/policy/spd.h"

namespace {

using spigot::policy::AcquireQueue;
using spigot::policy::Family;
using spigot::policy::Prefix;
using spigot::policy::Spd;
using spigot::policy::SpdBuilder;
using spigot::policy::SpdSnapshot;

constexpr std::size_t kConnections = 10'000;
constexpr std::size_t kLookups = 1 << 16;  // a power of two

using V4 = std::array<std::uint8_t, 4>;

V4 Bytes(std::uint32_t a) {
  return {static_cast<std::uint8_t>(a >> 24), static_cast<std::uint8_t>(a >> 16),
          static_cast<std::uint8_t>(a >> 8), static_cast<std::uint8_t>(a)};
}

Prefix MakePrefix(std::uint32_t addr, std::uint8_t len) {
  return *Prefix::Make(Family::kIpv4, Bytes(addr), len);
}

struct Lookup {
  V4 src;
  V4 dst;
};

struct Table {
  std::unique_ptr<const SpdSnapshot> spd;
  std::vector<Lookup> lookups;
};

// 10,000 connections: local and remote each a random /24 or /16. Lookups: a random
// connection's local and remote with random host bits (95%), or random addresses.
Table& TenThousandConnections() {
  static Table t = [] {
    Table t;
    std::mt19937 rng(42);
    SpdBuilder b;
    std::vector<std::pair<Prefix, Prefix>> conns;
    for (std::uint32_t id = 0; id < kConnections; ++id) {
      const Prefix local = MakePrefix(rng(), rng() % 2 ? 24 : 16);
      const Prefix remote = MakePrefix(rng(), rng() % 2 ? 24 : 16);
      b.Add(id, local, remote);
      conns.emplace_back(local, remote);
    }
    t.spd = b.Build();
    auto inside = [&](const Prefix& p) {
      std::uint32_t a = 0;
      for (int i = 0; i < 4; ++i) a = a << 8 | p.address[i];
      return Bytes(a | (static_cast<std::uint32_t>(rng()) >> p.prefix_len));
    };
    for (std::size_t i = 0; i < kLookups; ++i) {
      if (rng() % 20 == 0) {
        t.lookups.push_back({Bytes(rng()), Bytes(rng())});
      } else {
        const auto& [local, remote] = conns[rng() % conns.size()];
        t.lookups.push_back({inside(local), inside(remote)});
      }
    }
    return t;
  }();
  return t;
}

void BM_SpdLookup(benchmark::State& state) {
  const Table& t = TenThousandConnections();
  std::size_t i = 0;
  std::size_t hits = 0;
  for (auto _ : state) {
    const Lookup& l = t.lookups[i];
    const auto id = t.spd->LookupOutbound(Family::kIpv4, l.src, l.dst);
    hits += id != spigot::policy::kNoPolicy;
    benchmark::DoNotOptimize(id);
    i = (i + 1) & (kLookups - 1);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.counters["hit_ratio"] = static_cast<double>(hits) / static_cast<double>(state.iterations());
  state.counters["distinct_lengths"] =
      static_cast<double>(t.spd->distinct_remote_lengths(Family::kIpv4));
}
BENCHMARK(BM_SpdLookup);

// The same, through the publication point: one ReadGuard per lookup (the worst case; the data
// path may cover a whole receive batch with one guard).
void BM_SpdLookupGuarded(benchmark::State& state) {
  const Table& t = TenThousandConnections();
  SpdBuilder b;
  Spd spd;
  {
    // Publish a copy of the 10,000-connection table (Spd owns what it publishes).
    std::mt19937 rng(42);
    for (std::uint32_t id = 0; id < kConnections; ++id) {
      const Prefix local = MakePrefix(rng(), rng() % 2 ? 24 : 16);
      const Prefix remote = MakePrefix(rng(), rng() % 2 ? 24 : 16);
      b.Add(id, local, remote);
    }
    spd.Publish(b.Build());
  }
  auto reader = spd.RegisterReader();
  std::size_t i = 0;
  for (auto _ : state) {
    const Lookup& l = t.lookups[i];
    auto guard = reader->Lock();
    benchmark::DoNotOptimize(guard->LookupOutbound(Family::kIpv4, l.src, l.dst));
    i = (i + 1) & (kLookups - 1);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_SpdLookupGuarded);

// 10,000 selectors spread over D distinct remote lengths (33 - D .. 32), looked up with
// destinations outside 10.0.0.0/8 that match none (D <= 24; D = 33 includes /0 .. /8, which
// the last levels hit): every one of the D tables is probed.
void BM_SpdLookupLengths(benchmark::State& state) {
  const auto lengths = static_cast<std::uint32_t>(state.range(0));
  std::mt19937 rng(7);
  SpdBuilder b;
  for (std::uint32_t id = 0; id < kConnections; ++id) {
    const auto len = static_cast<std::uint8_t>(33 - lengths + id % lengths);
    // Remotes in 10.0.0.0/8 (or 10.0.0.0/len for the short ones); destinations outside it.
    b.Add(id, MakePrefix(0, 0), MakePrefix(0x0A000000u | (rng() & 0x00FFFFFFu), len));
  }
  const auto spd = b.Build();
  std::vector<V4> dsts(kLookups);
  for (auto& d : dsts) d = Bytes(0x0B000000u | (rng() & 0x00FFFFFFu));
  const V4 src = Bytes(0xC0A80101);
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(spd->LookupOutbound(Family::kIpv4, src, dsts[i]));
    i = (i + 1) & (kLookups - 1);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.counters["distinct_lengths"] =
      static_cast<double>(spd->distinct_remote_lengths(Family::kIpv4));
}
BENCHMARK(BM_SpdLookupLengths)->Arg(1)->Arg(2)->Arg(4)->Arg(8)->Arg(16)->Arg(24)->Arg(33);

// IPv6: 10,000 remote /48s and /64s, lookups that hit.
void BM_SpdLookupIpv6(benchmark::State& state) {
  std::mt19937_64 rng(11);
  SpdBuilder b;
  std::vector<std::array<std::uint8_t, 16>> dsts;
  for (std::uint32_t id = 0; id < kConnections; ++id) {
    std::array<std::uint8_t, 16> a{0x20, 0x01, 0x0d, 0xb8};
    for (int k = 4; k < 16; ++k) a[k] = static_cast<std::uint8_t>(rng());
    b.Add(id, *Prefix::Parse("::/0"), *Prefix::Make(Family::kIpv6, a, id % 2 ? 48 : 64));
    dsts.push_back(a);
  }
  const auto spd = b.Build();
  std::vector<std::array<std::uint8_t, 16>> order(kLookups);
  for (auto& d : order) d = dsts[rng() % dsts.size()];
  const std::array<std::uint8_t, 16> src{0x20, 0x01, 0x0d, 0xb8, 0xff};
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(spd->LookupOutbound(Family::kIpv6, src, order[i]));
    i = (i + 1) & (kLookups - 1);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_SpdLookupIpv6);

void BM_SpdBuild(benchmark::State& state) {
  std::mt19937 rng(42);
  SpdBuilder b;
  for (std::uint32_t id = 0; id < kConnections; ++id) {
    b.Add(id, MakePrefix(rng(), rng() % 2 ? 24 : 16), MakePrefix(rng(), rng() % 2 ? 24 : 16));
  }
  for (auto _ : state) benchmark::DoNotOptimize(b.Build());
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kConnections));
}
BENCHMARK(BM_SpdBuild)->Unit(benchmark::kMillisecond);

// ---- Per-peer host policies (road warriors: one /32 per peer), at 1k .. 1M peers ----------

// N peers in 198.18.0.0/15 and beyond (n -> 198.18.0.0 + n), local 203.0.113.0/24.
Prefix PeerAddress(std::uint32_t n) { return MakePrefix(0xC6120000u + n, 32); }
const std::vector<Prefix>& PeerLocal() {
  static const std::vector<Prefix> local{MakePrefix(0xCB007100u, 24)};
  return local;
}

// An Spd with N host policies, committed; policy n serves peer n.
std::unique_ptr<Spd> PeerSpd(std::uint32_t n) {
  auto spd = std::make_unique<Spd>();
  for (std::uint32_t id = 0; id < n; ++id)
    spd->SetHostPolicy(id, PeerLocal(), std::vector<Prefix>{PeerAddress(id)});
  spd->CommitHostPolicies();
  return spd;
}

// One install as a login storm makes it: a new peer's policy set and published (commit: new
// shard, new snapshot, grace period), then an old one removed and published, so the table
// stays at N. Items: installs (each with its removal). The control thread's share at 3,000
// installs a second is 3,000 x the time per item.
void BM_SpdHostInstall(benchmark::State& state) {
  const auto n = static_cast<std::uint32_t>(state.range(0));
  auto spd = PeerSpd(n);
  auto reader = spd->RegisterReader();  // a registered (idle) data-path thread, as in the daemon
  std::uint32_t next = n;
  std::uint32_t oldest = 0;
  for (auto _ : state) {
    spd->SetHostPolicy(next, PeerLocal(), std::vector<Prefix>{PeerAddress(next)});
    spd->CommitHostPolicies();
    spd->RemoveHostPolicy(oldest++);
    spd->CommitHostPolicies();
    ++next;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.counters["shards"] = static_cast<double>(reader->Lock()->host_shard_count());
}
BENCHMARK(BM_SpdHostInstall)->Arg(1'000)->Arg(10'000)->Arg(100'000)->Arg(1'000'000);

// A control-thread tick under a storm: 16 new peers set and published in one commit, then 16
// old ones removed in one commit. Items: installs (each with its removal).
void BM_SpdHostInstallBatch(benchmark::State& state) {
  constexpr std::uint32_t kPerCommit = 16;
  const auto n = static_cast<std::uint32_t>(state.range(0));
  auto spd = PeerSpd(n);
  auto reader = spd->RegisterReader();
  std::uint32_t next = n;
  std::uint32_t oldest = 0;
  for (auto _ : state) {
    for (std::uint32_t k = 0; k < kPerCommit; ++k, ++next)
      spd->SetHostPolicy(next, PeerLocal(), std::vector<Prefix>{PeerAddress(next)});
    spd->CommitHostPolicies();
    for (std::uint32_t k = 0; k < kPerCommit; ++k) spd->RemoveHostPolicy(oldest++);
    spd->CommitHostPolicies();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * kPerCommit);
}
BENCHMARK(BM_SpdHostInstallBatch)->Arg(1'000)->Arg(10'000)->Arg(100'000)->Arg(1'000'000);

// The baseline an incremental structure replaces: the whole table rebuilt for one install.
void BM_SpdRebuildPeers(benchmark::State& state) {
  const auto n = static_cast<std::uint32_t>(state.range(0));
  SpdBuilder b;
  for (std::uint32_t id = 0; id < n; ++id) b.Add(id, PeerLocal()[0], PeerAddress(id));
  for (auto _ : state) benchmark::DoNotOptimize(b.Build());
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_SpdRebuildPeers)->Arg(1'000)->Arg(10'000)->Arg(100'000)->Arg(1'000'000)
    ->Unit(benchmark::kMicrosecond);

// Outbound lookups to random peers among N (each hits its peer's policy), one ReadGuard per
// 32 lookups (a receive batch).
void BM_SpdHostLookup(benchmark::State& state) {
  const auto n = static_cast<std::uint32_t>(state.range(0));
  auto spd = PeerSpd(n);
  auto reader = spd->RegisterReader();
  std::mt19937 rng(5);
  std::vector<V4> dsts(kLookups);
  for (auto& d : dsts) d = Bytes(0xC6120000u + rng() % n);
  const V4 src = Bytes(0xCB007101u);
  std::size_t i = 0;
  for (auto _ : state) {
    auto guard = reader->Lock();
    for (int k = 0; k < 32; ++k) {
      benchmark::DoNotOptimize(guard->LookupOutbound(Family::kIpv4, src, dsts[i]));
      i = (i + 1) & (kLookups - 1);
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * 32);
}
BENCHMARK(BM_SpdHostLookup)->Arg(1'000)->Arg(10'000)->Arg(100'000)->Arg(1'000'000);

// The same lookups, a receive batch of 32 at a time through LookupOutboundBatch.
void BM_SpdHostLookupBatch(benchmark::State& state) {
  constexpr std::size_t kBatch = 32;
  const auto n = static_cast<std::uint32_t>(state.range(0));
  auto spd = PeerSpd(n);
  auto reader = spd->RegisterReader();
  std::mt19937 rng(5);
  std::vector<V4> dsts(kLookups);
  for (auto& d : dsts) d = Bytes(0xC6120000u + rng() % n);
  const V4 src = Bytes(0xCB007101u);
  std::vector<SpdSnapshot::OutboundKey> keys;
  for (const V4& d : dsts) keys.push_back({Family::kIpv4, src, d});
  std::array<spigot::policy::PolicyId, kBatch> ids;
  std::size_t i = 0;
  for (auto _ : state) {
    auto guard = reader->Lock();
    guard->LookupOutboundBatch(std::span(keys).subspan(i, kBatch), ids);
    benchmark::DoNotOptimize(ids.data());
    benchmark::ClobberMemory();
    i = (i + kBatch) & (kLookups - 1);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * kBatch);
}
BENCHMARK(BM_SpdHostLookupBatch)->Arg(1'000)->Arg(10'000)->Arg(100'000)->Arg(1'000'000);

void BM_AcquireHold(benchmark::State& state) {
  AcquireQueue q;
  std::vector<std::uint8_t> packet(1400, 0x45);
  const auto now = AcquireQueue::TimePoint{} + std::chrono::hours(1);
  std::uint32_t n = 0;
  spigot::policy::PolicyId id = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(q.Hold(id, packet, now));
    if (++n == 32) {
      state.PauseTiming();
      q.Flush(id, [](std::span<const std::uint8_t> p) { benchmark::DoNotOptimize(p.data()); });
      id = (id + 1) % 1000;
      n = 0;
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * packet.size()));
}
BENCHMARK(BM_AcquireHold);

// A full queue: every Hold is an overflow (the no-SA storm case; nothing is copied).
void BM_AcquireHoldOverflow(benchmark::State& state) {
  AcquireQueue q;
  std::vector<std::uint8_t> packet(1400, 0x45);
  const auto now = AcquireQueue::TimePoint{} + std::chrono::hours(1);
  for (int i = 0; i < 32; ++i) q.Hold(1, packet, now);
  for (auto _ : state) benchmark::DoNotOptimize(q.Hold(1, packet, now));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_AcquireHoldOverflow);

// Hold 32 packets then flush them: the full round trip of one acquire, per packet.
void BM_AcquireHoldFlush(benchmark::State& state) {
  AcquireQueue q;
  std::vector<std::uint8_t> packet(1400, 0x45);
  const auto now = AcquireQueue::TimePoint{} + std::chrono::hours(1);
  spigot::policy::PolicyId id = 0;
  for (auto _ : state) {
    for (int i = 0; i < 32; ++i) q.Hold(id, packet, now);
    q.Flush(id, [](std::span<const std::uint8_t> p) { benchmark::DoNotOptimize(p.data()); });
    id = (id + 1) % 1000;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * 32));
}
BENCHMARK(BM_AcquireHoldFlush);

}  // namespace
