// CREATE_CHILD_SA rekeying the IKE SA, both roles (RFC 7296 1.3.2, 2.18), and the hand-over of
// the CHILD SAs and of queued CHILD work to the new IKE SA.
#include "spigot/ike/ike_sa.h"

#include "spigot/crypto/random.h"
#include "spigot/ike/ike_sa_internal.h"
#include "spigot/wire/byte_reader.h"
#include "spigot/wire/byte_writer.h"

namespace spigot::ike {

using namespace internal;

namespace {

Bytes IkeSpiBytes(std::uint64_t spi) {
  Bytes b;
  wire::ByteWriter(b).WriteU64(spi);
  return b;
}

// An IKE SA's SPI (8 bytes); 0 if `b` is not 8 bytes long.
std::uint64_t IkeSpiFromBytes(std::span<const std::uint8_t> b) {
  std::uint64_t spi = 0;
  if (b.size() != 8) return 0;
  wire::ByteReader(b).ReadU64(spi);
  return spi;
}

}  // namespace

void IkeSa::SendIkeRekey(TimePoint now) {
  rekey_spi_ = host_->NewIkeSpi();
  std::vector<Proposal> proposals = conn_->ike_proposals;
  const Bytes spi = IkeSpiBytes(rekey_spi_);
  for (auto& p : proposals) p.spi = spi;
  // The key pair: made on a worker (OffloadKeyPair), or here.
  ChildNegotiation neg{0, 0, RandomNonce(), KeyPairFor(PreferredDhGroup(proposals)), proposals};
  if (!neg.dh) {
    failure_ = "IKE rekey: no Diffie-Hellman group to propose";
    return;
  }
  const auto pub = neg.dh->public_value();
  std::vector<Payload> p;
  p.push_back({PayloadType::kSa, SaPayload{proposals}});
  p.push_back({PayloadType::kNonce, NoncePayload{neg.nonce}});
  p.push_back({PayloadType::kKe, KePayload{neg.dh->group(), Bytes(pub.begin(), pub.end())}});
  child_neg_ = std::move(neg);
  SendRequest(RequestKind::kRekeyIke, Exchange::kCreateChildSa, std::move(p), now);
}

void IkeSa::OnIkeRekeyResponse(const Message& msg, TimePoint now) {
  if (!child_neg_) return;
  if (OffloadResponseDh(msg, OffloadKind::kIkeRekey)) return;  // ResumeOffloaded brings it back
  ChildNegotiation neg = std::move(*child_neg_);
  child_neg_.reset();
  const auto* sa = msg.Find<SaPayload>(PayloadType::kSa);
  const auto* nr = msg.Find<NoncePayload>(PayloadType::kNonce);
  const auto* ke = msg.Find<KePayload>(PayloadType::kKe);
  if (const auto* err = msg.FirstError(); err != nullptr || sa == nullptr || nr == nullptr ||
                                          ke == nullptr || sa->proposals.size() != 1) {
    // Ours failed while the peer's rekey succeeded (2.8.2): the peer's IKE SA is the one.
    if (ike_collision_ && CandidateTakesOver(now)) return;
    // TEMPORARY_FAILURE: the peer is busy, typically rekeying this IKE SA itself at the same
    // moment (a peer that refuses colliding rekeys, as we do when our host cannot keep two
    // successors). Try again 2-5 s later, at random, so the two sides do not collide again
    // (RFC 7296 2.25); without it the IKE SA is never rekeyed.
    if (err != nullptr && err->type == NotifyType::kTemporaryFailure) {
      ike_rekey_at_ = now + std::chrono::milliseconds(2000 + crypto::RandomU32() % 3000);
      ++counters_->rekey_retries;
      return;
    }
    failure_ = err != nullptr ? std::string("IKE rekey refused by peer: ") + NotifyName(err->type)
                              : "malformed IKE rekey response";
    return;
  }
  const Proposal& chosen = sa->proposals[0];
  const auto algs = IkeAlgorithmsOf(chosen);
  crypto::SecureBytes shared;
  const auto ready = TakeReadyDh(ke->group, ke->data);  // the shared secret from a worker
  if (!algs || chosen.spi.size() != 8 || !AcceptableChoice(conn_->ike_proposals, chosen) ||
      ke->group != algs->dh_group || !neg.dh || neg.dh->group() != ke->group ||
      (ready ? !ready->ok : !neg.dh->ComputeShared(ke->data, shared))) {
    if (ike_collision_ && CandidateTakesOver(now)) return;
    failure_ = "bad IKE rekey response";
    return;
  }
  if (ready) shared = std::move(ready->shared);
  const std::uint64_t peer_spi = IkeSpiFromBytes(chosen.spi);
  if (ike_collision_) {
    // 2.8.2: both rekeys succeeded. The new IKE SA created with the lowest of the four nonces
    // is redundant and is deleted by the side that created it; the other one gets the CHILD
    // SAs, and its creator deletes this old IKE SA.
    ++counters_->ike_rekey_collisions;
    if (NonceBelow(LowerNonce(neg.nonce, nr->data), ike_collision_->lowest_nonce) &&
        host_->FindIkeSa(ike_collision_->spi) != nullptr) {
      ++counters_->ike_rekey_collisions_ours_redundant;
      HandOver(Role::kInitiator, rekey_spi_, peer_spi, *algs, neg.nonce, nr->data, shared,
               Successor::kRedundant, now);
      CandidateTakesOver(now);  // the peer deletes this old IKE SA
      return;
    }
    // The peer deletes its candidate. Should it never learn that it must (its response to our
    // rekey lost, the old IKE SA deleted meanwhile), we delete it after a grace period.
    if (IkeSa* loser = host_->FindIkeSa(ike_collision_->spi)) loser->redundant_delete_at_ = now + kRedundantGrace;
    ike_collision_.reset();
  }
  // The rekey's initiator is the initiator of the new IKE SA (2.18).
  HandOver(Role::kInitiator, rekey_spi_, peer_spi, *algs, neg.nonce, nr->data, shared,
           Successor::kTakesOver, now);
  // Then the old IKE SA goes: its DELETE is the next request here.
  outstanding_.reset();
  pending_.clear();
  pending_.insert(pending_.begin(), {RequestKind::kDeleteIke});
}

bool IkeSa::CandidateTakesOver(TimePoint now) {
  const std::uint64_t spi = ike_collision_->spi;
  ike_collision_.reset();
  IkeSa* next = host_->FindIkeSa(spi);
  if (next == nullptr || next->state_ != State::kEstablished) return false;
  MoveChildrenTo(*next, now);
  host_->IkeRekeySurvivor(*this, *next);
  next->StartNext(now);
  return true;
}

void IkeSa::MoveChildrenTo(IkeSa& next, TimePoint now) {
  for (auto& c : children_) next.children_.push_back(std::move(c));
  children_.clear();
  // CHILD SA work that waited behind the IKE rekey goes on in the new IKE SA, which now owns
  // the CHILD SAs (a queued CHILD rekey or DELETE must not vanish with the old one).
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->kind == RequestKind::kCreateChild || it->kind == RequestKind::kRekeyChild ||
        it->kind == RequestKind::kDeleteChild) {
      next.pending_.push_back(*it);
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
  rekeyed_ = true;
  rekeyed_at_ = now;
}

void IkeSa::OnIkeRekeyRequest(const Message& msg, TimePoint now) {
  const auto* sa = msg.Find<SaPayload>(PayloadType::kSa);
  const auto* ni = msg.Find<NoncePayload>(PayloadType::kNonce);
  const auto* ke = msg.Find<KePayload>(PayloadType::kKe);
  // 2.8.2: the peer rekeys while our rekey is in flight. Both go ahead and the nonces decide
  // which new IKE SA survives — unless the host cannot keep two, or this is a second one.
  const bool collision = outstanding_ && outstanding_->kind == RequestKind::kRekeyIke &&
                         child_neg_ && !ike_collision_ && host_->KeepsIkeRekeyCandidates();
  if (rekeyed_ || (outstanding_ && outstanding_->kind == RequestKind::kRekeyIke && !collision)) {
    // Already replaced, or a rekey we cannot resolve: the peer retries later (2.25).
    return SendResponse(msg.header, {Notify(NotifyType::kTemporaryFailure)}, true);
  }
  if (outstanding_ && (outstanding_->kind == RequestKind::kCreateChild ||
                       outstanding_->kind == RequestKind::kRekeyChild ||
                       outstanding_->kind == RequestKind::kDeleteChild)) {
    // 2.25.2: we are creating, rekeying or closing a CHILD SA of this IKE SA. Moving the CHILD
    // SAs to a new IKE SA now would leave that exchange's result on the old one (and gone
    // with it): the peer retries the IKE rekey once ours is done.
    return SendResponse(msg.header, {Notify(NotifyType::kTemporaryFailure)}, true);
  }
  const auto chosen = sa != nullptr ? SelectProposal(conn_->ike_proposals, sa->proposals) : std::nullopt;
  const auto algs = chosen ? IkeAlgorithmsOf(*chosen) : std::nullopt;
  if (!algs || chosen->spi.size() != 8 || ni == nullptr) {
    const unsigned weak = sa != nullptr ? WeakTransformsOf(sa->proposals) &
                                              ~WeakTransformsOf(conn_->ike_proposals)
                                        : 0;
    if (weak != 0) {
      counters_->CountWeakRefused(weak);
      host_->WeakProposalRefused(*this, ProtocolId::kIke, weak);
    }
    return SendResponse(msg.header, {Notify(NotifyType::kNoProposalChosen)}, true);
  }
  if (ke == nullptr || ke->group != algs->dh_group) {
    return SendResponse(msg.header,
                        {Notify(NotifyType::kInvalidKePayload, DhGroupBytes(algs->dh_group))}, true);
  }
  std::unique_ptr<crypto::DhKeyPair> dh;
  crypto::SecureBytes shared;
  if (auto ready = TakeReadyDh(algs->dh_group, ke->data)) {
    // Done on a worker; every check above was made again against the SA as it is now.
    if (!ready->ok) return SendResponse(msg.header, {Notify(NotifyType::kInvalidSyntax)}, true);
    dh = std::move(ready->dh);
    shared = std::move(ready->shared);
  } else if (OffloadRequestDh(msg, OffloadKind::kIkeRekey, algs->dh_group, ke->data)) {
    return;  // ResumeOffloaded handles the request again
  } else {
    dh = crypto::DhKeyPair::Generate(algs->dh_group);
    if (!dh || !dh->ComputeShared(ke->data, shared))
      return SendResponse(msg.header, {Notify(NotifyType::kInvalidSyntax)}, true);
  }
  const std::uint64_t peer_spi = IkeSpiFromBytes(chosen->spi);
  const std::uint64_t ours = host_->NewIkeSpi();
  Proposal answer = *chosen;
  answer.spi = IkeSpiBytes(ours);
  const Bytes nr = RandomNonce();
  const auto pub = dh->public_value();
  SendResponse(msg.header,
               {Payload{PayloadType::kSa, SaPayload{{answer}}}, Payload{PayloadType::kNonce, NoncePayload{nr}},
                Payload{PayloadType::kKe, KePayload{algs->dh_group, Bytes(pub.begin(), pub.end())}}},
               true);
  if (collision) {
    if (HandOver(Role::kResponder, peer_spi, ours, *algs, ni->data, nr, shared, Successor::kCandidate,
                 now) != nullptr)
      ike_collision_ = IkeRekeyCollision{ours, LowerNonce(ni->data, nr)};
    return;
  }
  HandOver(Role::kResponder, peer_spi, ours, *algs, ni->data, nr, shared, Successor::kTakesOver, now);
}

IkeSa* IkeSa::HandOver(Role role, std::uint64_t spi_i, std::uint64_t spi_r, const IkeAlgorithms& algs,
                       std::span<const std::uint8_t> ni, std::span<const std::uint8_t> nr,
                       const crypto::SecureBytes& shared, Successor kind, TimePoint now) {
  auto next = std::make_unique<IkeSa>(*host_, *counters_, role, conn_, local_, remote_, spi_i, spi_r);
  next->algs_ = algs;
  next->fragmentation_ = fragmentation_;  // negotiated once, in IKE_SA_INIT (RFC 7383 2.3)
  next->ni_.assign(ni.begin(), ni.end());
  next->nr_.assign(nr.begin(), nr.end());
  if (!DeriveIkeSaKeys(algs, ni, nr, shared, spi_i, spi_r, next->keys_, &keys_.sk_d, algs_->prf)) {
    failure_ = "IKE rekey key derivation failed";
    return nullptr;
  }
  next->sk_out_ = MakeSkKeys(algs, next->keys_, role == Role::kInitiator, true);
  next->sk_in_ = MakeSkKeys(algs, next->keys_, role == Role::kInitiator, false);
  next->nat_local_ = nat_local_;
  next->nat_remote_ = nat_remote_;
  next->mobike_ = mobike_;  // RFC 4555: negotiated for the IKE SA and its successors
  next->peer_addresses_ = peer_addresses_;
  // A return routability check still open: the successor repeats it before the CHILD SAs move.
  next->esp_remote_ = esp_remote_;
  if (esp_remote_ && kind != Successor::kRedundant) {
    next->pending_.push_back({RequestKind::kMobikeCheck});
    next->rr_queued_ = true;
  }
  next->peer_id_ = peer_id_;
  next->virtual_ips_ = virtual_ips_;  // 3.15.1: valid for the IKE SA and its rekeyed successors
  next->created_at_ = now;
  next->established_at_ = now;
  next->last_heard_ = now;
  next->state_ = State::kEstablished;
  next->ike_rekey_at_ = Jittered(now, conn_->ike_rekey_time, conn_->rekey_jitter);
  IkeSa* const adopted = next.get();
  // Deleted while the rekey was in flight (ours, or the peer's we answered): the successor the
  // rekey makes is deleted as well, with the CHILD SAs it took over — not left running.
  if (delete_requested_ && kind != Successor::kRedundant) {
    next->delete_requested_ = true;
    next->pending_.push_back({RequestKind::kDeleteIke});
  }
  switch (kind) {
    case Successor::kTakesOver:
      MoveChildrenTo(*next, now);
      host_->AdoptIkeSa(*this, std::move(next));
      break;
    case Successor::kCandidate:
      host_->AdoptIkeSaBeside(*this, std::move(next));
      break;
    case Successor::kRedundant:
      adopted->failure_ = "redundant: the peer rekeyed the IKE SA at the same time (RFC 7296 2.8.2)";
      adopted->pending_.push_back({RequestKind::kDeleteIke});
      host_->AdoptIkeSaBeside(*this, std::move(next));
      break;
  }
  adopted->StartNext(now);  // once the host knows it (it sends through the host)
  return adopted;
}

}  // namespace spigot::ike
