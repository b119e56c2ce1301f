#include "spigot/control/metrics_server.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace spigot::control {
namespace {

using Clock = std::chrono::steady_clock;

// Set by the logger when the request in hand was answered 4xx (the logger runs on the worker
// serving it).
thread_local bool t_answered_4xx = false;

constexpr char kRefused[] =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 28\r\n"
    "Connection: close\r\n\r\ntoo many connections, retry\n";

// One connection to cpp-httplib: reads and writes that wait at most until the connection's
// deadline (or the server's stop), and a cap on the request's bytes.
class DeadlineStream final : public httplib::Stream {
 public:
  DeadlineStream(int fd, int wake_fd, Clock::time_point deadline, std::size_t max_bytes)
      : fd_(fd), wake_fd_(wake_fd), deadline_(deadline), max_bytes_(max_bytes) {}

  bool is_readable() const override { return begin_ < end_ || Wait(POLLIN); }
  bool is_writable() const override { return Wait(POLLOUT); }

  ssize_t read(char* ptr, std::size_t size) override {
    if (begin_ == end_) {
      if (received_ >= max_bytes_) {
        oversized_ = true;
        return -1;
      }
      if (!Wait(POLLIN)) return -1;
      const std::size_t want = std::min(buf_.size(), max_bytes_ - received_);
      const ssize_t n = ::recv(fd_, buf_.data(), want, MSG_DONTWAIT);
      if (n <= 0) return n == 0 ? 0 : -1;
      received_ += static_cast<std::size_t>(n);
      begin_ = 0;
      end_ = static_cast<std::size_t>(n);
    }
    const std::size_t n = std::min(size, end_ - begin_);
    std::memcpy(ptr, buf_.data() + begin_, n);
    begin_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, std::size_t size) override {
    std::size_t done = 0;
    while (done < size) {
      if (!Wait(POLLOUT)) return done > 0 ? static_cast<ssize_t>(done) : -1;
      const ssize_t n = ::send(fd_, ptr + done, size - done, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) continue;
        return done > 0 ? static_cast<ssize_t>(done) : -1;
      }
      done += static_cast<std::size_t>(n);
    }
    return static_cast<ssize_t>(done);
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    Address(::getpeername, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    Address(::getsockname, ip, port);
  }
  int socket() const override { return fd_; }

  bool timed_out() const { return timed_out_; }
  bool oversized() const { return oversized_; }

 private:
  // True once `events` is ready; false at the deadline (timed_out) or the server's stop.
  bool Wait(short events) const {
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now());
      if (left.count() <= 0) {
        timed_out_ = true;
        return false;
      }
      pollfd p[2] = {{fd_, events, 0}, {wake_fd_, POLLIN, 0}};
      const int r = ::poll(p, 2, static_cast<int>(left.count()) + 1);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 || (p[1].revents & POLLIN) != 0) return false;
      if (r > 0) return (p[0].revents & (events | POLLERR | POLLHUP)) != 0;
    }
  }

  void Address(int (*get)(int, sockaddr*, socklen_t*), std::string& ip, int& port) const {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    ip.clear();
    port = 0;
    if (get(fd_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return;
    char text[INET6_ADDRSTRLEN] = {};
    if (ss.ss_family == AF_INET) {
      const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
      ::inet_ntop(AF_INET, &a->sin_addr, text, sizeof(text));
      port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
      ::inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof(text));
      port = ntohs(a->sin6_port);
    }
    ip = text;
  }

  int fd_;
  int wake_fd_;
  Clock::time_point deadline_;
  std::size_t max_bytes_;
  std::size_t received_ = 0;
  std::array<char, 4096> buf_{};
  std::size_t begin_ = 0, end_ = 0;
  mutable bool timed_out_ = false;
  bool oversized_ = false;
};

}  // namespace

// cpp-httplib's request parsing, routing and response writing, on connections we accept and
// bound ourselves (its own accept loop has no connection bound in this version).
class MetricsServer::Http final : public httplib::Server {
 public:
  bool Handle(httplib::Stream& s) {
    bool closed = false;
    return process_request(s, /*close_connection=*/true, closed, nullptr);
  }
};

bool MetricsServer::ParseListen(const std::string& text, std::string* host, int* port,
                                std::string* why) {
  std::string h, p;
  if (text.starts_with("[")) {
    const auto close = text.find("]:");
    if (close == std::string::npos) {
      *why = "expected \"[IPV6]:PORT\"";
      return false;
    }
    h = text.substr(1, close - 1);
    p = text.substr(close + 2);
    in6_addr a6;
    if (::inet_pton(AF_INET6, h.c_str(), &a6) != 1) {
      *why = "\"" + h + "\" is not an IPv6 address";
      return false;
    }
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string::npos) {
      *why = "expected \"ADDRESS:PORT\", e.g. \"127.0.0.1:9187\"";
      return false;
    }
    h = text.substr(0, colon);
    p = text.substr(colon + 1);
    in_addr a4;
    if (::inet_pton(AF_INET, h.c_str(), &a4) != 1) {
      *why = "\"" + h + "\" is not an IPv4 address (IPv6: \"[ADDRESS]:PORT\")";
      return false;
    }
  }
  if (p.empty() || p.size() > 5 || !std::all_of(p.begin(), p.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      std::stoi(p) > 65535) {
    *why = "port \"" + p + "\" is not a number from 0 to 65535";
    return false;
  }
  *host = h;
  *port = std::stoi(p);
  return true;
}

MetricsServer::MetricsServer(const Options& options) : options_(options), http_(std::make_unique<Http>()) {}

std::unique_ptr<MetricsServer> MetricsServer::Start(const std::string& listen, const Options& options,
                                                    std::string* error) {
  std::string host, why;
  int port = 0;
  if (!ParseListen(listen, &host, &port, &why)) {
    *error = "\"" + listen + "\": " + why;
    return nullptr;
  }
  std::unique_ptr<MetricsServer> s(new MetricsServer(options));
  sockaddr_storage ss{};
  socklen_t len = 0;
  int family = AF_INET;
  if (host.find(':') != std::string::npos) {
    family = AF_INET6;
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<std::uint16_t>(port));
    ::inet_pton(AF_INET6, host.c_str(), &a->sin6_addr);
    len = sizeof(sockaddr_in6);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(static_cast<std::uint16_t>(port));
    ::inet_pton(AF_INET, host.c_str(), &a->sin_addr);
    len = sizeof(sockaddr_in);
  }
  s->listen_fd_ = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int one = 1;
  if (s->listen_fd_ < 0 || ::setsockopt(s->listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      ::bind(s->listen_fd_, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(s->listen_fd_, SOMAXCONN) != 0) {
    *error = "cannot listen on " + listen + ": " + std::strerror(errno);
    return nullptr;  // the destructor closes what was opened
  }
  len = sizeof(ss);
  ::getsockname(s->listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len);
  s->port_ = ntohs(family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                      : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  s->wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (s->wake_fd_ < 0) {
    *error = std::string("metrics: eventfd: ") + std::strerror(errno);
    return nullptr;
  }

  MetricsServer* self = s.get();
  s->http_->set_payload_max_length(0);  // GET only: a body is refused (413)
  s->http_->set_logger([self](const httplib::Request&, const httplib::Response& res) {
    if (res.status >= 400 && res.status < 500) {
      ++self->bad_requests_;
      t_answered_4xx = true;
    }
  });
  s->http_->Get("/metrics", [self](const httplib::Request&, httplib::Response& res) {
    std::shared_ptr<const nlohmann::json> snapshot;
    Clock::time_point published;
    {
      std::lock_guard lock(self->snapshot_mu_);
      snapshot = self->snapshot_;
      published = self->published_;
    }
    if (!snapshot) {
      res.status = 503;
      res.set_content("no counters yet: the gateway is starting\n", "text/plain");
      return;
    }
    MetricsServerCounters c = self->counters();
    ++c.scrapes;  // this one
    c.snapshot_age_seconds = std::chrono::duration<double>(Clock::now() - published).count();
    res.set_content(RenderMetrics(*snapshot, c), "text/plain; version=0.0.4; charset=utf-8");
    ++self->scrapes_;
  });
  s->threads_.emplace_back([self] { self->AcceptLoop(); });
  for (std::size_t i = 0; i < std::max<std::size_t>(1, options.workers); ++i) {
    s->threads_.emplace_back([self] { self->WorkerLoop(); });
  }
  return s;
}

MetricsServer::~MetricsServer() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  if (wake_fd_ >= 0) {
    const std::uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof(one));
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  for (const Conn& c : pending_) ::close(c.fd);
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void MetricsServer::Publish(nlohmann::json snapshot) {
  auto next = std::make_shared<const nlohmann::json>(std::move(snapshot));
  std::lock_guard lock(snapshot_mu_);
  snapshot_.swap(next);
  published_ = Clock::now();
  // The previous snapshot is freed here, or by the last scrape still rendering it.
}

MetricsServerCounters MetricsServer::counters() const {
  MetricsServerCounters c;
  c.scrapes = scrapes_.load();
  c.refused_connections = refused_.load();
  c.bad_requests = bad_requests_.load();
  c.timeouts = timeouts_.load();
  std::lock_guard lock(mu_);
  c.open_connections = open_;
  return c;
}

void MetricsServer::AcceptLoop() {
  for (;;) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0 && errno != EINTR) return;
    if ((p[1].revents & POLLIN) != 0) return;
    for (;;) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) break;  // EAGAIN: all taken; anything else: try again at the next poll
      std::unique_lock lock(mu_);
      if (open_ >= options_.max_connections) {
        lock.unlock();
        ++refused_;
        (void)::send(fd, kRefused, sizeof(kRefused) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        ::close(fd);
        continue;
      }
      ++open_;
      pending_.push_back({fd, Clock::now() + options_.deadline});
      lock.unlock();
      cv_.notify_one();
    }
  }
}

void MetricsServer::WorkerLoop() {
  for (;;) {
    Conn c;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
      if (stopping_) return;
      c = pending_.front();
      pending_.pop_front();
    }
    Serve(c);
    ::close(c.fd);
    std::lock_guard lock(mu_);
    --open_;
  }
}

void MetricsServer::Serve(const Conn& c) {
  DeadlineStream s(c.fd, wake_fd_, c.deadline, options_.max_request_bytes);
  t_answered_4xx = false;
  http_->Handle(s);
  if (s.timed_out()) ++timeouts_;
  // Past the byte cap before a request line was read: closed without an answer.
  if (s.oversized() && !t_answered_4xx) ++bad_requests_;
}

}  // namespace spigot::control
