// Writes the seed corpus for ike_parse_fuzz (input layout: fuzz/ike_fuzz_keys.h): cleartext
// messages with every payload type, the strongSwan 5.9.8 IKE_SA_INIT capture from
// src/spigot/ike/testdata, SK messages sealed under every fuzz suite's keys (Serialize picks a
// random IV, so these differ from run to run), SK plaintexts for the seal mode, and a few
// truncations.
// Usage: gen_ike_corpus DIR
#include <cctype>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "fuzz/ike_fuzz_keys.h"
#include "spigot/ike/message.h"

#ifndef SPIGOT_SOURCE_DIR
#define SPIGOT_SOURCE_DIR "."
#endif

using namespace spigot;
using namespace spigot::ike;

namespace {

Payload P(PayloadType type, PayloadBody body) { return Payload{type, std::move(body)}; }

Message Base(Exchange exchange, std::uint32_t message_id) {
  Message m;
  m.header.spi_i = 0x000000000000face;
  m.header.spi_r = exchange == Exchange::kIkeSaInit ? 0 : 0x000000000000beef;
  m.header.exchange = exchange;
  m.header.flags = kFlagInitiator;
  m.header.message_id = message_id;
  return m;
}

TrafficSelector Ts4(std::uint8_t a, std::uint8_t b, std::uint8_t c) {
  TrafficSelector ts;
  ts.start = {a, b, c, 0};
  ts.end = {a, b, c, 255};
  return ts;
}

Message InitRequest() {
  Message m = Base(Exchange::kIkeSaInit, 0);
  SaPayload sa;
  sa.proposals.push_back({1, ProtocolId::kIke, {},
                          {{TransformType::kEncr, 20, 128},
                           {TransformType::kEncr, 28, 0},
                           {TransformType::kPrf, 5, 0},
                           {TransformType::kDh, 31, 0}}});
  sa.proposals.push_back({2, ProtocolId::kIke, {},
                          {{TransformType::kEncr, 12, 256},
                           {TransformType::kPrf, 5, 0},
                           {TransformType::kInteg, 12, 0},
                           {TransformType::kDh, 19, 0}}});
  m.payloads.push_back(P(PayloadType::kSa, sa));
  m.payloads.push_back(P(PayloadType::kKe, KePayload{31, Bytes(32, 0x11)}));
  m.payloads.push_back(P(PayloadType::kNonce, NoncePayload{Bytes(32, 0x22)}));
  m.payloads.push_back(P(PayloadType::kNotify, NotifyPayload{ProtocolId::kNone, {},
                                                             NotifyType::kNatDetectionSourceIp,
                                                             Bytes(20, 0x33)}));
  m.payloads.push_back(P(PayloadType::kNotify,
                         NotifyPayload{ProtocolId::kNone, {},
                                       NotifyType::kIkev2FragmentationSupported, {}}));
  m.payloads.push_back(P(PayloadType::kVendor, VendorPayload{{'s', 'p', 'i', 'g', 'o', 't'}}));
  return m;
}

Message AuthRequest() {
  Message m = Base(Exchange::kIkeAuth, 1);
  m.payloads.push_back(P(PayloadType::kIdi, IdPayload{IdType::kFqdn, {'a', '.', 'e', 'x'}}));
  m.payloads.push_back(P(PayloadType::kIdr, IdPayload{IdType::kIpv4, {192, 0, 2, 2}}));
  m.payloads.push_back(P(PayloadType::kAuth, AuthPayload{kAuthSharedKey, Bytes(32, 0x44)}));
  m.payloads.push_back(P(PayloadType::kCertReq, CertReqPayload{4, Bytes(20, 0x55)}));
  m.payloads.push_back(P(PayloadType::kNotify, NotifyPayload{ProtocolId::kNone, {},
                                                             NotifyType::kInitialContact, {}}));
  m.payloads.push_back(P(PayloadType::kSa,
                         SaPayload{{{1, ProtocolId::kEsp, {0xc0, 0xff, 0xee, 0x01},
                                     {{TransformType::kEncr, 20, 128},
                                      {TransformType::kEsn, 0, 0},
                                      {TransformType::kEsn, 1, 0}}}}}));
  TsPayload tsi{{Ts4(198, 51, 100)}};
  TrafficSelector v6;
  v6.type = kTsIpv6AddrRange;
  v6.ip_protocol = 17;
  v6.start = {0x20, 0x01, 0x0d, 0xb8};
  v6.end = {0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff};
  TsPayload tsr{{Ts4(203, 0, 113), v6}};
  m.payloads.push_back(P(PayloadType::kTsi, tsi));
  m.payloads.push_back(P(PayloadType::kTsr, tsr));
  m.payloads.push_back(P(PayloadType::kCp, OtherPayload{47, false, {1, 0, 0, 0}}));
  m.payloads.push_back(P(static_cast<PayloadType>(200), OtherPayload{200, false, {9, 9}}));
  return m;
}

Message DeleteRequest() {
  Message m = Base(Exchange::kInformational, 2);
  m.payloads.push_back(P(PayloadType::kDelete,
                         DeletePayload{ProtocolId::kEsp, 4, {{1, 1, 1, 1}, {2, 2, 2, 2}}}));
  m.payloads.push_back(P(PayloadType::kNotify,
                         NotifyPayload{ProtocolId::kEsp, {3, 3, 3, 3}, NotifyType::kRekeySa, {}}));
  return m;
}

// The hex after "message =" in the testdata file, continuation lines included.
Bytes ReadCapture() {
  std::ifstream in(std::string(SPIGOT_SOURCE_DIR) +
                   "/src/spigot/ike/testdata/strongswan_5.9.8_ike_sa_init.txt");
  std::string line, hex;
  bool in_message = false;
  while (std::getline(in, line)) {
    if (line.rfind("message =", 0) == 0) {
      in_message = true;
      hex += line.substr(9);
    } else if (in_message && !line.empty() && line[0] == ' ') {
      hex += line;
    } else {
      in_message = false;
    }
  }
  Bytes out;
  std::string digits;
  for (char c : hex) {
    if (std::isxdigit(static_cast<unsigned char>(c))) digits += c;
  }
  for (std::size_t i = 0; i + 1 < digits.size(); i += 2)
    out.push_back(static_cast<std::uint8_t>(std::stoi(digits.substr(i, 2), nullptr, 16)));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  int n = 0;
  auto write = [&](std::uint8_t selector, const Bytes& bytes) {
    std::ofstream out(std::string(argv[1]) + "/seed-" + std::to_string(n++), std::ios::binary);
    out.put(static_cast<char>(selector));
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  };

  const Message messages[] = {InitRequest(), AuthRequest(), DeleteRequest(),
                              Base(Exchange::kInformational, 3)};
  for (const Message& m : messages) write(0, Serialize(m, nullptr));
  const Bytes capture = ReadCapture();
  if (capture.size() != 892) {
    std::fprintf(stderr, "cannot read the strongSwan capture (%zu octets)\n", capture.size());
    return 1;
  }
  write(0, capture);
  Bytes half(capture.begin(), capture.begin() + 400);
  write(0, half);

  for (std::size_t s = 0; s < fuzz::kIkeFuzzSuites.size(); ++s) {
    SkKeys tx = fuzz::IkeFuzzKeys(s);
    const auto selector = static_cast<std::uint8_t>(s);
    const std::size_t block = tx.cipher->info().block_len;
    for (const Message& m : {AuthRequest(), DeleteRequest(), Base(Exchange::kInformational, 3)}) {
      const Bytes sk = Serialize(m, &tx);
      write(selector, sk);
      // The seal mode's plaintext: the cleartext chain with Serialize's padding.
      const Bytes clear = Serialize(m, nullptr);
      Bytes plain(clear.begin() + kHeaderLen, clear.end());
      const std::size_t pad = (block - (plain.size() + 1) % block) % block;
      plain.insert(plain.end(), pad, 0);
      plain.push_back(static_cast<std::uint8_t>(pad));
      plain.insert(plain.begin(), static_cast<std::uint8_t>(m.payloads.empty()
                                                                ? PayloadType::kNone
                                                                : m.payloads[0].type));
      write(selector | fuzz::kIkeSealBit, plain);
    }
    const Bytes sk = Serialize(DeleteRequest(), &tx);
    write(selector, Bytes(sk.begin(), sk.begin() + static_cast<long>(sk.size() / 2)));
  }
  std::printf("wrote %d seeds\n", n);
  return 0;
}
