// SA database benchmarks. BM_SaLookup is the data-path lookup over 1,000,000 installed CHILD SAs
// with pool-issued SPIs, looked up in a pregenerated random order (target: >= 20 M/s per core).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <random>
#include <vector>

#include "spigot/crypto/random.h"
#include "spigot/sa/sa_database.h"

namespace {

using spigot::sa::ChildSa;
using spigot::sa::ChildSaParams;
using spigot::sa::InstallStatus;
using spigot::sa::SaDatabase;
using spigot::sa::SpiPurpose;
using spigot::sa::SpiStatus;

constexpr std::size_t kSas = 1'000'000;
constexpr std::size_t kLookupOrder = 1 << 22;  // 4 Mi SPIs (16 MiB), a power of two

// One database of kSas CHILD SAs (AES-GCM-128, replay window 1024), built on first use.
struct Installed {
  SaDatabase db;
  std::vector<std::uint32_t> order;  // inbound SPIs in random order, with repeats

  Installed() {
    db.SetSpiLimits(kSas, 0);
    std::array<std::uint8_t, 40> keys;
    std::vector<std::uint32_t> spis;
    spis.reserve(kSas);
    for (std::size_t i = 0; i < kSas; ++i) {
      spigot::crypto::RandomBytes(keys);
      const auto a = db.AllocateSpi(SpiPurpose::kNew);
      ChildSaParams p;
      p.inbound_spi = a.spi;
      p.outbound_spi = 0x1000 + static_cast<std::uint32_t>(i);
      p.inbound_keymat = std::span(keys).first(20);
      p.outbound_keymat = std::span(keys).last(20);
      if (a.status != SpiStatus::kOk || db.Install(p, {}) != InstallStatus::kOk) std::abort();
      spis.push_back(a.spi);
    }
    std::mt19937_64 rng(42);
    std::uniform_int_distribution<std::size_t> pick(0, kSas - 1);
    order.resize(kLookupOrder);
    for (auto& spi : order) spi = spis[pick(rng)];
  }
};

Installed& Get() {
  static Installed installed;
  return installed;
}

void BM_SaLookup(benchmark::State& state) {
  Installed& in = Get();
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(in.db.LookupInbound(in.order[i]));
    i = (i + 1) & (kLookupOrder - 1);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_SaLookup);

// The lookup plus the first read the data path makes of the record (the replay window top):
// a second cache miss into the ~300 MB of records.
void BM_SaLookupAndTouch(benchmark::State& state) {
  Installed& in = Get();
  std::size_t i = 0;
  for (auto _ : state) {
    const ChildSa* sa = in.db.LookupInbound(in.order[i]);
    benchmark::DoNotOptimize(sa->inbound.replay.highest());
    i = (i + 1) & (kLookupOrder - 1);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_SaLookupAndTouch);

// Unknown SPIs (random 32-bit values) are rejected as fast as known ones are found.
void BM_SaLookupUnknown(benchmark::State& state) {
  Installed& in = Get();
  std::vector<std::uint32_t> forged(1 << 16);
  std::mt19937 rng(7);
  for (auto& spi : forged) spi = static_cast<std::uint32_t>(rng());
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(in.db.LookupInbound(forged[i]));
    i = (i + 1) & (forged.size() - 1);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_SaLookupUnknown);

// SPI churn at a steady 100,000 in use: allocate one, free the oldest.
void BM_SpiAllocateFree(benchmark::State& state) {
  spigot::sa::SpiPool pool;
  pool.SetLimits(200'000, 0);
  std::vector<std::uint32_t> live;
  for (int i = 0; i < 100'000; ++i) live.push_back(pool.Allocate(SpiPurpose::kNew).spi);
  std::size_t oldest = 0;
  for (auto _ : state) {
    pool.Free(live[oldest]);
    live[oldest] = pool.Allocate(SpiPurpose::kNew).spi;
    oldest = oldest + 1 == live.size() ? 0 : oldest + 1;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_SpiAllocateFree);

}  // namespace
