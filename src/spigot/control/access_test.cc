#include "spigot/control/access.h"

#include <gtest/gtest.h>

namespace spigot::control {
namespace {

TEST(AccessTest, CommandsThatOnlyReportAreReadOnlyAndEverythingElseIsAdmin) {
  for (const char* c : {"stats", "sas", "leases", "doctor"}) {
    EXPECT_EQ(ClassifyCommand(c), CommandClass::kReadOnly) << c;
  }
  // Unknown and future commands default to admin: a new command is never readable by the
  // group by accident.
  for (const char* c : {"reload", "initiate", "terminate", "rekey", "crypto-fault", "debug", "",
                        "Stats", "stats ", "no-such-command"}) {
    EXPECT_EQ(ClassifyCommand(c), CommandClass::kAdmin) << c;
  }
}

AccessPolicy Policy() {
  AccessPolicy p;
  p.daemon_uid = 990;
  p.daemon_user = "spigot";
  p.read_group = 991;
  p.read_group_name = "spigot-ro";
  return p;
}

PeerCredentials Peer(uid_t uid, gid_t gid, std::vector<gid_t> groups = {}) {
  PeerCredentials p;
  p.pid = 4242;
  p.uid = uid;
  p.gid = gid;
  p.groups = std::move(groups);
  return p;
}

TEST(AccessTest, RootAndTheDaemonsUserMayRunEverything) {
  for (uid_t uid : {0u, 990u}) {
    for (const char* c : {"stats", "reload", "terminate", "crypto-fault", "anything"}) {
      EXPECT_EQ(CheckAccess(Policy(), Peer(uid, 100), c), "") << uid << " " << c;
    }
  }
}

TEST(AccessTest, GroupMembersMayOnlyRead) {
  // Primary group or supplementary group alike.
  for (const PeerCredentials& peer : {Peer(1001, 991), Peer(1001, 100, {5, 991, 7})}) {
    for (const char* c : {"stats", "sas", "leases", "doctor"}) {
      EXPECT_EQ(CheckAccess(Policy(), peer, c), "") << c;
    }
    EXPECT_EQ(CheckAccess(Policy(), peer, "reload"),
              "permission denied: 'reload' changes the gateway and is for root and the daemon's "
              "user \"spigot\" only; uid 1001 (pid 4242) is in group \"spigot-ro\" "
              "(global.socket_group), which may run the read-only commands stats, sas, leases "
              "and doctor");
    for (const char* c : {"terminate", "initiate", "rekey", "crypto-fault", ""}) {
      EXPECT_NE(CheckAccess(Policy(), peer, c), "") << c;
    }
  }
}

TEST(AccessTest, OthersMayRunNothing) {
  EXPECT_EQ(CheckAccess(Policy(), Peer(1002, 100, {5, 6}), "stats"),
            "permission denied: uid 1002 (pid 4242) is not root and the daemon's user \"spigot\" "
            "nor in group \"spigot-ro\" (global.socket_group, read-only commands)");
  AccessPolicy no_group = Policy();
  no_group.read_group.reset();
  no_group.read_group_name.clear();
  EXPECT_EQ(CheckAccess(no_group, Peer(1001, 991), "stats"),
            "permission denied: uid 1001 (pid 4242) is not root and the daemon's user \"spigot\" "
            "(no global.socket_group is set for read-only access)");
  // A daemon that stayed root: only root.
  AccessPolicy root = no_group;
  root.daemon_uid = 0;
  root.daemon_user = "root";
  EXPECT_EQ(CheckAccess(root, Peer(990, 990), "sas"),
            "permission denied: uid 990 (pid 4242) is not root (no global.socket_group is set "
            "for read-only access)");
}

}  // namespace
}  // namespace spigot::control
