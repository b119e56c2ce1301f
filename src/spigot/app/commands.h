// `spigot run` and the commands that talk to a running daemon over its control socket.
#pragma once

#include <string>

namespace spigot::app {

int RunDaemon(const std::string& config_path);
// One control request; prints the answer (JSON with `json`, else a table). Exit code 0 on
// success, 1 when the daemon answered with an error, 2 when it could not be reached.
int ControlCommand(const std::string& socket, const std::string& command, const std::string& name,
                   bool json, bool ike = false);

// `spigot debug crypto-fault ACTION [MS]`; exit codes as ControlCommand.
int CryptoFaultCommand(const std::string& socket, const std::string& action, long ms);

}  // namespace spigot::app
