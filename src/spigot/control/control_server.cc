#include "spigot/control/control_server.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

namespace spigot::control {
namespace {

constexpr int kListenBacklog = 128;
// Work per OnReadable() call, so one busy moment cannot starve the rest of the event loop; the
// epoll fd stays readable and the loop calls again.
constexpr int kMaxEventsPerCall = 64;
constexpr int kMaxAcceptsPerCall = 64;

std::string ErrnoText(const std::string& what) { return what + ": " + std::strerror(errno); }

bool MakeAddress(const std::string& path, sockaddr_un& addr) {
  addr = sockaddr_un{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) return false;
  std::memcpy(addr.sun_path, path.data(), path.size());
  return true;
}

// Whether some process accepts connections on the socket file at `path`.
bool SomeoneListens(const sockaddr_un& addr) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const bool listening = connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return listening;
}

// The peer's credentials as the kernel recorded them at connect(); its supplementary groups
// too where the kernel has SO_PEERGROUPS (4.13), bounded by NGROUPS_MAX.
PeerCredentials ReadPeerCredentials(int fd) {
  PeerCredentials peer;
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
    peer.pid = cred.pid;
    peer.uid = cred.uid;
    peer.gid = cred.gid;
  } else {
    // Unknown: treated as nobody, so it may run nothing a policy restricts.
    peer.uid = static_cast<uid_t>(-1);
    peer.gid = static_cast<gid_t>(-1);
  }
  std::vector<gid_t> groups(64);
  for (int attempt = 0; attempt < 2; ++attempt) {
    socklen_t size = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &size) == 0) {
      groups.resize(size / sizeof(gid_t));
      peer.groups = std::move(groups);
      break;
    }
    if (errno != ERANGE || size / sizeof(gid_t) > 65536) break;
    groups.resize(size / sizeof(gid_t));
  }
  return peer;
}

std::string ErrorLine(const std::string& message) {
  return nlohmann::json{{"error", message}}.dump() + "\n";
}

}  // namespace

std::unique_ptr<ControlServer> ControlServer::Listen(const std::string& path, Handler handler,
                                                     const Options& options, std::string* error) {
  std::unique_ptr<ControlServer> server(new ControlServer(path, std::move(handler), options));
  if (!server->Init(error)) return nullptr;
  return server;
}

bool ControlServer::Init(std::string* error) {
  const auto fail = [error](const std::string& message) {
    if (error != nullptr) *error = message;
    return false;
  };
  sockaddr_un addr;
  if (!MakeAddress(path_, addr)) {
    return fail("control socket path \"" + path_ + "\" must be 1 to " +
                std::to_string(sizeof addr.sun_path - 1) + " bytes");
  }

  const std::filesystem::path dir = std::filesystem::path(path_).parent_path();
  std::error_code ec;
  const bool created = !dir.empty() && std::filesystem::create_directories(dir, ec);
  if (ec) return fail("cannot create " + dir.string() + ": " + ec.message());
  // Ours: its owner is the socket's, who must be able to remove the socket at exit.
  if (created && options_.socket_uid != static_cast<uid_t>(-1) &&
      chown(dir.c_str(), options_.socket_uid, static_cast<gid_t>(-1)) != 0) {
    return fail(ErrnoText("chown " + dir.string()));
  }

  struct stat st;
  if (lstat(path_.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return fail(path_ + " exists and is not a socket");
    if (SomeoneListens(addr)) {
      return fail(path_ + " is in use: is another `spigot run` running?");
    }
    if (unlink(path_.c_str()) != 0) return fail(ErrnoText("cannot remove stale " + path_));
  }

  listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) return fail(ErrnoText("socket"));
  if (bind(listen_fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    return fail(ErrnoText("cannot bind " + path_));
  }
  if (lstat(path_.c_str(), &st) == 0) {
    socket_dev_ = st.st_dev;
    socket_ino_ = st.st_ino;
  }
  // The mode first, while the socket is still ours: once chowned to the daemon's user, root
  // may chmod it only with CAP_FOWNER, which spigot.service's bounding set leaves out.
  if (chmod(path_.c_str(), options_.socket_mode) != 0) return fail(ErrnoText("chmod " + path_));
  if ((options_.socket_uid != static_cast<uid_t>(-1) || options_.socket_gid != static_cast<gid_t>(-1)) &&
      chown(path_.c_str(), options_.socket_uid, options_.socket_gid) != 0) {
    return fail(ErrnoText("chown " + path_));
  }
  if (listen(listen_fd_, kListenBacklog) != 0) return fail(ErrnoText("listen " + path_));

  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) return fail(ErrnoText("epoll_create1"));
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.fd = listen_fd_;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &event) != 0) {
    return fail(ErrnoText("epoll_ctl"));
  }
  return true;
}

ControlServer::~ControlServer() {
  while (!clients_.empty()) CloseClient(clients_.begin()->first);
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (listen_fd_ >= 0) {
    close(listen_fd_);
    struct stat st;
    if (socket_ino_ != 0 && lstat(path_.c_str(), &st) == 0 && st.st_dev == socket_dev_ &&
        st.st_ino == socket_ino_) {
      unlink(path_.c_str());
    }
  }
}

void ControlServer::OnReadable() {
  epoll_event events[kMaxEventsPerCall];
  const int n = epoll_wait(epoll_fd_, events, kMaxEventsPerCall, 0);
  for (int i = 0; i < n; ++i) {
    if (events[i].data.fd == listen_fd_) {
      AcceptClients();
    } else {
      ServiceClient(events[i].data.fd);
    }
  }
}

void ControlServer::AcceptClients() {
  for (int i = 0; i < kMaxAcceptsPerCall; ++i) {
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN: none left; anything else: the client is gone already
    if (clients_.size() >= options_.max_clients) {
      ++stats_.refused_clients;
      const std::string line =
          ErrorLine("too many control connections (" + std::to_string(options_.max_clients) + ")");
      send(fd, line.data(), line.size(), MSG_DONTWAIT | MSG_NOSIGNAL);  // best effort
      close(fd);
      continue;
    }
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.fd = fd;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event) != 0) {
      close(fd);
      continue;
    }
    Client& client = clients_[fd];
    client.last_activity = std::chrono::steady_clock::now();
    client.peer = ReadPeerCredentials(fd);
  }
}

void ControlServer::ServiceClient(int fd) {
  const auto it = clients_.find(fd);
  if (it == clients_.end()) return;  // closed earlier in this batch
  it->second.last_activity = std::chrono::steady_clock::now();
  if (it->second.responding) {
    WriteResponse(fd, it->second);
  } else {
    ReadRequest(fd, it->second);
  }
}

void ControlServer::ReadRequest(int fd, Client& client) {
  char chunk[4096];
  bool complete = false;
  while (!complete && client.in.size() <= options_.max_request_bytes) {
    const ssize_t n = recv(fd, chunk, sizeof chunk, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;  // wait for more
    if (n < 0 || (n == 0 && client.in.empty())) {
      CloseClient(fd);  // error, or closed without asking anything
      return;
    }
    if (n == 0) break;  // closed after a request without "\n": that is the request

    const std::size_t old_size = client.in.size();
    client.in.append(chunk, static_cast<std::size_t>(n));
    const std::size_t newline = client.in.find('\n', old_size);
    if (newline != std::string::npos) {
      client.in.resize(newline);
      complete = true;
    }
  }
  if (client.in.size() > options_.max_request_bytes) {
    ++stats_.oversized_requests;
    Respond(fd, client,
            {{"error", "request longer than " + std::to_string(options_.max_request_bytes) +
                           " bytes"}});
    return;
  }
  Respond(fd, client, Answer(client.in, client.peer));
}

nlohmann::json ControlServer::Answer(std::string_view line, const PeerCredentials& peer) {
  const nlohmann::json request = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (request.is_discarded()) {
    ++stats_.bad_requests;
    return {{"error", "request is not valid JSON"}};
  }
  if (!request.is_object()) {
    ++stats_.bad_requests;
    return {{"error", "request must be a JSON object, like {\"command\":\"stats\"}"}};
  }
  if (options_.authorize) {
    std::string refusal = options_.authorize(peer, request);
    if (!refusal.empty()) {
      ++stats_.refused_requests;
      return {{"error", std::move(refusal)}};
    }
  }
  ++stats_.requests;
  try {
    return handler_(request);
  } catch (const std::exception& e) {
    // A handler bug must cost one request, not the daemon.
    return {{"error", std::string("internal error: ") + e.what()}};
  }
}

void ControlServer::Respond(int fd, Client& client, const nlohmann::json& response) {
  client.responding = true;
  client.in.clear();
  client.in.shrink_to_fit();
  client.out = response.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  client.out_pos = 0;
  // Stop reading: a level-triggered EPOLLIN on unread input would otherwise spin.
  epoll_event event{};
  event.events = EPOLLOUT;
  event.data.fd = fd;
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &event);
  WriteResponse(fd, client);
}

void ControlServer::WriteResponse(int fd, Client& client) {
  while (client.out_pos < client.out.size()) {
    const ssize_t n = send(fd, client.out.data() + client.out_pos,
                           client.out.size() - client.out_pos, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;  // EPOLLOUT brings us back
    if (n < 0) break;  // the client went away
    client.out_pos += static_cast<std::size_t>(n);
  }
  CloseClient(fd);
}

void ControlServer::CloseClient(int fd) {
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  close(fd);
  clients_.erase(fd);
}

void ControlServer::CloseIdleClients(TimePoint now) {
  std::vector<int> idle;
  for (const auto& [fd, client] : clients_) {
    if (now - client.last_activity > options_.idle_timeout) idle.push_back(fd);
  }
  for (int fd : idle) CloseClient(fd);
  stats_.idle_closed += idle.size();
}

ControlServer::Stats ControlServer::stats() const {
  Stats s = stats_;
  s.clients = clients_.size();
  return s;
}

}  // namespace spigot::control
