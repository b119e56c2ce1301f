// libFuzzer target: TOML text -> validated configuration (config/config.h), and a validated
// configuration -> a gateway (in process, with fakes). Any crash or exception escaping is a
// bug; so is a refusal without a message, a validation that gives a different answer for the
// same text, a configuration that differs from itself (Diff), or a gateway that refuses a
// validated configuration without saying why.
//
// The gateway is built without lease_db and leases_file: those name files it would create.
#include <cstdio>
#include <cstdlib>
#include <string>

#include <spdlog/spdlog.h>

#include "spigot/config/config.h"
#include "spigot/gateway/gateway.h"
#include "spigot/test_tools/gateway_pair.h"

using namespace spigot;

namespace {

void Require(bool cond, const char* what) {
  if (!cond) {
    std::fprintf(stderr, "config property broken: %s\n", what);
    std::abort();
  }
}

// Relative psk_file names resolve against this directory, which does not exist.
constexpr const char* kSource = "/nonexistent-spigot-fuzz/spigot.toml";

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);  // the gateways' logs would cost more than the runs
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const config::LoadResult r = config::LoadString(text, kSource);
  if (!r.ok) {
    Require(!r.error.empty(), "refused without a message");
    Require(r.error.rfind(kSource, 0) == 0, "the message does not name the file");
    return 0;
  }
  const config::LoadResult again = config::LoadString(text, kSource);
  Require(again.ok && again.config == r.config, "the same text validated differently");
  Require(config::Diff(r.config, r.config).empty(), "a configuration differs from itself");

  config::Config c = r.config;
  c.global.lease_db.clear();
  c.global.leases_file.clear();
  test_tools::FakeClock clock;
  test_tools::FakeDataPlane dataplane;
  test_tools::FakeNetwork net;
  test_tools::FakeTransport transport(net, "192.0.2.2");
  test_tools::FakeControlLoop loop;
  test_tools::ManualExecutor workers(4);
  std::string err;
  auto gw = gateway::Gateway::Create(
      std::move(c), kSource, gateway::Gateway::Environment{clock, dataplane, transport, loop, workers}, &err);
  Require(gw != nullptr || !err.empty(), "the gateway refused a validated configuration without a reason");
  if (gw) {
    gw->Start();  // start_action = "start" connections send their IKE_SA_INIT
    loop.RunPosted();
  }
  return 0;
}
