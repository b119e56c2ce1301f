#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "spigot/control/control_client.h"
#include "spigot/control/control_server.h"

namespace spigot::control {
namespace {

using nlohmann::json;

// Echoes the command back; "big" answers with `size` bytes; "fail" answers with an error;
// "throw" throws.
json TestHandler(const json& request) {
  const std::string command = request.value("command", "");
  if (command == "big") return {{"data", std::string(request.at("size").get<std::size_t>(), 'x')}};
  if (command == "fail") return {{"error", "no such connection"}};
  if (command == "throw") throw std::runtime_error("boom");
  return {{"command", command}, {"ok", true}};
}

class ControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = std::filesystem::temp_directory_path() / "spigot-ctl-XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    path_ = dir_ + "/run/spigot.sock";  // run/ does not exist yet
  }
  void TearDown() override {
    StopThread();
    server_.reset();
    std::filesystem::remove_all(dir_);
  }

  void StartServer(ControlServer::Options options = {}) {
    std::string error;
    server_ = ControlServer::Listen(path_, TestHandler, options, &error);
    ASSERT_NE(server_, nullptr) << error;
  }
  // Drives the server from a thread with a small poll loop, as an event loop would.
  void StartThread() {
    thread_ = std::thread([this] {
      while (!stop_) {
        pollfd p{server_->fd(), POLLIN, 0};
        if (poll(&p, 1, 10) > 0) server_->OnReadable();
      }
    });
  }
  void StopThread() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  // Polls the server on this thread until it has nothing left to do.
  void Pump() {
    for (int i = 0; i < 100; ++i) {
      pollfd p{server_->fd(), POLLIN, 0};
      if (poll(&p, 1, 10) <= 0) return;
      server_->OnReadable();
    }
  }

  // A connected raw client socket.
  int Connect() {
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    return fd;
  }
  // Everything the server sends until it closes (bounded wait).
  static std::string ReadAll(int fd) {
    std::string text;
    char buf[4096];
    while (true) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 2000) <= 0) break;
      const ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      text.append(buf, static_cast<std::size_t>(n));
    }
    return text;
  }

  std::string dir_;
  std::string path_;
  std::unique_ptr<ControlServer> server_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

TEST_F(ControlTest, RequestAndResponse) {
  StartServer();
  struct stat st;
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  StartThread();

  const RequestResult r = ControlClient::Request(path_, {{"command", "sas"}});
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.response, (json{{"command", "sas"}, {"ok", true}}));

  const RequestResult again = ControlClient::Request(path_, {{"command", "stats"}});
  ASSERT_TRUE(again.ok) << again.error;
  EXPECT_EQ(again.response["command"], "stats");

  StopThread();
  EXPECT_EQ(server_->stats().requests, 2u);
  EXPECT_EQ(server_->stats().clients, 0u);
}

TEST_F(ControlTest, ErrorAnswersAreClientErrors) {
  StartServer();
  StartThread();
  const RequestResult r = ControlClient::Request(path_, {{"command", "fail"}});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "no such connection");
  EXPECT_EQ(r.response["error"], "no such connection");

  const RequestResult thrown = ControlClient::Request(path_, {{"command", "throw"}});
  EXPECT_FALSE(thrown.ok);
  EXPECT_EQ(thrown.error, "internal error: boom");
}

TEST_F(ControlTest, BadRequests) {
  StartServer();
  StartThread();
  for (const char* request : {"not json\n", "[1,2]\n", "\n"}) {
    const int fd = Connect();
    ASSERT_EQ(send(fd, request, std::strlen(request), MSG_NOSIGNAL),
              static_cast<ssize_t>(std::strlen(request)));
    const json answer = json::parse(ReadAll(fd), nullptr, false);
    EXPECT_TRUE(answer.contains("error")) << request << " -> " << answer;
    close(fd);
  }
  StopThread();
  EXPECT_EQ(server_->stats().bad_requests, 3u);
  EXPECT_EQ(server_->stats().requests, 0u);
}

TEST_F(ControlTest, RequestInPiecesAndWithoutNewline) {
  StartServer();
  const int fd = Connect();
  ASSERT_EQ(send(fd, "{\"comm", 6, MSG_NOSIGNAL), 6);
  Pump();
  ASSERT_EQ(send(fd, "and\":\"x\"}", 9, MSG_NOSIGNAL), 9);
  Pump();
  shutdown(fd, SHUT_WR);  // end of request without "\n"
  Pump();
  EXPECT_EQ(json::parse(ReadAll(fd)), (json{{"command", "x"}, {"ok", true}}));
  close(fd);
}

TEST_F(ControlTest, OversizedRequestIsAnsweredAndClosed) {
  ControlServer::Options options;
  options.max_request_bytes = 64 * 1024;
  StartServer(options);
  StartThread();

  // Exactly at the limit is fine.
  std::string padding(64 * 1024 - std::string(R"({"command":"x","pad":""})").size(), 'p');
  const RequestResult fits = ControlClient::Request(path_, {{"command", "x"}, {"pad", padding}});
  EXPECT_TRUE(fits.ok) << fits.error;

  const RequestResult r = ControlClient::Request(path_, {{"command", "x"}, {"pad", padding + "p"}});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "request longer than 65536 bytes");

  // A client that keeps sending without a newline.
  const int fd = Connect();
  const std::string junk(200 * 1024, 'a');
  send(fd, junk.data(), junk.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  EXPECT_NE(ReadAll(fd).find("request longer than 65536 bytes"), std::string::npos);
  close(fd);

  StopThread();
  EXPECT_EQ(server_->stats().oversized_requests, 2u);
  EXPECT_EQ(server_->stats().requests, 1u);
}

TEST_F(ControlTest, LargeResponseIsWrittenInFull) {
  StartServer();
  StartThread();
  const std::size_t size = 2 * 1024 * 1024;  // far beyond the socket buffer
  const RequestResult r = ControlClient::Request(path_, {{"command", "big"}, {"size", size}});
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.response["data"].get<std::string>().size(), size);
}

TEST_F(ControlTest, TooManyClientsAreRefusedAndCounted) {
  ControlServer::Options options;
  options.max_clients = 2;
  StartServer(options);
  const int a = Connect();
  const int b = Connect();
  Pump();
  const int c = Connect();
  Pump();
  EXPECT_NE(ReadAll(c).find("too many control connections (2)"), std::string::npos);
  EXPECT_EQ(server_->stats().refused_clients, 1u);
  EXPECT_EQ(server_->stats().clients, 2u);

  // Room again once one is done.
  ASSERT_EQ(send(a, "{}\n", 3, MSG_NOSIGNAL), 3);
  Pump();
  EXPECT_FALSE(ReadAll(a).empty());
  const int d = Connect();
  Pump();
  EXPECT_EQ(server_->stats().clients, 2u);
  EXPECT_EQ(server_->stats().refused_clients, 1u);
  for (int fd : {a, b, c, d}) close(fd);
}

TEST_F(ControlTest, IdleClientsAreClosed) {
  StartServer();
  const int fd = Connect();
  Pump();
  EXPECT_EQ(server_->stats().clients, 1u);
  server_->CloseIdleClients(std::chrono::steady_clock::now());  // not idle long enough
  EXPECT_EQ(server_->stats().clients, 1u);
  server_->CloseIdleClients(std::chrono::steady_clock::now() + std::chrono::minutes(1));
  EXPECT_EQ(server_->stats().clients, 0u);
  EXPECT_EQ(server_->stats().idle_closed, 1u);
  EXPECT_EQ(ReadAll(fd), "");  // EOF
  close(fd);
}

TEST_F(ControlTest, ClientErrorWhenNoDaemon) {
  const RequestResult r = ControlClient::Request(path_, {{"command", "stats"}});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "cannot connect to " + path_ +
                         ": No such file or directory — is `spigot run` running?");
}

TEST_F(ControlTest, ClientTimesOut) {
  StartServer();  // listening, but nobody drives it
  ClientOptions options;
  options.timeout = std::chrono::milliseconds(50);
  const RequestResult r = ControlClient::Request(path_, {{"command", "stats"}}, options);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "no answer from " + path_ + " within 50 ms");
}

TEST_F(ControlTest, StaleSocketIsReplacedLiveOneIsNot) {
  // A socket file left by a daemon that died: bound, never closed cleanly.
  std::filesystem::create_directories(dir_ + "/run");
  const int stale = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(bind(stale, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  close(stale);
  ASSERT_TRUE(std::filesystem::exists(path_));

  StartServer();  // replaces it

  std::string error;
  EXPECT_EQ(ControlServer::Listen(path_, TestHandler, {}, &error), nullptr);
  EXPECT_EQ(error, path_ + " is in use: is another `spigot run` running?");

  server_.reset();
  EXPECT_FALSE(std::filesystem::exists(path_));  // removed on shutdown
}

TEST_F(ControlTest, RefusesToReplaceANonSocket) {
  std::filesystem::create_directories(dir_ + "/run");
  std::ofstream(path_) << "precious";
  std::string error;
  EXPECT_EQ(ControlServer::Listen(path_, TestHandler, {}, &error), nullptr);
  EXPECT_EQ(error, path_ + " exists and is not a socket");
  EXPECT_TRUE(std::filesystem::exists(path_));
}

// Options::authorize sees the peer as the kernel recorded it (SO_PEERCRED); a refusal is the
// answer, counted, and the handler never runs for it.
TEST_F(ControlTest, AuthorizeSeesThePeersCredentialsAndRefusalsAreAnswered) {
  PeerCredentials seen;
  ControlServer::Options options;
  options.socket_mode = 0600;
  options.authorize = [&](const PeerCredentials& peer, const json& request) {
    seen = peer;
    return request.value("command", "") == "reload" ? std::string("no reload for uid " + std::to_string(peer.uid))
                                                     : std::string();
  };
  StartServer(options);
  struct stat st {};
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  StartThread();
  EXPECT_EQ(ControlClient::Request(path_, {{"command", "stats"}}).response,
            (json{{"command", "stats"}, {"ok", true}}));
  const RequestResult refused = ControlClient::Request(path_, {{"command", "reload"}});
  EXPECT_FALSE(refused.ok);
  EXPECT_EQ(refused.response, (json{{"error", "no reload for uid " + std::to_string(getuid())}}));
  StopThread();
  EXPECT_EQ(seen.uid, getuid());
  EXPECT_EQ(seen.gid, getgid());
  EXPECT_EQ(seen.pid, getpid());
  EXPECT_EQ(server_->stats().requests, 1u);
  EXPECT_EQ(server_->stats().refused_requests, 1u);
}

// With the real policy: a client of another uid (a forked child that gave up root) is refused
// by the daemon even when the file's mode lets it connect.
TEST_F(ControlTest, AnotherUidIsRefusedByThePolicy) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  AccessPolicy policy;
  policy.daemon_uid = 0;
  ControlServer::Options options;
  options.socket_mode = 0666;
  options.authorize = [&](const PeerCredentials& peer, const json& request) {
    return CheckAccess(policy, peer, request.value("command", ""));
  };
  StartServer(options);
  ASSERT_EQ(chmod(dir_.c_str(), 0755), 0);
  const uid_t nobody = 65534;
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (setresgid(nobody, nobody, nobody) != 0 || setgroups(0, nullptr) != 0 ||
        setresuid(nobody, nobody, nobody) != 0) {
      _exit(3);
    }
    const RequestResult r = ControlClient::Request(path_, {{"command", "stats"}});
    const std::string want = "permission denied: uid 65534 (pid " + std::to_string(getpid()) +
                             ") is not root (no global.socket_group is set for read-only access)";
    _exit(!r.ok && r.response.value("error", "") == want ? 0 : 1);
  }
  int status = 0;
  for (int i = 0; i < 1000 && waitpid(child, &status, WNOHANG) == 0; ++i) Pump();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(server_->stats().refused_requests, 1u);
}

}  // namespace
}  // namespace spigot::control
