// INFORMATIONAL, both roles (RFC 7296 1.4): DELETE of CHILD SAs (1.4.1) and of the IKE SA,
// liveness checks (2.4), and MOBIKE's address updates and return routability cookies (RFC 4555). Our own requests are queued and sent by StartNext (ike_sa.cc).
#include "spigot/ike/ike_sa.h"

#include "spigot/ike/ike_sa_internal.h"

namespace spigot::ike {

using namespace internal;

void IkeSa::OnInformationalRequest(const Message& msg, TimePoint now) {
  std::vector<Payload> out;
  bool delete_ike = false;
  DeletePayload ours{ProtocolId::kEsp, 4, {}};
  for (const auto& p : msg.payloads) {
    const auto* d = std::get_if<DeletePayload>(&p.body);
    if (d == nullptr) continue;
    if (d->protocol == ProtocolId::kIke) {
      delete_ike = true;
    } else if (d->protocol == ProtocolId::kEsp) {
      // 1.4.1: the peer names the SPIs it receives with; answer with ours for the same SAs.
      for (const Bytes& spi : d->spis) {
        if (const ChildSaInfo* c = FindChildByOutbound(SpiFromBytes(spi))) {
          const std::uint32_t in = c->spi_in;
          ours.spis.push_back(ChildSpiBytes(in));
          RemoveChildBySpi(in);
        }
      }
    }
  }
  if (!ours.spis.empty()) out.push_back({PayloadType::kDelete, ours});
  // RFC 4555 3.5: the peer moved (or its NAT did) and says so; without MOBIKE negotiated the
  // notify means nothing here.
  if (mobike_ && msg.FindNotify(NotifyType::kUpdateSaAddresses) != nullptr) UpdateAddresses(msg, out);
  // 4555 3.7: a return routability check: COOKIE2 comes back unchanged.
  if (const NotifyPayload* cookie2 = msg.FindNotify(NotifyType::kCookie2)) {
    if (!cookie2->data.empty() && cookie2->data.size() <= 64) out.push_back(Notify(NotifyType::kCookie2, cookie2->data));
  }
  SendResponse(msg.header, std::move(out), true);
  if (!delete_ike) return;
  // 2.8.2: the peer deletes this IKE SA while our colliding rekey is unresolved here: its own
  // rekey won (it is the one that deletes the old SA), so its IKE SA takes the CHILD SAs.
  if (ike_collision_) CandidateTakesOver(now);
  Die(rekeyed_ ? "rekeyed" : "deleted by peer");
}

bool IkeSa::UpdateAddresses(const Message& msg, std::vector<Payload>& out) {
  const Address to = reply_to_ ? *reply_to_ : remote_;
  // NAT detection anew, for the addresses of this request (4555 3.5): the peer's hashes of what
  // it sent from and to, against what we see.
  bool nat_remote = false, nat_local = false;
  const NotifyPayload* src = msg.FindNotify(NotifyType::kNatDetectionSourceIp);
  const NotifyPayload* dst = msg.FindNotify(NotifyType::kNatDetectionDestinationIp);
  if (src != nullptr && dst != nullptr) {
    nat_remote = src->data != NatDetectionHash(spi_i_, spi_r_, to.bytes(), to.port);
    nat_local = dst->data != NatDetectionHash(spi_i_, spi_r_, local_.bytes(), local_.port);
  }
  // 4555 3.9: the peer does not want its addresses behind a NAT.
  if (msg.FindNotify(NotifyType::kNoNatsAllowed) != nullptr && (nat_remote || nat_local)) {
    ++counters_->mobike_refused;
    out.push_back(Notify(NotifyType::kUnexpectedNatDetected));
    return false;
  }
  ++counters_->mobike_updates;
  nat_remote_ = nat_remote;
  nat_local_ = nat_local;
  const Address was = remote_;
  remote_ = to;
  // Our NAT_DETECTION payloads for the new pair of addresses, so that the peer sees any NAT too.
  for (auto& n : NatDetectionPayloads()) out.push_back(std::move(n));
  if (!(was == remote_)) host_->PeerMoved(*this, was);
  return true;
}

void IkeSa::AnswerMobike(const Message& request, std::vector<Payload>& out) {
  if (!conn_ || !conn_->mobike || request.FindNotify(NotifyType::kMobikeSupported) == nullptr) return;
  mobike_ = true;
  ++counters_->mobike_negotiated;
  out.push_back(Notify(NotifyType::kMobikeSupported));
}

void IkeSa::OnInformationalResponse(const Message& msg, TimePoint now) {
  const RequestKind kind = outstanding_->kind;
  if (kind == RequestKind::kDeleteIke) {
    outstanding_.reset();
    return Die(rekeyed_ ? "rekeyed" : "deleted");
  }
  if (kind == RequestKind::kDeleteChild) {
    RemoveChildBySpi(pending_delete_spi_);
    pending_delete_spi_ = 0;
  }
  // 4555 3.5: the responder's NAT detection for our new address.
  if (kind == RequestKind::kMobikeUpdate) CheckNatDetection(msg);
  (void)msg;
  (void)now;
}

}  // namespace spigot::ike
