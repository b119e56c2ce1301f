// IKE datagrams in: dispatch by SPI, admission of new peers (cookies past cookie_threshold),
// the negotiation queue (max_queue, priorities) and the hand-off of new peers' IKE_SA_INIT to
// the IKE workers. Responses finish exchanges we started and skip the queue; requests wait in
// it: established SAs (rekeys, deletes) before half-open ones before new.
#include <spdlog/spdlog.h>

#include "spigot/bounds.h"
#include "spigot/gateway/gateway.h"
#include "spigot/ike/endpoint.h"

namespace spigot::gateway {
namespace {

// What an IKE SA answering its first IKE_SA_INIT on a worker may do: send the answer and change
// state. The control thread replays both when it takes the SA over (AdoptOffloaded). Nothing
// else is reachable from that exchange; should it be, the answer is a refusal, never shared
// state touched from the wrong thread.
class RecordingHost : public ike::IkeSaHost {
 public:
  void SendIke(ike::IkeSa&, const ike::Bytes& datagram) override { sent.push_back(datagram); }
  std::optional<std::uint32_t> AllocateChildSpi(bool, ike::NotifyType& refusal) override {
    refusal = ike::NotifyType::kTemporaryFailure;
    return std::nullopt;
  }
  void ReleaseChildSpi(std::uint32_t) override {}
  void InstallChild(ike::IkeSa&, const ike::ChildSaInfo&) override {}
  void RemoveChild(ike::IkeSa&, std::uint32_t) override {}
  std::shared_ptr<const ike::ConnectionParams> ConnectionForPeer(const ike::Identity&,
                                                                 const ike::Address&) override {
    return nullptr;
  }
  void StateChanged(ike::IkeSa&) override { state_changed = true; }
  std::uint64_t NewIkeSpi() override { return 0; }
  void AdoptIkeSa(ike::IkeSa&, std::unique_ptr<ike::IkeSa>) override {}

  std::vector<ike::Bytes> sent;
  bool state_changed = false;
};

void Add(ike::IkeCounters& to, const ike::IkeCounters& from) {
  to.retransmits += from.retransmits;
  to.gave_up.ike_sa_init += from.gave_up.ike_sa_init;
  to.gave_up.ike_auth += from.gave_up.ike_auth;
  to.gave_up.create_child_sa += from.gave_up.create_child_sa;
  to.gave_up.informational += from.gave_up.informational;
  to.half_open_expired += from.half_open_expired;
  to.rekeyed_expired += from.rekeyed_expired;
  to.requests_queue_full += from.requests_queue_full;
  to.auth_failures += from.auth_failures;
  to.cert_failures += from.cert_failures;
  for (std::size_t m = 0; m < to.eap_logins.size(); ++m) {
    to.eap_logins[m].success += from.eap_logins[m].success;
    to.eap_logins[m].failure += from.eap_logins[m].failure;
  }
  to.eap_throttled += from.eap_throttled;
  to.auth_offloaded += from.auth_offloaded;
  to.auth_inline += from.auth_inline;
  to.eap_offloaded += from.eap_offloaded;
  to.eap_inline += from.eap_inline;
  to.child_pfs_offloaded += from.child_pfs_offloaded;
  to.child_pfs_inline += from.child_pfs_inline;
  to.ike_rekey_offloaded += from.ike_rekey_offloaded;
  to.ike_rekey_inline += from.ike_rekey_inline;
  to.offload_retransmits += from.offload_retransmits;
  to.offload_held += from.offload_held;
  to.offload_held_dropped += from.offload_held_dropped;
  to.invalid_messages += from.invalid_messages;
  to.child_failures += from.child_failures;
  to.weak_refused_modp1024 += from.weak_refused_modp1024;
  to.weak_refused_3des += from.weak_refused_3des;
  to.rekey_retries += from.rekey_retries;
  to.requests_answered_again += from.requests_answered_again;
  to.stale_requests += from.stale_requests;
  to.stale_responses += from.stale_responses;
  to.for_deleted_sa += from.for_deleted_sa;
  to.ike_rekey_collisions += from.ike_rekey_collisions;
  to.peer_moved += from.peer_moved;
  to.peer_move_ignored += from.peer_move_ignored;
  to.mobike_negotiated += from.mobike_negotiated;
  to.mobike_updates += from.mobike_updates;
  to.mobike_refused += from.mobike_refused;
  to.mobike_rr_checks += from.mobike_rr_checks;
  to.mobike_rr_passed += from.mobike_rr_passed;
  to.mobike_rr_failed += from.mobike_rr_failed;
  to.mobike_rr_skipped += from.mobike_rr_skipped;
  to.mobike_local_moves += from.mobike_local_moves;
  to.mobike_updates_sent += from.mobike_updates_sent;
  to.mobike_no_local_address += from.mobike_no_local_address;
  to.mobike_additional_addresses += from.mobike_additional_addresses;
  to.mobike_address_list_overflow += from.mobike_address_list_overflow;
  to.mobike_address_malformed += from.mobike_address_malformed;
  to.mobike_address_lists_sent += from.mobike_address_lists_sent;
  to.ike_rekey_collisions_ours_redundant += from.ike_rekey_collisions_ours_redundant;
  to.fragments += from.fragments;
}

}  // namespace

struct Gateway::OffloadJob {
  RecordingHost host;
  ike::IkeCounters counters;
  std::unique_ptr<ike::IkeSa> sa;
  std::vector<std::uint8_t> msg;
  bool natt = false;
  HalfOpenKey key;
  ike::TimePoint now;
};

void Gateway::ReceiveIke(std::span<const std::uint8_t> msg, const io::Endpoint& from,
                         bool natt_port, const io::IpAddress& to) {
  ++counters_.ike_received;
  ike::Header h;
  if (!ike::ParseHeader(msg, h)) {
    ++counters_.ike_invalid;
    return;
  }
  if (h.is_response()) return ProcessIke(msg, from, natt_port, to);
  engine::Priority prio = engine::Priority::kNew;
  if (h.spi_r != 0) {
    const SaEntry* e = table_.Find(h.from_initiator() ? h.spi_r : h.spi_i);
    prio = e != nullptr && e->sa->state() == ike::IkeSa::State::kEstablished
               ? engine::Priority::kEstablished
               : engine::Priority::kHalfOpen;
  } else if (h.exchange == ike::Exchange::kIkeSaInit && table_.FindHalfOpen({h.spi_i, from.ToString()})) {
    // Another form of a request that already created an SA — its retry with a new COOKIE after
    // our cookie secret rotated — must stay in order with the IKE_AUTH that follows it, which
    // waits as kHalfOpen: the peer signs the form it sent last (NoteInitRetry), and an
    // IKE_AUTH that overtook it would be checked against the old one and fail.
    prio = engine::Priority::kHalfOpen;
  }
  auto copy = std::make_shared<std::vector<std::uint8_t>>(msg.begin(), msg.end());
  // A full queue refuses (or evicts lower-priority work) with STATUS_IPSEC_QUEUE_OVERFLOW,
  // counted in queue_overflows; the peer retransmits.
  (void)queue_.Submit(prio, [this, copy, from, natt_port, to, queued = Now()] {
    queue_wait_seconds_.Observe(Now() - queued);
    ProcessIke(*copy, from, natt_port, to);
  });
}

// The queue is worked right after the datagrams that arrived together have been queued (and so
// prioritised), a bounded slice at a time; the rest waits for later turns of the event loop,
// so sockets and timers are served in between.
void Gateway::WorkQueue() {
  // While the data path has fallen behind on SA commands (bounds::kDataplaneBacklog), nothing
  // that would install new SAs starts: new IKE SAs and IKE_AUTHs wait in the negotiation queue
  // (its bound and priorities govern them), rekeys and deletes of established SAs go on.
  const bool backlogged = env_.dataplane.backlog() >= bounds::kDataplaneBacklog;
  if (backlogged && !held_for_backlog_) {
    ++counters_.dataplane_backlog_holds;
    spdlog::warn("data path backlog of {} SA commands: new negotiations wait until it drains",
                 env_.dataplane.backlog());
  }
  held_for_backlog_ = backlogged;
  for (std::size_t n = 0; n < kQueueSlice; ++n) {
    // A new IKE_SA_INIT needs a worker (its DH); while all are busy it stays queued, where
    // max_queue and the priorities govern it, and rekeys and deletes still run.
    const auto lowest = backlogged                  ? engine::Priority::kEstablished
                        : env_.workers.free() != 0 ? engine::Priority::kNew
                                                   : engine::Priority::kHalfOpen;
    if (queue_.Run(1, lowest) == 0) break;
  }
  ScheduleQueueWork();
}

void Gateway::ScheduleQueueWork() {
  // New work that waits for a worker is picked up when one finishes (AdoptOffloaded), not by
  // spinning here.
  // Held work (a data path backlog) is picked up by the tick once it drains.
  const bool held = held_for_backlog_;
  const bool runnable = queue_.depth(engine::Priority::kEstablished) != 0 ||
                        (!held && queue_.depth(engine::Priority::kHalfOpen) != 0) ||
                        (!held && queue_.depth(engine::Priority::kNew) != 0 && env_.workers.free() != 0);
  if (queue_work_posted_ || !runnable) return;
  queue_work_posted_ = env_.loop.Post([this] {
    queue_work_posted_ = false;
    WorkQueue();
  });
}

void Gateway::ProcessIke(std::span<const std::uint8_t> msg, const io::Endpoint& from,
                         bool natt_port, const io::IpAddress& to) {
  ike::Header h;
  if (!ike::ParseHeader(msg, h)) return;
  const ike::TimePoint now = Now();
  // The I flag says whether the sender is the original initiator (RFC 7296 3.1), so it says
  // which of the two SPIs is ours.
  const bool we_respond = h.from_initiator();
  std::uint64_t ours = we_respond ? h.spi_r : h.spi_i;
  if (we_respond && ours == 0) {
    if (h.exchange != ike::Exchange::kIkeSaInit || h.is_response()) {
      ++counters_.ike_unknown_spi;
      return;
    }
    const HalfOpenKey key{h.spi_i, from.ToString()};
    if (auto known = table_.FindHalfOpen(key)) {
      ours = *known;
      // A late copy for an SA that is past IKE_SA_INIT (retired from the half-open index, see
      // IkeSaTable::kInitRetransmitWindow): dropped here, before it could move the SA's port.
      if (const SaEntry* e = table_.Find(ours); e != nullptr && !e->half_open) {
        ++counters_.init_in_progress;
        return;
      }
    } else {
      const Connection* c = connections_.ForAddress(from);
      // Cookie mode starts at cookie_threshold half-open SAs and lasts kCookieHold after the
      // count falls below it. Without that hold, a retransmitted IKE_SA_INIT could be admitted
      // without a cookie just after its first copy was asked for one: the initiator, now
      // sending the request with the cookie, would take our answer to the old request for the
      // answer to the new one and sign the wrong message (AUTHENTICATION_FAILED, seen under
      // login storms that hover around the threshold).
      if (table_.half_open_count() >= config_.global.cookie_threshold)
        cookies_until_ = now + kCookieHold;
      if (c != nullptr && now < cookies_until_ && !CookieAdmits(msg, h, from, natt_port, to)) return;
      if (c == nullptr) {
        ++counters_.ike_no_connection;
        spdlog::info("IKE_SA_INIT from {}: no connection accepts this address", from.ToString());
        return;
      }
      ours = table_.NewSpi();
      // Our address as the peer sees it: where its datagram came to (a wildcard listen knows it
      // from the packet info), else the address we listen on. NAT detection hashes it.
      const io::Endpoint listening = env_.transport.LocalEndpoint(natt_port);
      const ike::Address local = ike::ToAddress(
          to.family == listening.family() ? io::Endpoint::From(to, listening.port()) : listening);
      auto make_sa = [&] {
        return std::make_unique<ike::IkeSa>(*this, ike_counters_, ike::IkeSa::Role::kResponder,
                                            c->params, local, ike::ToAddress(from), h.spi_i, ours);
      };
      // The DH and key derivation go to a worker; the control thread keeps receiving.
      if (OffloadInit(make_sa(), msg, natt_port, key, now)) return;
      // No room (WorkQueue runs new work only when there is, so this is rare): answer here.
      SaEntry e;
      e.sa = make_sa();
      e.natt = natt_port;
      e.started = now;
      e.half_open = key;
      table_.Insert(ours, std::move(e));
      table_.AddHalfOpen(key, ours);
    }
  }
  SaEntry* e = table_.Find(ours);
  if (e == nullptr) {
    if (table_.IsOffloaded(ours)) {
      ++counters_.init_in_progress;
      // The SA sees the latest copy once it is adopted: it may be the request in the form the
      // peer will sign (its cookie retry).
      if (we_respond && h.exchange == ike::Exchange::kIkeSaInit)
        init_retries_[ours] = {std::vector<std::uint8_t>(msg.begin(), msg.end()), from, natt_port};
    } else {
      ++counters_.ike_unknown_spi;
    }
    return;
  }
  // The SA follows the datagram's source only if the message proves authentic and new (2.23:
  // the move to 4500 once a NAT is detected, a NAT's new mapping); a spoofed datagram with
  // known SPIs redirects nothing. Its port decides how we send (with the non-ESP marker on
  // 4500) once the SA is there.
  const ike::Address source = ike::ToAddress(from);
  e->sa->set_source(source);
  e->sa->Receive(msg, now);
  if (SaEntry* after = table_.Find(ours); after != nullptr && after->sa->remote() == source)
    after->natt = natt_port;
  table_.Schedule(ours);
  ApplyUniqueness();
}

bool Gateway::CookieAdmits(std::span<const std::uint8_t> msg, const ike::Header& h,
                           const io::Endpoint& from, bool natt_port, const io::IpAddress& to) {
  ike::Message m;
  if (ike::ParseMessage(msg, m).error != ike::ParseError::kOk) {
    ++counters_.ike_invalid;
    return false;
  }
  const auto* ni = m.Find<ike::NoncePayload>(ike::PayloadType::kNonce);
  if (ni == nullptr) {
    ++counters_.ike_invalid;
    return false;
  }
  const ike::TimePoint now = Now();
  // 2.6: the cookie comes back as the first payload.
  const auto* first =
      m.payloads.empty() ? nullptr : std::get_if<ike::NotifyPayload>(&m.payloads[0].body);
  if (first != nullptr && first->type == ike::NotifyType::kCookie) {
    if (cookies_.Verify(first->data, ni->data, from.address_bytes(), h.spi_i, now)) return true;
    ++counters_.cookies_invalid;
  }
  ike::Message reply;
  reply.header = ike::Header{h.spi_i, 0, ike::PayloadType::kNone, ike::kVersion,
                             ike::Exchange::kIkeSaInit, ike::kFlagResponse, 0, 0};
  reply.payloads.push_back(
      {ike::PayloadType::kNotify,
       ike::NotifyPayload{ike::ProtocolId::kNone, {}, ike::NotifyType::kCookie,
                          cookies_.Make(ni->data, from.address_bytes(), h.spi_i, now)}});
  env_.transport.Send(from, ike::Serialize(reply, nullptr), natt_port, to);
  ++counters_.cookies_sent;
  return false;
}

bool Gateway::OffloadInit(std::unique_ptr<ike::IkeSa> sa, std::span<const std::uint8_t> msg,
                          bool natt, HalfOpenKey key, ike::TimePoint now) {
  auto job = std::make_shared<OffloadJob>();
  sa->Rebind(job->host, job->counters);
  job->sa = std::move(sa);
  job->msg.assign(msg.begin(), msg.end());
  job->natt = natt;
  job->key = std::move(key);
  job->now = now;
  const std::uint64_t ours = job->sa->spi_r();
  if (!env_.workers.TrySubmit([this, job] {
        job->sa->Receive(job->msg, job->now);
        OffloadDone(job);
      })) {
    return false;
  }
  table_.MarkOffloaded(ours);
  table_.AddHalfOpen(job->key, ours);
  return true;
}

void Gateway::OffloadDone(std::shared_ptr<OffloadJob> job) {
  {
    std::lock_guard lock(done_mu_);
    done_.push_back(std::move(job));
  }
  // One wake-up for any number of finished jobs. A refused Post (the loop's queue is full) is
  // made up for by the next tick.
  if (!done_posted_.exchange(true) && !env_.loop.Post([this] { AdoptOffloaded(); }))
    done_posted_ = false;
}

// An established or half-open IKE SA's public-key or DH work on an IKE worker (issue 17:
// IKE_AUTH, CREATE_CHILD_SA with PFS, IKE rekeys): the SA stays in the table, waiting (it holds
// or drops what arrives for it, ike_sa.h) until AdoptOffloaded resumes it. The worker pool's
// capacity bounds these jobs with the IKE_SA_INIT ones; a full pool refuses and the SA does the
// work on this thread.
bool Gateway::Offload(ike::IkeSa& sa, ike::OffloadKind /*kind*/, std::function<void()> work) {
  const std::uint64_t ours = IkeSaTable::OurSpi(sa);
  return env_.workers.TrySubmit([this, ours, work = std::move(work)] {
    work();
    {
      std::lock_guard lock(done_mu_);
      sa_work_done_.push_back(ours);
    }
    if (!done_posted_.exchange(true) && !env_.loop.Post([this] { AdoptOffloaded(); }))
      done_posted_ = false;
  });
}

void Gateway::AdoptOffloaded() {
  done_posted_ = false;
  std::vector<std::shared_ptr<OffloadJob>> batch;
  std::vector<std::uint64_t> auths;
  {
    std::lock_guard lock(done_mu_);
    batch.swap(done_);
    auths.swap(sa_work_done_);
  }
  for (std::uint64_t ours : auths) {
    // Gone meanwhile (half-open limit, a DELETE, shutdown): the work's result goes nowhere. The
    // worker only ever held its own copies, never the SA.
    SaEntry* e = table_.Find(ours);
    if (e == nullptr) continue;
    e->sa->ResumeOffloaded(Now());
    table_.Schedule(ours);
  }
  if (!auths.empty()) ApplyUniqueness();
  for (auto& job : batch) {
    const std::uint64_t ours = job->sa->spi_r();
    table_.UnmarkOffloaded(ours);
    job->sa->Rebind(*this, ike_counters_);
    Add(ike_counters_, job->counters);
    SaEntry e;
    e.sa = std::move(job->sa);
    e.natt = job->natt;
    e.started = job->now;
    e.half_open = job->key;
    ike::IkeSa& sa = *table_.Insert(ours, std::move(e)).sa;
    for (const auto& datagram : job->host.sent) SendIke(sa, datagram);
    if (job->host.state_changed) StateChanged(sa);
    if (auto retry = init_retries_.find(ours); retry != init_retries_.end()) {
      const InitRetry r = std::move(retry->second);
      init_retries_.erase(retry);
      if (sa.state() == ike::IkeSa::State::kInitAnswered) {
        table_.Find(ours)->natt = r.natt;
        sa.set_remote(ike::ToAddress(r.from));
        sa.Receive(r.bytes, Now());
      }
    }
    if (shutting_down_) sa.Delete(Now());
    table_.Schedule(ours);
  }
  if (!batch.empty() || !auths.empty()) WorkQueue();
}

}  // namespace spigot::gateway
