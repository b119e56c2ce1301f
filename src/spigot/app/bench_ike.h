// `spigot bench ike`: the IKE handshake benchmark (bench/ike_bench.cc, BM_IkeHandshake) as a
// subcommand, so that `spigot plan` can measure this machine's negotiation capacity. The same
// handshakes, measured with ike/handshake_meter.h rather than the test loopback of test_tools/
// (which spigot_bench uses and the daemon never links).
#pragma once

#include <cstddef>

#include "spigot/ike/handshake_meter.h"

namespace spigot::app {

// Full in-process handshakes (IKE_SA_INIT + IKE_AUTH with X25519, PSK, AES-GCM-128, and the
// first CHILD SA) between an ike::HandshakePair's initiator and responder, back to back on the
// calling thread for about `seconds`.
ike::HandshakeMeasurement MeasureIkeHandshakes(double seconds);

// Prints {"handshakes", "seconds", "handshakes_per_second", "pairs", "rss_bytes_per_ike_sa"} as
// one JSON object with `json`, a human-readable line otherwise. After the timed run, `pairs`
// established pairs are kept alive to estimate the resident memory of one IKE SA (0: skip).
// Returns the process exit code.
int RunBenchIke(double seconds, std::size_t pairs, bool json);

}  // namespace spigot::app
