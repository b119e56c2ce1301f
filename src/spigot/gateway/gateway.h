// The control thread of `spigot run`: IKE SAs and their timers, the intake of IKE datagrams
// (admission, cookies, the negotiation queue, the IKE worker hand-off), CHILD SAs into the
// data plane, acquires, operator commands, reload and shutdown.
//
// The gateway does nothing to the world itself: it is driven by calls (a datagram arrived, a
// tick, an acquire, a command) and acts through its Environment — the clock, the data plane,
// the IKE sockets, the control loop and the IKE workers (ports.h). app/ wires it to the real
// ones; gateway_test runs two gateways back to back with fakes, in milliseconds.
//
// Parts, each in its own file:
//   connections.h       the configured connections and the responder's lookups
//   ike_sa_table.h      IKE SAs by our SPI, their deadline heap, the half-open index
//   child_sa_manager.h  CHILD SAs: SA database, outbound SA per policy (make-before-break),
//                       rekey scheduler, volume lifetimes
//   intake.cc           IKE datagrams in: dispatch, cookies, the negotiation queue, workers
//   ike_sa_host.cc      what IKE SAs ask of the gateway (ike::IkeSaHost), and acquires
//   gateway.cc          construction, the tick, operator commands, reload, shutdown
//
// Timers: one tick every kTickPeriod (the caller's loop) runs, in this order: due IKE SA
// deadlines (IkeSaTable::TickDue) and every kSweepTicks the safety sweep; the data plane's
// retries; volume lifetimes; lingering inbound SAs; finished IKE workers; the negotiation
// queue; due CHILD rekeys. Shutdown deletes every IKE SA at its peer: it goes on while answers
// come (at most kShutdownLimit in all) and gives up kShutdownGrace after the last one.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <deque>
#include <functional>
#include <set>
#include <unordered_map>
#include <span>
#include <string>
#include <vector>

#include "spigot/config/config.h"
#include "spigot/engine/executor.h"
#include "spigot/engine/histogram.h"
#include "spigot/engine/negotiation_queue.h"
#include "spigot/gateway/address_pools.h"
#include "spigot/gateway/lease_store.h"
#include "spigot/gateway/child_sa_manager.h"
#include "spigot/gateway/connections.h"
#include "spigot/gateway/ike_sa_table.h"
#include "spigot/gateway/ports.h"
#include "spigot/ike/cookie.h"
#include "spigot/ike/ike_sa.h"
#include "spigot/io/clock.h"

namespace spigot::gateway {

class Gateway final : public ike::IkeSaHost {
 public:
  static constexpr auto kTickPeriod = std::chrono::milliseconds(100);
  static constexpr std::uint64_t kSweepTicks = 50;  // 5 s
  // Shutdown: exit once no DELETE was answered for kShutdownGrace (silent peers), and at the
  // latest kShutdownLimit after SIGTERM — below spigot.service's TimeoutStopSec (30 s).
  static constexpr auto kShutdownGrace = std::chrono::seconds(5);
  static constexpr auto kShutdownLimit = std::chrono::seconds(25);
  // Shutdown's DELETEs: this many per loop turn, at most kShutdownWindow unanswered.
  static constexpr std::size_t kShutdownBatch = 256;
  static constexpr std::size_t kShutdownWindow = 1024;
  // Cookie mode lasts this long after half-open SAs fall below cookie_threshold: longer than
  // an initiator's retransmissions of one IKE_SA_INIT (1 + 2 + 4 + 8 + 16 s).
  static constexpr auto kCookieHold = std::chrono::seconds(40);
  // Negotiation-queue items run per turn; the rest waits for the next turn of the loop.
  static constexpr std::size_t kQueueSlice = 128;

  struct Environment {
    io::Clock& clock;
    DataPlane& dataplane;
    IkeTransport& transport;
    ControlLoop& loop;
    engine::Executor& workers;
    // Makes the RADIUS client of remote_auth = "eap-radius" on the control loop (the daemon's
    // radius::Client::Create); empty where there is none (then eap-radius is refused).
    std::function<std::shared_ptr<radius::Client>(radius::ClientOptions, std::string*)> make_radius = {};
    // The host's addresses and routes (MOBIKE as original initiator, the local address of an
    // initiator on a wildcard listen); null: neither is looked up.
    HostNetwork* host = nullptr;
  };

  struct Counters {
    std::uint64_t ike_received = 0;
    std::uint64_t ike_invalid = 0;        // unparsable header
    std::uint64_t ike_truncated = 0;      // larger than the receive buffer (OnTruncatedIke)
    std::uint64_t ike_unknown_spi = 0;    // no IKE SA for the SPIs
    std::uint64_t ike_no_connection = 0;  // IKE_SA_INIT from an address no connection accepts
    std::uint64_t failed_sas = 0;
    std::uint64_t ike_established = 0;
    std::uint64_t cookies_sent = 0;     // IKE_SA_INIT answered with COOKIE (RFC 7296 2.6)
    std::uint64_t cookies_invalid = 0;  // IKE_SA_INIT with a cookie that does not verify
    // IKE_SA_INIT retransmitted while a worker still answers the original (the answer is on
    // its way), or arriving after the SA it created was established: dropped.
    std::uint64_t init_in_progress = 0;
    // Peers' CFG_REQUESTs answered with INTERNAL_ADDRESS_FAILURE (pool exhausted, or no pool
    // of the family asked for).
    std::uint64_t pool_refused = 0;
    std::uint64_t acquires_refused = 0;  // acquires the negotiation queue refused or evicted
    // Older IKE SAs of a peer deleted for its new one (INITIAL_CONTACT or unique = replace),
    // and new ones deleted because the peer already had one (unique = keep).
    std::uint64_t unique_replaced = 0;
    std::uint64_t unique_refused = 0;
    // EAP answers (RADIUS) that could not wait for a turn of the loop of their own because its
    // queue was full, and were answered inside the RADIUS client's callback instead.
    std::uint64_t eap_resumed_inline = 0;
    // RADIUS Framed-IP-Addresses not given (outside the connection's pools, or in use); the
    // CFG_REQUEST is answered as with an exhausted pool.
    std::uint64_t framed_ip_refused = 0;
    // Times the data path's command backlog reached bounds::kDataplaneBacklog and new
    // negotiations (new IKE SAs, IKE_AUTHs) were held in the negotiation queue until it drained.
    std::uint64_t dataplane_backlog_holds = 0;
  };

  struct ReloadResult {
    bool ok = false;
    std::string error;
    config::ConfigDiff diff;
  };

  // `config` was validated by config::LoadFile; `config_path` is what reload reads.
  static std::unique_ptr<Gateway> Create(config::Config config, std::string config_path,
                                         Environment env, std::string* error);
  ~Gateway() override;

  // Initiates the connections with start_action = "start".
  void Start();

  // IKE datagrams in. Responses are processed at once; requests go to the negotiation queue,
  // worked by WorkQueue (call it once after a batch, so the batch is prioritised together).
  // `to`: the local address it came to, if the socket knows it (a wildcard listen with packet
  // info); a new responder IKE SA takes it as its own address.
  void ReceiveIke(std::span<const std::uint8_t> datagram, const io::Endpoint& from, bool natt_port,
                  const io::IpAddress& to = {});
  void WorkQueue();
  // A datagram on an IKE port was larger than the receive buffer: dropped, counted here.
  void OnTruncatedIke() { ++counters_.ike_truncated; }
  // From the data plane.
  void OnAcquire(policy::PolicyId policy);
  void OnFirstPacket(std::uint32_t spi_in);
  // The newest authentic packet of CHILD SA `spi_in` came from `from`, not from its peer: its
  // IKE SA (and with it every CHILD SA) moves there if RFC 7296 2.23 allows (IkeSa::FollowEspSource).
  void OnNewSource(std::uint32_t spi_in, const io::Endpoint& from);
  void OnExhausted(policy::PolicyId policy, std::uint32_t spi_out);
  // Every kTickPeriod.
  void Tick();
  // The host's addresses or routes changed (netlink RTM_NEWADDR / RTM_DELADDR / RTM_NEWROUTE /
  // RTM_DELROUTE, or a lost notification).
  // Events are debounced (an address swap is a delete and an add in a burst): kAddressSettle
  // after the last one, the IKE SAs we initiated with MOBIKE whose local address is gone, or
  // whose route to the peer now leaves from another address, move there (RFC 4555 3.5).
  void OnAddressesChanged();
  static constexpr auto kAddressSettle = std::chrono::milliseconds(200);

  // Operator commands.
  bool Initiate(const std::string& name, std::string* error);
  int Terminate(const std::string& name);
  int Rekey(const std::string& name, bool ike);
  ReloadResult Reload();  // re-reads config_path
  ReloadResult Reload(config::Config next);
  // Deletes every IKE SA toward its peer; finished() once they are gone or the grace is over.
  void Shutdown();
  bool finished() const;

  // Read-only views for stats and sas (control/gateway_commands.h).
  const config::Config& config() const { return config_; }
  const Connections& connections() const { return connections_; }
  const IkeSaTable& ike_sas() const { return table_; }
  ChildSaManager& children() { return children_; }
  const ChildSaManager& children() const { return children_; }
  const engine::NegotiationQueue& queue() const { return queue_; }
  // IKE SAs from IKE_SA_INIT to ESTABLISHED (IKE_AUTH and its first CHILD SA included), and
  // IKE work from its arrival in the negotiation queue to its turn (metrics_listen).
  const engine::Histogram& negotiation_seconds() const { return negotiation_seconds_; }
  const engine::Histogram& queue_wait_seconds() const { return queue_wait_seconds_; }
  // The control thread's lag: how late each Tick ran after the deadline it was due at (the
  // tick before it plus kTickPeriod, or the first kTickPeriod after a tick that ran a period
  // or more late: the loop's repeating timer skips missed periods so). What this thread's other
  // work (IKE datagrams, operator commands) made its timers wait. The first tick, whose
  // deadline is not known here, is not counted.
  const engine::Histogram& tick_lag_seconds() const { return tick_lag_seconds_; }
  const engine::Executor& workers() const { return env_.workers; }
  DataPlane& dataplane() { return env_.dataplane; }
  const Counters& counters() const { return counters_; }
  const ike::IkeCounters& ike_counters() const { return ike_counters_; }
  std::uint32_t spi_reserve() const;
  ike::TimePoint Now() const { return env_.clock.Now(); }

  // ike::IkeSaHost (ike_sa_host.cc).
  void SendIke(ike::IkeSa& sa, const ike::Bytes& datagram) override;
  void SendIkeTo(ike::IkeSa& sa, const ike::Bytes& datagram, const ike::Address& to) override;
  std::optional<std::uint32_t> AllocateChildSpi(bool rekey, ike::NotifyType& refusal) override;
  void ReleaseChildSpi(std::uint32_t spi) override;
  bool AdmitSelectors(ike::IkeSa& sa, const std::vector<ike::TrafficSelector>& local,
                      const std::vector<ike::TrafficSelector>& remote) override;
  void InstallChild(ike::IkeSa& sa, const ike::ChildSaInfo& child) override;
  void RemoveChild(ike::IkeSa& sa, std::uint32_t spi_in) override;
  std::shared_ptr<const ike::ConnectionParams> ConnectionForPeer(const ike::Identity& peer,
                                                                 const ike::Address& remote) override;
  void StateChanged(ike::IkeSa& sa) override;
  void WeakProposalRefused(ike::IkeSa& sa, ike::ProtocolId protocol, unsigned weak) override;
  std::uint64_t NewIkeSpi() override;
  void AdoptIkeSa(ike::IkeSa& old, std::unique_ptr<ike::IkeSa> replacement) override;
  void PeerMoved(ike::IkeSa& sa, const ike::Address& was) override;
  bool KeepsIkeRekeyCandidates() const override { return true; }
  void AdoptIkeSaBeside(ike::IkeSa& old, std::unique_ptr<ike::IkeSa> sa) override;
  ike::IkeSa* FindIkeSa(std::uint64_t our_spi) override;
  void IkeRekeySurvivor(ike::IkeSa& old, ike::IkeSa& survivor) override;
  void RetryChildRekey(ike::IkeSa& sa, std::uint32_t spi_in, ike::TimePoint at) override;
  // Dead peer detection: ESP from the peer counts as hearing from it; probes are limited to
  // MaxDpdPerSecond() a second.
  bool HeardFromPeer(ike::IkeSa& sa, ike::TimePoint since) override;
  bool AdmitLivenessCheck(ike::IkeSa& sa, ike::TimePoint now) override;
  double MaxDpdPerSecond() const;
  // EAP logins: the brute-force back-off per (user, peer address) (eap::LoginThrottle).
  std::optional<std::chrono::milliseconds> EapLoginBackoff(ike::IkeSa& sa, const std::string& user,
                                                           ike::TimePoint now) override;
  void EapLoginChecked(ike::IkeSa& sa, const std::string& user, bool ok, ike::TimePoint now) override;
  void EapStepReady(ike::IkeSa& sa) override;
  bool Offload(ike::IkeSa& sa, ike::OffloadKind kind, std::function<void()> work) override;
  eap::LoginThrottle::Stats EapThrottleStats() const { return login_throttle_.stats(Now()); }
  // Virtual IPs for a peer's CFG_REQUEST from its connection's `pools` (leases by identity).
  ike::CpResult AssignVirtualIps(ike::IkeSa& sa, bool want_v4, bool want_v6,
                                 ike::VirtualIps& out) override;

  const AddressPools& pools() const { return pools_; }
  // The lease database (global.lease_db); nullptr when none is configured.
  const LeaseStore* lease_store() const { return lease_store_.get(); }
  // nullptr until a [radius] table was configured.
  const radius::Client* radius() const { return radius_.get(); }

 private:
  struct OffloadJob;  // a first IKE_SA_INIT answered on an IKE worker (intake.cc)

  Gateway(config::Config config, std::string config_path, Environment env);
  bool Init(std::string* error);
  void ApplyLimits();
  double MaxRekeysPerSecond() const;

  // Intake (intake.cc).
  void ProcessIke(std::span<const std::uint8_t> msg, const io::Endpoint& from, bool natt_port,
                  const io::IpAddress& to);
  // Past cookie_threshold half-open SAs: true if the IKE_SA_INIT request carries a valid
  // cookie; otherwise answers with a fresh COOKIE (statelessly) and returns false.
  bool CookieAdmits(std::span<const std::uint8_t> msg, const ike::Header& h,
                    const io::Endpoint& from, bool natt_port, const io::IpAddress& to);
  void ScheduleQueueWork();
  // Answers a new peer's IKE_SA_INIT on an IKE worker; false if the pool has no room.
  bool OffloadInit(std::unique_ptr<ike::IkeSa> sa, std::span<const std::uint8_t> msg, bool natt,
                   HalfOpenKey key, ike::TimePoint now);
  void OffloadDone(std::shared_ptr<OffloadJob> job);  // on the worker
  void AdoptOffloaded();  // control thread: takes finished SAs into the table, sends answers

  // Unique identities (ike_sa_host.cc): a responder IKE SA just established by IKE_AUTH against
  // the other IKE SAs of the same connection and peer identity (config::Unique). Run after the
  // exchange, not inside it: the SA may have to delete itself.
  void ApplyUniqueness();

  // Where an IKE SA's datagrams and its CHILD SAs' ESP leave from: its local address when we
  // listen on the wildcard address (else the socket's own address serves).
  io::IpAddress SourceOf(const ike::IkeSa& sa) const;
  // MOBIKE as original initiator (ike_sa_host.cc): the addresses settled (OnAddressesChanged).
  void CheckLocalAddresses();
  // The local address IKE SA `sa` should use given the host's `addresses`: the one it has if
  // still right, else another (empty: none usable).
  io::IpAddress ChooseLocal(const ike::IkeSa& sa, const std::vector<io::IpAddress>& addresses);
  std::optional<ike::TimePoint> addresses_settle_at_;  // a check is due then
  bool listen_wildcard_ = false;  // global.listen is 0.0.0.0 or ::

  // Acquires (ike_sa_host.cc).
  void StartAcquired(policy::PolicyId policy);  // the acquire's turn in the negotiation queue
  // The queue refused or evicted an acquire: its held packets are dropped (counted).
  void AcquireDropped(policy::PolicyId policy, std::uint32_t status);
  const std::string* ConnectionNameFor(policy::PolicyId policy) const;
  // The leases IKE SA `ours` holds go back to their pools (its death; not its rekey).
  void ReleaseVirtualIps(std::uint64_t ours);
  // Writes the leases to global.leases_file if they changed (at most every
  // kLeasesSaveInterval from the tick, and when the gateway goes).
  void SaveLeases();

  config::Config config_;
  std::string config_path_;
  Environment env_;
  // Made when a [radius] table first appears; kept (and reconfigured) after that, since EAP
  // sessions of IKE SAs hold it.
  std::shared_ptr<radius::Client> radius_;
  bool ApplyRadius(const config::RadiusConfig& r, std::string* error);
  Connections connections_;
  // Before the table: IKE SAs give their CHILD SPIs back to the pool when they go, so the
  // SA database must outlive them (members are destroyed in reverse order).
  ChildSaManager children_;
  IkeSaTable table_;
  ike::CookieJar cookies_;
  ike::TimePoint cookies_until_{};  // cookie mode (see ProcessIke)
  ike::IkeCounters ike_counters_;
  Counters counters_;
  std::uint64_t ticks_ = 0;
  std::vector<std::uint64_t> unique_checks_;  // responder IKE SAs established, for ApplyUniqueness
  AddressPools pools_{env_.clock};
  std::unique_ptr<LeaseStore> lease_store_;
  // When the DPD probes of the last second started (AdmitLivenessCheck); at most
  // MaxDpdPerSecond() entries.
  std::deque<ike::TimePoint> dpd_recent_;
  eap::LoginThrottle login_throttle_;
  // Leases by the IKE SA (our SPI) holding them; moved to the replacement by an IKE rekey.
  struct HeldLeases {
    std::string identity;
    std::vector<AddressPools::Lease> leases;
  };
  std::unordered_map<std::uint64_t, HeldLeases> leases_held_;
  static constexpr auto kLeasesSaveInterval = std::chrono::seconds(2);
  bool leases_dirty_ = false;
  ike::TimePoint leases_saved_at_{};
  std::set<policy::PolicyId> pending_acquires_;
  std::set<policy::PolicyId> acquires_queued_;  // acquires waiting in the negotiation queue
  // IKE requests waiting for this thread (max_queue), by priority.
  engine::NegotiationQueue queue_{65536};
  engine::Histogram negotiation_seconds_{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
  engine::Histogram queue_wait_seconds_{0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5};
  engine::Histogram tick_lag_seconds_{0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01,
                                      0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5};
  ike::TimePoint tick_due_{};  // the next tick's deadline; none before the first tick
  bool queue_work_posted_ = false;
  bool held_for_backlog_ = false;  // WorkQueue: the data path's backlog holds new negotiations
  bool shutting_down_ = false;
  ike::TimePoint shutdown_progress_{};  // Shutdown began, or an IKE SA went since
  ike::TimePoint ShutdownDeadline() const {
    return std::min(shutdown_started_ + kShutdownLimit, shutdown_progress_ + kShutdownGrace);
  }
  ike::TimePoint shutdown_started_{};
  std::size_t shutdown_ike_sas_ = 0;  // in the table when Shutdown began
  // IKE SAs Shutdown has not sent a DELETE for yet (ContinueShutdown), newest last.
  std::vector<std::uint64_t> shutdown_pending_;
  bool shutdown_continue_posted_ = false;
  std::size_t shutdown_in_flight_ = 0;  // DELETEs sent, their IKE SA not dead yet
  void ContinueShutdown();
  void PostShutdownStep();
  void ShutdownSaGone();  // an IKE SA died while shutting down: room in the window
  // The log line of a shutdown: how many DELETEs the peers confirmed, how many not.
  void ReportShutdown() const;
  // Jobs the workers finished, waiting for the control thread (bounded by the pool capacity).
  std::mutex done_mu_;
  std::vector<std::shared_ptr<OffloadJob>> done_;  // guarded by done_mu_
  std::vector<std::uint64_t> sa_work_done_;  // IKE SAs whose offloaded work finished; guarded by done_mu_
  // The latest copy of an IKE_SA_INIT request that arrived while a worker answered its first
  // one, by our SPI: the SA receives it when adopted. At most one per offloaded SA.
  struct InitRetry {
    std::vector<std::uint8_t> bytes;
    io::Endpoint from;
    bool natt = false;
  };
  std::unordered_map<std::uint64_t, InitRetry> init_retries_;
  std::atomic<bool> done_posted_{false};
};

}  // namespace spigot::gateway
