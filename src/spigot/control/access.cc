#include "spigot/control/access.h"

#include <algorithm>
#include <array>

namespace spigot::control {
namespace {

// Commands that only report. `doctor` reads `stats` on the client side today; it is listed so
// that a daemon-side doctor stays read-only.
constexpr std::array<std::string_view, 4> kReadOnlyCommands = {"stats", "sas", "leases", "doctor"};

std::string Who(const PeerCredentials& peer) {
  return "uid " + std::to_string(peer.uid) + " (pid " + std::to_string(peer.pid) + ")";
}

std::string Admins(const AccessPolicy& policy) {
  return policy.daemon_uid == 0 ? "root"
                                : "root and the daemon's user \"" + policy.daemon_user + "\"";
}

}  // namespace

CommandClass ClassifyCommand(std::string_view command) {
  return std::find(kReadOnlyCommands.begin(), kReadOnlyCommands.end(), command) !=
                 kReadOnlyCommands.end()
             ? CommandClass::kReadOnly
             : CommandClass::kAdmin;
}

std::string CheckAccess(const AccessPolicy& policy, const PeerCredentials& peer,
                        std::string_view command) {
  if (peer.uid == 0 || peer.uid == policy.daemon_uid) return "";
  const bool member =
      policy.read_group &&
      (peer.gid == *policy.read_group ||
       std::find(peer.groups.begin(), peer.groups.end(), *policy.read_group) != peer.groups.end());
  if (!member) {
    return "permission denied: " + Who(peer) + " is not " + Admins(policy) +
           (policy.read_group ? " nor in group \"" + policy.read_group_name +
                                    "\" (global.socket_group, read-only commands)"
                              : " (no global.socket_group is set for read-only access)");
  }
  if (ClassifyCommand(command) == CommandClass::kReadOnly) return "";
  return "permission denied: '" + std::string(command) + "' changes the gateway and is for " +
         Admins(policy) + " only; " + Who(peer) + " is in group \"" + policy.read_group_name +
         "\" (global.socket_group), which may run the read-only commands stats, sas, leases and "
         "doctor";
}

}  // namespace spigot::control
