// `spigot run` and the commands that talk to a running daemon over its control socket.
#pragma once

#include <string>

namespace spigot::app {

// Logs go to stderr: with timestamps and levels on a terminal or in a file; under systemd, when
// stderr is the journal (io::StderrIsJournal), without timestamps and with a syslog priority
// prefix per line, so `journalctl -p warning` selects warnings and errors.
int RunDaemon(const std::string& config_path);
// One control request; prints the answer (JSON with `json`, else a table). Exit code 0 on
// success, 1 when the daemon answered with an error, 2 when it could not be reached.
int ControlCommand(const std::string& socket, const std::string& command, const std::string& name,
                   bool json, bool ike = false);

// `spigot debug crypto-fault ACTION [MS]`; exit codes as ControlCommand.
int CryptoFaultCommand(const std::string& socket, const std::string& action, long ms);
// `spigot debug hang THREAD SECONDS`; exit codes as ControlCommand.
int DebugHangCommand(const std::string& socket, const std::string& thread, long seconds);

}  // namespace spigot::app
