// The metrics endpoint over real sockets on 127.0.0.1: answers, refusals, and each bound.
#include "spigot/control/metrics_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "spigot/test_tools/wait_until.h"

namespace spigot::control {
namespace {

using namespace std::chrono_literals;

int Connect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Everything the server sends until it closes (or 5 s pass).
std::string ReadAll(int fd) {
  std::string out;
  char buf[4096];
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < until) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

std::string Request(int port, const std::string& request) {
  const int fd = Connect(port);
  if (fd < 0) return "connect failed";
  (void)::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string answer = ReadAll(fd);
  ::close(fd);
  return answer;
}

std::string Get(int port, const std::string& path) {
  return Request(port, "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
}

std::unique_ptr<MetricsServer> StartServer(MetricsServer::Options o = {}) {
  std::string error;
  auto s = MetricsServer::Start("127.0.0.1:0", o, &error);
  EXPECT_TRUE(s) << error;
  return s;
}

nlohmann::json Snapshot(int active) { return {{"stats", {{"active_sas", active}}}}; }

TEST(MetricsServerTest, ServesTheLatestSnapshot) {
  auto s = StartServer();
  ASSERT_TRUE(s);
  ASSERT_NE(s->port(), 0);
  // Nothing published yet: the gateway is starting.
  EXPECT_TRUE(Get(s->port(), "/metrics").starts_with("HTTP/1.1 503")) << Get(s->port(), "/metrics");
  s->Publish(Snapshot(3));
  std::string answer = Get(s->port(), "/metrics");
  EXPECT_TRUE(answer.starts_with("HTTP/1.1 200 OK\r\n")) << answer;
  EXPECT_NE(answer.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"), std::string::npos) << answer;
  EXPECT_NE(answer.find("Connection: close\r\n"), std::string::npos) << answer;
  EXPECT_NE(answer.find("\nspigot_child_sas 3\n"), std::string::npos) << answer;
  EXPECT_NE(answer.find("\nspigot_metrics_scrapes_total 1\n"), std::string::npos) << answer;
  s->Publish(Snapshot(5));
  answer = Get(s->port(), "/metrics");
  EXPECT_NE(answer.find("\nspigot_child_sas 5\n"), std::string::npos) << answer;
  EXPECT_NE(answer.find("\nspigot_metrics_scrapes_total 2\n"), std::string::npos) << answer;
  EXPECT_EQ(s->counters().scrapes, 2u);
  EXPECT_EQ(s->counters().bad_requests, 0u);
}

TEST(MetricsServerTest, BadRequestsAreAnsweredAndCounted) {
  auto s = StartServer();
  ASSERT_TRUE(s);
  s->Publish(Snapshot(1));
  EXPECT_TRUE(Get(s->port(), "/other").starts_with("HTTP/1.1 404")) << Get(s->port(), "/other");
  EXPECT_TRUE(Request(s->port(), "NONSENSE\r\n\r\n").starts_with("HTTP/1.1 400"));
  // A body is refused (413); so is a header section past the byte cap (16 KiB), and a header
  // line longer than cpp-httplib's 8 KiB.
  EXPECT_TRUE(Request(s->port(), "POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello").starts_with("HTTP/1.1 4"));
  std::string many = "GET /metrics HTTP/1.1\r\n";
  for (int i = 0; i < 400; ++i) many += "X-Filler-" + std::to_string(i) + ": " + std::string(60, 'x') + "\r\n";
  many += "\r\n";
  EXPECT_TRUE(Request(s->port(), many).starts_with("HTTP/1.1 400")) << Request(s->port(), many).substr(0, 80);
  const std::string long_line = "GET /metrics HTTP/1.1\r\nX-Long: " + std::string(9000, 'y') + "\r\n\r\n";
  EXPECT_TRUE(Request(s->port(), long_line).starts_with("HTTP/1.1 400"));
  EXPECT_EQ(s->counters().bad_requests, 5u);
  // Still serving.
  EXPECT_TRUE(Get(s->port(), "/metrics").starts_with("HTTP/1.1 200"));
}

TEST(MetricsServerTest, SlowClientsAreCutAtTheDeadline) {
  MetricsServer::Options o;
  o.deadline = 300ms;
  auto s = StartServer(o);
  ASSERT_TRUE(s);
  s->Publish(Snapshot(1));
  // Half a request line, then silence: closed at the deadline, no answer.
  const int fd = Connect(s->port());
  ASSERT_GE(fd, 0);
  const std::string part = "GET /metr";
  ::send(fd, part.data(), part.size(), MSG_NOSIGNAL);
  const auto start = std::chrono::steady_clock::now();
  const std::string answer = ReadAll(fd);
  const auto took = std::chrono::steady_clock::now() - start;
  ::close(fd);
  EXPECT_EQ(answer, "");
  EXPECT_LT(took, 3s) << "not closed near its 300 ms deadline";
  EXPECT_TRUE(test_tools::WaitUntil([&] { return s->counters().timeouts == 1; }, 2s));
}

TEST(MetricsServerTest, ConnectionsOverTheBoundAreRefusedAndCounted) {
  MetricsServer::Options o;
  o.max_connections = 4;
  o.deadline = 1500ms;
  auto s = StartServer(o);
  ASSERT_TRUE(s);
  s->Publish(Snapshot(1));
  // Four idle connections take every place...
  std::vector<int> idle;
  for (int i = 0; i < 4; ++i) idle.push_back(Connect(s->port()));
  ASSERT_TRUE(test_tools::WaitUntil([&] { return s->counters().open_connections == 4; }, 5s));
  // ... so the fifth is answered 503 at once and closed.
  const std::string refused = Get(s->port(), "/metrics");
  EXPECT_TRUE(refused.starts_with("HTTP/1.1 503")) << refused;
  EXPECT_EQ(s->counters().refused_connections, 1u);
  // Once they are gone (closed by us here), scrapes are served again.
  for (int fd : idle) ::close(fd);
  EXPECT_TRUE(test_tools::WaitUntil([&] { return Get(s->port(), "/metrics").starts_with("HTTP/1.1 200"); }, 5s));
}

TEST(MetricsServerTest, ListenAddressesAreChecked) {
  std::string host, why, error;
  int port = 0;
  EXPECT_TRUE(MetricsServer::ParseListen("127.0.0.1:9187", &host, &port, &why));
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 9187);
  EXPECT_TRUE(MetricsServer::ParseListen("[::1]:9187", &host, &port, &why));
  EXPECT_EQ(host, "::1");
  EXPECT_FALSE(MetricsServer::ParseListen("localhost:9187", &host, &port, &why));
  EXPECT_FALSE(MetricsServer::ParseListen("127.0.0.1:99999", &host, &port, &why));
  EXPECT_EQ(MetricsServer::Start("198.51.100.77:9187", {}, &error), nullptr);  // not ours
  EXPECT_EQ(error, "cannot listen on 198.51.100.77:9187: Cannot assign requested address");
}

TEST(MetricsServerTest, StopsPromptlyWithClientsConnected) {
  auto s = StartServer();
  ASSERT_TRUE(s);
  const int fd = Connect(s->port());
  std::this_thread::sleep_for(50ms);
  const auto start = std::chrono::steady_clock::now();
  s.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  ::close(fd);
}

}  // namespace
}  // namespace spigot::control
