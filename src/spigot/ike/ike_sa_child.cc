// CREATE_CHILD_SA for CHILD SAs, both roles (RFC 7296 1.3.1 new CHILD SA; 1.3.3 rekey with
// optional PFS; 2.8 make-before-break; 2.8.1 simultaneous rekeys), and the CHILD SA negotiation
// that IKE_AUTH shares (2.9 traffic selector narrowing; 2.17 keying material).
#include "spigot/ike/ike_sa.h"

#include <algorithm>

#include "spigot/crypto/random.h"
#include "spigot/ike/ike_sa_internal.h"
#include "spigot/ike/traffic_selectors.h"

namespace spigot::ike {

using namespace internal;

namespace {

std::uint16_t DhOf(const Proposal& p) {
  for (const auto& t : p.transforms) {
    if (t.type == TransformType::kDh) return t.id;
  }
  return 0;
}

}  // namespace

void IkeSa::SendChildRequest(RequestKind kind, std::uint32_t rekey_of, TimePoint now) {
  NotifyType refusal = NotifyType::kTemporaryFailure;
  const auto spi = host_->AllocateChildSpi(rekey_of != 0, refusal);
  if (!spi) {
    ++counters_->child_failures;
    if (rekey_of != 0) RetryRekeyLater(rekey_of, now);
    return;
  }
  ChildNegotiation neg{*spi, rekey_of, RandomNonce(), nullptr, conn_->esp_proposals};
  for (auto& p : neg.proposals) p.spi = ChildSpiBytes(*spi);
  std::vector<Payload> p;
  const ChildSaInfo* old = rekey_of != 0 ? FindChildByInbound(rekey_of) : nullptr;
  if (old != nullptr) {
    // 1.3.3: REKEY_SA names the SA by the SPI we receive with.
    p.push_back(Notify(NotifyType::kRekeySa, {}, ProtocolId::kEsp, ChildSpiBytes(rekey_of)));
  }
  p.push_back({PayloadType::kSa, SaPayload{neg.proposals}});
  p.push_back({PayloadType::kNonce, NoncePayload{neg.nonce}});
  if (const std::uint16_t g = neg.proposals.empty() ? 0 : DhOf(neg.proposals[0]); g != 0) {
    neg.dh = KeyPairFor(g);  // made on a worker (OffloadKeyPair), or here
    if (!neg.dh) {
      host_->ReleaseChildSpi(*spi);
      ++counters_->child_failures;
      if (rekey_of != 0) RetryRekeyLater(rekey_of, now);
      return;
    }
    const auto pub = neg.dh->public_value();
    p.push_back({PayloadType::kKe, KePayload{g, Bytes(pub.begin(), pub.end())}});
  }
  p.push_back({PayloadType::kTsi, TsPayload{old != nullptr ? old->local_ts : OwnSelectors()}});
  p.push_back({PayloadType::kTsr, TsPayload{old != nullptr ? old->remote_ts : PeerSelectors()}});
  child_neg_ = std::move(neg);
  SendRequest(kind, Exchange::kCreateChildSa, std::move(p), now);
}

void IkeSa::OnChildResponse(const Message& msg, TimePoint now) {
  if (!child_neg_) return;
  if (OffloadResponseDh(msg, OffloadKind::kChildPfs)) return;  // ResumeOffloaded brings it back
  ChildNegotiation neg = std::move(*child_neg_);
  child_neg_.reset();
  const auto* nr = msg.Find<NoncePayload>(PayloadType::kNonce);
  if (const auto* err = msg.FirstError(); err != nullptr || nr == nullptr) {
    host_->ReleaseChildSpi(neg.spi_in);
    // 2.25: TEMPORARY_FAILURE to a rekey asks us to try again later (the peer is rekeying or
    // deleting the IKE SA, or deleting this CHILD SA): a retry (rekey_retries), not a failure.
    // Counted as one, a rekey crossing a peer's DELETE at the end of a session read as a
    // failed negotiation.
    const bool deferred = err != nullptr && err->type == NotifyType::kTemporaryFailure && neg.rekey_of != 0;
    if (!deferred) ++counters_->child_failures;
    failure_ = err != nullptr ? std::string("CHILD SA refused by peer: ") + NotifyName(err->type)
                              : "malformed CREATE_CHILD_SA response";
    if (neg.rekey_of != 0) RetryRekeyLater(neg.rekey_of, now);
    return;
  }
  const std::uint32_t old = neg.rekey_of;
  if (!FinishChildAsInitiator(msg, neg, neg.nonce, nr->data)) {
    host_->ReleaseChildSpi(neg.spi_in);
    ++counters_->child_failures;
    if (old != 0) RetryRekeyLater(old, now);
    return;
  }
  // Make-before-break: the new CHILD SA is installed; now retire the old one (2.8).
  if (old != 0) {
    outstanding_.reset();
    pending_.insert(pending_.begin(), {RequestKind::kDeleteChild, old});
    ResolveRekeyCollision(old, now);
  }
  (void)now;
}

void IkeSa::OnCreateChildRequest(const Message& msg, TimePoint now) {
  const auto* ni = msg.Find<NoncePayload>(PayloadType::kNonce);
  const auto* sa = msg.Find<SaPayload>(PayloadType::kSa);
  if (ni == nullptr || sa == nullptr) {
    ++counters_->invalid_messages;
    return SendResponse(msg.header, {Notify(NotifyType::kInvalidSyntax)}, true);
  }
  const bool delete_queued = std::any_of(pending_.begin(), pending_.end(),
                                         [](const Pending& p) { return p.kind == RequestKind::kDeleteIke; });
  if (state_ == State::kDeleting || delete_queued) {
    // 2.25.2: we are closing this IKE SA (our DELETE is out, perhaps retransmitted on a lossy
    // link, or waits for an exchange in flight or on a worker): a CHILD SA or an IKE SA created
    // from it now would outlive the DELETE on both sides, the connection we were told to end.
    return SendResponse(msg.header, {Notify(NotifyType::kTemporaryFailure)}, true);
  }
  if (!sa->proposals.empty() && sa->proposals[0].protocol == ProtocolId::kIke)
    return OnIkeRekeyRequest(msg, now);
  if (rekeyed_ || (outstanding_ && outstanding_->kind == RequestKind::kRekeyIke)) {
    // 2.25.2: we are rekeying this IKE SA (or it is already replaced): a CHILD SA created here
    // now would stay behind on the old IKE SA. The peer retries, on the new one.
    return SendResponse(msg.header, {Notify(NotifyType::kTemporaryFailure)}, true);
  }
  std::uint32_t rekey_of = 0;
  if (const auto* r = msg.FindNotify(NotifyType::kRekeySa)) {
    const ChildSaInfo* old = FindChildByOutbound(SpiFromBytes(r->spi));
    if (old == nullptr) {
      return SendResponse(msg.header, {Notify(NotifyType::kChildSaNotFound, {}, ProtocolId::kEsp, r->spi)}, true);
    }
    rekey_of = old->spi_in;
    // 2.25.1: the CHILD SA our DELETE in flight closes; its successor would outlive it.
    if (outstanding_ && outstanding_->kind == RequestKind::kDeleteChild && pending_delete_spi_ == rekey_of)
      return SendResponse(msg.header, {Notify(NotifyType::kTemporaryFailure)}, true);
  }
  const Bytes nr = RandomNonce();
  std::vector<Payload> out;
  bool deferred = false;
  NegotiateChildAsResponder(msg, ni->data, nr, rekey_of, out, true, now, &deferred);
  if (deferred) return;  // its DH runs on a worker; ResumeOffloaded handles the request again
  SendResponse(msg.header, std::move(out), true);
}

bool IkeSa::NegotiateChildAsResponder(const Message& req, std::span<const std::uint8_t> ni,
                                      std::span<const std::uint8_t> nr,
                                      std::uint32_t rekey_of, std::vector<Payload>& out,
                                      bool create_child, TimePoint now, bool* deferred) {
  auto refuse = [&](NotifyType t) {
    ++counters_->child_failures;
    out.push_back(Notify(t));
    return false;
  };
  const auto* sa = req.Find<SaPayload>(PayloadType::kSa);
  const auto* tsi = req.Find<TsPayload>(PayloadType::kTsi);
  const auto* tsr = req.Find<TsPayload>(PayloadType::kTsr);
  if (sa == nullptr || tsi == nullptr || tsr == nullptr) return refuse(NotifyType::kInvalidSyntax);
  const auto ours = create_child ? conn_->esp_proposals : WithoutDh(conn_->esp_proposals);
  auto chosen = SelectProposal(ours, sa->proposals);
  const auto algs = chosen ? ChildAlgorithmsOf(*chosen) : std::nullopt;
  if (!algs || chosen->spi.size() != 4) {
    const unsigned weak = WeakTransformsOf(sa->proposals) & ~WeakTransformsOf(ours);
    if (weak != 0) {
      counters_->CountWeakRefused(weak);
      host_->WeakProposalRefused(*this, ProtocolId::kEsp, weak);
    }
    return refuse(NotifyType::kNoProposalChosen);
  }
  // Against the configured selectors, or a road warrior's virtual IPs (2.19).
  const auto narrowed_i = Narrow(tsi->selectors, PeerSelectors());
  const auto narrowed_r = Narrow(tsr->selectors, OwnSelectors());
  if (narrowed_i.empty() || narrowed_r.empty()) return refuse(NotifyType::kTsUnacceptable);
  if (rekey_of == 0 && !host_->AdmitSelectors(*this, narrowed_r, narrowed_i))
    return refuse(NotifyType::kTsUnacceptable);
  // PFS (1.3.1): the chosen proposal's DH group must match the initiator's KE.
  crypto::SecureBytes shared;
  std::unique_ptr<crypto::DhKeyPair> dh;
  if (algs->dh_group != 0) {
    const auto* ke = req.Find<KePayload>(PayloadType::kKe);
    if (ke == nullptr || ke->group != algs->dh_group) {
      ++counters_->child_failures;
      out.push_back(Notify(NotifyType::kInvalidKePayload, DhGroupBytes(algs->dh_group)));
      return false;
    }
    if (auto ready = TakeReadyDh(algs->dh_group, ke->data)) {
      // Done on a worker: the request was handled this far before, and is again now.
      if (!ready->ok) return refuse(NotifyType::kInvalidSyntax);
      dh = std::move(ready->dh);
      shared = std::move(ready->shared);
    } else if (deferred != nullptr && OffloadRequestDh(req, OffloadKind::kChildPfs, algs->dh_group, ke->data)) {
      *deferred = true;
      return false;
    } else {
      dh = crypto::DhKeyPair::Generate(algs->dh_group);
      if (!dh || !dh->ComputeShared(ke->data, shared)) return refuse(NotifyType::kInvalidSyntax);
    }
  }
  NotifyType refusal = NotifyType::kTemporaryFailure;
  const auto spi = host_->AllocateChildSpi(rekey_of != 0, refusal);
  if (!spi) return refuse(refusal);
  ChildSaInfo info;
  info.spi_in = *spi;
  info.spi_out = SpiFromBytes(chosen->spi);
  info.algs = *algs;
  info.local_ts = narrowed_r;
  info.remote_ts = narrowed_i;
  info.rekey_of = rekey_of;
  info.lowest_nonce = LowerNonce(ni, nr);
  info.we_initiated = false;
  ChildKeymat km;
  if (!DeriveChildKeymat(algs_->prf, keys_.sk_d, algs->suite, shared, ni, nr, km)) {
    host_->ReleaseChildSpi(*spi);
    return refuse(NotifyType::kTemporaryFailure);
  }
  info.keymat_in = std::move(km.i_to_r);
  info.keymat_out = std::move(km.r_to_i);
  chosen->spi = ChildSpiBytes(*spi);
  out.push_back({PayloadType::kSa, SaPayload{{*chosen}}});
  if (create_child) out.push_back({PayloadType::kNonce, NoncePayload{Bytes(nr.begin(), nr.end())}});
  if (dh) {
    const auto pub = dh->public_value();
    out.push_back({PayloadType::kKe, KePayload{algs->dh_group, Bytes(pub.begin(), pub.end())}});
  }
  out.push_back({PayloadType::kTsi, TsPayload{narrowed_i}});
  out.push_back({PayloadType::kTsr, TsPayload{narrowed_r}});
  InstallChild(std::move(info), now);
  if (rekey_of != 0) ResolveRekeyCollision(rekey_of, now);
  return true;
}

bool IkeSa::FinishChildAsInitiator(const Message& resp, ChildNegotiation& neg,
                                   std::span<const std::uint8_t> ni,
                                   std::span<const std::uint8_t> nr) {
  const auto* sa = resp.Find<SaPayload>(PayloadType::kSa);
  const auto* tsi = resp.Find<TsPayload>(PayloadType::kTsi);
  const auto* tsr = resp.Find<TsPayload>(PayloadType::kTsr);
  if (sa == nullptr || tsi == nullptr || tsr == nullptr || sa->proposals.size() != 1) {
    failure_ = "malformed CHILD SA response";
    return false;
  }
  const Proposal& chosen = sa->proposals[0];
  const auto algs = ChildAlgorithmsOf(chosen);
  if (!algs || chosen.spi.size() != 4 || !AcceptableChoice(neg.proposals, chosen)) {
    failure_ = "peer chose an ESP proposal we did not offer";
    return false;
  }
  // A rekey keeps the old SA's selectors (which the peer may have deleted meanwhile).
  const ChildSaInfo* old = neg.rekey_of != 0 ? FindChildByInbound(neg.rekey_of) : nullptr;
  const auto& local = old != nullptr ? old->local_ts : OwnSelectors();
  const auto& remote = old != nullptr ? old->remote_ts : PeerSelectors();
  if (!Contains(local, tsi->selectors) || !Contains(remote, tsr->selectors)) {
    failure_ = "peer widened the traffic selectors";
    return false;
  }
  crypto::SecureBytes shared;
  if (algs->dh_group != 0) {
    const auto* ke = resp.Find<KePayload>(PayloadType::kKe);
    const auto ready = ke != nullptr ? TakeReadyDh(ke->group, ke->data) : nullptr;  // from a worker
    if (!neg.dh || ke == nullptr || ke->group != algs->dh_group || neg.dh->group() != ke->group ||
        (ready ? !ready->ok : !neg.dh->ComputeShared(ke->data, shared))) {
      failure_ = "bad KE in CHILD SA response";
      return false;
    }
    if (ready) shared = std::move(ready->shared);
  }
  ChildKeymat km;
  if (!DeriveChildKeymat(algs_->prf, keys_.sk_d, algs->suite, shared, ni, nr, km)) return false;
  ChildSaInfo info;
  info.spi_in = neg.spi_in;
  info.spi_out = SpiFromBytes(chosen.spi);
  info.algs = *algs;
  info.keymat_out = std::move(km.i_to_r);
  info.keymat_in = std::move(km.r_to_i);
  info.local_ts = tsi->selectors;
  info.remote_ts = tsr->selectors;
  info.rekey_of = neg.rekey_of;
  info.lowest_nonce = LowerNonce(ni, nr);
  info.we_initiated = true;
  neg.spi_in = 0;  // now owned by the installed CHILD SA
  InstallChild(std::move(info), last_heard_);
  return true;
}

void IkeSa::InstallChild(ChildSaInfo info, TimePoint now) {
  info.installed = now;
  info.rekey_at = Jittered(now, conn_->child_rekey_time, conn_->rekey_jitter);
  if (conn_->child_lifetime.count() > 0) info.expire_at = now + conn_->child_lifetime;
  // The SA this one replaces is on its way out: never rekey it again.
  if (ChildSaInfo* old = info.rekey_of != 0 ? FindChildByInbound(info.rekey_of) : nullptr)
    old->rekey_started = true;
  children_.push_back(std::move(info));
  host_->InstallChild(*this, children_.back());
  // The host has the keys now (its SA database and data path keep their own copies); this
  // record keeps selectors, SPIs and lifetimes, not a third copy of the key material.
  children_.back().keymat_in = crypto::SecureBytes();
  children_.back().keymat_out = crypto::SecureBytes();
}

void IkeSa::ResolveRekeyCollision(std::uint32_t old_spi, TimePoint now) {
  const ChildSaInfo* ours = nullptr;
  const ChildSaInfo* theirs = nullptr;
  for (const auto& c : children_) {
    if (c.rekey_of != old_spi) continue;
    (c.we_initiated ? ours : theirs) = &c;
  }
  if (ours == nullptr || theirs == nullptr) return;
  const bool ours_lowest = NonceBelow(ours->lowest_nonce, theirs->lowest_nonce);
  if (!ours_lowest) return;  // the peer closes its redundant SA
  const std::uint32_t redundant = ours->spi_in;
  for (auto& c : children_) {
    if (c.spi_in == redundant) c.rekey_of = 0;  // resolved: not a candidate again
  }
  if (std::none_of(pending_.begin(), pending_.end(),
                   [&](const Pending& p) { return p.kind == RequestKind::kDeleteChild && p.child_spi == redundant; }))
    pending_.push_back({RequestKind::kDeleteChild, redundant});
  StartNext(now);
}

// A rekey of ours failed (refused by the peer — TEMPORARY_FAILURE while it is busy or out of
// SPIs, NO_PROPOSAL_CHOSEN — or by our own SPI pool): try again after 2-5 s (random, so SAs
// refused together do not come back together), or sooner when the hard lifetime is nearer;
// otherwise the hard lifetime deletes the SA as it would have anyway.
void IkeSa::RetryRekeyLater(std::uint32_t spi_in, TimePoint now) {
  ChildSaInfo* c = FindChildByInbound(spi_in);
  if (c == nullptr) return;
  // 2-5 s, but never past half the time left before the hard lifetime: with short lifetimes
  // (seconds) a refusal — TEMPORARY_FAILURE while the peer rekeys the IKE SA, say — must
  // still leave room for another try. Less than kMinRekeyRetry left: the hard lifetime wins.
  TimePoint::duration delay = std::chrono::milliseconds(2000 + crypto::RandomU32() % 3000);
  const TimePoint::duration left = c->expire_at - now;
  if (left < 2 * kMinRekeyRetry) return;
  delay = std::min(delay, left / 2);
  const TimePoint at = now + delay;
  ++counters_->rekey_retries;
  c->rekey_started = false;
  c->rekey_at = at;
  if (conn_->host_schedules_rekeys) host_->RetryChildRekey(*this, spi_in, at);
}

}  // namespace spigot::ike
