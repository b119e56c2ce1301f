// EAP packets and the EAP-MSCHAPv2 server as a hostile peer drives them through IKE_AUTH: the
// input is a run of packets (one length octet, then that many bytes). The first octet's low bit
// answers the identity request correctly first, so that the MS-CHAPv2 Response parser is
// reached; the second bit patches each packet's identifier to the one the server expects. The
// server must never read outside a packet, never succeed without a valid NT-Response (it cannot
// here: the fuzzer does not know the password's hash), and after a failure stay failed.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <span>
#include <vector>

#include "src/spigot/eap/eap.h"

using spigot::eap::MschapV2Server;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t mode = data[0];
  std::span<const std::uint8_t> in(data + 1, size - 1);

  if (auto p = spigot::eap::Parse(in)) {
    const auto again = spigot::eap::Serialize(*p);
    if (again.size() != in.size() || !std::equal(again.begin(), again.end(), in.begin())) std::abort();
  }

  auto users = std::make_shared<spigot::eap::Users>();
  const std::uint8_t pw[] = {'s', 'e', 'c', 'r', 'e', 't'};
  users->Add("alice", spigot::crypto::SecureBytes(std::span<const std::uint8_t>(pw, sizeof pw)));
  MschapV2Server server(users, "fuzz");
  auto request = server.Start();
  bool failed = false;
  if ((mode & 1) != 0) {
    const std::vector<std::uint8_t> id{2, request[1], 0, 10, 1, 'a', 'l', 'i', 'c', 'e'};
    auto step = server.Process(id);
    if (step.status != MschapV2Server::Status::kContinue) std::abort();
    request = step.reply;
  }
  while (!in.empty()) {
    const std::size_t n = std::min<std::size_t>(in[0], in.size() - 1);
    std::vector<std::uint8_t> packet(in.begin() + 1, in.begin() + 1 + static_cast<std::ptrdiff_t>(n));
    in = in.subspan(1 + n);
    if ((mode & 2) != 0 && packet.size() >= 2 && request.size() >= 2) packet[1] = request[1];
    auto step = server.Process(packet);
    if (step.status == MschapV2Server::Status::kSuccess) std::abort();  // no valid NT-Response here
    if (failed && step.status != MschapV2Server::Status::kFailure) std::abort();
    if (step.status == MschapV2Server::Status::kFailure) {
      failed = true;
      if (step.reason.empty()) std::abort();
    }
    request = step.reply;
  }
  return 0;
}
