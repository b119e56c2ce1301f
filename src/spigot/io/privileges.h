// Giving up root once the daemon's sockets and devices are open (global.user,
// config/run_as.h), keeping only CAP_NET_ADMIN: the control thread still adds and removes
// routes and addresses on the TUN device (virtual IPs, connections a reload adds) over the
// netlink socket, and the kernel checks the sender's capability on every such message. Nothing
// after startup binds a privileged port (a change of listen, ike_port or natt_port needs a
// restart; the RADIUS client binds an ephemeral one), so CAP_NET_BIND_SERVICE goes.
//
// Capabilities are per thread, and the daemon starts threads (IKE workers, the data path,
// metrics) before its last socket is open. Hence two steps:
//   1. LimitBoundingSet(), before the first thread: the bounding set shrinks to CAP_NET_ADMIN
//      and no_new_privs is set, both inherited by every thread created afterwards. The caller
//      keeps its permitted capabilities for the rest of startup.
//   2. SwitchUser(), after the last privileged open, on the control thread: supplementary
//      groups, gid and uid change in every thread (glibc applies set*id to all threads); the
//      kernel clears the capabilities of every thread whose uid leaves 0, except the caller's,
//      which keeps CAP_NET_ADMIN alone (PR_SET_KEEPCAPS, then capset through libcap).
#pragma once

#include <sys/types.h>

#include <string>

namespace spigot::io {

// Drops every capability but CAP_NET_ADMIN from the bounding set and sets no_new_privs.
// Capabilities it may not drop (no CAP_SETPCAP, e.g. under a systemd CapabilityBoundingSet
// without it) are listed in `not_dropped` ("cap_net_bind_service,..."): no_new_privs still keeps
// an exec from gaining them. False with `error` only when no_new_privs cannot be set.
bool LimitBoundingSet(std::string* error, std::string* not_dropped);

// The capabilities SwitchUser needs that the calling thread lacks ("cap_setuid, cap_setgid"),
// empty when it has them all.
std::string MissingForSwitch();

// Switches every thread to `uid`/`gid` with the supplementary groups of `user`, the calling
// thread keeping CAP_NET_ADMIN (permitted and effective). Checks the result (uid, no way back
// to root, exactly the one capability). False with `error` naming the step that failed; the
// process is then in an unknown state and should exit.
bool SwitchUser(const std::string& user, uid_t uid, gid_t gid, std::string* error);

// "cap_net_admin=ep" and alike: the calling thread's capabilities, for the log.
std::string DescribeCapabilities();

}  // namespace spigot::io
