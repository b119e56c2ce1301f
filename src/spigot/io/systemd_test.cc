#include "spigot/io/systemd.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace spigot::io {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// The manager's side of sd_notify(3): a unix datagram socket the test binds, named by
// NOTIFY_SOCKET for the duration of the test.
class NotifyListener {
 public:
  NotifyListener() {
    path_ = "/tmp/spigot-notify-test-" + std::to_string(getpid()) + ".sock";
    unlink(path_.c_str());
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path_.c_str(), sizeof(a.sun_path) - 1);
    bound_ = fd_ >= 0 && bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    setenv("NOTIFY_SOCKET", path_.c_str(), 1);
  }
  ~NotifyListener() {
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    if (fd_ >= 0) close(fd_);
    unlink(path_.c_str());
  }
  bool bound() const { return bound_; }
  // The next message, or "" when none is waiting.
  std::string Next() {
    char buf[4096];
    const ssize_t n = recv(fd_, buf, sizeof(buf), MSG_DONTWAIT);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
  }

 private:
  std::string path_;
  int fd_ = -1;
  bool bound_ = false;
};

TEST(ServiceNotifierTest, WithoutNotifySocketNothingIsSent) {
  unsetenv("NOTIFY_SOCKET");
  setenv("WATCHDOG_USEC", "2000000", 1);
  ServiceNotifier n = ServiceNotifier::FromEnvironment();
  unsetenv("WATCHDOG_USEC");
  EXPECT_FALSE(n.enabled());
  EXPECT_FALSE(n.watchdog().has_value());
  n.Ready("up");
  n.WatchdogPing();
  EXPECT_EQ(n.send_failures(), 0u);
}

TEST(ServiceNotifierTest, ReadyStatusStoppingReachTheSocket) {
  NotifyListener manager;
  ASSERT_TRUE(manager.bound());
  ServiceNotifier n = ServiceNotifier::FromEnvironment();
  EXPECT_TRUE(n.enabled());
  EXPECT_FALSE(n.watchdog().has_value());  // no WATCHDOG_USEC
  n.Ready("2 tunnels");
  EXPECT_EQ(manager.Next(), "READY=1\nSTATUS=2 tunnels");
  n.Status("line one\nline two");
  EXPECT_EQ(manager.Next(), "STATUS=line one line two");
  n.Stopping();
  EXPECT_EQ(manager.Next(), "STOPPING=1");
  EXPECT_EQ(manager.Next(), "");
  EXPECT_EQ(n.send_failures(), 0u);
}

TEST(ServiceNotifierTest, WatchdogFromEnvironmentOnlyForThisProcess) {
  NotifyListener manager;
  setenv("WATCHDOG_USEC", "3000000", 1);
  ServiceNotifier n = ServiceNotifier::FromEnvironment();
  ASSERT_TRUE(n.watchdog().has_value());
  EXPECT_EQ(*n.watchdog(), seconds(3));
  n.WatchdogPing();
  EXPECT_EQ(manager.Next(), "WATCHDOG=1");

  setenv("WATCHDOG_PID", std::to_string(getpid()).c_str(), 1);
  EXPECT_TRUE(ServiceNotifier::FromEnvironment().watchdog().has_value());
  setenv("WATCHDOG_PID", std::to_string(getpid() + 1).c_str(), 1);  // another process's
  EXPECT_FALSE(ServiceNotifier::FromEnvironment().watchdog().has_value());
}

TEST(ServiceNotifierTest, AManagerThatIsGoneIsCounted) {
  setenv("NOTIFY_SOCKET", "/tmp/spigot-notify-test-nobody-listens.sock", 1);
  ServiceNotifier n = ServiceNotifier::FromEnvironment();
  unsetenv("NOTIFY_SOCKET");
  ASSERT_TRUE(n.enabled());
  n.Status("x");  // sd_notify reads NOTIFY_SOCKET on every call: unset, it sends nothing
  EXPECT_EQ(n.send_failures(), 0u);
  setenv("NOTIFY_SOCKET", "/tmp/spigot-notify-test-nobody-listens.sock", 1);
  n.Status("x");
  unsetenv("NOTIFY_SOCKET");
  EXPECT_EQ(n.send_failures(), 1u);
}

TEST(ProgressWatchTest, ThreadsSilentLongerThanTheBoundAreStalled) {
  ProgressWatch watch;
  const auto t0 = ProgressWatch::Clock::now();
  ProgressWatch::Beat& out = watch.Register("outbound", t0);
  ProgressWatch::Beat& in = watch.Register("inbound", t0);
  EXPECT_TRUE(watch.Stalled(t0 + seconds(1), seconds(1)).empty());  // exactly the bound: alive
  out.Now(t0 + seconds(2));
  const auto stalled = watch.Stalled(t0 + seconds(2), seconds(1));
  ASSERT_EQ(stalled.size(), 1u);
  EXPECT_EQ(stalled[0].thread, "inbound");
  EXPECT_EQ(stalled[0].silent, milliseconds(2000));
  in.Now(t0 + seconds(2));
  EXPECT_TRUE(watch.Stalled(t0 + seconds(2), seconds(1)).empty());
  for (int i = 0; i < 100; ++i) watch.Register("more", t0);  // earlier Beats do not move
  out.Now(t0 + seconds(9));
  in.Now(t0 + seconds(9));
  EXPECT_EQ(watch.Stalled(t0 + seconds(9), seconds(1)).size(), 100u);
}

TEST(ServiceWatchdogTest, StallBoundIsHalfTheWatchdogButAtLeastTheMinimum) {
  EXPECT_EQ(ServiceWatchdog::Options{seconds(30)}.period(), seconds(15));
  EXPECT_EQ(ServiceWatchdog::Options{seconds(30)}.stall_after(), seconds(15));
  EXPECT_EQ(ServiceWatchdog::Options{milliseconds(600)}.stall_after(), ServiceWatchdog::kMinStall);
}

TEST(ServiceWatchdogTest, PingsOnlyWhileEveryThreadProgresses) {
  NotifyListener manager;
  setenv("WATCHDOG_USEC", "4000000", 1);
  ServiceNotifier n = ServiceNotifier::FromEnvironment();
  ASSERT_TRUE(n.watchdog().has_value());
  ProgressWatch watch;
  const auto t0 = ProgressWatch::Clock::now();
  ProgressWatch::Beat& out = watch.Register("datapath-out", t0);
  ProgressWatch::Beat& in = watch.Register("datapath-in", t0);
  ServiceWatchdog dog(n, watch, {*n.watchdog()});  // stall after 2 s

  auto r = dog.Check(t0 + seconds(1));
  EXPECT_TRUE(r.pinged);
  EXPECT_FALSE(r.changed);
  EXPECT_EQ(manager.Next(), "WATCHDOG=1");

  out.Now(t0 + seconds(3));  // the inbound thread hangs
  r = dog.Check(t0 + seconds(3));
  EXPECT_FALSE(r.pinged);
  EXPECT_TRUE(r.changed);
  ASSERT_EQ(r.stalled.size(), 1u);
  EXPECT_EQ(r.stalled[0].thread, "datapath-in");
  EXPECT_EQ(manager.Next(), "");
  out.Now(t0 + seconds(5));
  r = dog.Check(t0 + seconds(5));
  EXPECT_FALSE(r.pinged);
  EXPECT_FALSE(r.changed);
  EXPECT_EQ(manager.Next(), "");
  EXPECT_EQ(dog.withheld(), 2u);

  in.Now(t0 + seconds(6));  // it comes back
  out.Now(t0 + seconds(6));
  r = dog.Check(t0 + seconds(6));
  EXPECT_TRUE(r.pinged);
  EXPECT_TRUE(r.changed);
  EXPECT_EQ(manager.Next(), "WATCHDOG=1");
  EXPECT_EQ(dog.pings(), 2u);
}

TEST(JournalStreamTest, MatchesOnlyStderrsOwnDeviceAndInode) {
  struct stat st {};
  ASSERT_EQ(fstat(STDERR_FILENO, &st), 0);
  const std::string mine = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  setenv("JOURNAL_STREAM", mine.c_str(), 1);
  EXPECT_TRUE(StderrIsJournal());
  const std::string other = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino + 1);
  setenv("JOURNAL_STREAM", other.c_str(), 1);
  EXPECT_FALSE(StderrIsJournal());  // inherited by a child whose stderr went elsewhere
  setenv("JOURNAL_STREAM", (mine + "x").c_str(), 1);
  EXPECT_FALSE(StderrIsJournal());
  unsetenv("JOURNAL_STREAM");
  EXPECT_FALSE(StderrIsJournal());
  EXPECT_EQ(JournalPrefix(4), "<4>");
  EXPECT_EQ(JournalPrefix(9), "<7>");
}

}  // namespace
}  // namespace spigot::io
