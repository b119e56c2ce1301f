#include "spigot/io/privileges.h"

#include <grp.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace spigot::io {
namespace {

constexpr cap_value_t kKept[] = {CAP_NET_ADMIN};

std::string ErrnoText(const std::string& what) { return what + ": " + std::strerror(errno); }

// Owns a cap_t.
struct Caps {
  cap_t caps;
  ~Caps() {
    if (caps != nullptr) cap_free(caps);
  }
};

}  // namespace

bool LimitBoundingSet(std::string* error, std::string* not_dropped) {
  not_dropped->clear();
  const cap_value_t last = static_cast<cap_value_t>(cap_max_bits()) - 1;
  for (cap_value_t cap = 0; cap <= last; ++cap) {
    if (cap == CAP_NET_ADMIN || cap_get_bound(cap) != 1) continue;  // kept, or gone already
    if (cap_drop_bound(cap) != 0) {
      char* name = cap_to_name(cap);
      not_dropped->append(not_dropped->empty() ? "" : ",").append(name != nullptr ? name : "?");
      cap_free(name);
    }
  }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    *error = ErrnoText("prctl(PR_SET_NO_NEW_PRIVS)");
    return false;
  }
  return true;
}

std::string MissingForSwitch() {
  const Caps now{cap_get_proc()};
  std::string missing;
  for (cap_value_t cap : {CAP_SETUID, CAP_SETGID, CAP_NET_ADMIN}) {
    cap_flag_value_t has = CAP_CLEAR;
    if (now.caps == nullptr || cap_get_flag(now.caps, cap, CAP_EFFECTIVE, &has) != 0 || has != CAP_SET) {
      char* name = cap_to_name(cap);
      missing.append(missing.empty() ? "" : ", ").append(name != nullptr ? name : "?");
      cap_free(name);
    }
  }
  return missing;
}

bool SwitchUser(const std::string& user, uid_t uid, gid_t gid, std::string* error) {
  if (initgroups(user.c_str(), gid) != 0) {
    *error = ErrnoText("initgroups(" + user + ")");
    return false;
  }
  if (setresgid(gid, gid, gid) != 0) {
    *error = ErrnoText("setresgid(" + std::to_string(gid) + ")");
    return false;
  }
  if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) {
    *error = ErrnoText("prctl(PR_SET_KEEPCAPS)");
    return false;
  }
  if (setresuid(uid, uid, uid) != 0) {
    *error = ErrnoText("setresuid(" + std::to_string(uid) + ")");
    return false;
  }
  prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
  const Caps wanted{cap_init()};
  if (wanted.caps == nullptr ||
      cap_set_flag(wanted.caps, CAP_PERMITTED, 1, kKept, CAP_SET) != 0 ||
      cap_set_flag(wanted.caps, CAP_EFFECTIVE, 1, kKept, CAP_SET) != 0) {
    *error = ErrnoText("cap_set_flag");
    return false;
  }
  if (cap_set_proc(wanted.caps) != 0) {
    *error = ErrnoText("capset(cap_net_admin=ep)");
    return false;
  }

  // Check what we got rather than trust it.
  uid_t r = 0, e = 0, s = 0;
  gid_t rg = 0, eg = 0, sg = 0;
  if (getresuid(&r, &e, &s) != 0 || r != uid || e != uid || s != uid ||
      getresgid(&rg, &eg, &sg) != 0 || rg != gid || eg != gid || sg != gid) {
    *error = "after the switch the process runs as uid " + std::to_string(e) + ", gid " +
             std::to_string(eg) + ", not " + std::to_string(uid) + "/" + std::to_string(gid);
    return false;
  }
  if (setuid(0) == 0) {
    *error = "after the switch the process could become root again";
    return false;
  }
  const Caps now{cap_get_proc()};
  if (now.caps == nullptr || cap_compare(now.caps, wanted.caps) != 0) {
    *error = "after the switch the capabilities are " + DescribeCapabilities() +
             ", not cap_net_admin=ep";
    return false;
  }
  return true;
}

std::string DescribeCapabilities() {
  const Caps now{cap_get_proc()};
  if (now.caps == nullptr) return "(unknown)";
  char* text = cap_to_text(now.caps, nullptr);
  std::string out = text != nullptr ? text : "(unknown)";
  cap_free(text);
  if (out == "=") out = "none";
  return out;
}

}  // namespace spigot::io
