// `spigot run`: the process wiring of the gateway daemon. Opens the IKE sockets (UDP 500 read
// here, UDP 4500 read by the data plane's inbound thread, which hands IKE over), the data
// plane (TUN, routes, data-path threads), the IKE workers and the control socket, and drives
// gateway::Gateway from one event loop: datagrams, acquires, the tick, signals (SIGTERM and
// SIGINT shut down, SIGHUP reloads) and operator commands.
#pragma once

#include <memory>
#include <string>

#include "spigot/config/config.h"

namespace spigot::app {

// Runs the gateway with `config` (validated by config::LoadFile from `config_path`, which
// reload re-reads) until SIGTERM/SIGINT. Returns the exit code; 1 with a message on stderr if
// it cannot start.
int RunGateway(config::Config config, const std::string& config_path);

}  // namespace spigot::app
