// ESP data path against its ceiling, one thread, AES-GCM-128:
//   BM_RawAesGcm128/N  bare IMB_AES128_GCM_ENC over N bytes (8-byte AAD), the ceiling
//   BM_EspSeal/N       esp::Seal of an N-byte inner packet, in place
//   BM_EspOpen/N       esp::Open of the resulting ESP packet, in place, with replay checks
// and AES-256-CBC + HMAC-SHA-256-128 (what native Windows and Apple clients negotiate):
//   BM_RawCbcHmacMb/N     bare intel-ipsec-mb multi-buffer jobs (CBC + HMAC chained), 64 in
//                         flight, over an ESP-sized message: the ceiling
//   BM_EspSealCbc/N       esp::Seal, one packet at a time (the per-packet path)
//   BM_EspSealCbcBatch/N  esp::SealPrepare of 64 packets, one esp::CryptoBatch (the data path's)
//   BM_EspOpenCbc/N, BM_EspOpenCbcBatch/N  the same for opening, with replay checks
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

// ---------------------------------------------------------------- CBC + HMAC

constexpr crypto::EspSuite kCbc = crypto::EspSuite::kAesCbc256HmacSha256;
constexpr std::size_t kMb = esp::CryptoBatch::kCapacity;  // packets per batch

const crypto::EspCipher& CbcCipher() {
  static crypto::EspCipher cipher;
  if (!cipher.initialized()) {
    std::vector<std::uint8_t> key(crypto::SuiteInfo(kCbc).keymat_len(), 0x42);
    cipher.Init(crypto::ImbManager::ForThisThread(), kCbc, key);
  }
  return cipher;
}

// The ESP packet that sealing n inner bytes makes: header, IV, padded payload, ICV.
std::size_t CbcPayload(std::size_t n) { return (n + esp::kEspTrailerLen + 15) / 16 * 16; }

void BM_RawCbcHmacMb(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  IMB_MGR* mgr = crypto::ImbManager::ForThisThread().get();
  alignas(16) static std::uint8_t enc[16 * 15], dec[16 * 15], ipad[32], opad[32];
  std::uint8_t key[32] = {0x42};
  IMB_AES_KEYEXP_256(mgr, key, enc, dec);
  alignas(16) std::uint8_t block[64];
  std::memset(block, 0x36, sizeof(block));
  IMB_SHA256_ONE_BLOCK(mgr, block, ipad);
  std::memset(block, 0x5c, sizeof(block));
  IMB_SHA256_ONE_BLOCK(mgr, block, opad);
  // The same bytes as ESP: 8 header + 16 IV hashed, the padded payload ciphered and hashed.
  const std::size_t payload = CbcPayload(n);
  const std::size_t stride = (64 + payload + 16 + 63) / 64 * 64;
  AlignedBuffer buf(kMb * stride);
  alignas(16) static std::uint8_t iv[16] = {};
  std::uint8_t tags[kMb][16];
  for (auto _ : state) {
    for (std::size_t i = 0; i < kMb; ++i) {
      std::uint8_t* msg = buf.p + i * stride + 64 - 24;
      IMB_JOB* job = IMB_GET_NEXT_JOB(mgr);
      job->cipher_mode = IMB_CIPHER_CBC;
      job->cipher_direction = IMB_DIR_ENCRYPT;
      job->chain_order = IMB_ORDER_CIPHER_HASH;
      job->enc_keys = enc;
      job->dec_keys = dec;
      job->key_len_in_bytes = 32;
      job->src = msg;
      job->dst = msg + 24;
      job->cipher_start_src_offset_in_bytes = 24;
      job->msg_len_to_cipher_in_bytes = payload;
      job->iv = iv;
      job->iv_len_in_bytes = 16;
      job->hash_alg = IMB_AUTH_HMAC_SHA_256;
      job->hash_start_src_offset_in_bytes = 0;
      job->msg_len_to_hash_in_bytes = 24 + payload;
      job->auth_tag_output = tags[i];
      job->auth_tag_output_len_in_bytes = 16;
      job->u.HMAC._hashed_auth_key_xor_ipad = ipad;
      job->u.HMAC._hashed_auth_key_xor_opad = opad;
      for (IMB_JOB* d = IMB_SUBMIT_JOB(mgr); d != nullptr; d = IMB_GET_COMPLETED_JOB(mgr))
        benchmark::DoNotOptimize(d->status);
    }
    for (IMB_JOB* d = IMB_FLUSH_JOB(mgr); d != nullptr; d = IMB_FLUSH_JOB(mgr))
      benchmark::DoNotOptimize(d->status);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kMb * n));
}

void BM_EspSealCbc(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  auto& mgr = crypto::ImbManager::ForThisThread();
  const crypto::EspCipher& cipher = CbcCipher();
  const auto inner = InnerIpv4(n);
  constexpr std::size_t kHead = 64;
  AlignedBuffer buf(kHead + n + esp::kSealTailroom);
  std::memcpy(buf.p + kHead, inner.data(), n);
  esp::OutboundState out{kSpi, false, 1};
  for (auto _ : state) {
    esp::PacketView pkt{buf.span(), kHead, n};
    if (esp::Seal(mgr, cipher, out, esp::kNextHeaderIpv4, pkt) != esp::Status::kOk) {
      state.SkipWithError("seal failed");
      break;
    }
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

void BM_EspSealCbcBatch(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  auto& mgr = crypto::ImbManager::ForThisThread();
  const crypto::EspCipher& cipher = CbcCipher();
  const auto inner = InnerIpv4(n);
  constexpr std::size_t kHead = 64;
  const std::size_t stride = (kHead + n + esp::kSealTailroom + 63) / 64 * 64;
  AlignedBuffer buf(kMb * stride);
  for (std::size_t i = 0; i < kMb; ++i) std::memcpy(buf.p + i * stride + kHead, inner.data(), n);
  esp::OutboundState out{kSpi, false, 1};
  esp::CryptoBatch batch;
  for (auto _ : state) {
    batch.Clear();
    for (std::size_t i = 0; i < kMb; ++i) {
      esp::PacketView pkt{{buf.p + i * stride, stride}, kHead, n};
      esp::CryptoOp op;
      if (esp::SealPrepare(cipher, out, esp::kNextHeaderIpv4, pkt, op) != esp::Status::kOk) {
        state.SkipWithError("seal failed");
        return;
      }
      batch.Add(cipher, op, pkt.buffer.data() + pkt.offset);
    }
    batch.Run(mgr);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kMb * n));
}

// Sealed CBC packets to open, consecutive sequence numbers, restored between passes.
struct SealedCbc {
  static constexpr std::size_t kCount = 2048;
  static constexpr std::size_t kHead = 64 - esp::kEspHeaderLen - 16;  // ciphertext on a line
  explicit SealedCbc(std::size_t n) : stride((64 + n + esp::kSealTailroom + 63) / 64 * 64),
                                      sealed(kCount * stride), lens(kCount), work(kCount * stride) {
    auto& mgr = crypto::ImbManager::ForThisThread();
    const auto inner = InnerIpv4(n);
    esp::OutboundState out{kSpi, false, 1};
    for (std::size_t i = 0; i < kCount; ++i) {
      std::uint8_t* slot = sealed.data() + i * stride;
      std::memcpy(slot + 64, inner.data(), n);
      esp::PacketView pkt{{slot, stride}, 64, n};
      esp::Seal(mgr, CbcCipher(), out, esp::kNextHeaderIpv4, pkt);
      lens[i] = pkt.length;
    }
    Restore();
  }
  void Restore() { std::memcpy(work.p, sealed.data(), sealed.size()); }
  esp::PacketView Packet(std::size_t i) { return {{work.p + i * stride, stride}, kHead, lens[i]}; }
  std::size_t stride;
  std::vector<std::uint8_t> sealed;
  std::vector<std::size_t> lens;
  AlignedBuffer work;
};

void BM_EspOpenCbc(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  auto& mgr = crypto::ImbManager::ForThisThread();
  const crypto::EspCipher& cipher = CbcCipher();
  SealedCbc sealed(n);
  esp::InboundState in{kSpi, esp::ReplayWindow(1024, false)};
  std::size_t i = 0;
  for (auto _ : state) {
    if (i == SealedCbc::kCount) {
      state.PauseTiming();
      sealed.Restore();
      in = esp::InboundState{kSpi, esp::ReplayWindow(1024, false)};
      i = 0;
      state.ResumeTiming();
    }
    esp::PacketView pkt = sealed.Packet(i);
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

void BM_EspOpenCbcBatch(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  auto& mgr = crypto::ImbManager::ForThisThread();
  const crypto::EspCipher& cipher = CbcCipher();
  SealedCbc sealed(n);
  esp::InboundState in{kSpi, esp::ReplayWindow(1024, false)};
  esp::CryptoBatch batch;
  esp::PacketView pkts[kMb];
  esp::CryptoOp ops[kMb];
  std::size_t i = 0;
  for (auto _ : state) {
    if (i == SealedCbc::kCount) {
      state.PauseTiming();
      sealed.Restore();
      in = esp::InboundState{kSpi, esp::ReplayWindow(1024, false)};
      i = 0;
      state.ResumeTiming();
    }
    batch.Clear();
    for (std::size_t k = 0; k < kMb; ++k) {
      pkts[k] = sealed.Packet(i + k);
      if (esp::OpenPrepare(cipher, in, pkts[k], ops[k]) != esp::Status::kOk) {
        state.SkipWithError("open failed");
        return;
      }
      batch.Add(cipher, ops[k], pkts[k].buffer.data() + pkts[k].offset);
    }
    batch.Run(mgr);
    for (std::size_t k = 0; k < kMb; ++k) {
      std::uint8_t nh;
      if (!batch.ok(k) || esp::OpenFinish(in, ops[k], pkts[k], nh) != esp::Status::kOk) {
        state.SkipWithError("open failed");
        return;
      }
    }
    i += kMb;
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kMb * n));
}

BENCHMARK(BM_RawAesGcm128)->Arg(64)->Arg(512)->Arg(1400);
BENCHMARK(BM_RawCbcHmacMb)->Arg(64)->Arg(512)->Arg(1400);
BENCHMARK(BM_EspSealCbc)->Arg(64)->Arg(512)->Arg(1400);
BENCHMARK(BM_EspSealCbcBatch)->Arg(64)->Arg(512)->Arg(1400);
BENCHMARK(BM_EspOpenCbc)->Arg(64)->Arg(512)->Arg(1400);
BENCHMARK(BM_EspOpenCbcBatch)->Arg(64)->Arg(512)->Arg(1400);
BENCHMARK(BM_EspSeal)->Arg(64)->Arg(512)->Arg(1400);
BENCHMARK(BM_EspOpen)->Arg(64)->Arg(512)->Arg(1400);

}  // namespace
}  // namespace spigot
