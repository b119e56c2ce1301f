// One thread's share of the load generator: its initiators (IkeSa objects, each touched only by
// this thread) on their own event loop and UDP sockets.
//
// Initiator i (numbered from 1 across all workers) has identity FQDN "<id_prefix>-<i>" (or,
// with shared_identity, the connection's local_id, as certificate logins do: loadgen/auth.h) and
// its own random IKE SPI; the j-th initiator of a worker sends from the worker's socket j % sockets.
// With N initiators over S sockets, up to ceil(N / S) of them share a source port (the
// responder tells them apart by SPI, as it must for initiators behind one NAT).
//
// Timers (all on the loop thread, every kTickPeriod):
//   start     - the schedule says another initiator is due: create it and send IKE_SA_INIT
//               (`rate` per second from `start`, evenly).
//   ike       - an IKE SA's NextDeadline() passed: IkeSa::Tick (retransmits with back-off,
//               CHILD SA rekeys at child_rekey_time less jitter, liveness). Deadlines live in a
//               DeadlineHeap keyed by our SPI, so a tick costs O(due SAs), not O(all SAs).
//   finish    - Finish() was called: IKE SAs are deleted politely: DELETEs paced at
//               delete_rate with at most kDeleteWindow unanswered at once, so a slow
//               responder sets the pace instead of dropping them. Run() returns once every
//               DELETE is answered, or when kDeleteGrace passes without one being sent or
//               answered (the responder has stopped answering).
//   traffic   - (with traffic) initiators with an echo request due send it: the first
//               kFirstEchoDelay after their first CHILD SA, then one every echo_interval; an
//               initiator is done when every reply is back or kReplyTimeout after its last
//               request (or when its IKE SA goes), and is counted as all / some / none.
//               Progress::settled() waits for all of them.
//
// NAT traversal (RFC 7296 2.23, RFC 3948 2.2): once an IKE SA detects a NAT (strongSwan with
// kernel-libipsec fakes one to get UDP-encapsulated ESP), its messages go to the target's
// natt_port with the four-byte zero non-ESP marker, from the same source port; datagrams from
// natt_port are expected to carry the marker; anything else there (ESP, keepalives) is
// ignored, except ESP with traffic (below).
//
// Road warriors (vips): each initiator asks for an IPv4 virtual IP (CFG_REQUEST); an
// INTERNAL_ADDRESS_FAILURE fails it with that reason. With traffic, once its first CHILD SA is
// up it sends `packets` ICMP echo requests from the virtual IP to traffic_dst, sealed with its
// own CHILD SA (loadgen/traffic.h) and sent as ESP in UDP (RFC 3948) from its own socket to the
// target's natt_port, whether or not its IKE moved there (the responder finds the SA by SPI).
// ESP from natt_port is opened with the CHILD SA its SPI names; a CHILD rekey adds a tunnel
// and new requests go out on it, RemoveChild drops the old one (so tunnels are bounded like
// the CHILD SPIs: kSpisPerInitiator each). Replies are counted once per sequence number.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "spigot/ike/ike_sa.h"
#include "spigot/io/endpoint.h"
#include "spigot/io/event_loop.h"
#include "spigot/io/udp_socket.h"
#include "spigot/loadgen/deadline_heap.h"
#include "spigot/loadgen/results.h"
#include "spigot/loadgen/spi_set.h"
#include "spigot/loadgen/traffic.h"

namespace spigot::loadgen {

struct WorkerConfig {
  io::Endpoint target;             // the responder's IKE address and port (normally 500)
  std::uint16_t natt_port = 4500;  // the responder's NAT-T port
  io::Endpoint source;             // our address; the sockets bind ephemeral ports on it
  std::size_t sockets = 1;         // distinct source ports
  // Proposals, credentials, selectors, lifetimes; local_id is replaced per initiator unless
  // shared_identity.
  std::shared_ptr<const ike::ConnectionParams> connection;
  std::string id_prefix = "loadgen";
  bool shared_identity = false;  // every initiator is connection->local_id
  std::uint32_t first_index = 1;  // identity number of this worker's first initiator
  std::uint32_t count = 0;        // initiators on this worker
  double rate = 1;                // new initiators per second, this worker's share
  double delete_rate = 1000;      // DELETEs per second at the end
  std::uint32_t shard = 0;        // this worker's number, for disjoint CHILD SPIs
  std::uint32_t shards = 1;
  bool vips = false;     // ask for an IPv4 virtual IP (connection->vips must say so)
  bool traffic = false;  // with vips: echo requests through each CHILD SA
  std::uint32_t packets = 5;  // echo requests per initiator, 1-65535
  Ipv4 traffic_dst{};
  std::chrono::milliseconds echo_interval{50};  // between one initiator's echo requests
  // Mobility (RFC 4555): a second address of ours. Move() sends every established initiator
  // there at once: it sends from its socket's twin bound on move_to, with UPDATE_SA_ADDRESSES.
  std::optional<io::Endpoint> move_to;
};

// Counters another thread may read while the worker runs (progress lines).
struct Progress {
  std::uint64_t started = 0;
  std::uint64_t established = 0;
  std::uint64_t failed = 0;
  std::uint64_t aborted = 0;
  std::uint64_t rekeys_completed = 0;
  std::uint64_t traffic_pending = 0;  // initiators whose echo requests or replies are due
  std::uint64_t echo_received = 0;
  std::uint64_t moves_pending = 0;  // moved initiators whose UPDATE_SA_ADDRESSES is unanswered
  // Every initiator started, each one established or failed, and the traffic done.
  bool settled() const {
    return established + failed + aborted == started && traffic_pending == 0 && moves_pending == 0;
  }
};

class Worker : public ike::IkeSaHost {
 public:
  static constexpr auto kTickPeriod = std::chrono::milliseconds(10);
  static constexpr auto kDeleteGrace = std::chrono::seconds(3);
  static constexpr std::size_t kDeleteWindow = 64;
  // Bound of the CHILD SPI set: one IKE SA holds its CHILD SA, a rekeyed one briefly, and a
  // negotiation in flight; anything beyond means SPIs leak and is refused (TEMPORARY_FAILURE).
  static constexpr std::size_t kSpisPerInitiator = 4;
  // Traffic pacing (see the timers above). The responder hands the CHILD SA to its data path
  // as it answers IKE_AUTH; the first delay covers the data path picking it up.
  static constexpr auto kFirstEchoDelay = std::chrono::milliseconds(20);
  static constexpr auto kReplyTimeout = std::chrono::seconds(2);

  // Binds the sockets and sets up the loop; nullptr and `error` on failure.
  static std::unique_ptr<Worker> Create(WorkerConfig config, std::string* error);
  ~Worker() override;

  // Runs the loop on the calling thread until Finish() has been handled. The first initiator
  // starts at `start`.
  void Run(ike::TimePoint start);
  // Thread-safe: stop starting initiators, delete the IKE SAs, then let Run() return.
  void Finish() { finish_requested_.store(true); }
  // Thread-safe, with move_to: every established initiator moves to it (once).
  void Move() { move_requested_.store(true); }
  // Thread-safe.
  Progress progress() const;
  std::size_t socket_count() const { return sockets_.size(); }
  // After Run() returned.
  Results& results() { return results_; }

  // IkeSaHost.
  void SendIke(ike::IkeSa& sa, const ike::Bytes& datagram) override;
  std::optional<std::uint32_t> AllocateChildSpi(bool rekey, ike::NotifyType& refusal) override;
  void ReleaseChildSpi(std::uint32_t spi) override { spis_.Release(spi); }
  void InstallChild(ike::IkeSa& sa, const ike::ChildSaInfo& child) override;
  void RemoveChild(ike::IkeSa&, std::uint32_t spi_in) override;
  std::shared_ptr<const ike::ConnectionParams> ConnectionForPeer(const ike::Identity&,
                                                                 const ike::Address&) override {
    return nullptr;  // we only initiate
  }
  void StateChanged(ike::IkeSa& sa) override;
  std::uint64_t NewIkeSpi() override;
  void AdoptIkeSa(ike::IkeSa& old, std::unique_ptr<ike::IkeSa> replacement) override;
  bool KeepsIkeRekeyCandidates() const override { return true; }
  void AdoptIkeSaBeside(ike::IkeSa& old, std::unique_ptr<ike::IkeSa> sa) override;
  ike::IkeSa* FindIkeSa(std::uint64_t our_spi) override;
  void IkeRekeySurvivor(ike::IkeSa& old, ike::IkeSa& survivor) override;

 private:
  enum class Outcome : std::uint8_t { kPending, kEstablished, kFailed, kAborted };
  struct Initiator {
    std::unique_ptr<ike::IkeSa> sa;  // null before it starts and once its IKE SA is gone
    ike::TimePoint started{};
    std::uint32_t socket = 0;
    Outcome outcome = Outcome::kPending;
    bool natt = false;  // moved to the NAT-T port
    bool delete_sent = false;  // our DELETE is out (Finish)
    // vips / traffic.
    Ipv4 vip{};
    std::uint32_t tunnel_spi = 0;  // spi_in of the CHILD SA new echo requests go out on

    std::uint32_t echo_sent = 0;
    std::uint32_t echo_received = 0;
    std::vector<bool> replied;  // by sequence number - 1
    ike::TimePoint next_echo{};
    ike::TimePoint traffic_deadline = ike::TimePoint::max();  // after the last request
    // Mobility: when it moved; its UPDATE_SA_ADDRESSES answered; an echo reply came to the
    // new address (the responder's CHILD SAs followed).
    ike::TimePoint moved_at{};
    bool moving = false;
    bool move_answered = false;
    bool move_recovered = false;
  };
  struct Tunnel {
    std::uint32_t initiator;
    std::unique_ptr<ChildTunnel> child;
    // Replaced by a rekey and deleted: still opens what arrives until then (strongSwan's
    // charon.delete_rekeyed_delay, 5 s there): the responder may have sealed replies with it
    // before it switched, and they can land after its DELETE.
    ike::TimePoint retire_at = ike::TimePoint::max();
    // A CHILD SA the responder rekeyed is ours to send on only once the responder is known to
    // have installed it: its DELETE of the predecessor came (it deletes only after installing
    // the successor), or a reply arrived on it. Until then the predecessor carries our echoes
    // (make-before-break as strongSwan does it: packets on the new SA would reach the
    // responder before it processed our CREATE_CHILD_SA response). Rekeys can chain before a
    // DELETE arrives: `successor` links them, `generation` orders them.
    std::uint32_t successor = 0;
    std::uint64_t generation = 0;
  };
  std::uint64_t next_generation_ = 1;
  static constexpr auto kRekeyedInboundGrace = std::chrono::seconds(2);
  void RetireTunnels(ike::TimePoint now);
  std::vector<std::uint32_t> retiring_;  // spi_in of tunnels with a retire_at
  // Where a datagram for one of our SPIs goes: the initiator's current IKE SA, or one an IKE
  // rekey replaced (kept in retired_ until its DELETE exchange ends).
  struct Route {
    std::uint32_t initiator;
    ike::IkeSa* sa;
  };

  explicit Worker(WorkerConfig config);
  bool Init(std::string* error);
  void Tick();
  void StartDue(ike::TimePoint now);
  void StartOne(ike::TimePoint now);
  void OnReadable(std::size_t socket);
  void OnDatagram(std::span<std::uint8_t> data, const io::Endpoint& from, std::size_t socket,
                  ike::TimePoint now);
  void OnEsp(std::span<std::uint8_t> esp, std::size_t socket, ike::TimePoint now);
  void MoveAll(ike::TimePoint now);
  void SettleMove(Initiator& ini, const ike::IkeSa& sa, ike::TimePoint now);
  void StartTraffic(std::uint32_t index, ike::TimePoint installed);
  void TrafficStep(ike::TimePoint now);
  void SendEcho(std::uint32_t index, Initiator& ini);
  void EndTraffic(const Initiator& ini);  // counts it as all / some / none
  // The ICMP identifier of initiator `index`: its number, modulo 2^16.
  std::uint16_t EchoId(std::uint32_t index) const;
  // After anything that may have changed an IKE SA: reschedule its timer, finish an
  // initiator whose IKE SA came up without a CHILD SA, and drop it once dead.
  void Settle(std::uint64_t spi, ike::TimePoint now);
  void Fail(Initiator& ini, const std::string& why);
  void FinishStep(ike::TimePoint now);
  void Publish();
  static std::uint64_t OurSpi(const ike::IkeSa& sa);

  WorkerConfig config_;
  io::Endpoint natt_target_;
  std::unique_ptr<io::EventLoop> loop_;
  // config_.sockets on the source address, then (with move_to) as many twins on move_to:
  // initiator j sends from socket j % sockets, and from its twin once moved.
  std::vector<std::unique_ptr<io::UdpSocket>> sockets_;
  bool moved_ = false;
  std::uint64_t moves_pending_ = 0;
  std::vector<std::uint8_t> recv_buffers_;
  std::vector<std::uint8_t> framed_;  // scratch: marker + IKE message
  ike::IkeCounters ike_counters_;
  ChildSpiSet spis_;

  std::vector<Initiator> initiators_;
  std::unordered_map<std::uint64_t, Route> routes_;
  std::unordered_map<std::uint64_t, std::unique_ptr<ike::IkeSa>> retired_;
  std::unordered_map<std::uint32_t, Tunnel> tunnels_;  // by spi_in
  std::vector<std::uint32_t> traffic_active_;          // initiator indexes, unordered
  DeadlineHeap timers_;
  std::vector<std::uint64_t> due_;  // scratch for DeadlineHeap::PopDue

  ike::TimePoint start_{};
  std::uint32_t next_start_ = 0;
  bool finishing_ = false;
  ike::TimePoint finish_started_{};
  ike::TimePoint last_delete_progress_{};  // a DELETE sent or answered
  std::uint32_t next_delete_ = 0;
  std::uint64_t deletes_sent_ = 0;
  std::size_t deletes_in_flight_ = 0;
  Results results_;

  std::atomic<bool> finish_requested_{false};
  std::atomic<bool> move_requested_{false};
  std::atomic<std::uint64_t> p_started_{0}, p_established_{0}, p_failed_{0}, p_aborted_{0},
      p_rekeys_{0}, p_traffic_pending_{0}, p_echo_received_{0}, p_moves_pending_{0};
};

}  // namespace spigot::loadgen
