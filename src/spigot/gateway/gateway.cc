// Construction, the tick, operator commands, reload and shutdown (see gateway.h).
#include "spigot/gateway/gateway.h"

#include <cstdio>
#include <map>
#include <mutex>

#include <spdlog/spdlog.h>

#include "spigot/crypto/dh.h"
#include "spigot/ike/endpoint.h"

namespace spigot::gateway {

std::unique_ptr<Gateway> Gateway::Create(config::Config config, std::string config_path,
                                         Environment env, std::string* error) {
  std::unique_ptr<Gateway> g(new Gateway(std::move(config), std::move(config_path), env));
  if (!g->Init(error)) return nullptr;
  return g;
}

Gateway::Gateway(config::Config config, std::string config_path, Environment env)
    : config_(std::move(config)),
      config_path_(std::move(config_path)),
      env_(env),
      children_(env.dataplane, env.clock.Now()),
      cookies_(env.clock.Now()) {}

Gateway::~Gateway() {
  // Queued work holds acquire tickets that report to the data plane: drop it while the data
  // plane still exists. (The IKE workers, whose jobs report to us, are stopped by the owner
  // before we go.)
  queue_ = engine::NegotiationQueue(1);
  SaveLeases();
  if (shutting_down_) ReportShutdown();
}

// Every IKE SA still alive here sent a DELETE that the peer had not answered when no answer had
// come for kShutdownGrace or kShutdownLimit passed (or never got to send one: an exchange of its
// own was still outstanding, or the limit came first).
void Gateway::ReportShutdown() const {
  std::size_t unconfirmed = 0;
  for (const auto& [spi, e] : table_.entries()) {
    if (e.sa->state() != ike::IkeSa::State::kDead) ++unconfirmed;
  }
  std::size_t unsent = 0;
  for (std::uint64_t spi : shutdown_pending_) unsent += table_.Find(spi) != nullptr ? 1 : 0;
  const double took = std::chrono::duration<double>(Now() - shutdown_started_).count();
  if (unconfirmed == 0) {
    spdlog::info("shutdown: {} IKE SA(s) deleted, every DELETE confirmed by the peer, in {:.2f} s",
                 shutdown_ike_sas_, took);
  } else {
    spdlog::warn("shutdown: {} of {} IKE SA(s) not confirmed by the peer after {:.2f} s (no answer for "
                 "{} s, or the {} s limit; {} DELETE(s) not even sent); exiting anyway",
                 unconfirmed, shutdown_ike_sas_, took,
                 std::chrono::duration_cast<std::chrono::seconds>(kShutdownGrace).count(),
                 std::chrono::duration_cast<std::chrono::seconds>(kShutdownLimit).count(), unsent);
  }
}

void Gateway::SaveLeases() {
  if (!leases_dirty_ || config_.global.leases_file.empty()) return;
  std::string err;
  if (!pools_.Save(config_.global.leases_file, &err)) {
    spdlog::error("leases: {}", err);  // tried again at the next interval
  } else {
    leases_dirty_ = false;
  }
  leases_saved_at_ = Now();
}

bool Gateway::Init(std::string* error) {
  const auto listen = io::Endpoint::Parse(config_.global.listen, config_.global.ike_port);
  listen_wildcard_ = listen && listen->wildcard();
  if (!ApplyRadius(config_.radius, error)) return false;
  if (!connections_.Apply(config_, config_path_, radius_, error)) return false;
  pools_.Apply(config_.pools);
  // The database first: it is written before every CFG_REPLY, the JSON file only every
  // kLeasesSaveInterval, so where they disagree the database is the newer.
  std::vector<AddressPools::StoredLease> stored;
  if (!config_.global.lease_db.empty()) {
    lease_store_ = LeaseStore::Open(config_.global.lease_db, &stored);
    const std::size_t restored = pools_.Restore(stored);
    if (restored != stored.size()) {
      spdlog::info("lease database {}: {} of {} lease(s) restored (the others no longer fit the pools)",
                   config_.global.lease_db, restored, stored.size());
    }
  }
  if (const std::string& file = config_.global.leases_file; !file.empty()) {
    std::string err;
    if (!pools_.Load(file, &err)) {
      // Not fatal: the gateway serves without the old leases; the file is kept for a look.
      const std::string aside = file + ".unreadable";
      std::rename(file.c_str(), aside.c_str());
      spdlog::error("leases: {}; starting without them (the file is now {})", err, aside);
    }
  }
  if (lease_store_) lease_store_->Replace(pools_.Snapshot());  // what no longer fits goes
  const auto& g = config_.global;
  if (children_.sad().SetSpiLimits(g.max_spi, spi_reserve()) != sa::LimitsStatus::kOk) {
    *error = config_path_ + ": global.max_spi: rejected by the SPI pool";
    return false;
  }
  children_.rekey_scheduler().SetRate(MaxRekeysPerSecond());
  queue_.SetMaxDepth(g.max_queue);
  return env_.dataplane.ApplyConnections(config_, error);
}

void Gateway::Start() {
  for (const auto& [name, c] : connections_.all()) {
    if (c.cfg.start_action != config::StartAction::kStart) continue;
    std::string err;
    if (!Initiate(name, &err)) spdlog::warn("connection {}: {}", name, err);
  }
}

// The part of the SPI pool only rekeys may use, so established tunnels can always rekey
// when new ones have used up the rest (DESIGN.md, cause 1).
std::uint32_t Gateway::spi_reserve() const {
  const auto& g = config_.global;
  return static_cast<std::uint32_t>(std::uint64_t{g.max_spi} * g.spi_reserve_percent / 100);
}

namespace {

// One Diffie-Hellman of `group` (a key pair and a shared secret: one side of a rekey with PFS)
// per second on one core, measured once per group on the wall clock (it is the CPU that is
// measured): 20 ms, or one round for the MODP groups that take longer.
double DhPerSecond(std::uint16_t group) {
  static std::mutex mu;
  static std::map<std::uint16_t, double> measured;
  std::lock_guard lock(mu);
  if (auto it = measured.find(group); it != measured.end()) return it->second;
  using Wall = std::chrono::steady_clock;
  const auto peer = crypto::DhKeyPair::Generate(group);
  if (!peer) return measured[group] = 0;
  const auto start = Wall::now();
  int n = 0;
  crypto::SecureBytes shared;
  do {
    const auto kp = crypto::DhKeyPair::Generate(group);
    (void)kp->ComputeShared(peer->public_value(), shared);
    ++n;
  } while (Wall::now() - start < std::chrono::milliseconds(20));
  return measured[group] = n / std::chrono::duration<double>(Wall::now() - start).count();
}

}  // namespace

// An INFORMATIONAL round trip costs a fraction of a rekey's DH, and runs on this thread: ten
// times what a quarter of this core does rekeying with X25519 (the DH measured before issue 17
// moved it to the workers), unless the operator set the rekey budget.
double Gateway::MaxDpdPerSecond() const {
  if (config_.global.max_dpd_per_second != 0) return config_.global.max_dpd_per_second;
  if (config_.global.max_rekeys_per_second != 0) return 10.0 * config_.global.max_rekeys_per_second;
  return 10 * std::max(10.0, DhPerSecond(crypto::kDhGroupCurve25519) / 4);
}

double Gateway::MaxRekeysPerSecond() const {
  if (config_.global.max_rekeys_per_second != 0) return config_.global.max_rekeys_per_second;
  // Derived from the real cost: a CHILD rekey with PFS or an IKE rekey costs one DH on each
  // side, of the dearest group a connection proposes (X25519 when none has PFS: the IKE
  // rekeys), and runs on the IKE workers (this thread when there are none). Rekeys get a
  // quarter of what the workers do; the rest is for new peers and the peers' own rekeys.
  double slowest = DhPerSecond(crypto::kDhGroupCurve25519);
  for (const auto& [name, c] : connections_.all()) {
    for (const auto* proposals : {&c.params->ike_proposals, &c.params->esp_proposals}) {
      for (const auto& p : *proposals) {
        for (const auto& t : p.transforms) {
          if (t.type != ike::TransformType::kDh || t.id == 0) continue;
          const double rate = DhPerSecond(t.id);
          if (rate > 0) slowest = std::min(slowest, rate);
        }
      }
    }
  }
  const double cores = static_cast<double>(std::max<std::size_t>(1, env_.workers.threads()));
  return std::max(10.0, slowest * cores / 4);
}

void Gateway::Tick() {
  const ike::TimePoint now = Now();
  if (tick_due_ != ike::TimePoint{}) tick_lag_seconds_.Observe(std::max(now - tick_due_, ike::TimePoint::duration::zero()));
  tick_due_ = tick_due_ != ike::TimePoint{} && tick_due_ + kTickPeriod > now ? tick_due_ + kTickPeriod : now + kTickPeriod;
  table_.TickDue(now);
  if (++ticks_ % kSweepTicks == 0) table_.Sweep(now, kTickPeriod);
  env_.dataplane.Tick();
  children_.CheckVolumeLifetimes(now, table_);
  children_.ExpireLingering(now);
  AdoptOffloaded();  // in case a wake-up was refused
  WorkQueue();
  children_.StartDueRekeys(now, table_);
  if (leases_dirty_ && now - leases_saved_at_ >= kLeasesSaveInterval) SaveLeases();
  if (shutting_down_ && !shutdown_continue_posted_) ContinueShutdown();
  if (addresses_settle_at_ && now >= *addresses_settle_at_) {
    addresses_settle_at_.reset();
    CheckLocalAddresses();
  }
}

bool Gateway::finished() const {
  return shutting_down_ && (table_.empty() || Now() >= ShutdownDeadline());
}

// ---------------------------------------------------------------- operator commands

bool Gateway::Initiate(const std::string& name, std::string* error) {
  const Connection* c = connections_.Find(name);
  if (c == nullptr) return *error = "no connection named '" + name + "'", false;
  const auto& cfg = c->cfg;
  if (cfg.remote_addrs.empty() || cfg.remote_addrs[0] == "%any")
    return *error = "connection '" + name + "' has no remote address to initiate to", false;
  auto remote = io::Endpoint::Parse(cfg.remote_addrs[0], config_.global.ike_port);
  if (!remote) return *error = "bad remote address '" + cfg.remote_addrs[0] + "'", false;
  // Our address as the peer sees it: the configured one, else the listen address, or on a
  // wildcard listen the source of the host's route to the peer (what NAT detection must hash,
  // and what the datagrams leave from).
  std::string local_addr = config_.global.listen;
  if (!cfg.local_addrs.empty() && cfg.local_addrs[0] != "%any") local_addr = cfg.local_addrs[0];
  auto local = io::Endpoint::Parse(local_addr, config_.global.ike_port);
  if (!local) return *error = "bad local address '" + local_addr + "'", false;
  if (local->wildcard() && env_.host != nullptr) {
    const io::IpAddress source = env_.host->RouteSource(io::IpAddress::Of(*remote));
    if (source.family == local->family()) local = io::Endpoint::From(source, config_.global.ike_port);
  }
  // INITIAL_CONTACT (RFC 7296 2.4) when this is our only IKE SA with that peer (by address,
  // whatever the connection): a peer that still holds SAs of ours from before a restart may
  // drop them at once.
  const ike::Address peer = ike::ToAddress(*remote);
  bool only = true;
  for (const auto& [ours, other] : table_.entries()) {
    if (other.sa->state() != ike::IkeSa::State::kDead && other.sa->remote().family == peer.family &&
        other.sa->remote().ip == peer.ip)
      only = false;
  }
  const std::uint64_t spi = table_.NewSpi();
  SaEntry e;
  e.sa = std::make_unique<ike::IkeSa>(*this, ike_counters_, ike::IkeSa::Role::kInitiator,
                                      c->params, ike::ToAddress(*local), ike::ToAddress(*remote),
                                      spi, 0);
  e.sa->set_initial_contact(only);
  e.started = Now();
  ike::IkeSa& sa = *table_.Insert(spi, std::move(e)).sa;
  sa.Initiate(Now());
  table_.Schedule(spi);
  return true;
}

int Gateway::Terminate(const std::string& name) {
  int n = 0;
  for (auto& [spi, e] : table_.entries()) {
    if (e.sa->connection() && e.sa->connection()->name == name) {
      e.sa->Delete(Now());
      table_.Schedule(spi);
      ++n;
    }
  }
  return n;
}

int Gateway::Rekey(const std::string& name, bool ike) {
  int n = 0;
  for (auto& [spi, e] : table_.entries()) {
    ike::IkeSa& sa = *e.sa;
    if (!sa.connection() || sa.connection()->name != name ||
        sa.state() != ike::IkeSa::State::kEstablished || (sa.children().empty() && !ike))
      continue;
    if (ike) {
      n += sa.RekeyIke(Now());
    } else {
      std::vector<std::uint32_t> spis;
      for (const auto& c : sa.children()) spis.push_back(c.spi_in);
      for (std::uint32_t s : spis) n += sa.RekeyChild(s, Now());
    }
    table_.Schedule(spi);
  }
  return n;
}

void Gateway::Shutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  // Peers that do not answer get kShutdownGrace; answers extend it, up to kShutdownLimit.
  shutdown_started_ = Now();
  shutdown_progress_ = shutdown_started_;
  shutdown_ike_sas_ = table_.size();
  spdlog::info("shutting down: deleting {} IKE SA(s)", table_.size());
  shutdown_pending_.reserve(table_.size());
  for (const auto& [spi, e] : table_.entries()) shutdown_pending_.push_back(spi);
  ContinueShutdown();
}

// The DELETEs go out kShutdownBatch per loop turn and at most kShutdownWindow unanswered, so
// the loop reads the answers between batches: 100,000 sent at once would overflow our receive
// buffer and the peer's, and the loop would not see the deadline until all were sent. An
// answer (the IKE SA dies, ShutdownSaGone) opens the window again.
void Gateway::ContinueShutdown() {
  shutdown_continue_posted_ = false;
  const ike::TimePoint now = Now();
  if (shutdown_pending_.empty() || now >= ShutdownDeadline()) return;
  std::size_t budget = std::min(kShutdownBatch, kShutdownWindow - std::min(kShutdownWindow, shutdown_in_flight_));
  while (budget > 0 && !shutdown_pending_.empty()) {
    const std::uint64_t spi = shutdown_pending_.back();
    shutdown_pending_.pop_back();
    SaEntry* e = table_.Find(spi);
    if (e == nullptr || e->sa->state() == ike::IkeSa::State::kDead) continue;  // gone meanwhile
    // Counted before Delete: one not yet established dies inside it (ShutdownSaGone).
    ++shutdown_in_flight_;
    e->sa->Delete(now);
    table_.Schedule(spi);
    --budget;
  }
  PostShutdownStep();
}

// Another batch on a later loop turn (after the answers waiting now), if the window has room;
// otherwise ShutdownSaGone or the tick asks again.
void Gateway::PostShutdownStep() {
  if (shutdown_continue_posted_ || shutdown_pending_.empty() ||
      shutdown_in_flight_ + kShutdownBatch > kShutdownWindow) {
    return;
  }
  shutdown_continue_posted_ = env_.loop.Post([this] { ContinueShutdown(); });
}

void Gateway::ShutdownSaGone() {
  if (shutdown_in_flight_ > 0) --shutdown_in_flight_;
  shutdown_progress_ = Now();
  PostShutdownStep();
}

Gateway::ReloadResult Gateway::Reload() {
  const config::LoadResult r = config::LoadFile(config_path_);
  if (!r.ok) {
    spdlog::error("reload: {}", r.error);
    return {false, r.error, {}};
  }
  return Reload(r.config);
}

Gateway::ReloadResult Gateway::Reload(config::Config next) {
  ReloadResult result;
  result.diff = config::Diff(config_, next);
  const config::ConfigDiff& d = result.diff;
  config::Config old = std::move(config_);
  config_ = std::move(next);
  std::string err;
  if ((d.radius_changed && !ApplyRadius(config_.radius, &err)) ||
      !connections_.Apply(config_, config_path_, radius_, &err) ||
      !env_.dataplane.ApplyConnections(config_, &err)) {
    config_ = std::move(old);
    std::string ignored;
    if (d.radius_changed) ApplyRadius(config_.radius, &ignored);
    connections_.Apply(config_, config_path_, radius_, &ignored);
    env_.dataplane.ApplyConnections(config_, &ignored);
    spdlog::error("reload: {}", err);
    return {false, err, {}};
  }
  pools_.Apply(config_.pools);
  if (lease_store_ && d.pools_changed) lease_store_->Replace(pools_.Snapshot());
  for (const auto& name : d.removed) Terminate(name);
  for (const auto& name : d.changed) {
    const Connection* c = connections_.Find(name);
    for (auto& [spi, e] : table_.entries()) {
      if (e.sa->connection() && e.sa->connection()->name == name) {
        e.sa->UpdateConnection(c->params, Now());
        table_.Schedule(spi);
      }
    }
  }
  if (d.limits_changed) {
    ApplyLimits();
  } else if (!d.added.empty() || !d.changed.empty()) {
    // The derived rekey budget follows the DH groups the connections propose.
    children_.rekey_scheduler().SetRate(MaxRekeysPerSecond());
  }
  for (const auto& name : d.added) {
    if (connections_.Find(name)->cfg.start_action == config::StartAction::kStart)
      Initiate(name, &err);
  }
  spdlog::info("reloaded {}: {} added, {} removed, {} changed", config_path_, d.added.size(),
               d.removed.size(), d.changed.size());
  for (const auto& key : d.restart_required)
    spdlog::warn("reload: {} changed, takes effect after a restart", key);
  result.ok = true;
  return result;
}

bool Gateway::ApplyRadius(const config::RadiusConfig& r, std::string* error) {
  if (!r.configured()) return true;  // a client made before stays for the logins still using it
  radius::ClientOptions o;
  for (const auto& server : r.servers) {
    auto endpoint = io::Endpoint::Parse(server.address, server.port);
    if (!endpoint) {
      *error = config_path_ + ": radius.servers: \"" + server.address + "\" is not an address";
      return false;
    }
    o.servers.push_back(*endpoint);
  }
  const auto secret = r.secret.view();
  o.secret = crypto::SecureBytes::FromText(secret);
  o.timeout = r.timeout;
  o.retries = r.retries;
  o.max_outstanding = r.max_requests;
  o.nas_identifier = r.nas_identifier;
  std::string why;
  if (radius_) {
    if (!radius_->Reconfigure(std::move(o), &why)) {
      *error = config_path_ + ": radius: " + why;
      return false;
    }
    return true;
  }
  if (!env_.make_radius) {
    *error = config_path_ + ": radius: this gateway has no RADIUS transport";
    return false;
  }
  radius_ = env_.make_radius(std::move(o), &why);
  if (!radius_) {
    *error = config_path_ + ": radius: " + why;
    return false;
  }
  spdlog::info("RADIUS: {} server(s), timeout {} s, {} retries", r.servers.size(), r.timeout.count(), r.retries);
  return true;
}

void Gateway::ApplyLimits() {
  children_.rekey_scheduler().SetRate(MaxRekeysPerSecond());
  queue_.SetMaxDepth(config_.global.max_queue);
  children_.sad().SetSpiLimits(config_.global.max_spi, spi_reserve());
}

}  // namespace spigot::gateway
