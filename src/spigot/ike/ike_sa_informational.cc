// INFORMATIONAL, both roles (RFC 7296 1.4): DELETE of CHILD SAs (1.4.1) and of the IKE SA,
// liveness checks (2.4), and MOBIKE's address updates and return routability cookies (RFC 4555). Our own requests are queued and sent by StartNext (ike_sa.cc).
#include "spigot/ike/ike_sa.h"

#include <algorithm>

#include "spigot/crypto/random.h"
#include "spigot/ike/ike_sa_internal.h"

namespace spigot::ike {

using namespace internal;

namespace {

bool SameNotifies(const std::vector<Payload>& a, const std::vector<Payload>& b) {
  return std::ranges::equal(a, b, [](const Payload& x, const Payload& y) {
    const auto* nx = std::get_if<NotifyPayload>(&x.body);
    const auto* ny = std::get_if<NotifyPayload>(&y.body);
    return nx != nullptr && ny != nullptr && nx->type == ny->type && nx->data == ny->data;
  });
}

}  // namespace

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
  // RFC 4555 3.6: a new list of the peer's addresses replaces the one kept.
  if (mobike_) TakePeerAddresses(msg);
  // RFC 4555 3.5: the peer moved (or its NAT did) and says so; without MOBIKE negotiated the
  // notify means nothing here.
  const Address esp_was = esp_remote();
  bool moved = false;
  if (mobike_ && msg.FindNotify(NotifyType::kUpdateSaAddresses) != nullptr) moved = UpdateAddresses(msg, out);
  // 4555 3.7: a return routability check: COOKIE2 comes back unchanged.
  if (const NotifyPayload* cookie2 = msg.FindNotify(NotifyType::kCookie2)) {
    if (!cookie2->data.empty() && cookie2->data.size() <= 64) out.push_back(Notify(NotifyType::kCookie2, cookie2->data));
  }
  SendResponse(msg.header, std::move(out), true);
  // 4555 3.5: "Reply with an INFORMATIONAL response. If necessary, initiate a return
  // routability check for the new address ... and wait until the check is completed. Update
  // the IPsec SAs ... with the new addresses." The IKE SA is at the new address already; the
  // CHILD SAs follow once the check has passed.
  if (moved && !delete_ike) {
    if (esp_was == remote_) {
      esp_remote_.reset();  // back where the CHILD SAs are: nothing to check, nothing to move
    } else if (conn_ && conn_->mobike_return_routability) {
      esp_remote_ = esp_was;
      CheckReturnRoutability(now);
    } else {
      esp_remote_.reset();
      host_->PeerMoved(*this, esp_was);
    }
  }
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
  remote_ = to;
  // Our NAT_DETECTION payloads for the new pair of addresses, so that the peer sees any NAT too.
  for (auto& n : NatDetectionPayloads()) out.push_back(std::move(n));
  return true;
}

void IkeSa::CheckReturnRoutability(TimePoint now) {
  if (rr_queued_) return;  // the check in flight sees that the peer moved again, and repeats
  if (Enqueue({RequestKind::kMobikeCheck}, now)) {
    rr_queued_ = true;
    return;
  }
  // The request queue is full: the move is not held up behind it (a tunnel stuck at an address
  // the peer left is worse), but it is counted.
  ++counters_->mobike_rr_skipped;
  const Address was = esp_remote();
  esp_remote_.reset();
  host_->PeerMoved(*this, was);
}

void IkeSa::OnReturnRoutability(const Message& msg, TimePoint now) {
  rr_queued_ = false;
  // 4555 3.7: the response must carry our COOKIE2 unchanged; anything else is no proof that
  // the peer is at the address the check went to.
  const NotifyPayload* cookie2 = msg.FindNotify(NotifyType::kCookie2);
  const bool echoed = cookie2 != nullptr && !rr_cookie_.empty() && cookie2->data == rr_cookie_;
  rr_cookie_.clear();
  if (!echoed) {
    // The CHILD SAs stay where they were; the peer's next UPDATE_SA_ADDRESSES checks again.
    ++counters_->mobike_rr_failed;
    return;
  }
  ++counters_->mobike_rr_passed;
  if (!esp_remote_) return;  // the peer went back meanwhile: nothing to move
  if (!(rr_target_ == remote_)) {
    CheckReturnRoutability(now);  // it moved again while we checked: check the newest address
    return;
  }
  const Address was = *esp_remote_;
  esp_remote_.reset();
  host_->PeerMoved(*this, was);
}

std::vector<Payload> IkeSa::OwnAddressNotifies(const ConnectionParams& conn) const {
  std::vector<Payload> out;
  if (conn.local_addresses.empty()) return out;
  for (const Address& a : conn.local_addresses) {
    if (out.size() >= kMobikeAddresses) break;
    if (a.family == local_.family && std::ranges::equal(a.bytes(), local_.bytes())) continue;
    const auto b = a.bytes();
    out.push_back(Notify(a.family == 4 ? NotifyType::kAdditionalIp4Address : NotifyType::kAdditionalIp6Address,
                         Bytes(b.begin(), b.end())));
  }
  if (out.empty()) out.push_back(Notify(NotifyType::kNoAdditionalAddresses));
  return out;
}

void IkeSa::TakePeerAddresses(const Message& msg) {
  bool announced = false;
  std::vector<Address> list;
  for (const auto& p : msg.payloads) {
    const auto* n = std::get_if<NotifyPayload>(&p.body);
    if (n == nullptr) continue;
    int family = 0;
    std::size_t want = 0;
    if (n->type == NotifyType::kAdditionalIp4Address) {
      family = 4, want = 4;
    } else if (n->type == NotifyType::kAdditionalIp6Address) {
      family = 6, want = 16;
    } else if (n->type != NotifyType::kNoAdditionalAddresses) {
      continue;
    }
    if (n->data.size() != want) {
      ++counters_->mobike_address_malformed;
      continue;
    }
    announced = true;
    if (family == 0) continue;  // NO_ADDITIONAL_ADDRESSES: the list is empty unless others follow
    Address a;
    a.family = family;
    std::copy(n->data.begin(), n->data.end(), a.ip.begin());
    if (std::find(list.begin(), list.end(), a) != list.end()) continue;
    if (list.size() >= kMobikeAddresses) {
      ++counters_->mobike_address_list_overflow;
      continue;
    }
    list.push_back(a);
  }
  if (!announced) return;
  counters_->mobike_additional_addresses += list.size();
  peer_addresses_ = std::move(list);
}

void IkeSa::UpdateConnection(std::shared_ptr<const ConnectionParams> conn, TimePoint now) {
  // Only a known list is announced: an unknown one ("%any") says nothing (not "no addresses").
  const bool announce = mobike_ && state_ == State::kEstablished && conn_ && conn &&
                        !conn->local_addresses.empty() &&
                        !SameNotifies(OwnAddressNotifies(*conn_), OwnAddressNotifies(*conn));
  conn_ = std::move(conn);
  if (announce) Enqueue({RequestKind::kMobikeAddresses}, now);
}

void IkeSa::AnswerMobike(const Message& request, std::vector<Payload>& out) {
  if (!conn_ || !conn_->mobike || request.FindNotify(NotifyType::kMobikeSupported) == nullptr) return;
  mobike_ = true;
  ++counters_->mobike_negotiated;
  out.push_back(Notify(NotifyType::kMobikeSupported));
  // 4555 3.6: the address lists, both ways, in IKE_AUTH.
  TakePeerAddresses(request);
  for (auto& n : OwnAddressNotifies(*conn_)) out.push_back(std::move(n));
  if (!conn_->local_addresses.empty()) ++counters_->mobike_address_lists_sent;
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
  if (kind == RequestKind::kMobikeCheck) OnReturnRoutability(msg, now);
  (void)msg;
  (void)now;
}

}  // namespace spigot::ike
