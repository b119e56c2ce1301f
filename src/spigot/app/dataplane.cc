#include "spigot/app/dataplane.h"

#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/spdlog.h>

#include <cstring>

namespace spigot::app {
namespace {

// Inner MTU: 1500 - 20 (IPv4) - 8 (UDP) - 8 (ESP header) - 16 (largest IV) - 16 (ICV)
// - 2 (trailer) - 15 (largest CBC padding) = 1415; 1400 leaves room and matches strongSwan.
constexpr int kTunMtu = 1400;
constexpr std::size_t kBatch = 32;
// Packet buffers: the inner packet starts on a cache line, ESP grows into the headroom.
constexpr std::size_t kHead = 64;
constexpr std::size_t kBufSize = 2048 + kHead;
constexpr int kPollMs = 100;

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
                                             io::UdpSocket& natt_socket,
                                             io::EventLoop& control_loop, Hooks hooks,
                                             std::string* error) {
  std::unique_ptr<Dataplane> d(new Dataplane(natt_socket, control_loop, std::move(hooks)));
  d->tun_ = io::TunDevice::Open(global.tun_name, 1, error);
  if (!d->tun_) return nullptr;
  d->netlink_ = io::Netlink::Open(error);
  if (!d->netlink_ || !d->netlink_->SetLinkUp(d->tun_->ifindex(), kTunMtu, error)) return nullptr;
  Dataplane* self = d.get();
  d->inbound_ = std::make_unique<datapath::InboundPath>(d->counters_, d->spd_);
  d->outbound_ = std::make_unique<datapath::OutboundPath>(
      d->counters_, d->spd_,
      [self](policy::PolicyId id) {
        return self->loop_.Post([self, id] { self->hooks_.acquire(id); });
      },
      [self](policy::PolicyId id, std::uint32_t spi) {
        self->loop_.Post([self, id, spi] { self->hooks_.exhausted(id, spi); });
      });
  d->outbound_thread_ = std::thread([self] { self->OutboundThread(); });
  d->inbound_thread_ = std::thread([self] { self->InboundThread(); });
  return d;
}

Dataplane::~Dataplane() {
  stop_ = true;
  if (outbound_thread_.joinable()) outbound_thread_.join();
  if (inbound_thread_.joinable()) inbound_thread_.join();
}

policy::PolicyId Dataplane::PolicyFor(const std::string& connection) const {
  auto it = policy_ids_.find(connection);
  return it == policy_ids_.end() ? policy::kNoPolicy : it->second;
}

bool Dataplane::SetUpRoutes(const config::ConnectionConfig& c, std::string* error) {
  for (const auto& remote : c.remote_ts) {
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

bool Dataplane::ApplyConnections(const std::vector<config::ConnectionConfig>& conns,
                                 std::string* error) {
  policy::SpdBuilder b;
  for (const auto& c : conns) {
    auto [it, added] = policy_ids_.try_emplace(c.name, static_cast<policy::PolicyId>(policy_ids_.size()));
    std::vector<policy::Prefix> locals, remotes;
    for (const auto& t : c.local_ts) locals.push_back(ToPrefix(t));
    for (const auto& t : c.remote_ts) remotes.push_back(ToPrefix(t));
    b.AddCrossProduct(it->second, locals, remotes);
    if (!SetUpRoutes(c, error)) return false;
    const bool trap = c.start_action == config::StartAction::kTrap;
    Retry([this, id = it->second, trap] { return outbound_->SetTrap(id, trap); });
  }
  spd_.Publish(b.Build());
  return true;
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
void Dataplane::AcquireFailed(policy::PolicyId policy) {
  Retry([this, policy] { return outbound_->AcquireFailed(policy); });
}

void Dataplane::Tick() {
  auto pending = std::move(retries_);
  retries_.clear();
  for (auto& fn : pending) {
    if (!fn()) retries_.push_back(std::move(fn));
  }
}

void Dataplane::OutboundThread() {
  crypto::ImbManager& mgr = crypto::ImbManager::ForThisThread();
  auto reader = spd_.RegisterReader();
  std::vector<std::uint8_t> memory(kBatch * kBufSize);
  std::array<io::PacketSlot, kBatch> slots;
  std::array<io::SendItem, kBatch> sends;
  const datapath::OutboundPath::SendFn send_one = [this](const io::Endpoint& to,
                                                         std::span<const std::uint8_t> d) {
    if (!natt_.SendTo(to, d)) counters_.send_failed.fetch_add(1, std::memory_order_relaxed);
  };
  pollfd fds[2] = {{tun_->queue_fd(0), POLLIN, 0}, {outbound_->mailbox_fd(), POLLIN, 0}};
  auto last_expire = std::chrono::steady_clock::now();
  while (!stop_) {
    poll(fds, 2, kPollMs);
    const auto now = std::chrono::steady_clock::now();
    if (now - last_expire > std::chrono::seconds(1)) {
      outbound_->ExpireAcquires(now);
      last_expire = now;
    }
    for (;;) {
      outbound_->ApplyCommands(mgr, send_one);
      for (std::size_t i = 0; i < kBatch; ++i)
        slots[i] = io::PacketSlot{{memory.data() + i * kBufSize + kHead, kBufSize - kHead - esp::kSealTailroom}};
      const io::BatchResult r = tun_->ReadBatch(0, slots);
      std::size_t n = 0;
      for (std::size_t i = 0; i < r.count; ++i) {
        if (slots[i].truncated) {
          counters_.malformed.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        esp::PacketView pkt{{memory.data() + i * kBufSize, kBufSize}, kHead, slots[i].length};
        const io::Endpoint* peer = nullptr;
        if (outbound_->Process(mgr, *reader, pkt, peer, now) == datapath::OutboundPath::Verdict::kSend)
          sends[n++] = io::SendItem{*peer, pkt.bytes()};
      }
      for (std::size_t sent = 0; sent < n;) {
        const io::BatchResult s = natt_.SendBatch({sends.data() + sent, n - sent});
        sent += s.count;
        if (s.error != 0 && sent < n) {
          counters_.send_failed.fetch_add(1, std::memory_order_relaxed);  // skip the failed one
          ++sent;
        }
      }
      if (r.count < kBatch) break;
    }
  }
}

void Dataplane::InboundThread() {
  crypto::ImbManager& mgr = crypto::ImbManager::ForThisThread();
  auto reader = spd_.RegisterReader();
  constexpr std::size_t kDatagram = 4096;
  std::vector<std::uint8_t> memory(kBatch * kDatagram);
  std::array<io::RecvSlot, kBatch> slots;
  pollfd fds[2] = {{natt_.fd(), POLLIN, 0}, {inbound_->mailbox_fd(), POLLIN, 0}};
  while (!stop_) {
    poll(fds, 2, kPollMs);
    for (;;) {
      // Before every batch: an SA installed before its IKE message left must be in place
      // before any packet that message causes (make-before-break).
      inbound_->ApplyCommands();
      for (std::size_t i = 0; i < kBatch; ++i)
        slots[i] = io::RecvSlot{{memory.data() + i * kDatagram, kDatagram}};
      const io::BatchResult r = natt_.RecvBatch(slots);
      for (std::size_t i = 0; i < r.count; ++i) {
        if (slots[i].truncated) {
          counters_.malformed.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        esp::PacketView pkt{{memory.data() + i * kDatagram, kDatagram}, 0, slots[i].length};
        std::span<const std::uint8_t> ike;
        switch (inbound_->Process(mgr, *reader, pkt, ike)) {
          case datapath::InboundPath::Verdict::kDeliver:
            if (!tun_->Write(0, pkt.bytes()))
              counters_.tun_write_failed.fetch_add(1, std::memory_order_relaxed);
            break;
          case datapath::InboundPath::Verdict::kIke: {
            // To the control thread; its Post() queue is bounded and refusals are counted.
            auto copy = std::make_shared<std::vector<std::uint8_t>>(ike.begin(), ike.end());
            const io::Endpoint from = slots[i].peer;
            if (loop_.Post([this, copy, from] { hooks_.ike(*copy, from); }))
              ike_forwarded_.fetch_add(1, std::memory_order_relaxed);
            else
              counters_.ike_forward_refused.fetch_add(1, std::memory_order_relaxed);
            break;
          }
          case datapath::InboundPath::Verdict::kDrop:
            break;
        }
      }
      if (r.count < kBatch) break;
    }
  }
}

}  // namespace spigot::app
