// Who may run which control command (global.user, global.socket_group).
//
// Commands are read-only (they only report: stats, sas, leases, doctor) or admin (they change
// something: initiate, terminate, rekey, reload, crypto-fault, and any command not known as
// read-only). Root and the daemon's own user may run everything; members of socket_group (as
// their primary or a supplementary group) only the read-only ones; anyone else nothing. The
// socket file's mode (0660 with a group, else 0600) already keeps others from connecting; this
// check, on the peer's credentials from the kernel (SO_PEERCRED, SO_PEERGROUPS), holds even
// when the file's mode is widened.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace spigot::control {

enum class CommandClass { kReadOnly, kAdmin };
CommandClass ClassifyCommand(std::string_view command);

// A connected client, as the kernel saw it at connect().
struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups
};

struct AccessPolicy {
  uid_t daemon_uid = 0;
  std::string daemon_user = "root";  // for messages
  std::optional<gid_t> read_group;   // socket_group
  std::string read_group_name;       // for messages
};

// Empty when `peer` may run `command`; otherwise the refusal to answer with (and log).
std::string CheckAccess(const AccessPolicy& policy, const PeerCredentials& peer,
                        std::string_view command);

}  // namespace spigot::control
