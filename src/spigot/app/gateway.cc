#include "spigot/app/gateway.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <thread>

#include "spigot/crypto/dh.h"
#include "spigot/crypto/random.h"
#include "spigot/esp/esp.h"
#include "spigot/ike/traffic_selectors.h"

namespace spigot::app {
namespace {

constexpr auto kTickPeriod = std::chrono::milliseconds(100);
constexpr auto kShutdownGrace = std::chrono::seconds(3);
constexpr auto kInboundLinger = std::chrono::seconds(2);
// Longer than an initiator's retransmissions of one IKE_SA_INIT (1 + 2 + 4 + 8 + 16 s).
constexpr auto kCookieHold = std::chrono::seconds(40);
constexpr std::uint8_t kNonEspMarker[esp::kNonEspMarkerLen] = {};
constexpr std::size_t kRecvBuffer = 65536;

ike::Address ToAddress(const io::Endpoint& e) {
  ike::Address a;
  a.family = e.family() == AF_INET6 ? 6 : 4;
  const auto b = e.address_bytes();
  std::memcpy(a.ip.data(), b.data(), b.size());
  a.port = e.port();
  return a;
}

io::Endpoint ToEndpoint(const ike::Address& a) {
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(a.family == 4 ? AF_INET : AF_INET6, a.ip.data(), buf, sizeof(buf));
  return *io::Endpoint::Parse(buf, a.port);
}

ike::TrafficSelector ToSelector(const config::TrafficSelector& t) {
  const std::string cidr = t.ToString();
  return *ike::SelectorFromCidr(cidr);
}

// The part of the SPI pool only rekeys may use, so established tunnels can always rekey
// when new ones have used up the rest (DESIGN.md, cause 1).
std::uint32_t SpiReserve(const config::GlobalConfig& g) {
  return static_cast<std::uint32_t>(std::uint64_t{g.max_spi} * g.spi_reserve_percent / 100);
}

std::string Hex(std::uint64_t v, int digits) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%0*llx", digits, static_cast<unsigned long long>(v));
  return buf;
}

nlohmann::json SelectorsJson(const std::vector<ike::TrafficSelector>& ts) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& t : ts) out.push_back(ike::ToString(t));
  return out;
}

// What an IKE SA answering its first IKE_SA_INIT on a worker may do: send the answer and change
// state. The control thread replays both when it takes the SA over (Gateway::AdoptOffloaded).
// Nothing else is reachable from that exchange; should it be, the answer is a refusal, never
// shared state touched from the wrong thread.
class RecordingHost : public ike::IkeSaHost {
 public:
  void SendIke(ike::IkeSa&, const ike::Bytes& datagram) override { sent.push_back(datagram); }
  std::optional<std::uint32_t> AllocateChildSpi(bool, ike::NotifyType& refusal) override {
    refusal = ike::NotifyType::kTemporaryFailure;
    return std::nullopt;
  }
  void ReleaseChildSpi(std::uint32_t) override {}
  void InstallChild(ike::IkeSa&, const ike::ChildSaInfo&) override {}
  void RemoveChild(ike::IkeSa&, std::uint32_t) override {}
  std::shared_ptr<const ike::ConnectionParams> ConnectionForPeer(const ike::Identity&,
                                                                 const ike::Address&) override {
    return nullptr;
  }
  void StateChanged(ike::IkeSa&) override { state_changed = true; }
  std::uint64_t NewIkeSpi() override { return 0; }
  void AdoptIkeSa(ike::IkeSa&, std::unique_ptr<ike::IkeSa>) override {}

  std::vector<ike::Bytes> sent;
  bool state_changed = false;
};

void Add(ike::IkeCounters& to, const ike::IkeCounters& from) {
  to.retransmits += from.retransmits;
  to.requests_queue_full += from.requests_queue_full;
  to.auth_failures += from.auth_failures;
  to.invalid_messages += from.invalid_messages;
  to.child_failures += from.child_failures;
  to.rekey_retries += from.rekey_retries;
}

// Each IKE worker keeps this many jobs queued so it never idles between completions; more
// would only hide the backlog from the negotiation queue's priorities and max_queue.
constexpr std::size_t kJobsPerWorker = 4;

}  // namespace

struct Gateway::OffloadJob {
  RecordingHost host;
  ike::IkeCounters counters;
  std::unique_ptr<ike::IkeSa> sa;
  std::vector<std::uint8_t> msg;
  bool natt = false;
  HalfOpenKey key;
  ike::TimePoint now;
};

std::unique_ptr<Gateway> Gateway::Create(config::Config config, std::string config_path,
                                         std::string* error) {
  std::unique_ptr<Gateway> g(new Gateway(std::move(config), std::move(config_path)));
  if (!g->Init(error)) return nullptr;
  return g;
}

Gateway::Gateway(config::Config config, std::string config_path)
    : config_(std::move(config)), config_path_(std::move(config_path)) {}

Gateway::~Gateway() {
  // Workers first (their jobs report to us), then the queued work, whose acquire tickets
  // report to the data plane: both while everything they touch still exists.
  workers_.reset();
  queue_ = engine::NegotiationQueue(1);
}

bool Gateway::ApplyConnections(std::string* error) {
  std::map<std::string, Connection> next;
  for (const auto& c : config_.connections) {
    auto p = std::make_shared<ike::ConnectionParams>();
    p->name = c.name;
    const std::string local_id = c.local_id.empty() ? config_.global.listen : c.local_id;
    const std::string remote_id =
        c.remote_id.empty() ? (c.remote_addrs.empty() ? "" : c.remote_addrs[0]) : c.remote_id;
    auto lid = ike::ParseIdentity(local_id);
    const bool any = remote_id == "%any";
    auto rid = any ? std::optional<ike::Identity>(ike::Identity{}) : ike::ParseIdentity(remote_id);
    if (!lid || !rid) {
      *error = config_path_ + ": connection '" + c.name + "': bad local_id or remote_id";
      return false;
    }
    p->local_id = *lid;
    p->remote_id = *rid;
    p->remote_id_any = any;
    const auto psk = c.psk.view();
    p->psk = crypto::SecureBytes(std::span<const std::uint8_t>(
        reinterpret_cast<const std::uint8_t*>(psk.data()), psk.size()));
    std::string err;
    if (!ike::ParseProposals(c.ike_proposals, ike::ProtocolId::kIke, p->ike_proposals, err) ||
        !ike::ParseProposals(c.esp_proposals, ike::ProtocolId::kEsp, p->esp_proposals, err)) {
      *error = config_path_ + ": connection '" + c.name + "': " + err;
      return false;
    }
    for (const auto& t : c.local_ts) p->local_ts.push_back(ToSelector(t));
    for (const auto& t : c.remote_ts) p->remote_ts.push_back(ToSelector(t));
    p->dpd_delay = c.dpd_delay;
    p->ike_rekey_time = c.ike_rekey_time;
    p->child_rekey_time = c.child_rekey_time;
    p->child_lifetime = c.child_lifetime;
    p->host_schedules_rekeys = true;
    next[c.name] = Connection{c, std::move(p)};
  }
  connections_ = std::move(next);
  return true;
}

bool Gateway::Init(std::string* error) {
  if (!ApplyConnections(error)) return false;
  const auto& g = config_.global;
  if (sad_.SetSpiLimits(g.max_spi, SpiReserve(g)) != sa::LimitsStatus::kOk) {
    *error = config_path_ + ": global.max_spi: rejected by the SPI pool";
    return false;
  }
  rekey_scheduler_.SetRate(MaxRekeysPerSecond());
  queue_.SetMaxDepth(g.max_queue);
  loop_ = io::EventLoop::Create({}, error);
  if (!loop_) return false;
  // Before any thread starts: signalfd needs the signals blocked in every thread, and threads
  // inherit the mask of the thread that creates them.
  for (int sig : {SIGTERM, SIGINT}) loop_->OnSignal(sig, [this] { Shutdown(); });
  loop_->OnSignal(SIGHUP, [this] { Reload(); });
  const std::size_t threads =
      g.ike_workers != 0 ? g.ike_workers : std::max(1u, std::thread::hardware_concurrency());
  workers_ = std::make_unique<engine::WorkerPool>(threads, threads * kJobsPerWorker);
  spdlog::info("IKE workers: {} thread(s)", workers_->threads());
  for (auto [port, natt] : {std::pair{g.ike_port, false}, std::pair{g.natt_port, true}}) {
    const auto ep = io::Endpoint::Parse(g.listen, port);
    auto sock = ep ? io::UdpSocket::Bind(*ep, {}, error) : nullptr;
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
    // UDP 4500 belongs to the inbound data-path thread, which hands IKE over to us.
    if (!natt) loop_->AddReader(sock->fd(), [this] { OnIkePort(); });
    (natt ? natt_sock_ : ike_sock_) = std::move(sock);
  }
  Dataplane::Hooks hooks;
  hooks.ike = [this](std::span<const std::uint8_t> m, const io::Endpoint& from) {
    OnIke(m, from, true);
    DrainQueue();
  };
  hooks.acquire = [this](policy::PolicyId id) { OnAcquire(id); };
  hooks.first_packet = [this](std::uint32_t spi) { OnFirstPacket(spi); };
  hooks.exhausted = [this](policy::PolicyId id, std::uint32_t spi) { OnExhausted(id, spi); };
  dataplane_ = Dataplane::Create(g, *natt_sock_, *loop_, std::move(hooks), error);
  if (!dataplane_ || !dataplane_->ApplyConnections(config_.connections, error)) return false;
  control_ = control::ControlServer::Listen(
      g.control_socket, [this](const nlohmann::json& r) { return Handle(r); }, {}, error);
  if (!control_) return false;
  loop_->AddReader(control_->fd(), [this] { control_->OnReadable(); });
  loop_->AddRepeatingTimer("ike_tick", kTickPeriod, [this] { Tick(); });
  loop_->AddRepeatingTimer("control_idle", std::chrono::seconds(5), [this] { control_->CloseIdleClients(); });
  return true;
}

int Gateway::Run() {
  spdlog::info("spigot listening on {} (IKE {}, NAT-T {}), control socket {}",
               config_.global.listen, config_.global.ike_port, config_.global.natt_port,
               config_.global.control_socket);
  for (const auto& [name, c] : connections_) {
    if (c.cfg.start_action == config::StartAction::kStart) {
      std::string err;
      if (!Initiate(name, &err)) spdlog::warn("connection {}: {}", name, err);
    }
  }
  loop_->Run();
  return exit_code_;
}

// ---------------------------------------------------------------- UDP and IKE dispatch

// UDP 500 (IKE only; UDP 4500 is read by the inbound data-path thread).
void Gateway::OnIkePort() {
  static std::vector<std::uint8_t> buffers(kRecvBuffer * 8);
  std::array<io::RecvSlot, 8> slots;
  for (;;) {
    for (std::size_t i = 0; i < slots.size(); ++i) {
      slots[i] = io::RecvSlot{{buffers.data() + i * kRecvBuffer, kRecvBuffer}};
    }
    const io::BatchResult r = ike_sock_->RecvBatch(slots);
    for (std::size_t i = 0; i < r.count; ++i) {
      const io::RecvSlot& s = slots[i];
      if (s.truncated) {
        ++counters_.truncated;
        continue;
      }
      OnIke({s.buffer.data(), s.length}, s.peer, false);
    }
    if (r.count < slots.size()) break;
  }
  DrainQueue();
}

void Gateway::OnIke(std::span<const std::uint8_t> msg, const io::Endpoint& from, bool natt_port) {
  ++counters_.ike_received;
  ike::Header h;
  if (!ike::ParseHeader(msg, h)) {
    ++counters_.ike_invalid;
    return;
  }
  // Responses finish exchanges we started: no queueing. Requests wait in the negotiation
  // queue by priority: established SAs (rekeys, deletes) before half-open ones before new.
  if (h.is_response()) return ProcessIke(msg, from, natt_port);
  engine::Priority prio = engine::Priority::kNew;
  if (h.spi_r != 0) {
    auto it = ike_sas_.find(h.from_initiator() ? h.spi_r : h.spi_i);
    prio = it != ike_sas_.end() && it->second.sa->state() == ike::IkeSa::State::kEstablished
               ? engine::Priority::kEstablished
               : engine::Priority::kHalfOpen;
  }
  auto copy = std::make_shared<std::vector<std::uint8_t>>(msg.begin(), msg.end());
  if (queue_.Submit(prio, [this, copy, from, natt_port] { ProcessIke(*copy, from, natt_port); }) !=
      engine::kStatusSuccess) {
    // STATUS_IPSEC_QUEUE_OVERFLOW: dropped and counted (queue_overflows); the peer retransmits.
    return;
  }
}

// The queue is worked right after the datagrams that arrived together have been queued (and so
// prioritised), a bounded slice at a time; the rest waits for later turns of the event loop,
// so sockets and timers are served in between.
void Gateway::ScheduleDrain() {
  // New work that waits for a worker is picked up when one finishes (AdoptOffloaded), not by
  // spinning here.
  const bool runnable = queue_.depth(engine::Priority::kEstablished) != 0 ||
                        queue_.depth(engine::Priority::kHalfOpen) != 0 ||
                        (queue_.depth(engine::Priority::kNew) != 0 && workers_->free() != 0);
  if (drain_posted_ || !runnable) return;
  drain_posted_ = loop_->Post([this] {
    drain_posted_ = false;
    DrainQueue();
  });
}

void Gateway::DrainQueue() {
  constexpr std::size_t kSlice = 128;
  for (std::size_t n = 0; n < kSlice; ++n) {
    // A new IKE_SA_INIT needs a worker (its DH); while all are busy it stays queued, where
    // max_queue and the priorities govern it, and rekeys and deletes still run.
    const auto lowest = workers_->free() != 0 ? engine::Priority::kNew : engine::Priority::kHalfOpen;
    if (queue_.Run(1, lowest) == 0) break;
  }
  ScheduleDrain();
}

bool Gateway::OffloadInit(std::unique_ptr<ike::IkeSa> sa, std::span<const std::uint8_t> msg,
                          bool natt, HalfOpenKey key, ike::TimePoint now) {
  auto job = std::make_shared<OffloadJob>();
  sa->Rebind(job->host, job->counters);
  job->sa = std::move(sa);
  job->msg.assign(msg.begin(), msg.end());
  job->natt = natt;
  job->key = std::move(key);
  job->now = now;
  const std::uint64_t ours = job->sa->spi_r();
  if (!workers_->TrySubmit([this, job] {
        job->sa->Receive(job->msg, job->now);
        OffloadDone(job);
      })) {
    job->sa->Rebind(*this, ike_counters_);
    return false;
  }
  offloaded_.insert(ours);
  half_open_[job->key] = ours;
  return true;
}

void Gateway::OffloadDone(std::shared_ptr<OffloadJob> job) {
  {
    std::lock_guard lock(done_mu_);
    done_.push_back(std::move(job));
  }
  // One wake-up for any number of finished jobs. A refused Post (the loop's queue is full) is
  // made up for by the next tick.
  if (!done_posted_.exchange(true) && !loop_->Post([this] { AdoptOffloaded(); }))
    done_posted_ = false;
}

void Gateway::AdoptOffloaded() {
  done_posted_ = false;
  std::vector<std::shared_ptr<OffloadJob>> batch;
  {
    std::lock_guard lock(done_mu_);
    batch.swap(done_);
  }
  for (auto& job : batch) {
    const std::uint64_t ours = job->sa->spi_r();
    offloaded_.erase(ours);
    job->sa->Rebind(*this, ike_counters_);
    Add(ike_counters_, job->counters);
    SaEntry e;
    e.sa = std::move(job->sa);
    e.natt = job->natt;
    e.half_open = job->key;
    ike::IkeSa& sa = *e.sa;
    ike_sas_[ours] = std::move(e);
    for (const auto& datagram : job->host.sent) SendIke(sa, datagram);
    if (job->host.state_changed) StateChanged(sa);
    if (shutting_down_) sa.Delete(Now());
    Schedule(ours);
  }
  if (!batch.empty()) DrainQueue();
}

void Gateway::ForgetHalfOpen(SaEntry& e) {
  if (!e.half_open) return;
  if (auto it = half_open_.find(*e.half_open); it != half_open_.end() && it->second == OurSpi(*e.sa))
    half_open_.erase(it);
  e.half_open.reset();
}

void Gateway::ProcessIke(std::span<const std::uint8_t> msg, const io::Endpoint& from,
                         bool natt_port) {
  ike::Header h;
  if (!ike::ParseHeader(msg, h)) return;
  const ike::TimePoint now = Now();
  // The I flag says whether the sender is the original initiator (RFC 7296 3.1), so it says
  // which of the two SPIs is ours.
  const bool we_respond = h.from_initiator();
  std::uint64_t ours = we_respond ? h.spi_r : h.spi_i;
  if (we_respond && ours == 0) {
    if (h.exchange != ike::Exchange::kIkeSaInit || h.is_response()) {
      ++counters_.ike_unknown_spi;
      return;
    }
    const auto key = std::pair{h.spi_i, from.ToString()};
    if (auto it = half_open_.find(key); it != half_open_.end()) {
      ours = it->second;
    } else {
      const Connection* c = ConnectionForAddress(from);
      // Cookie mode starts at cookie_threshold half-open SAs and lasts kCookieHold after the
      // count falls below it. Without that hold, a retransmitted IKE_SA_INIT could be admitted
      // without a cookie just after its first copy was asked for one: the initiator, now
      // sending the request with the cookie, would take our answer to the old request for the
      // answer to the new one and sign the wrong message (AUTHENTICATION_FAILED, seen under
      // login storms that hover around the threshold).
      if (half_open_.size() >= config_.global.cookie_threshold) cookies_until_ = now + kCookieHold;
      if (c != nullptr && now < cookies_until_ && !CookieAdmits(msg, h, from, natt_port)) return;
      if (c == nullptr) {
        ++counters_.ike_no_connection;
        spdlog::info("IKE_SA_INIT from {}: no connection accepts this address", from.ToString());
        return;
      }
      ours = NewIkeSpi();
      const io::Endpoint& local = natt_port ? natt_sock_->local_endpoint() : ike_sock_->local_endpoint();
      auto sa = std::make_unique<ike::IkeSa>(*this, ike_counters_, ike::IkeSa::Role::kResponder,
                                             c->params, ToAddress(local), ToAddress(from), h.spi_i, ours);
      // The DH and key derivation go to a worker; the control thread keeps receiving.
      if (OffloadInit(std::move(sa), msg, natt_port, key, now)) return;
      // No room (DrainQueue runs new work only when there is, so this is rare): answer here.
      SaEntry e;
      e.sa = std::make_unique<ike::IkeSa>(*this, ike_counters_, ike::IkeSa::Role::kResponder,
                                          c->params, ToAddress(local), ToAddress(from), h.spi_i, ours);
      e.natt = natt_port;
      e.half_open = key;
      ike_sas_[ours] = std::move(e);
      half_open_[key] = ours;
    }
  }
  auto it = ike_sas_.find(ours);
  if (it == ike_sas_.end()) {
    if (offloaded_.count(ours) != 0) {
      ++counters_.init_in_progress;
      return;
    }
    ++counters_.ike_unknown_spi;
    return;
  }
  SaEntry& e = it->second;
  // Answer on the port the peer last used (it moves to 4500 when it detects a NAT: 2.23).
  e.natt = natt_port;
  e.sa->set_remote(ToAddress(from));
  e.sa->Receive(msg, now);
  Schedule(ours);
}

bool Gateway::CookieAdmits(std::span<const std::uint8_t> msg, const ike::Header& h,
                           const io::Endpoint& from, bool natt_port) {
  ike::Message m;
  if (ike::ParseMessage(msg, m).error != ike::ParseError::kOk) {
    ++counters_.ike_invalid;
    return false;
  }
  const auto* ni = m.Find<ike::NoncePayload>(ike::PayloadType::kNonce);
  if (ni == nullptr) {
    ++counters_.ike_invalid;
    return false;
  }
  const ike::TimePoint now = Now();
  // 2.6: the cookie comes back as the first payload.
  const auto* first = m.payloads.empty() ? nullptr : std::get_if<ike::NotifyPayload>(&m.payloads[0].body);
  if (first != nullptr && first->type == ike::NotifyType::kCookie) {
    if (cookies_.Verify(first->data, ni->data, from.address_bytes(), h.spi_i, now)) return true;
    ++counters_.cookies_invalid;
  }
  ike::Message reply;
  reply.header = ike::Header{h.spi_i, 0, ike::PayloadType::kNone, ike::kVersion,
                             ike::Exchange::kIkeSaInit, ike::kFlagResponse, 0, 0};
  reply.payloads.push_back({ike::PayloadType::kNotify,
                            ike::NotifyPayload{ike::ProtocolId::kNone, {}, ike::NotifyType::kCookie,
                                               cookies_.Make(ni->data, from.address_bytes(), h.spi_i, now)}});
  SendIkeDatagram(from, ike::Serialize(reply, nullptr), natt_port);
  ++counters_.cookies_sent;
  return false;
}

const Gateway::Connection* Gateway::ConnectionForAddress(const io::Endpoint& from) const {
  const std::string addr = from.AddressString();
  const Connection* any = nullptr;
  for (const auto& [name, c] : connections_) {
    for (const auto& r : c.cfg.remote_addrs) {
      if (r == addr) return &c;
      if (r == "%any" && any == nullptr) any = &c;
    }
  }
  return any;
}

std::uint64_t Gateway::OurSpi(const ike::IkeSa& sa) const {
  return sa.role() == ike::IkeSa::Role::kInitiator ? sa.spi_i() : sa.spi_r();
}

void Gateway::Schedule(std::uint64_t ours) {
  if (!adopted_.empty()) {
    const std::vector<std::uint64_t> adopted = std::move(adopted_);
    adopted_.clear();
    for (std::uint64_t a : adopted) Schedule(a);
  }
  auto it = ike_sas_.find(ours);
  if (it == ike_sas_.end()) return;
  SaEntry& e = it->second;
  const ike::TimePoint next =
      e.sa->state() == ike::IkeSa::State::kDead ? ike::TimePoint::min() : e.sa->NextDeadline();
  // Only an earlier deadline is filed: a later one is found when the filed entry comes due
  // (TickSa ticks only what is due, then the SA is filed again). So each SA has at most one
  // live entry, and one stale one per earlier refiling: the heap stays O(IKE SAs).
  if (next >= e.scheduled) return;
  e.scheduled = next;
  timers_.push({next, ours});
}

bool Gateway::TickSa(std::map<std::uint64_t, SaEntry>::iterator it, ike::TimePoint now) {
  ike::IkeSa& sa = *it->second.sa;
  if (sa.state() != ike::IkeSa::State::kDead && sa.NextDeadline() <= now) sa.Tick(now);
  if (sa.state() == ike::IkeSa::State::kDead) {
    ForgetHalfOpen(it->second);
    ike_sas_.erase(it);
    return false;
  }
  return true;
}

void Gateway::Tick() {
  constexpr std::uint64_t kSweepTicks = 50;  // 5 s
  const ike::TimePoint now = Now();
  while (!timers_.empty() && timers_.top().first <= now) {
    const auto [at, ours] = timers_.top();
    timers_.pop();
    auto it = ike_sas_.find(ours);
    if (it == ike_sas_.end() || it->second.scheduled != at) continue;  // gone, or refiled
    it->second.scheduled = ike::TimePoint::max();
    if (TickSa(it, now)) Schedule(ours);
  }
  if (++ticks_ % kSweepTicks == 0) {
    std::vector<std::uint64_t> all;
    all.reserve(ike_sas_.size());
    for (const auto& [ours, e] : ike_sas_) all.push_back(ours);
    for (std::uint64_t ours : all) {
      auto it = ike_sas_.find(ours);
      if (it == ike_sas_.end()) continue;
      // Overdue by more than a tick: the heap did not have it (a missed Schedule call).
      if (it->second.sa->state() != ike::IkeSa::State::kDead &&
          it->second.sa->NextDeadline() + kTickPeriod < now)
        ++counters_.timers_missed;
      if (TickSa(it, now)) Schedule(ours);
    }
  }
  dataplane_->Tick();
  CheckVolumeLifetimes(now);
  AdoptOffloaded();  // in case a wake-up was refused
  DrainQueue();
  for (std::uint32_t spi : rekey_scheduler_.Due(now)) {
    auto c = children_.find(spi);
    if (c == children_.end()) continue;
    auto it = ike_sas_.find(c->second.owner);
    if (it == ike_sas_.end() || !it->second.sa->RekeyChild(spi, now))
      rekey_scheduler_.Schedule(spi, now + std::chrono::seconds(1));  // busy: try again
    else
      Schedule(it->first);
  }
  if (shutting_down_ && ike_sas_.empty()) loop_->Stop();
}

// Bytes and packets lifetimes (RFC 4301 4.4.2.1): the soft one asks the rekey scheduler for a
// rekey now (it still goes through the rate limit, most overdue first); the hard one deletes
// the SA whether or not its successor is there. Both directions count.
void Gateway::CheckVolumeLifetimes(ike::TimePoint now) {
  for (std::uint32_t spi : volume_limited_) {
    auto c = children_.find(spi);
    if (c == children_.end() || !c->second.counters) continue;
    Child& ch = c->second;
    const std::uint64_t bytes = ch.counters->bytes.load(std::memory_order_relaxed);
    const std::uint64_t packets = ch.counters->packets.load(std::memory_order_relaxed);
    const bool hard = (ch.hard_bytes != 0 && bytes >= ch.hard_bytes) ||
                      (ch.hard_packets != 0 && packets >= ch.hard_packets);
    const bool soft = (ch.soft_bytes != 0 && bytes >= ch.soft_bytes) ||
                      (ch.soft_packets != 0 && packets >= ch.soft_packets);
    auto owner = ike_sas_.find(ch.owner);
    if (hard && !ch.volume_deleted && owner != ike_sas_.end()) {
      // Soft and hard crossed between two looks (a burst, a busy tick): start the rekey now,
      // ahead of the DELETE in the IKE SA's queue, so the successor carries the traffic and
      // the policy is never left without an SA.
      if (!ch.volume_rekeyed && owner->second.sa->RekeyChild(spi, now)) {
        ch.volume_rekeyed = true;
        ++counters_.volume_rekeys;
        rekey_scheduler_.Cancel(spi);
      }
      if (owner->second.sa->DeleteChild(spi, now)) {
        Schedule(owner->first);
        ch.volume_deleted = true;
        ++counters_.volume_deletes;
        spdlog::warn("CHILD SA {:08x}_i reached its volume lifetime ({} bytes, {} packets) before "
                     "its rekey completed: deleting it", spi, bytes, packets);
      }
    } else if (soft && !ch.volume_rekeyed) {
      ch.volume_rekeyed = true;
      ++counters_.volume_rekeys;
      rekey_scheduler_.Schedule(spi, now);  // the scheduler's Due() files the IKE SA
    }
  }
}

double Gateway::MaxRekeysPerSecond() const {
  if (config_.global.max_rekeys_per_second != 0) return config_.global.max_rekeys_per_second;
  // Derived: a CHILD rekey with PFS costs one DH on each side; give rekeys a quarter of what
  // one core does (measured now), so new tunnels and the data path keep the rest.
  static const double derived = [] {
    const auto start = ike::Clock::now();
    int n = 0;
    const auto peer = crypto::DhKeyPair::Generate(crypto::kDhGroupCurve25519);
    crypto::SecureBytes shared;
    while (ike::Clock::now() - start < std::chrono::milliseconds(20)) {
      const auto kp = crypto::DhKeyPair::Generate(crypto::kDhGroupCurve25519);
      (void)kp->ComputeShared(peer->public_value(), shared);
      ++n;
    }
    const double per_second = n / std::chrono::duration<double>(ike::Clock::now() - start).count();
    return std::max(10.0, per_second / 4);
  }();
  return derived;
}

const std::string* Gateway::ConnectionNameFor(policy::PolicyId policy) const {
  for (const auto& [name, c] : connections_) {
    if (dataplane_->PolicyFor(name) == policy) return &name;
  }
  return nullptr;
}

// An acquire is new work like a peer's IKE_SA_INIT (priority kNew): it waits its turn in the
// negotiation queue, and a full queue refuses it with STATUS_IPSEC_QUEUE_OVERFLOW (counted in
// queue_overflows) and drops the packets it held (counted in packets_dropped.acquire_failed).
void Gateway::OnAcquire(policy::PolicyId policy) {
  const std::string* name = ConnectionNameFor(policy);
  if (name == nullptr) return dataplane_->AcquireFailed(policy);
  pending_acquires_.insert(policy);
  if (!acquires_queued_.insert(policy).second) return;  // already waiting in the queue
  // The ticket's destructor tells us if the queue drops the work unrun (evicted for
  // higher-priority work): the held packets must not wait for a negotiation nobody starts.
  struct Ticket {
    Gateway* gateway;
    policy::PolicyId policy;
    bool ran = false;
    ~Ticket() {
      if (!ran) gateway->AcquireDropped(policy, engine::kStatusIpsecQueueOverflow);
    }
  };
  // Built in place: a temporary Ticket's destructor would report a drop.
  std::shared_ptr<Ticket> ticket(new Ticket{this, policy});
  const std::uint32_t status = queue_.Submit(engine::Priority::kNew, [this, ticket] {
    ticket->ran = true;
    StartAcquired(ticket->policy);
  });
  if (status != engine::kStatusSuccess) return;  // the ticket has reported it
  DrainQueue();
}

void Gateway::AcquireDropped(policy::PolicyId policy, std::uint32_t status) {
  acquires_queued_.erase(policy);
  pending_acquires_.erase(policy);
  const std::string* name = ConnectionNameFor(policy);
  spdlog::warn("{}: acquire refused: negotiation queue full (max_queue {}): status 0x{:08X}",
               name ? *name : "?", queue_.max_depth(), status);
  dataplane_->AcquireFailed(policy);
}

void Gateway::StartAcquired(policy::PolicyId policy) {
  acquires_queued_.erase(policy);
  const std::string* name = ConnectionNameFor(policy);
  if (name == nullptr || pending_acquires_.count(policy) == 0) return;
  for (auto& [spi, e] : ike_sas_) {
    ike::IkeSa& sa = *e.sa;
    if (!sa.connection() || sa.connection()->name != *name || sa.state() == ike::IkeSa::State::kDead) continue;
    // An IKE SA exists or is on its way: its CHILD SA will serve the acquire.
    if (sa.state() == ike::IkeSa::State::kEstablished && sa.children().empty()) {
      sa.CreateChild(Now());
      Schedule(spi);
    }
    return;
  }
  spdlog::info("{}: acquire: traffic waits for a CHILD SA, initiating", *name);
  std::string err;
  if (!Initiate(*name, &err)) {
    spdlog::warn("{}: acquire failed: {}", *name, err);
    pending_acquires_.erase(policy);
    dataplane_->AcquireFailed(policy);
  }
}

void Gateway::OnExhausted(policy::PolicyId policy, std::uint32_t spi_out) {
  for (auto& [spi_in, c] : children_) {
    if (c.policy != policy || c.spi_out != spi_out) continue;
    auto it = ike_sas_.find(c.owner);
    if (it != ike_sas_.end()) {
      it->second.sa->RekeyChild(spi_in, Now());
      Schedule(it->first);
    }
    spdlog::warn("CHILD SA {:08x}_o ran out of sequence numbers: rekeying", spi_out);
  }
}

// ---------------------------------------------------------------- IkeSaHost

void Gateway::SendIke(ike::IkeSa& sa, const ike::Bytes& datagram) {
  auto it = ike_sas_.find(OurSpi(sa));
  // An initiator moves to NAT-T once it sees a NAT (2.23); a responder follows the peer.
  bool natt = it != ike_sas_.end() && it->second.natt;
  if (sa.role() == ike::IkeSa::Role::kInitiator && sa.nat_detected()) natt = true;
  io::Endpoint to = ToEndpoint(sa.remote());
  if (!natt) return SendIkeDatagram(to, datagram, false);
  if (sa.role() == ike::IkeSa::Role::kInitiator && to.port() == config_.global.ike_port) {
    ike::Address r = sa.remote();
    r.port = config_.global.natt_port;
    sa.set_remote(r);
    to = ToEndpoint(r);
  }
  if (it != ike_sas_.end()) it->second.natt = true;
  SendIkeDatagram(to, datagram, true);
}

void Gateway::SendIkeDatagram(const io::Endpoint& to, std::span<const std::uint8_t> msg, bool natt) {
  if (!natt) {
    ike_sock_->SendTo(to, msg);
    return;
  }
  // RFC 3948 2.2: IKE on the NAT-T port follows a four-octet zero marker.
  std::vector<std::uint8_t> framed(sizeof(kNonEspMarker) + msg.size());
  std::memcpy(framed.data() + sizeof(kNonEspMarker), msg.data(), msg.size());
  natt_sock_->SendTo(to, framed);
}

std::optional<std::uint32_t> Gateway::AllocateChildSpi(bool rekey, ike::NotifyType& refusal) {
  const sa::SpiAllocation a = sad_.AllocateSpi(rekey ? sa::SpiPurpose::kRekey : sa::SpiPurpose::kNew);
  if (a.status == sa::SpiStatus::kOk) return a.spi;
  ++counters_.failed_sas;
  refusal = ike::NotifyType::kTemporaryFailure;
  spdlog::warn("SPI pool refused a {} CHILD SA ({} of max_spi {} in use)",
               rekey ? "rekeyed" : "new", sad_.spi_pool().stats().in_use, config_.global.max_spi);
  return std::nullopt;
}

void Gateway::ReleaseChildSpi(std::uint32_t spi) { sad_.ReleaseSpi(spi); }

void Gateway::InstallChild(ike::IkeSa& sa, const ike::ChildSaInfo& child) {
  sa::ChildSaParams p;
  p.inbound_spi = child.spi_in;
  p.outbound_spi = child.spi_out;
  p.suite = child.algs.suite;
  p.inbound_keymat = child.keymat_in;
  p.outbound_keymat = child.keymat_out;
  p.esn = child.algs.esn;
  const auto conn_it = sa.connection() ? connections_.find(sa.connection()->name) : connections_.end();
  const Connection* c = conn_it != connections_.end() ? &conn_it->second : nullptr;
  if (c != nullptr) p.replay_window = c->cfg.replay_window;
  p.rekey_of = child.rekey_of != 0 && sad_.LookupInbound(child.rekey_of) ? child.rekey_of : 0;
  const sa::InstallStatus st = sad_.Install(p, Now());
  if (st != sa::InstallStatus::kOk) {
    spdlog::error("CHILD SA {:08x}: install failed: {}", child.spi_in, sa::ToString(st));
    return;
  }
  Child rec;
  rec.owner = OurSpi(sa);
  rec.policy = c != nullptr ? dataplane_->PolicyFor(c->cfg.name) : policy::kNoPolicy;
  rec.spi_out = child.spi_out;
  rec.rekey_of = child.rekey_of;
  rec.counters = std::make_shared<datapath::SaCounters>();
  datapath::InboundSpec in;
  in.spi = child.spi_in;
  in.suite = child.algs.suite;
  in.keymat = child.keymat_in;
  in.esn = child.algs.esn;
  in.replay_window = p.replay_window;
  in.policy = rec.policy;
  in.counters = rec.counters;
  // A rekey the peer started: we keep sending on the old SA until the peer shows it has the
  // new one — its first packet on it (OnFirstPacket) or its DELETE of the old one (RemoveChild),
  // whichever comes first (RFC 7296 2.8).
  const bool switch_now = child.rekey_of == 0 || child.we_initiated || children_.count(child.rekey_of) == 0;
  in.report_first_packet = !switch_now;
  dataplane_->InstallInbound(std::move(in));
  datapath::OutboundSpec out;
  out.policy = rec.policy;
  out.spi = child.spi_out;
  out.suite = child.algs.suite;
  out.keymat = child.keymat_out;
  out.esn = child.algs.esn;
  ike::Address peer = sa.remote();
  if (peer.port == config_.global.ike_port) peer.port = config_.global.natt_port;
  out.peer = ToEndpoint(peer);
  out.counters = rec.counters;
  rec.outbound = std::move(out);
  rec.outbound_deferred = !switch_now;
  rec.installed = Now();
  if (!switch_now) deferred_successor_[child.rekey_of] = child.spi_in;
  (child.rekey_of != 0 ? rekeys_ : negotiations_).Record(Now());
  if (child.rekey_of != 0) ++(child.we_initiated ? counters_.rekeys_completed : counters_.rekeys_answered);
  if (child.rekey_of != 0) rekey_scheduler_.Cancel(child.rekey_of);
  if (child.rekey_at != ike::TimePoint::max()) rekey_scheduler_.Schedule(child.spi_in, child.rekey_at);
  if (c != nullptr && (c->cfg.child_life_bytes != 0 || c->cfg.child_life_packets != 0)) {
    // Soft at 80-90 % of the hard value, at random, so SAs set up together do not rekey
    // together (as for the time lifetimes).
    const double soft = 0.8 + 0.1 * (crypto::RandomU32() / 4294967296.0);
    rec.hard_bytes = c->cfg.child_life_bytes;
    rec.hard_packets = c->cfg.child_life_packets;
    rec.soft_bytes = static_cast<std::uint64_t>(static_cast<double>(rec.hard_bytes) * soft);
    rec.soft_packets = static_cast<std::uint64_t>(static_cast<double>(rec.hard_packets) * soft);
    volume_limited_.insert(child.spi_in);
  }
  children_[child.spi_in] = std::move(rec);
  if (switch_now) UseOutbound(child.spi_in);
  pending_acquires_.erase(children_[child.spi_in].policy);
  spdlog::info("{}: CHILD SA {:08x}_i {:08x}_o INSTALLED ({}){}", sa.connection()->name,
               child.spi_in, child.spi_out, ike::Describe(child.algs),
               child.rekey_of ? " rekeying " + Hex(child.rekey_of, 8) : "");
}

void Gateway::RemoveChild(ike::IkeSa& sa, std::uint32_t spi_in) {
  rekey_scheduler_.Cancel(spi_in);
  // The data plane's inbound half lingers briefly: ESP sent before the peer's DELETE may still
  // be queued on UDP 4500 behind the DELETE, which came in on UDP 500 (a different queue). The
  // SPI goes back to the pool at once — lingering SAs must not eat the rekey reserve — and
  // cannot come back meanwhile: a freed slot's next SPI differs (SpiPool generations).
  sad_.Remove(spi_in);
  if (shutting_down_) {
    dataplane_->RemoveInbound(spi_in);
  } else {
    loop_->AddTimer("inbound_linger", kInboundLinger, [this, spi_in] { dataplane_->RemoveInbound(spi_in); });
  }
  std::uint32_t successor = 0;
  if (auto d = deferred_successor_.find(spi_in); d != deferred_successor_.end()) {
    successor = d->second;
    deferred_successor_.erase(d);
  }
  if (auto it = children_.find(spi_in); it != children_.end()) {
    const policy::PolicyId policy = it->second.policy;
    const std::uint32_t spi_out = it->second.spi_out;
    children_.erase(it);
    auto cur = current_outbound_.find(policy);
    if (cur != current_outbound_.end() && cur->second == spi_in) {
      // The SA carrying the policy's traffic is gone. Its rekey's successor takes over; else
      // the newest other CHILD SA of the policy (the survivor of simultaneous rekeys, 2.8.1).
      // The new one is set before anything is cleared, so no packet finds the policy without
      // an SA in between.
      if (children_.count(successor) == 0) {
        successor = 0;
        ike::TimePoint newest{};
        for (const auto& [spi, ch] : children_) {
          if (ch.policy == policy && (successor == 0 || ch.installed > newest)) {
            successor = spi;
            newest = ch.installed;
          }
        }
      }
      if (successor != 0) {
        UseOutbound(successor);
      } else {
        current_outbound_.erase(cur);
        dataplane_->ClearOutbound(policy, spi_out);
      }
    }
  }
  volume_limited_.erase(spi_in);
  spdlog::info("{}: CHILD SA {:08x}_i removed", sa.connection() ? sa.connection()->name : "?", spi_in);
}

std::shared_ptr<const ike::ConnectionParams> Gateway::ConnectionForPeer(const ike::Identity& peer,
                                                                        const ike::Address&) {
  // An exact identity beats a "%any" connection.
  for (const auto& [name, c] : connections_) {
    if (!c.params->remote_id_any && c.params->remote_id == peer) return c.params;
  }
  for (const auto& [name, c] : connections_) {
    if (c.params->remote_id_any) return c.params;
  }
  return nullptr;
}

void Gateway::StateChanged(ike::IkeSa& sa) {
  const std::string name = sa.connection() ? sa.connection()->name : "?";
  if (sa.state() == ike::IkeSa::State::kEstablished) {
    ++counters_.ike_established;
    if (auto it = ike_sas_.find(OurSpi(sa)); it != ike_sas_.end()) ForgetHalfOpen(it->second);
    spdlog::info("{}: IKE SA {}_i {}_r ESTABLISHED with {} ({})", name, Hex(sa.spi_i(), 16),
                 Hex(sa.spi_r(), 16), ike::ToString(sa.remote()),
                 sa.algorithms() ? ike::Describe(*sa.algorithms()) : "");
  } else if (sa.state() == ike::IkeSa::State::kDead) {
    if (sa.established_at() == ike::TimePoint{}) ++counters_.failed_sas;
    // Traffic held for this connection has nothing to wait for any more.
    const policy::PolicyId policy = sa.connection() ? dataplane_->PolicyFor(name) : policy::kNoPolicy;
    if (pending_acquires_.erase(policy) != 0) dataplane_->AcquireFailed(policy);
    spdlog::info("{}: IKE SA {}_i {}_r gone: {}", name, Hex(sa.spi_i(), 16), Hex(sa.spi_r(), 16),
                 sa.failure());
  }
}

std::uint64_t Gateway::NewIkeSpi() {
  std::uint64_t spi;
  do {
    spi = crypto::RandomU64();
  } while (spi == 0 || ike_sas_.count(spi) != 0 || offloaded_.count(spi) != 0);
  return spi;
}

void Gateway::AdoptIkeSa(ike::IkeSa& old, std::unique_ptr<ike::IkeSa> replacement) {
  const std::uint64_t ours = OurSpi(*replacement);
  SaEntry e;
  e.natt = ike_sas_.count(OurSpi(old)) ? ike_sas_.at(OurSpi(old)).natt : false;
  e.sa = std::move(replacement);
  ike::IkeSa& sa = *e.sa;
  ike_sas_[ours] = std::move(e);
  // Filed once the old SA's exchange is over (it starts the new one's queued requests last).
  adopted_.push_back(ours);
  for (const auto& c : sa.children()) {
    if (auto it = children_.find(c.spi_in); it != children_.end()) it->second.owner = ours;
  }
  spdlog::info("{}: IKE SA {}_i {}_r rekeyed to {}_i {}_r", sa.connection()->name,
               Hex(old.spi_i(), 16), Hex(old.spi_r(), 16), Hex(sa.spi_i(), 16), Hex(sa.spi_r(), 16));
}

void Gateway::OnFirstPacket(std::uint32_t spi_in) {
  auto c = children_.find(spi_in);
  if (c == children_.end() || !c->second.outbound_deferred) return;
  if (auto d = deferred_successor_.find(c->second.rekey_of); d != deferred_successor_.end() && d->second == spi_in)
    deferred_successor_.erase(d);
  UseOutbound(spi_in);
  ++counters_.outbound_switched_on_traffic;
}

void Gateway::UseOutbound(std::uint32_t spi_in) {
  auto c = children_.find(spi_in);
  if (c == children_.end() || c->second.policy == policy::kNoPolicy) return;
  c->second.outbound_deferred = false;
  current_outbound_[c->second.policy] = spi_in;
  dataplane_->SetOutbound(c->second.outbound);  // a copy: the record keeps its own
}

void Gateway::RetryChildRekey(ike::IkeSa&, std::uint32_t spi_in, ike::TimePoint at) {
  rekey_scheduler_.Schedule(spi_in, at);
}

// ---------------------------------------------------------------- operator commands

bool Gateway::Initiate(const std::string& name, std::string* error) {
  auto it = connections_.find(name);
  if (it == connections_.end()) return *error = "no connection named '" + name + "'", false;
  const auto& cfg = it->second.cfg;
  if (cfg.remote_addrs.empty() || cfg.remote_addrs[0] == "%any")
    return *error = "connection '" + name + "' has no remote address to initiate to", false;
  auto remote = io::Endpoint::Parse(cfg.remote_addrs[0], config_.global.ike_port);
  if (!remote) return *error = "bad remote address '" + cfg.remote_addrs[0] + "'", false;
  // Our address as the peer sees it: the configured one, else the listen address.
  std::string local_addr = config_.global.listen;
  if (!cfg.local_addrs.empty() && cfg.local_addrs[0] != "%any") local_addr = cfg.local_addrs[0];
  auto local = io::Endpoint::Parse(local_addr, config_.global.ike_port);
  const std::uint64_t spi = NewIkeSpi();
  SaEntry e;
  e.sa = std::make_unique<ike::IkeSa>(*this, ike_counters_, ike::IkeSa::Role::kInitiator,
                                      it->second.params, ToAddress(*local), ToAddress(*remote),
                                      spi, 0);
  ike::IkeSa* sa = e.sa.get();
  ike_sas_[spi] = std::move(e);
  sa->Initiate(Now());
  Schedule(spi);
  return true;
}

int Gateway::Terminate(const std::string& name) {
  int n = 0;
  for (auto& [spi, e] : ike_sas_) {
    if (e.sa->connection() && e.sa->connection()->name == name) {
      e.sa->Delete(Now());
      Schedule(spi);
      ++n;
    }
  }
  return n;
}

int Gateway::Rekey(const std::string& name, bool ike) {
  int n = 0;
  for (auto& [spi, e] : ike_sas_) {
    ike::IkeSa& sa = *e.sa;
    if (!sa.connection() || sa.connection()->name != name ||
        sa.state() != ike::IkeSa::State::kEstablished || sa.children().empty() && !ike)
      continue;
    if (ike) {
      n += sa.RekeyIke(Now());
    } else {
      std::vector<std::uint32_t> spis;
      for (const auto& c : sa.children()) spis.push_back(c.spi_in);
      for (std::uint32_t s : spis) n += sa.RekeyChild(s, Now());
    }
    Schedule(spi);
  }
  return n;
}

void Gateway::Shutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  spdlog::info("shutting down: deleting {} IKE SA(s)", ike_sas_.size());
  std::vector<std::uint64_t> all;
  for (auto& [spi, e] : ike_sas_) {
    e.sa->Delete(Now());
    all.push_back(spi);
  }
  for (std::uint64_t spi : all) Schedule(spi);
  // Peers that do not answer get kShutdownGrace; then we go regardless.
  loop_->AddTimer("shutdown_grace", kShutdownGrace, [this] { loop_->Stop(); });
  if (ike_sas_.empty()) loop_->Stop();
}

nlohmann::json Gateway::Handle(const nlohmann::json& req) {
  const std::string cmd = req.value("command", "");
  if (cmd == "sas") return Sas();
  if (cmd == "stats") return Stats();
  if (cmd == "reload") return Reload();
  if (cmd == "initiate") {
    std::string err;
    if (!Initiate(req.value("name", ""), &err)) return {{"error", err}};
    return {{"ok", true}, {"message", "initiating " + req.value("name", "")}};
  }
  if (cmd == "rekey") {
    const bool ike = req.value("ike", false);
    const int n = Rekey(req.value("name", ""), ike);
    if (n == 0) return {{"error", "nothing to rekey for connection '" + req.value("name", "") + "'"}};
    return {{"ok", true}, {"message", "rekeying " + std::to_string(n) + (ike ? " IKE SA(s)" : " CHILD SA(s)")}};
  }
  if (cmd == "crypto-fault") return dataplane_->CryptoFault(req.value("action", ""), req.value("ms", 0));
  if (cmd == "terminate") {
    const int n = Terminate(req.value("name", ""));
    if (n == 0) return {{"error", "no IKE SA for connection '" + req.value("name", "") + "'"}};
    return {{"ok", true}, {"message", "deleting " + std::to_string(n) + " IKE SA(s)"}};
  }
  return {{"error", "unknown command '" + cmd + "'"}};
}

nlohmann::json Gateway::Sas() const {
  nlohmann::json ikes = nlohmann::json::array();
  for (const auto& [ours, e] : ike_sas_) {
    const ike::IkeSa& sa = *e.sa;
    nlohmann::json j = {
        {"name", sa.connection() ? sa.connection()->name : ""},
        {"state", ike::ToString(sa.state())},
        {"role", sa.role() == ike::IkeSa::Role::kInitiator ? "initiator" : "responder"},
        {"spi_i", Hex(sa.spi_i(), 16)},
        {"spi_r", Hex(sa.spi_r(), 16)},
        {"local", ike::ToString(sa.local())},
        {"remote", ike::ToString(sa.remote())},
        {"algorithms", sa.algorithms() ? ike::Describe(*sa.algorithms()) : ""},
        {"nat_detected", sa.nat_detected()},
    };
    nlohmann::json children = nlohmann::json::array();
    for (const auto& c : sa.children()) {
      nlohmann::json cj = {{"spi_in", Hex(c.spi_in, 8)},
                           {"spi_out", Hex(c.spi_out, 8)},
                           {"algorithms", ike::Describe(c.algs)},
                           {"local_ts", SelectorsJson(c.local_ts)},
                           {"remote_ts", SelectorsJson(c.remote_ts)},
                           {"state", "INSTALLED"}};
      const ike::TimePoint now = Now();
      auto secs = [&](ike::TimePoint t) -> nlohmann::json {
        if (t == ike::TimePoint::max()) return nullptr;
        return std::chrono::duration_cast<std::chrono::seconds>(t - now).count();
      };
      cj["installed_seconds_ago"] = std::chrono::duration_cast<std::chrono::seconds>(now - c.installed).count();
      cj["rekey_in_seconds"] = secs(c.rekey_at);
      cj["expires_in_seconds"] = secs(c.expire_at);
      if (auto it = children_.find(c.spi_in); it != children_.end() && it->second.counters) {
        // One counter pair per CHILD SA, fed by both directions' threads.
        cj["packets"] = it->second.counters->packets.load();
        cj["bytes"] = it->second.counters->bytes.load();
      }
      children.push_back(std::move(cj));
    }
    j["children"] = std::move(children);
    ikes.push_back(std::move(j));
  }
  return {{"ike_sas", std::move(ikes)}};
}

nlohmann::json Gateway::Stats() {
  std::size_t half_open = offloaded_.size(), established = 0;
  for (const auto& [ours, e] : ike_sas_) {
    if (e.sa->state() == ike::IkeSa::State::kEstablished) ++established;
    else if (e.sa->state() != ike::IkeSa::State::kDead) ++half_open;
  }
  const engine::WorkerPool::Stats workers = workers_->stats();
  // The shortest configured lifetimes, for `spigot doctor` (its snapshot "config" object).
  std::int64_t ike_life = 0, child_life = 0;
  for (const auto& [name, c] : connections_) {
    const auto shorter = [](std::int64_t cur, std::chrono::seconds v) {
      return v.count() > 0 && (cur == 0 || v.count() < cur) ? v.count() : cur;
    };
    ike_life = shorter(ike_life, c.cfg.ike_rekey_time);
    child_life = shorter(child_life, c.cfg.child_rekey_time);
  }
  const auto pool = sad_.spi_pool().stats();
  const datapath::Counters& dp = dataplane_->counters();
  return {
      {"active_sas", sad_.size()},
      // CHILD SAs being negotiated: one for each IKE SA not yet established (IKE_AUTH
      // carries the first CHILD SA).
      {"pending_sas", half_open},
      {"failed_sas", counters_.failed_sas},
      {"ike_sas", established},
      {"half_open_ike_sas", half_open},
      {"max_spi", config_.global.max_spi},
      {"spi_in_use", pool.in_use},
      {"spi_reserve", SpiReserve(config_.global)},
      {"max_queue", config_.global.max_queue},
      {"queue_depth", queue_.depth()},
      {"queue_overflows", queue_.stats().overflows},
      {"queue",
       {{"established", queue_.depth(engine::Priority::kEstablished)},
        {"half_open", queue_.depth(engine::Priority::kHalfOpen)},
        {"new", queue_.depth(engine::Priority::kNew)},
        {"processed", queue_.stats().processed},
        {"evicted", queue_.stats().evicted}}},
      {"negotiations_per_minute", negotiations_.PerMinute(Now())},
      {"rekeys_per_minute", rekeys_.PerMinute(Now())},
      {"rekeys",
       {{"max_per_second", rekey_scheduler_.rate()}, {"scheduled", rekey_scheduler_.size()},
        {"overdue", rekey_scheduler_.Overdue(Now())}, {"started", rekey_scheduler_.stats().started},
        {"deferred_by_rate_limit", rekey_scheduler_.stats().deferred},
        {"peak_per_second", rekey_scheduler_.stats().peak_per_second},
        {"completed", counters_.rekeys_completed}, {"answered", counters_.rekeys_answered},
        {"outbound_switched_on_traffic", counters_.outbound_switched_on_traffic},
        {"by_volume", counters_.volume_rekeys}, {"volume_deletes", counters_.volume_deletes}}},
      {"packets_dropped",
       {{"replay", dp.replay.load()}, {"bad_icv", dp.bad_icv.load()},
        {"unknown_spi", dp.unknown_spi.load()}, {"no_sa_queue_full", dp.no_sa_queue_full.load()},
        {"selector_mismatch", dp.selector_mismatch.load()}, {"malformed", dp.malformed.load()},
        {"no_policy", dp.no_policy.load()}, {"no_sa", dp.no_sa.load()},
        {"seq_exhausted", dp.seq_exhausted.load()}, {"acquire_failed", dp.acquire_dropped.load()},
        {"ike_forward_refused", dp.ike_forward_refused.load()},
        {"send_failed", dp.send_failed.load()}, {"tun_write_failed", dp.tun_write_failed.load()}}},
      {"traffic",
       {{"tx_packets", dp.tx_packets.load()}, {"tx_bytes", dp.tx_bytes.load()},
        {"rx_packets", dp.rx_packets.load()}, {"rx_bytes", dp.rx_bytes.load()},
        {"keepalives", dp.keepalives.load()}, {"acquires", dp.acquires.load()}}},
      {"crypto_engine", dataplane_->CryptoEngineStats()},
      {"ike",
       {{"received", counters_.ike_received}, {"invalid", counters_.ike_invalid + ike_counters_.invalid_messages},
        {"unknown_spi", counters_.ike_unknown_spi}, {"no_connection", counters_.ike_no_connection},
        {"retransmits", ike_counters_.retransmits}, {"auth_failures", ike_counters_.auth_failures},
        {"child_failures", ike_counters_.child_failures}, {"established", counters_.ike_established},
        {"rekey_retries", ike_counters_.rekey_retries},
        {"cookies_sent", counters_.cookies_sent}, {"cookies_invalid", counters_.cookies_invalid},
        {"init_in_progress", counters_.init_in_progress},
        {"timers_missed", counters_.timers_missed}}},
      {"config", {{"ike_lifetime", ike_life}, {"child_lifetime", child_life}, {"tunnels", established}}},
      {"ike_workers",
       {{"threads", workers_->threads()}, {"capacity", workers_->capacity()},
        {"in_flight", workers_->in_flight()}, {"completed", workers.completed}}},
  };
}

nlohmann::json Gateway::Reload() {
  const config::LoadResult r = config::LoadFile(config_path_);
  if (!r.ok) {
    spdlog::error("reload: {}", r.error);
    return {{"error", r.error}};
  }
  const config::ConfigDiff d = config::Diff(config_, r.config);
  config::Config old = config_;
  config_ = r.config;
  std::string err;
  if (!ApplyConnections(&err) || !dataplane_->ApplyConnections(config_.connections, &err)) {
    config_ = old;
    std::string ignored;
    ApplyConnections(&ignored);
    dataplane_->ApplyConnections(config_.connections, &ignored);
    spdlog::error("reload: {}", err);
    return {{"error", err}};
  }
  for (const auto& name : d.removed) Terminate(name);
  for (const auto& name : d.changed) {
    for (auto& [spi, e] : ike_sas_) {
      if (e.sa->connection() && e.sa->connection()->name == name)
      {
        e.sa->UpdateConnection(connections_.at(name).params);
        Schedule(spi);
      }
    }
  }
  if (d.limits_changed) {
    rekey_scheduler_.SetRate(MaxRekeysPerSecond());
    queue_.SetMaxDepth(config_.global.max_queue);
    sad_.SetSpiLimits(config_.global.max_spi, SpiReserve(config_.global));
  }
  for (const auto& name : d.added) {
    if (connections_.at(name).cfg.start_action == config::StartAction::kStart) Initiate(name, &err);
  }
  spdlog::info("reloaded {}: {} added, {} removed, {} changed", config_path_, d.added.size(),
               d.removed.size(), d.changed.size());
  for (const auto& key : d.restart_required) spdlog::warn("reload: {} changed, takes effect after a restart", key);
  return {{"ok", true},
          {"added", d.added},
          {"removed", d.removed},
          {"changed", d.changed},
          {"restart_required", d.restart_required}};
}

}  // namespace spigot::app
