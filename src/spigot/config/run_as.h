// Who the daemon runs as once its sockets are open (global.user, global.socket_group), and
// which files holding secrets that user's group may read.
//
// global.user absent: the user "spigot" when it exists, else the daemon stays root (and says
// so). global.user = "root": stays root. Anything else must be an existing user.
//
// Secret files (the configuration, psk_file, local_key) are refused, like ssh refuses a private
// key, when others may read or change them, or when a group may: except that the daemon's own
// group (the primary group of global.user) may read them, so that a reload, which reads them
// again after the daemon gave up root, works with root:spigot 0640 — a layout where the daemon
// cannot rewrite its own configuration (which, read by root at the next start, could name any
// file to write).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>

namespace spigot::config {

inline constexpr std::string_view kDefaultUser = "spigot";

struct RunAs {
  // Switch to `user` after startup. False: stay as we are (root, or already unprivileged).
  bool drop = false;
  bool explicit_user = false;  // global.user was set
  std::string user;            // the target user's name ("root" when staying root)
  uid_t uid = 0;
  gid_t gid = 0;               // the user's primary group: may read secret files
  std::string why_not;         // !drop: why the daemon keeps its current user, for the log
};

// Resolves global.user (empty: absent) against the user database. nullopt with `error` (no
// file or key in it) when an explicitly named user does not exist.
std::optional<RunAs> ResolveRunAs(std::string_view configured_user, std::string* error);

// global.socket_group: the group's id, or nullopt with `error` when there is no such group.
std::optional<gid_t> ResolveGroup(std::string_view group, std::string* error);

// Why a file with `mode` and group `file_gid` is too open to hold secrets for a daemon whose
// group is `daemon_gid`; empty when it is fine. Names the mode and the fix, not the file.
std::string SecretFileProblem(mode_t mode, gid_t file_gid, gid_t daemon_gid);

// The daemon group secret-file checks allow for a configuration naming `configured_user`
// (ResolveRunAs's gid, or 0 when it cannot be resolved: then only the owner may read).
gid_t DaemonGroupFor(std::string_view configured_user);

}  // namespace spigot::config
