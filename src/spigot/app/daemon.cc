#include "spigot/app/daemon.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

#include "spigot/app/dataplane.h"
#include "spigot/bounds.h"
#include "spigot/config/run_as.h"
#include "spigot/control/access.h"
#include "spigot/control/control_server.h"
#include "spigot/control/gateway_commands.h"
#include "spigot/control/metrics.h"
#include "spigot/control/metrics_server.h"
#include "spigot/engine/inline_executor.h"
#include "spigot/engine/worker_pool.h"
#include "spigot/esp/constants.h"
#include "spigot/gateway/gateway.h"
#include "spigot/io/event_loop.h"
#include "spigot/io/netlink.h"
#include "spigot/io/privileges.h"
#include "spigot/io/systemd.h"
#include "spigot/io/udp_socket.h"

namespace spigot::app {
namespace {

// Each IKE worker keeps this many jobs queued so it never idles between completions; more
// would only hide the backlog from the negotiation queue's priorities and max_queue.
constexpr std::size_t kJobsPerWorker = bounds::kIkeJobsPerWorker;
constexpr std::size_t kRecvBuffer = 65536;
constexpr std::size_t kRecvSlots = 8;
// How often the control thread publishes the counters that GET /metrics serves (metrics_listen).
constexpr auto kMetricsPeriod = std::chrono::seconds(1);
// How often STATUS= (the line `systemctl status spigot` shows) is refreshed under systemd.
constexpr auto kServiceStatusPeriod = std::chrono::seconds(5);

// The IKE sockets. On UDP 4500, IKE follows a four-octet zero marker (RFC 3948 2.2).
class UdpIkeTransport final : public gateway::IkeTransport {
 public:
  UdpIkeTransport(io::UdpSocket& ike, io::UdpSocket& natt) : ike_(ike), natt_(natt) {}
  void Send(const io::Endpoint& to, std::span<const std::uint8_t> msg, bool natt,
            const io::IpAddress& source) override {
    if (!natt) {
      ike_.SendTo(to, msg, source);
      return;
    }
    framed_.assign(esp::kNonEspMarkerLen, 0);
    framed_.insert(framed_.end(), msg.begin(), msg.end());
    natt_.SendTo(to, framed_, source);
  }
  io::Endpoint LocalEndpoint(bool natt) const override {
    return natt ? natt_.local_endpoint() : ike_.local_endpoint();
  }

 private:
  io::UdpSocket& ike_;
  io::UdpSocket& natt_;
  std::vector<std::uint8_t> framed_;  // reused: control thread only
};

// The host's addresses and routes from rtnetlink (control thread).
class NetlinkHost final : public gateway::HostNetwork {
 public:
  explicit NetlinkHost(std::unique_ptr<io::Netlink> nl) : nl_(std::move(nl)) {}
  std::vector<io::IpAddress> Addresses() override {
    std::vector<io::IpAddress> out;
    std::string error;
    if (!nl_->ListAddresses(out, &error)) spdlog::warn("{}", error);
    return out;
  }
  io::IpAddress RouteSource(const io::IpAddress& peer) override {
    io::IpAddress source;
    nl_->RouteSource(peer, source);  // no route: empty, which the caller handles
    return source;
  }

 private:
  std::unique_ptr<io::Netlink> nl_;
};

class LoopPoster final : public gateway::ControlLoop {
 public:
  explicit LoopPoster(io::EventLoop& loop) : loop_(loop) {}
  bool Post(std::function<void()> fn) override { return loop_.Post(std::move(fn)); }

 private:
  io::EventLoop& loop_;
};

class Daemon {
 public:
  bool Init(config::Config config, const std::string& config_path, std::string* error);
  int Run();

 private:
  bool OpenIkeSockets(const config::GlobalConfig& g, std::string* error);
  std::vector<io::UdpSocket*> NattSockets() const {
    std::vector<io::UdpSocket*> out;
    for (const auto& s : natt_socks_) out.push_back(s.get());
    return out;
  }
  // Least privilege (io/privileges.h): PlanPrivileges first, before any thread starts;
  // DropPrivileges after the last privileged open.
  bool PlanPrivileges(const config::GlobalConfig& g, std::string* error);
  bool DropPrivileges(const std::string& config_path, std::string* error);
  control::ControlServer::Options ControlOptions();
  // `spigot stats` "bounds": the control loop's Post() queue and the control socket's clients.
  void AddDaemonBounds(nlohmann::json& bounds) const;
  void OnIkePort();
  // With a wildcard listen: the host's addresses (MOBIKE as initiator, RFC 4555 3.5).
  void WatchAddresses();
  void AfterEvent() {
    if (gateway_->finished()) loop_->Stop();
  }
  // Under systemd (io/systemd.h): READY=1 once everything is up, STATUS= every
  // kServiceStatusPeriod, WATCHDOG=1 while the data-path threads beat.
  void StartServiceNotifications();
  std::string StatusLine();
  void CheckWatchdog();

  std::unique_ptr<io::EventLoop> loop_;
  std::unique_ptr<io::UdpSocket> ike_sock_;
  // UDP 4500: one per data-path thread (SO_REUSEPORT when more than one); IKE is sent on the first.
  std::vector<std::unique_ptr<io::UdpSocket>> natt_socks_;
  std::unique_ptr<UdpIkeTransport> transport_;
  std::unique_ptr<LoopPoster> poster_;
  std::unique_ptr<NetlinkHost> host_;                  // null unless listen is a wildcard
  std::unique_ptr<io::AddressMonitor> address_monitor_;  // likewise
  io::ServiceNotifier notifier_ = io::ServiceNotifier::FromEnvironment();
  io::ProgressWatch progress_;  // before dataplane_: its threads beat here until joined
  std::unique_ptr<io::ServiceWatchdog> watchdog_;
  std::string watchdog_stall_;  // what STATUS= says while the watchdog withholds its ping
  std::unique_ptr<Dataplane> dataplane_;
  std::unique_ptr<gateway::Gateway> gateway_;
  std::unique_ptr<control::ControlServer> control_;
  std::unique_ptr<control::MetricsServer> metrics_;  // metrics_listen; null when off
  config::RunAs run_as_;           // who we become after startup (global.user)
  std::optional<gid_t> socket_gid_;  // global.socket_group
  control::AccessPolicy access_;   // who may run which control command
  std::vector<std::uint8_t> recv_buffers_ = std::vector<std::uint8_t>(kRecvBuffer * kRecvSlots);
  // Last: destroyed (joined) first, while the gateway its jobs report to still exists.
  std::unique_ptr<engine::Executor> workers_;
};

bool Daemon::OpenIkeSockets(const config::GlobalConfig& g, std::string* error) {
  // UDP 500 first and alone: a second daemon fails there, before it could join 4500's group.
  const std::size_t natt_count = Dataplane::Threads(g);
  std::vector<std::pair<std::uint16_t, bool>> ports = {{g.ike_port, false}};
  for (std::size_t i = 0; i < natt_count; ++i) ports.emplace_back(g.natt_port, true);
  for (auto [port, natt] : ports) {
    const auto ep = io::Endpoint::Parse(g.listen, port);
    io::UdpSocket::Options options;
    options.reuse_port = natt && natt_count > 1;
    auto sock = ep ? io::UdpSocket::Bind(*ep, options, error) : nullptr;
    if (!sock) {
      *error = "cannot listen on " + g.listen + ":" + std::to_string(port) + ": " + *error;
      return false;
    }
    // Bursts of IKE (login storms, mass deletes) must queue here, not overflow the kernel's
    // default 208 KiB; and ESP on 4500 arrives in bursts too.
    // SO_RCVBUFFORCE (root) passes net.core.rmem_max; SO_RCVBUF is the unprivileged fallback.
    const int rcvbuf = 8 << 20;
    if (setsockopt(sock->fd(), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) != 0)
      setsockopt(sock->fd(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    // On 4500 a sealed batch leaves in one sendmmsg, up to 64 KiB per GSO message: the default
    // 208 KiB send buffer fills under a burst, and a full one drops (send_failed).
    const int sndbuf = 4 << 20;
    if (setsockopt(sock->fd(), SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)) != 0)
      setsockopt(sock->fd(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    // Every datagram accounted for: the kernel's drops for this socket (SO_RXQ_OVFL).
    if (!sock->EnableDropCounter()) {
      spdlog::warn("UDP {}: SO_RXQ_OVFL refused ({}): kernel drops are read at stats time only",
                   port, std::strerror(errno));
    }
    // On the wildcard address, which of ours a datagram came to (an IKE SA's local address,
    // hashed by NAT detection, and the source of everything we send it).
    if (sock->local_endpoint().wildcard() && !sock->EnablePacketInfo()) {
      spdlog::warn("UDP {}: IP_PKTINFO refused ({}): NAT detection on a wildcard listen uses the "
                   "wildcard address", port, std::strerror(errno));
    }
    if (natt)
      natt_socks_.push_back(std::move(sock));
    else
      ike_sock_ = std::move(sock);
  }
  return true;
}

bool Daemon::Init(config::Config config, const std::string& config_path, std::string* error) {
  const config::GlobalConfig g = config.global;
  if (!PlanPrivileges(g, error)) return false;
  loop_ = io::EventLoop::Create({}, error);
  if (!loop_) return false;
  // Before any thread starts: signalfd needs the signals blocked in every thread, and threads
  // inherit the mask of the thread that creates them.
  for (int sig : {SIGTERM, SIGINT}) {
    loop_->OnSignal(sig, [this] {
      notifier_.Stopping();
      gateway_->Shutdown();
      AfterEvent();
    });
  }
  loop_->OnSignal(SIGHUP, [this] { gateway_->Reload(); });
  const std::size_t threads =
      g.ike_workers != 0 ? g.ike_workers : std::max(1u, std::thread::hardware_concurrency());
  // SPIGOT_BENCH_IKE_INLINE=1 (measurements only: bench/storm.sh WORKERS=1): no workers, all
  // IKE public-key and DH work at once on the control thread, as before issue 17.
  const char* bench_inline = std::getenv("SPIGOT_BENCH_IKE_INLINE");
  if (bench_inline != nullptr && std::string_view(bench_inline) == "1") {
    workers_ = std::make_unique<engine::InlineExecutor>();
    spdlog::warn("IKE workers: none, all IKE work on the control thread (SPIGOT_BENCH_IKE_INLINE=1, a "
                 "measurement hook)");
  } else {
    workers_ = std::make_unique<engine::WorkerPool>(threads, threads * kJobsPerWorker);
    spdlog::info("IKE workers: {} thread(s)", workers_->threads());
  }
  if (!OpenIkeSockets(g, error)) return false;
  // UDP 4500 belongs to the inbound data-path thread, which hands IKE over to us.
  loop_->AddReader(ike_sock_->fd(), [this] { OnIkePort(); });
  transport_ = std::make_unique<UdpIkeTransport>(*ike_sock_, *natt_socks_[0]);
  poster_ = std::make_unique<LoopPoster>(*loop_);
  Dataplane::Hooks hooks;
  hooks.ike = [this](std::span<const std::uint8_t> m, const io::Endpoint& from, const io::IpAddress& to) {
    gateway_->ReceiveIke(m, from, true, to);
    gateway_->WorkQueue();
  };
  hooks.acquire = [this](policy::PolicyId id) { gateway_->OnAcquire(id); };
  hooks.first_packet = [this](std::uint32_t spi) { gateway_->OnFirstPacket(spi); };
  hooks.new_source = [this](std::uint32_t spi, const io::Endpoint& from) { gateway_->OnNewSource(spi, from); };
  hooks.exhausted = [this](policy::PolicyId id, std::uint32_t spi) { gateway_->OnExhausted(id, spi); };
  dataplane_ =
      Dataplane::Create(g, *ike_sock_, NattSockets(), *loop_, std::move(hooks), error, &progress_);
  if (!dataplane_) return false;
  WatchAddresses();
  gateway_ = gateway::Gateway::Create(
      std::move(config), config_path,
      gateway::Gateway::Environment{io::DefaultClock(), *dataplane_, *transport_, *poster_, *workers_,
                                    [this](radius::ClientOptions o, std::string* why) {
                                      return std::shared_ptr<radius::Client>(
                                          radius::Client::Create(*loop_, std::move(o), why));
                                    },
                                    host_.get()},
      error);
  if (!gateway_) return false;
  control_ = control::ControlServer::Listen(
      g.control_socket,
      [this](const nlohmann::json& r) {
        if (std::string bad = control::CheckRequestFields(r); !bad.empty()) return nlohmann::json{{"error", bad}};
        // `spigot debug hang`: the service watchdog's test hook, on the data plane itself.
        if (r.value("command", "") == "hang")
          return dataplane_->Hang(r.value("thread", ""), r.value("seconds", std::int64_t{0}));
        nlohmann::json answer = control::HandleCommand(*gateway_, r);
        if (answer.contains("bounds")) AddDaemonBounds(answer["bounds"]);
        AfterEvent();
        return answer;
      },
      ControlOptions(), error);
  if (!control_) return false;
  loop_->AddReader(control_->fd(), [this] { control_->OnReadable(); });
  loop_->AddRepeatingTimer("ike_tick", gateway::Gateway::kTickPeriod, [this] {
    gateway_->Tick();
    AfterEvent();
  });
  loop_->AddRepeatingTimer("control_idle", std::chrono::seconds(5),
                           [this] { control_->CloseIdleClients(); });
  if (!g.metrics_listen.empty()) {
    // Its own threads; it reads only what this thread publishes (control/metrics_server.h).
    metrics_ = control::MetricsServer::Start(g.metrics_listen, {}, error);
    if (!metrics_) {
      *error = config_path + ": global.metrics_listen: " + *error;
      return false;
    }
    metrics_->Publish(control::MetricsSnapshot(*gateway_));
    loop_->AddRepeatingTimer("metrics_snapshot", kMetricsPeriod,
                             [this] { metrics_->Publish(control::MetricsSnapshot(*gateway_)); });
    spdlog::info("Prometheus metrics on http://{}/metrics", g.metrics_listen);
  }
  return DropPrivileges(config_path, error);
}

bool Daemon::PlanPrivileges(const config::GlobalConfig& g, std::string* error) {
  std::string why;
  const std::optional<config::RunAs> run_as = config::ResolveRunAs(g.user, &why);
  if (!run_as) {
    *error = "global.user: " + why;
    return false;
  }
  run_as_ = *run_as;
  if (!g.socket_group.empty()) {
    socket_gid_ = config::ResolveGroup(g.socket_group, &why);
    if (!socket_gid_) {
      *error = "global.socket_group: " + why;
      return false;
    }
  }
  if (run_as_.drop) {
    const std::string missing = io::MissingForSwitch();
    std::string not_dropped;
    if (!missing.empty()) {
      why = "the process lacks " + missing + " (a CapabilityBoundingSet without them?)";
    } else if (io::LimitBoundingSet(&why, &not_dropped)) {
      why.clear();
      if (!not_dropped.empty()) {
        spdlog::warn("cannot drop {} from the capability bounding set (no cap_setpcap); "
                     "no_new_privs keeps an exec from gaining them",
                     not_dropped);
      }
    }
    if (!why.empty()) {
      if (run_as_.explicit_user) {
        *error = "global.user: cannot switch to user \"" + run_as_.user + "\": " + why;
        return false;
      }
      run_as_.drop = false;
      run_as_.why_not = "cannot switch to user \"" + run_as_.user + "\": " + why;
    }
  }
  access_.daemon_uid = run_as_.drop ? run_as_.uid : geteuid();
  access_.daemon_user = run_as_.drop ? run_as_.user : (geteuid() == 0 ? "root" : "uid " + std::to_string(geteuid()));
  access_.read_group = socket_gid_;
  access_.read_group_name = g.socket_group;
  return true;
}

void Daemon::AddDaemonBounds(nlohmann::json& bounds) const {
  const io::EventLoop::Stats loop = loop_->stats();
  auto& posts = bounds["control_posts"];
  posts["limit"] = loop.max_posted;
  posts["in_use"] = loop.pending;
  posts["dropped"] = loop.post_refused;
  if (control_) {
    const control::ControlServer::Stats s = control_->stats();
    auto& clients = bounds["control_clients"];
    clients["in_use"] = s.clients;
    clients["dropped"] = s.refused_clients + s.oversized_requests;
  }
}

// The socket belongs to the user we become (it must remove the file at exit), its group is
// socket_group; without one, no group may connect.
control::ControlServer::Options Daemon::ControlOptions() {
  control::ControlServer::Options o;
  if (run_as_.drop) {
    o.socket_uid = run_as_.uid;
    o.socket_gid = run_as_.gid;
  }
  if (socket_gid_) o.socket_gid = *socket_gid_;
  o.socket_mode = socket_gid_ ? 0660 : 0600;
  o.authorize = [this](const control::PeerCredentials& peer, const nlohmann::json& request) {
    const auto it = request.find("command");
    const std::string command = it != request.end() && it->is_string() ? it->get<std::string>() : "";
    std::string refusal = control::CheckAccess(access_, peer, command);
    if (!refusal.empty()) {
      spdlog::warn("control socket: refused '{}' from uid {} gid {} pid {}: {}", command, peer.uid,
                   peer.gid, peer.pid, refusal);
    }
    return refusal;
  };
  return o;
}

bool Daemon::DropPrivileges(const std::string& config_path, std::string* error) {
  if (!run_as_.drop) {
    spdlog::info("running as {} (uid {}), capabilities {}: {}", access_.daemon_user, geteuid(),
                 io::DescribeCapabilities(), run_as_.why_not);
    return true;
  }
  std::string why;
  if (!io::SwitchUser(run_as_.user, run_as_.uid, run_as_.gid, &why)) {
    // Half switched is no state to serve in; fully root still is, for the default user.
    if (run_as_.explicit_user || getuid() != 0 || geteuid() != 0) {
      *error = "global.user: cannot switch to user \"" + run_as_.user + "\": " + why;
      return false;
    }
    spdlog::error("cannot switch to user \"{}\" (the default of global.user): {}; running as root",
                  run_as_.user, why);
    return true;
  }
  spdlog::info("running as user {} (uid {}, gid {}) with {} on the control thread and no "
               "capabilities on the others",
               run_as_.user, run_as_.uid, run_as_.gid, io::DescribeCapabilities());
  // What this user can no longer do, said now rather than at the first reload.
  const config::Config& c = gateway_->config();
  const auto warn_unreadable = [&](const std::string& path, const char* what) {
    if (!path.empty() && access(path.c_str(), R_OK) != 0) {
      spdlog::warn("{} {} is not readable by user {} ({}): `spigot reload` will fail; give it "
                   "the user's group (gid {}) and mode 0640",
                   what, path, run_as_.user, std::strerror(errno), run_as_.gid);
    }
  };
  warn_unreadable(config_path, "the configuration");
  for (const config::ConnectionConfig& conn : c.connections) warn_unreadable(conn.local_key, "local_key");
  if (const std::string& f = c.global.leases_file; !f.empty()) {
    const std::filesystem::path dir = std::filesystem::path(f).parent_path();
    if (access(dir.empty() ? "." : dir.c_str(), W_OK | X_OK) != 0) {
      spdlog::warn("global.leases_file: user {} cannot write in {} ({}): leases will not be saved",
                   run_as_.user, dir.string(), std::strerror(errno));
    }
  }
  return true;
}

int Daemon::Run() {
  const auto& g = gateway_->config().global;
  spdlog::info("spigot listening on {} (IKE {}, NAT-T {}), control socket {}", g.listen,
               g.ike_port, g.natt_port, g.control_socket);
  gateway_->Start();
  StartServiceNotifications();
  loop_->Run();
  return 0;
}

std::string Daemon::StatusLine() {
  const nlohmann::json s = control::StatsJson(*gateway_);
  const auto n = [&s](const char* key) { return s.value(key, nlohmann::json(0)).dump(); };
  std::string line = n("ike_sas") + " IKE SA(s), " + n("active_sas") + " CHILD SA(s), " +
                     n("pending_sas") + " negotiating; queue " + n("queue_depth") + "/" +
                     n("max_queue") + " (" + n("queue_overflows") + " overflows); SPIs " +
                     n("spi_in_use") + "/" + n("max_spi");
  if (!watchdog_stall_.empty()) line += "; " + watchdog_stall_;
  return line;
}

void Daemon::StartServiceNotifications() {
  if (!notifier_.enabled()) return;
  // The sockets, the TUN device, the data-path threads, the control socket and the
  // connections (start_action) are all up by now.
  notifier_.Ready(StatusLine());
  loop_->AddRepeatingTimer("service_status", kServiceStatusPeriod,
                           [this] { notifier_.Status(StatusLine()); });
  if (!notifier_.watchdog()) return;
  const io::ServiceWatchdog::Options options{*notifier_.watchdog()};
  watchdog_ = std::make_unique<io::ServiceWatchdog>(notifier_, progress_, options);
  spdlog::info("systemd watchdog: {} ms; ping every {} ms while the control thread and the {} "
               "data-path thread(s) make progress (stalled after {} ms of silence)",
               notifier_.watchdog()->count() / 1000, options.period().count() / 1000,
               progress_.size(), options.stall_after().count() / 1000);
  CheckWatchdog();
  // On this (the control) thread: a wedged control thread sends no ping either.
  loop_->AddRepeatingTimer("service_watchdog", options.period(), [this] { CheckWatchdog(); });
}

void Daemon::CheckWatchdog() {
  const io::ServiceWatchdog::Result r = watchdog_->Check(std::chrono::steady_clock::now());
  if (!r.changed) return;
  if (r.pinged) {
    spdlog::warn("systemd watchdog: every data-path thread makes progress again; pinging");
    watchdog_stall_.clear();
  } else {
    std::string who;
    for (const auto& st : r.stalled) {
      who += (who.empty() ? "" : ", ") + st.thread + " silent " + std::to_string(st.silent.count()) + " ms";
    }
    spdlog::error("systemd watchdog: no ping while a thread makes no progress ({}); systemd "
                  "restarts spigot when WatchdogSec= passes",
                  who);
    watchdog_stall_ = "watchdog withheld: " + who;
  }
  notifier_.Status(StatusLine());
}

void Daemon::WatchAddresses() {
  if (!ike_sock_->local_endpoint().wildcard()) return;  // one address: nothing can move
  std::string error;
  auto nl = io::Netlink::Open(&error);
  auto monitor = nl ? io::AddressMonitor::Open(&error) : nullptr;
  if (!monitor) {
    spdlog::warn("{}: MOBIKE cannot follow address and route changes of this host", error);
    return;
  }
  host_ = std::make_unique<NetlinkHost>(std::move(nl));
  address_monitor_ = std::move(monitor);
  loop_->AddReader(address_monitor_->fd(), [this] {
    const bool complete = address_monitor_->Drain([](const io::AddressEvent& e) {
      spdlog::debug("address {} {} (ifindex {})", io::Endpoint::From(e.address, 0).AddressString(),
                    e.added ? "added" : "deleted", e.ifindex);
    });
    if (!complete) spdlog::warn("netlink: address notifications lost; reading the addresses again");
    gateway_->OnAddressesChanged();
  });
}

// UDP 500 (IKE only; UDP 4500 is read by the inbound data-path thread).
void Daemon::OnIkePort() {
  std::array<io::RecvSlot, kRecvSlots> slots;
  for (;;) {
    for (std::size_t i = 0; i < slots.size(); ++i) {
      slots[i] = io::RecvSlot{{recv_buffers_.data() + i * kRecvBuffer, kRecvBuffer}};
    }
    const io::BatchResult r = ike_sock_->RecvBatch(slots);
    for (std::size_t i = 0; i < r.count; ++i) {
      const io::RecvSlot& s = slots[i];
      if (s.truncated) {
        gateway_->OnTruncatedIke();
        continue;
      }
      gateway_->ReceiveIke({s.buffer.data(), s.length}, s.peer, false, s.local);
    }
    if (r.count < slots.size()) break;
  }
  gateway_->WorkQueue();
}

}  // namespace

int RunGateway(config::Config config, const std::string& config_path) {
  Daemon d;
  std::string error;
  if (!d.Init(std::move(config), config_path, &error)) {
    std::fprintf(stderr, "%sspigot: %s\n", io::StderrIsJournal() ? io::JournalPrefix(3).c_str() : "",
                 error.c_str());
    io::ServiceNotifier::FromEnvironment().Status("cannot start: " + error);
    return 1;
  }
  return d.Run();
}

}  // namespace spigot::app
