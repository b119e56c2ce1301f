// The public-key and Diffie-Hellman work of an IKE SA on the host's IKE workers (issue 17;
// IkeSaHost::Offload): IKE_AUTH's AUTH payloads (signatures and certificate checks, PSK MACs),
// both roles, and EAP-TLS handshake steps as responder (ike_sa_auth.cc), the DH of
// CREATE_CHILD_SA with PFS and of IKE rekeys, both roles. The work runs on copies; the SA
// meanwhile starts nothing of its own and keeps what arrives for it. ResumeOffloaded then runs
// the exchange's handler again, as if the message had just arrived, and it finds the DH done:
// every check of the SA's state is made against the state at that moment, not the one the work
// started from.
#include <algorithm>

#include "spigot/ike/ike_sa.h"
#include "spigot/ike/ike_sa_internal.h"

namespace spigot::ike {

using namespace internal;

namespace {

std::uint64_t& OffloadedCount(IkeCounters& c, OffloadKind k) {
  switch (k) {
    case OffloadKind::kAuth: return c.auth_offloaded;
    case OffloadKind::kChildPfs: return c.child_pfs_offloaded;
    case OffloadKind::kEap: return c.eap_offloaded;
    case OffloadKind::kIkeRekey: break;
  }
  return c.ike_rekey_offloaded;
}

std::uint64_t& InlineCount(IkeCounters& c, OffloadKind k) {
  switch (k) {
    case OffloadKind::kAuth: return c.auth_inline;
    case OffloadKind::kChildPfs: return c.child_pfs_inline;
    case OffloadKind::kEap: return c.eap_inline;
    case OffloadKind::kIkeRekey: break;
  }
  return c.ike_rekey_inline;
}

std::uint16_t FirstDhOf(const std::vector<Proposal>& proposals) {
  if (proposals.empty()) return 0;
  for (const auto& t : proposals[0].transforms) {
    if (t.type == TransformType::kDh) return t.id;
  }
  return 0;
}

}  // namespace

bool IkeSa::StartOffload(Offloaded o, const std::function<void()>& work) {
  const OffloadKind kind = o.kind;
  offload_ = std::move(o);
  if (!host_->Offload(*this, kind, work)) {
    offload_.reset();
    ++InlineCount(*counters_, kind);
    return false;
  }
  ++OffloadedCount(*counters_, kind);
  return true;
}

bool IkeSa::HoldWhileOffloaded(std::span<const std::uint8_t> datagram, const std::optional<Address>& from) {
  if (!offload_) return false;
  // The peer's retransmission of the message being worked on (or, for a response, the answer to
  // our own retransmission): it is answered, or finished, once. Only the header is read: whether
  // it is authentic does not matter for dropping it.
  Header h;
  if (offload_->message && ParseHeader(datagram, h)) {
    const Header& w = offload_->message->header;
    if (h.message_id == w.message_id && h.is_response() == w.is_response() && h.exchange == w.exchange) {
      ++counters_->offload_retransmits;
      return true;
    }
  }
  // Anything else (a response to our request while we answer the peer's, the peer's next
  // request after a response of ours we are finishing) waits, in order.
  if (offload_->held.size() >= kOffloadHeld) {
    ++counters_->offload_held_dropped;
    return true;
  }
  ++counters_->offload_held;
  offload_->held.push_back({Bytes(datagram.begin(), datagram.end()), from});
  return true;
}

bool IkeSa::OffloadRequestDh(const Message& req, OffloadKind kind, std::uint16_t group,
                             std::span<const std::uint8_t> peer_public) {
  auto work = std::make_shared<DhWork>();
  work->group = group;
  work->peer_public.assign(peer_public.begin(), peer_public.end());
  Offloaded o{kind, nullptr, work, req, reply_to_, {}};
  return StartOffload(std::move(o), [work] { work->Run(); });
}

bool IkeSa::OffloadResponseDh(const Message& resp, OffloadKind kind) {
  if (dh_ready_ || !child_neg_ || !child_neg_->dh || resp.FirstError() != nullptr) return false;
  const auto* ke = resp.Find<KePayload>(PayloadType::kKe);
  if (ke == nullptr || ke->group != child_neg_->dh->group()) return false;  // the handler refuses it
  auto work = std::make_shared<DhWork>();
  work->group = ke->group;
  work->peer_public = ke->data;
  work->dh = std::move(child_neg_->dh);  // the worker's until ResumeOffloaded gives it back
  Offloaded o{kind, nullptr, work, resp, std::nullopt, {}};
  if (StartOffload(std::move(o), [work] { work->Run(); })) return true;
  child_neg_->dh = std::move(work->dh);
  return false;
}

bool IkeSa::OffloadKeyPair(const Pending& p) {
  if (dh_ready_ || !conn_) return false;
  std::uint16_t group = 0;
  OffloadKind kind = OffloadKind::kChildPfs;
  switch (p.kind) {
    case RequestKind::kCreateChild: group = FirstDhOf(conn_->esp_proposals); break;
    case RequestKind::kRekeyChild:
      if (FindChildByInbound(p.child_spi) != nullptr) group = FirstDhOf(conn_->esp_proposals);
      break;
    case RequestKind::kRekeyIke:
      if (!rekeyed_) group = PreferredDhGroup(conn_->ike_proposals);
      kind = OffloadKind::kIkeRekey;
      break;
    default: break;
  }
  if (group == 0) return false;
  auto work = std::make_shared<DhWork>();
  work->group = group;
  return StartOffload(Offloaded{kind, nullptr, work, std::nullopt, std::nullopt, {}}, [work] { work->Run(); });
}

std::shared_ptr<IkeSa::DhWork> IkeSa::TakeReadyDh(std::uint16_t group, std::span<const std::uint8_t> peer_public) {
  if (!dh_ready_ || dh_ready_->group != group ||
      !std::equal(peer_public.begin(), peer_public.end(), dh_ready_->peer_public.begin(), dh_ready_->peer_public.end()))
    return nullptr;
  return std::exchange(dh_ready_, nullptr);
}

std::unique_ptr<crypto::DhKeyPair> IkeSa::KeyPairFor(std::uint16_t group) {
  if (dh_ready_ && dh_ready_->peer_public.empty() && dh_ready_->dh && dh_ready_->dh->group() == group) {
    auto dh = std::move(dh_ready_->dh);
    dh_ready_.reset();
    return dh;
  }
  return crypto::DhKeyPair::Generate(group);
}

void IkeSa::ResumeOffloaded(TimePoint now) {
  if (state_ == State::kDead || !offload_) return;
  const bool done = offload_->auth ? AuthWorkDone(*offload_->auth)
                   : offload_->eap ? EapWorkDone(*offload_->eap)
                                   : offload_->dh->done.load(std::memory_order_acquire);
  if (!done) return;
  Offloaded o = std::move(*offload_);
  offload_.reset();
  if (o.auth && !o.message) {
    // Our IKE_AUTH signature (initiator): the request goes out now.
    auth_ready_ = std::move(o.auth);
    if (state_ == State::kInitSent) SendAuth(now);
    auth_ready_.reset();
  } else if (o.auth && o.message->header.is_response()) {
    // The responder's AUTH checked (initiator): its handler runs again and takes the result.
    auth_ready_ = std::move(o.auth);
    if (outstanding_ && outstanding_->message_id == o.message->header.message_id) HandleResponse(*o.message, {}, now);
    auth_ready_.reset();
  } else if (o.eap) {
    reply_to_ = o.reply_to;
    FinishEapWork(*o.eap, now);
    reply_to_.reset();
  } else if (o.auth) {
    reply_to_ = o.reply_to;
    FinishAuthRequest(*o.message, *o.auth, now);
    reply_to_.reset();
  } else if (!o.message) {
    // Our key pair: the request that waited for it is still first in pending_ (unless a DELETE
    // of the IKE SA went ahead of it), and StartNext below sends it.
    dh_ready_ = std::move(o.dh);
  } else if (o.message->header.is_response()) {
    if (child_neg_) child_neg_->dh = std::move(o.dh->dh);
    dh_ready_ = std::move(o.dh);
    if (outstanding_ && outstanding_->message_id == o.message->header.message_id) HandleResponse(*o.message, {}, now);
    dh_ready_.reset();
  } else {
    dh_ready_ = std::move(o.dh);
    reply_to_ = o.reply_to;
    if (state_ == State::kEstablished || state_ == State::kDeleting) OnCreateChildRequest(*o.message, now);
    reply_to_.reset();
    dh_ready_.reset();  // not used: the request was refused on the way
  }
  StartNext(now);
  dh_ready_.reset();  // our key pair, not used: the request it was for went (a DELETE went ahead)
  // What arrived meanwhile, in order. Should one of these start work of its own, the rest wait
  // for that one.
  std::size_t i = 0;
  for (; i < o.held.size() && !offload_ && state_ != State::kDead; ++i) {
    source_ = o.held[i].from;
    Receive(o.held[i].datagram, now);
  }
  for (; offload_ && i < o.held.size(); ++i) offload_->held.push_back(std::move(o.held[i]));
}

}  // namespace spigot::ike
