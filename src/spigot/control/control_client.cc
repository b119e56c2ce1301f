#include "spigot/control/control_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace spigot::control {
namespace {

using Clock = std::chrono::steady_clock;

std::string ConnectError(const std::string& path, int err) {
  std::string message = "cannot connect to " + path + ": " + std::strerror(err);
  if (err == ENOENT || err == ECONNREFUSED) {
    message += " — is `spigot run` running?";
  } else if (err == EACCES || err == EPERM) {
    message += " — run as root or as a member of the socket's group";
  }
  return message;
}

// Closes the fd on every path out of Request().
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) close(fd);
  }
};

}  // namespace

RequestResult ControlClient::Request(const std::string& socket_path,
                                     const nlohmann::json& request,
                                     const ClientOptions& options) {
  RequestResult result;
  const Clock::time_point deadline = Clock::now() + options.timeout;

  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.empty() || socket_path.size() >= sizeof addr.sun_path) {
    result.error = "control socket path \"" + socket_path + "\" must be 1 to " +
                   std::to_string(sizeof addr.sun_path - 1) + " bytes";
    return result;
  }
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());

  const FdCloser sock{socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  if (sock.fd < 0) {
    result.error = std::string("socket: ") + std::strerror(errno);
    return result;
  }
  // Bounds connect() (a full backlog) and send() (a daemon not reading).
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(options.timeout);
  timeval tv{static_cast<time_t>(seconds.count()),
             static_cast<suseconds_t>((options.timeout - seconds).count() * 1000)};
  if (tv.tv_sec <= 0 && tv.tv_usec <= 0) tv = timeval{0, 1};  // zero would mean "wait forever"
  setsockopt(sock.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(sock.fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    result.error = ConnectError(socket_path, errno);
    return result;
  }

  const std::string line = request.dump() + "\n";
  for (std::size_t sent = 0; sent < line.size();) {
    const ssize_t n = send(sock.fd, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    // A daemon that refuses the request (too long, too many clients) answers and closes while
    // we are still sending: read its answer below.
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) break;
    if (n < 0) {
      result.error = "cannot send to " + socket_path + ": " + std::strerror(errno);
      return result;
    }
    sent += static_cast<std::size_t>(n);
  }

  std::string text;
  char chunk[65536];
  std::size_t newline = std::string::npos;
  while (newline == std::string::npos) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    pollfd p{sock.fd, POLLIN, 0};
    const int ready = left > 0 ? poll(&p, 1, static_cast<int>(left)) : 0;
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) {
      result.error = "no answer from " + socket_path + " within " +
                     std::to_string(options.timeout.count()) + " ms";
      return result;
    }
    const ssize_t n = recv(sock.fd, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      result.error = "cannot read from " + socket_path + ": " + std::strerror(errno);
      return result;
    }
    if (n == 0) break;
    text.append(chunk, static_cast<std::size_t>(n));
    newline = text.find('\n', text.size() - static_cast<std::size_t>(n));
    if (text.size() > options.max_response_bytes) {
      result.error = "answer from " + socket_path + " is longer than " +
                     std::to_string(options.max_response_bytes) + " bytes";
      return result;
    }
  }
  if (newline != std::string::npos) text.resize(newline);
  if (text.empty()) {
    result.error = socket_path + " closed the connection without an answer";
    return result;
  }

  result.response = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (result.response.is_discarded() || !result.response.is_object()) {
    result.response = nullptr;
    result.error = "the answer from " + socket_path + " is not a JSON object";
    return result;
  }
  if (const auto it = result.response.find("error"); it != result.response.end()) {
    result.error = it->is_string() ? it->get<std::string>() : it->dump();
    return result;
  }
  result.ok = true;
  return result;
}

}  // namespace spigot::control
