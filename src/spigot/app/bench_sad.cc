#include "spigot/app/bench_sad.h"


#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <span>
#include <vector>

#include "spigot/crypto/random.h"
#include "spigot/sa/sa_database.h"
#include "spigot/io/process.h"

namespace spigot::app {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kKeyBatch = 4096;        // CHILD SAs whose keys are drawn at once
constexpr std::size_t kGcm128Keymat = 16 + 4;  // RFC 4106 8.1: key || salt
constexpr std::size_t kLookups = std::size_t{4} << 20;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

int RunBenchSad(std::size_t sas, bool json) {
  if (sas == 0 || sas > sa::SpiPool::kMaxSlots) {
    std::fprintf(stderr, "spigot: --sas must be 1 to %u (the SPI pool's slot limit)\n",
                 sa::SpiPool::kMaxSlots);
    return 2;
  }
  const auto n = static_cast<std::uint32_t>(sas);
  // Everything the measurement itself needs is allocated and touched before the first reading.
  std::vector<std::uint32_t> spis(sas);
  std::vector<std::uint8_t> keys(kKeyBatch * 2 * kGcm128Keymat);
  std::vector<std::uint32_t> order(kLookups);

  const std::size_t rss_before = io::ResidentSetBytes();
  auto db = std::make_unique<sa::SaDatabase>();
  if (db->SetSpiLimits(n, 0) != sa::LimitsStatus::kOk) return 2;
  Clock::duration install_time{};
  sa::ChildSaParams p;  // AES-GCM-128, replay window 1024, no lifetimes
  const sa::TimePoint now = Clock::now();
  for (std::size_t base = 0; base < sas; base += kKeyBatch) {
    const std::size_t batch = std::min(kKeyBatch, sas - base);
    crypto::RandomBytes(keys);  // IKE's work, not the database's: outside the timed loop
    const Clock::time_point start = Clock::now();
    for (std::size_t i = 0; i < batch; ++i) {
      const sa::SpiAllocation a = db->AllocateSpi(sa::SpiPurpose::kNew);
      p.inbound_spi = a.spi;
      p.outbound_spi = 0x1000 + static_cast<std::uint32_t>(base + i);
      p.inbound_keymat = std::span(keys).subspan(2 * i * kGcm128Keymat, kGcm128Keymat);
      p.outbound_keymat = std::span(keys).subspan((2 * i + 1) * kGcm128Keymat, kGcm128Keymat);
      if (a.status != sa::SpiStatus::kOk || db->Install(p, now) != sa::InstallStatus::kOk) {
        std::fprintf(stderr, "spigot: install %zu failed\n", base + i);
        return 1;
      }
      spis[base + i] = a.spi;
    }
    install_time += Clock::now() - start;
  }
  crypto::Wipe(keys.data(), keys.size());
  const std::size_t rss_after = io::ResidentSetBytes();

  std::mt19937_64 rng(std::random_device{}());
  std::uniform_int_distribution<std::size_t> pick(0, sas - 1);
  for (auto& spi : order) spi = spis[pick(rng)];
  std::size_t found = 0;
  const Clock::time_point start = Clock::now();
  for (std::uint32_t spi : order) found += db->LookupInbound(spi) != nullptr;
  const double lookup_seconds = Seconds(Clock::now() - start);
  if (found != order.size()) {
    std::fprintf(stderr, "spigot: %zu of %zu lookups failed\n", order.size() - found, order.size());
    return 1;
  }

  const double rss_per_sa =
      static_cast<double>(rss_after > rss_before ? rss_after - rss_before : 0) / double(sas);
  const double installs_per_second = double(sas) / Seconds(install_time);
  const double lookups_per_second = double(order.size()) / lookup_seconds;
  if (json) {
    const nlohmann::ordered_json out = {{"sas", sas},
                                        {"rss_bytes_per_sa", rss_per_sa},
                                        {"install_per_second", installs_per_second},
                                        {"lookups_per_second", lookups_per_second}};
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("%zu CHILD SAs: %.0f bytes RSS per SA, %.0f installs/s, %.0f lookups/s\n", sas,
                rss_per_sa, installs_per_second, lookups_per_second);
  }
  return 0;
}

}  // namespace spigot::app
