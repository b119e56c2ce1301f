// The gateway daemon (`spigot run`): the control thread. IKE over UDP 500 (and 4500, handed
// over by the data plane), CHILD SAs into the SA database and the data plane (dataplane.h),
// the control socket, reload and shutdown.
#pragma once

#include <atomic>
#include <map>
#include <mutex>
#include <queue>
#include <set>
#include <unordered_map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "spigot/app/dataplane.h"
#include "spigot/app/rate_window.h"
#include "spigot/config/config.h"
#include "spigot/engine/negotiation_queue.h"
#include "spigot/engine/rekey_scheduler.h"
#include "spigot/engine/worker_pool.h"
#include "spigot/control/control_server.h"
#include "spigot/ike/cookie.h"
#include "spigot/ike/ike_sa.h"
#include "spigot/io/event_loop.h"
#include "spigot/io/udp_socket.h"
#include "spigot/sa/sa_database.h"

namespace spigot::app {

class Gateway : public ike::IkeSaHost {
 public:
  // Loads nothing itself: `config` was validated by config::LoadFile.
  static std::unique_ptr<Gateway> Create(config::Config config, std::string config_path,
                                         std::string* error);
  ~Gateway() override;

  // Runs until SIGTERM/SIGINT, then deletes the IKE SAs toward their peers. Returns the exit code.
  int Run();

  // IkeSaHost.
  void SendIke(ike::IkeSa& sa, const ike::Bytes& datagram) override;
  std::optional<std::uint32_t> AllocateChildSpi(bool rekey, ike::NotifyType& refusal) override;
  void ReleaseChildSpi(std::uint32_t spi) override;
  void InstallChild(ike::IkeSa& sa, const ike::ChildSaInfo& child) override;
  void RemoveChild(ike::IkeSa& sa, std::uint32_t spi_in) override;
  std::shared_ptr<const ike::ConnectionParams> ConnectionForPeer(const ike::Identity& peer,
                                                                 const ike::Address& remote) override;
  void StateChanged(ike::IkeSa& sa) override;
  std::uint64_t NewIkeSpi() override;
  void AdoptIkeSa(ike::IkeSa& old, std::unique_ptr<ike::IkeSa> replacement) override;
  void RetryChildRekey(ike::IkeSa& sa, std::uint32_t spi_in, ike::TimePoint at) override;
  void OnFirstPacket(std::uint32_t spi_in);

 private:
  struct Connection {
    config::ConnectionConfig cfg;
    std::shared_ptr<ike::ConnectionParams> params;
  };
  using HalfOpenKey = std::pair<std::uint64_t, std::string>;  // (peer's SPIi, peer address)
  struct SaEntry {
    std::unique_ptr<ike::IkeSa> sa;
    bool natt = false;  // IKE moved to port 4500 (2.23)
    std::optional<HalfOpenKey> half_open;  // a responder's, until established or gone
    // The deadline this SA is filed under in timers_ (max: none), never later than its real
    // next deadline. A heap entry with another time is stale.
    ike::TimePoint scheduled = ike::TimePoint::max();
  };
  // A first IKE_SA_INIT being answered on an IKE worker (gateway.cc).
  struct OffloadJob;
  struct Counters {
    std::uint64_t ike_received = 0;
    std::uint64_t ike_invalid = 0;        // unparsable header
    std::uint64_t ike_unknown_spi = 0;    // no IKE SA for the SPIs
    std::uint64_t ike_no_connection = 0;  // IKE_SA_INIT from an address no connection accepts
    std::uint64_t truncated = 0;
    std::uint64_t failed_sas = 0;
    std::uint64_t ike_established = 0;
    std::uint64_t cookies_sent = 0;     // IKE_SA_INIT answered with COOKIE (RFC 7296 2.6)
    std::uint64_t cookies_invalid = 0;  // IKE_SA_INIT with a cookie that does not verify
    // IKE_SA_INIT retransmitted while a worker still answers the original: dropped, the
    // answer is on its way.
    std::uint64_t init_in_progress = 0;
    std::uint64_t timers_missed = 0;  // IKE SA deadlines only the safety sweep found (want 0)
    std::uint64_t rekeys_completed = 0;  // CHILD rekeys we started that installed a new SA
    std::uint64_t rekeys_answered = 0;   // CHILD rekeys the peer started
    // Rekeys the peer started whose outbound SA we switched to on its first packet on the new
    // inbound SA (rather than on its DELETE of the old one).
    std::uint64_t outbound_switched_on_traffic = 0;
    std::uint64_t volume_rekeys = 0;     // rekeys asked for by a bytes/packets soft lifetime
    std::uint64_t volume_deletes = 0;    // CHILD SAs deleted at a bytes/packets hard lifetime
  };

  Gateway(config::Config config, std::string config_path);
  bool Init(std::string* error);
  bool ApplyConnections(std::string* error);
  void OnIkePort();
  // An IKE datagram arrives: responses are processed at once, requests go through the
  // negotiation queue (ProcessIke runs them).
  void OnIke(std::span<const std::uint8_t> msg, const io::Endpoint& from, bool natt_port);
  void ProcessIke(std::span<const std::uint8_t> msg, const io::Endpoint& from, bool natt_port);
  void DrainQueue();
  void ScheduleDrain();
  // Answers a new peer's IKE_SA_INIT on an IKE worker; false if the pool has no room.
  bool OffloadInit(std::unique_ptr<ike::IkeSa> sa, std::span<const std::uint8_t> msg, bool natt,
               HalfOpenKey key, ike::TimePoint now);
  // Worker side: hands a finished job to the control thread.
  void OffloadDone(std::shared_ptr<OffloadJob> job);
  // Control thread: takes the SAs the workers finished into ike_sas_ and sends their answers.
  void AdoptOffloaded();
  void ForgetHalfOpen(SaEntry& e);
  void SendIkeDatagram(const io::Endpoint& to, std::span<const std::uint8_t> msg, bool natt);
  // Past cookie_threshold half-open SAs: true if the IKE_SA_INIT request carries a valid
  // cookie; otherwise answers with a fresh COOKIE (statelessly) and returns false.
  bool CookieAdmits(std::span<const std::uint8_t> msg, const ike::Header& h,
                    const io::Endpoint& from, bool natt_port);
  void Tick();
  // Files IKE SA `ours` in timers_ under its next deadline (after anything that may change it:
  // a received message, a request, a timer). A dead SA is filed as due now, to be removed.
  void Schedule(std::uint64_t ours);
  // Ticks one IKE SA whose deadline has come; removes it if it is dead. False if removed.
  bool TickSa(std::map<std::uint64_t, SaEntry>::iterator it, ike::TimePoint now);
  void OnAcquire(policy::PolicyId policy);
  void StartAcquired(policy::PolicyId policy);  // the acquire's turn in the negotiation queue
  // The queue refused or evicted an acquire: its held packets are dropped (counted).
  void AcquireDropped(policy::PolicyId policy, std::uint32_t status);
  void OnExhausted(policy::PolicyId policy, std::uint32_t spi_out);
  const std::string* ConnectionNameFor(policy::PolicyId policy) const;
  bool Initiate(const std::string& name, std::string* error);
  int Terminate(const std::string& name);
  int Rekey(const std::string& name, bool ike);
  void Shutdown();
  nlohmann::json Handle(const nlohmann::json& req);
  nlohmann::json Sas() const;
  nlohmann::json Stats();
  nlohmann::json Reload();
  const Connection* ConnectionForAddress(const io::Endpoint& from) const;
  std::uint64_t OurSpi(const ike::IkeSa& sa) const;
  ike::TimePoint Now() const { return ike::Clock::now(); }

  config::Config config_;
  std::string config_path_;
  std::map<std::string, Connection> connections_;
  std::unique_ptr<io::EventLoop> loop_;
  std::unique_ptr<io::UdpSocket> ike_sock_, natt_sock_;
  std::unique_ptr<control::ControlServer> control_;
  sa::SaDatabase sad_;
  ike::CookieJar cookies_{ike::Clock::now()};
  ike::TimePoint cookies_until_{};  // cookie mode (see ProcessIke)
  ike::IkeCounters ike_counters_;
  Counters counters_;
  // IKE SAs by our own SPI (SPIi for those we initiated, SPIr for the others).
  std::map<std::uint64_t, SaEntry> ike_sas_;
  // IKE SA deadlines (retransmits, half-open and liveness timers, lifetimes) by time: a tick
  // works the due ones only, O(due log n) rather than a walk of every IKE SA. A walk of all
  // every kSweepTicks ticks remains, as a safety net for a deadline change not filed here.
  using TimerEntry = std::pair<ike::TimePoint, std::uint64_t>;
  std::priority_queue<TimerEntry, std::vector<TimerEntry>, std::greater<TimerEntry>> timers_;
  std::uint64_t ticks_ = 0;
  std::vector<std::uint64_t> adopted_;  // IKE SAs from rekeys, to be filed by Schedule()
  // Half-open responders by (peer's SPIi, peer address): a retransmitted IKE_SA_INIT finds
  // the SA it created (2.1). Includes those a worker is still answering.
  std::map<HalfOpenKey, std::uint64_t> half_open_;
  // Our SPIs of the IKE SAs on a worker (not yet in ike_sas_), at most the pool's capacity.
  std::set<std::uint64_t> offloaded_;
  // CHILD SAs by inbound SPI, as the data plane knows them.
  struct Child {
    std::uint64_t owner = 0;  // our SPI of the IKE SA that negotiated it
    policy::PolicyId policy = policy::kNoPolicy;
    std::uint32_t spi_out = 0;
    std::uint32_t rekey_of = 0;
    std::shared_ptr<datapath::SaCounters> counters;
    // The outbound half, kept so that it can become the policy's current outbound SA at any
    // time (a rekey's successor, or the survivor when the current one is deleted).
    datapath::OutboundSpec outbound;
    // A rekey we answered: we keep sending on the old SA until the peer uses the new one or
    // deletes the old, so our first packets on the new one cannot beat its installation there
    // (RFC 7296 2.8).
    bool outbound_deferred = false;
    ike::TimePoint installed{};
    // Volume lifetimes (0: none): rekey at the soft values, delete at the hard ones.
    std::uint64_t soft_bytes = 0, hard_bytes = 0, soft_packets = 0, hard_packets = 0;
    bool volume_rekeyed = false, volume_deleted = false;
  };
  std::map<std::uint32_t, Child> children_;
  // Old inbound SPI -> the successor whose outbound switch waits for the old SA's deletion.
  std::unordered_map<std::uint32_t, std::uint32_t> deferred_successor_;
  // Per policy, the inbound SPI of the CHILD SA whose outbound half carries its traffic.
  std::unordered_map<policy::PolicyId, std::uint32_t> current_outbound_;
  void UseOutbound(std::uint32_t spi_in);
  // CHILD SAs with volume lifetimes, checked every tick (only these: the others need no scan).
  std::set<std::uint32_t> volume_limited_;
  void CheckVolumeLifetimes(ike::TimePoint now);
  std::set<policy::PolicyId> pending_acquires_;
  std::set<policy::PolicyId> acquires_queued_;  // acquires waiting in the negotiation queue
  // CHILD SAs negotiated (new) and rekeyed, per minute, for stats and `spigot doctor`.
  RateWindow negotiations_, rekeys_;
  // CHILD rekeys, spread at max_rekeys_per_second, most overdue first (cause 2).
  engine::RekeyScheduler rekey_scheduler_{1000, ike::Clock::now()};
  // IKE requests waiting for this thread (max_queue), by priority.
  engine::NegotiationQueue queue_{65536};
  bool drain_posted_ = false;
  double MaxRekeysPerSecond() const;
  std::unique_ptr<Dataplane> dataplane_;
  bool shutting_down_ = false;
  int exit_code_ = 0;
  // Jobs the workers finished, waiting for the control thread (bounded by the pool capacity).
  std::mutex done_mu_;
  std::vector<std::shared_ptr<OffloadJob>> done_;  // guarded by done_mu_
  std::atomic<bool> done_posted_{false};
  // The IKE workers (global.ike_workers). Last member: destroyed (joined) first, while
  // everything a running job touches still exists.
  std::unique_ptr<engine::WorkerPool> workers_;
};

}  // namespace spigot::app
