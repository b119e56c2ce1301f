// Two gateways wired back to back in one process (strongSwan's exchange_test_helper, QUICHE's
// simulator, wireguard-go's device_test in spirit): each has a FakeDataPlane, a transport that
// puts its datagrams on one in-memory network, a control loop whose posted work the pair runs,
// and a ManualExecutor for its IKE workers. Time moves only when the test advances the
// FakeClock; nothing sleeps.
//
// Pump() delivers one datagram at a time and, after each, checks the property the data path
// depends on (CheckOutbound): when a gateway moves a policy's traffic to another SA, its peer
// has already installed that SA inbound — a packet sent at that moment would be opened, not
// dropped as unknown_spi. Breaches are kept in `violations`. Traffic() carries one simulated packet per direction and policy, with the
// effects a real data plane has: the receiver reports the first packet on an SA installed
// with report_first_packet, and the SA's byte and packet counters grow.
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <chrono>
#include <deque>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "spigot/config/config.h"
#include "spigot/gateway/gateway.h"
#include "spigot/ike/message.h"
#include "spigot/test_tools/fake_clock.h"
#include "spigot/test_tools/fake_dataplane.h"
#include "spigot/test_tools/manual_executor.h"

namespace spigot::test_tools {

struct Datagram {
  io::Endpoint from, to;
  bool natt = false;
  std::vector<std::uint8_t> bytes;
  // The IKE header, for drop rules.
  ike::Header Header() const {
    ike::Header h;
    ike::ParseHeader(bytes, h);
    return h;
  }
};

// The wire between the gateways: FIFO, lossless unless `drop` says otherwise.
struct FakeNetwork {
  std::deque<Datagram> in_flight;
  std::function<bool(const Datagram&)> drop;  // true: lose it
  std::uint64_t dropped = 0;
};

class FakeTransport final : public gateway::IkeTransport {
 public:
  FakeTransport(FakeNetwork& net, std::string address, std::uint16_t ike_port = 500,
                std::uint16_t natt_port = 4500)
      : net_(net),
        ike_(*io::Endpoint::Parse(address, ike_port)),
        natt_(*io::Endpoint::Parse(address, natt_port)) {}
  // A datagram with a source leaves from it (a wildcard listen); the node must own the address
  // (`aliases`) for answers to reach it.
  void Send(const io::Endpoint& to, std::span<const std::uint8_t> msg, bool natt,
            const io::IpAddress& source) override {
    ++sent;
    const io::Endpoint& own = natt ? natt_ : ike_;
    const io::Endpoint from = source.empty() ? own : io::Endpoint::From(source, own.port());
    net_.in_flight.push_back({from, to, natt, {msg.begin(), msg.end()}});
  }
  io::Endpoint LocalEndpoint(bool natt) const override { return natt ? natt_ : ike_; }
  std::uint64_t sent = 0;
  // More addresses the node answers at (besides its own), e.g. where a MOBIKE initiator moved.
  std::vector<std::string> aliases;

 private:
  FakeNetwork& net_;
  io::Endpoint ike_, natt_;
};

class FakeControlLoop final : public gateway::ControlLoop {
 public:
  bool Post(std::function<void()> fn) override {
    std::lock_guard lock(mu_);
    posted_.push_back(std::move(fn));
    return true;
  }
  // Runs what was posted (and what that posts); true if anything ran.
  bool RunPosted() {
    bool ran = false;
    for (;;) {
      std::vector<std::function<void()>> batch;
      {
        std::lock_guard lock(mu_);
        batch.swap(posted_);
      }
      if (batch.empty()) return ran;
      for (auto& fn : batch) fn();
      ran = true;
    }
  }

 private:
  std::mutex mu_;
  std::vector<std::function<void()>> posted_;
};

// One gateway and its fakes.
struct Node {
  Node(FakeNetwork& net, const std::string& address, std::size_t worker_capacity)
      : transport(net, address), workers(worker_capacity) {}
  FakeDataPlane dataplane;
  FakeTransport transport;
  gateway::HostNetwork* host = nullptr;  // set before Start (GatewayPair's constructor: none)
  FakeControlLoop loop;
  ManualExecutor workers;
  std::unique_ptr<gateway::Gateway> gw;
  // Packets of simulated traffic that found no inbound SA at this node.
  std::uint64_t lost_packets = 0;
  std::uint64_t delivered_packets = 0;
  // Per policy, the last outbound SPI seen installed at the peer (GatewayPair::CheckOutbound).
  std::map<policy::PolicyId, std::uint32_t> confirmed_outbound;
};

// A site-to-site config: gateway `self` at 192.0.2.`self`, the peer at 192.0.2.`peer`, one
// connection "site" with PSK auth; `extra_global` and `extra_conn` are TOML lines appended to
// [global] and to the connection.
inline std::string SiteConfig(int self, int peer, const std::string& extra_global = "",
                              const std::string& extra_conn = "") {
  const std::string me = "192.0.2." + std::to_string(self);
  const std::string them = "192.0.2." + std::to_string(peer);
  const bool a = self < peer;
  return "[global]\nlisten = \"" + me + "\"\nmax_rekeys_per_second = 1000\n" + extra_global +
         "\n[[connection]]\nname = \"site\"\nlocal_addrs = \"" + me + "\"\nremote_addrs = \"" +
         them + "\"\nlocal_id = \"gw-" + (a ? "a" : "b") + "\"\nremote_id = \"gw-" +
         (a ? "b" : "a") + "\"\npsk = \"test secret\"\nlocal_ts = \"" +
         (a ? "198.51.100.0/24" : "203.0.113.0/24") + "\"\nremote_ts = \"" +
         (a ? "203.0.113.0/24" : "198.51.100.0/24") + "\"\n" + extra_conn;
}

class GatewayPair {
 public:
  static constexpr std::size_t kWorkers = 16;

  // Gateways A (192.0.2.1) and B (192.0.2.2) from TOML texts; check ok() before use.
  GatewayPair(const std::string& a_toml, const std::string& b_toml,
              std::size_t a_workers = kWorkers, std::size_t b_workers = kWorkers)
      : a(net, "192.0.2.1", a_workers), b(net, "192.0.2.2", b_workers) {
    Start(a, a_toml, "a.toml");
    Start(b, b_toml, "b.toml");
  }

  // The node loses all its state, as after a crash: a new gateway from `toml`, an empty data
  // plane, its datagrams in flight lost. Its peer is not told.
  void Restart(Node& n, const std::string& toml) {
    n.gw.reset();
    n.dataplane.inbound.clear();
    n.dataplane.outbound.clear();
    n.confirmed_outbound.clear();
    Start(n, toml, &n == &a ? "a.toml" : "b.toml");
  }
  bool ok() const { return a.gw && b.gw && error_.empty(); }
  const std::string& error() const { return error_; }

  Node& Peer(Node& n) { return &n == &a ? b : a; }

  // Another gateway on the same network (a third peer of a concentrator, ...); check ok().
  Node& AddNode(const std::string& address, const std::string& toml,
                std::size_t workers = kWorkers) {
    extra_.push_back(std::make_unique<Node>(net, address, workers));
    Start(*extra_.back(), toml, address + ".toml");
    if (!extra_.back()->gw) error_ += address + ": not started\n";
    return *extra_.back();
  }
  std::vector<Node*> nodes() {
    std::vector<Node*> out{&a, &b};
    for (auto& n : extra_) out.push_back(n.get());
    return out;
  }
  // The node at an IKE/ESP address, or null.
  Node* NodeAt(const std::string& address) {
    for (Node* n : nodes()) {
      if (n->transport.LocalEndpoint(false).AddressString() == address) return n;
      for (const std::string& alias : n->transport.aliases) {
        if (alias == address) return n;
      }
    }
    return nullptr;
  }

  // Runs everything that can run now: posted work, worker jobs, datagrams (one at a time,
  // checking the outbound/inbound property after each), until nothing moves.
  void Pump(int max_steps = 100000) {
    for (int step = 0; step < max_steps; ++step) {
      bool moved = false;
      for (Node* n : nodes()) {
        while (n->workers.pending() != 0 || n->loop.RunPosted()) {
          n->workers.RunAll();
          moved = true;
        }
      }
      if (!net.in_flight.empty()) {
        Datagram d = std::move(net.in_flight.front());
        net.in_flight.pop_front();
        if (net.drop && net.drop(d)) {
          ++net.dropped;
        } else if (Node* to = NodeAt(d.to.AddressString()); to == nullptr) {
          ++net.dropped;  // nobody at that address
        } else {
          if (trace) {
            const ike::Header h = d.Header();
            std::fprintf(stderr, "TRACE %s -> %s ex=%d id=%u %s spi_i=%016llx\n",
                         d.from.AddressString().c_str(), d.to.AddressString().c_str(),
                         static_cast<int>(h.exchange), h.message_id,
                         h.is_response() ? "resp" : "req", static_cast<unsigned long long>(h.spi_i));
          }
          to->gw->ReceiveIke(d.bytes, d.from, d.natt, io::IpAddress::Of(d.to));
          to->gw->WorkQueue();
        }
        CheckOutbound();
        moved = true;
      }
      if (!moved) return;
    }
    violations.push_back("Pump: still busy after max_steps");
  }

  // Moves the clock by `d` in gateway ticks, pumping after each.
  void Advance(std::chrono::nanoseconds d) {
    const std::chrono::nanoseconds step = gateway::Gateway::kTickPeriod;
    for (std::chrono::nanoseconds t{0}; t < d; t += step) {
      clock.Advance(step);
      for (Node* n : nodes()) n->gw->Tick();
      Pump();
    }
  }

  // One simulated packet each way on every policy with an outbound SA.
  void Traffic(std::uint64_t bytes = 1000) {
    for (Node* n : nodes()) {
      for (auto& [policy, out] : n->dataplane.outbound) {
        Node* to = NodeAt(out.peer.AddressString());
        if (to == nullptr) continue;
        Node& peer = *to;
        auto in = peer.dataplane.inbound.find(out.spi);
        if (in == peer.dataplane.inbound.end()) {
          ++peer.lost_packets;
          continue;
        }
        ++peer.delivered_packets;
        for (const auto& c : {out.counters, in->second.counters}) {
          if (!c) continue;
          c->bytes += bytes;
          c->packets += 1;
        }
        if (in->second.counters) in->second.counters->rx_packets += 1;
        if (in->second.report_first_packet) {
          in->second.report_first_packet = false;
          peer.gw->OnFirstPacket(out.spi);
        }
      }
    }
    Pump();
  }

  // A policy's outbound SA, once the peer had installed it, is only ever replaced by one the
  // peer has installed too (make-before-break). A policy's first SA is exempt: an IKEv2
  // responder installs its CHILD SA when it answers, before the initiator has the answer
  // (RFC 7296 1.2); nothing older could have carried the packet anyway.
  void CheckOutbound() {
    for (Node* n : nodes()) {
      auto& confirmed = n->confirmed_outbound;
      for (auto it = confirmed.begin(); it != confirmed.end();) {
        it = n->dataplane.outbound.count(it->first) == 0 ? confirmed.erase(it) : std::next(it);
      }
      for (const auto& [policy, out] : n->dataplane.outbound) {
        Node* to = NodeAt(out.peer.AddressString());
        if (to == nullptr) continue;
        Node& peer = *to;
        if (peer.dataplane.inbound.count(out.spi) != 0) {
          confirmed[policy] = out.spi;
          continue;
        }
        auto c = confirmed.find(policy);
        if (c != confirmed.end() && c->second != out.spi)
          violations.push_back(n->transport.LocalEndpoint(false).AddressString() +
                               std::string(" switched to SPI ") +
                               std::to_string(out.spi) + " the peer has not installed");
      }
    }
  }

  FakeClock clock;
  FakeNetwork net;
  bool trace = std::getenv("SPIGOT_PAIR_TRACE") != nullptr;  // every delivered datagram on stderr
  Node a, b;
  std::vector<std::string> violations;

 private:
  void Start(Node& n, const std::string& toml, const std::string& name) {
    const config::LoadResult r = config::LoadString(toml, name);
    if (!r.ok) {
      error_ += r.error + "\n";
      return;
    }
    std::string err;
    n.gw = gateway::Gateway::Create(
        r.config, name,
        gateway::Gateway::Environment{clock, n.dataplane, n.transport, n.loop, n.workers, {}, n.host},
        &err);
    if (!n.gw) error_ += name + ": " + err + "\n";
  }
  std::string error_;
  std::vector<std::unique_ptr<Node>> extra_;
};

}  // namespace spigot::test_tools
