// The Prometheus endpoint of `[global] metrics_listen` (GET /metrics, metrics.h): HTTP parsed
// and answered by cpp-httplib (Debian's libcpp-httplib-dev), on threads of its own.
//
// It cannot stall negotiations or the data path: it never reads gateway state. The control
// thread publishes a snapshot (Publish, about once a second); a scrape renders the latest one.
// The only lock shared with the control thread guards a pointer swap.
//
// Bounds (STYLE.md 7), each counted and exported as a metric:
//   - connections: at most Options::max_connections accepted and not yet closed (waiting for a
//     worker or being served); a connection past that is answered 503 at once and closed
//     (refused_connections);
//   - time: a connection is closed when Options::deadline has passed since it was accepted,
//     whether it is still sending its request (a slow client) or not reading our answer
//     (timeouts); every read and write waits at most until then;
//   - size: a request's bytes (request line and headers) past Options::max_request_bytes, a
//     URI or header line past cpp-httplib's 8,192 bytes, or any request body: answered 4xx
//     (bad_requests);
//   - one request per connection (Connection: close).
// Accepting runs on one thread, answering on Options::workers threads.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "spigot/bounds.h"
#include "spigot/control/metrics.h"

namespace spigot::control {

class MetricsServer {
 public:
  struct Options {
    std::size_t max_connections = bounds::kMetricsConnections;
    std::size_t workers = 2;
    std::chrono::milliseconds deadline{3000};
    std::size_t max_request_bytes = 16 * 1024;
  };

  // Parses "ADDRESS:PORT" ("127.0.0.1:9187", "[::1]:9187"); false if it is not one. Port 0 is
  // accepted (the kernel picks one: tests).
  static bool ParseListen(const std::string& text, std::string* host, int* port, std::string* why);

  // Binds and listens on `listen` now (so a bad address fails the start, with `error`), then
  // starts the threads.
  static std::unique_ptr<MetricsServer> Start(const std::string& listen, const Options& options,
                                              std::string* error);
  ~MetricsServer();  // stops accepting, closes connections, joins the threads
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // From the control thread: the snapshot scrapes render from now on (metrics.h).
  void Publish(nlohmann::json snapshot);

  int port() const { return port_; }
  MetricsServerCounters counters() const;

 private:
  class Http;  // the cpp-httplib server, used for parsing and answering only
  struct Conn {
    int fd;
    std::chrono::steady_clock::time_point deadline;
  };

  explicit MetricsServer(const Options& options);
  void AcceptLoop();
  void WorkerLoop();
  void Serve(const Conn& c);

  Options options_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: stop
  int port_ = 0;
  std::unique_ptr<Http> http_;

  mutable std::mutex mu_;  // guards the members below it
  std::condition_variable cv_;
  std::deque<Conn> pending_;
  std::size_t open_ = 0;  // accepted and not yet closed (pending_ + being served)
  bool stopping_ = false;

  std::mutex snapshot_mu_;  // guards the two below: a pointer swap, never held for long
  std::shared_ptr<const nlohmann::json> snapshot_;
  std::chrono::steady_clock::time_point published_{};

  std::atomic<std::uint64_t> scrapes_{0}, refused_{0}, bad_requests_{0}, timeouts_{0};
  std::vector<std::thread> threads_;
};

}  // namespace spigot::control
