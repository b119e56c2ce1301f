#include "spigot/config/run_as.h"

#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

namespace spigot::config {
namespace {

// getpwnam_r/getgrnam_r buffers start here and double while the entry does not fit (ERANGE),
// up to the bound; a bigger entry (thousands of group members) is reported as a lookup error.
constexpr std::size_t kFirstBuffer = 4096;
constexpr std::size_t kMaxBuffer = 1 << 20;

struct PasswdEntry {
  uid_t uid;
  gid_t gid;
};

// nullopt with `error` empty: no such user; with `error` set: the lookup itself failed.
std::optional<PasswdEntry> LookUpUser(const std::string& name, std::string* error) {
  std::vector<char> buffer(kFirstBuffer);
  for (;;) {
    passwd entry{};
    passwd* found = nullptr;
    const int rc = getpwnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found);
    if (rc == ERANGE && buffer.size() < kMaxBuffer) {
      buffer.resize(buffer.size() * 2);
      continue;
    }
    if (rc != 0 && rc != ENOENT && rc != ESRCH) {
      *error = "cannot look up user \"" + name + "\": " + std::strerror(rc);
      return std::nullopt;
    }
    if (found == nullptr) return std::nullopt;
    return PasswdEntry{found->pw_uid, found->pw_gid};
  }
}

std::string Octal(mode_t mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
  return text;
}

}  // namespace

std::optional<RunAs> ResolveRunAs(std::string_view configured_user, std::string* error) {
  RunAs r;
  r.explicit_user = !configured_user.empty();
  r.user = r.explicit_user ? std::string(configured_user) : std::string(kDefaultUser);
  if (r.user == "root") {
    r.why_not = "global.user = \"root\"";
    return r;
  }
  std::string lookup_error;
  const std::optional<PasswdEntry> entry = LookUpUser(r.user, &lookup_error);
  if (!entry) {
    if (r.explicit_user) {
      *error = !lookup_error.empty()
                   ? lookup_error
                   : "no such user \"" + r.user + "\" (create it, e.g. `useradd --system --no-create-home " +
                         r.user + "`, or set \"root\" to keep running as root)";
      return std::nullopt;
    }
    r.why_not = !lookup_error.empty()
                    ? lookup_error
                    : "global.user is not set and there is no user \"" + std::string(kDefaultUser) +
                          "\" (create it, e.g. `useradd --system --no-create-home " +
                          std::string(kDefaultUser) + "`, or set global.user)";
    r.user = "root";
    return r;
  }
  r.uid = entry->uid;
  r.gid = entry->gid;
  if (r.uid == 0) {
    r.why_not = "user \"" + r.user + "\" has uid 0";
    return r;
  }
  if (geteuid() == r.uid) {
    r.why_not = "already running as \"" + r.user + "\"";
    return r;
  }
  if (geteuid() != 0 && !r.explicit_user) {
    r.why_not = "not started as root (uid " + std::to_string(geteuid()) + ")";
    return r;
  }
  r.drop = true;  // explicit and not root: the switch fails and says so
  return r;
}

std::optional<gid_t> ResolveGroup(std::string_view group, std::string* error) {
  const std::string name(group);
  std::vector<char> buffer(kFirstBuffer);
  for (;;) {
    struct group entry {};
    struct group* found = nullptr;
    const int rc = getgrnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found);
    if (rc == ERANGE && buffer.size() < kMaxBuffer) {
      buffer.resize(buffer.size() * 2);
      continue;
    }
    if (rc != 0 && rc != ENOENT && rc != ESRCH) {
      *error = "cannot look up group \"" + name + "\": " + std::strerror(rc);
      return std::nullopt;
    }
    if (found == nullptr) {
      *error = "no such group \"" + name + "\" (create it, e.g. `groupadd --system " + name +
               "`, or remove the key: then only root and the daemon's user may use the socket)";
      return std::nullopt;
    }
    return found->gr_gid;
  }
}

std::string SecretFileProblem(mode_t mode, gid_t file_gid, gid_t daemon_gid) {
  const std::string fix = "; it holds secrets: chmod 600 (or 640 with the daemon's group)";
  if ((mode & (S_IROTH | S_IWOTH | S_IXOTH)) != 0) {
    return "mode " + Octal(mode) + " lets others " + ((mode & S_IROTH) != 0 ? "read" : "use") +
           " it" + fix;
  }
  if ((mode & S_IWGRP) != 0) return "mode " + Octal(mode) + " lets its group change it" + fix;
  if ((mode & (S_IRGRP | S_IXGRP)) != 0 && file_gid != daemon_gid) {
    return "mode " + Octal(mode) + " lets group " + std::to_string(file_gid) +
           " read it, which is not the daemon's group (" + std::to_string(daemon_gid) + ")" + fix;
  }
  return "";
}

gid_t DaemonGroupFor(std::string_view configured_user) {
  std::string ignored;
  const std::optional<RunAs> r = ResolveRunAs(configured_user, &ignored);
  if (!r) return 0;
  // Staying as we are, not root: our own group.
  if (!r->drop && geteuid() != 0) return getegid();
  return r->gid;
}

}  // namespace spigot::config
