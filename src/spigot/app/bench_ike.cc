#include "spigot/app/bench_ike.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "spigot/ike/test_peer.h"

namespace spigot::app {
namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kIkeProposal = "aes128gcm16-prfsha256-x25519";
constexpr const char* kEspProposal = "aes128gcm16";

// Resident set size from /proc/self/statm (field 2, in pages).
std::size_t RssBytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t size_pages = 0, resident_pages = 0;
  statm >> size_pages >> resident_pages;
  return resident_pages * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

// One handshake; the pair is returned established, or null.
std::unique_ptr<ike::LoopbackPair> Handshake(
    const std::shared_ptr<const ike::ConnectionParams>& iconn,
    const std::shared_ptr<const ike::ConnectionParams>& rconn) {
  auto pair = std::make_unique<ike::LoopbackPair>(iconn, rconn);
  const ike::TimePoint now = ike::Clock::now();
  pair->initiator->Initiate(now);
  pair->Pump(now);
  if (pair->initiator->state() != ike::IkeSa::State::kEstablished ||
      pair->ihost.installed.size() != 1) {
    return nullptr;
  }
  return pair;
}

}  // namespace

IkeBenchResult MeasureIkeHandshakes(double seconds) {
  const auto iconn = ike::TestConnection(true, kIkeProposal, kEspProposal);
  const auto rconn = ike::TestConnection(false, kIkeProposal, kEspProposal);
  IkeBenchResult r;
  const auto budget = std::chrono::duration<double>(seconds);
  const Clock::time_point start = Clock::now();
  Clock::duration elapsed{};
  do {
    if (!Handshake(iconn, rconn)) {
      r.error = "handshake " + std::to_string(r.handshakes + 1) + " failed";
      return r;
    }
    ++r.handshakes;
    elapsed = Clock::now() - start;
  } while (elapsed < budget);
  r.ok = true;
  r.seconds = std::chrono::duration<double>(elapsed).count();
  r.handshakes_per_second = double(r.handshakes) / r.seconds;
  return r;
}

int RunBenchIke(double seconds, std::size_t pairs, bool json) {
  if (!(seconds > 0 && seconds <= 3600)) {
    std::fprintf(stderr, "spigot: --seconds must be above 0 and at most 3600\n");
    return 2;
  }
  const IkeBenchResult r = MeasureIkeHandshakes(seconds);
  if (!r.ok) {
    std::fprintf(stderr, "spigot: %s\n", r.error.c_str());
    return 1;
  }
  // Memory: both ends of `pairs` established pairs stay alive. A pair holds two IKE SAs, and its
  // two hosts keep a copy of the CHILD SA (keys, selectors), so half a pair over-estimates an
  // IKE SA somewhat: an estimate, not a measurement of the daemon.
  double bytes_per_ike_sa = 0;
  if (pairs > 0) {
    const auto iconn = ike::TestConnection(true, kIkeProposal, kEspProposal);
    const auto rconn = ike::TestConnection(false, kIkeProposal, kEspProposal);
    std::vector<std::unique_ptr<ike::LoopbackPair>> kept;
    kept.reserve(pairs);
    const std::size_t rss_before = RssBytes();
    for (std::size_t i = 0; i < pairs; ++i) {
      auto pair = Handshake(iconn, rconn);
      if (!pair) {
        std::fprintf(stderr, "spigot: handshake failed while measuring memory\n");
        return 1;
      }
      kept.push_back(std::move(pair));
    }
    const std::size_t rss_after = RssBytes();
    bytes_per_ike_sa =
        double(rss_after > rss_before ? rss_after - rss_before : 0) / double(2 * pairs);
  }
  if (json) {
    nlohmann::ordered_json out = {{"handshakes", r.handshakes},
                                  {"seconds", r.seconds},
                                  {"handshakes_per_second", r.handshakes_per_second},
                                  {"threads", 1}};
    if (pairs > 0) {
      out["pairs"] = pairs;
      out["rss_bytes_per_ike_sa"] = bytes_per_ike_sa;
    }
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("%llu IKE handshakes in %.2f s on one thread: %.0f handshakes/s\n",
                static_cast<unsigned long long>(r.handshakes), r.seconds, r.handshakes_per_second);
    if (pairs > 0) {
      std::printf("%zu established pairs kept: about %.0f bytes RSS per IKE SA (estimate)\n", pairs,
                  bytes_per_ike_sa);
    }
  }
  return 0;
}

}  // namespace spigot::app
