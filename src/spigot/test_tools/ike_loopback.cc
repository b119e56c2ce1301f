#include "spigot/test_tools/ike_loopback.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "spigot/crypto/random.h"
#include "spigot/ike/traffic_selectors.h"

namespace spigot::ike {

void LoopbackHost::SendIke(IkeSa&, const Bytes& datagram) {
  ++sent;
  if (lose && lose(datagram)) {
    ++lost;
    return;
  }
  if (drop_next_send) {
    drop_next_send = false;
    return;
  }
  if (peer->inbox.size() >= kMaxInFlight) {
    std::fprintf(stderr, "LoopbackHost: inbox bound exceeded\n");
    std::abort();
  }
  peer->inbox.push_back(datagram);
}

std::optional<std::uint32_t> LoopbackHost::AllocateChildSpi(bool, NotifyType& refusal) {
  if (live_spis.size() >= spi_limit) {
    refusal = NotifyType::kTemporaryFailure;
    return std::nullopt;
  }
  const std::uint32_t spi = next_spi++;
  live_spis[spi] = true;
  return spi;
}

void LoopbackHost::InstallChild(IkeSa&, const ChildSaInfo& child) {
  installed[child.spi_in] = ChildSaInfo{child.spi_in, child.spi_out, child.algs,
                                        child.keymat_in, child.keymat_out, child.local_ts,
                                        child.remote_ts, child.rekey_of, child.installed};
}

void LoopbackHost::RemoveChild(IkeSa&, std::uint32_t spi_in) {
  installed.erase(spi_in);
  live_spis.erase(spi_in);
}

std::shared_ptr<const ConnectionParams> LoopbackHost::ConnectionForPeer(const Identity& peer_id,
                                                                        const Address&) {
  for (const auto& c : connections) {
    if (c->remote_id == peer_id) return c;
  }
  return nullptr;
}

std::uint64_t LoopbackHost::NewIkeSpi() { return crypto::RandomU64() | 1; }

void LoopbackHost::AdoptIkeSa(IkeSa&, std::unique_ptr<IkeSa> replacement) {
  retired.push_back(std::move(*current));
  *current = std::move(replacement);
}

void LoopbackHost::AdoptIkeSaBeside(IkeSa&, std::unique_ptr<IkeSa> sa) { retired.push_back(std::move(sa)); }

void LoopbackHost::IkeRekeySurvivor(IkeSa& old, IkeSa& survivor) {
  if (current->get() != &old) return;
  for (auto& r : retired) {
    if (r.get() == &survivor) {
      std::swap(r, *current);
      return;
    }
  }
}

CpResult LoopbackHost::AssignVirtualIps(IkeSa&, bool want_v4, bool want_v6, VirtualIps& out) {
  ++vip_requests;
  if (!serves_vips) return CpResult::kNotServed;
  for (const std::uint8_t type : {kTsIpv4AddrRange, kTsIpv6AddrRange}) {
    const bool want = type == kTsIpv4AddrRange ? want_v4 : want_v6;
    const auto it = std::find_if(vip_pool.begin(), vip_pool.end(),
                                 [&](const TrafficSelector& a) { return a.type == type; });
    if (want && it != vip_pool.end()) out.addresses.push_back(*it);
  }
  if (out.addresses.empty()) return CpResult::kFailed;
  out.dns4 = vip_dns4;
  out.subnets = vip_subnets;
  return CpResult::kAssigned;
}

IkeSa* LoopbackHost::Find(std::uint64_t spi) {
  auto ours = [](const IkeSa& sa) {
    return sa.role() == IkeSa::Role::kInitiator ? sa.spi_i() : sa.spi_r();
  };
  if (*current && ours(**current) == spi) return current->get();
  for (auto& r : retired) {
    if (ours(*r) == spi) return r.get();
  }
  return nullptr;
}

namespace {
Address Addr(std::uint8_t last, std::uint16_t port) {
  Address a;
  a.family = 4;
  a.ip[0] = 192, a.ip[1] = 0, a.ip[2] = 2, a.ip[3] = last;
  a.port = port;
  return a;
}
}  // namespace

LoopbackPair::LoopbackPair(std::shared_ptr<const ConnectionParams> initiator_conn,
                           std::shared_ptr<const ConnectionParams> rconn)
    : responder_conn(std::move(rconn)) {
  ihost.peer = &rhost;
  rhost.peer = &ihost;
  ihost.current = &initiator;
  rhost.current = &responder;
  rhost.connections.push_back(responder_conn);
  initiator = std::make_unique<IkeSa>(ihost, icounters, IkeSa::Role::kInitiator,
                                      std::move(initiator_conn), Addr(1, 500), Addr(2, 500),
                                      crypto::RandomU64(), 0);
}

void LoopbackPair::Pump(TimePoint now, int max_rounds) {
  for (int round = 0; round < max_rounds; ++round) {
    if (rhost.inbox.empty() && ihost.inbox.empty()) return;
    while (!rhost.inbox.empty()) {
      Bytes d = std::move(rhost.inbox.front());
      rhost.inbox.pop_front();
      Header h;
      if (!ParseHeader(d, h)) continue;
      if (!responder) {
        responder = std::make_unique<IkeSa>(rhost, rcounters, IkeSa::Role::kResponder,
                                            responder_conn, Addr(2, 500), Addr(1, 500), h.spi_i,
                                            crypto::RandomU64());
      }
      IkeSa* sa = h.spi_r == 0 ? responder.get() : rhost.Find(h.from_initiator() ? h.spi_r : h.spi_i);
      if (sa != nullptr) sa->Receive(d, now);
      // A responder that refused IKE_SA_INIT (cookie, INVALID_KE, ...) kept no state (2.6).
      if (responder->state() == IkeSa::State::kDead && responder->established_at() == TimePoint{})
        responder.reset();
    }
    while (!ihost.inbox.empty()) {
      Bytes d = std::move(ihost.inbox.front());
      ihost.inbox.pop_front();
      Header h;
      if (!ParseHeader(d, h)) continue;
      if (IkeSa* sa = ihost.Find(h.from_initiator() ? h.spi_r : h.spi_i)) sa->Receive(d, now);
    }
  }
}

std::shared_ptr<ConnectionParams> TestConnection(bool initiator, const char* ike, const char* esp) {
  auto c = std::make_shared<ConnectionParams>();
  c->name = "test";
  c->local_id = *ParseIdentity(initiator ? "@alice" : "@bob");
  c->remote_id = *ParseIdentity(initiator ? "@bob" : "@alice");
  c->psk = crypto::SecureBytes::FromText("secret");
  std::string err;
  ParseProposals(ike, ProtocolId::kIke, c->ike_proposals, err);
  ParseProposals(esp, ProtocolId::kEsp, c->esp_proposals, err);
  c->local_ts = {*SelectorFromCidr(initiator ? "192.0.2.0/24" : "198.51.100.0/24")};
  c->remote_ts = {*SelectorFromCidr(initiator ? "198.51.100.0/24" : "192.0.2.0/24")};
  return c;
}

}  // namespace spigot::ike
