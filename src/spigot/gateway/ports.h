// Where the gateway meets the world (STYLE.md 2): the data plane, the IKE sockets and the
// control thread's event loop. Each has one real implementation in app/ (the daemon's
// threads, sockets and loop) and a fake in test_tools/ (gateway_test runs two gateways back
// to back in one process, time moved by test_tools::FakeClock). The clock is io::Clock and
// the IKE workers are an engine::Executor; both are injected the same way (Gateway::Environment).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "spigot/config/config.h"
#include "spigot/datapath/datapath.h"
#include "spigot/io/endpoint.h"
#include "spigot/policy/policy_id.h"

namespace spigot::gateway {

// Policy ids below this are connections' (the data plane numbers them); from it up, CHILD
// SAs' own (the gateway numbers them).
inline constexpr policy::PolicyId kFirstSaPolicy = 0x10000000;

// Every datagram accounted for: what each UDP socket took from the kernel, and what the kernel
// dropped before spigot could take it (the socket's receive queue full: SO_RXQ_OVFL /
// SO_MEMINFO), and the TUN device's drops since spigot opened it. Under any flood, datagrams
// the host received on a port = received + rx_overflow.
struct KernelCounters {
  struct Socket {
    std::uint16_t port = 0;
    std::uint64_t received = 0;     // datagrams read by spigot
    std::uint64_t rx_overflow = 0;  // datagrams the kernel dropped for this socket
  };
  Socket udp_ike, udp_natt;  // UDP 500 and UDP 4500 (ike_port, natt_port)
  // The TUN device's tx_dropped (packets routed into the tunnel that the kernel dropped before
  // spigot read them: its queue was full) and rx_dropped (packets spigot wrote that the kernel
  // dropped: the writes it refused, e.g. while the device is down, which spigot also counts in
  // tun_write_failed, and any it dropped after accepting them), since spigot opened it.
  std::uint64_t tun_tx_dropped = 0, tun_rx_dropped = 0;
};

// The data plane as the control thread drives it: policies per connection, inbound and
// outbound halves of CHILD SAs, acquire results. Every call is made on the control thread and
// returns at once; the real one publishes to its threads through bounded mailboxes.
class DataPlane {
 public:
  virtual ~DataPlane() = default;
  // Connections -> policies (stable ids by name), SPD, routes (remote_ts, and the virtual IP
  // pools of connections that hand them out), trap flags.
  virtual bool ApplyConnections(const config::Config& config, std::string* error) = 0;
  // The policy of a connection; policy::kNoPolicy if there is none. It is what a trap
  // (start_action = "trap") raises acquires on; a CHILD SA's traffic goes to a policy of its
  // own (SetSaPolicy), which wins over its connection's for the same selectors.
  virtual policy::PolicyId PolicyFor(const std::string& connection) const = 0;
  // A CHILD SA's own policy, from its negotiated (narrowed) selectors: every (local, remote)
  // pair of one family. `id` is chosen by the gateway (kFirstSaPolicy and
  // up) and kept by the SA's successors; setting it again replaces its pairs. Takes effect
  // before the call returns.
  virtual void SetSaPolicy(policy::PolicyId id, const std::vector<policy::Prefix>& locals,
                           const std::vector<policy::Prefix>& remotes) = 0;
  virtual void RemoveSaPolicy(policy::PolicyId id) = 0;
  virtual void InstallInbound(datapath::InboundSpec spec) = 0;
  virtual void RemoveInbound(std::uint32_t spi) = 0;
  // Makes `spec` the SA that carries the policy's outbound traffic (replacing the current one).
  virtual void SetOutbound(datapath::OutboundSpec spec) = 0;
  // The policy has no SA any more (only if `spi` is still its current one).
  virtual void ClearOutbound(policy::PolicyId policy, std::uint32_t spi) = 0;
  // The peer of these CHILD SAs (one IKE SA's) is at `peer` (its UDP 4500) from now on, and
  // our end at `source` (empty: the kernel's pick): the outbound halves send there from there,
  // all from the same packet on, and the inbound halves report sources other than `peer`.
  virtual void MovePeer(const std::vector<std::uint32_t>& spis_in, const std::vector<std::uint32_t>& spis_out,
                        const io::Endpoint& peer, const io::IpAddress& source) = 0;
  // The negotiation an acquire asked for will not come: drop the packets it holds.
  virtual void AcquireFailed(policy::PolicyId policy) = 0;
  // Remote access, initiator side: `address` (a host prefix) is our virtual IP on
  // `connection`, assigned by the peer (CFG_REPLY). The data plane puts it on the TUN and
  // routes the connection's remote_ts into the TUN with it as the preferred source, so local
  // traffic to the remote network leaves from it (and into the CHILD SA that stands for it).
  // Idempotent: adding an address that is there already changes nothing. The gateway adds it
  // when an initiator's IKE SA is established and removes it when the last live IKE SA of the
  // connection holding it goes (not on an IKE rekey: the address moves to the new IKE SA).
  virtual void AddVirtualIp(const std::string& connection, const policy::Prefix& address) = 0;
  // Takes the address and its routes away again; unknown addresses are ignored.
  virtual void RemoveVirtualIp(const std::string& connection, const policy::Prefix& address) = 0;
  // Called every gateway tick (mailbox retries).
  virtual void Tick() = 0;
  // Commands waiting on the control thread for room in a full mailbox (bounds::kDataplaneBacklog:
  // above it the gateway starts no new negotiation).
  virtual std::size_t backlog() const = 0;
  // The data plane's bounds for `spigot stats` "bounds": {"dataplane_mailbox": {"limit",
  // "in_use"}, "dataplane_backlog": {"limit", "in_use", "peak"}}.
  virtual nlohmann::json BoundsStats() const = 0;
  virtual const datapath::Counters& counters() const = 0;
  // The stats' "datapath" object: per data-path thread packets, hand-overs between threads.
  virtual nlohmann::json DatapathStats() const = 0;
  // The stats contract's "crypto_engine" object.
  virtual nlohmann::json CryptoEngineStats() const = 0;
  // The stats contract's "traffic.udp_offload" object: UDP GSO/GRO on UDP 4500.
  virtual nlohmann::json UdpOffloadStats() const = 0;
  // The stats contract's "traffic.tun_offload" object: the TUN device's offloads.
  virtual nlohmann::json TunOffloadStats() const = 0;
  // What the kernel counted for spigot's sockets and TUN device (KernelCounters).
  virtual KernelCounters kernel_counters() const = 0;
  // `spigot debug crypto-fault ACTION [MS]`; {"error": ...} where there is no fault engine.
  virtual nlohmann::json CryptoFault(const std::string& action, std::int64_t ms) = 0;
};

// The IKE sockets: UDP 500, and UDP 4500 where IKE follows a non-ESP marker (RFC 3948 2.2).
class IkeTransport {
 public:
  virtual ~IkeTransport() = default;
  // `natt`: send on the NAT-T port, behind the marker (the implementation adds it). `source`:
  // our address to send from (the IKE SA's local address; empty: the kernel's pick), which
  // matters when the sockets listen on the wildcard address.
  virtual void Send(const io::Endpoint& to, std::span<const std::uint8_t> datagram, bool natt,
                    const io::IpAddress& source) = 0;
  // Our address on the IKE (natt = false) or NAT-T port.
  virtual io::Endpoint LocalEndpoint(bool natt) const = 0;
};

// The host's addresses and routes, as MOBIKE's original initiator needs them (RFC 4555 3.5):
// when an address goes, the IKE SAs that used it move to another. Control thread only.
class HostNetwork {
 public:
  virtual ~HostNetwork() = default;
  // The addresses the host has now (both families).
  virtual std::vector<io::IpAddress> Addresses() = 0;
  // The source address the kernel's route to `peer` gives (`ip route get PEER`); empty when
  // there is no route.
  virtual io::IpAddress RouteSource(const io::IpAddress& peer) = 0;
};

// The control thread's event loop, as the gateway needs it: work handed back from the IKE
// workers. Post may be called from any thread; the callback runs later on the control thread.
// False when the loop refused it (its queue is full): the gateway's tick makes up for it.
class ControlLoop {
 public:
  virtual ~ControlLoop() = default;
  virtual bool Post(std::function<void()> fn) = 0;
};

}  // namespace spigot::gateway
