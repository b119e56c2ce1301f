// ESP data path against its ceiling, one thread, AES-GCM-128:
//   BM_RawAesGcm128/N  bare IMB_AES128_GCM_ENC over N bytes (8-byte AAD), the ceiling
//   BM_EspSeal/N       esp::Seal of an N-byte inner packet, in place
//   BM_EspOpen/N       esp::Open of the resulting ESP packet, in place, with replay checks
// bench/esp.sh prints the ratios of one run.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "spigot/esp/esp.h"

namespace spigot {
namespace {

constexpr std::uint32_t kSpi = 0x5EA1ED00;

crypto::EspCipher& Cipher(crypto::EspSuite suite = crypto::EspSuite::kAesGcm128) {
  static crypto::EspCipher cipher;
  if (!cipher.initialized()) {
    std::vector<std::uint8_t> key(crypto::SuiteInfo(suite).keymat_len(), 0x42);
    cipher.Init(crypto::ImbManager::ForThisThread(), suite, key);
  }
  return cipher;
}

// Packet buffers start on a cache line, as the data path's do.
struct AlignedBuffer {
  explicit AlignedBuffer(std::size_t n)
      : p(static_cast<std::uint8_t*>(std::aligned_alloc(64, (n + 63) / 64 * 64))), size(n) {
    std::memset(p, 0, size);
  }
  ~AlignedBuffer() { std::free(p); }
  std::span<std::uint8_t> span() { return {p, size}; }
  std::uint8_t* p;
  std::size_t size;
};

std::vector<std::uint8_t> InnerIpv4(std::size_t len) {
  std::vector<std::uint8_t> p(len, 0x5A);
  p[0] = 0x45;
  p[2] = static_cast<std::uint8_t>(len >> 8);
  p[3] = static_cast<std::uint8_t>(len);
  return p;
}

void BM_RawAesGcm128(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  IMB_MGR* mgr = crypto::ImbManager::ForThisThread().get();
  alignas(64) static gcm_key_data key;
  std::uint8_t raw_key[16] = {0x42};
  IMB_AES128_GCM_PRE(mgr, raw_key, &key);
  AlignedBuffer buf(n);
  std::uint8_t iv[12] = {}, aad[8] = {}, tag[16];
  for (auto _ : state) {
    gcm_context_data ctx;
    IMB_AES128_GCM_ENC(mgr, &key, &ctx, buf.p, buf.p, n, iv, aad, sizeof(aad), tag, 16);
    benchmark::DoNotOptimize(tag);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

void BM_EspSeal(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  auto& mgr = crypto::ImbManager::ForThisThread();
  const crypto::EspCipher& cipher = Cipher();
  const auto inner = InnerIpv4(n);
  // The inner packet (and so the ciphertext) starts on a cache line.
  constexpr std::size_t kHead = 64;
  AlignedBuffer buf(kHead + n + esp::kSealTailroom);
  std::memcpy(buf.p + kHead, inner.data(), n);
  esp::OutboundState out{kSpi, false, 1};
  for (auto _ : state) {
    // Sealing the previous output again: the cipher does not care what the bytes are.
    esp::PacketView pkt{buf.span(), kHead, n};
    if (esp::Seal(mgr, cipher, out, esp::kNextHeaderIpv4, pkt) != esp::Status::kOk) {
      state.SkipWithError("seal failed");
      break;
    }
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

void BM_EspOpen(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  auto& mgr = crypto::ImbManager::ForThisThread();
  const crypto::EspCipher& cipher = Cipher();
  const auto inner = InnerIpv4(n);
  // A batch of sealed packets (consecutive sequence numbers), restored between passes.
  constexpr std::size_t kBatch = 2048;
  // Each slot holds its ESP packet from byte 48, so the ciphertext (after 8 + 8 bytes of
  // header and IV) starts on a cache line, like the sealed buffers above.
  constexpr std::size_t kHead = 64 - esp::kEspHeaderLen - 8;
  const std::size_t stride = (64 + n + esp::kSealTailroom + 63) / 64 * 64;
  std::vector<std::uint8_t> sealed(kBatch * stride);
  std::vector<std::size_t> lens(kBatch);
  esp::OutboundState out{kSpi, false, 1};
  for (std::size_t i = 0; i < kBatch; ++i) {
    std::uint8_t* slot = sealed.data() + i * stride;
    std::memcpy(slot + 64, inner.data(), n);
    esp::PacketView pkt{{slot, stride}, 64, n};
    esp::Seal(mgr, cipher, out, esp::kNextHeaderIpv4, pkt);
    lens[i] = pkt.length;
  }
  AlignedBuffer work(sealed.size());
  std::memcpy(work.p, sealed.data(), sealed.size());
  esp::InboundState in{kSpi, esp::ReplayWindow(1024, false)};
  std::size_t i = 0;
  for (auto _ : state) {
    if (i == kBatch) {
      state.PauseTiming();
      std::memcpy(work.p, sealed.data(), sealed.size());
      in = esp::InboundState{kSpi, esp::ReplayWindow(1024, false)};
      i = 0;
      state.ResumeTiming();
    }
    esp::PacketView pkt{{work.p + i * stride, stride}, kHead, lens[i]};
    std::uint8_t nh;
    if (esp::Open(mgr, cipher, in, pkt, nh) != esp::Status::kOk) {
      state.SkipWithError("open failed");
      break;
    }
    ++i;
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

BENCHMARK(BM_RawAesGcm128)->Arg(64)->Arg(512)->Arg(1400);
BENCHMARK(BM_EspSeal)->Arg(64)->Arg(512)->Arg(1400);
BENCHMARK(BM_EspOpen)->Arg(64)->Arg(512)->Arg(1400);

}  // namespace
}  // namespace spigot
