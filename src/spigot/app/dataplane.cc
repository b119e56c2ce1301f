#include "spigot/app/dataplane.h"

#include <ifaddrs.h>
#include <linux/filter.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "spigot/bounds.h"
#include "spigot/engine/fault_engine.h"
#include "spigot/gateway/child_sa_manager.h"

namespace spigot::app {
namespace {

// Inner MTU: 1500 - 20 (IPv4) - 8 (UDP) - 8 (ESP header) - 16 (largest IV) - 16 (ICV)
// - 2 (trailer) - 15 (largest CBC padding) = 1415; 1400 leaves room and matches strongSwan.
constexpr int kTunMtu = 1400;
constexpr std::size_t kBatch = 32;
// Outbound slots with TUN offloads: a 64 KiB super-segment at MSS 1348 is 49 segments, and one
// UDP SendBatch takes 64 datagrams.
constexpr std::size_t kOffloadSlots = io::UdpSocket::kMaxBatch;
// A TUN read with offloads: the virtio-net header and a super-segment of up to 64 KiB (a read
// that fills it whole may have lost its tail and is dropped).
constexpr std::size_t kTunFrameSize = io::VirtioNetHdr::kSize + 65536 + 1;
// Receive slots with UDP GRO on: each holds up to 64 KiB of one flow's datagrams, so fewer of
// them bound the memory (16 x 64 KiB = 1 MiB, against 32 x 4 KiB without GRO).
constexpr std::size_t kGroSlots = 16;
// Packet buffers: the inner packet starts on a cache line, ESP grows into the headroom.
constexpr std::size_t kHead = 64;
constexpr std::size_t kBufSize = 2048 + kHead;
constexpr int kPollMs = 100;
// Crypto jobs in flight per data-path thread (the pipeline's ring): 32 batches.
constexpr std::size_t kCryptoRing = bounds::kCryptoRing;

// A pool's range as the fewest CIDRs that cover it.
std::vector<config::TrafficSelector> PoolPrefixes(const config::PoolConfig& pool) {
  ike::TrafficSelector range;
  range.type = pool.family == config::AddressFamily::kIpv4 ? ike::kTsIpv4AddrRange
                                                           : ike::kTsIpv6AddrRange;
  range.start = pool.first;
  range.end = pool.last;
  std::vector<config::TrafficSelector> out;
  for (const auto& p : gateway::SelectorPrefixes({range})) {
    config::TrafficSelector t;
    std::string ignored;
    if (config::ParseTrafficSelector(p.ToString(), t, ignored)) out.push_back(t);
  }
  return out;
}

policy::Prefix ToPrefix(const config::TrafficSelector& t) {
  return *policy::Prefix::Make(t.family == config::AddressFamily::kIpv4 ? policy::Family::kIpv4
                                                                       : policy::Family::kIpv6,
                               {t.network.data(), t.address_length()}, t.prefix_len);
}

// An address of this host inside `ts`, if any.
std::optional<std::vector<std::uint8_t>> LocalAddressIn(const config::TrafficSelector& ts) {
  ifaddrs* ifa = nullptr;
  if (getifaddrs(&ifa) != 0) return std::nullopt;
  std::optional<std::vector<std::uint8_t>> found;
  const policy::Prefix p = ToPrefix(ts);
  for (ifaddrs* i = ifa; i != nullptr && !found; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    const std::uint8_t* a = nullptr;
    std::size_t n = 0;
    if (i->ifa_addr->sa_family == AF_INET && ts.family == config::AddressFamily::kIpv4) {
      a = reinterpret_cast<const std::uint8_t*>(&reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr);
      n = 4;
    } else if (i->ifa_addr->sa_family == AF_INET6 && ts.family == config::AddressFamily::kIpv6) {
      a = reinterpret_cast<const std::uint8_t*>(&reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr);
      n = 16;
    }
    if (a != nullptr && p.Contains({a, n})) found = std::vector<std::uint8_t>(a, a + n);
  }
  freeifaddrs(ifa);
  return found;
}

// The TUN queue an opened packet is written to: one per flow (addresses, protocol, ports, the
// same both ways), spread over the queues. The kernel's TUN remembers the queue a flow came in
// on and sends the flow's outbound packets to that queue (automq), so writing every packet of
// an SA from its owner's queue would pull all of its flows' outbound traffic onto one thread.
int FlowQueue(std::span<const std::uint8_t> ip, int queues) {
  if (queues <= 1) return 0;
  std::uint32_t h = 0;
  std::size_t ports_at = 0;
  std::uint8_t proto = 0;
  const auto mix = [&h](std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
    for (std::size_t i = 0; i < a.size(); ++i) h = h * 31 + (a[i] ^ b[i]);
  };
  if (ip.size() >= 20 && (ip[0] >> 4) == 4) {
    mix(ip.subspan(12, 4), ip.subspan(16, 4));
    proto = ip[9];
    ports_at = static_cast<std::size_t>(ip[0] & 0x0f) * 4;
  } else if (ip.size() >= 40 && (ip[0] >> 4) == 6) {
    mix(ip.subspan(8, 16), ip.subspan(24, 16));
    proto = ip[6];
    ports_at = 40;
  } else {
    return 0;
  }
  h = h * 31 + proto;
  if ((proto == 6 || proto == 17) && ip.size() >= ports_at + 4)
    mix(ip.subspan(ports_at, 2), ip.subspan(ports_at + 2, 2));
  h ^= h >> 16;
  h *= 0x45d9f3b;
  h ^= h >> 16;
  return static_cast<int>(h % static_cast<std::uint32_t>(queues));
}

}  // namespace

std::size_t Dataplane::Threads(const config::GlobalConfig& global) {
  if (global.datapath_threads != 0) return global.datapath_threads;
  return std::clamp<std::size_t>(std::thread::hardware_concurrency(), 1, config::kMaxDatapathThreads);
}

bool Dataplane::SteerBySpi(bool misroute) {
  // The reuseport group's program sees the UDP payload: its first word is the SPI (RFC 3948
  // 2.1), and the socket with that index (bind order) gets the datagram. The non-ESP marker
  // (IKE) is 0 and goes to socket 0, as does a keepalive (too short to load: the program
  // returns 0). An index past the group falls back to the kernel's 4-tuple hash.
  // `misroute` (test hook): SPI + 1 instead, so that every ESP datagram lands on a thread that
  // does not own its SA and is handed over.
  sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0),
      BPF_STMT(BPF_ALU | BPF_ADD | BPF_K, misroute ? 1u : 0u),
      BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, static_cast<std::uint32_t>(natt_.size())),
      BPF_STMT(BPF_RET | BPF_A, 0),
  };
  sock_fprog prog{static_cast<unsigned short>(std::size(code)), code};
  return setsockopt(natt_[0]->fd(), SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog)) == 0;
}

std::unique_ptr<Dataplane> Dataplane::Create(const config::GlobalConfig& global,
                                             const io::UdpSocket& ike_socket,
                                             std::vector<io::UdpSocket*> natt_sockets,
                                             io::EventLoop& control_loop, Hooks hooks,
                                             std::string* error, io::ProgressWatch* progress) {
  const std::size_t threads = natt_sockets.size();
  if (threads == 0) {
    *error = "no UDP 4500 socket for the data path";
    return nullptr;
  }
  std::unique_ptr<Dataplane> d(
      new Dataplane(ike_socket, std::move(natt_sockets), control_loop, std::move(hooks)));
  const io::UdpSocket& natt_socket = *d->natt_[0];
  // Both offloads are optional: refused, UDP 4500 works as without them.
  if (global.udp_offload) {
    bool gso = true, gro = true;
    for (io::UdpSocket* s : d->natt_) {
      gso = s->EnableGso() && gso;
      gro = s->EnableGro() && gro;
    }
    spdlog::info("UDP {}: GSO {}, GRO {}", natt_socket.local_endpoint().port(),
                 gso ? "on" : "off (not in this kernel)", gro ? "on" : "off (not in this kernel)");
  } else {
    spdlog::info("UDP {}: GSO and GRO off (global.udp_offload = false)",
                 natt_socket.local_endpoint().port());
  }
  if (threads > 1) {
    // SPIGOT_TEST_STEERING (tests only): "hash" leaves the spreading to the kernel's 4-tuple
    // hash, "misroute" sends every ESP datagram to a thread that must hand it over.
    const char* test_steering = std::getenv("SPIGOT_TEST_STEERING");
    const std::string steering = test_steering != nullptr ? test_steering : "";
    if (!steering.empty())
      spdlog::warn("data path: SPIGOT_TEST_STEERING={} (a test hook)", steering);
    const bool steered = steering != "hash" && d->SteerBySpi(steering == "misroute");
    d->steering_ = !steered ? "hash" : steering == "misroute" ? "misroute" : "spi";
    if (steering == "hash")
      spdlog::info("data path: {} threads; ESP spread by address and handed to its SA's thread",
                   threads);
    else if (steered)
      spdlog::info("data path: {} threads, a TUN queue and a UDP {} socket each; ESP steered to "
                   "its SA's thread by SPI", threads, natt_socket.local_endpoint().port());
    else
      spdlog::warn("data path: {} threads; the kernel refused SO_ATTACH_REUSEPORT_CBPF ({}): "
                   "ESP is spread by address and handed to its SA's thread", threads,
                   std::strerror(errno));
  } else {
    spdlog::info("data path: 1 thread");
  }
  d->tun_offload_enabled_ = global.tun_offload;
  d->tun_ = io::TunDevice::Open(global.tun_name, static_cast<int>(threads), error,
                                io::TunDevice::OffloadRequest{global.tun_offload});
  if (!d->tun_) return nullptr;
  if (!global.tun_offload) {
    spdlog::info("TUN {}: offloads off (global.tun_offload = false)", d->tun_->name());
  } else if (!d->tun_->vnet_hdr()) {
    spdlog::info("TUN {}: offloads off (the kernel refused IFF_VNET_HDR)", d->tun_->name());
  } else {
    const unsigned f = d->tun_->offloads();
    const auto on = [f](unsigned bit) { return (f & bit) != 0 ? "on" : "off"; };
    spdlog::info("TUN {}: checksum offload {}, TSO4 {}, TSO6 {}, USO4 {}, USO6 {} ({} request(s) "
                 "refused by the kernel first)",
                 d->tun_->name(), on(io::TunDevice::kOffloadCsum), on(io::TunDevice::kOffloadTso4),
                 on(io::TunDevice::kOffloadTso6), on(io::TunDevice::kOffloadUso4),
                 on(io::TunDevice::kOffloadUso6), d->tun_->offload_refusals());
  }
  d->netlink_ = io::Netlink::Open(error);
  if (!d->netlink_ || !d->netlink_->SetLinkUp(d->tun_->ifindex(), kTunMtu, error)) return nullptr;
  std::string stats_error;
  if (!d->netlink_->GetLinkStats(d->tun_->ifindex(), d->tun_start_, &stats_error))
    spdlog::warn("TUN {}: {}: its drops will not be counted", d->tun_->name(), stats_error);
  d->tun_last_ = d->tun_start_;
  Dataplane* self = d.get();
  if (global.crypto_engine != "inline") {
    d->engine_name_ = global.crypto_engine;
    d->engine_ = engine::MakeEngine(global.crypto_engine);
    if (!d->engine_) {
      *error = "unknown crypto engine \"" + global.crypto_engine + "\"";
      return nullptr;
    }
    const auto timeout = std::chrono::milliseconds(global.crypto_stall_timeout_ms);
    d->monitor_ = std::make_unique<engine::EngineMonitor>(
        *d->engine_, engine::EngineMonitor::Options{timeout, std::chrono::milliseconds(100)},
        [self, timeout](const engine::EngineMonitor::Event& e) {
          const auto s = self->monitor_->stats();
          switch (e.kind) {
            case engine::EngineMonitor::Event::Kind::kStalled:
              spdlog::warn("crypto engine {} stalled: a job was {} ms old (timeout {} ms); {} "
                           "in-flight job(s) on this thread redone inline, traffic goes inline "
                           "until a probe completes (stalls {})",
                           self->engine_name_, e.late.count(), timeout.count(), e.in_flight,
                           s.stalls);
              break;
            case engine::EngineMonitor::Event::Kind::kFailed:
              spdlog::warn("crypto engine {} failed a job: taken out of service, {} in-flight "
                           "job(s) on this thread redone inline (stalls {}, failed {})",
                           self->engine_name_, e.in_flight, s.stalls, s.failed + 1);
              break;
            case engine::EngineMonitor::Event::Kind::kRecovered:
              spdlog::warn("crypto engine {} back in service after {} ms stalled and {} probe(s) "
                           "(stalls {}, fallbacks {}, late completions discarded {})",
                           self->engine_name_, e.stalled_for.count(), e.probes, s.stalls,
                           s.fallbacks, s.late_discarded);
              break;
          }
        });
    spdlog::info("crypto engine {} (stall timeout {} ms)", global.crypto_engine, timeout.count());
  }
  for (std::size_t i = 0; i < threads; ++i) {
    auto w = std::make_unique<Worker>();
    w->index = i;
    w->socket = d->natt_[i];
    if (threads > 1) w->inbox = std::make_unique<datapath::Handoff>();
    w->inbound = std::make_unique<datapath::InboundPath>(d->counters_, d->spd_);
    // The threads hold packets for trap policies in one queue (paths_.held()): one acquire per
    // policy, whichever thread its first packet came in on.
    w->outbound = std::make_unique<datapath::OutboundPath>(
        d->counters_, d->spd_,
        [self](policy::PolicyId id) {
          return self->loop_.Post([self, id] { self->hooks_.acquire(id); });
        },
        [self](policy::PolicyId id, std::uint32_t spi) {
          self->loop_.Post([self, id, spi] { self->hooks_.exhausted(id, spi); });
        },
        d->paths_.held());
    // Held packets that an SA command taken in the middle of a batch flushes go out at once,
    // from this thread's socket, before the packet being sealed.
    w->outbound->SendHeldBy([self, w = w.get()](const datapath::Route& to,
                                                std::span<const std::uint8_t> d) {
      if (w->socket->SendTo(to.peer, d, to.source))
        w->tx.fetch_add(1, std::memory_order_relaxed);
      else
        self->counters_.send_failed.fetch_add(1, std::memory_order_relaxed);
    });
    w->inbound->OnFirstPacket([self](std::uint32_t spi) {
      if (!self->loop_.Post([self, spi] {
            if (self->hooks_.first_packet) self->hooks_.first_packet(spi);
          }))
        self->counters_.first_packet_refused.fetch_add(1, std::memory_order_relaxed);
    });
    w->inbound->OnNewSource([self](std::uint32_t spi, const io::Endpoint& from) {
      if (self->loop_.Post([self, spi, from] {
            if (self->hooks_.new_source) self->hooks_.new_source(spi, from);
          }))
        return true;
      self->counters_.new_source_refused.fetch_add(1, std::memory_order_relaxed);
      return false;
    });
    if (d->monitor_) {
      w->inbound->UseEngine(*d->monitor_, kCryptoRing);
      w->outbound->UseEngine(*d->monitor_, kCryptoRing);
    }
    if (progress != nullptr)
      w->beat = &progress->Register("datapath-" + std::to_string(i), std::chrono::steady_clock::now());
    d->paths_.Add(*w->inbound, *w->outbound);
    d->workers_.push_back(std::move(w));
  }
  for (auto& w : d->workers_) w->thread = std::thread([self, w = w.get()] { self->Run(*w); });
  return d;
}

Dataplane::~Dataplane() {
  stop_ = true;
  for (auto& w : workers_) {
    if (w->thread.joinable()) w->thread.join();
  }
  if (engine_) engine_->Stop();
}

nlohmann::json Dataplane::DatapathStats() const {
  nlohmann::json threads = nlohmann::json::array();
  std::uint64_t handed = 0, dropped = 0;
  for (const auto& w : workers_) {
    threads.push_back({{"rx", w->rx.load()}, {"tx", w->tx.load()},
                       {"handed_over", w->handed_over.load()},
                       {"handoff_dropped", w->inbox ? w->inbox->dropped() : 0}});
    handed += w->handed_over.load();
    dropped += w->inbox ? w->inbox->dropped() : 0;
  }
  return {{"threads", threads},
          {"steering", steering_},
          {"handed_over", handed},
          {"handoff_dropped", dropped}};
}

nlohmann::json Dataplane::CryptoEngineStats() const {
  if (!monitor_) {
    // Inline: nothing can stall, nothing is in flight.
    return {{"name", "inline"}, {"state", "ok"}, {"stalls", 0}, {"fallbacks", 0}};
  }
  const engine::EngineMonitor::Stats s = monitor_->stats();
  return {{"name", engine_name_},
          {"state", s.state == engine::EngineMonitor::State::kOk ? "ok" : "stalled"},
          {"stalls", s.stalls},
          {"fallbacks", s.fallbacks},
          {"stall_timeout_ms", monitor_->options().stall_timeout.count()},
          {"in_flight", s.in_flight},
          {"completed", s.completed},
          {"failed", s.failed},
          {"bypassed", s.bypassed},
          {"refused", s.refused},
          {"ring_full", s.ring_full},
          {"abandoned", s.abandoned},
          {"late_discarded", s.late_discarded},
          {"probes", s.probes}};
}

nlohmann::json Dataplane::TunOffloadStats() const {
  const unsigned f = tun_->offloads();
  const io::TunOffloadCounters& c = tun_offload_;
  return {{"enabled", tun_offload_enabled_},
          {"vnet_hdr", tun_->vnet_hdr()},
          {"csum", (f & io::TunDevice::kOffloadCsum) != 0},
          {"tso4", (f & io::TunDevice::kOffloadTso4) != 0},
          {"tso6", (f & io::TunDevice::kOffloadTso6) != 0},
          {"uso4", (f & io::TunDevice::kOffloadUso4) != 0},
          {"uso6", (f & io::TunDevice::kOffloadUso6) != 0},
          {"offload_refusals", tun_->offload_refusals()},
          {"super_segments", c.super_segments.load()},
          {"segments_split", c.segments_split.load()},
          {"csum_completed", c.csum_completed.load()},
          {"bad_vnet_hdr", c.bad_vnet_hdr.load()},
          {"coalesced_writes", c.coalesced_writes.load()},
          {"coalesced_segments", c.coalesced_segments.load()},
          {"bad_csum_passed", c.bad_csum_passed.load()},
          {"fallbacks", c.fallbacks.load()}};
}

nlohmann::json Dataplane::UdpOffloadStats() const {
  // Summed over the threads' sockets; on only where it is on for every socket.
  bool gso = true, gro = true;
  std::uint64_t sends = 0, segments = 0, fallbacks = 0, batches = 0, gro_segments = 0;
  for (const io::UdpSocket* s : natt_) {
    const io::UdpOffloadCounters& c = s->offload_counters();
    gso = gso && s->gso();
    gro = gro && s->gro();
    sends += c.gso_sends.load();
    segments += c.gso_segments.load();
    fallbacks += c.gso_fallbacks.load();
    batches += c.gro_batches.load();
    gro_segments += c.gro_segments.load();
  }
  return {{"gso", gso},
          {"gro", gro},
          {"gso_sends", sends},
          {"gso_segments", segments},
          {"gso_fallbacks", fallbacks},
          {"gro_batches", batches},
          {"gro_segments", gro_segments}};
}

gateway::KernelCounters Dataplane::kernel_counters() const {
  gateway::KernelCounters k;
  const auto socket = [](const io::UdpSocket& s) {
    gateway::KernelCounters::Socket out;
    out.port = s.local_endpoint().port();
    out.rx_overflow = s.KernelDrops();
    out.received = s.receive_counters().datagrams.load(std::memory_order_relaxed);
    return out;
  };
  k.udp_ike = socket(ike_);
  k.udp_natt = socket(*natt_[0]);
  for (std::size_t i = 1; i < natt_.size(); ++i) {
    const auto more = socket(*natt_[i]);
    k.udp_natt.rx_overflow += more.rx_overflow;
    k.udp_natt.received += more.received;
  }
  io::LinkStats now;
  if (netlink_->GetLinkStats(tun_->ifindex(), now)) tun_last_ = now;
  // A counter below its start: the device was reset under us; count from zero again.
  const auto since = [](std::uint64_t now, std::uint64_t start) { return now >= start ? now - start : now; };
  k.tun_tx_dropped = since(tun_last_.tx_dropped, tun_start_.tx_dropped);
  k.tun_rx_dropped = since(tun_last_.rx_dropped, tun_start_.rx_dropped);
  return k;
}

nlohmann::json Dataplane::CryptoFault(const std::string& action, std::int64_t ms) {
  auto* fault = dynamic_cast<engine::FaultEngine*>(engine_.get());
  if (fault == nullptr) {
    return {{"error", "crypto-fault needs crypto_engine = \"fault\" (this daemon runs \"" +
                          engine_name_ + "\")"}};
  }
  using Mode = engine::FaultEngine::Mode;
  if (action == "stall") {
    fault->SetMode(Mode::kStall);
  } else if (action == "slow") {
    if (ms < 1 || ms > 60000) return {{"error", "crypto-fault slow needs MS between 1 and 60000"}};
    fault->SetMode(Mode::kSlow, std::chrono::milliseconds(ms));
  } else if (action == "fail") {
    fault->SetMode(Mode::kFail);
  } else if (action == "resume") {
    fault->SetMode(Mode::kNormal);
  } else {
    return {{"error", "crypto-fault: unknown action '" + action + "' (stall, slow MS, fail, resume)"}};
  }
  if (action == "slow")
    spdlog::warn("crypto engine fault injection: slow, {} ms per job", ms);
  else
    spdlog::warn("crypto engine fault injection: {}", action);
  return {{"ok", true}, {"message", "crypto engine fault: " + action}};
}

policy::PolicyId Dataplane::PolicyFor(const std::string& connection) const {
  auto it = policy_ids_.find(connection);
  return it == policy_ids_.end() ? policy::kNoPolicy : it->second;
}

bool Dataplane::SetUpRoutes(const config::ConnectionConfig& c,
                            const std::vector<config::TrafficSelector>& remotes,
                            std::string* error) {
  for (const auto& remote : remotes) {
    // The source address for traffic into the tunnel: one of ours inside local_ts, else the
    // first address of local_ts, given to the TUN (the gateway then answers for it).
    std::vector<std::uint8_t> src;
    for (const auto& local : c.local_ts) {
      if (local.family != remote.family) continue;
      if (auto a = LocalAddressIn(local)) {
        src = *a;
      } else {
        src.assign(local.network.begin(), local.network.begin() + static_cast<long>(local.address_length()));
        if (local.prefix_len < local.address_length() * 8) src.back() |= 1;
        const int family = local.family == config::AddressFamily::kIpv4 ? AF_INET : AF_INET6;
        if (!netlink_->AddAddress(tun_->ifindex(), family, src, static_cast<int>(src.size() * 8), error))
          return false;
      }
      break;
    }
    const int family = remote.family == config::AddressFamily::kIpv4 ? AF_INET : AF_INET6;
    if (!netlink_->AddRoute(tun_->ifindex(), family, {remote.network.data(), remote.address_length()},
                            remote.prefix_len, src, error))
      return false;
  }
  return true;
}

bool Dataplane::ApplyConnections(const config::Config& config, std::string* error) {
  for (const auto& [name, id] : policy_ids_) spd_tables_.Remove(id);
  for (const auto& c : config.connections) {
    auto [it, added] = policy_ids_.try_emplace(c.name, static_cast<policy::PolicyId>(policy_ids_.size()));
    std::vector<policy::Prefix> locals, remotes;
    for (const auto& t : c.local_ts) locals.push_back(ToPrefix(t));
    for (const auto& t : c.remote_ts) remotes.push_back(ToPrefix(t));
    // A CHILD SA's own policy wins over its connection's for the same selectors.
    spd_tables_.AddCrossProduct(it->second, locals, remotes, policy::SpdBuilder::Rank::kFallback);
    if (!c.vips.empty()) {
      // Our address in the tunnel is the one the peer assigns: remote_ts is routed from it
      // once we have it (AddVirtualIp). local_ts (typically 0.0.0.0/0) holds no source.
      auto& routed = vip_remote_ts_[c.name];
      if (routed != c.remote_ts && virtual_ips_.count(c.name) != 0) {
        // A reload changed remote_ts under an assigned address: route the new selectors.
        for (const auto family : {policy::Family::kIpv4, policy::Family::kIpv6})
          RouteVirtualIp(c.name, family, {});
        routed = c.remote_ts;
        for (const auto& vip : virtual_ips_[c.name])
          RouteVirtualIp(c.name, vip.family, {vip.address.data(), policy::AddressLength(vip.family)});
      }
      routed = c.remote_ts;
    } else if (!SetUpRoutes(c, c.remote_ts, error)) {
      return false;
    }
    // Road warriors' virtual IPs come from the connection's pools: replies to them go into
    // the tunnel (each peer's own SA then, by its CHILD SA's policy).
    for (const auto& name : c.pools) {
      for (const auto& pool : config.pools) {
        if (pool.name == name && !SetUpRoutes(c, PoolPrefixes(pool), error)) return false;
      }
    }
    paths_.SetTrap(it->second, c.start_action == config::StartAction::kTrap);
  }
  spd_.Publish(spd_tables_.Build());
  return true;
}

void Dataplane::SetSaPolicy(policy::PolicyId id, const std::vector<policy::Prefix>& locals,
                            const std::vector<policy::Prefix>& remotes) {
  RemoveSaPolicy(id);
  const bool hosts = std::all_of(remotes.begin(), remotes.end(), [](const policy::Prefix& r) {
    return r.prefix_len == policy::MaxPrefixLength(r.family);
  });
  if (hosts && spd_.SetHostPolicy(id, locals, remotes)) {
    spd_.CommitHostPolicies();
    return;
  }
  if (spd_tables_.AddCrossProduct(id, locals, remotes) == 0) return;
  sa_in_tables_.insert(id);
  spd_.Publish(spd_tables_.Build());
}

void Dataplane::RemoveSaPolicy(policy::PolicyId id) {
  if (sa_in_tables_.erase(id) != 0) {
    spd_tables_.Remove(id);
    spd_.Publish(spd_tables_.Build());
  } else if (spd_.RemoveHostPolicy(id)) {
    spd_.CommitHostPolicies();
  }
}

void Dataplane::InstallInbound(datapath::InboundSpec spec) { paths_.InstallInbound(std::move(spec)); }
void Dataplane::RemoveInbound(std::uint32_t spi) { paths_.RemoveInbound(spi); }
void Dataplane::SetOutbound(datapath::OutboundSpec spec) { paths_.SetOutbound(std::move(spec)); }
void Dataplane::ClearOutbound(policy::PolicyId policy, std::uint32_t spi) {
  paths_.ClearOutbound(policy, spi);
}
void Dataplane::MovePeer(const std::vector<std::uint32_t>& spis_in,
                         const std::vector<std::uint32_t>& spis_out, const io::Endpoint& peer,
                         const io::IpAddress& source) {
  paths_.MovePeer(spis_in, spis_out, peer, source);
}
void Dataplane::AcquireFailed(policy::PolicyId policy) { paths_.AcquireFailed(policy); }

void Dataplane::RouteVirtualIp(const std::string& connection, policy::Family family,
                               std::span<const std::uint8_t> source) {
  auto it = vip_remote_ts_.find(connection);
  if (it == vip_remote_ts_.end()) return;
  const int af = family == policy::Family::kIpv4 ? AF_INET : AF_INET6;
  for (const auto& remote : it->second) {
    if ((remote.family == config::AddressFamily::kIpv4) != (family == policy::Family::kIpv4))
      continue;
    const std::span<const std::uint8_t> dst{remote.network.data(), remote.address_length()};
    std::string error;
    const bool ok =
        source.empty()
            ? netlink_->DeleteRoute(tun_->ifindex(), af, dst, remote.prefix_len, &error)
            : netlink_->ReplaceRoute(tun_->ifindex(), af, dst, remote.prefix_len, source, &error);
    if (!ok) spdlog::warn("{}: virtual IP routes: {}", connection, error);
  }
}

void Dataplane::AddVirtualIp(const std::string& connection, const policy::Prefix& address) {
  auto& held = virtual_ips_[connection];
  if (std::find(held.begin(), held.end(), address) != held.end()) return;
  held.push_back(address);
  const std::size_t n = policy::AddressLength(address.family);
  const std::span<const std::uint8_t> bytes{address.address.data(), n};
  const int af = address.family == policy::Family::kIpv4 ? AF_INET : AF_INET6;
  std::string error;
  if (!netlink_->AddAddress(tun_->ifindex(), af, bytes, static_cast<int>(n * 8), &error)) {
    spdlog::warn("{}: virtual IP {}: {}", connection, address.ToString(), error);
    return;
  }
  RouteVirtualIp(connection, address.family, bytes);
  spdlog::info("{}: virtual IP {} on {}", connection, address.ToString(), tun_->name());
}

void Dataplane::RemoveVirtualIp(const std::string& connection, const policy::Prefix& address) {
  auto it = virtual_ips_.find(connection);
  if (it == virtual_ips_.end()) return;
  auto& held = it->second;
  auto at = std::find(held.begin(), held.end(), address);
  if (at == held.end()) return;
  held.erase(at);
  // The routes take the connection's next address of the family as their source, if any.
  std::span<const std::uint8_t> next;
  for (const auto& other : held) {
    if (other.family == address.family) {
      next = {other.address.data(), policy::AddressLength(other.family)};
      break;
    }
  }
  RouteVirtualIp(connection, address.family, next);
  if (held.empty()) virtual_ips_.erase(it);
  for (const auto& [name, addresses] : virtual_ips_) {
    if (std::find(addresses.begin(), addresses.end(), address) != addresses.end()) return;
  }
  const std::size_t n = policy::AddressLength(address.family);
  const int af = address.family == policy::Family::kIpv4 ? AF_INET : AF_INET6;
  std::string error;
  if (!netlink_->DeleteAddress(tun_->ifindex(), af, {address.address.data(), n},
                               static_cast<int>(n * 8), &error))
    spdlog::warn("{}: virtual IP {}: {}", connection, address.ToString(), error);
  else
    spdlog::info("{}: virtual IP {} removed from {}", connection, address.ToString(), tun_->name());
}

nlohmann::json Dataplane::Hang(const std::string& thread, std::int64_t seconds) {
  std::size_t index = 0;
  const auto [end, ec] = std::from_chars(thread.data(), thread.data() + thread.size(), index);
  if (thread.empty() || ec != std::errc() || end != thread.data() + thread.size() ||
      index >= workers_.size())
    return {{"error", "hang: THREAD must be a data-path thread, 0 to " +
                          std::to_string(workers_.size() - 1) + ", got \"" + thread + "\""}};
  if (seconds < 1 || seconds > kMaxHang)
    return {{"error", "hang: SECONDS must be 1 to " + std::to_string(kMaxHang) + ", got " +
                          std::to_string(seconds)}};
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  workers_[index]->hang_until.store(until.time_since_epoch().count());
  spdlog::warn("debug hang: data-path thread {} stops for {} s (test hook)", thread, seconds);
  return {{"ok", true}, {"message", "data-path thread " + thread + " hangs for " + std::to_string(seconds) + " s"}};
}

void Dataplane::HoldIfHung(Worker& w) {
  while (!stop_ && std::chrono::steady_clock::now().time_since_epoch().count() <
                       w.hang_until.load(std::memory_order_relaxed)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void Dataplane::Tick() { paths_.Tick(); }

nlohmann::json Dataplane::BoundsStats() const {
  // The fullest thread's mailboxes and inbox.
  std::size_t in = 0, out = 0, handoff = 0;
  std::uint64_t handoff_dropped = 0;
  for (const auto& w : workers_) {
    in = std::max(in, w->inbound->mailbox_depth());
    out = std::max(out, w->outbound->mailbox_depth());
    if (!w->inbox) continue;
    handoff = std::max(handoff, w->inbox->depth());
    handoff_dropped += w->inbox->dropped();
  }
  return {{"dataplane_mailbox", {{"limit", bounds::kDataplaneMailbox}, {"in_use", std::max(in, out)},
                                 {"inbound", in}, {"outbound", out}}},
          {"dataplane_backlog",
           {{"limit", bounds::kDataplaneBacklog}, {"in_use", paths_.backlog()}, {"peak", paths_.backlog_peak()}}},
          {"handoff", {{"limit", bounds::kHandoffQueue}, {"in_use", handoff}, {"dropped", handoff_dropped}}}};
}

class Dataplane::TunQueueWriter final : public io::TunWriter {
 public:
  TunQueueWriter(io::TunDevice& tun, datapath::Counters& counters) : tun_(tun), counters_(counters) {}
  bool Write(const io::VirtioNetHdr& hdr, std::span<const std::uint8_t> packet) override {
    if (tun_.WriteFrame(FlowQueue(packet, tun_.queues()), hdr, packet)) return true;
    // A super-segment the kernel refused is resent as its segments (counted as a fallback).
    if (errno != EINVAL || hdr.gso_type == io::VirtioNetHdr::kGsoNone)
      counters_.tun_write_failed.fetch_add(1, std::memory_order_relaxed);
    return false;
  }

 private:
  io::TunDevice& tun_;
  datapath::Counters& counters_;
};

// One data-path thread: its TUN queue -> seal -> its UDP socket, and its UDP socket (plus the
// datagrams other threads hand it) -> open -> its TUN queue. The directions take turns batch
// by batch, so a burst one way cannot starve the other.
void Dataplane::Run(Worker& w) {
  crypto::ImbManager& mgr = crypto::ImbManager::ForThisThread();
  auto reader = spd_.RegisterReader();
  const int queue = static_cast<int>(w.index);
  io::UdpSocket& sock = *w.socket;
  datapath::OutboundPath& outbound = *w.outbound;
  datapath::InboundPath& inbound = *w.inbound;
  constexpr auto kRelaxed = std::memory_order_relaxed;
  const bool offload = tun_->vnet_hdr();

  // ---- outbound state
  // With TUN offloads a read may hold a 64 KiB super-segment: its segments fill up to
  // kOffloadSlots slots (one UDP SendBatch, so GSO sees the whole run), and a frame still
  // being split waits in `frame` for the next batch.
  const std::size_t out_slot_count = offload ? kOffloadSlots : kBatch;
  std::vector<std::uint8_t> out_memory(kOffloadSlots * kBufSize);
  std::array<io::PacketSlot, kOffloadSlots> out_slots;
  std::array<io::SendItem, kOffloadSlots> sends;
  std::vector<std::uint8_t> frame(offload ? kTunFrameSize : 0);
  io::GsoSplitter splitter(tun_offload_);
  constexpr std::size_t kSlotRoom = kBufSize - kHead - esp::kSealTailroom;
  // Fills the slots from the TUN; returns how many, and whether it may hold more.
  const auto read_frames = [&](bool& more) {
    std::size_t filled = 0;
    for (;;) {
      while (splitter.remaining() > 0 && filled < out_slot_count) {
        out_slots[filled].length = splitter.Next(out_slots[filled].buffer);
        out_slots[filled].truncated = false;
        ++filled;
      }
      if (filled == out_slot_count) {
        more = true;
        return filled;
      }
      std::size_t got = 0;
      if (!tun_->ReadFrame(queue, frame, got)) {
        more = false;
        return filled;
      }
      if (got == frame.size()) {
        counters_.malformed.fetch_add(1, kRelaxed);  // may have lost its tail
        continue;
      }
      splitter.Start(std::span(frame).first(got), kSlotRoom);  // false: dropped, counted
    }
  };
  std::size_t n = 0;
  const auto flush_sends = [&] {
    for (std::size_t sent = 0; sent < n;) {
      const io::BatchResult s = sock.SendBatch({sends.data() + sent, n - sent});
      sent += s.count;
      w.tx.fetch_add(s.count, kRelaxed);
      if (s.error != 0 && sent < n) {
        counters_.send_failed.fetch_add(1, kRelaxed);  // skip the failed one
        ++sent;
      }
    }
    n = 0;
  };
  const datapath::OutboundPath::SendFn send_one = [&](const datapath::Route& to,
                                                      std::span<const std::uint8_t> d) {
    if (sock.SendTo(to.peer, d, to.source))
      w.tx.fetch_add(1, kRelaxed);
    else
      counters_.send_failed.fetch_add(1, kRelaxed);
  };
  // Sealed by the crypto engine, in TUN order; the bytes live in the pipeline's slots until
  // the next Process(), so the batch goes out before the next read.
  const datapath::OutboundPath::SendFn send_sealed = [&](const datapath::Route& to,
                                                         std::span<const std::uint8_t> d) {
    sends[n++] = io::SendItem{to.peer, d, to.source};
    if (n == sends.size()) flush_sends();
  };
  engine::CryptoPipeline* out_pipe = outbound.pipeline();

  // ---- inbound state
  constexpr std::size_t kDatagram = datapath::Handoff::kMaxDatagram;
  const std::size_t in_slot_count = sock.gro() ? kGroSlots : kBatch;
  const std::size_t in_slot_size = sock.gro() ? io::UdpSocket::kGroBufferSize : kDatagram;
  std::vector<std::uint8_t> in_memory(in_slot_count * in_slot_size);
  std::array<io::RecvSlot, kBatch> in_slots;
  // With TUN offloads, opened TCP segments of a flow go to the TUN as one super-segment, and
  // UDP datagrams of a flow too where the device took USO (GroCoalescer); whatever it holds is
  // written at the end of each batch.
  TunQueueWriter writer(*tun_, counters_);
  std::unique_ptr<io::GroCoalescer> gro;
  if (offload) {
    gro = std::make_unique<io::GroCoalescer>(tun_offload_, (tun_->offloads() & io::TunDevice::kOffloadUso4) != 0,
                                             (tun_->offloads() & io::TunDevice::kOffloadUso6) != 0);
  }
  const datapath::InboundPath::DeliverFn deliver = [&](std::span<const std::uint8_t> inner) {
    w.rx.fetch_add(1, kRelaxed);
    if (gro) {
      gro->Add(inner, writer);
    } else if (!tun_->Write(FlowQueue(inner, tun_->queues()), inner)) {
      counters_.tun_write_failed.fetch_add(1, kRelaxed);
    }
  };
  // Threads whose inbox this batch pushed to, woken once at its end.
  std::vector<bool> to_wake(workers_.size(), false);
  bool any_to_wake = false;
  // Serves this thread's own inbox (defined below): also while it waits for room in another's.
  std::function<bool(std::chrono::steady_clock::time_point)> serve_inbox;
  // A datagram for the SA's owner; false if it had to be dropped (counted).
  const auto hand_over = [&](std::size_t owner, std::span<const std::uint8_t> datagram,
                             const io::Endpoint& from, const io::IpAddress& to) {
    datapath::Handoff& inbox = *workers_[owner]->inbox;
    datapath::Handoff::Push r = inbox.TryPush(datagram, from, to);
    if (r == datapath::Handoff::Push::kFull) {
      // The owner is behind: wake it now, and make room in our own inbox meanwhile (it may be
      // waiting on us).
      inbox.Wake();
      const auto deadline = std::chrono::steady_clock::now() + datapath::Handoff::kFullWait;
      while (r == datapath::Handoff::Push::kFull && !stop_) {
        const auto now = std::chrono::steady_clock::now();
        if (now >= deadline) break;
        // Asleep, not spinning: on a busy machine the owner needs the CPU to make room.
        if (!serve_inbox(now)) std::this_thread::sleep_for(std::chrono::microseconds(50));
        r = inbox.TryPush(datagram, from, to);
      }
      if (r == datapath::Handoff::Push::kFull) inbox.CountDrop();
    }
    if (r != datapath::Handoff::Push::kOk) return false;
    w.handed_over.fetch_add(1, kRelaxed);
    to_wake[owner] = true;
    any_to_wake = true;
    return true;
  };
  // One datagram: ESP of an SA another thread owns (handed over), ESP of ours, or IKE behind
  // the non-ESP marker.
  const auto dispatch = [&](std::span<std::uint8_t> datagram, const io::Endpoint& from,
                            const io::IpAddress& to, std::chrono::steady_clock::time_point now) {
    if (workers_.size() > 1 && datagram.size() >= 8) {
      std::uint32_t spi = 0;
      esp::PeekSpi(datagram, spi);
      const std::size_t owner = datapath::OwnerOf(spi, workers_.size());
      if (spi != 0 && owner != w.index) {  // 0: the non-ESP marker, IKE
        hand_over(owner, datagram, from, to);
        return;
      }
    }
    esp::PacketView pkt{datagram, 0, datagram.size()};
    std::span<const std::uint8_t> ike;
    switch (inbound.Process(mgr, *reader, pkt, ike, now, from)) {
      case datapath::InboundPath::Verdict::kDeliver:
        deliver(pkt.bytes());
        break;
      case datapath::InboundPath::Verdict::kIke: {
        // To the control thread; its Post() queue is bounded and refusals are counted.
        auto copy = std::make_shared<std::vector<std::uint8_t>>(ike.begin(), ike.end());
        if (loop_.Post([this, copy, from, to] { hooks_.ike(*copy, from, to); }))
          ike_forwarded_.fetch_add(1, kRelaxed);
        else
          counters_.ike_forward_refused.fetch_add(1, kRelaxed);
        break;
      }
      case datapath::InboundPath::Verdict::kDrop:
      case datapath::InboundPath::Verdict::kQueued:
        break;
    }
  };
  engine::CryptoPipeline* in_pipe = inbound.pipeline();
  // The packets dispatched so far: opened (multi-buffer, engine) before their buffers are reused.
  const auto finish_inbound = [&](std::chrono::steady_clock::time_point& now) {
    inbound.FinishBatch(mgr, *reader, deliver);
    if (in_pipe) {
      inbound.FlushCrypto(mgr);
      now = std::chrono::steady_clock::now();
      inbound.PollCrypto(mgr, *reader, now, deliver);
    }
  };
  const auto wake_owners = [&] {
    if (!any_to_wake) return;
    for (std::size_t i = 0; i < to_wake.size(); ++i) {
      if (to_wake[i]) workers_[i]->inbox->Wake();
      to_wake[i] = false;
    }
    any_to_wake = false;
  };

  // One batch from the TUN, sealed and sent; true if the TUN may hold more.
  const auto outbound_batch = [&](std::chrono::steady_clock::time_point now) {
    outbound.ApplyCommands(mgr, send_one);
    for (std::size_t i = 0; i < out_slot_count; ++i)
      out_slots[i] = io::PacketSlot{{out_memory.data() + i * kBufSize + kHead, kSlotRoom}};
    bool more = false;
    io::BatchResult r;
    if (offload) {
      r.count = read_frames(more);
    } else {
      r = tun_->ReadBatch(queue, {out_slots.data(), out_slot_count});
      more = r.count == out_slot_count;
    }
    for (std::size_t i = 0; i < r.count; ++i) {
      if (out_slots[i].truncated) {
        counters_.malformed.fetch_add(1, kRelaxed);
        continue;
      }
      esp::PacketView pkt{{out_memory.data() + i * kBufSize, kBufSize}, kHead, out_slots[i].length};
      const datapath::Route* route = nullptr;
      if (outbound.Process(mgr, *reader, pkt, route, now) == datapath::OutboundPath::Verdict::kSend)
        sends[n++] = io::SendItem{route->peer, pkt.bytes(), route->source};
    }
    // CBC + HMAC packets of this batch, sealed together (multi-buffer), into the same send.
    outbound.FinishBatch(mgr, send_sealed);
    flush_sends();
    if (out_pipe) {
      outbound.FlushCrypto(mgr);
      outbound.PollCrypto(mgr, std::chrono::steady_clock::now(), send_sealed);
      flush_sends();
    }
    return more;
  };
  // One batch from the UDP socket; true if it may hold more.
  const auto inbound_batch = [&](std::chrono::steady_clock::time_point now) {
    // Before every batch: an SA installed before its IKE message left must be in place
    // before any packet that message causes (make-before-break).
    inbound.ApplyCommands();
    for (std::size_t i = 0; i < in_slot_count; ++i)
      in_slots[i] = io::RecvSlot{{in_memory.data() + i * in_slot_size, in_slot_size}};
    const io::BatchResult r = sock.RecvBatch({in_slots.data(), in_slot_count});
    std::size_t unflushed = 0;
    for (std::size_t i = 0; i < r.count; ++i) {
      if (in_slots[i].truncated) {
        counters_.malformed.fetch_add(1, kRelaxed);
        continue;
      }
      // A GRO buffer holds datagrams of one flow: each is dispatched as if received alone.
      const std::size_t count = io::DatagramCount(in_slots[i]);
      for (std::size_t k = 0; k < count; ++k)
        dispatch(io::Datagram(in_slots[i], k), in_slots[i].peer, in_slots[i].local, now);
      // GRO slots hold up to 64 datagrams each: the engine (or the multi-buffer batch) gets
      // them kBatch or so at a time, as without GRO, so that its ring (kCryptoRing) fills no
      // sooner.
      unflushed += count;
      if (unflushed >= kBatch) {
        finish_inbound(now);
        unflushed = 0;
      }
    }
    // CBC + HMAC packets opened together (multi-buffer), before the buffers are reused.
    finish_inbound(now);
    if (gro) gro->Flush(writer);
    wake_owners();
    return r.count == in_slot_count;
  };
  // The datagrams other threads handed over, opened in their inbox cells; true if it may hold
  // more.
  bool serving = false;
  serve_inbox = [&](std::chrono::steady_clock::time_point now) {
    if (workers_.size() <= 1 || serving) return false;
    // Its datagrams are ours: dispatch() hands none of them over, so it never waits in here.
    serving = true;
    const std::size_t got = w.inbox->Peek(kBatch, [&](datapath::Handoff::Item& item) {
      dispatch(item.datagram(), item.from, item.to, now);
    });
    if (got != 0) {
      finish_inbound(now);
      if (gro) gro->Flush(writer);
      w.inbox->Release();
    }
    serving = false;
    return got == kBatch;
  };

  pollfd fds[7] = {{tun_->queue_fd(queue), POLLIN, 0},
                   {sock.fd(), POLLIN, 0},
                   {outbound.mailbox_fd(), POLLIN, 0},
                   {inbound.mailbox_fd(), POLLIN, 0},
                   {out_pipe ? out_pipe->signal_fd() : -1, POLLIN, 0},
                   {in_pipe ? in_pipe->signal_fd() : -1, POLLIN, 0},
                   {w.inbox ? w.inbox->fd() : -1, POLLIN, 0}};
  auto last_expire = std::chrono::steady_clock::now();
  auto last_release = last_expire;
  while (!stop_) {
    HoldIfHung(w);
    // With jobs in flight the wait ends by the oldest one's deadline, so the watchdog fires
    // on time even when no packet and no completion arrives.
    int timeout = kPollMs;
    for (engine::CryptoPipeline* pipe : {out_pipe, in_pipe}) {
      if (pipe == nullptr) continue;
      const int wait = pipe->WaitMs(std::chrono::steady_clock::now());
      if (wait >= 0 && wait < timeout) timeout = wait;
    }
    poll(fds, 7, timeout);
    if ((fds[6].revents & POLLIN) != 0) w.inbox->ClearWake();
    auto now = std::chrono::steady_clock::now();
    if (w.beat != nullptr) w.beat->Now(now);
    if (now - last_expire > std::chrono::seconds(1)) {
      outbound.ExpireAcquires(now);
      last_expire = now;
    }
    if (now - last_release >= datapath::kIdleKeysPeriod) {
      outbound.ReleaseIdleKeys();
      inbound.ReleaseIdleKeys();
      last_release = now;
    }
    if (monitor_) monitor_->Tick(now);
    outbound.PollCrypto(mgr, now, send_sealed);
    flush_sends();
    inbound.PollCrypto(mgr, *reader, now, deliver);
    for (;;) {
      // The inbox between the two: other threads wait on it when it is full.
      const bool more_out = outbound_batch(now);
      now = std::chrono::steady_clock::now();
      bool more_handed = serve_inbox(now);
      const bool more_in = inbound_batch(now);
      more_handed = serve_inbox(now) || more_handed;
      if (!more_out && !more_in && !more_handed) break;
      // A long burst is progress too: the watchdog must not take it for a wedged thread.
      now = std::chrono::steady_clock::now();
      if (w.beat != nullptr) w.beat->Now(now);
    }
  }
}

}  // namespace spigot::app
