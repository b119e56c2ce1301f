// The daemon's control socket: a Unix stream socket speaking line-delimited JSON.
//
// Protocol, one exchange per connection:
//   client -> server: one JSON object and "\n", e.g. {"command":"sas"}
//   server -> client: one JSON object and "\n", then the server closes the connection.
// A response with a top-level "error" string is a failure (bad request, unknown command, ...);
// successful responses never carry that key. A client that closes its sending side without the
// "\n" has sent its request too.
//
// The server does no I/O of its own accord: fd() is an epoll fd that becomes readable whenever
// the listening socket or a client needs attention, and the owner's event loop calls
// OnReadable() then, and CloseIdleClients() now and then. The handler runs inside OnReadable().
//
// Access: the socket file gets Options' owner, group and mode; each connection's peer
// credentials (SO_PEERCRED, SO_PEERGROUPS) are read at accept, and Options::authorize, when
// set, is asked before the handler for every request: a refusal is the answer
// ({"error": refusal}) and is counted (refused_requests).
//
// Bounds (STYLE.md 7), each counted in Stats:
//   - a request longer than max_request_bytes: answered with an error and closed;
//   - more than max_clients connections at once: the newcomer gets an error and is closed;
//   - a client silent for idle_timeout: closed by CloseIdleClients().
// Responses are not bounded (the daemon writes them), but are written without blocking.
//
// Not thread-safe: one thread drives the server.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>

#include "spigot/bounds.h"
#include "spigot/control/access.h"

namespace spigot::control {

class ControlServer {
 public:
  using Handler = std::function<nlohmann::json(const nlohmann::json& request)>;
  using TimePoint = std::chrono::steady_clock::time_point;
  // Empty: allowed; otherwise the refusal the client is answered with.
  using Authorize =
      std::function<std::string(const PeerCredentials& peer, const nlohmann::json& request)>;

  struct Options {
    std::size_t max_request_bytes = bounds::kControlRequestBytes;
    std::size_t max_clients = bounds::kControlClients;
    std::chrono::milliseconds idle_timeout{10'000};
    mode_t socket_mode = 0660;  // who may talk to the daemon: owner and group
    // The socket file's owner and group; -1: as created (the daemon's).
    uid_t socket_uid = static_cast<uid_t>(-1);
    gid_t socket_gid = static_cast<gid_t>(-1);
    Authorize authorize;  // null: everyone who can connect may run everything
  };

  struct Stats {
    std::uint64_t requests = 0;            // passed to the handler
    std::uint64_t bad_requests = 0;        // not JSON, or not an object
    std::uint64_t oversized_requests = 0;  // longer than max_request_bytes
    std::uint64_t refused_clients = 0;     // over max_clients
    std::uint64_t idle_closed = 0;         // closed by CloseIdleClients()
    std::uint64_t refused_requests = 0;    // refused by Options::authorize
    std::size_t clients = 0;               // connected now
  };

  // Creates the socket's directory if missing (owned by socket_uid), replaces a stale socket file (one nobody
  // listens on), and listens. Fails, with `error` saying why, if another process is listening
  // on `path` or `path` is something other than a socket.
  static std::unique_ptr<ControlServer> Listen(const std::string& path, Handler handler,
                                               const Options& options,
                                               std::string* error = nullptr);
  // Closes every connection and removes the socket file.
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Register this with the event loop, readable.
  int fd() const { return epoll_fd_; }
  // Accepts, reads, answers and writes whatever is ready, without blocking.
  void OnReadable();
  // Closes connections that have been silent since before `now - idle_timeout`.
  void CloseIdleClients(TimePoint now = std::chrono::steady_clock::now());

  const std::string& path() const { return path_; }
  Stats stats() const;

 private:
  struct Client {
    std::string in;   // request bytes received so far
    std::string out;  // response bytes not yet written
    std::size_t out_pos = 0;
    bool responding = false;  // the request is complete; only writing remains
    TimePoint last_activity;
    PeerCredentials peer;  // from the kernel at accept
  };

  ControlServer(std::string path, Handler handler, const Options& options)
      : path_(std::move(path)), handler_(std::move(handler)), options_(options) {}
  bool Init(std::string* error);
  void AcceptClients();
  void ServiceClient(int fd);
  void ReadRequest(int fd, Client& client);
  nlohmann::json Answer(std::string_view line, const PeerCredentials& peer);
  void Respond(int fd, Client& client, const nlohmann::json& response);
  void WriteResponse(int fd, Client& client);
  void CloseClient(int fd);

  std::string path_;
  Handler handler_;
  Options options_;
  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  dev_t socket_dev_ = 0;  // identity of the socket file we created, so ~ControlServer
  ino_t socket_ino_ = 0;  // never removes one that has since been replaced
  std::unordered_map<int, Client> clients_;
  Stats stats_;
};

}  // namespace spigot::control
