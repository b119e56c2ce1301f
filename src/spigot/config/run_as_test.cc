#include "spigot/config/run_as.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

namespace spigot::config {
namespace {

constexpr gid_t kDaemonGroup = 990;
constexpr gid_t kOtherGroup = 100;

// Every permission of group and others, one at a time and in the usual combinations: only
// the owner's bits and reading by the daemon's own group pass.
TEST(RunAsTest, SecretFileModes) {
  struct Case {
    mode_t mode;
    gid_t gid;
    std::string problem;  // empty: accepted
  };
  const std::string fix = "; it holds secrets: chmod 600 (or 640 with the daemon's group)";
  const Case cases[] = {
      {0600, kOtherGroup, ""},
      {0400, kOtherGroup, ""},
      {0700, kOtherGroup, ""},
      {0000, kOtherGroup, ""},
      {0640, kDaemonGroup, ""},
      {0440, kDaemonGroup, ""},
      {0650, kDaemonGroup, ""},
      {0640, kOtherGroup, "mode 0640 lets group 100 read it, which is not the daemon's group (990)" + fix},
      {0610, kOtherGroup, "mode 0610 lets group 100 read it, which is not the daemon's group (990)" + fix},
      {0620, kDaemonGroup, "mode 0620 lets its group change it" + fix},
      {0660, kDaemonGroup, "mode 0660 lets its group change it" + fix},
      {0604, kDaemonGroup, "mode 0604 lets others read it" + fix},
      {0644, kDaemonGroup, "mode 0644 lets others read it" + fix},
      {0602, kDaemonGroup, "mode 0602 lets others use it" + fix},
      {0601, kDaemonGroup, "mode 0601 lets others use it" + fix},
      {0666, kOtherGroup, "mode 0666 lets others read it" + fix},
      {S_IFREG | 0644, kOtherGroup, "mode 0644 lets others read it" + fix},  // file type ignored
      {04600, kOtherGroup, ""},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(SecretFileProblem(c.mode, c.gid, kDaemonGroup), c.problem)
        << std::oct << c.mode << std::dec << " gid " << c.gid;
  }
}

TEST(RunAsTest, ResolvesUsers) {
  std::string error;
  const auto root = ResolveRunAs("root", &error);
  ASSERT_TRUE(root);
  EXPECT_FALSE(root->drop);
  EXPECT_TRUE(root->explicit_user);
  EXPECT_EQ(root->why_not, "global.user = \"root\"");

  const auto nobody = ResolveRunAs("nobody", &error);
  ASSERT_TRUE(nobody) << error;
  EXPECT_EQ(nobody->uid, 65534u);
  EXPECT_TRUE(nobody->drop);  // explicit: even when not root (then the switch fails, loudly)

  EXPECT_FALSE(ResolveRunAs("no-such-user-x9", &error));
  EXPECT_NE(error.find("no such user \"no-such-user-x9\""), std::string::npos) << error;

  // Absent: "spigot" when it exists, else stay as we are and say why.
  const auto fallback = ResolveRunAs("", &error);
  ASSERT_TRUE(fallback);
  EXPECT_FALSE(fallback->explicit_user);
  if (fallback->drop) {
    EXPECT_EQ(fallback->user, "spigot");
  } else {
    EXPECT_FALSE(fallback->why_not.empty());
  }

  EXPECT_EQ(ResolveGroup("root", &error), std::optional<gid_t>(0));
  EXPECT_FALSE(ResolveGroup("no-such-group-x9", &error));
}

}  // namespace
}  // namespace spigot::config
