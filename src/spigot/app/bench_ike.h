// `spigot bench ike`: the IKE handshake benchmark (bench/ike_bench.cc, BM_IkeHandshake) as a
// subcommand, so that `spigot plan` can measure this machine's negotiation capacity.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace spigot::app {

struct IkeBenchResult {
  bool ok = false;
  std::string error;  // iff !ok
  std::uint64_t handshakes = 0;
  double seconds = 0;
  double handshakes_per_second = 0;  // on one thread
};

// Full in-process handshakes (IKE_SA_INIT + IKE_AUTH with X25519, PSK, AES-GCM-128, and the
// first CHILD SA) between an ike::LoopbackPair's initiator and responder, back to back on the
// calling thread for about `seconds`.
IkeBenchResult MeasureIkeHandshakes(double seconds);

// Prints {"handshakes", "seconds", "handshakes_per_second", "pairs", "rss_bytes_per_ike_sa"} as
// one JSON object with `json`, a human-readable line otherwise. After the timed run, `pairs`
// established pairs are kept alive to estimate the resident memory of one IKE SA (0: skip).
// Returns the process exit code.
int RunBenchIke(double seconds, std::size_t pairs, bool json);

}  // namespace spigot::app
