// libFuzzer target: control-socket requests (control/control_server.h, gateway_commands.h)
// against a gateway in process, without a socket. Each line of the input is one request, taken
// as the server takes it (nlohmann::json::parse without exceptions; objects only), checked by
// the access policy for a client the line's first byte picks, answered by HandleCommand, and
// written out as the server writes it. Between requests the gateways' IKE runs to completion and
// a tick passes. Gateway B (192.0.2.2) has a tunnel to A that requests may initiate, rekey,
// terminate and reload.
//
// Properties checked, beyond "no crash, no leak, no UB": no exception leaves HandleCommand (the
// server would answer "internal error", not the reason); every answer is a JSON object, and an
// "error" in it is a non-empty string.
#include <cstdio>
#include <cstdlib>
#include <string>

#include <spdlog/spdlog.h>

#include "spigot/control/access.h"
#include "spigot/control/gateway_commands.h"
#include "spigot/test_tools/gateway_pair.h"

using namespace spigot;

namespace {

void Require(bool cond, const char* what) {
  if (!cond) {
    std::fprintf(stderr, "control property broken: %s\n", what);
    std::abort();
  }
}

void Answer(gateway::Gateway& gw, std::string_view line) {
  const control::AccessPolicy policy{1000, "spigot", 1001, "spigot"};
  control::PeerCredentials peer;
  if (!line.empty()) {
    switch (line.front() % 4) {
      case 0: peer.uid = 0; break;                          // root
      case 1: peer.uid = 1000, peer.gid = 1000; break;      // the daemon's user
      case 2: peer.uid = 1002, peer.groups = {1001}; break;  // socket_group
      case 3: peer.uid = 1003, peer.gid = 1003; break;      // nobody in particular
    }
    line.remove_prefix(1);
  }
  const nlohmann::json request = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (request.is_discarded() || !request.is_object()) return;
  const auto it = request.find("command");
  const std::string command = it != request.end() && it->is_string() ? it->get<std::string>() : "";
  if (!control::CheckAccess(policy, peer, command).empty()) return;
  nlohmann::json answer;
  try {
    answer = control::HandleCommand(gw, request);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "HandleCommand threw: %s\n", e.what());
    Require(false, "an exception left HandleCommand");
  }
  Require(answer.is_object(), "the answer is not an object");
  if (const auto err = answer.find("error"); err != answer.end())
    Require(err->is_string() && !err->get<std::string>().empty(), "an error without a reason");
  const std::string out = answer.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  Require(nlohmann::json::accept(out), "the answer as written is not JSON");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);  // the gateways' logs would cost more than the runs
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  test_tools::GatewayPair p(test_tools::SiteConfig(1, 2), test_tools::SiteConfig(2, 1));
  Require(p.ok(), "the gateways did not start");
  std::string_view in(reinterpret_cast<const char*>(data), size);
  int requests = 0;
  while (!in.empty() && requests++ < 64) {
    const std::size_t nl = in.find('\n');
    Answer(*p.b.gw, in.substr(0, nl));
    in.remove_prefix(nl == std::string_view::npos ? in.size() : nl + 1);
    p.Pump(2000);
    p.Advance(gateway::Gateway::kTickPeriod);
  }
  return 0;
}
