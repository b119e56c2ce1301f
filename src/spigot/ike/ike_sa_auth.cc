// IKE_AUTH, both roles (RFC 7296 1.2; 2.15 authentication with a PSK or a certificate's key:
// RFC 7427 signatures, CERT and CERTREQ, 3.6-3.8): identities, AUTH payloads,
// the configuration payload that assigns a road warrior its internal address (2.19, 3.15), and
// the first CHILD SA (negotiated by the helpers in ike_sa_child.cc).
#include "spigot/ike/ike_sa.h"

#include <algorithm>
#include <atomic>

#include "spigot/bounds.h"
#include "spigot/ike/ike_sa_internal.h"
#include "spigot/wire/byte_writer.h"

namespace spigot::ike {

using namespace internal;

namespace {

// Bounds on what a peer's IKE_AUTH may make us hold: intermediates taken from its CERT
// payloads (the rest are ignored), and CA key ids from its CERTREQs (64 CAs).
constexpr std::size_t kMaxPeerIntermediates = bounds::kPeerIntermediates;
constexpr std::size_t kMaxPeerCertReq = bounds::kPeerCertReqBytes;

bool WantsVip(const ConnectionParams& c, std::uint8_t family) {
  return std::find(c.vips.begin(), c.vips.end(), family) != c.vips.end();
}

std::uint8_t TsTypeOf(std::uint8_t family) { return family == 6 ? kTsIpv6AddrRange : kTsIpv4AddrRange; }

// 2.19: what an initiator that asks for an address proposes as TSi — any address of the family.
TrafficSelector VipAnyAddress(std::uint8_t family) {
  TrafficSelector ts;
  ts.type = TsTypeOf(family);
  std::fill_n(ts.end.begin(), ts.addr_len(), std::uint8_t{0xFF});
  return ts;
}

// One address as a selector of any protocol and port.
TrafficSelector VipHost(std::uint8_t ts_type, std::span<const std::uint8_t> address) {
  TrafficSelector ts;
  ts.type = ts_type;
  std::copy_n(address.begin(), ts.addr_len(), ts.start.begin());
  ts.end = ts.start;
  return ts;
}

bool VipAddressBit(const std::array<std::uint8_t, 16>& a, std::size_t i) {
  return (a[i / 8] >> (7 - i % 8)) & 1;
}

// The prefix length of a selector whose range is one CIDR prefix; nullopt for other ranges.
std::optional<std::uint8_t> VipPrefixLen(const TrafficSelector& ts) {
  const std::size_t bits = ts.addr_len() * 8;
  std::size_t p = 0;
  while (p < bits && VipAddressBit(ts.start, p) == VipAddressBit(ts.end, p)) ++p;
  for (std::size_t i = p; i < bits; ++i) {
    if (VipAddressBit(ts.start, i) || !VipAddressBit(ts.end, i)) return std::nullopt;
  }
  return static_cast<std::uint8_t>(p);
}

// 3.15.1 attribute values, written through the one writer.
CpAttribute VipAddressAttribute(const TrafficSelector& host) {
  CpAttribute a{host.type == kTsIpv4AddrRange ? kInternalIp4Address : kInternalIp6Address, {}};
  wire::ByteWriter w(a.value);
  w.WriteBytes({host.start.data(), host.addr_len()});
  if (host.type == kTsIpv6AddrRange) w.WriteU8(128);  // 3.15.3: one address, prefix /128
  return a;
}

CpAttribute VipSubnetAttribute(const TrafficSelector& net, std::uint8_t prefix) {
  const bool v4 = net.type == kTsIpv4AddrRange;
  CpAttribute a{v4 ? kInternalIp4Subnet : kInternalIp6Subnet, {}};
  wire::ByteWriter w(a.value);
  w.WriteBytes({net.start.data(), net.addr_len()});
  if (v4) {
    w.WriteU32(prefix == 0 ? 0 : ~std::uint32_t{0} << (32 - prefix));  // address, netmask
  } else {
    w.WriteU8(prefix);
  }
  return a;
}

}  // namespace

Payload IkeSa::CfgRequest() const {
  // 3.15.1: an empty value asks the responder to choose.
  CpPayload cp{kCfgRequest, {}};
  if (WantsVip(*conn_, 4)) cp.attributes.push_back({kInternalIp4Address, {}});
  if (WantsVip(*conn_, 6)) cp.attributes.push_back({kInternalIp6Address, {}});
  return {PayloadType::kCp, std::move(cp)};
}

std::vector<TrafficSelector> IkeSa::OwnSelectors() const {
  if (!WantsVip(*conn_, 4) && !WantsVip(*conn_, 6)) return conn_->local_ts;
  if (!virtual_ips_.empty()) return virtual_ips_;
  std::vector<TrafficSelector> any;
  for (std::uint8_t family : {4, 6}) {
    if (WantsVip(*conn_, family)) any.push_back(VipAnyAddress(family));
  }
  return any;
}

const std::vector<TrafficSelector>& IkeSa::PeerSelectors() const {
  return conn_->remote_ts_dynamic ? virtual_ips_ : conn_->remote_ts;
}

bool IkeSa::AnswerCfgRequest(const Message& req, std::vector<Payload>& out) {
  const auto* cp = req.Find<CpPayload>(PayloadType::kCp);
  bool want_v4 = false, want_v6 = false;
  if (cp != nullptr && cp->cfg_type == kCfgRequest) {
    for (const CpAttribute& a : cp->attributes) {
      want_v4 |= a.type == kInternalIp4Address;
      want_v6 |= a.type == kInternalIp6Address;
    }
  }
  if (!want_v4 && !want_v6) {
    if (!conn_->remote_ts_dynamic) return true;
    // 3.10.1 FAILED_CP_REQUIRED: "CP(CFG_REQUEST) was expected but not received, and so is a
    // conflict with locally configured policy" — the peer's selectors are the address it
    // should have asked for.
    ++counters_->child_failures;
    out.push_back(Notify(NotifyType::kFailedCpRequired));
    return false;
  }
  VirtualIps granted;
  const CpResult result = host_->AssignVirtualIps(*this, want_v4, want_v6, granted);
  if (result == CpResult::kNotServed) return true;  // 3.15.4: as if CP were not supported
  CpPayload reply{kCfgReply, {}};
  if (result == CpResult::kAssigned) {
    // One address per family asked for (3.15.1: no more than were requested).
    for (const TrafficSelector& a : granted.addresses) {
      const bool v4 = a.type == kTsIpv4AddrRange;
      const bool taken = std::any_of(virtual_ips_.begin(), virtual_ips_.end(),
                                     [&](const TrafficSelector& v) { return v.type == a.type; });
      if (!(v4 ? want_v4 : want_v6) || taken) continue;
      virtual_ips_.push_back(VipHost(a.type, a.start));
      reply.attributes.push_back(VipAddressAttribute(virtual_ips_.back()));
    }
  }
  if (virtual_ips_.empty()) {
    // 3.15.4: the IKE SA is still created; the CHILD SA is not.
    ++counters_->child_failures;
    out.push_back(Notify(NotifyType::kInternalAddressFailure));
    return false;
  }
  for (const Bytes& d : granted.dns4) {
    if (d.size() == kCpIp4Len) reply.attributes.push_back({kInternalIp4Dns, d});
  }
  for (const Bytes& d : granted.dns6) {
    if (d.size() == kCpIp6Len) reply.attributes.push_back({kInternalIp6Dns, d});
  }
  for (const TrafficSelector& net : granted.subnets) {
    if (const auto prefix = VipPrefixLen(net)) reply.attributes.push_back(VipSubnetAttribute(net, *prefix));
  }
  out.push_back({PayloadType::kCp, std::move(reply)});
  return true;
}

std::optional<std::string> IkeSa::TakeCfgReply(const Message& resp) {
  const auto* cp = resp.Find<CpPayload>(PayloadType::kCp);
  if (cp == nullptr || cp->cfg_type != kCfgReply) return "no CFG_REPLY: the peer assigned no virtual IP";
  std::vector<TrafficSelector> assigned;
  for (const CpAttribute& a : cp->attributes) {
    // Lengths were checked by the parser: 0 (nothing assigned) or the address.
    const bool v4 = a.type == kInternalIp4Address && !a.value.empty() && WantsVip(*conn_, 4);
    const bool v6 = a.type == kInternalIp6Address && !a.value.empty() && WantsVip(*conn_, 6);
    if (!v4 && !v6) continue;
    const std::uint8_t type = v4 ? kTsIpv4AddrRange : kTsIpv6AddrRange;
    if (std::none_of(assigned.begin(), assigned.end(), [&](const TrafficSelector& t) { return t.type == type; }))
      assigned.push_back(VipHost(type, a.value));
  }
  if (assigned.empty()) return "the peer's CFG_REPLY holds no virtual IP";
  virtual_ips_ = std::move(assigned);
  return std::nullopt;
}

namespace {

// Our AUTH payload (2.15): a MAC with the PSK, or a signature with our key. Reads only its
// arguments: IKE workers run it (AuthWork).
std::optional<AuthPayload> MakeOwnAuth(const ConnectionParams& conn, crypto::PrfAlg prf,
                                       const std::vector<pki::HashAlgorithm>& peer_hashes,
                                       std::span<const std::uint8_t> message, std::span<const std::uint8_t> peer_nonce,
                                       const crypto::SecureBytes& sk_p, const IdPayload& id, std::string* error) {
  if (conn.local_auth == AuthMethod::kPsk) {
    const auto mac = PskAuth(prf, conn.psk, message, peer_nonce, sk_p, id.Body());
    return AuthPayload{kAuthSharedKey, Bytes(mac.span().begin(), mac.span().end())};
  }
  if (!conn.local_credentials) {
    *error = "local_auth is pubkey but no certificate and key are loaded";
    return std::nullopt;
  }
  const auto octets = SignedOctets(prf, message, peer_nonce, sk_p, id.Body());
  auto sig = pki::Sign(conn.local_credentials->key, octets.span(), {peer_hashes, conn.rsa_pss}, error);
  if (!sig) return std::nullopt;
  return AuthPayload{sig->method, std::move(sig->data)};
}

struct PeerAuthFailure {
  std::string why;
  bool cert = false;  // the certificate's part (counted in cert_failures too)
};

// The peer's AUTH (and with pubkey, its certificate chain and identity binding) checked. Reads
// only its arguments: IKE workers run it (AuthWork).
std::optional<PeerAuthFailure> VerifyPeerAuth(const ConnectionParams& conn, crypto::PrfAlg prf, const Message& msg,
                                              const IdPayload& id, const AuthPayload& auth,
                                              std::span<const std::uint8_t> message,
                                              std::span<const std::uint8_t> peer_nonce, const crypto::SecureBytes& sk_p) {
  const auto fail = [](std::string why, bool cert) -> std::optional<PeerAuthFailure> {
    return PeerAuthFailure{std::move(why), cert};
  };
  if (conn.remote_auth == AuthMethod::kPsk) {
    if (auth.method != kAuthSharedKey) {
      return fail("AUTH method " + std::to_string(auth.method) + " where the connection expects a PSK", false);
    }
    const auto expected = PskAuth(prf, conn.psk, message, peer_nonce, sk_p, id.Body());
    if (!crypto::ConstantTimeEqual(expected, auth.data)) return fail("AUTH does not verify (wrong PSK?)", false);
    return std::nullopt;
  }
  if (auth.method == kAuthSharedKey) return fail("a PSK AUTH where the connection expects a certificate", false);
  if (!conn.trust) return fail("remote_auth is pubkey but no ca_certs are loaded", true);
  // 3.6: the first CERT holds the key that signed AUTH; the others may help build the chain.
  std::optional<pki::Certificate> leaf;
  std::vector<pki::Certificate> others;
  for (const auto& p : msg.payloads) {
    const auto* c = std::get_if<CertPayload>(&p.body);
    if (c == nullptr || p.type != PayloadType::kCert) continue;
    if (c->encoding != kCertX509Signature) {
      if (!leaf) return fail("CERT encoding " + std::to_string(c->encoding) + " is not supported (X.509 expected)", true);
      continue;
    }
    std::string error;
    auto cert = pki::Certificate::FromDer(c->data, &error);
    if (!cert) return fail(error, true);
    if (!leaf) {
      leaf = std::move(*cert);
    } else if (others.size() < kMaxPeerIntermediates) {
      others.push_back(std::move(*cert));
    }
  }
  if (!leaf) return fail("no certificate (CERT payload) from the peer", true);
  if (auto why = conn.trust->Verify(*leaf, others)) return fail("certificate " + leaf->Subject() + ": " + *why, true);
  if (!CertificateHolds(*leaf, id)) {
    return fail("identity " + ToString(Identity::FromPayload(id)) + " is not in its certificate " + leaf->Subject(), true);
  }
  const auto octets = SignedOctets(prf, message, peer_nonce, sk_p, id.Body());
  if (auto why = pki::Verify(*leaf, auth.method, auth.data, octets.span())) return fail(*why, false);
  return std::nullopt;
}

}  // namespace

// What IKE_AUTH signs and verifies, copied from the SA so that an IKE worker can run it while
// the control thread goes on (nothing here is shared with the SA but immutable connection
// parameters, certificates and keys, which OpenSSL 3 lets threads use at once). The names are
// the responder's: an initiator checking the responder's AUTH puts the responder's IDr, IKE_SA_INIT
// response, Ni and SK_pr where idi, init_request, nr and sk_pi are (and signs nothing), and one
// making its own AUTH puts its IDi, request, Nr and SK_pi where idr, init_response, ni and sk_pr are.
struct IkeSa::AuthWork {
  std::shared_ptr<const ConnectionParams> conn;
  crypto::PrfAlg prf{};
  std::vector<pki::HashAlgorithm> peer_hashes;
  Message request;
  IdPayload idi, idr;
  std::optional<AuthPayload> peer_auth;  // absent: an EAP login (2.16), only our AUTH to make
  bool sign = true;                      // false: only the peer's AUTH to check
  Bytes init_request, nr, init_response, ni;
  crypto::SecureBytes sk_pi, sk_pr;
  // Results.
  std::optional<PeerAuthFailure> peer_failure;
  std::optional<AuthPayload> our_auth;
  std::string own_error;
  std::atomic<bool> done{false};

  void Run() {
    if (peer_auth) peer_failure = VerifyPeerAuth(*conn, prf, request, idi, *peer_auth, init_request, nr, sk_pi);
    if (!peer_failure && sign) our_auth = MakeOwnAuth(*conn, prf, peer_hashes, init_response, ni, sk_pr, idr, &own_error);
    done.store(true, std::memory_order_release);
  }
};

IkeSa::PeerCheck IkeSa::CheckResponderAuth(const Message& msg, const IdPayload& idr, const AuthPayload& auth,
                                           std::string* why) {
  std::optional<PeerAuthFailure> failure;
  if (auth_ready_ && auth_ready_->peer_auth) {
    // Checked on a worker (below); ResumeOffloaded brought the response back here.
    failure = std::move(auth_ready_->peer_failure);
    auth_ready_.reset();
  } else {
    // A certificate chain and a signature (a millisecond or more with RSA), a PSK's MAC, or the
    // refusal of a method the connection does not expect: on a worker when one is free. The
    // response stays unfinished meanwhile (no retransmission of our request, no give-up: it is
    // here).
    auto work = std::make_shared<AuthWork>();
    work->conn = conn_;
    work->prf = algs_->prf;
    work->request = msg;
    work->idi = idr;
    work->peer_auth = auth;
    work->sign = false;
    work->init_request = init_response_;
    work->nr = ni_;
    work->sk_pi = keys_.sk_pr;
    if (StartOffload(Offloaded{OffloadKind::kAuth, work, nullptr, msg, std::nullopt, {}}, [work] { work->Run(); }))
      return PeerCheck::kOffloaded;
    work->Run();
    failure = std::move(work->peer_failure);
  }
  if (!failure) return PeerCheck::kOk;
  ++counters_->auth_failures;
  if (failure->cert) ++counters_->cert_failures;
  *why = std::move(failure->why);
  return PeerCheck::kFailed;
}

void IkeSa::AppendCertPayloads(std::vector<Payload>& out) const {
  if (conn_->local_auth != AuthMethod::kPubkey || !conn_->local_credentials) return;
  for (const auto& c : conn_->local_credentials->ChainFor(peer_certreq_)) {
    out.push_back({PayloadType::kCert, CertPayload{kCertX509Signature, c.Der()}});
  }
}

void IkeSa::AppendCertReq(std::vector<Payload>& out) const {
  if (conn_->remote_auth != AuthMethod::kPubkey || !conn_->trust || conn_->trust->cas().empty()) return;
  out.push_back({PayloadType::kCertReq, CertReqPayload{kCertX509Signature, conn_->trust->CertReqData()}});
}

void IkeSa::NotePeerSignatureInfo(const Message& msg) {
  if (const auto* n = msg.FindNotify(NotifyType::kSignatureHashAlgorithms)) peer_hashes_ = pki::DecodeHashAlgorithms(n->data);
  for (const auto& p : msg.payloads) {
    const auto* c = std::get_if<CertReqPayload>(&p.body);
    if (c == nullptr || c->encoding != kCertX509Signature || c->data.size() % 20 != 0) continue;
    if (peer_certreq_.size() + c->data.size() <= kMaxPeerCertReq) peer_certreq_.insert(peer_certreq_.end(), c->data.begin(), c->data.end());
  }
}

void IkeSa::SendAuth(TimePoint now) {
  NotifyType refusal = NotifyType::kTemporaryFailure;
  const auto spi = host_->AllocateChildSpi(false, refusal);
  if (!spi) return Die("SPI pool exhausted: cannot start a CHILD SA");
  child_neg_ = ChildNegotiation{*spi, 0, {}, nullptr, WithoutDh(conn_->esp_proposals)};
  for (auto& p : child_neg_->proposals) p.spi = ChildSpiBytes(*spi);

  const IdPayload idi = conn_->local_id.ToPayload();
  std::string error;
  // 2.16: with EAP the first IKE_AUTH carries no AUTH; the responder starts EAP.
  const bool eap = conn_->local_auth == AuthMethod::kEap;
  std::optional<AuthPayload> auth;
  if (auth_ready_) {
    // Made on a worker (below): SendAuth runs again once it is done.
    auth = std::move(auth_ready_->our_auth);
    error = auth_ready_->own_error;
    auth_ready_.reset();
  } else if (!eap) {
    // Our signature (a millisecond or more with RSA) or the PSK's MAC: an IKE worker makes it
    // while the IKE SA waits (no retransmission of IKE_SA_INIT meanwhile: its answer is here).
    host_->ReleaseChildSpi(child_neg_->spi_in);
    child_neg_.reset();
    auto work = std::make_shared<AuthWork>();
    work->conn = conn_;
    work->prf = algs_->prf;
    work->peer_hashes = peer_hashes_;
    work->idr = idi;  // the identity our AUTH is over (AuthWork signs as `idr`)
    work->init_response = init_request_;
    work->ni = nr_;
    work->sk_pr = keys_.sk_pi;
    if (StartOffload(Offloaded{OffloadKind::kAuth, work, nullptr, std::nullopt, std::nullopt, {}},
                     [work] { work->Run(); }))
      return;
    work->Run();
    auth_ready_ = work;
    return SendAuth(now);
  }
  if (eap && eap::LegacyProviderProblem()) error = *eap::LegacyProviderProblem();
  if (!auth && !(eap && error.empty())) {
    host_->ReleaseChildSpi(child_neg_->spi_in);
    child_neg_.reset();
    return Die("cannot authenticate: " + error);
  }
  if (eap) {
    eap_ = std::make_unique<EapState>();
    eap_->client = std::make_unique<eap::MschapV2Client>(conn_->eap_id, conn_->eap_secret);
  }
  std::vector<Payload> p;
  p.push_back({PayloadType::kIdi, idi});
  AppendCertPayloads(p);
  AppendCertReq(p);
  if (send_initial_contact_) p.push_back(Notify(NotifyType::kInitialContact));
  if (conn_->mobike) {
    p.push_back(Notify(NotifyType::kMobikeSupported));  // RFC 4555 3.4
    // 3.6: our address list goes with it (whether the responder takes MOBIKE is not known yet).
    for (auto& n : OwnAddressNotifies(*conn_)) p.push_back(std::move(n));
    if (!conn_->local_addresses.empty()) ++counters_->mobike_address_lists_sent;
  }
  if (auth) p.push_back({PayloadType::kAuth, std::move(*auth)});
  if (WantsVip(*conn_, 4) || WantsVip(*conn_, 6)) p.push_back(CfgRequest());
  p.push_back({PayloadType::kSa, SaPayload{child_neg_->proposals}});
  p.push_back({PayloadType::kTsi, TsPayload{OwnSelectors()}});
  p.push_back({PayloadType::kTsr, TsPayload{conn_->remote_ts}});
  SendRequest(RequestKind::kAuth, Exchange::kIkeAuth, std::move(p), now);
  SetState(State::kAuthSent);
}

void IkeSa::OnAuthResponse(const Message& msg, TimePoint now) {
  if (msg.FindNotify(NotifyType::kAuthenticationFailed) != nullptr) {
    ++counters_->auth_failures;
    if (eap_ && eap_->client) ++counters_->eap_login(eap::Method::kMschapV2).failure;
    return Die("peer: AUTHENTICATION_FAILED");
  }
  if (eap_ && eap_->client) return OnEapAuthResponse(msg, now);
  const auto* idr = msg.Find<IdPayload>(PayloadType::kIdr);
  const auto* auth = msg.Find<AuthPayload>(PayloadType::kAuth);
  if (idr == nullptr || auth == nullptr) {
    if (const auto* err = msg.FirstError()) return Die(std::string("peer refused IKE_AUTH: ") + NotifyName(err->type));
    return Die("malformed IKE_AUTH response");
  }
  if (!conn_->AcceptsPeer(Identity::FromPayload(*idr))) {
    ++counters_->auth_failures;
    return Die("peer identity " + ToString(Identity::FromPayload(*idr)) + " is not the configured " +
               ToString(conn_->remote_id));
  }
  std::string why;
  switch (CheckResponderAuth(msg, *idr, *auth, &why)) {
    case PeerCheck::kOffloaded: return;
    case PeerCheck::kFailed: return Die("peer " + ToString(Identity::FromPayload(*idr)) + ": " + why);
    case PeerCheck::kOk: break;
  }
  FinishAuthAsInitiator(msg, Identity::FromPayload(*idr), now);
}

void IkeSa::FinishAuthAsInitiator(const Message& msg, const Identity& peer, TimePoint now) {
  peer_id_ = peer;
  // Before kEstablished is reported, so that the host sees the address with the state.
  std::optional<std::string> no_vip;
  if (WantsVip(*conn_, 4) || WantsVip(*conn_, 6)) no_vip = TakeCfgReply(msg);
  established_at_ = now;
  SetState(State::kEstablished);
  // 3.15.4: INTERNAL_ADDRESS_FAILURE (or a reply without an address) leaves the IKE SA up
  // without a CHILD SA; the RFC lets the initiator keep it or tear it down: the host decides.
  const auto* err = msg.FirstError();
  if (err != nullptr || no_vip) {
    ++counters_->child_failures;
    failure_ = err != nullptr ? std::string("first CHILD SA refused by peer: ") + NotifyName(err->type)
                              : "first CHILD SA not installed: " + *no_vip;
    host_->ReleaseChildSpi(child_neg_->spi_in);
    child_neg_.reset();
    return;
  }
  ChildNegotiation neg = std::move(*child_neg_);
  child_neg_.reset();
  if (!FinishChildAsInitiator(msg, neg, ni_, nr_)) {
    host_->ReleaseChildSpi(neg.spi_in);
    ++counters_->child_failures;
  }
  (void)now;
}

namespace {

// "192.0.2.1" or "2001:db8::1", without the port.
std::string AddressOnly(const Address& a) {
  const std::string s = ToString(a);
  if (a.family == 6) return s.substr(1, s.rfind(']') - 1);
  return s.substr(0, s.rfind(':'));
}

Payload EapPayload(Bytes packet) {
  return {PayloadType::kEap, OtherPayload{static_cast<std::uint8_t>(PayloadType::kEap), false, std::move(packet)}};
}

const OtherPayload* FindEap(const Message& msg) {
  for (const auto& p : msg.payloads) {
    if (p.type != PayloadType::kEap) continue;
    if (const auto* o = std::get_if<OtherPayload>(&p.body)) return o;
  }
  return nullptr;
}

}  // namespace

EapServerFactory LocalMschapV2Servers(std::shared_ptr<const eap::Users> users) {
  return [users = std::move(users)](const EapServerContext& c) -> std::unique_ptr<eap::ServerSession> {
    if (eap::LegacyProviderProblem()) return nullptr;  // MD4 and DES: the gateway said so when it started
    return std::make_unique<eap::MschapV2Server>(users, c.server_name, c.admit);
  };
}

EapServerFactory EapTlsServers(std::shared_ptr<const eap::TlsServerContext> tls) {
  return [tls = std::move(tls)](const EapServerContext& c) -> std::unique_ptr<eap::ServerSession> {
    return std::make_unique<eap::TlsServer>(tls, c.admit);
  };
}

bool IkeSa::AuthWorkDone(const AuthWork& work) { return work.done.load(std::memory_order_acquire); }

// An EAP step with public-key work (ServerSession::PublicKeyStep: an EAP-TLS handshake flight)
// on an IKE worker. The work holds the SA's EAP server meanwhile: should the SA die, the server
// lives until the step is done and goes with the work.
struct IkeSa::EapWork {
  std::unique_ptr<eap::ServerSession> server;
  Bytes packet;
  std::optional<eap::ServerSession::Step> step;
  std::atomic<bool> done{false};

  void Run() {
    server->Receive(packet, [this](eap::ServerSession::Step s) { step = std::move(s); });
    done.store(true, std::memory_order_release);
  }
};

bool IkeSa::EapWorkDone(const EapWork& work) { return work.done.load(std::memory_order_acquire); }

void IkeSa::FinishEapWork(EapWork& work, TimePoint now) {
  if (!eap_ || !work.server) return;
  eap_->server = std::move(work.server);
  if (!work.step) {
    // PublicKeyStep promised a step before Receive returned.
    ++counters_->auth_failures;
    ++counters_->eap_login(eap_->server->method()).failure;
    if (eap_->pending) SendResponse(*eap_->pending, {Notify(NotifyType::kAuthenticationFailed)}, true);
    return Die(std::string("EAP (") + eap::MethodName(eap_->server->method()) + "): a step gave no answer");
  }
  eap_->ready = std::move(work.step);
  ResumeEap(now);
}

void IkeSa::OnAuthRequest(const Message& msg, TimePoint now) {
  if (eap_) return OnEapAuthRequest(msg, now);
  const auto* idi = msg.Find<IdPayload>(PayloadType::kIdi);
  const auto* auth = msg.Find<AuthPayload>(PayloadType::kAuth);
  if (idi == nullptr) {
    ++counters_->invalid_messages;
    SendResponse(msg.header, {Notify(NotifyType::kInvalidSyntax)}, true);
    return Die("malformed IKE_AUTH request");
  }
  const Identity peer = Identity::FromPayload(*idi);
  if (!conn_->AcceptsPeer(peer)) {
    if (auto other = host_->ConnectionForPeer(peer, remote_)) conn_ = std::move(other);
  }
  if (!conn_->AcceptsPeer(peer)) {
    ++counters_->auth_failures;
    SendResponse(msg.header, {Notify(NotifyType::kAuthenticationFailed)}, true);
    return Die("no connection for peer identity " + ToString(peer));
  }
  NotePeerSignatureInfo(msg);  // its CERTREQ: which chain to send back
  const bool eap = conn_->remote_auth == AuthMethod::kEap;
  if (auth == nullptr && !eap) {
    // 2.16: no AUTH asks for EAP, which this connection does not do.
    ++counters_->auth_failures;
    SendResponse(msg.header, {Notify(NotifyType::kAuthenticationFailed)}, true);
    return Die(ToString(peer) + " asked for EAP; the connection's remote_auth is not EAP");
  }
  if (auth != nullptr && eap) {
    ++counters_->auth_failures;
    SendResponse(msg.header, {Notify(NotifyType::kAuthenticationFailed)}, true);
    return Die(ToString(peer) + " sent AUTH where the connection expects EAP");
  }
  auto work = std::make_shared<AuthWork>();
  work->conn = conn_;
  work->prf = algs_->prf;
  work->peer_hashes = peer_hashes_;
  work->request = msg;
  work->idi = *idi;
  work->idr = conn_->local_id.ToPayload();
  if (auth != nullptr) work->peer_auth = *auth;
  work->init_request = init_request_;
  work->nr = nr_;
  work->init_response = init_response_;
  work->ni = ni_;
  work->sk_pi = keys_.sk_pi;
  work->sk_pr = keys_.sk_pr;
  // The peer's AUTH checked and ours made, signatures and certificate chains (a millisecond or
  // more with RSA) as PSK MACs: on a worker when one is free.
  if (StartOffload(Offloaded{OffloadKind::kAuth, work, nullptr, msg, reply_to_, {}}, [work] { work->Run(); }))
    return;
  work->Run();
  FinishAuthRequest(msg, *work, now);
}

void IkeSa::FinishAuthRequest(const Message& msg, AuthWork& work, TimePoint now) {
  const Identity peer = Identity::FromPayload(work.idi);
  if (work.peer_failure) {
    ++counters_->auth_failures;
    if (work.peer_failure->cert) ++counters_->cert_failures;
    SendResponse(msg.header, {Notify(NotifyType::kAuthenticationFailed)}, true);
    return Die("AUTH from " + ToString(peer) + ": " + work.peer_failure->why);
  }
  if (!work.our_auth) {
    SendResponse(msg.header, {Notify(NotifyType::kAuthenticationFailed)}, true);
    return Die("cannot authenticate to " + ToString(peer) + ": " + work.own_error);
  }
  const bool eap = conn_->remote_auth == AuthMethod::kEap;
  std::vector<Payload> p;
  p.push_back({PayloadType::kIdr, work.idr});
  AppendCertPayloads(p);
  p.push_back({PayloadType::kAuth, std::move(*work.our_auth)});
  if (eap) {
    // 2.16: we prove ourselves now; the peer proves itself with EAP over the next exchanges.
    EapServerContext context;
    context.server_name = ToString(conn_->local_id);
    context.local = local_;
    context.peer = remote_;
    context.admit = [this](const std::string& user) -> std::optional<std::string> {
      // Asked when a step names its user, before any credential check; last_heard_ is the
      // time of the IKE_AUTH carrying it.
      const auto wait = host_->EapLoginBackoff(*this, user, last_heard_);
      if (!wait) return std::nullopt;
      return "too many failed logins for this user from " + AddressOnly(remote_) + "; the next is checked in " +
             std::to_string((wait->count() + 999) / 1000) + " s";
    };
    auto server = conn_->eap_server ? conn_->eap_server(context) : nullptr;
    if (!server) {
      ++counters_->auth_failures;
      SendResponse(msg.header, {Notify(NotifyType::kAuthenticationFailed)}, true);
      return Die("the connection's EAP server is unavailable");
    }
    eap_ = std::make_unique<EapState>();
    eap_->server = std::move(server);
    eap_->first_request = msg;
    p.push_back(EapPayload(eap_->server->Start()));
    last_heard_ = now;
    SendResponse(msg.header, std::move(p), true);
    return;
  }
  peer_id_ = peer;
  peer_initial_contact_ = msg.FindNotify(NotifyType::kInitialContact) != nullptr;
  AnswerMobike(msg, p);
  // 2.19: the address first (the CHILD SA's selectors may be it), and before kEstablished is
  // reported, so that the host sees the address with the state.
  const bool child = AnswerCfgRequest(msg, p);
  established_at_ = now;
  last_heard_ = now;
  SetState(State::kEstablished);
  if (child) NegotiateChildAsResponder(msg, ni_, nr_, 0, p, false, now);
  SendResponse(msg.header, std::move(p), true);
}

void IkeSa::OnEapAuthRequest(const Message& msg, TimePoint now) {
  last_heard_ = now;
  if (eap_->pending) return;  // retransmitted while the EAP server works on it: the answer comes
  if (eap_->succeeded) return FinishEap(msg, now);
  const eap::Method method = eap_->server->method();
  const auto* e = FindEap(msg);
  if (e == nullptr) {
    ++counters_->auth_failures;
    ++counters_->eap_login(method).failure;
    SendResponse(msg.header, {Notify(NotifyType::kAuthenticationFailed)}, true);
    const Identity peer = Identity::FromPayload(*eap_->first_request.Find<IdPayload>(PayloadType::kIdi));
    return Die(std::string("EAP (") + eap::MethodName(method) + ") with " + ToString(peer) +
               ": IKE_AUTH without an EAP payload");
  }
  eap_->pending = msg.header;
  if (eap_->server->PublicKeyStep(e->body)) {
    // A TLS handshake flight (signing, key exchange, the user's certificate chain): an IKE
    // worker runs the step with the server while the SA waits (ResumeOffloaded answers).
    auto work = std::make_shared<EapWork>();
    work->server = std::move(eap_->server);
    work->packet = e->body;
    Offloaded o{OffloadKind::kEap, nullptr, nullptr, msg, reply_to_, {}};
    o.eap = work;
    if (StartOffload(std::move(o), [work] { work->Run(); })) return;
    eap_->server = std::move(work->server);
  }
  eap_->in_receive = true;
  // The step may finish at once (local methods) or later (RADIUS); `this` outlives the server,
  // whose destruction cancels a step still outstanding.
  eap_->server->Receive(e->body, [this](eap::ServerSession::Step step) {
    eap_->ready = std::move(step);
    if (!eap_->in_receive) host_->EapStepReady(*this);
  });
  eap_->in_receive = false;
  if (eap_->ready) ResumeEap(now);
}

void IkeSa::ResumeEap(TimePoint now) {
  if (state_ == State::kDead || !eap_ || !eap_->pending || !eap_->ready) return;
  const Header request = *eap_->pending;
  eap::ServerSession::Step step = std::move(*eap_->ready);
  eap_->pending.reset();
  eap_->ready.reset();
  AnswerEapStep(request, std::move(step), now);
}

void IkeSa::AnswerEapStep(const Header& request, eap::ServerSession::Step step, TimePoint now) {
  const eap::Method method = eap_->server->method();
  if (step.password_checked) {
    host_->EapLoginChecked(*this, eap_->server->user(), step.status != eap::ServerSession::Status::kFailure, now);
  }
  if (step.throttled) ++counters_->eap_throttled;
  switch (step.status) {
    case eap::ServerSession::Status::kContinue:
      SendResponse(request, {EapPayload(std::move(step.reply))}, true);
      return;
    case eap::ServerSession::Status::kSuccess:
      eap_->succeeded = true;
      SendResponse(request, {EapPayload(std::move(step.reply))}, true);
      return;
    case eap::ServerSession::Status::kFailure: {
      // The EAP identity and password stay out of the log (only the IKE identity is named).
      ++counters_->auth_failures;
      ++counters_->eap_login(method).failure;
      SendResponse(request, {Notify(NotifyType::kAuthenticationFailed), EapPayload(std::move(step.reply))}, true);
      const Identity peer = Identity::FromPayload(*eap_->first_request.Find<IdPayload>(PayloadType::kIdi));
      return Die(std::string("EAP (") + eap::MethodName(method) + ") with " + ToString(peer) + ": " + step.reason);
    }
  }
}

void IkeSa::FinishEap(const Message& msg, TimePoint now) {
  const Message& first = eap_->first_request;
  const auto* idi = first.Find<IdPayload>(PayloadType::kIdi);
  const Identity peer = Identity::FromPayload(*idi);
  const auto* auth = msg.Find<AuthPayload>(PayloadType::kAuth);
  const crypto::SecureBytes& msk = eap_->server->msk();
  // 2.16: both AUTH payloads are MACs as with a PSK, keyed with the MSK, over the same signed
  // octets as without EAP (the IDi of the first IKE_AUTH).
  if (auth == nullptr || auth->method != kAuthSharedKey ||
      !crypto::ConstantTimeEqual(PskAuth(algs_->prf, msk.span(), init_request_, nr_, keys_.sk_pi, idi->Body()).span(),
                                 auth->data)) {
    ++counters_->auth_failures;
    ++counters_->eap_login(eap_->server->method()).failure;
    SendResponse(msg.header, {Notify(NotifyType::kAuthenticationFailed)}, true);
    return Die(std::string("EAP (") + eap::MethodName(eap_->server->method()) + ") with " + ToString(peer) +
               ": the final AUTH does not verify with the MSK");
  }
  ++counters_->eap_login(eap_->server->method()).success;
  eap_identity_ = eap_->server->user();
  eap_authorization_ = eap_->server->authorization();
  const IdPayload idr = conn_->local_id.ToPayload();
  const auto mac = PskAuth(algs_->prf, msk.span(), init_response_, ni_, keys_.sk_pr, idr.Body());
  std::vector<Payload> p;
  p.push_back({PayloadType::kAuth, AuthPayload{kAuthSharedKey, Bytes(mac.span().begin(), mac.span().end())}});
  peer_id_ = peer;
  peer_initial_contact_ = first.FindNotify(NotifyType::kInitialContact) != nullptr;
  AnswerMobike(first, p);
  const bool child = AnswerCfgRequest(first, p);
  established_at_ = now;
  SetState(State::kEstablished);
  if (child) NegotiateChildAsResponder(first, ni_, nr_, 0, p, false, now);
  SendResponse(msg.header, std::move(p), true);
  eap_.reset();
}

void IkeSa::OnEapAuthResponse(const Message& msg, TimePoint now) {
  EapState& e = *eap_;
  const auto fail = [&](const std::string& why) {
    ++counters_->auth_failures;
    ++counters_->eap_login(eap::Method::kMschapV2).failure;
    if (child_neg_) {
      host_->ReleaseChildSpi(child_neg_->spi_in);
      child_neg_.reset();
    }
    Die(why);
  };
  if (!e.first_response) {
    // The responder proves itself first (2.16), with its own AUTH.
    const auto* idr = msg.Find<IdPayload>(PayloadType::kIdr);
    const auto* auth = msg.Find<AuthPayload>(PayloadType::kAuth);
    if (idr == nullptr || auth == nullptr) {
      if (const auto* err = msg.FirstError()) return fail(std::string("peer refused IKE_AUTH: ") + NotifyName(err->type));
      return fail("the first IKE_AUTH response of an EAP login has no IDr or AUTH");
    }
    const Identity peer = Identity::FromPayload(*idr);
    if (!conn_->AcceptsPeer(peer)) return fail("peer identity " + ToString(peer) + " is not the configured " + ToString(conn_->remote_id));
    std::string why;
    switch (CheckResponderAuth(msg, *idr, *auth, &why)) {
      case PeerCheck::kOffloaded: return;
      case PeerCheck::kFailed:
        if (child_neg_) {
          host_->ReleaseChildSpi(child_neg_->spi_in);
          child_neg_.reset();
        }
        return Die("peer " + ToString(peer) + ": " + why);
      case PeerCheck::kOk: break;
    }
    e.first_response = msg;
  } else if (e.succeeded) {
    // The last exchange: the responder's AUTH keyed with the MSK, and the CHILD SA.
    const auto* idr = e.first_response->Find<IdPayload>(PayloadType::kIdr);
    const auto* auth = msg.Find<AuthPayload>(PayloadType::kAuth);
    const Identity peer = Identity::FromPayload(*idr);
    if (auth == nullptr || auth->method != kAuthSharedKey ||
        !crypto::ConstantTimeEqual(
            PskAuth(algs_->prf, e.client->msk().span(), init_response_, ni_, keys_.sk_pr, idr->Body()).span(), auth->data)) {
      return fail("peer " + ToString(peer) + ": its final AUTH does not verify with the EAP MSK");
    }
    ++counters_->eap_login(eap::Method::kMschapV2).success;
    const Message final_response = msg;
    eap_.reset();
    return FinishAuthAsInitiator(final_response, peer, now);
  }
  const auto* ep = FindEap(msg);
  if (ep == nullptr) return fail("IKE_AUTH response without the EAP payload the login needs");
  auto step = e.client->Process(ep->body);
  switch (step.status) {
    case eap::MschapV2Client::Status::kFailure: return fail("EAP-MSCHAPv2: " + step.reason);
    case eap::MschapV2Client::Status::kContinue:
      SendRequest(RequestKind::kAuth, Exchange::kIkeAuth, {EapPayload(std::move(step.reply))}, now);
      return;
    case eap::MschapV2Client::Status::kSuccess: {
      e.succeeded = true;
      const IdPayload idi = conn_->local_id.ToPayload();
      const auto mac = PskAuth(algs_->prf, e.client->msk().span(), init_request_, nr_, keys_.sk_pi, idi.Body());
      SendRequest(RequestKind::kAuth, Exchange::kIkeAuth,
                  {{PayloadType::kAuth, AuthPayload{kAuthSharedKey, Bytes(mac.span().begin(), mac.span().end())}}}, now);
      return;
    }
  }
}

}  // namespace spigot::ike
