// A data plane for gateway tests: it keeps what the gateway installed (inbound SAs by SPI, the
// outbound SA of each policy) and a log of every call, so a test can check the order of
// make-before-break and can carry simulated traffic between two gateways
// (test_tools/gateway_pair.h).
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "spigot/bounds.h"
#include "spigot/gateway/ports.h"

namespace spigot::test_tools {

class FakeDataPlane final : public gateway::DataPlane {
 public:
  struct Event {
    enum class Kind { kInstallInbound, kRemoveInbound, kSetOutbound, kClearOutbound, kAcquireFailed,
                      kAddVirtualIp, kRemoveVirtualIp, kMovePeer };
    Kind kind;
    policy::PolicyId policy = policy::kNoPolicy;
    std::uint32_t spi = 0;
    // kAddVirtualIp, kRemoveVirtualIp: the connection and the address ("198.18.0.1/32").
    std::string connection;
    std::string address;
  };

  bool ApplyConnections(const config::Config& config, std::string*) override {
    // Stable ids by name, as the real one gives them.
    for (const auto& c : config.connections) {
      if (policies_.count(c.name) == 0) policies_[c.name] = next_policy_++;
    }
    return true;
  }
  policy::PolicyId PolicyFor(const std::string& connection) const override {
    auto it = policies_.find(connection);
    return it == policies_.end() ? policy::kNoPolicy : it->second;
  }
  void SetSaPolicy(policy::PolicyId id, const std::vector<policy::Prefix>& locals,
                   const std::vector<policy::Prefix>& remotes) override {
    std::vector<datapath::Selector> pairs;
    for (const auto& l : locals) {
      for (const auto& r : remotes) {
        if (l.family == r.family) pairs.push_back({l, r});
      }
    }
    sa_policies.insert_or_assign(id, std::move(pairs));
  }
  void RemoveSaPolicy(policy::PolicyId id) override { sa_policies.erase(id); }

  // The outbound SA for an inner packet src -> dst (addresses as text), as the real data path
  // chooses it among the CHILD SAs' policies: longest remote prefix, then longest local; 0 if
  // no policy covers it or the policy has no outbound SA.
  std::uint32_t OutboundSpiFor(const std::string& src, const std::string& dst) const {
    const auto s = policy::Prefix::Parse(src);
    const auto d = policy::Prefix::Parse(dst);
    if (!s || !d) return 0;
    const std::size_t n = policy::AddressLength(s->family);
    const std::span<const std::uint8_t> sa(s->address.data(), n), da(d->address.data(), n);
    policy::PolicyId best = policy::kNoPolicy;
    int best_remote = -1, best_local = -1;
    for (const auto& [id, pairs] : sa_policies) {
      for (const auto& p : pairs) {
        if (!p.remote.Contains(da) || !p.local.Contains(sa)) continue;
        if (p.remote.prefix_len > best_remote ||
            (p.remote.prefix_len == best_remote && p.local.prefix_len > best_local)) {
          best = id;
          best_remote = p.remote.prefix_len;
          best_local = p.local.prefix_len;
        }
      }
    }
    auto it = outbound.find(best);
    return it == outbound.end() ? 0 : it->second.spi;
  }

  void InstallInbound(datapath::InboundSpec spec) override {
    events.push_back({Event::Kind::kInstallInbound, spec.policy, spec.spi});
    const std::uint32_t spi = spec.spi;
    inbound.insert_or_assign(spi, std::move(spec));
  }
  void RemoveInbound(std::uint32_t spi) override {
    events.push_back({Event::Kind::kRemoveInbound, policy::kNoPolicy, spi});
    inbound.erase(spi);
  }
  void SetOutbound(datapath::OutboundSpec spec) override {
    events.push_back({Event::Kind::kSetOutbound, spec.policy, spec.spi});
    const policy::PolicyId p = spec.policy;
    outbound.insert_or_assign(p, std::move(spec));
  }
  void ClearOutbound(policy::PolicyId policy, std::uint32_t spi) override {
    events.push_back({Event::Kind::kClearOutbound, policy, spi});
    if (auto it = outbound.find(policy); it != outbound.end() && it->second.spi == spi)
      outbound.erase(it);
  }
  void AcquireFailed(policy::PolicyId policy) override {
    events.push_back({Event::Kind::kAcquireFailed, policy, 0});
    acquire_failed.push_back(policy);
  }
  // One event per call (spi: how many outbound SAs moved); the specs take the new peer.
  void MovePeer(const std::vector<std::uint32_t>& spis_in, const std::vector<std::uint32_t>& spis_out,
                const io::Endpoint& peer, const io::IpAddress& source) override {
    events.push_back({Event::Kind::kMovePeer, policy::kNoPolicy, static_cast<std::uint32_t>(spis_out.size())});
    for (std::uint32_t spi : spis_in) {
      if (auto it = inbound.find(spi); it != inbound.end()) it->second.peer = peer;
    }
    for (auto& [id, spec] : outbound) {
      for (std::uint32_t spi : spis_out) {
        if (spec.spi == spi) {
          spec.peer = peer;
          spec.source = source;
        }
      }
    }
  }
  void AddVirtualIp(const std::string& connection, const policy::Prefix& address) override {
    events.push_back({Event::Kind::kAddVirtualIp, policy::kNoPolicy, 0, connection, address.ToString()});
    virtual_ips[connection].insert(address.ToString());
  }
  void RemoveVirtualIp(const std::string& connection, const policy::Prefix& address) override {
    events.push_back({Event::Kind::kRemoveVirtualIp, policy::kNoPolicy, 0, connection, address.ToString()});
    if (auto it = virtual_ips.find(connection); it != virtual_ips.end()) {
      it->second.erase(address.ToString());
      if (it->second.empty()) virtual_ips.erase(it);
    }
  }
  void Tick() override {}
  const datapath::Counters& counters() const override { return counters_; }
  nlohmann::json DatapathStats() const override { return {{"threads", nlohmann::json::array()}}; }
  nlohmann::json CryptoEngineStats() const override {
    return {{"name", "fake"}, {"state", "ok"}, {"stalls", 0}, {"fallbacks", 0}};
  }
  nlohmann::json UdpOffloadStats() const override { return {{"gso", false}, {"gro", false}}; }
  // A test sets `backlog_` to stand for a data path that has fallen behind.
  std::size_t backlog() const override { return backlog_; }
  nlohmann::json BoundsStats() const override {
    return {{"dataplane_mailbox", {{"limit", 0}, {"in_use", 0}}},
            {"dataplane_backlog", {{"limit", bounds::kDataplaneBacklog}, {"in_use", backlog_}, {"peak", backlog_}}},
            {"handoff", {{"limit", bounds::kHandoffQueue}, {"in_use", 0}, {"dropped", 0}}}};
  }
  std::size_t backlog_ = 0;
  nlohmann::json TunOffloadStats() const override { return {{"enabled", false}}; }
  gateway::KernelCounters kernel_counters() const override { return kernel; }
  nlohmann::json CryptoFault(const std::string&, std::int64_t) override {
    return {{"error", "no fault engine in tests"}};
  }

  std::size_t Count(Event::Kind kind) const {
    std::size_t n = 0;
    for (const auto& e : events) n += e.kind == kind;
    return n;
  }

  std::map<std::uint32_t, datapath::InboundSpec> inbound;
  std::map<policy::PolicyId, datapath::OutboundSpec> outbound;
  std::map<policy::PolicyId, std::vector<datapath::Selector>> sa_policies;
  std::vector<policy::PolicyId> acquire_failed;
  // The virtual IPs on the TUN, by connection (as Prefix::ToString()).
  std::map<std::string, std::set<std::string>> virtual_ips;
  std::vector<Event> events;
  // What kernel_counters() returns: tests set it.
  gateway::KernelCounters kernel;

 private:
  std::map<std::string, policy::PolicyId> policies_;
  policy::PolicyId next_policy_ = 1;
  datapath::Counters counters_;
};

}  // namespace spigot::test_tools
