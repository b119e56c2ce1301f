#include "spigot/gateway/connections.h"

#include <algorithm>

#include "spigot/ike/endpoint.h"
#include "spigot/ike/traffic_selectors.h"
#include "spigot/radius/eap_session.h"

namespace spigot::gateway {

static_assert(config::kMinFragmentSize >= ike::kMinFragmentSize,
              "global.fragment_size must leave room for every IKE suite's fragment overhead");

ike::TrafficSelector ToSelector(const config::TrafficSelector& t) {
  return *ike::SelectorFromCidr(t.ToString());
}

bool Connections::Apply(const config::Config& config, const std::string& path,
                        std::shared_ptr<radius::Client> radius, std::string* error) {
  std::map<std::string, Connection> next;
  auto eap_users = std::make_shared<eap::Users>();
  for (const auto& u : config.eap_users) {
    const auto secret = u.secret.view();
    eap_users->Add(u.id, crypto::SecureBytes::FromText(secret));
  }
  for (const auto& c : config.connections) {
    auto p = std::make_shared<ike::ConnectionParams>();
    p->name = c.name;
    const std::string local_id = c.local_id.empty() ? config.global.listen : c.local_id;
    const std::string remote_id =
        c.remote_id.empty() ? (c.remote_addrs.empty() ? "" : c.remote_addrs[0]) : c.remote_id;
    auto lid = ike::ParseIdentity(local_id);
    const bool any = remote_id == "%any";
    auto rid = any ? std::optional<ike::Identity>(ike::Identity{}) : ike::ParseIdentity(remote_id);
    if (!lid || !rid) {
      *error = path + ": connection '" + c.name + "': bad local_id or remote_id";
      return false;
    }
    p->local_id = *lid;
    p->remote_id = *rid;
    p->remote_id_any = any;
    // A DN with "*" values matches many peers ("C=CH, O=Example, CN=*").
    if (!any && rid->type == ike::IdType::kDerAsn1Dn && remote_id.find('*') != std::string::npos) {
      std::string why;
      p->remote_id_pattern = pki::DnPattern::Parse(remote_id, &why);
      if (!p->remote_id_pattern) {
        *error = path + ": connection '" + c.name + "': remote_id: " + why;
        return false;
      }
    }
    switch (c.local_auth) {
      case config::AuthKind::kPsk: p->local_auth = ike::AuthMethod::kPsk; break;
      case config::AuthKind::kPubkey: p->local_auth = ike::AuthMethod::kPubkey; break;
      case config::AuthKind::kEapTls:
      case config::AuthKind::kEapRadius:  // refused by config::Load as local_auth
        break;
      case config::AuthKind::kEapMschapV2:
        p->local_auth = ike::AuthMethod::kEap;
        p->eap_id = c.eap_id;
        for (const auto& u : config.eap_users) {
          if (u.id != c.eap_id) continue;
          const auto secret = u.secret.view();
          p->eap_secret = crypto::SecureBytes::FromText(secret);
        }
        break;
    }
    switch (c.remote_auth) {
      case config::AuthKind::kPsk: p->remote_auth = ike::AuthMethod::kPsk; break;
      case config::AuthKind::kPubkey: p->remote_auth = ike::AuthMethod::kPubkey; break;
      case config::AuthKind::kEapMschapV2:
        if (auto problem = eap::LegacyProviderProblem()) {
          *error = path + ": connection '" + c.name + "': remote_auth = \"eap-mschapv2\" needs OpenSSL's legacy provider (MD4, DES): " + *problem;
          return false;
        }
        p->remote_auth = ike::AuthMethod::kEap;
        p->eap_server = ike::LocalMschapV2Servers(eap_users);
        break;
      case config::AuthKind::kEapTls: {
        // config::Load made sure of local_cert/local_key (the TLS server's) and ca_certs.
        std::string err;
        auto tls = eap::TlsServerContext::Create(c.credentials, c.trust, {}, &err);
        if (!tls) {
          *error = path + ": connection '" + c.name + "': remote_auth = \"eap-tls\": " + err;
          return false;
        }
        p->remote_auth = ike::AuthMethod::kEap;
        p->eap_server = ike::EapTlsServers(std::move(tls));
        break;
      }
      case config::AuthKind::kEapRadius:
        if (!radius) {
          *error = path + ": connection '" + c.name + "': remote_auth = \"eap-radius\": no RADIUS client";
          return false;
        }
        p->remote_auth = ike::AuthMethod::kEap;
        p->eap_server = [radius](const ike::EapServerContext& context) -> std::unique_ptr<eap::ServerSession> {
          return std::make_unique<radius::EapSession>(radius, ike::ToString(context.peer), ike::ToString(context.local),
                                                      context.admit);
        };
        break;
    }
    p->local_credentials = c.credentials;
    p->trust = c.trust;
    p->rsa_pss = c.rsa_pss;
    const auto psk = c.psk.view();
    p->psk = crypto::SecureBytes::FromText(psk);
    std::string err;
    std::string allow_weak;
    for (const auto& w : c.allow_weak) allow_weak += (allow_weak.empty() ? "" : ",") + w;
    unsigned weak = 0;
    if (!ike::ParseWeakTransforms(allow_weak, weak, err) ||
        !ike::ParseProposals(c.ike_proposals, ike::ProtocolId::kIke, p->ike_proposals, err, weak) ||
        !ike::ParseProposals(c.esp_proposals, ike::ProtocolId::kEsp, p->esp_proposals, err, weak)) {
      *error = path + ": connection '" + c.name + "': " + err;
      return false;
    }
    for (const auto& t : c.local_ts) p->local_ts.push_back(ToSelector(t));
    for (const auto& t : c.remote_ts) p->remote_ts.push_back(ToSelector(t));
    p->remote_ts_dynamic = c.remote_ts_dynamic;
    for (const auto f : c.vips) p->vips.push_back(f == config::AddressFamily::kIpv4 ? 4 : 6);
    p->dpd_delay = c.dpd_delay;
    p->ike_rekey_time = c.ike_rekey_time;
    p->child_rekey_time = c.child_rekey_time;
    p->child_lifetime = c.child_lifetime;
    p->host_schedules_rekeys = true;
    p->fragmentation = c.fragmentation;
    p->mobike = c.mobike;
    // RFC 4555 3.6: the addresses the connection can be reached on — its literal local_addrs,
    // all of them when IKE listens on the wildcard address, else only the one it listens on.
    if (const auto l = io::Endpoint::Parse(config.global.listen, 0)) {
      const ike::Address listen = ike::ToAddress(*l);
      const bool wildcard = std::ranges::all_of(listen.bytes(), [](std::uint8_t b) { return b == 0; });
      for (const auto& a : c.local_addrs) {
        const auto e = io::Endpoint::Parse(a, 0);
        if (!e) continue;  // "%any"
        ike::Address addr = ike::ToAddress(*e);
        if (!wildcard && !(addr == listen)) continue;
        if (std::find(p->local_addresses.begin(), p->local_addresses.end(), addr) == p->local_addresses.end())
          p->local_addresses.push_back(addr);
      }
    }
    p->fragment_size = config.global.fragment_size;
    p->retransmit_timeout = std::chrono::milliseconds(config.global.retransmit_timeout_ms);
    p->retransmit_tries = static_cast<int>(config.global.retransmit_tries);
    p->half_open_timeout = std::chrono::milliseconds(config.global.half_open_timeout_ms);
    next[c.name] = Connection{c, std::move(p)};
  }
  by_name_ = std::move(next);
  return true;
}

const Connection* Connections::Find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &it->second;
}

const Connection* Connections::ForAddress(const io::Endpoint& from) const {
  const std::string addr = from.AddressString();
  const Connection* any = nullptr;
  for (const auto& [name, c] : by_name_) {
    for (const auto& r : c.cfg.remote_addrs) {
      if (r == addr) return &c;
      if (r == "%any" && any == nullptr) any = &c;
    }
  }
  return any;
}

std::shared_ptr<const ike::ConnectionParams> Connections::ForPeer(const ike::Identity& peer) const {
  for (const auto& [name, c] : by_name_) {
    if (!c.params->remote_id_any && ike::SameIdentity(c.params->remote_id, peer)) return c.params;
  }
  for (const auto& [name, c] : by_name_) {
    if (c.params->remote_id_pattern && c.params->AcceptsPeer(peer)) return c.params;
  }
  for (const auto& [name, c] : by_name_) {
    if (c.params->remote_id_any) return c.params;
  }
  return nullptr;
}

}  // namespace spigot::gateway
