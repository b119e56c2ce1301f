// The data plane of `spigot run`: the TUN device, its routes, the SPD built from the
// connections, and the two data-path threads (one reads the TUN and seals, one reads UDP 4500
// and opens). The control thread (IKE, control socket) drives it through this class.
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
  // there ("datapath-outbound", "datapath-inbound") and beats once per loop turn and per batch,
  // for the service watchdog (io/systemd.h).
  // `ike_socket` (UDP 500, read by the control thread) is only watched for kernel_counters().
  static std::unique_ptr<Dataplane> Create(const config::GlobalConfig& global,
                                           const io::UdpSocket& ike_socket,
                                           io::UdpSocket& natt_socket, io::EventLoop& control_loop,
                                           Hooks hooks, std::string* error,
                                           io::ProgressWatch* progress = nullptr);
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
  // The stats contract's "crypto_engine" object.
  nlohmann::json CryptoEngineStats() const override;
  std::size_t backlog() const override { return retries_.size(); }
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
  // `spigot debug hang THREAD SECONDS`, the test hook of the service watchdog: the data-path
  // thread THREAD ("outbound" or "inbound") stops for SECONDS (1 to kMaxHang): it sleeps
  // without reading packets, applying SA changes or beating. {"error"} for anything else.
  nlohmann::json Hang(const std::string& thread, std::int64_t seconds);
  static constexpr std::int64_t kMaxHang = 600;

 private:
  Dataplane(const io::UdpSocket& ike, io::UdpSocket& natt, io::EventLoop& loop, Hooks hooks)
      : ike_(ike), natt_(natt), loop_(loop), hooks_(std::move(hooks)) {}
  void OutboundThread();
  void InboundThread();
  // The test hook's sleep (Hang()); returns at once unless the thread was asked to hang.
  void HoldIfHung(int thread);
  // With TUN offloads: the TUN's queue 0 for GroCoalescer (failed writes counted).
  class TunQueueWriter;
  // Routes `remotes` into the TUN, from an address of ours in c.local_ts.
  bool SetUpRoutes(const config::ConnectionConfig& c,
                   const std::vector<config::TrafficSelector>& remotes, std::string* error);
  // Routes the connection's remote_ts of `family` into the TUN from `source` (empty: delete
  // those routes).
  void RouteVirtualIp(const std::string& connection, policy::Family family,
                      std::span<const std::uint8_t> source);
  template <typename Fn>
  void Retry(Fn fn) {
    // In order: once one command waits, every later one waits behind it.
    if (!retries_.empty() || !fn()) {
      retries_.push_back(std::function<bool()>(std::move(fn)));
      backlog_peak_ = std::max(backlog_peak_, retries_.size());
    }
  }

  const io::UdpSocket& ike_;
  io::UdpSocket& natt_;
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
  std::unique_ptr<datapath::InboundPath> inbound_;
  std::unique_ptr<datapath::OutboundPath> outbound_;
  std::map<std::string, policy::PolicyId> policy_ids_;
  std::map<std::string, std::vector<std::pair<int, std::vector<std::uint8_t>>>> routes_;  // installed
  // Connections that ask for virtual IPs (vips): their remote_ts, routed only once an address
  // is assigned (AddVirtualIp), from it.
  std::map<std::string, std::vector<config::TrafficSelector>> vip_remote_ts_;
  // The virtual IPs on the TUN, by connection, in the order they came.
  std::map<std::string, std::vector<policy::Prefix>> virtual_ips_;
  // Commands a full mailbox refused, in order (bounds::kDataplaneBacklog; never dropped).
  std::vector<std::function<bool()>> retries_;
  std::size_t backlog_peak_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> ike_forwarded_{0};
  std::thread outbound_thread_, inbound_thread_;
  // Service watchdog beats (null without a ProgressWatch); Hang() deadlines, steady-clock ns.
  io::ProgressWatch::Beat* outbound_beat_ = nullptr;
  io::ProgressWatch::Beat* inbound_beat_ = nullptr;
  std::atomic<std::int64_t> hang_until_[2] = {0, 0};  // [0] outbound, [1] inbound
};

}  // namespace spigot::app
