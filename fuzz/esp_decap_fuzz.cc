// libFuzzer target: ESP decapsulation of anything the network may send on UDP 4500 — per packet
// and through the data path's batch (esp::CryptoBatch), which must agree — and a seal -> open
// round trip that must give back the exact inner packet.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fuzz/fuzz_keys.h"
#include "spigot/esp/esp.h"

using namespace spigot;

namespace {

struct Sa {
  crypto::EspCipher cipher;
  bool esn;
};

const crypto::EspCipher& CipherFor(std::size_t suite_index) {
  static crypto::EspCipher* ciphers = [] {
    auto* c = new crypto::EspCipher[fuzz::kFuzzSuites.size()];
    for (std::size_t i = 0; i < fuzz::kFuzzSuites.size(); ++i) {
      const auto& info = crypto::SuiteInfo(fuzz::kFuzzSuites[i]);
      const auto k = fuzz::FuzzKeymat(i);
      c[i].Init(crypto::ImbManager::ForThisThread(), fuzz::kFuzzSuites[i],
                {k.data(), info.keymat_len()});
    }
    return c;
  }();
  return ciphers[suite_index];
}

void Check(bool cond, const char* what) {
  if (!cond) {
    std::fprintf(stderr, "round trip broken: %s\n", what);
    std::abort();
  }
}

// The data path's batched open (esp::CryptoBatch, used without a crypto engine; the CBC + HMAC
// suites through intel-ipsec-mb's multi-buffer lanes): OpenPrepare, the batch, then OpenFinish
// or OpenFailed, on a fresh replay window as Decapsulate's first Open() has.
esp::Status OpenThroughBatch(const crypto::EspCipher& cipher, bool esn, esp::PacketView& pkt,
                             std::uint8_t& next_header) {
  esp::InboundState in{fuzz::kFuzzSpi, esp::ReplayWindow(1024, esn)};
  esp::CryptoOp op;
  const esp::Status st = esp::OpenPrepare(cipher, in, pkt, op);
  if (st != esp::Status::kOk) return st;
  static auto* batch = new esp::CryptoBatch;  // its jobs are large: one, reused
  batch->Clear();
  Check(batch->Add(cipher, op, pkt.bytes().data()), "batch add");
  batch->Run(crypto::ImbManager::ForThisThread());
  if (!batch->ok(0)) return esp::OpenFailed(in, op);
  return esp::OpenFinish(in, op, pkt, next_header);
}

void Decapsulate(const crypto::EspCipher& cipher, bool esn, const std::uint8_t* data,
                 std::size_t size) {
  std::vector<std::uint8_t> buf(data, data + size);
  std::span<const std::uint8_t> inner;
  if (esp::ClassifyUdpEncap(buf, inner) != esp::UdpPayload::kEsp) return;
  std::uint32_t spi;
  if (!esp::PeekSpi(inner, spi) || spi != fuzz::kFuzzSpi) return;  // unknown SPI
  esp::InboundState in{fuzz::kFuzzSpi, esp::ReplayWindow(1024, esn)};
  esp::PacketView pkt{buf, 0, buf.size()};
  std::uint8_t nh = 0;
  const esp::Status st = esp::Open(crypto::ImbManager::ForThisThread(), cipher, in, pkt, nh);
  // The batched path gives the same verdict, and on kOk the same inner packet.
  std::vector<std::uint8_t> copy(data, data + size);
  esp::PacketView batch_pkt{copy, 0, copy.size()};
  std::uint8_t batch_nh = 0;
  Check(OpenThroughBatch(cipher, esn, batch_pkt, batch_nh) == st, "batched open: another status");
  if (st == esp::Status::kOk) {
    Check(batch_pkt.offset == pkt.offset && batch_pkt.length == pkt.length && batch_nh == nh,
          "batched open: another inner packet");
    Check(std::memcmp(copy.data() + pkt.offset, buf.data() + pkt.offset, pkt.length) == 0,
          "batched open: other inner bytes");
  }
  if (st == esp::Status::kOk) {
    Check(pkt.offset + pkt.length <= buf.size(), "inner packet outside the buffer");
    Check(nh == esp::kNextHeaderIpv4 || nh == esp::kNextHeaderIpv6, "next header");
    // The same packet again is a replay.
    std::vector<std::uint8_t> again(data, data + size);
    esp::PacketView pkt2{again, 0, again.size()};
    Check(esp::Open(crypto::ImbManager::ForThisThread(), cipher, in, pkt2, nh) ==
              esp::Status::kReplay,
          "replay accepted");
  }
}

void RoundTrip(const crypto::EspCipher& cipher, bool esn, const std::uint8_t* data,
               std::size_t size) {
  // A minimal IPv4 packet carrying the fuzz bytes.
  const std::size_t inner_len = 20 + std::min<std::size_t>(size, 1400);
  std::vector<std::uint8_t> inner(inner_len, 0);
  inner[0] = 0x45;
  inner[2] = static_cast<std::uint8_t>(inner_len >> 8);
  inner[3] = static_cast<std::uint8_t>(inner_len);
  inner[9] = 17;
  if (inner_len > 20) std::memcpy(inner.data() + 20, data, inner_len - 20);

  auto& mgr = crypto::ImbManager::ForThisThread();
  // With ESN the sender starts just below 2^32 and the second packet crosses into the next
  // epoch, so the receiver must infer the high half of its sequence number.
  esp::OutboundState out{fuzz::kFuzzSpi, esn, esn ? 0xFFFFFFF0ull : 1};
  esp::InboundState in{fuzz::kFuzzSpi, esp::ReplayWindow(1024, esn)};
  for (int round = 0; round < 2; ++round) {
    if (round == 1) out.next_seq += size & 31;
    std::vector<std::uint8_t> buf(esp::kSealHeadroom + inner_len + esp::kSealTailroom);
    std::memcpy(buf.data() + esp::kSealHeadroom, inner.data(), inner_len);
    esp::PacketView pkt{buf, esp::kSealHeadroom, inner_len};
    Check(esp::Seal(mgr, cipher, out, esp::kNextHeaderIpv4, pkt) == esp::Status::kOk, "seal");
    Check(pkt.length == esp::SealedLength(cipher.suite(), inner_len), "sealed length");
    std::uint8_t nh = 0;
    std::uint64_t seq = 0;
    Check(esp::Open(mgr, cipher, in, pkt, nh, &seq) == esp::Status::kOk, "open");
    Check(seq == out.next_seq - 1, "inferred sequence number");
    Check(nh == esp::kNextHeaderIpv4 && pkt.length == inner_len, "inner length");
    Check(std::memcmp(buf.data() + pkt.offset, inner.data(), inner_len) == 0, "inner bytes");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t selector = data[0];
  const std::size_t suite = (selector & 7u) % fuzz::kFuzzSuites.size();
  const bool esn = selector & fuzz::kEsnBit;
  const crypto::EspCipher& cipher = CipherFor(suite);
  if (selector & fuzz::kRoundTripBit) {
    RoundTrip(cipher, esn, data + 1, size - 1);
  } else {
    Decapsulate(cipher, esn, data + 1, size - 1);
  }
  return 0;
}
