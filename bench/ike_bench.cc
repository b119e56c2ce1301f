// IKE handshake cost and IKE SA memory, one thread:
//   BM_X25519        one X25519 key generation plus one shared-secret computation
//   BM_IkeHandshake  a full IKE_SA_INIT + IKE_AUTH (X25519, PSK, AES-GCM-128) between an
//                    in-process initiator and responder, including the first CHILD SA;
//                    counter handshakes_per_second
//   BM_IkeSaMemory   resident memory of established pairs kept alive (the argument: how
//                    many); counters rss_bytes_per_pair and rss_bytes_per_ike_sa
// A handshake needs two BM_X25519 units (one per side), so its ceiling on one core is half the
// BM_X25519 rate; bench/ike.sh prints the ratio. (These were `spigot bench ike`; the daemon no
// longer links the in-process loopback.)
#include <benchmark/benchmark.h>

#include <memory>
#include <vector>

#include "spigot/crypto/dh.h"
#include "spigot/io/clock.h"
#include "spigot/test_tools/ike_loopback.h"
#include "spigot/io/process.h"

namespace spigot::ike {
namespace {

constexpr const char* kIkeProposal = "aes128gcm16-prfsha256-x25519";
constexpr const char* kEspProposal = "aes128gcm16";

// One handshake; the pair is returned established, or null.
std::unique_ptr<LoopbackPair> Handshake(const std::shared_ptr<const ConnectionParams>& iconn,
                                        const std::shared_ptr<const ConnectionParams>& rconn) {
  auto pair = std::make_unique<LoopbackPair>(iconn, rconn);
  const TimePoint now = io::DefaultClock().Now();
  pair->initiator->Initiate(now);
  pair->Pump(now);
  if (pair->initiator->state() != IkeSa::State::kEstablished || pair->ihost.installed.size() != 1)
    return nullptr;
  return pair;
}

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
  const auto iconn = TestConnection(true, kIkeProposal, kEspProposal);
  const auto rconn = TestConnection(false, kIkeProposal, kEspProposal);
  for (auto _ : state) {
    if (!Handshake(iconn, rconn)) {
      state.SkipWithError("handshake failed");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["handshakes_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

// Both ends of `pairs` established pairs stay alive. A pair holds two IKE SAs, and its two hosts
// keep a copy of the CHILD SA (keys, selectors), so half a pair over-estimates an IKE SA
// somewhat: an estimate, not a measurement of the daemon (bench/storm.sh measures that).
void BM_IkeSaMemory(benchmark::State& state) {
  const auto pairs = static_cast<std::size_t>(state.range(0));
  const auto iconn = TestConnection(true, kIkeProposal, kEspProposal);
  const auto rconn = TestConnection(false, kIkeProposal, kEspProposal);
  double bytes = 0;
  for (auto _ : state) {
    std::vector<std::unique_ptr<LoopbackPair>> kept;
    kept.reserve(pairs);
    const std::size_t before = io::ResidentSetBytes();
    for (std::size_t i = 0; i < pairs; ++i) {
      auto pair = Handshake(iconn, rconn);
      if (!pair) {
        state.SkipWithError("handshake failed");
        return;
      }
      kept.push_back(std::move(pair));
    }
    const std::size_t after = io::ResidentSetBytes();
    bytes = double(after > before ? after - before : 0);
    state.PauseTiming();
    kept.clear();
    state.ResumeTiming();
  }
  state.counters["rss_bytes_per_pair"] = bytes / double(pairs);
  state.counters["rss_bytes_per_ike_sa"] = bytes / double(2 * pairs);
}

BENCHMARK(BM_X25519);
BENCHMARK(BM_IkeHandshake);
// One iteration: the first fill of the heap is what a gateway's growth looks like.
BENCHMARK(BM_IkeSaMemory)->Arg(2000)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace spigot::ike
