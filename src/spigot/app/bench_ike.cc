#include "spigot/app/bench_ike.h"


#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "spigot/io/clock.h"
#include "spigot/io/process.h"

namespace spigot::app {
namespace {

constexpr const char* kIkeProposal = "aes128gcm16-prfsha256-x25519";
constexpr const char* kEspProposal = "aes128gcm16";

}  // namespace

ike::HandshakeMeasurement MeasureIkeHandshakes(double seconds) {
  return ike::MeasureHandshakes(seconds, kIkeProposal, kEspProposal);
}

int RunBenchIke(double seconds, std::size_t pairs, bool json) {
  if (!(seconds > 0 && seconds <= 3600)) {
    std::fprintf(stderr, "spigot: --seconds must be above 0 and at most 3600\n");
    return 2;
  }
  const ike::HandshakeMeasurement r = MeasureIkeHandshakes(seconds);
  if (!r.ok) {
    std::fprintf(stderr, "spigot: %s\n", r.error.c_str());
    return 1;
  }
  // Memory: both ends of `pairs` established pairs stay alive. A pair holds two IKE SAs (each
  // with its copy of the CHILD SA's keys and selectors) and two small hosts, so half a pair
  // over-estimates an IKE SA somewhat: an estimate, not a measurement of the daemon.
  double bytes_per_ike_sa = 0;
  if (pairs > 0) {
    std::string error;
    const auto connections = ike::MakeHandshakeConnections(kIkeProposal, kEspProposal, error);
    if (!connections) {
      std::fprintf(stderr, "spigot: %s\n", error.c_str());
      return 1;
    }
    std::vector<ike::HandshakePair> kept;
    kept.reserve(pairs);
    const std::size_t rss_before = io::ResidentSetBytes();
    for (std::size_t i = 0; i < pairs; ++i) {
      ike::HandshakePair& pair = kept.emplace_back(*connections);
      if (!pair.Run(io::DefaultClock().Now())) {
        std::fprintf(stderr, "spigot: handshake failed while measuring memory\n");
        return 1;
      }
    }
    const std::size_t rss_after = io::ResidentSetBytes();
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
