#include "spigot/loadgen/worker.h"

#include <algorithm>
#include <cstring>

#include "spigot/crypto/random.h"
#include "spigot/esp/esp.h"
#include "spigot/ike/endpoint.h"
#include "spigot/io/clock.h"

namespace spigot::loadgen {
namespace {

using State = ike::IkeSa::State;

// RFC 3948 2.2 / RFC 7296 2.23: IKE on the NAT-T port carries a four-octet zero marker.
constexpr std::uint8_t kNonEspMarker[4] = {0, 0, 0, 0};
// Datagrams per recvmmsg, and room for one IKE message each. We offer IKE fragmentation
// (RFC 7383; ConnectionParams::fragmentation), so a responder's IKE_AUTH with a certificate
// chain comes in fragments of its fragment_size; longer datagrams are dropped.
constexpr std::size_t kRecvBatch = 32;
constexpr std::size_t kRecvBufferSize = 8192;

bool SameAddress(const io::Endpoint& a, const io::Endpoint& b) {
  const auto x = a.address_bytes(), y = b.address_bytes();
  return std::equal(x.begin(), x.end(), y.begin(), y.end());
}

}  // namespace

std::unique_ptr<Worker> Worker::Create(WorkerConfig config, std::string* error) {
  std::unique_ptr<Worker> w(new Worker(std::move(config)));
  if (!w->Init(error)) return nullptr;
  return w;
}

Worker::Worker(WorkerConfig config)
    : config_(std::move(config)),
      spis_(config_.shard, config_.shards, config_.count * kSpisPerInitiator + 64) {}

Worker::~Worker() {
  if (loop_) {
    for (const auto& s : sockets_) loop_->RemoveReader(s->fd());
  }
}

bool Worker::Init(std::string* error) {
  const auto natt = io::Endpoint::Parse(config_.target.AddressString(), config_.natt_port);
  if (!natt || config_.sockets == 0 || !config_.connection) {
    *error = "bad worker configuration";
    return false;
  }
  natt_target_ = *natt;
  loop_ = io::EventLoop::Create({}, error);
  if (!loop_) return false;
  const auto local = io::Endpoint::Parse(config_.source.AddressString(), 0);
  if (!local) {
    *error = "bad source address " + config_.source.ToString();
    return false;
  }
  std::optional<io::Endpoint> moved;
  if (config_.move_to) {
    moved = io::Endpoint::Parse(config_.move_to->AddressString(), 0);
    if (!moved || moved->family() != local->family()) {
      *error = "bad address to move to " + config_.move_to->ToString();
      return false;
    }
  }
  for (std::size_t i = 0; i < config_.sockets * (moved ? 2 : 1); ++i) {
    auto sock = io::UdpSocket::Bind(i < config_.sockets ? *local : *moved, {}, error);
    if (!sock) return false;
    if (!loop_->AddReader(sock->fd(), [this, i] { OnReadable(i); })) {
      *error = "epoll: cannot watch a socket: " + std::string(std::strerror(errno));
      return false;
    }
    sockets_.push_back(std::move(sock));
  }
  recv_buffers_.resize(kRecvBatch * kRecvBufferSize);
  initiators_.resize(config_.count);
  loop_->AddRepeatingTimer("loadgen.tick", kTickPeriod, [this] { Tick(); });
  return true;
}

void Worker::Run(ike::TimePoint start) {
  start_ = start;
  loop_->Run();
}

Progress Worker::progress() const {
  return Progress{p_started_.load(std::memory_order_relaxed),
                  p_established_.load(std::memory_order_relaxed),
                  p_failed_.load(std::memory_order_relaxed),
                  p_aborted_.load(std::memory_order_relaxed),
                  p_rekeys_.load(std::memory_order_relaxed),
                  p_traffic_pending_.load(std::memory_order_relaxed),
                  p_echo_received_.load(std::memory_order_relaxed),
                  p_moves_pending_.load(std::memory_order_relaxed)};
}

void Worker::Publish() {
  p_started_.store(results_.started, std::memory_order_relaxed);
  p_established_.store(results_.established, std::memory_order_relaxed);
  p_failed_.store(results_.failed, std::memory_order_relaxed);
  p_aborted_.store(results_.aborted, std::memory_order_relaxed);
  p_rekeys_.store(results_.rekeys_completed, std::memory_order_relaxed);
  p_traffic_pending_.store(traffic_active_.size(), std::memory_order_relaxed);
  p_echo_received_.store(results_.echo_received, std::memory_order_relaxed);
  p_moves_pending_.store(moves_pending_, std::memory_order_relaxed);
}

std::uint64_t Worker::OurSpi(const ike::IkeSa& sa) {
  return sa.role() == ike::IkeSa::Role::kInitiator ? sa.spi_i() : sa.spi_r();
}

// ---------------------------------------------------------------- timers

void Worker::Tick() {
  const ike::TimePoint now = io::DefaultClock().Now();
  if (!finishing_ && finish_requested_.load()) {
    finishing_ = true;
    finish_started_ = now;
    last_delete_progress_ = now;
  }
  if (!finishing_) StartDue(now);
  if (!finishing_ && !moved_ && move_requested_.load()) MoveAll(now);
  TrafficStep(now);
  RetireTunnels(now);
  due_.clear();
  timers_.PopDue(now, due_);
  for (const std::uint64_t spi : due_) {
    const auto it = routes_.find(spi);
    if (it == routes_.end()) continue;
    it->second.sa->Tick(now);
    Settle(spi, now);
  }
  if (finishing_) FinishStep(now);
  Publish();
}

void Worker::StartDue(ike::TimePoint now) {
  if (now < start_ || next_start_ >= config_.count) return;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double due = std::min<double>(config_.count, elapsed * config_.rate + 1);
  while (next_start_ < static_cast<std::uint32_t>(due)) StartOne(now);
}

void Worker::StartOne(ike::TimePoint now) {
  const std::uint32_t i = next_start_++;
  Initiator& ini = initiators_[i];
  std::shared_ptr<const ike::ConnectionParams> conn = config_.connection;
  if (!config_.shared_identity) {
    auto own = std::make_shared<ike::ConnectionParams>(*config_.connection);
    const std::string id = config_.id_prefix + "-" + std::to_string(config_.first_index + i);
    own->local_id = ike::Identity{ike::IdType::kFqdn, ike::Bytes(id.begin(), id.end())};
    // --eap-id user%d: each initiator is its own EAP user (user1, user2, ...).
    if (const auto at = own->eap_id.find("%d"); at != std::string::npos) {
      own->eap_id.replace(at, 2, std::to_string(config_.first_index + i));
    }
    conn = std::move(own);
  }
  ini.socket = static_cast<std::uint32_t>(i % config_.sockets);
  const std::uint64_t spi = NewIkeSpi();
  ini.sa = std::make_unique<ike::IkeSa>(*this, ike_counters_, ike::IkeSa::Role::kInitiator,
                                        std::move(conn),
                                        ike::ToAddress(sockets_[ini.socket]->local_endpoint()),
                                        ike::ToAddress(config_.target), spi, 0);
  routes_[spi] = Route{i, ini.sa.get()};
  ini.started = now;
  results_.first_started = std::min(results_.first_started, now);
  ++results_.started;
  ini.sa->Initiate(now);
  Settle(spi, now);
}

// Every established initiator at once, as when a crowd's access network renumbers: from now on
// it sends from its socket's twin on move_to (so does its ESP), and tells the responder with
// UPDATE_SA_ADDRESSES (RFC 4555 3.5). Its old socket stays open: what the responder still
// sends to the old address (before its return routability check of the new one passes) is
// received, but only ESP at the new address counts as recovered.
void Worker::MoveAll(ike::TimePoint now) {
  moved_ = true;
  if (!config_.move_to) return;
  const auto local = ike::ToAddress(*config_.move_to);
  for (Initiator& ini : initiators_) {
    if (ini.outcome != Outcome::kEstablished || !ini.sa) continue;
    ike::IkeSa& sa = *ini.sa;
    if (!sa.mobike() || sa.state() != State::kEstablished) {
      ++results_.move_skipped;
      continue;
    }
    const std::uint32_t twin = ini.socket + static_cast<std::uint32_t>(config_.sockets);
    ike::Address from = local;
    from.port = sockets_[twin]->local_endpoint().port();
    // First the socket: UpdateSaAddresses sends at once, through SendIke.
    const std::uint32_t was = ini.socket;
    ini.socket = twin;
    if (!sa.UpdateSaAddresses(from, now)) {
      ini.socket = was;
      ++results_.move_skipped;
      continue;
    }
    ini.moving = true;
    ini.moved_at = now;
    ++results_.moved;
    ++moves_pending_;
    Settle(OurSpi(sa), now);
  }
}

// A moved initiator's UPDATE_SA_ADDRESSES is answered (or its IKE SA is gone).
void Worker::SettleMove(Initiator& ini, const ike::IkeSa& sa, ike::TimePoint now) {
  if (!ini.moving || ini.move_answered) return;
  const bool dead = sa.state() == State::kDead;
  if (!dead && sa.mobike_update_pending()) return;
  ini.move_answered = true;
  --moves_pending_;
  if (dead) return;  // counted by its loss
  ++results_.move_answered;
  results_.move_answer_ms.push_back(std::chrono::duration<double, std::milli>(now - ini.moved_at).count());
}

void Worker::FinishStep(ike::TimePoint now) {
  // DELETEs go out at delete_rate, at most kDeleteWindow unanswered: the responder sets the pace.
  const double elapsed = std::chrono::duration<double>(now - finish_started_).count();
  const double allowed = elapsed * config_.delete_rate + 1;
  while (next_delete_ < initiators_.size() && static_cast<double>(deletes_sent_) < allowed &&
         deletes_in_flight_ < kDeleteWindow) {
    Initiator& ini = initiators_[next_delete_++];
    if (!ini.sa || ini.sa->state() == State::kDeleting || ini.sa->state() == State::kDead) continue;
    const std::uint64_t spi = OurSpi(*ini.sa);
    if (ini.outcome == Outcome::kPending) {
      // Half-open: Delete() just forgets it (the peer would not accept a DELETE yet).
      ini.outcome = Outcome::kAborted;
      ++results_.aborted;
    } else {
      ++deletes_sent_;
      ++deletes_in_flight_;
      ini.delete_sent = true;
      last_delete_progress_ = now;
    }
    ini.sa->Delete(now);
    Settle(spi, now);
  }
  const bool done = next_delete_ >= initiators_.size() && routes_.empty();
  if (!done && now - last_delete_progress_ < kDeleteGrace) return;
  // Still up: DELETEs unanswered, or never sent because the responder stopped answering.
  results_.deletes_unanswered = routes_.size();
  results_.retransmits = ike_counters_.retransmits;
  loop_->Stop();
}

// ---------------------------------------------------------------- receive

void Worker::OnReadable(std::size_t socket) {
  std::array<io::RecvSlot, kRecvBatch> slots;
  for (;;) {
    for (std::size_t i = 0; i < slots.size(); ++i) {
      slots[i] = io::RecvSlot{{recv_buffers_.data() + i * kRecvBufferSize, kRecvBufferSize}};
    }
    const io::BatchResult r = sockets_[socket]->RecvBatch(slots);
    const ike::TimePoint now = io::DefaultClock().Now();
    for (std::size_t i = 0; i < r.count; ++i) {
      if (!slots[i].truncated) {
        OnDatagram({recv_buffers_.data() + i * kRecvBufferSize, slots[i].length}, slots[i].peer, socket, now);
      }
    }
    if (r.count < slots.size()) return;
  }
}

void Worker::OnDatagram(std::span<std::uint8_t> data, const io::Endpoint& from, std::size_t socket,
                        ike::TimePoint now) {
  if (!SameAddress(from, config_.target)) return;
  if (from.port() == config_.natt_port) {
    // Without the marker: ESP (ours with traffic, else ignored) or a NAT-T keepalive.
    if (data.size() < sizeof(kNonEspMarker) ||
        std::memcmp(data.data(), kNonEspMarker, sizeof(kNonEspMarker)) != 0) {
      std::span<const std::uint8_t> inner;
      if (config_.traffic && esp::ClassifyUdpEncap(data, inner) == esp::UdpPayload::kEsp) OnEsp(data, socket, now);
      return;
    }
    data = data.subspan(sizeof(kNonEspMarker));
  } else if (from.port() != config_.target.port()) {
    return;
  }
  ike::Header h;
  if (!ike::ParseHeader(data, h)) return;
  // The I flag says whether the sender is the original initiator (RFC 7296 3.1), so it says
  // which of the two SPIs is ours.
  const std::uint64_t ours = h.from_initiator() ? h.spi_r : h.spi_i;
  const auto it = routes_.find(ours);
  if (it == routes_.end()) return;
  it->second.sa->Receive(data, now);
  Settle(ours, now);
}

void Worker::OnEsp(std::span<std::uint8_t> esp, std::size_t socket, ike::TimePoint now) {
  std::uint32_t spi = 0;
  esp::PeekSpi(esp, spi);
  const auto it = tunnels_.find(spi);
  if (it == tunnels_.end()) {
    ++results_.traffic_drops["unknown SPI"];
    return;
  }
  std::span<const std::uint8_t> inner;
  if (const esp::Status st = it->second.child->Open(esp, inner); st != esp::Status::kOk) {
    ++results_.traffic_drops[esp::ToString(st)];
    return;
  }
  Initiator& ini = initiators_[it->second.initiator];
  // The responder sends on a newer SA than ours: it has installed it.
  if (const auto cur = tunnels_.find(ini.tunnel_spi);
      cur == tunnels_.end() || it->second.generation > cur->second.generation) {
    ini.tunnel_spi = spi;
  }
  Echo reply;
  const bool expected = ParseEcho(inner, reply) && reply.type == kIcmpEchoReply &&
                        reply.src == config_.traffic_dst && reply.dst == ini.vip &&
                        reply.id == EchoId(it->second.initiator) && reply.seq != 0 &&
                        reply.seq <= ini.replied.size();
  if (!expected) {
    ++results_.traffic_drops["not an expected echo reply"];
    return;
  }
  if (ini.replied[reply.seq - 1]) {
    ++results_.traffic_drops["duplicate reply"];
    return;
  }
  ini.replied[reply.seq - 1] = true;
  ++ini.echo_received;
  ++results_.echo_received;
  if (ini.moving && !ini.move_recovered && socket >= config_.sockets) {
    ini.move_recovered = true;
    ++results_.move_recovered;
    results_.move_recover_ms.push_back(std::chrono::duration<double, std::milli>(now - ini.moved_at).count());
  }
}

// ---------------------------------------------------------------- traffic

void Worker::StartTraffic(std::uint32_t index, ike::TimePoint installed) {
  Initiator& ini = initiators_[index];
  ini.replied.assign(config_.packets, false);
  ini.next_echo = installed + kFirstEchoDelay;
  traffic_active_.push_back(index);
}

void Worker::TrafficStep(ike::TimePoint now) {
  for (std::size_t k = 0; k < traffic_active_.size();) {
    const std::uint32_t index = traffic_active_[k];
    Initiator& ini = initiators_[index];
    const bool up = ini.sa && ini.outcome == Outcome::kEstablished && !finishing_;
    while (up && ini.echo_sent < config_.packets && now >= ini.next_echo) {
      SendEcho(index, ini);
      ini.next_echo += config_.echo_interval;
      if (ini.echo_sent == config_.packets) ini.traffic_deadline = now + kReplyTimeout;
    }
    if (up && ini.echo_received < config_.packets && now < ini.traffic_deadline) {
      ++k;
      continue;
    }
    EndTraffic(ini);
    traffic_active_[k] = traffic_active_.back();
    traffic_active_.pop_back();
  }
}

std::uint16_t Worker::EchoId(std::uint32_t index) const {
  return static_cast<std::uint16_t>(config_.first_index + index);
}

void Worker::SendEcho(std::uint32_t index, Initiator& ini) {
  const std::uint16_t seq = static_cast<std::uint16_t>(++ini.echo_sent);
  const auto it = tunnels_.find(ini.tunnel_spi);
  if (it == tunnels_.end()) {
    ++results_.traffic_drops["no CHILD SA to send on"];
    return;
  }
  std::array<std::uint8_t, kEchoPacketLen> inner;
  BuildEcho(Echo{kIcmpEchoRequest, ini.vip, config_.traffic_dst, EchoId(index), seq}, inner);
  std::array<std::uint8_t, ChildTunnel::kBufferLen> buffer;
  std::span<const std::uint8_t> esp;
  if (const esp::Status st = it->second.child->Seal(inner, buffer, esp); st != esp::Status::kOk) {
    ++results_.traffic_drops[std::string("seal: ") + esp::ToString(st)];
    return;
  }
  if (!sockets_[ini.socket]->SendTo(natt_target_, esp)) {
    ++results_.send_failed;
    return;
  }
  ++results_.echo_sent;
}

void Worker::EndTraffic(const Initiator& ini) {
  if (ini.echo_received == config_.packets) {
    ++results_.peers_all_replies;
  } else if (ini.echo_received != 0) {
    ++results_.peers_some_replies;
  } else {
    ++results_.peers_no_replies;
  }
}

void Worker::Settle(std::uint64_t spi, ike::TimePoint now) {
  const auto it = routes_.find(spi);
  if (it == routes_.end()) return;
  ike::IkeSa* sa = it->second.sa;
  Initiator& ini = initiators_[it->second.initiator];
  const bool current = ini.sa.get() == sa;
  if (current && ini.outcome == Outcome::kPending && sa->state() == State::kEstablished) {
    // IKE_AUTH was answered, but InstallChild did not complete the initiator: the first
    // CHILD SA was refused or unusable. Without it the tunnel is useless; close it.
    Fail(ini, sa->failure().empty() ? "IKE SA established without a CHILD SA" : sa->failure());
    sa->Delete(now);
  }
  if (current) SettleMove(ini, *sa, now);
  if (sa->state() == State::kDead) {
    timers_.Cancel(spi);
    routes_.erase(it);
    if (current) {
      if (ini.delete_sent) {
        --deletes_in_flight_;
        last_delete_progress_ = now;
      }
      ini.sa.reset();
    } else {
      retired_.erase(spi);
    }
    return;
  }
  timers_.Set(spi, sa->NextDeadline());
}

void Worker::Fail(Initiator& ini, const std::string& why) {
  ini.outcome = Outcome::kFailed;
  ++results_.failed;
  ++results_.failures[why.empty() ? "unknown" : why];
}

// ---------------------------------------------------------------- IkeSaHost

void Worker::SendIke(ike::IkeSa& sa, const ike::Bytes& datagram) {
  const auto it = routes_.find(OurSpi(sa));
  if (it == routes_.end()) {
    ++results_.send_failed;
    return;
  }
  Initiator& ini = initiators_[it->second.initiator];
  io::UdpSocket& sock = *sockets_[ini.socket];
  // 2.23: once a NAT is detected, IKE moves to the NAT-T port for good.
  if (sa.nat_detected()) ini.natt = true;
  bool sent;
  if (!ini.natt) {
    sent = sock.SendTo(config_.target, datagram);
  } else {
    if (sa.remote().port != config_.natt_port) {
      ike::Address r = sa.remote();
      r.port = config_.natt_port;
      sa.set_remote(r);
    }
    framed_.assign(std::begin(kNonEspMarker), std::end(kNonEspMarker));
    framed_.insert(framed_.end(), datagram.begin(), datagram.end());
    sent = sock.SendTo(natt_target_, framed_);
  }
  // IkeSa retransmits what the kernel refused, like a datagram lost on the way.
  if (!sent) ++results_.send_failed;
}

std::optional<std::uint32_t> Worker::AllocateChildSpi(bool, ike::NotifyType& refusal) {
  const auto spi = spis_.Allocate();
  if (!spi) refusal = ike::NotifyType::kTemporaryFailure;
  return spi;
}

void Worker::InstallChild(ike::IkeSa& sa, const ike::ChildSaInfo& child) {
  const auto it = routes_.find(OurSpi(sa));
  if (config_.traffic && it != routes_.end()) {
    auto tunnel = std::make_unique<ChildTunnel>();
    if (tunnel->Init(child)) {
      Tunnel& t = tunnels_[child.spi_in];
      t = Tunnel{it->second.initiator, std::move(tunnel)};
      t.generation = next_generation_++;
      Initiator& owner = initiators_[it->second.initiator];
      const auto pred = child.rekey_of != 0 ? tunnels_.find(child.rekey_of) : tunnels_.end();
      if (pred != tunnels_.end()) pred->second.successor = child.spi_in;
      // We rekeyed: the responder installed it before answering. It rekeyed: wait (above).
      if (child.we_initiated || pred == tunnels_.end() || tunnels_.count(owner.tunnel_spi) == 0) {
        owner.tunnel_spi = child.spi_in;
      }
    }
  }
  if (child.rekey_of != 0) {
    ++results_.rekeys_completed;
    return;
  }
  if (it == routes_.end()) return;
  const std::uint32_t index = it->second.initiator;
  Initiator& ini = initiators_[index];
  if (ini.sa.get() != &sa || ini.outcome != Outcome::kPending) return;
  if (config_.vips) {
    // IkeSa fails the first CHILD SA of an initiator that asked for an address and got none,
    // so one is here.
    const auto& vips = sa.virtual_ips();
    const auto v4 = std::find_if(vips.begin(), vips.end(),
                                 [](const ike::TrafficSelector& ts) { return ts.addr_len() == 4; });
    if (v4 == vips.end()) return;
    std::copy_n(v4->start.begin(), 4, ini.vip.begin());
    results_.virtual_ips.push_back((std::uint32_t{ini.vip[0]} << 24) | (std::uint32_t{ini.vip[1]} << 16) |
                                   (std::uint32_t{ini.vip[2]} << 8) | ini.vip[3]);
    if (config_.traffic) StartTraffic(index, child.installed);
  }
  ini.outcome = Outcome::kEstablished;
  ++results_.established;
  // child.installed is the time the IKE_AUTH response was received.
  results_.latency_ms.push_back(
      std::chrono::duration<double, std::milli>(child.installed - ini.started).count());
  results_.last_established = std::max(results_.last_established, child.installed);
}

void Worker::RemoveChild(ike::IkeSa&, std::uint32_t spi_in) {
  const auto it = tunnels_.find(spi_in);
  if (it == tunnels_.end()) {
    spis_.Release(spi_in);
    return;
  }
  Initiator& owner = initiators_[it->second.initiator];
  if (owner.tunnel_spi == spi_in && tunnels_.count(it->second.successor) != 0) {
    owner.tunnel_spi = it->second.successor;
  }
  if (owner.tunnel_spi != spi_in && tunnels_.count(owner.tunnel_spi) != 0) {
    // Rekeyed: a successor carries the traffic; this one keeps opening late arrivals for a
    // while (its SPI stays ours until then).
    it->second.retire_at = io::DefaultClock().Now() + kRekeyedInboundGrace;
    retiring_.push_back(spi_in);
    return;
  }
  spis_.Release(spi_in);
  tunnels_.erase(it);
}

void Worker::RetireTunnels(ike::TimePoint now) {
  for (std::size_t k = 0; k < retiring_.size();) {
    const auto it = tunnels_.find(retiring_[k]);
    if (it != tunnels_.end() && it->second.retire_at > now) {
      ++k;
      continue;
    }
    if (it != tunnels_.end()) tunnels_.erase(it);
    spis_.Release(retiring_[k]);
    retiring_[k] = retiring_.back();
    retiring_.pop_back();
  }
}

void Worker::StateChanged(ike::IkeSa& sa) {
  if (sa.state() != State::kDead) return;
  const auto it = routes_.find(OurSpi(sa));
  if (it == routes_.end()) return;
  Initiator& ini = initiators_[it->second.initiator];
  if (ini.sa.get() != &sa) return;  // replaced by an IKE rekey: its successor lives on
  if (ini.outcome == Outcome::kPending) {
    Fail(ini, sa.failure());
  } else if (ini.outcome == Outcome::kEstablished && !finishing_) {
    ++results_.lost;
    ++results_.losses[sa.failure().empty() ? "unknown" : sa.failure()];
  }
}

std::uint64_t Worker::NewIkeSpi() {
  std::uint64_t spi;
  do {
    spi = crypto::RandomU64();
  } while (spi == 0 || routes_.count(spi) != 0);
  return spi;
}

void Worker::AdoptIkeSa(ike::IkeSa& old, std::unique_ptr<ike::IkeSa> replacement) {
  const auto it = routes_.find(OurSpi(old));
  if (it == routes_.end()) return;
  const std::uint32_t index = it->second.initiator;
  Initiator& ini = initiators_[index];
  if (ini.sa.get() != &old) return;
  const std::uint64_t spi = OurSpi(*replacement);
  retired_[OurSpi(old)] = std::move(ini.sa);
  ini.sa = std::move(replacement);
  routes_[spi] = Route{index, ini.sa.get()};
  timers_.Set(spi, ini.sa->NextDeadline());
}

// Simultaneous IKE rekeys (2.8.2): an IKE SA beside the initiator's current one is routed and
// kept with the retired ones; a surviving one becomes current.
void Worker::AdoptIkeSaBeside(ike::IkeSa& old, std::unique_ptr<ike::IkeSa> sa) {
  const auto it = routes_.find(OurSpi(old));
  if (it == routes_.end()) return;
  const std::uint32_t index = it->second.initiator;
  const std::uint64_t spi = OurSpi(*sa);
  ike::IkeSa* const kept = sa.get();
  retired_[spi] = std::move(sa);
  routes_[spi] = Route{index, kept};
  timers_.Set(spi, kept->NextDeadline());
}

ike::IkeSa* Worker::FindIkeSa(std::uint64_t our_spi) {
  const auto it = routes_.find(our_spi);
  return it != routes_.end() ? it->second.sa : nullptr;
}

void Worker::IkeRekeySurvivor(ike::IkeSa& old, ike::IkeSa& survivor) {
  const auto route = routes_.find(OurSpi(old));
  const auto kept = retired_.find(OurSpi(survivor));
  if (route == routes_.end() || kept == retired_.end()) return;
  Initiator& ini = initiators_[route->second.initiator];
  if (ini.sa.get() != &old) return;
  std::unique_ptr<ike::IkeSa> next = std::move(kept->second);
  retired_.erase(kept);
  retired_[OurSpi(old)] = std::move(ini.sa);
  ini.sa = std::move(next);
}

}  // namespace spigot::loadgen
