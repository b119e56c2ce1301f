#include "spigot/app/dataplane.h"

#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

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

}  // namespace

std::unique_ptr<Dataplane> Dataplane::Create(const config::GlobalConfig& global,
                                             const io::UdpSocket& ike_socket,
                                             io::UdpSocket& natt_socket,
                                             io::EventLoop& control_loop, Hooks hooks,
                                             std::string* error, io::ProgressWatch* progress) {
  std::unique_ptr<Dataplane> d(
      new Dataplane(ike_socket, natt_socket, control_loop, std::move(hooks)));
  // Both offloads are optional: refused, UDP 4500 works as without them.
  if (global.udp_offload) {
    const bool gso = natt_socket.EnableGso();
    const bool gro = natt_socket.EnableGro();
    spdlog::info("UDP {}: GSO {}, GRO {}", natt_socket.local_endpoint().port(),
                 gso ? "on" : "off (not in this kernel)", gro ? "on" : "off (not in this kernel)");
  } else {
    spdlog::info("UDP {}: GSO and GRO off (global.udp_offload = false)",
                 natt_socket.local_endpoint().port());
  }
  d->tun_offload_enabled_ = global.tun_offload;
  d->tun_ = io::TunDevice::Open(global.tun_name, 1, error,
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
  d->inbound_ = std::make_unique<datapath::InboundPath>(d->counters_, d->spd_);
  d->outbound_ = std::make_unique<datapath::OutboundPath>(
      d->counters_, d->spd_,
      [self](policy::PolicyId id) {
        return self->loop_.Post([self, id] { self->hooks_.acquire(id); });
      },
      [self](policy::PolicyId id, std::uint32_t spi) {
        self->loop_.Post([self, id, spi] { self->hooks_.exhausted(id, spi); });
      });
  d->inbound_->OnFirstPacket([self](std::uint32_t spi) {
    if (!self->loop_.Post([self, spi] {
          if (self->hooks_.first_packet) self->hooks_.first_packet(spi);
        }))
      self->counters_.first_packet_refused.fetch_add(1, std::memory_order_relaxed);
  });
  d->inbound_->OnNewSource([self](std::uint32_t spi, const io::Endpoint& from) {
    if (self->loop_.Post([self, spi, from] {
          if (self->hooks_.new_source) self->hooks_.new_source(spi, from);
        }))
      return true;
    self->counters_.new_source_refused.fetch_add(1, std::memory_order_relaxed);
    return false;
  });
  if (d->monitor_) {
    d->inbound_->UseEngine(*d->monitor_, kCryptoRing);
    d->outbound_->UseEngine(*d->monitor_, kCryptoRing);
  }
  if (progress != nullptr) {
    const auto now = std::chrono::steady_clock::now();
    d->outbound_beat_ = &progress->Register("datapath-outbound", now);
    d->inbound_beat_ = &progress->Register("datapath-inbound", now);
  }
  d->outbound_thread_ = std::thread([self] { self->OutboundThread(); });
  d->inbound_thread_ = std::thread([self] { self->InboundThread(); });
  return d;
}

Dataplane::~Dataplane() {
  stop_ = true;
  if (outbound_thread_.joinable()) outbound_thread_.join();
  if (inbound_thread_.joinable()) inbound_thread_.join();
  if (engine_) engine_->Stop();
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
  const io::UdpOffloadCounters& c = natt_.offload_counters();
  return {{"gso", natt_.gso()},
          {"gro", natt_.gro()},
          {"gso_sends", c.gso_sends.load()},
          {"gso_segments", c.gso_segments.load()},
          {"gso_fallbacks", c.gso_fallbacks.load()},
          {"gro_batches", c.gro_batches.load()},
          {"gro_segments", c.gro_segments.load()}};
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
  k.udp_natt = socket(natt_);
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
    const bool trap = c.start_action == config::StartAction::kTrap;
    Retry([this, id = it->second, trap] { return outbound_->SetTrap(id, trap); });
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

void Dataplane::InstallInbound(datapath::InboundSpec spec) {
  auto shared = std::make_shared<datapath::InboundSpec>(std::move(spec));
  Retry([this, shared] { return inbound_->Install(*shared); });
}
void Dataplane::RemoveInbound(std::uint32_t spi) {
  Retry([this, spi] { return inbound_->Remove(spi); });
}
void Dataplane::SetOutbound(datapath::OutboundSpec spec) {
  auto shared = std::make_shared<datapath::OutboundSpec>(std::move(spec));
  Retry([this, shared] { return outbound_->SetSa(*shared); });
}
void Dataplane::ClearOutbound(policy::PolicyId policy, std::uint32_t spi) {
  Retry([this, policy, spi] { return outbound_->ClearSa(policy, spi); });
}
void Dataplane::MovePeer(const std::vector<std::uint32_t>& spis_in,
                         const std::vector<std::uint32_t>& spis_out, const io::Endpoint& peer,
                         const io::IpAddress& source) {
  Retry([this, spis_out, peer, source] { return outbound_->MovePeer(spis_out, peer, source); });
  Retry([this, spis_in, peer] { return inbound_->MovePeer(spis_in, peer); });
}
void Dataplane::AcquireFailed(policy::PolicyId policy) {
  Retry([this, policy] { return outbound_->AcquireFailed(policy); });
}

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
  if (thread != "outbound" && thread != "inbound")
    return {{"error", "hang: THREAD must be \"outbound\" or \"inbound\", got \"" + thread + "\""}};
  if (seconds < 1 || seconds > kMaxHang)
    return {{"error", "hang: SECONDS must be 1 to " + std::to_string(kMaxHang) + ", got " +
                          std::to_string(seconds)}};
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  hang_until_[thread == "outbound" ? 0 : 1].store(until.time_since_epoch().count());
  spdlog::warn("debug hang: data-path thread {} stops for {} s (test hook)", thread, seconds);
  return {{"ok", true}, {"message", "data-path thread " + thread + " hangs for " + std::to_string(seconds) + " s"}};
}

void Dataplane::HoldIfHung(int thread) {
  while (!stop_ && std::chrono::steady_clock::now().time_since_epoch().count() <
                       hang_until_[thread].load(std::memory_order_relaxed)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void Dataplane::Tick() {
  // In order, up to the first command the mailboxes still refuse: a removal must not overtake
  // the install it undoes.
  std::size_t done = 0;
  while (done < retries_.size() && retries_[done]()) ++done;
  retries_.erase(retries_.begin(), retries_.begin() + static_cast<std::ptrdiff_t>(done));
}

nlohmann::json Dataplane::BoundsStats() const {
  const std::size_t in = inbound_ ? inbound_->mailbox_depth() : 0;
  const std::size_t out = outbound_ ? outbound_->mailbox_depth() : 0;
  return {{"dataplane_mailbox", {{"limit", bounds::kDataplaneMailbox}, {"in_use", std::max(in, out)},
                                 {"inbound", in}, {"outbound", out}}},
          {"dataplane_backlog",
           {{"limit", bounds::kDataplaneBacklog}, {"in_use", retries_.size()}, {"peak", backlog_peak_}}}};
}

void Dataplane::OutboundThread() {
  crypto::ImbManager& mgr = crypto::ImbManager::ForThisThread();
  auto reader = spd_.RegisterReader();
  // With TUN offloads a read may hold a 64 KiB super-segment: its segments fill up to
  // kOffloadSlots slots (one UDP SendBatch, so GSO sees the whole run), and a frame still
  // being split waits in `frame` for the next batch.
  const bool offload = tun_->vnet_hdr();
  const std::size_t slot_count = offload ? kOffloadSlots : kBatch;
  std::vector<std::uint8_t> memory(kOffloadSlots * kBufSize);
  std::array<io::PacketSlot, kOffloadSlots> slots;
  std::array<io::SendItem, kOffloadSlots> sends;
  std::vector<std::uint8_t> frame(offload ? kTunFrameSize : 0);
  io::GsoSplitter splitter(tun_offload_);
  constexpr std::size_t kSlotRoom = kBufSize - kHead - esp::kSealTailroom;
  // Fills the slots from the TUN; returns how many, and whether it may hold more.
  const auto read_frames = [&](bool& more) {
    std::size_t filled = 0;
    for (;;) {
      while (splitter.remaining() > 0 && filled < slot_count) {
        slots[filled].length = splitter.Next(slots[filled].buffer);
        slots[filled].truncated = false;
        ++filled;
      }
      if (filled == slot_count) {
        more = true;
        return filled;
      }
      std::size_t got = 0;
      if (!tun_->ReadFrame(0, frame, got)) {
        more = false;
        return filled;
      }
      if (got == frame.size()) {
        counters_.malformed.fetch_add(1, std::memory_order_relaxed);  // may have lost its tail
        continue;
      }
      splitter.Start(std::span(frame).first(got), kSlotRoom);  // false: dropped, counted
    }
  };
  std::size_t n = 0;
  const auto flush_sends = [&] {
    for (std::size_t sent = 0; sent < n;) {
      const io::BatchResult s = natt_.SendBatch({sends.data() + sent, n - sent});
      sent += s.count;
      if (s.error != 0 && sent < n) {
        counters_.send_failed.fetch_add(1, std::memory_order_relaxed);  // skip the failed one
        ++sent;
      }
    }
    n = 0;
  };
  const datapath::OutboundPath::SendFn send_one = [this](const datapath::Route& to,
                                                         std::span<const std::uint8_t> d) {
    if (!natt_.SendTo(to.peer, d, to.source))
      counters_.send_failed.fetch_add(1, std::memory_order_relaxed);
  };
  // Sealed by the crypto engine, in TUN order; the bytes live in the pipeline's slots until
  // the next Process(), so the batch goes out before the next read.
  const datapath::OutboundPath::SendFn send_sealed = [&](const datapath::Route& to,
                                                         std::span<const std::uint8_t> d) {
    sends[n++] = io::SendItem{to.peer, d, to.source};
    if (n == sends.size()) flush_sends();
  };
  engine::CryptoPipeline* pipe = outbound_->pipeline();
  pollfd fds[3] = {{tun_->queue_fd(0), POLLIN, 0},
                   {outbound_->mailbox_fd(), POLLIN, 0},
                   {pipe ? pipe->signal_fd() : -1, POLLIN, 0}};
  auto last_expire = std::chrono::steady_clock::now();
  auto last_release = last_expire;
  auto now = last_expire;
  while (!stop_) {
    HoldIfHung(0);
    // With jobs in flight the wait ends by the oldest one's deadline, so the watchdog fires
    // on time even when no packet and no completion arrives.
    int timeout = kPollMs;
    if (pipe) {
      const int w = pipe->WaitMs(std::chrono::steady_clock::now());
      if (w >= 0 && w < timeout) timeout = w;
    }
    poll(fds, 3, timeout);
    now = std::chrono::steady_clock::now();
    if (outbound_beat_ != nullptr) outbound_beat_->Now(now);
    if (now - last_expire > std::chrono::seconds(1)) {
      outbound_->ExpireAcquires(now);
      last_expire = now;
    }
    if (now - last_release >= datapath::kIdleKeysPeriod) {
      outbound_->ReleaseIdleKeys();
      last_release = now;
    }
    if (monitor_) monitor_->Tick(now);
    outbound_->PollCrypto(mgr, now, send_sealed);
    flush_sends();
    for (;;) {
      outbound_->ApplyCommands(mgr, send_one);
      for (std::size_t i = 0; i < slot_count; ++i)
        slots[i] = io::PacketSlot{{memory.data() + i * kBufSize + kHead, kSlotRoom}};
      bool more = false;
      io::BatchResult r;
      if (offload) {
        r.count = read_frames(more);
      } else {
        r = tun_->ReadBatch(0, {slots.data(), slot_count});
        more = r.count == slot_count;
      }
      for (std::size_t i = 0; i < r.count; ++i) {
        if (slots[i].truncated) {
          counters_.malformed.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        esp::PacketView pkt{{memory.data() + i * kBufSize, kBufSize}, kHead, slots[i].length};
        const datapath::Route* route = nullptr;
        if (outbound_->Process(mgr, *reader, pkt, route, now) == datapath::OutboundPath::Verdict::kSend)
          sends[n++] = io::SendItem{route->peer, pkt.bytes(), route->source};
      }
      // CBC + HMAC packets of this batch, sealed together (multi-buffer), into the same send.
      outbound_->FinishBatch(mgr, send_sealed);
      flush_sends();
      if (pipe) {
        outbound_->FlushCrypto(mgr);
        now = std::chrono::steady_clock::now();
        outbound_->PollCrypto(mgr, now, send_sealed);
        flush_sends();
      }
      if (!more) break;
      // A long burst is progress too: the watchdog must not take it for a wedged thread.
      if (outbound_beat_ != nullptr) outbound_beat_->Now(std::chrono::steady_clock::now());
    }
  }
}

class Dataplane::TunQueueWriter final : public io::TunWriter {
 public:
  TunQueueWriter(io::TunDevice& tun, datapath::Counters& counters) : tun_(tun), counters_(counters) {}
  bool Write(const io::VirtioNetHdr& hdr, std::span<const std::uint8_t> packet) override {
    if (tun_.WriteFrame(0, hdr, packet)) return true;
    // A super-segment the kernel refused is resent as its segments (counted as a fallback).
    if (errno != EINVAL || hdr.gso_type == io::VirtioNetHdr::kGsoNone)
      counters_.tun_write_failed.fetch_add(1, std::memory_order_relaxed);
    return false;
  }

 private:
  io::TunDevice& tun_;
  datapath::Counters& counters_;
};

void Dataplane::InboundThread() {
  crypto::ImbManager& mgr = crypto::ImbManager::ForThisThread();
  auto reader = spd_.RegisterReader();
  constexpr std::size_t kDatagram = 4096;
  const std::size_t slot_count = natt_.gro() ? kGroSlots : kBatch;
  const std::size_t slot_size = natt_.gro() ? io::UdpSocket::kGroBufferSize : kDatagram;
  std::vector<std::uint8_t> memory(slot_count * slot_size);
  std::array<io::RecvSlot, kBatch> slots;
  // With TUN offloads, opened TCP segments of a flow go to the TUN as one super-segment
  // (GroCoalescer); whatever it holds is written at the end of each batch.
  const bool offload = tun_->vnet_hdr();
  TunQueueWriter writer(*tun_, counters_);
  std::unique_ptr<io::GroCoalescer> gro;
  if (offload) gro = std::make_unique<io::GroCoalescer>(tun_offload_);
  const datapath::InboundPath::DeliverFn deliver = [&](std::span<const std::uint8_t> inner) {
    if (gro) {
      gro->Add(inner, writer);
    } else if (!tun_->Write(0, inner)) {
      counters_.tun_write_failed.fetch_add(1, std::memory_order_relaxed);
    }
  };
  // One datagram: ESP, or IKE behind the non-ESP marker.
  const auto dispatch = [&](std::span<std::uint8_t> datagram, const io::Endpoint& from,
                            const io::IpAddress& to, std::chrono::steady_clock::time_point now) {
    esp::PacketView pkt{datagram, 0, datagram.size()};
    std::span<const std::uint8_t> ike;
    switch (inbound_->Process(mgr, *reader, pkt, ike, now, from)) {
      case datapath::InboundPath::Verdict::kDeliver:
        deliver(pkt.bytes());
        break;
      case datapath::InboundPath::Verdict::kIke: {
        // To the control thread; its Post() queue is bounded and refusals are counted.
        auto copy = std::make_shared<std::vector<std::uint8_t>>(ike.begin(), ike.end());
        if (loop_.Post([this, copy, from, to] { hooks_.ike(*copy, from, to); }))
          ike_forwarded_.fetch_add(1, std::memory_order_relaxed);
        else
          counters_.ike_forward_refused.fetch_add(1, std::memory_order_relaxed);
        break;
      }
      case datapath::InboundPath::Verdict::kDrop:
      case datapath::InboundPath::Verdict::kQueued:
        break;
    }
  };
  engine::CryptoPipeline* pipe = inbound_->pipeline();
  pollfd fds[3] = {{natt_.fd(), POLLIN, 0},
                   {inbound_->mailbox_fd(), POLLIN, 0},
                   {pipe ? pipe->signal_fd() : -1, POLLIN, 0}};
  auto last_release = std::chrono::steady_clock::now();
  while (!stop_) {
    HoldIfHung(1);
    int timeout = kPollMs;  // bounded by the oldest job's deadline, as on the outbound side
    if (pipe) {
      const int w = pipe->WaitMs(std::chrono::steady_clock::now());
      if (w >= 0 && w < timeout) timeout = w;
    }
    poll(fds, 3, timeout);
    auto now = std::chrono::steady_clock::now();
    if (inbound_beat_ != nullptr) inbound_beat_->Now(now);
    if (now - last_release >= datapath::kIdleKeysPeriod) {
      inbound_->ReleaseIdleKeys();
      last_release = now;
    }
    if (monitor_) monitor_->Tick(now);
    inbound_->PollCrypto(mgr, *reader, now, deliver);
    for (;;) {
      // Before every batch: an SA installed before its IKE message left must be in place
      // before any packet that message causes (make-before-break).
      inbound_->ApplyCommands();
      for (std::size_t i = 0; i < slot_count; ++i)
        slots[i] = io::RecvSlot{{memory.data() + i * slot_size, slot_size}};
      const io::BatchResult r = natt_.RecvBatch({slots.data(), slot_count});
      std::size_t unflushed = 0;
      for (std::size_t i = 0; i < r.count; ++i) {
        if (slots[i].truncated) {
          counters_.malformed.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        // A GRO buffer holds datagrams of one flow: each is dispatched as if received alone.
        const std::size_t count = io::DatagramCount(slots[i]);
        for (std::size_t k = 0; k < count; ++k)
          dispatch(io::Datagram(slots[i], k), slots[i].peer, slots[i].local, now);
        // GRO slots hold up to 64 datagrams each: the engine (or the multi-buffer batch) gets
        // them kBatch or so at a time, as without GRO, so that its ring (kCryptoRing) fills no
        // sooner.
        unflushed += count;
        if (unflushed >= kBatch) {
          inbound_->FinishBatch(mgr, *reader, deliver);
          if (pipe) {
            inbound_->FlushCrypto(mgr);
            now = std::chrono::steady_clock::now();
            inbound_->PollCrypto(mgr, *reader, now, deliver);
          }
          unflushed = 0;
        }
      }
      // CBC + HMAC packets opened together (multi-buffer), before the buffers are reused.
      inbound_->FinishBatch(mgr, *reader, deliver);
      if (pipe) {
        inbound_->FlushCrypto(mgr);
        now = std::chrono::steady_clock::now();
        inbound_->PollCrypto(mgr, *reader, now, deliver);
      }
      if (gro) gro->Flush(writer);
      if (r.count < slot_count) break;
      if (inbound_beat_ != nullptr) inbound_beat_->Now(std::chrono::steady_clock::now());
    }
  }
}

}  // namespace spigot::app
