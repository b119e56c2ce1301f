// IKE_SA_INIT, both roles (RFC 7296 1.2; 2.6 cookies; 1.2 and 3.10.1 INVALID_KE_PAYLOAD; 2.23
// NAT detection; 2.14 key derivation; RFC 7383 2.3 fragmentation support): the initiator's
// request and its retries, the responder's answer.
#include "spigot/ike/ike_sa.h"

#include <algorithm>

#include "spigot/ike/ike_sa_internal.h"
#include "spigot/wire/byte_reader.h"

namespace spigot::ike {

using namespace internal;

namespace {

constexpr int kMaxCookieRetries = 3;

}  // namespace

void IkeSa::Initiate(TimePoint now) {
  created_at_ = now;
  last_heard_ = now;
  dh_group_ = PreferredDhGroup(conn_->ike_proposals);
  ni_ = RandomNonce();
  SendInit(now);
}

void IkeSa::SendInit(TimePoint now) {
  // 2.6: a retry with a cookie repeats the request; only INVALID_KE_PAYLOAD changes the KE.
  if (!dh_ || dh_->group() != dh_group_) dh_ = crypto::DhKeyPair::Generate(dh_group_);
  if (!dh_) return Die("unsupported DH group " + std::to_string(dh_group_));
  std::vector<Payload> p;
  if (!cookie_.empty()) p.push_back(Notify(NotifyType::kCookie, cookie_));
  p.push_back({PayloadType::kSa, SaPayload{conn_->ike_proposals}});
  const auto pub = dh_->public_value();
  p.push_back({PayloadType::kKe, KePayload{dh_group_, Bytes(pub.begin(), pub.end())}});
  p.push_back({PayloadType::kNonce, NoncePayload{ni_}});
  for (auto& n : NatDetectionPayloads()) p.push_back(std::move(n));
  if (conn_->fragmentation) p.push_back(Notify(NotifyType::kIkev2FragmentationSupported));  // RFC 7383 2.3
  if (conn_->uses_pubkey()) p.push_back(Notify(NotifyType::kSignatureHashAlgorithms, pki::EncodeHashAlgorithms()));
  // Keep the retransmission state across cookie and INVALID_KE retries: they are new requests
  // with message ID 0 (2.6, 1.2).
  SendRequest(RequestKind::kInit, Exchange::kIkeSaInit, std::move(p), now);
  init_request_ = outstanding_->bytes;
  next_request_id_ = 1;
  SetState(State::kInitSent);
}

void IkeSa::OnInitResponse(const Message& msg, std::span<const std::uint8_t> datagram,
                           TimePoint now) {
  if (const auto* c = msg.FindNotify(NotifyType::kCookie)) {
    // The cookie we already send: this answers an older copy of our request (a retransmission
    // that crossed the cookie demand). Our current request is in flight and will be answered
    // or retransmitted; resending now would only make a third version of it.
    if (!cookie_.empty() && c->data == cookie_) return;
    // 2.6: retry with the cookie first.
    if (c->data.empty() || c->data.size() > kMaxCookieLen || ++cookie_retries_ > kMaxCookieRetries)
      return Die("peer keeps demanding cookies");
    cookie_ = c->data;
    return SendInit(now);
  }
  if (const auto* ke = msg.FindNotify(NotifyType::kInvalidKePayload)) {
    // 1.2: the responder wants another group; retry with it if we offered it.
    std::uint16_t g = 0;
    if (ke->data.size() != 2 || !wire::ByteReader(ke->data).ReadU16(g))
      return Die("malformed INVALID_KE_PAYLOAD");
    if (g == dh_group_ || !OffersDhGroup(conn_->ike_proposals, g) || ++ke_retries_ > 1)
      return Die("peer asks for DH group " + std::to_string(g) + ", which we do not offer");
    dh_group_ = g;
    return SendInit(now);
  }
  if (const auto* err = msg.FirstError()) return Die(std::string("peer refused IKE_SA_INIT: ") + NotifyName(err->type));
  const auto* sa = msg.Find<SaPayload>(PayloadType::kSa);
  const auto* ke = msg.Find<KePayload>(PayloadType::kKe);
  const auto* nr = msg.Find<NoncePayload>(PayloadType::kNonce);
  if (sa == nullptr || ke == nullptr || nr == nullptr || sa->proposals.size() != 1 ||
      msg.header.spi_r == 0)
    return Die("malformed IKE_SA_INIT response");
  if (!AcceptableChoice(conn_->ike_proposals, sa->proposals[0]))
    return Die("peer chose an IKE proposal we did not offer");
  algs_ = IkeAlgorithmsOf(sa->proposals[0]);
  if (!algs_ || algs_->dh_group != dh_group_ || ke->group != dh_group_)
    return Die("peer's IKE proposal or KE group does not match");
  spi_r_ = msg.header.spi_r;
  nr_ = nr->data;
  init_response_.assign(datagram.begin(), datagram.end());
  CheckNatDetection(msg);
  fragmentation_ = conn_->fragmentation && msg.FindNotify(NotifyType::kIkev2FragmentationSupported) != nullptr;
  NotePeerSignatureInfo(msg);
  if (!DeriveKeys(ke->data)) return Die("invalid KE payload from peer");
  outstanding_.reset();
  SendAuth(now);
}

void IkeSa::OnInitRequest(const Message& msg, std::span<const std::uint8_t> datagram,
                          TimePoint now) {
  const auto* sa = msg.Find<SaPayload>(PayloadType::kSa);
  const auto* ke = msg.Find<KePayload>(PayloadType::kKe);
  const auto* ni = msg.Find<NoncePayload>(PayloadType::kNonce);
  if (sa == nullptr || ke == nullptr || ni == nullptr || msg.header.message_id != 0) {
    ++counters_->invalid_messages;
    SendResponse(msg.header, {Notify(NotifyType::kInvalidSyntax)}, false);
    return Die("malformed IKE_SA_INIT request");
  }
  const auto chosen = SelectProposal(conn_->ike_proposals, sa->proposals);
  const auto algs = chosen ? IkeAlgorithmsOf(*chosen) : std::nullopt;
  if (!algs) {
    const std::uint64_t ours = spi_r_;
    spi_r_ = 0;  // error responses to IKE_SA_INIT create no state (2.6)
    SendResponse(msg.header, {Notify(NotifyType::kNoProposalChosen)}, false);
    spi_r_ = ours;
    const unsigned weak = WeakTransformsOf(sa->proposals) & ~WeakTransformsOf(conn_->ike_proposals);
    if (weak == 0) return Die("no acceptable IKE proposal from peer");
    counters_->CountWeakRefused(weak);
    return Die("no acceptable IKE proposal from peer: weak transform(s) refused: " +
               WeakTransformNames(weak) + " (not in the connection's allow_weak)");
  }
  if (ke->group != algs->dh_group) {
    const std::uint64_t ours = spi_r_;
    spi_r_ = 0;
    SendResponse(msg.header, {Notify(NotifyType::kInvalidKePayload, DhGroupBytes(algs->dh_group))},
                 false);
    spi_r_ = ours;
    return Die("peer's KE group differs from the chosen one (INVALID_KE_PAYLOAD sent)");
  }
  algs_ = algs;
  dh_group_ = algs->dh_group;
  ni_ = ni->data;
  nr_ = RandomNonce();
  dh_ = crypto::DhKeyPair::Generate(dh_group_);
  const Bytes pub(dh_->public_value().begin(), dh_->public_value().end());
  init_request_.assign(datagram.begin(), datagram.end());
  CheckNatDetection(msg);
  if (!DeriveKeys(ke->data)) {
    ++counters_->invalid_messages;
    SendResponse(msg.header, {Notify(NotifyType::kInvalidSyntax)}, false);
    return Die("invalid KE payload from peer");
  }
  std::vector<Payload> p;
  p.push_back({PayloadType::kSa, SaPayload{{*chosen}}});
  p.push_back({PayloadType::kKe, KePayload{dh_group_, pub}});
  p.push_back({PayloadType::kNonce, NoncePayload{nr_}});
  for (auto& n : NatDetectionPayloads()) p.push_back(std::move(n));
  // RFC 7383 2.3: answered only when the initiator offered it.
  fragmentation_ = conn_->fragmentation && msg.FindNotify(NotifyType::kIkev2FragmentationSupported) != nullptr;
  if (fragmentation_) p.push_back(Notify(NotifyType::kIkev2FragmentationSupported));
  // RFC 7427 4: answered when the initiator announced its hashes; and 3.7: the CAs we trust,
  // so that a peer sending its certificate only when asked (strongSwan's default) sends it.
  NotePeerSignatureInfo(msg);
  if (msg.FindNotify(NotifyType::kSignatureHashAlgorithms) != nullptr) {
    p.push_back(Notify(NotifyType::kSignatureHashAlgorithms, pki::EncodeHashAlgorithms()));
  }
  AppendCertReq(p);
  SendResponse(msg.header, std::move(p), false);
  init_response_ = last_response_;
  SetState(State::kInitAnswered);
}

// Responder, IKE_SA_INIT already answered: the same request again, or the same request in
// another form — the peer's retry with a COOKIE (2.6) after one copy of its first request was
// asked for a cookie while another was answered. The peer signs the request it sent last, so
// that is the one our AUTH check must use; our answer does not depend on which it was. Only
// a request with the same nonce (the same attempt) counts.
void IkeSa::NoteInitRetry(const Message& msg, std::span<const std::uint8_t> datagram) {
  if (std::equal(datagram.begin(), datagram.end(), init_request_.begin(), init_request_.end())) return;
  const auto* ni = msg.Find<NoncePayload>(PayloadType::kNonce);
  if (ni == nullptr || ni->data != ni_) return;
  init_request_.assign(datagram.begin(), datagram.end());
}

bool IkeSa::DeriveKeys(std::span<const std::uint8_t> peer_ke) {
  crypto::SecureBytes shared;
  if (!dh_->ComputeShared(peer_ke, shared)) return false;
  if (!DeriveIkeSaKeys(*algs_, ni_, nr_, shared, spi_i_, spi_r_, keys_)) return false;
  const bool initiator = role_ == Role::kInitiator;
  sk_out_ = MakeSkKeys(*algs_, keys_, initiator, true);
  sk_in_ = MakeSkKeys(*algs_, keys_, initiator, false);
  dh_.reset();  // ephemeral: the private value is not needed any more
  return sk_out_.cipher && sk_in_.cipher;
}

std::vector<Payload> IkeSa::NatDetectionPayloads() const {
  return {Notify(NotifyType::kNatDetectionSourceIp,
                 NatDetectionHash(spi_i_, spi_r_, local_.bytes(), local_.port)),
          Notify(NotifyType::kNatDetectionDestinationIp,
                 NatDetectionHash(spi_i_, spi_r_, remote_.bytes(), remote_.port))};
}

void IkeSa::CheckNatDetection(const Message& msg) {
  // 2.23: the peer's SOURCE hash is over its address as it sent it; if it differs from what we
  // see, the peer is behind a NAT. Its DESTINATION hash differing from ours means we are.
  const auto* src = msg.FindNotify(NotifyType::kNatDetectionSourceIp);
  const auto* dst = msg.FindNotify(NotifyType::kNatDetectionDestinationIp);
  if (src == nullptr || dst == nullptr) return;
  // The hashes cover the SPIs as the message's header carries them: the request's SPIr is 0.
  const std::uint64_t spi_i = msg.header.spi_i, spi_r = msg.header.spi_r;
  nat_remote_ = src->data != NatDetectionHash(spi_i, spi_r, remote_.bytes(), remote_.port);
  nat_local_ = dst->data != NatDetectionHash(spi_i, spi_r, local_.bytes(), local_.port);
}

}  // namespace spigot::ike
