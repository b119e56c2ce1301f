// IKE handshake cost, one thread:
//   BM_X25519        one X25519 key generation plus one shared-secret computation
//   BM_IkeHandshake  a full IKE_SA_INIT + IKE_AUTH (X25519, PSK, AES-GCM-128) between an
//                    in-process initiator and responder, including the first CHILD SA
// A handshake needs two BM_X25519 units (one per side), so its ceiling on one core is half the
// BM_X25519 rate; bench/ike.sh prints the ratio.
#include <benchmark/benchmark.h>

#include "spigot/crypto/dh.h"
#include "spigot/ike/test_peer.h"
#include "spigot/io/clock.h"

namespace spigot::ike {
namespace {

void BM_X25519(benchmark::State& state) {
  const auto peer = crypto::DhKeyPair::Generate(crypto::kDhGroupCurve25519);
  crypto::SecureBytes shared;
  for (auto _ : state) {
    const auto kp = crypto::DhKeyPair::Generate(crypto::kDhGroupCurve25519);
    if (!kp->ComputeShared(peer->public_value(), shared)) {
      state.SkipWithError("X25519 failed");
      break;
    }
    benchmark::DoNotOptimize(shared.data());
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_IkeHandshake(benchmark::State& state) {
  const auto iconn = TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  const auto rconn = TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  const TimePoint now = io::DefaultClock().Now();
  for (auto _ : state) {
    LoopbackPair pair(iconn, rconn);
    pair.initiator->Initiate(now);
    pair.Pump(now);
    if (pair.initiator->state() != IkeSa::State::kEstablished || pair.ihost.installed.size() != 1) {
      state.SkipWithError("handshake failed");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}

BENCHMARK(BM_X25519);
BENCHMARK(BM_IkeHandshake);

}  // namespace
}  // namespace spigot::ike
