// The data plane of `spigot run`: the TUN device, its routes, the SPD built from the
// connections, and the data-path threads (global.datapath_threads). Each thread serves both
// directions: it reads its own TUN queue (IFF_MULTI_QUEUE; the kernel keeps a flow on one
// queue) and seals, and reads its own UDP 4500 socket (SO_REUSEPORT) and opens. The control
// thread (IKE, control socket) drives it through this class.
//
// SAs across threads, without a lock per packet (datapath/path_set.h sends the commands):
//   - An outbound SA is in every thread's table (SetOutbound pushes it to every mailbox at
//     once), each copy with its own keys; the copies share one atomic sequence counter
//     (esp::OutboundState::shared_next_seq), so no number is sent twice.
//   - An inbound SA is in one thread's table, its owner (datapath::OwnerOf, SPI mod threads),
//     which alone moves its replay window. The kernel steers each ESP datagram to the owner's
//     socket by its SPI (a reuseport BPF program); one that lands elsewhere is handed to the
//     owner (datapath::Handoff). Make-before-break holds as with one thread: the install is in
//     the owner's mailbox before the IKE message that makes the peer use the SA is sent, and
//     a path takes its mailbox before the next packet it handles.
//   - Commands go out in one ordered backlog, so a removal never overtakes the install it
//     undoes on any thread.
//   - Trap policies hold packets in one queue for all threads (datapath::HeldPackets): one
//     acquire per policy, one bound per gateway.
#pragma once

#include <atomic>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "spigot/config/config.h"
#include "spigot/datapath/datapath.h"
#include "spigot/datapath/handoff.h"
#include "spigot/datapath/path_set.h"
#include "spigot/gateway/ports.h"
#include "spigot/io/event_loop.h"
#include "spigot/io/netlink.h"
#include "spigot/io/systemd.h"
#include "spigot/io/tun.h"
#include "spigot/io/udp_socket.h"

namespace spigot::app {

class Dataplane final : public gateway::DataPlane {
 public:
  // Callbacks run on the control thread (posted to `control_loop`).
  struct Hooks {
    // `to`: the local address it came to (empty unless the socket has packet info on).
    std::function<void(std::span<const std::uint8_t> ike, const io::Endpoint& from,
                       const io::IpAddress& to)> ike;
    std::function<void(policy::PolicyId)> acquire;
    // The first authentic packet on an SA installed with report_first_packet. Best effort: a
    // report the control loop refuses is counted (Counters::first_packet_refused).
    std::function<void(std::uint32_t spi)> first_packet;
    std::function<void(policy::PolicyId, std::uint32_t spi)> exhausted;
    // The newest authentic packet of CHILD SA `spi` (inbound) came from `from`, not from the
    // peer it was installed for. Best effort, as first_packet (Counters::new_source_refused).
    std::function<void(std::uint32_t spi, const io::Endpoint& from)> new_source;
  };

  // `progress` (may be null; must outlive the data plane): each data-path thread registers
  // there ("datapath-0", "datapath-1", ...) and beats once per loop turn and per batch, for the
  // service watchdog (io/systemd.h).
  // `ike_socket` (UDP 500, read by the control thread) is only watched for kernel_counters().
  // `natt_sockets`: UDP 4500, one per data-path thread (SO_REUSEPORT when more than one, bound
  // in this order); the control thread sends IKE on the first.
  static std::unique_ptr<Dataplane> Create(const config::GlobalConfig& global,
                                           const io::UdpSocket& ike_socket,
                                           std::vector<io::UdpSocket*> natt_sockets,
                                           io::EventLoop& control_loop, Hooks hooks,
                                           std::string* error,
                                           io::ProgressWatch* progress = nullptr);
  // global.datapath_threads resolved: 0 is one per core.
  static std::size_t Threads(const config::GlobalConfig& global);
  ~Dataplane() override;

  // Connections -> policies (stable ids by name), SPD, routes, trap flags. Control thread.
  bool ApplyConnections(const config::Config& config, std::string* error) override;
  policy::PolicyId PolicyFor(const std::string& connection) const override;
  // Remote selectors that are all single addresses (road warriors): the SPD's host policies,
  // O(N/S + S) per change; anything else: the SPD's tables, rebuilt.
  void SetSaPolicy(policy::PolicyId id, const std::vector<policy::Prefix>& locals,
                   const std::vector<policy::Prefix>& remotes) override;
  void RemoveSaPolicy(policy::PolicyId id) override;

  void InstallInbound(datapath::InboundSpec spec) override;
  void RemoveInbound(std::uint32_t spi) override;
  void SetOutbound(datapath::OutboundSpec spec) override;
  void ClearOutbound(policy::PolicyId policy, std::uint32_t spi) override;
  void AcquireFailed(policy::PolicyId policy) override;
  void MovePeer(const std::vector<std::uint32_t>& spis_in, const std::vector<std::uint32_t>& spis_out,
                const io::Endpoint& peer, const io::IpAddress& source) override;
  // The address goes on the TUN (/32 or /128) and the connection's remote_ts of its family
  // are routed into the TUN with it as the preferred source (replacing our route there, if
  // any). Failures are logged: the IKE SA stays up, traffic from other sources finds no SA.
  void AddVirtualIp(const std::string& connection, const policy::Prefix& address) override;
  // Its routes go (or take another virtual IP of the connection as their source), then the
  // address leaves the TUN unless another connection still has it.
  void RemoveVirtualIp(const std::string& connection, const policy::Prefix& address) override;
  // Mailbox pushes that found the mailbox full, retried from Tick().
  void Tick() override;

  const datapath::Counters& counters() const override { return counters_; }
  // {"threads": [{"rx", "tx", "handed_over", "handoff_dropped"}...], "steering" (steering_),
  // "handed_over", "handoff_dropped"}.
  nlohmann::json DatapathStats() const override;
  // The stats contract's "crypto_engine" object.
  nlohmann::json CryptoEngineStats() const override;
  std::size_t backlog() const override { return paths_.backlog(); }
  nlohmann::json BoundsStats() const override;
  // {"gso", "gro": on or not; gso_sends, gso_segments, gso_fallbacks, gro_batches,
  // gro_segments: io::UdpOffloadCounters}.
  nlohmann::json UdpOffloadStats() const override;
  // {"enabled": global.tun_offload, "vnet_hdr", "csum", "tso4", "tso6", "uso4", "uso6": what
  // the kernel granted, "offload_refusals": TUNSETOFFLOAD requests it refused at start, and
  // io::TunOffloadCounters}.
  nlohmann::json TunOffloadStats() const override;
  // The sockets' counters and kernel drops (read now: SO_MEMINFO), the TUN's drops since
  // Create() (netlink; a failed read leaves them at the last value read). Control thread.
  gateway::KernelCounters kernel_counters() const override;
  // `spigot debug crypto-fault ACTION [MS]`: drives the fault engine (crypto_engine = "fault").
  // {"error": ...} for any other engine or action.
  nlohmann::json CryptoFault(const std::string& action, std::int64_t ms) override;
  std::uint64_t ike_forwarded() const { return ike_forwarded_.load(); }
  // `spigot debug hang THREAD SECONDS`, the test hook of the service watchdog: data-path thread
  // THREAD (its index, "0" to threads - 1) stops for SECONDS (1 to kMaxHang): it sleeps
  // without reading packets, applying SA changes or beating. {"error"} for anything else.
  nlohmann::json Hang(const std::string& thread, std::int64_t seconds);
  static constexpr std::int64_t kMaxHang = 600;

 private:
  // One data-path thread and what belongs to it alone.
  struct Worker {
    std::size_t index = 0;
    io::UdpSocket* socket = nullptr;  // its UDP 4500
    std::unique_ptr<datapath::InboundPath> inbound;
    std::unique_ptr<datapath::OutboundPath> outbound;
    // Inbound ESP for the SAs it owns, received by another thread (null with one thread).
    std::unique_ptr<datapath::Handoff> inbox;
    // ESP packets it opened and delivered / sealed and sent; datagrams it handed to owners.
    alignas(64) std::atomic<std::uint64_t> rx{0};
    std::atomic<std::uint64_t> tx{0}, handed_over{0};
    io::ProgressWatch::Beat* beat = nullptr;  // service watchdog (null without one)
    std::atomic<std::int64_t> hang_until{0};  // Hang() deadline, steady-clock ns
    std::thread thread;
  };
  Dataplane(const io::UdpSocket& ike, std::vector<io::UdpSocket*> natt, io::EventLoop& loop,
            Hooks hooks)
      : ike_(ike), natt_(std::move(natt)), loop_(loop), hooks_(std::move(hooks)) {}
  void Run(Worker& w);
  // The test hook's sleep (Hang()); returns at once unless the thread was asked to hang.
  void HoldIfHung(Worker& w);
  // Asks the kernel to deliver each ESP datagram to the socket of its SA's owner.
  bool SteerBySpi(bool misroute);
  // With TUN offloads: the TUN for GroCoalescer, each flow to its queue (failed writes counted).
  class TunQueueWriter;
  // Routes `remotes` into the TUN, from an address of ours in c.local_ts.
  bool SetUpRoutes(const config::ConnectionConfig& c,
                   const std::vector<config::TrafficSelector>& remotes, std::string* error);
  // Routes the connection's remote_ts of `family` into the TUN from `source` (empty: delete
  // those routes).
  void RouteVirtualIp(const std::string& connection, policy::Family family,
                      std::span<const std::uint8_t> source);

  const io::UdpSocket& ike_;
  std::vector<io::UdpSocket*> natt_;  // by thread
  io::EventLoop& loop_;
  Hooks hooks_;
  datapath::Counters counters_;
  bool tun_offload_enabled_ = false;  // global.tun_offload
  io::TunOffloadCounters tun_offload_;
  std::string engine_name_ = "inline";
  // The engine outlives the monitor, which outlives the paths' pipelines (declaration order);
  // ~Dataplane stops the engine's threads before any of them goes.
  std::unique_ptr<engine::CryptoEngine> engine_;
  std::unique_ptr<engine::EngineMonitor> monitor_;
  policy::Spd spd_;
  // The SPD's tables: connections' policies (Rank::kFallback) and the CHILD SA policies that
  // are not host policies (sa_in_tables_).
  policy::SpdBuilder spd_tables_;
  std::set<policy::PolicyId> sa_in_tables_;
  std::unique_ptr<io::TunDevice> tun_;
  std::unique_ptr<io::Netlink> netlink_;
  // The TUN's counters when Create() opened it (a device left from an earlier run keeps its
  // counts), and the last ones read: kernel_counters() reports the difference.
  io::LinkStats tun_start_;
  mutable io::LinkStats tun_last_;
  std::vector<std::unique_ptr<Worker>> workers_;
  // How ESP finds its SA's thread: "none" (one thread), "spi" (SteerBySpi), "hash" (the
  // kernel's 4-tuple hash, then a hand-over), "misroute" (the test hook).
  std::string steering_ = "none";
  std::map<std::string, policy::PolicyId> policy_ids_;
  std::map<std::string, std::vector<std::pair<int, std::vector<std::uint8_t>>>> routes_;  // installed
  // Connections that ask for virtual IPs (vips): their remote_ts, routed only once an address
  // is assigned (AddVirtualIp), from it.
  std::map<std::string, std::vector<config::TrafficSelector>> vip_remote_ts_;
  // The virtual IPs on the TUN, by connection, in the order they came.
  std::map<std::string, std::vector<policy::Prefix>> virtual_ips_;
  // The threads' paths as the control thread sends them commands; the commands a full mailbox
  // refused wait there, in order (bounds::kDataplaneBacklog; never dropped).
  datapath::PathSet paths_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> ike_forwarded_{0};
};

}  // namespace spigot::app
