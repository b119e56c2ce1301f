#include "spigot/app/loadgen.h"

#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "spigot/config/duration.h"
#include "spigot/ike/traffic_selectors.h"
#include "spigot/io/clock.h"
#include "spigot/loadgen/auth.h"
#include "spigot/loadgen/worker.h"

namespace spigot::app {
namespace {

using namespace std::chrono_literals;
using loadgen::Worker;

constexpr std::uint16_t kIkePort = 500;
constexpr std::uint16_t kNattPort = 4500;
// Source ports: one socket per initiator up to this many, then initiators share them. More
// would cost a file descriptor each and show the responder nothing new.
constexpr std::size_t kMaxSockets = 1024;
// File descriptors kept for everything but the sockets: stdio, and per worker an epoll fd and
// an eventfd.
constexpr std::size_t kReservedFds = 32;
constexpr std::size_t kFdsPerWorker = 4;
// DELETEs per second at the end, all workers together, when --rate is lower.
constexpr double kMinDeleteRate = 5000;

int Fail(const std::string& message) {
  std::fprintf(stderr, "spigot loadgen: %s\n", message.c_str());
  return 2;
}

bool ParseSelectors(const std::string& text, std::vector<ike::TrafficSelector>& out) {
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const std::size_t comma = std::min(text.find(',', pos), text.size());
    std::string item = text.substr(pos, comma - pos);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    const auto ts = ike::SelectorFromCidr(item);
    if (!ts) return false;
    out.push_back(*ts);
    pos = comma + 1;
  }
  return !out.empty();
}

// The address the kernel would send from toward `target` (a connected UDP socket sends
// nothing).
std::optional<io::Endpoint> RouteSource(const io::Endpoint& target) {
  const int fd = socket(target.family(), SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  sockaddr_storage local{};
  socklen_t len = sizeof local;
  const bool ok = connect(fd, target.sockaddr_ptr(), target.sockaddr_len()) == 0 &&
                  getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0;
  close(fd);
  if (!ok) return std::nullopt;
  return io::Endpoint::FromSockaddr(reinterpret_cast<sockaddr*>(&local), len);
}

// Raises the soft RLIMIT_NOFILE to the hard one; returns the soft limit in force.
std::size_t RaiseFdLimit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit raised = rl;
    raised.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;
  }
  return rl.rlim_cur == RLIM_INFINITY ? SIZE_MAX : static_cast<std::size_t>(rl.rlim_cur);
}

double Seconds(ike::TimePoint from, ike::TimePoint to) {
  return std::chrono::duration<double>(to - from).count();
}

struct Setup {
  std::shared_ptr<ike::ConnectionParams> connection;
  loadgen::Ipv4 traffic_dst{};
  io::Endpoint target;
  io::Endpoint source;
  std::optional<io::Endpoint> move_to;
  std::chrono::seconds duration{0};
  bool shared_identity = false;  // certificate login: every initiator is the certificate's identity
};

// Options to a connection and addresses; an error message, or "" when they are fine.
std::string Prepare(const LoadgenOptions& o, Setup& s) {
  if (o.ike_sas == 0) return "--ike-sas must be at least 1";
  if (!(o.rate > 0)) return "--rate must be above 0";
  if (o.id_prefix.empty()) return "--id-prefix must not be empty";
  const auto target = io::Endpoint::Parse(o.target, kIkePort);
  if (!target) return "--target: '" + o.target + "' is not an IPv4 or IPv6 address";
  s.target = *target;
  const auto source = o.source.empty() ? RouteSource(s.target) : io::Endpoint::Parse(o.source, 0);
  if (!source) {
    return o.source.empty() ? "no route to " + o.target + " (give --source)"
                            : "--source: '" + o.source + "' is not an IPv4 or IPv6 address";
  }
  if (source->family() != s.target.family()) return "--source and --target differ in address family";
  s.source = *source;
  if (!o.move_to.empty()) {
    const auto to = io::Endpoint::Parse(o.move_to, 0);
    if (!to || to->family() != s.target.family())
      return "--move-to: '" + o.move_to + "' is not an address of the target's family";
    if (to->AddressString() == s.source.AddressString()) return "--move-to: that is the address we start from";
    s.move_to = *to;
  }

  auto c = std::make_shared<ike::ConnectionParams>();
  c->name = "loadgen";
  c->remote_id_any = true;  // any responder identity that proves the PSK or its certificate
  if (std::string err = loadgen::ApplyAuth({o.psk, o.cert, o.key, o.ca, o.id, o.eap_id, o.eap_secret}, *c); !err.empty()) return err;
  s.shared_identity = c->local_auth == ike::AuthMethod::kPubkey;
  std::string err;
  if (!ike::ParseProposals(o.ike_proposals, ike::ProtocolId::kIke, c->ike_proposals, err))
    return "--ike: " + err;
  if (!ike::ParseProposals(o.esp_proposals, ike::ProtocolId::kEsp, c->esp_proposals, err))
    return "--esp: " + err;
  const std::string all = s.target.family() == AF_INET6 ? "::/0" : "0.0.0.0/0";
  if (!ParseSelectors(o.local_ts.empty() ? all : o.local_ts, c->local_ts))
    return "--local-ts: '" + o.local_ts + "' is not a list of CIDRs";
  if (!ParseSelectors(o.remote_ts.empty() ? all : o.remote_ts, c->remote_ts))
    return "--remote-ts: '" + o.remote_ts + "' is not a list of CIDRs";
  // No liveness checks: the load is the negotiations (and rekeys), as with strongSwan's
  // default dpd_delay = 0.
  c->dpd_delay = 0s;
  if (!o.child_rekey_time.empty() && !config::ParseDuration(o.child_rekey_time, c->child_rekey_time, err))
    return "--child-rekey-time: " + err;
  if (!config::ParseDuration(o.duration, s.duration, err)) return "--duration: " + err;
  if (o.traffic && !o.vips) return "--traffic needs --vips (echo requests go from the virtual IP)";
  if (o.traffic) {
    if (o.packets == 0 || o.packets > 65535) return "--packets must be 1 to 65535";
    if (o.traffic_interval_ms == 0 || o.traffic_interval_ms > 60000)
      return "--traffic-interval must be 1 to 60000 (milliseconds)";
    const auto dst = io::Endpoint::Parse(o.traffic_dst, 0);
    if (!dst || dst->family() != AF_INET)
      return "--traffic needs --traffic-dst, an IPv4 address on the responder's side";
    std::copy_n(dst->address_bytes().begin(), 4, s.traffic_dst.begin());
  }
  // 2.19: IKE_AUTH carries CFG_REQUEST for an IPv4 address; TSi becomes 0.0.0.0/0.
  if (o.vips) c->vips = {4};
  s.connection = std::move(c);
  return "";
}

loadgen::Progress Sum(const std::vector<std::unique_ptr<Worker>>& workers) {
  loadgen::Progress sum;
  for (const auto& w : workers) {
    const loadgen::Progress p = w->progress();
    sum.started += p.started;
    sum.established += p.established;
    sum.failed += p.failed;
    sum.aborted += p.aborted;
    sum.rekeys_completed += p.rekeys_completed;
    sum.traffic_pending += p.traffic_pending;
    sum.echo_received += p.echo_received;
    sum.moves_pending += p.moves_pending;
  }
  return sum;
}

// With --vips / --traffic: whether every established initiator got a distinct address and
// every reply.
bool RoadWarriorsOk(const loadgen::Results& r, const LoadgenOptions& o) {
  if (o.vips && (r.virtual_ips.size() != r.established || r.DistinctVirtualIps() != r.virtual_ips.size()))
    return false;
  return !o.traffic || r.peers_all_replies == r.established;
}

nlohmann::json RoadWarriorsJson(const loadgen::Results& r, const LoadgenOptions& o) {
  nlohmann::json j;
  j["vips"] = {{"assigned", r.virtual_ips.size()},
               {"distinct", r.DistinctVirtualIps()},
               {"all_distinct", r.DistinctVirtualIps() == r.virtual_ips.size()}};
  if (o.traffic) {
    j["traffic"] = {{"destination", o.traffic_dst},
                    {"packets_per_peer", o.packets},
                    {"interval_ms", o.traffic_interval_ms},
                    {"peers", r.peers_all_replies + r.peers_some_replies + r.peers_no_replies},
                    {"peers_all_replies", r.peers_all_replies},
                    {"peers_some_replies", r.peers_some_replies},
                    {"peers_no_replies", r.peers_no_replies},
                    {"sent", r.echo_sent},
                    {"received", r.echo_received},
                    {"dropped", r.traffic_drops}};
  }
  return j;
}

void PrintRoadWarriors(const loadgen::Results& r, const LoadgenOptions& o) {
  const auto u = [](std::uint64_t v) { return static_cast<unsigned long long>(v); };
  std::printf("virtual IPs          %llu assigned, %llu distinct\n", u(r.virtual_ips.size()),
              u(r.DistinctVirtualIps()));
  if (!o.traffic) return;
  std::printf("echo to %-12s %llu peers: %llu all %u replies, %llu some, %llu none\n",
              o.traffic_dst.c_str(), u(r.peers_all_replies + r.peers_some_replies + r.peers_no_replies),
              u(r.peers_all_replies), o.packets, u(r.peers_some_replies), u(r.peers_no_replies));
  std::printf("echo packets         %llu sent, %llu replies (%.1f %%)\n", u(r.echo_sent), u(r.echo_received),
              r.echo_sent != 0 ? 100.0 * static_cast<double>(r.echo_received) / static_cast<double>(r.echo_sent) : 0.0);
  for (const auto& [why, n] : r.traffic_drops) std::printf("  %6llu  dropped: %s\n", u(n), why.c_str());
}

// --move-to: moved, answered, recovered (an echo reply at the new address, with traffic), and
// the latencies from the move (p50, p99, max), in milliseconds.
nlohmann::json MobilityJson(const loadgen::Results& r, const LoadgenOptions& o) {
  const auto summary = [](std::vector<double> v) {
    const double max = v.empty() ? 0 : *std::max_element(v.begin(), v.end());
    return nlohmann::json{{"p50", loadgen::Percentile(v, 50)}, {"p99", loadgen::Percentile(v, 99)}, {"max", max}};
  };
  nlohmann::json j = {{"to", o.move_to},
                      {"moved", r.moved},
                      {"answered", r.move_answered},
                      {"skipped", r.move_skipped},
                      {"answer_ms", summary(r.move_answer_ms)}};
  if (o.traffic) {
    j["recovered"] = r.move_recovered;
    j["recover_ms"] = summary(r.move_recover_ms);
  }
  return j;
}

void PrintReport(const loadgen::Results& r, std::vector<double> latencies, double duration,
                 std::uint32_t initiators, const LoadgenOptions& o) {
  const bool json = o.json;
  const double p50 = loadgen::Percentile(latencies, 50);
  const double p99 = loadgen::Percentile(latencies, 99);
  if (json) {
    nlohmann::json j = {
        {"initiators", initiators},
        {"established", r.established},
        {"failed", r.failed},
        {"failures", r.failures},
        {"establish_rate_per_second", r.EstablishRate()},
        {"latency_ms", {{"p50", p50}, {"p99", p99}}},
        {"rekeys_completed", r.rekeys_completed},
        {"duration_seconds", duration},
        {"not_started", initiators - r.started},
        {"aborted", r.aborted},
        {"lost", r.lost},
        {"losses", r.losses},
        {"retransmits", r.retransmits},
        {"send_failed", r.send_failed},
        {"deletes_unanswered", r.deletes_unanswered},
    };
    if (o.vips) j.update(RoadWarriorsJson(r, o));
    if (!o.move_to.empty()) j["mobility"] = MobilityJson(r, o);
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::printf("established          %llu of %u\n", static_cast<unsigned long long>(r.established), initiators);
  std::printf("failed               %llu\n", static_cast<unsigned long long>(r.failed));
  for (const auto& [why, n] : r.failures) std::printf("  %6llu  %s\n", static_cast<unsigned long long>(n), why.c_str());
  if (r.started != initiators) std::printf("not started          %llu\n", static_cast<unsigned long long>(initiators - r.started));
  if (r.aborted != 0) std::printf("aborted              %llu (negotiating when the run ended)\n", static_cast<unsigned long long>(r.aborted));
  if (r.lost != 0) {
    std::printf("lost after setup     %llu\n", static_cast<unsigned long long>(r.lost));
    for (const auto& [why, n] : r.losses) std::printf("  %6llu  %s\n", static_cast<unsigned long long>(n), why.c_str());
  }
  std::printf("establish rate       %.1f/s\n", r.EstablishRate());
  std::printf("latency              p50 %.1f ms, p99 %.1f ms\n", p50, p99);
  std::printf("rekeys completed     %llu\n", static_cast<unsigned long long>(r.rekeys_completed));
  std::printf("retransmits          %llu\n", static_cast<unsigned long long>(r.retransmits));
  if (r.send_failed != 0) std::printf("sends refused        %llu\n", static_cast<unsigned long long>(r.send_failed));
  if (r.deletes_unanswered != 0) std::printf("DELETEs unanswered   %llu\n", static_cast<unsigned long long>(r.deletes_unanswered));
  std::printf("duration             %.1f s\n", duration);
  if (o.vips) PrintRoadWarriors(r, o);
  if (!o.move_to.empty()) std::printf("mobility             %s\n", MobilityJson(r, o).dump().c_str());
}

}  // namespace

int RunLoadgen(const LoadgenOptions& o) {
  Setup setup;
  if (const std::string err = Prepare(o, setup); !err.empty()) return Fail(err);

  const std::uint32_t n = o.ike_sas;
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const std::uint32_t threads = std::min(n, o.threads != 0 ? o.threads : cores);
  const std::size_t fds = RaiseFdLimit();
  const std::size_t reserved = kReservedFds + kFdsPerWorker * threads;
  const std::size_t budget = fds > reserved + threads ? fds - reserved : threads;
  const std::size_t sockets = std::max<std::size_t>(threads, std::min({std::size_t{n}, kMaxSockets, budget}));

  // Signals go to the main thread only: block them before any worker thread exists.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::vector<std::unique_ptr<Worker>> workers;
  std::uint32_t first = 1;
  for (std::uint32_t k = 0; k < threads; ++k) {
    loadgen::WorkerConfig c;
    c.target = setup.target;
    c.natt_port = kNattPort;
    c.source = setup.source;
    c.sockets = sockets / threads + (k < sockets % threads ? 1 : 0);
    c.connection = setup.connection;
    c.id_prefix = o.id_prefix;
    c.shared_identity = setup.shared_identity;
    c.first_index = first;
    c.count = n / threads + (k < n % threads ? 1 : 0);
    c.rate = o.rate * c.count / n;
    c.delete_rate = std::max(o.rate, kMinDeleteRate) * c.count / n;
    c.shard = k;
    c.shards = threads;
    c.vips = o.vips;
    c.traffic = o.traffic;
    c.packets = o.packets;
    c.echo_interval = std::chrono::milliseconds(o.traffic_interval_ms);
    c.traffic_dst = setup.traffic_dst;
    c.move_to = setup.move_to;
    first += c.count;
    std::string error;
    auto w = Worker::Create(std::move(c), &error);
    if (!w) return Fail(error + (errno == EMFILE ? " (raise the open-files limit: ulimit -n)" : ""));
    workers.push_back(std::move(w));
  }
  std::fprintf(stderr,
               "spigot loadgen: %u initiators against %s from %s at %g/s: %u threads, %zu source "
               "ports (up to %zu initiators per port)\n",
               n, setup.target.AddressString().c_str(), setup.source.AddressString().c_str(), o.rate,
               threads, sockets, (n + sockets - 1) / sockets);
  if (setup.shared_identity) {
    std::fprintf(stderr, "spigot loadgen: every initiator authenticates with %s as %s%s\n",
                 setup.connection->local_credentials->cert.Subject().c_str(),
                 ike::ToString(setup.connection->local_id).c_str(),
                 setup.connection->remote_auth == ike::AuthMethod::kPubkey
                     ? ", and checks the responder's certificate" : "");
  }

  const ike::TimePoint start = io::DefaultClock().Now() + 10ms;
  std::vector<std::thread> running;
  for (auto& w : workers) running.emplace_back([&w, start] { w->Run(start); });

  bool interrupted = false;
  ike::TimePoint next_progress = start + 1s;
  std::uint64_t established_before = 0;
  ike::TimePoint end;
  // --move-to: when every initiator was first up, and whether the move was ordered.
  std::optional<ike::TimePoint> all_up;
  bool moved = !setup.move_to;
  for (;;) {
    const auto wait = std::max<ike::TimePoint::duration>(next_progress - io::DefaultClock().Now(), 0ns);
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(wait).count();
    const timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
    const int sig = sigtimedwait(&stop_signals, nullptr, &ts);
    end = io::DefaultClock().Now();
    const loadgen::Progress p = Sum(workers);
    if (sig == SIGINT || sig == SIGTERM) {
      interrupted = true;
      std::fprintf(stderr, "spigot loadgen: interrupted\n");
      break;
    }
    if (end >= next_progress) {
      std::fprintf(stderr, "[%5.0fs] established %llu/%u, failed %llu, in flight %llu, %llu/s, rekeys %llu%s\n",
                   Seconds(start, end), static_cast<unsigned long long>(p.established), n,
                   static_cast<unsigned long long>(p.failed),
                   static_cast<unsigned long long>(p.started - p.established - p.failed - p.aborted),
                   static_cast<unsigned long long>(p.established - established_before),
                   static_cast<unsigned long long>(p.rekeys_completed),
                   o.traffic ? (", echo replies " + std::to_string(p.echo_received) + ", peers pinging " +
                                std::to_string(p.traffic_pending)).c_str()
                             : "");
      established_before = p.established;
      next_progress += 1s;
    }
    if (!moved && p.started == n && p.established + p.failed + p.aborted == n) {
      if (!all_up) all_up = end;
      if (end - *all_up >= std::chrono::milliseconds(o.move_after_ms)) {
        std::fprintf(stderr, "spigot loadgen: every initiator moves to %s\n", o.move_to.c_str());
        for (auto& w : workers) w->Move();
        moved = true;
      }
    }
    if (p.started == n && p.settled() && moved && end - start >= setup.duration) break;
  }
  const bool any_up = Sum(workers).established != 0;
  if (any_up) std::fprintf(stderr, "spigot loadgen: deleting the IKE SAs\n");
  for (auto& w : workers) w->Finish();
  for (auto& t : running) t.join();

  loadgen::Results total;
  for (auto& w : workers) total.Merge(w->results());
  if (any_up) {
    std::fprintf(stderr, "spigot loadgen: deleted in %.1f s, %llu left unanswered\n",
                 Seconds(end, io::DefaultClock().Now()),
                 static_cast<unsigned long long>(total.deletes_unanswered));
  }
  std::vector<double> latencies = std::move(total.latency_ms);
  PrintReport(total, std::move(latencies), Seconds(start, end), n, o);
  const bool all = total.established == n && total.failed == 0 && !interrupted && RoadWarriorsOk(total, o);
  return all ? 0 : 1;
}

}  // namespace spigot::app
