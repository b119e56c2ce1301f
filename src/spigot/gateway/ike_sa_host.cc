// What the IKE SAs ask of the gateway (ike::IkeSaHost): send, SPIs, CHILD SAs in and out,
// connections by identity, state changes, IKE rekeys; and acquires, the data plane asking for
// a negotiation.
#include <spdlog/spdlog.h>

#include <algorithm>

#include <fmt/format.h>

#include "spigot/gateway/gateway.h"
#include "spigot/ike/endpoint.h"

namespace spigot::gateway {

void Gateway::SendIke(ike::IkeSa& sa, const ike::Bytes& datagram) {
  SaEntry* e = table_.Find(IkeSaTable::OurSpi(sa));
  // An initiator moves to NAT-T once it sees a NAT (2.23); a responder follows the peer.
  bool natt = e != nullptr && e->natt;
  if (sa.role() == ike::IkeSa::Role::kInitiator && sa.nat_detected()) natt = true;
  if (natt && sa.role() == ike::IkeSa::Role::kInitiator && sa.remote().port == config_.global.ike_port) {
    ike::Address r = sa.remote();
    r.port = config_.global.natt_port;
    sa.set_remote(r);
  }
  if (natt && e != nullptr) e->natt = true;
  if (natt && sa.local().port == config_.global.ike_port) sa.set_local_port(config_.global.natt_port);
  env_.transport.Send(ike::ToEndpoint(sa.remote()), datagram, natt, SourceOf(sa));
}

void Gateway::SendIkeTo(ike::IkeSa& sa, const ike::Bytes& datagram, const ike::Address& to) {
  // A response to a request from elsewhere than the SA's peer address (RFC 7296 2.11), e.g. a
  // MOBIKE peer probing a new path: the NAT-T port's socket unless the request came to 500.
  const SaEntry* e = table_.Find(IkeSaTable::OurSpi(sa));
  const bool natt = (e != nullptr && e->natt) || to.port != config_.global.ike_port;
  env_.transport.Send(ike::ToEndpoint(to), datagram, natt, SourceOf(sa));
}

std::optional<std::uint32_t> Gateway::AllocateChildSpi(bool rekey, ike::NotifyType& refusal) {
  const sa::SpiAllocation a =
      children_.sad().AllocateSpi(rekey ? sa::SpiPurpose::kRekey : sa::SpiPurpose::kNew);
  if (a.status == sa::SpiStatus::kOk) return a.spi;
  ++counters_.failed_sas;
  refusal = ike::NotifyType::kTemporaryFailure;
  spdlog::warn("SPI pool refused a {} CHILD SA ({} of max_spi {} in use)",
               rekey ? "rekeyed" : "new", children_.sad().spi_pool().stats().in_use,
               config_.global.max_spi);
  return std::nullopt;
}

void Gateway::ReleaseChildSpi(std::uint32_t spi) { children_.sad().ReleaseSpi(spi); }

void Gateway::InstallChild(ike::IkeSa& sa, const ike::ChildSaInfo& child) {
  const Connection* c = sa.connection() ? connections_.Find(sa.connection()->name) : nullptr;
  // Where the IKE SA's other CHILD SAs send (a MOBIKE move waits for its return routability
  // check before they follow: RFC 4555 3.5), so that all of them use one address.
  ike::Address peer = sa.esp_remote();
  if (peer.port == config_.global.ike_port) peer.port = config_.global.natt_port;
  if (!children_.Install(child, IkeSaTable::OurSpi(sa), IkeSaTable::PeerKey(sa), c,
                         ike::ToEndpoint(peer), SourceOf(sa), Now()))
    return;
  // The acquire a trap raised on the connection's policy is answered.
  if (c != nullptr) pending_acquires_.erase(env_.dataplane.PolicyFor(c->cfg.name));
  spdlog::info("{}: CHILD SA {:08x}_i {:08x}_o INSTALLED ({}){}", sa.connection()->name,
               child.spi_in, child.spi_out, ike::Describe(child.algs),
               child.rekey_of ? " rekeying " + fmt::format("{:08x}", child.rekey_of) : "");
}

void Gateway::WeakProposalRefused(ike::IkeSa& sa, ike::ProtocolId protocol, unsigned weak) {
  spdlog::warn("{}: {} proposal refused (NO_PROPOSAL_CHOSEN): weak transform(s) {} not in the "
               "connection's allow_weak",
               sa.connection() ? sa.connection()->name : "?",
               protocol == ike::ProtocolId::kIke ? "IKE rekey" : "CHILD SA",
               ike::WeakTransformNames(weak));
}

bool Gateway::AdmitSelectors(ike::IkeSa& sa, const std::vector<ike::TrafficSelector>& local,
                             const std::vector<ike::TrafficSelector>& remote) {
  return children_.Admit(IkeSaTable::PeerKey(sa), local, remote);
}

void Gateway::RemoveChild(ike::IkeSa& sa, std::uint32_t spi_in) {
  children_.Remove(spi_in, /*linger=*/!shutting_down_, Now());
  spdlog::info("{}: CHILD SA {:08x}_i removed", sa.connection() ? sa.connection()->name : "?",
               spi_in);
}

std::shared_ptr<const ike::ConnectionParams> Gateway::ConnectionForPeer(const ike::Identity& peer,
                                                                        const ike::Address&) {
  return connections_.ForPeer(peer);
}

namespace {

// An IKE SA of a connection that asks for virtual IPs (vips) is gone: its virtual IPs leave
// the TUN, except those another live IKE SA of the connection and peer still holds — its IKE
// rekey's replacement (which took the same virtual_ips(), RFC 7296 3.15.1), or a new IKE SA
// that got the same address again.
void RemoveVirtualIpsOfDeadSa(const ike::IkeSa& sa, const IkeSaTable& table, DataPlane& dataplane) {
  // The connection, not the role: a replacement created by the peer's IKE rekey is ours as
  // responder (2.18), and its virtual IPs are still ours.
  if (!sa.connection() || sa.connection()->vips.empty() ||
      sa.established_at() == ike::TimePoint{} || sa.virtual_ips().empty())
    return;
  std::vector<policy::Prefix> still_held;
  for (std::uint64_t spi : table.FindByPeer(IkeSaTable::PeerKey(sa))) {
    const SaEntry* other = table.Find(spi);
    if (other == nullptr || other->sa.get() == &sa ||
        other->sa->state() == ike::IkeSa::State::kDead)
      continue;
    for (const auto& p : SelectorPrefixes(other->sa->virtual_ips())) still_held.push_back(p);
  }
  for (const auto& vip : SelectorPrefixes(sa.virtual_ips())) {
    if (std::find(still_held.begin(), still_held.end(), vip) != still_held.end()) continue;
    spdlog::info("{}: virtual IP {} released", sa.connection()->name, vip.ToString());
    dataplane.RemoveVirtualIp(sa.connection()->name, vip);
  }
}

}  // namespace

void Gateway::StateChanged(ike::IkeSa& sa) {
  const std::string name = sa.connection() ? sa.connection()->name : "?";
  if (sa.state() == ike::IkeSa::State::kEstablished) {
    ++counters_.ike_established;
    table_.IndexPeer(IkeSaTable::OurSpi(sa));
    if (sa.role() == ike::IkeSa::Role::kResponder) unique_checks_.push_back(IkeSaTable::OurSpi(sa));
    if (SaEntry* e = table_.Find(IkeSaTable::OurSpi(sa))) {
      table_.RetireHalfOpen(*e, Now());
      if (e->started != ike::TimePoint{}) negotiation_seconds_.Observe(Now() - e->started);
    }
    spdlog::info("{}: IKE SA {:016x}_i {:016x}_r ESTABLISHED with {} ({})", name, sa.spi_i(),
                 sa.spi_r(), ike::ToString(sa.remote()),
                 sa.algorithms() ? ike::Describe(*sa.algorithms()) : "");
    // Our virtual IPs (an IKE rekey's replacement arrives established through AdoptIkeSa,
    // not here: its addresses are on the TUN already).
    if (sa.role() == ike::IkeSa::Role::kInitiator && sa.connection() &&
        !sa.connection()->vips.empty()) {
      for (const auto& vip : SelectorPrefixes(sa.virtual_ips())) {
        spdlog::info("{}: virtual IP {} assigned", name, vip.ToString());
        env_.dataplane.AddVirtualIp(name, vip);
      }
    }
  } else if (sa.state() == ike::IkeSa::State::kDead) {
    if (shutting_down_) ShutdownSaGone();
    if (sa.established_at() == ike::TimePoint{}) ++counters_.failed_sas;
    // Traffic held for this connection has nothing to wait for any more.
    const policy::PolicyId policy =
        sa.connection() ? env_.dataplane.PolicyFor(name) : policy::kNoPolicy;
    if (pending_acquires_.erase(policy) != 0) env_.dataplane.AcquireFailed(policy);
    ReleaseVirtualIps(IkeSaTable::OurSpi(sa));
    RemoveVirtualIpsOfDeadSa(sa, table_, env_.dataplane);
    spdlog::info("{}: IKE SA {:016x}_i {:016x}_r gone: {}", name, sa.spi_i(), sa.spi_r(),
                 sa.failure());
  }
}

std::uint64_t Gateway::NewIkeSpi() { return table_.NewSpi(); }

void Gateway::AdoptIkeSa(ike::IkeSa& old, std::unique_ptr<ike::IkeSa> replacement) {
  ike::IkeSa& sa = *replacement;
  AdoptIkeSaBeside(old, std::move(replacement));
  IkeRekeySurvivor(old, sa);
}

void Gateway::AdoptIkeSaBeside(ike::IkeSa& old, std::unique_ptr<ike::IkeSa> sa) {
  const std::uint64_t ours = IkeSaTable::OurSpi(*sa);
  SaEntry e;
  const SaEntry* old_entry = table_.Find(IkeSaTable::OurSpi(old));
  e.natt = old_entry != nullptr && old_entry->natt;
  e.sa = std::move(sa);
  table_.Insert(ours, std::move(e));
  // Filed once the old SA's exchange is over (it starts the new one's queued requests last).
  table_.NoteAdopted(ours);
  table_.IndexPeer(ours);
}

void Gateway::PeerMoved(ike::IkeSa& sa, const ike::Address& was) {
  // ESP follows: every CHILD SA of the IKE SA sends to the new address from the same packet on.
  ike::Address peer = sa.esp_remote();
  if (peer.port == config_.global.ike_port) peer.port = config_.global.natt_port;
  children_.MovePeer(sa.children(), ike::ToEndpoint(peer), SourceOf(sa));
  spdlog::info("{}: IKE SA {:016x}_i {:016x}_r: peer moved from {} to {} ({}), {} CHILD SA(s) with it",
               sa.connection() ? sa.connection()->name : "?", sa.spi_i(), sa.spi_r(), ike::ToString(was),
               ike::ToString(sa.esp_remote()),
               sa.mobike() ? "MOBIKE UPDATE_SA_ADDRESSES" : "NAT mapping changed",
               sa.children().size());
}

io::IpAddress Gateway::SourceOf(const ike::IkeSa& sa) const {
  // On one bound address the socket sends from it anyway.
  if (!listen_wildcard_) return {};
  const io::IpAddress a = io::IpAddress::Of(ike::ToEndpoint(sa.local()));
  const bool any = std::all_of(a.bytes.begin(), a.bytes.end(), [](std::uint8_t b) { return b == 0; });
  return any ? io::IpAddress{} : a;
}

void Gateway::OnAddressesChanged() {
  // Each event of a burst pushes the check back: it runs once the burst is over.
  addresses_settle_at_ = Now() + kAddressSettle;
}

io::IpAddress Gateway::ChooseLocal(const ike::IkeSa& sa, const std::vector<io::IpAddress>& addresses) {
  const io::IpAddress current = io::IpAddress::Of(ike::ToEndpoint(sa.local()));
  const io::IpAddress peer = io::IpAddress::Of(ike::ToEndpoint(sa.remote()));
  const auto present = [&](const io::IpAddress& a) {
    return std::find(addresses.begin(), addresses.end(), a) != addresses.end();
  };
  // The connection's literal local_addrs that the host has (of the peer's family): the one in
  // use while it is there, else the first of them.
  const Connection* c = sa.connection() ? connections_.Find(sa.connection()->name) : nullptr;
  bool literal = false;
  io::IpAddress first;
  if (c != nullptr) {
    for (const std::string& text : c->cfg.local_addrs) {
      const auto e = io::Endpoint::Parse(text, 0);
      if (!e || e->wildcard()) continue;
      const io::IpAddress a = io::IpAddress::Of(*e);
      if (a.family != peer.family) continue;
      literal = true;
      if (!present(a)) continue;
      if (a == current) return current;
      if (first.empty()) first = a;
    }
  }
  if (literal) return first;
  // %any: the path the host's routing takes to the peer now (4555 3.5: the path changed, or
  // the address in use went).
  io::IpAddress routed = env_.host->RouteSource(peer);
  // A route into our own tunnel (remote_ts covering the peer, with our virtual IP as its
  // source) is no path to the peer: the outer packets would loop.
  for (const ike::TrafficSelector& vip : sa.virtual_ips()) {
    const std::size_t n = vip.addr_len();
    if (routed.family == (n == 4 ? AF_INET : AF_INET6) &&
        std::equal(vip.start.begin(), vip.start.begin() + n, routed.bytes.begin()))
      routed = {};
  }
  if (routed.family == peer.family) return routed;
  // No usable route: the address in use while the host still has it, else nothing.
  return present(current) ? current : io::IpAddress{};
}

void Gateway::CheckLocalAddresses() {
  // Bound to one address, every datagram leaves from it: there is nothing to move to.
  if (env_.host == nullptr || !listen_wildcard_ || shutting_down_) return;
  const std::vector<io::IpAddress> addresses = env_.host->Addresses();
  const ike::TimePoint now = Now();
  for (auto& [ours, e] : table_.entries()) {
    ike::IkeSa& sa = *e.sa;
    if (!sa.mobike() || sa.role() != ike::IkeSa::Role::kInitiator ||
        sa.state() != ike::IkeSa::State::kEstablished || sa.rekeyed())
      continue;
    const io::IpAddress current = io::IpAddress::Of(ike::ToEndpoint(sa.local()));
    const io::IpAddress next = ChooseLocal(sa, addresses);
    if (next == current) continue;
    const char* name = sa.connection() ? sa.connection()->name.c_str() : "?";
    if (next.empty()) {
      // Nowhere to go (yet): the SA stays; the next address event looks again.
      ++ike_counters_.mobike_no_local_address;
      spdlog::warn("{}: IKE SA {:016x}_i {:016x}_r: local address {} unusable and no other to move to",
                   name, sa.spi_i(), sa.spi_r(), ike::ToString(sa.local()));
      continue;
    }
    ike::Address local = sa.local();
    const ike::Address was = local;
    std::copy(next.bytes.begin(), next.bytes.end(), local.ip.begin());
    if (!sa.UpdateSaAddresses(local, now)) continue;
    // Every CHILD SA leaves from the new address from the same packet on; the peer learns it
    // from the UPDATE_SA_ADDRESSES just queued (ESP from the old address would go nowhere).
    ike::Address peer = sa.esp_remote();
    if (peer.port == config_.global.ike_port) peer.port = config_.global.natt_port;
    children_.MovePeer(sa.children(), ike::ToEndpoint(peer), SourceOf(sa));
    table_.Schedule(ours);
    spdlog::info("{}: IKE SA {:016x}_i {:016x}_r: local address moved from {} to {} (MOBIKE "
                 "UPDATE_SA_ADDRESSES), {} CHILD SA(s) with it",
                 name, sa.spi_i(), sa.spi_r(), ike::ToString(was), ike::ToString(sa.local()),
                 sa.children().size());
  }
}

void Gateway::OnNewSource(std::uint32_t spi_in, const io::Endpoint& from) {
  const ChildSaManager::Child* child = children_.Find(spi_in);
  if (child == nullptr) return;
  SaEntry* e = table_.Find(child->owner);
  if (e == nullptr || !e->sa) return;
  // The IKE SA decides (RFC 7296 2.23: only when the peer is behind a NAT and we are not).
  e->sa->FollowEspSource(ike::ToAddress(from));
}

ike::IkeSa* Gateway::FindIkeSa(std::uint64_t our_spi) {
  SaEntry* e = table_.Find(our_spi);
  return e != nullptr ? e->sa.get() : nullptr;
}

void Gateway::IkeRekeySurvivor(ike::IkeSa& old, ike::IkeSa& sa) {
  const std::uint64_t ours = IkeSaTable::OurSpi(sa);
  for (const auto& c : sa.children()) children_.SetOwner(c.spi_in, ours);
  // The leases go with the IKE SA to its replacement (RFC 7296 3.15.1).
  if (auto held = leases_held_.find(IkeSaTable::OurSpi(old)); held != leases_held_.end()) {
    auto leases = std::move(held->second);
    leases_held_.erase(held);
    leases_held_[ours] = std::move(leases);
  }
  spdlog::info("{}: IKE SA {:016x}_i {:016x}_r rekeyed to {:016x}_i {:016x}_r",
               sa.connection()->name, old.spi_i(), old.spi_r(), sa.spi_i(), sa.spi_r());
}

void Gateway::RetryChildRekey(ike::IkeSa&, std::uint32_t spi_in, ike::TimePoint at) {
  children_.rekey_scheduler().Schedule(spi_in, at);
}

void Gateway::OnFirstPacket(std::uint32_t spi_in) { children_.OnFirstPacket(spi_in); }

void Gateway::OnExhausted(policy::PolicyId policy, std::uint32_t spi_out) {
  children_.OnExhausted(policy, spi_out, Now(), table_);
}

// ---------------------------------------------------------------- unique identities

void Gateway::ApplyUniqueness() {
  const std::vector<std::uint64_t> checks = std::move(unique_checks_);
  unique_checks_.clear();
  const ike::TimePoint now = Now();
  for (std::uint64_t ours : checks) {
    SaEntry* e = table_.Find(ours);
    if (e == nullptr || e->sa->state() != ike::IkeSa::State::kEstablished || !e->sa->peer_id() ||
        !e->sa->connection())
      continue;
    const ike::IkeSa& fresh = *e->sa;
    const Connection* c = connections_.Find(fresh.connection()->name);
    const config::Unique policy = c != nullptr ? c->cfg.unique : config::Unique::kReplace;
    // unique = no keeps every IKE SA of an identity: nothing to look for unless the peer said
    // INITIAL_CONTACT. (Walking them anyway made a login cost O(SAs of that identity): with
    // thousands of peers sharing one certificate, the control thread's biggest cost.)
    if (policy == config::Unique::kNo && !fresh.peer_initial_contact()) continue;
    std::vector<std::uint64_t> older;
    for (std::uint64_t spi : table_.FindByPeer(IkeSaTable::PeerKey(fresh))) {
      const SaEntry* other = table_.Find(spi);
      // Established ones only: one still negotiating may be the other half of a simultaneous
      // initiation by both sides (of which at most one side then sees two established).
      if (spi != ours && other != nullptr && other->sa->state() == ike::IkeSa::State::kEstablished)
        older.push_back(spi);
    }
    if (older.empty()) continue;
    const std::string who = ike::ToString(*fresh.peer_id());
    if (fresh.peer_initial_contact() || policy == config::Unique::kReplace) {
      for (std::uint64_t spi : older) {
        table_.Find(spi)->sa->Replace(now);
        table_.Schedule(spi);
        ++counters_.unique_replaced;
      }
      spdlog::info("{}: {} has a new IKE SA ({}): {} older one(s) deleted", fresh.connection()->name,
                   who, fresh.peer_initial_contact() ? "INITIAL_CONTACT" : "unique = replace",
                   older.size());
    } else if (policy == config::Unique::kKeep) {
      spdlog::info("{}: {} already has an IKE SA (unique = keep): the new one is deleted",
                   fresh.connection()->name, who);
      e->sa->Delete(now);
      table_.Schedule(ours);
      ++counters_.unique_refused;
    }
  }
}

// ---------------------------------------------------------------- dead peers

bool Gateway::HeardFromPeer(ike::IkeSa& sa, ike::TimePoint) {
  return children_.HeardFrom(sa.children());
}

// A sliding window: never more than MaxDpdPerSecond() probes in any one second.
std::optional<std::chrono::milliseconds> Gateway::EapLoginBackoff(ike::IkeSa& sa, const std::string& user,
                                                                  ike::TimePoint now) {
  const std::string address = ike::ToEndpoint(sa.remote()).AddressString();
  auto wait = login_throttle_.Check(user, address, now);
  // The user name is not logged (issue 13: EAP identities stay out of the logs).
  if (wait) spdlog::warn("{}: EAP login from {} refused unchecked: back-off after repeated failures ({} ms left)",
                         sa.connection() ? sa.connection()->name : "?", address, wait->count());
  return wait;
}

void Gateway::EapLoginChecked(ike::IkeSa& sa, const std::string& user, bool ok, ike::TimePoint now) {
  login_throttle_.Note(user, ike::ToEndpoint(sa.remote()).AddressString(), ok, now);
}

// A RADIUS answer came back: the SA answers its peer from a turn of the loop of its own, not
// from inside the RADIUS client's callback. The SA is looked up again then: it may be gone.
void Gateway::EapStepReady(ike::IkeSa& sa) {
  const std::uint64_t ours = IkeSaTable::OurSpi(sa);
  const auto resume = [this, ours] {
    SaEntry* e = table_.Find(ours);
    if (e == nullptr) return;
    e->sa->ResumeEap(Now());
    table_.Schedule(ours);
  };
  if (!env_.loop.Post(resume)) {
    ++counters_.eap_resumed_inline;  // the loop's queue was full: answered at once instead
    resume();
  }
}

bool Gateway::AdmitLivenessCheck(ike::IkeSa&, ike::TimePoint now) {
  while (!dpd_recent_.empty() && now - dpd_recent_.front() >= std::chrono::seconds(1))
    dpd_recent_.pop_front();
  if (static_cast<double>(dpd_recent_.size()) >= MaxDpdPerSecond()) return false;
  dpd_recent_.push_back(now);
  return true;
}

// ---------------------------------------------------------------- virtual IPs

namespace {

// Identities as the leases file and `spigot leases` show them: the EAP user ("eap:alice") after
// an EAP login, else the IKE identity.
std::string LeaseIdentity(const ike::IkeSa& sa) {
  if (!sa.eap_identity().empty()) return "eap:" + sa.eap_identity();
  return sa.peer_id() ? ike::ToString(*sa.peer_id()) : ike::ToString(sa.remote());
}
// What the log names: the IKE identity (EAP users stay out of the log).
std::string LogIdentity(const ike::IkeSa& sa) {
  return sa.peer_id() ? ike::ToString(*sa.peer_id()) : ike::ToString(sa.remote());
}

ike::TrafficSelector HostSelector(const policy::Prefix& p) {
  ike::TrafficSelector ts;
  const std::size_t n = policy::AddressLength(p.family);
  ts.type = p.family == policy::Family::kIpv4 ? ike::kTsIpv4AddrRange : ike::kTsIpv6AddrRange;
  std::copy(p.address.begin(), p.address.begin() + static_cast<long>(n), ts.start.begin());
  ts.end = ts.start;
  return ts;
}

}  // namespace

ike::CpResult Gateway::AssignVirtualIps(ike::IkeSa& sa, bool want_v4, bool want_v6,
                                        ike::VirtualIps& out) {
  const Connection* c = sa.connection() ? connections_.Find(sa.connection()->name) : nullptr;
  if (c == nullptr || c->cfg.pools.empty()) return ike::CpResult::kNotServed;
  const std::string identity = LeaseIdentity(sa);
  std::vector<AddressPools::Lease> granted;
  bool exhausted = false;
  for (const auto family : {policy::Family::kIpv4, policy::Family::kIpv6}) {
    if (!(family == policy::Family::kIpv4 ? want_v4 : want_v6)) continue;
    AddressPools::Lease lease;
    // RADIUS's Framed-IP-Address names the IPv4 address itself; it must lie in one of the
    // connection's pools, so that leases, `spigot leases` and the routes stay one picture.
    const auto& framed = sa.eap_authorization().framed_ip4;
    if (family == policy::Family::kIpv4 && framed) {
      policy::Prefix address{policy::Family::kIpv4, {}, 32};
      std::copy(framed->begin(), framed->end(), address.address.begin());
      if (pools_.AcquireAddress(c->cfg.pools, address, identity, &lease) == AddressPools::AcquireResult::kOk) {
        granted.push_back(lease);
      } else {
        ++counters_.framed_ip_refused;
        spdlog::warn("{}: Framed-IP-Address {} for {} is outside the connection's pools or in use by another user",
                     c->cfg.name, address.ToString(), LogIdentity(sa));
      }
      continue;
    }
    switch (pools_.Acquire(c->cfg.pools, family, identity, &lease)) {
      case AddressPools::AcquireResult::kOk:
        granted.push_back(lease);
        break;
      case AddressPools::AcquireResult::kExhausted:
        exhausted = true;
        break;
      case AddressPools::AcquireResult::kNoPoolForFamily:
      case AddressPools::AcquireResult::kUnavailable:  // AcquireAddress's answer, not Acquire's
        break;
    }
  }
  if (granted.empty()) {
    ++counters_.pool_refused;
    spdlog::warn("{}: no virtual IP for {}: {}", c->cfg.name, LogIdentity(sa),
                 exhausted ? "pool exhausted" : "no pool serves the family asked for");
    return ike::CpResult::kFailed;
  }
  for (const auto& lease : granted) {
    out.addresses.push_back(HostSelector(lease.address));
    for (const auto& pool : config_.pools) {
      if (pool.name != lease.pool) continue;
      for (const auto& dns : pool.dns) {
        const auto a = policy::Prefix::Parse(dns);
        if (!a) continue;
        const std::size_t n = policy::AddressLength(a->family);
        (a->family == policy::Family::kIpv4 ? out.dns4 : out.dns6)
            .emplace_back(a->address.begin(), a->address.begin() + static_cast<long>(n));
      }
      for (const auto& t : pool.split_include) out.subnets.push_back(ToSelector(t));
    }
    spdlog::info("{}: {} gets {} from pool {}", c->cfg.name, LogIdentity(sa),
                 lease.address.ToString(), lease.pool);
  }
  // Committed before the CFG_REPLY that carries the addresses leaves (our caller sends it).
  if (lease_store_ && !lease_store_->Record(identity, granted) && lease_store_->wants_snapshot()) {
    lease_store_->Replace(pools_.Snapshot());
  }
  leases_dirty_ = true;
  auto& held = leases_held_[IkeSaTable::OurSpi(sa)];
  held.identity = identity;
  held.leases.insert(held.leases.end(), granted.begin(), granted.end());
  return ike::CpResult::kAssigned;
}

void Gateway::ReleaseVirtualIps(std::uint64_t ours) {
  auto held = leases_held_.find(ours);
  if (held == leases_held_.end()) return;
  for (const auto& lease : held->second.leases) pools_.Release(held->second.identity, lease);
  leases_dirty_ = true;
  leases_held_.erase(held);
}

// ---------------------------------------------------------------- acquires

const std::string* Gateway::ConnectionNameFor(policy::PolicyId policy) const {
  for (const auto& [name, c] : connections_.all()) {
    if (env_.dataplane.PolicyFor(name) == policy) return &name;
  }
  return nullptr;
}

// An acquire is new work like a peer's IKE_SA_INIT (priority kNew): it waits its turn in the
// negotiation queue, and a full queue refuses it with STATUS_IPSEC_QUEUE_OVERFLOW (counted in
// queue_overflows) and drops the packets it held (counted by the data plane).
void Gateway::OnAcquire(policy::PolicyId policy) {
  const std::string* name = ConnectionNameFor(policy);
  if (name == nullptr) return env_.dataplane.AcquireFailed(policy);
  pending_acquires_.insert(policy);
  if (!acquires_queued_.insert(policy).second) return;  // already waiting in the queue
  // The ticket's destructor tells us if the queue drops the work unrun (refused, or evicted
  // for higher-priority work): the held packets must not wait for a negotiation nobody starts.
  struct Ticket {
    Gateway* gateway;
    policy::PolicyId policy;
    bool ran = false;
    ~Ticket() {
      if (!ran) gateway->AcquireDropped(policy, engine::kStatusIpsecQueueOverflow);
    }
  };
  // Built in place: a temporary Ticket's destructor would report a drop.
  std::shared_ptr<Ticket> ticket(new Ticket{this, policy});
  const std::uint32_t status = queue_.Submit(engine::Priority::kNew, [this, ticket, queued = Now()] {
    ticket->ran = true;
    queue_wait_seconds_.Observe(Now() - queued);
    StartAcquired(ticket->policy);
  });
  if (status != engine::kStatusSuccess) return;  // the ticket has reported it
  WorkQueue();
}

void Gateway::AcquireDropped(policy::PolicyId policy, std::uint32_t status) {
  acquires_queued_.erase(policy);
  pending_acquires_.erase(policy);
  ++counters_.acquires_refused;
  const std::string* name = ConnectionNameFor(policy);
  spdlog::warn("{}: acquire refused: negotiation queue full (max_queue {}): status 0x{:08X}",
               name ? *name : "?", queue_.max_depth(), status);
  env_.dataplane.AcquireFailed(policy);
}

void Gateway::StartAcquired(policy::PolicyId policy) {
  acquires_queued_.erase(policy);
  const std::string* name = ConnectionNameFor(policy);
  if (name == nullptr || pending_acquires_.count(policy) == 0) return;
  for (auto& [spi, e] : table_.entries()) {
    ike::IkeSa& sa = *e.sa;
    if (!sa.connection() || sa.connection()->name != *name || sa.state() == ike::IkeSa::State::kDead)
      continue;
    // An IKE SA exists or is on its way: its CHILD SA will serve the acquire.
    if (sa.state() == ike::IkeSa::State::kEstablished && sa.children().empty()) {
      sa.CreateChild(Now());
      table_.Schedule(spi);
    }
    return;
  }
  spdlog::info("{}: acquire: traffic waits for a CHILD SA, initiating", *name);
  std::string err;
  if (!Initiate(*name, &err)) {
    spdlog::warn("{}: acquire failed: {}", *name, err);
    pending_acquires_.erase(policy);
    env_.dataplane.AcquireFailed(policy);
  }
}

}  // namespace spigot::gateway
