// Writes the seed corpus for ike_responder_fuzz: IKE_SA_INIT requests as spigot's initiator
// sends them for several proposals (with and without a cookie), and strongSwan 5.9.8's real
// IKE_SA_INIT from src/spigot/ike/testdata. Usage: gen_responder_corpus DIR
#include <cstdio>
#include <fstream>
#include <string>

#include "spigot/io/clock.h"
#include "spigot/test_tools/hex.h"
#include "spigot/test_tools/ike_loopback.h"

using namespace spigot;

int main(int argc, char** argv) {
  if (argc != 2) return std::fprintf(stderr, "usage: %s DIR\n", argv[0]), 2;
  int n = 0;
  auto write = [&](const ike::Bytes& b) {
    std::ofstream(std::string(argv[1]) + "/seed-" + std::to_string(n++), std::ios::binary)
        .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  };
  for (const char* ike : {"aes128gcm16-prfsha256-x25519", "aes256-sha256-ecp256",
                          "chacha20poly1305-prfsha512-x25519", "aes128gcm16-prfsha256-ecp256-x25519"}) {
    ike::LoopbackPair pair(ike::TestConnection(true, ike, "aes128gcm16"),
                           ike::TestConnection(false, ike, "aes128gcm16"));
    pair.initiator->Initiate(io::DefaultClock().Now());
    write(pair.rhost.inbox.front());
  }
  for (const auto& block : test_tools::ReadVectorFile("src/spigot/ike/testdata/strongswan_5.9.8_ike_sa_init.txt")) {
    for (const auto& [key, value] : block) {
      if (value.size() > 100) write(test_tools::FromHex(value));
    }
  }
  std::printf("wrote %d seeds\n", n);
  return 0;
}
