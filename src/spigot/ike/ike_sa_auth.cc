// IKE_AUTH, both roles (RFC 7296 1.2; 2.15 PSK authentication): identities, AUTH payloads and
// the first CHILD SA (negotiated by the helpers in ike_sa_child.cc).
#include "spigot/ike/ike_sa.h"

#include "spigot/ike/ike_sa_internal.h"

namespace spigot::ike {

using namespace internal;

void IkeSa::SendAuth(TimePoint now) {
  NotifyType refusal = NotifyType::kTemporaryFailure;
  const auto spi = host_->AllocateChildSpi(false, refusal);
  if (!spi) return Die("SPI pool exhausted: cannot start a CHILD SA");
  child_neg_ = ChildNegotiation{*spi, 0, {}, nullptr, WithoutDh(conn_->esp_proposals)};
  for (auto& p : child_neg_->proposals) p.spi = ChildSpiBytes(*spi);

  const IdPayload idi = conn_->local_id.ToPayload();
  const auto auth = PskAuth(algs_->prf, conn_->psk, init_request_, nr_, keys_.sk_pi, idi.Body());
  std::vector<Payload> p;
  p.push_back({PayloadType::kIdi, idi});
  if (send_initial_contact_) p.push_back(Notify(NotifyType::kInitialContact));
  p.push_back({PayloadType::kAuth, AuthPayload{kAuthSharedKey, Bytes(auth.span().begin(), auth.span().end())}});
  p.push_back({PayloadType::kSa, SaPayload{child_neg_->proposals}});
  p.push_back({PayloadType::kTsi, TsPayload{conn_->local_ts}});
  p.push_back({PayloadType::kTsr, TsPayload{conn_->remote_ts}});
  SendRequest(RequestKind::kAuth, Exchange::kIkeAuth, std::move(p), now);
  SetState(State::kAuthSent);
}

void IkeSa::OnAuthResponse(const Message& msg, TimePoint now) {
  if (msg.FindNotify(NotifyType::kAuthenticationFailed) != nullptr) {
    ++counters_->auth_failures;
    return Die("peer: AUTHENTICATION_FAILED");
  }
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
  const auto expected = PskAuth(algs_->prf, conn_->psk, init_response_, ni_, keys_.sk_pr, idr->Body());
  if (auth->method != kAuthSharedKey || !crypto::ConstantTimeEqual(expected, auth->data)) {
    ++counters_->auth_failures;
    return Die("peer's AUTH payload does not verify (wrong PSK?)");
  }
  peer_id_ = Identity::FromPayload(*idr);
  established_at_ = now;
  SetState(State::kEstablished);
  if (const auto* err = msg.FirstError()) {
    ++counters_->child_failures;
    failure_ = std::string("first CHILD SA refused by peer: ") + NotifyName(err->type);
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

void IkeSa::OnAuthRequest(const Message& msg, TimePoint now) {
  const auto* idi = msg.Find<IdPayload>(PayloadType::kIdi);
  const auto* auth = msg.Find<AuthPayload>(PayloadType::kAuth);
  if (idi == nullptr || auth == nullptr) {
    ++counters_->invalid_messages;
    SendResponse(msg.header, {Notify(NotifyType::kInvalidSyntax)}, true);
    return Die("malformed IKE_AUTH request");
  }
  const Identity peer = Identity::FromPayload(*idi);
  if (!conn_->AcceptsPeer(peer)) {
    if (auto other = host_->ConnectionForPeer(peer, remote_)) conn_ = std::move(other);
  }
  const bool known = conn_->AcceptsPeer(peer);
  const auto expected = known ? PskAuth(algs_->prf, conn_->psk, init_request_, nr_, keys_.sk_pi, idi->Body())
                              : crypto::SecureBytes();
  if (!known || auth->method != kAuthSharedKey || !crypto::ConstantTimeEqual(expected, auth->data)) {
    ++counters_->auth_failures;
    SendResponse(msg.header, {Notify(NotifyType::kAuthenticationFailed)}, true);
    return Die(known ? "AUTH from " + ToString(peer) + " does not verify (wrong PSK?)"
                     : "no connection for peer identity " + ToString(peer));
  }
  const IdPayload idr = conn_->local_id.ToPayload();
  const auto our_auth = PskAuth(algs_->prf, conn_->psk, init_response_, ni_, keys_.sk_pr, idr.Body());
  std::vector<Payload> p;
  p.push_back({PayloadType::kIdr, idr});
  p.push_back({PayloadType::kAuth, AuthPayload{kAuthSharedKey, Bytes(our_auth.span().begin(), our_auth.span().end())}});
  peer_id_ = peer;
  peer_initial_contact_ = msg.FindNotify(NotifyType::kInitialContact) != nullptr;
  established_at_ = now;
  last_heard_ = now;
  SetState(State::kEstablished);
  NegotiateChildAsResponder(msg, ni_, nr_, 0, p, false, now);
  SendResponse(msg.header, std::move(p), true);
}

}  // namespace spigot::ike
