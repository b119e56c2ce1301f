// Writes the seed corpus for esp_decap_fuzz: valid ESP packets (every suite, with and without
// ESN, IPv4 and IPv6 inner packets) sealed under the fuzz keys, and their truncations.
// Usage: gen_esp_corpus DIR
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "fuzz/fuzz_keys.h"
#include "spigot/esp/esp.h"

using namespace spigot;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  auto& mgr = crypto::ImbManager::ForThisThread();
  int n = 0;
  auto write = [&](const std::vector<std::uint8_t>& bytes) {
    std::ofstream(std::string(argv[1]) + "/seed-" + std::to_string(n++), std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()),
               static_cast<std::streamsize>(bytes.size()));
  };
  for (std::size_t s = 0; s < fuzz::kFuzzSuites.size(); ++s) {
    const auto& info = crypto::SuiteInfo(fuzz::kFuzzSuites[s]);
    const auto k = fuzz::FuzzKeymat(s);
    crypto::EspCipher cipher;
    cipher.Init(mgr, fuzz::kFuzzSuites[s], {k.data(), info.keymat_len()});
    for (bool esn : {false, true}) {
      for (bool v6 : {false, true}) {
        const std::size_t inner_len = v6 ? 60 : 33;
        std::vector<std::uint8_t> buf(esp::kSealHeadroom + inner_len + esp::kSealTailroom);
        std::uint8_t* ip = buf.data() + esp::kSealHeadroom;
        if (v6) {
          ip[0] = 0x60;
          ip[5] = static_cast<std::uint8_t>(inner_len - 40);
          ip[6] = 17;
        } else {
          ip[0] = 0x45;
          ip[3] = static_cast<std::uint8_t>(inner_len);
          ip[9] = 17;
        }
        esp::PacketView pkt{buf, esp::kSealHeadroom, inner_len};
        esp::OutboundState out{fuzz::kFuzzSpi, esn, 1};
        esp::Seal(mgr, cipher, out, v6 ? esp::kNextHeaderIpv6 : esp::kNextHeaderIpv4, pkt);
        std::vector<std::uint8_t> seed{static_cast<std::uint8_t>(s | (esn ? fuzz::kEsnBit : 0))};
        seed.insert(seed.end(), buf.begin() + static_cast<long>(pkt.offset),
                    buf.begin() + static_cast<long>(pkt.offset + pkt.length));
        write(seed);
        seed.resize(seed.size() / 2);
        write(seed);
      }
      write({static_cast<std::uint8_t>(s | (esn ? fuzz::kEsnBit : 0) | fuzz::kRoundTripBit),
             'h', 'e', 'l', 'l', 'o'});
    }
  }
  write({0x00, 0x00, 0x00, 0x00, 0x00, 0x01});  // non-ESP marker: IKE, not ours
  write({0x00, 0xFF});                          // NAT keepalive
  std::printf("wrote %d seeds\n", n);
  return 0;
}
