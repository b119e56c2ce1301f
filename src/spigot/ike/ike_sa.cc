// IkeSa: construction, the dispatch of received messages to the exchanges, the timers, our
// request queue (2.3: window 1) and its retransmissions, responses and the cache of the last one
// (2.1), and the helpers the exchanges share (ike_sa_internal.h). The exchanges themselves:
// ike_sa_init.cc, ike_sa_auth.cc, ike_sa_child.cc, ike_sa_ike_rekey.cc, ike_sa_informational.cc.
#include "spigot/ike/ike_sa.h"

#include <algorithm>
#include <utility>

#include "spigot/crypto/random.h"
#include "spigot/ike/ike_sa_internal.h"
#include "spigot/wire/byte_reader.h"
#include "spigot/wire/byte_writer.h"

namespace spigot::ike {

using namespace internal;

namespace {

// The defaults of ConnectionParams, for an SA without a connection (none in the daemon).
const ConnectionParams kDefaultParams{};

const ConnectionParams& ParamsOr(const std::shared_ptr<const ConnectionParams>& conn) {
  return conn ? *conn : kDefaultParams;
}

std::uint64_t& GaveUpCounter(IkeCounters::GaveUp& g, Exchange ex) {
  switch (ex) {
    case Exchange::kIkeSaInit: return g.ike_sa_init;
    case Exchange::kIkeAuth: return g.ike_auth;
    case Exchange::kCreateChildSa: return g.create_child_sa;
    default: return g.informational;
  }
}

const char* ExchangeName(Exchange ex) {
  switch (ex) {
    case Exchange::kIkeSaInit: return "IKE_SA_INIT";
    case Exchange::kIkeAuth: return "IKE_AUTH";
    case Exchange::kCreateChildSa: return "CREATE_CHILD_SA";
    case Exchange::kInformational: return "INFORMATIONAL";
    default: return "exchange";
  }
}

}  // namespace

namespace internal {

Bytes RandomNonce() {
  Bytes n(kNonceLen);
  crypto::RandomBytes(n);
  return n;
}

bool NonceBelow(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end());
}

Bytes LowerNonce(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  const auto& lo = NonceBelow(a, b) ? a : b;
  return Bytes(lo.begin(), lo.end());
}

Payload Notify(NotifyType type, Bytes data, ProtocolId proto, Bytes spi) {
  return Payload{PayloadType::kNotify, NotifyPayload{proto, std::move(spi), type, std::move(data)}};
}

const char* NotifyName(NotifyType t) {
  switch (t) {
    case NotifyType::kUnsupportedCriticalPayload: return "UNSUPPORTED_CRITICAL_PAYLOAD";
    case NotifyType::kInvalidIkeSpi: return "INVALID_IKE_SPI";
    case NotifyType::kInvalidMajorVersion: return "INVALID_MAJOR_VERSION";
    case NotifyType::kInvalidSyntax: return "INVALID_SYNTAX";
    case NotifyType::kInvalidMessageId: return "INVALID_MESSAGE_ID";
    case NotifyType::kInvalidSpi: return "INVALID_SPI";
    case NotifyType::kNoProposalChosen: return "NO_PROPOSAL_CHOSEN";
    case NotifyType::kInvalidKePayload: return "INVALID_KE_PAYLOAD";
    case NotifyType::kAuthenticationFailed: return "AUTHENTICATION_FAILED";
    case NotifyType::kSinglePairRequired: return "SINGLE_PAIR_REQUIRED";
    case NotifyType::kNoAdditionalSas: return "NO_ADDITIONAL_SAS";
    case NotifyType::kInternalAddressFailure: return "INTERNAL_ADDRESS_FAILURE";
    case NotifyType::kFailedCpRequired: return "FAILED_CP_REQUIRED";
    case NotifyType::kTsUnacceptable: return "TS_UNACCEPTABLE";
    case NotifyType::kTemporaryFailure: return "TEMPORARY_FAILURE";
    case NotifyType::kChildSaNotFound: return "CHILD_SA_NOT_FOUND";
    case NotifyType::kUnexpectedNatDetected: return "UNEXPECTED_NAT_DETECTED";
    default: return "error notify";
  }
}

Bytes ChildSpiBytes(std::uint32_t spi) {
  Bytes b;
  wire::ByteWriter(b).WriteU32(spi);
  return b;
}

Bytes DhGroupBytes(std::uint16_t group) {
  Bytes b;
  wire::ByteWriter(b).WriteU16(group);
  return b;
}

std::uint32_t SpiFromBytes(std::span<const std::uint8_t> b) {
  std::uint32_t spi = 0;
  if (b.size() != 4) return 0;
  wire::ByteReader(b).ReadU32(spi);
  return spi;
}

std::vector<Proposal> WithoutDh(std::vector<Proposal> ps) {
  for (auto& p : ps) {
    std::erase_if(p.transforms, [](const Transform& t) { return t.type == TransformType::kDh; });
  }
  return ps;
}

TimePoint Jittered(TimePoint from, std::chrono::seconds life, double jitter) {
  if (life.count() <= 0) return TimePoint::max();
  const double f = 1.0 - jitter * crypto::RandomUnit();
  return from + std::chrono::duration_cast<TimePoint::duration>(life * f);
}

}  // namespace internal

const char* ToString(IkeSa::State s) {
  switch (s) {
    case IkeSa::State::kNew: return "NEW";
    case IkeSa::State::kInitSent: return "CONNECTING";
    case IkeSa::State::kAuthSent: return "CONNECTING";
    case IkeSa::State::kInitAnswered: return "CONNECTING";
    case IkeSa::State::kEstablished: return "ESTABLISHED";
    case IkeSa::State::kDeleting: return "DELETING";
    case IkeSa::State::kDead: return "DEAD";
  }
  return "?";
}

IkeSa::IkeSa(IkeSaHost& host, IkeCounters& counters, Role role,
             std::shared_ptr<const ConnectionParams> conn, Address local, Address remote,
             std::uint64_t spi_i, std::uint64_t spi_r)
    : host_(&host), counters_(&counters), role_(role), conn_(std::move(conn)), local_(local),
      remote_(remote), spi_i_(spi_i), spi_r_(spi_r) {
  if (conn_ && conn_->dpd_delay.count() > 0) {
    dpd_jitter_ = std::chrono::milliseconds(static_cast<std::int64_t>(
        0.1 * static_cast<double>(std::chrono::milliseconds(conn_->dpd_delay).count()) *
        crypto::RandomUnit()));
  }
}

IkeSa::~IkeSa() {
  if (child_neg_ && child_neg_->spi_in != 0) host_->ReleaseChildSpi(child_neg_->spi_in);
}

void IkeSa::Receive(std::span<const std::uint8_t> datagram, TimePoint now) {
  // Taken now: it is this datagram's, and must not stay for a later one if this is dropped.
  const std::optional<Address> from = std::exchange(source_, std::nullopt);
  if (state_ == State::kDead) {
    ++counters_->for_deleted_sa;  // deleted moments ago, removed from the table at the next tick
    return;
  }
  if (HoldWhileOffloaded(datagram, from)) return;  // after the work on a worker, in order
  if (created_at_ == TimePoint{}) created_at_ = now;
  Message msg;
  ParseResult res = ParseMessage(datagram, msg);
  if (res.error != ParseError::kOk) {
    ++counters_->invalid_messages;
    // 2.21.1: answer an unencrypted IKE_SA_INIT request we cannot parse; drop the rest.
    if (!msg.header.is_response() && msg.header.exchange == Exchange::kIkeSaInit &&
        state_ == State::kNew && role_ == Role::kResponder) {
      if (res.error == ParseError::kUnsupportedCritical) {
        SendResponse(msg.header, {Notify(NotifyType::kUnsupportedCriticalPayload, {res.unsupported_type})}, false);
        Die("peer sent an unsupported critical payload");
      } else if (res.error == ParseError::kInvalidMajorVersion) {
        SendResponse(msg.header, {Notify(NotifyType::kInvalidMajorVersion)}, false);
        Die("peer speaks another IKE major version");
      } else if (res.error == ParseError::kInvalidSyntax) {
        SendResponse(msg.header, {Notify(NotifyType::kInvalidSyntax)}, false);
        Die("malformed IKE_SA_INIT");
      }
    }
    return;
  }
  const Header& h = msg.header;
  // The I flag names the original initiator (3.1): a message from the peer carries it iff the
  // peer initiated this IKE SA.
  if (h.from_initiator() != (role_ == Role::kResponder)) {
    ++counters_->invalid_messages;
    return;
  }
  if (res.fragment) {
    // RFC 7383 2.3: only on an IKE SA that negotiated it; 2.5: never IKE_SA_INIT.
    if (!fragmentation_) {
      ++counters_->fragments.not_negotiated;
      return;
    }
    if (h.exchange == Exchange::kIkeSaInit) {
      ++counters_->fragments.malformed;
      return;
    }
    if (!CheckFragmentNumbers(res.fragment_number, res.total_fragments, counters_->fragments)) return;
  }

  if (h.is_response()) {
    if (!outstanding_ || h.message_id != outstanding_->message_id ||
        h.exchange != outstanding_->exchange) {
      // A response to one of our requests that was answered already (a copy made on the way,
      // or an answer to our retransmission after the first answer came): 2.1, dropped. Any
      // other message ID we never used.
      ++(h.message_id < next_request_id_ ? counters_->stale_responses : counters_->invalid_messages);
      return;
    }
  } else {
    if (last_response_id_ && h.message_id == *last_response_id_) {
      // RFC 7383 2.6.1: a fragmented request retransmitted is answered once, on its fragment 1.
      if (res.fragment && res.fragment_number != 1) {
        ++counters_->fragments.duplicate;
        return;
      }
      if (h.exchange == Exchange::kIkeSaInit && state_ == State::kInitAnswered) NoteInitRetry(msg, datagram);
      ++counters_->requests_answered_again;
      reply_to_ = from;
      Transmit(last_response_, last_response_fragments_, true);  // 2.1: a retransmitted request
      reply_to_.reset();
      return;
    }
    if (h.message_id != next_peer_request_id_) {
      // Older than the last one answered (a copy that newer requests overtook): dropped, as
      // no response to it is kept (2.1). Any other message ID out of the window is invalid.
      ++(h.message_id < next_peer_request_id_ ? counters_->stale_requests : counters_->invalid_messages);
      return;
    }
  }

  if (res.fragment) {
    if (!ReceiveFragment(datagram, res, msg, now)) return;  // stored for later, or dropped
  } else if (msg.encrypted) {
    if (!sk_in_.cipher) {
      ++counters_->invalid_messages;
      return;
    }
    res = OpenSk(datagram, res, sk_in_, msg);
    // A whole message supersedes any fragments of this direction still held.
    if (res.error == ParseError::kOk) (h.is_response() ? reassembly_response_ : reassembly_request_).reset();
  } else if (h.exchange != Exchange::kIkeSaInit ||
             !(state_ == State::kNew || state_ == State::kInitSent)) {
    // Only IKE_SA_INIT travels in the clear, and only while the SA is being set up: later,
    // one with this SA's SPIs is forged (it must not count as hearing from the peer, nor
    // move the SA).
    ++counters_->invalid_messages;
    return;
  }
  if (msg.encrypted) {
    if (res.error != ParseError::kOk) {
      ++counters_->invalid_messages;
      if (res.error == ParseError::kIntegrityFailed) return;  // 2.21.2: drop silently
      if (!h.is_response()) {
        reply_to_ = from;
        SendResponse(h, {res.error == ParseError::kUnsupportedCritical
                             ? Notify(NotifyType::kUnsupportedCriticalPayload, {res.unsupported_type})
                             : Notify(NotifyType::kInvalidSyntax)},
                     true);
        reply_to_.reset();
      }
      return;
    }
  }
  last_heard_ = now;
  if (from) FollowSource(*from);

  if (h.is_response()) return HandleResponse(msg, datagram, now);
  reply_to_ = from;
  switch (h.exchange) {
    case Exchange::kIkeSaInit:
      if (role_ == Role::kResponder && state_ == State::kNew) OnInitRequest(msg, datagram, now);
      break;
    case Exchange::kIkeAuth:
      if (role_ == Role::kResponder && state_ == State::kInitAnswered) OnAuthRequest(msg, now);
      break;
    case Exchange::kCreateChildSa:
      if (state_ == State::kEstablished || state_ == State::kDeleting) OnCreateChildRequest(msg, now);
      break;
    case Exchange::kInformational:
      if (state_ == State::kEstablished || state_ == State::kDeleting) OnInformationalRequest(msg, now);
      break;
    default:
      ++counters_->invalid_messages;
  }
  reply_to_.reset();
}

void IkeSa::HandleResponse(const Message& msg, std::span<const std::uint8_t> datagram, TimePoint now) {
  const Header& h = msg.header;
  {
    const RequestKind kind = outstanding_->kind;
    // Not again when ResumeOffloaded brings the response back with its check done (auth_ready_).
    const bool first_pass = !auth_ready_;
    // RFC 4555 3.4: the responder's MOBIKE_SUPPORTED comes in one of its IKE_AUTH responses.
    if (kind == RequestKind::kAuth && first_pass && conn_ && conn_->mobike && !mobike_ &&
        msg.FindNotify(NotifyType::kMobikeSupported) != nullptr) {
      mobike_ = true;
      ++counters_->mobike_negotiated;
    }
    // 4555 3.6: the responder's address list comes with its IKE_AUTH response.
    if (kind == RequestKind::kAuth && first_pass && mobike_) TakePeerAddresses(msg);
    switch (kind) {
      case RequestKind::kInit: OnInitResponse(msg, datagram, now); break;
      case RequestKind::kAuth: OnAuthResponse(msg, now); break;
      case RequestKind::kCreateChild:
      case RequestKind::kRekeyChild: OnChildResponse(msg, now); break;
      case RequestKind::kRekeyIke: OnIkeRekeyResponse(msg, now); break;
      default: OnInformationalResponse(msg, now); break;
    }
    // Its DH went to a worker: the exchange stays open (and the request unretransmitted) until
    // ResumeOffloaded brings the response back here.
    if (offload_ && offload_->message && offload_->message->header.is_response()) return;
    // Answered: unless the handler already sent the next request (an EAP round of IKE_AUTH,
    // another exchange), which has its own message ID.
    if (state_ != State::kDead && outstanding_ && outstanding_->message_id == h.message_id &&
        kind != RequestKind::kInit) {
      outstanding_.reset();
    }
    StartNext(now);
  }
}

void IkeSa::FollowSource(const Address& from) {
  if (from == remote_) return;
  // RFC 4555 3.5: with MOBIKE the peer says where it is (UPDATE_SA_ADDRESSES); 2.23's following
  // of the source is not used.
  if (mobike_) return;
  // Until the IKE SA is up the peer's address is the one it uses: IKE_SA_INIT's, then IKE_AUTH's
  // on port 4500 once a NAT was detected (2.23).
  if (state_ != State::kEstablished && state_ != State::kDeleting) {
    remote_ = from;
    return;
  }
  MovePeer(from);
}

bool IkeSa::FollowEspSource(const Address& from) {
  if (from == remote_ || (state_ != State::kEstablished && state_ != State::kDeleting)) return false;
  if (mobike_) {
    ++counters_->peer_move_ignored;
    return false;
  }
  return MovePeer(from);
}

bool IkeSa::MovePeer(const Address& from) {
  // 2.23: a NAT in front of the peer changed its mapping. Not when no NAT was detected (the
  // peer would need MOBIKE to move), nor when we are behind one ourselves (one packet could
  // break the connection).
  if (!nat_remote_ || nat_local_) {
    ++counters_->peer_move_ignored;
    return false;
  }
  ++counters_->peer_moved;
  const Address was = remote_;
  remote_ = from;
  host_->PeerMoved(*this, was);
  return true;
}

bool IkeSa::ReceiveFragment(std::span<const std::uint8_t> datagram, ParseResult& res,
                            Message& msg, TimePoint now) {
  const Header& h = msg.header;
  FragmentCounters& fc = counters_->fragments;
  if (!sk_in_.cipher) {
    ++counters_->invalid_messages;
    return false;
  }
  std::unique_ptr<Reassembly>& slot = h.is_response() ? reassembly_response_ : reassembly_request_;
  // Duplicates and stale fragments go before any decryption; nothing is stored unverified.
  if (slot && !slot->Wanted(h.message_id, res.fragment_number, res.total_fragments, fc)) return false;
  Bytes content;
  const ParseResult opened = OpenSkf(datagram, res, sk_in_, content);
  if (opened.error != ParseError::kOk) {
    ++(opened.error == ParseError::kIntegrityFailed ? fc.bad_icv : fc.malformed);
    return false;
  }
  last_heard_ = now;
  if (!slot) slot = std::make_unique<Reassembly>();
  const Reassembly::Verdict v = slot->Add(h.message_id, res.fragment_number, res.total_fragments,
                                          res.sk_first, std::move(content), now, fc);
  if (v != Reassembly::Verdict::kComplete) {
    if (!slot->active()) slot.reset();
    return false;
  }
  PayloadType first = PayloadType::kNone;
  Bytes chain = slot->TakeMessage(first);
  slot.reset();
  res = ParseInner(chain, first, msg);
  crypto::Wipe(chain.data(), chain.size());
  return true;
}

void IkeSa::Tick(TimePoint now) {
  if (state_ == State::kDead) return;
  for (auto* slot : {&reassembly_request_, &reassembly_response_}) {
    if (*slot && (*slot)->Expire(now, counters_->fragments)) slot->reset();
  }
  const ConnectionParams& params = ParamsOr(conn_);
  if (outstanding_ && !FinishingResponse() && now >= outstanding_->deadline) {
    if (outstanding_->retransmits >= params.retransmit_tries) {
      // 4555 3.7: no answer at the peer's new address fails its return routability check too.
      if (outstanding_->kind == RequestKind::kMobikeCheck) ++counters_->mobike_rr_failed;
      // 2.4: given up. Whatever the exchange was, the IKE SA and its CHILD SAs go with it here;
      // the peer's half goes by its own liveness check (or its own give-up).
      ++GaveUpCounter(counters_->gave_up, outstanding_->exchange);
      Die(std::string("peer unreachable: ") + ExchangeName(outstanding_->exchange) +
          " unanswered after " + std::to_string(outstanding_->retransmits) + " retransmits");
      return;
    }
    ++outstanding_->retransmits;
    ++counters_->retransmits;
    // 2.4: exponential back-off, with +-10% jitter so that many SAs do not resend in step.
    const auto base = params.retransmit_timeout * (std::int64_t{1} << outstanding_->retransmits);
    const double jitter = 0.9 + 0.2 * crypto::RandomUnit();
    outstanding_->deadline =
        now + std::chrono::duration_cast<TimePoint::duration>(base * jitter);
    Transmit(outstanding_->bytes, outstanding_->fragments);
  }
  if (state_ == State::kInitAnswered && now - created_at_ >= params.half_open_timeout) {
    ++counters_->half_open_expired;
    Die("half-open: no IKE_AUTH within " + std::to_string(params.half_open_timeout.count()) + " ms");
    return;
  }
  if (state_ == State::kEstablished && rekeyed_ && now >= RekeyedExpiry()) {
    // Our answer to the peer's rekey went out (the CHILD SAs are on the new IKE SA) but its
    // DELETE of this one never came: lost, or the peer never got our answer and gave up. The
    // peer has retransmitted all it will by now; nothing is left to answer.
    ++counters_->rekeyed_expired;
    Die("rekeyed: the peer's DELETE of the old IKE SA never came");
    return;
  }
  if (state_ != State::kEstablished || rekeyed_) return;
  std::vector<std::uint32_t> expired, due;
  for (auto& c : children_) {
    if (c.delete_started) continue;
    if (now >= c.expire_at) expired.push_back(c.spi_in);
    else if (now >= c.rekey_at && !c.rekey_started && !conn_->host_schedules_rekeys) {
      c.rekey_started = true;
      due.push_back(c.spi_in);
    }
  }
  for (std::uint32_t spi : expired) {
    // Hard lifetime: the SA must not carry traffic any more, answer or not. Once the DELETE
    // is queued the hard lifetime is done with; a full request queue tries again a second
    // later (never at once: a deadline that stays in the past would be due for ever).
    const bool queued = DeleteChild(spi, now);
    if (ChildSaInfo* c = FindChildByInbound(spi)) {
      if (queued) {
        c->delete_started = true;
      } else {
        c->expire_at = now + kExpiredDeleteRetry;
      }
    }
  }
  for (std::uint32_t spi : due) RekeyChild(spi, now);
  if (now >= redundant_delete_at_) {
    redundant_delete_at_ = TimePoint::max();
    // The peer may never have learnt of it: one DELETE, unanswered or not, and it is gone.
    if (!outstanding_) {
      SendRequest(RequestKind::kDeleteIke, Exchange::kInformational,
                  {Payload{PayloadType::kDelete, DeletePayload{ProtocolId::kIke, 0, {}}}}, now);
    }
    Die("redundant: the peer's half of a simultaneous IKE rekey, not deleted by the peer");
    return;
  }
  if (now >= ike_rekey_at_) {
    ike_rekey_at_ = TimePoint::max();
    RekeyIke(now);
  }
  if (!outstanding_ && pending_.empty() && conn_ && conn_->dpd_delay.count() > 0 &&
      now >= DpdDue()) {
    if (host_->HeardFromPeer(*this, last_heard_)) {
      ++counters_->dpd_skipped_traffic;
      last_heard_ = now;
    } else if (!host_->AdmitLivenessCheck(*this, now)) {
      ++counters_->dpd_deferred;
      // Spread over the next second or two, not all at the next tick.
      dpd_not_before_ = now + std::chrono::milliseconds(
                                  500 + static_cast<int>(1500 * crypto::RandomUnit()));
    } else if (CheckLiveness(now)) {
      ++counters_->dpd_probes;
    }
  }
}

TimePoint IkeSa::RekeyedExpiry() const {
  // Only while nothing of ours is out or waiting: our own DELETE has its own give-up.
  if (!rekeyed_ || outstanding_ || !pending_.empty()) return TimePoint::max();
  return rekeyed_at_ + ParamsOr(conn_).RetransmitSpan();
}

TimePoint IkeSa::DpdDue() const {
  return std::max(last_heard_ + conn_->dpd_delay + dpd_jitter_, dpd_not_before_);
}

TimePoint IkeSa::NextDeadline() const {
  TimePoint next = TimePoint::max();
  if (state_ == State::kDead) return next;
  if (outstanding_ && !FinishingResponse()) next = std::min(next, outstanding_->deadline);
  if (reassembly_request_) next = std::min(next, reassembly_request_->deadline());
  if (reassembly_response_) next = std::min(next, reassembly_response_->deadline());
  if (state_ == State::kInitAnswered) next = std::min(next, created_at_ + ParamsOr(conn_).half_open_timeout);
  if (state_ == State::kEstablished && rekeyed_) next = std::min(next, RekeyedExpiry());
  if (state_ == State::kEstablished && !rekeyed_) {
    if (!outstanding_ && conn_ && conn_->dpd_delay.count() > 0) next = std::min(next, DpdDue());
    next = std::min({next, ike_rekey_at_, redundant_delete_at_});
    for (const auto& c : children_) {
      if (!c.delete_started) next = std::min(next, c.expire_at);
      if (!c.rekey_started && !conn_->host_schedules_rekeys) next = std::min(next, c.rekey_at);
    }
  }
  return next;
}

// The one place a request joins the queue, so the one place that counts a full one: callers
// check their own preconditions (state, CHILD SA exists) and refuse without counting.
bool IkeSa::Enqueue(Pending p, TimePoint now) {
  if (pending_.size() >= kMaxQueuedRequests) {
    ++counters_->requests_queue_full;
    return false;
  }
  pending_.push_back(p);
  StartNext(now);
  return true;
}

bool IkeSa::CreateChild(TimePoint now) {
  if (state_ != State::kEstablished) return false;
  // remote_ts_dynamic and no virtual IP assigned to the peer: nothing to propose for it.
  if (PeerSelectors().empty()) return false;
  return Enqueue({RequestKind::kCreateChild}, now);
}

bool IkeSa::RekeyChild(std::uint32_t spi_in, TimePoint now) {
  if (state_ != State::kEstablished || FindChildByInbound(spi_in) == nullptr) return false;
  return Enqueue({RequestKind::kRekeyChild, spi_in}, now);
}

bool IkeSa::DeleteChild(std::uint32_t spi_in, TimePoint now) {
  if (state_ != State::kEstablished || FindChildByInbound(spi_in) == nullptr) return false;
  return Enqueue({RequestKind::kDeleteChild, spi_in}, now);
}

bool IkeSa::Delete(TimePoint now) {
  if (state_ != State::kEstablished) {
    // Not established: nothing to tell the peer that it would accept.
    Die("deleted locally before it was established");
    return true;
  }
  // A DELETE of the IKE SA goes ahead of anything queued (2.4: it ends all of it).
  delete_requested_ = true;
  pending_.clear();
  pending_.insert(pending_.begin(), {RequestKind::kDeleteIke});
  StartNext(now);
  return true;
}

void IkeSa::Replace(TimePoint now) {
  if (state_ == State::kEstablished && !outstanding_) {
    SendRequest(RequestKind::kDeleteIke, Exchange::kInformational,
                {Payload{PayloadType::kDelete, DeletePayload{ProtocolId::kIke, 0, {}}}}, now);
  }
  Die("replaced by a newer IKE SA of the same peer");
}

bool IkeSa::RekeyIke(TimePoint now) {
  if (state_ != State::kEstablished || rekeyed_) return false;
  return Enqueue({RequestKind::kRekeyIke}, now);
}

bool IkeSa::UpdateSaAddresses(const Address& local, TimePoint now) {
  if (!mobike_ || role_ != Role::kInitiator || state_ != State::kEstablished || rekeyed_) return false;
  const bool queued = std::any_of(pending_.begin(), pending_.end(),
                                  [](const Pending& p) { return p.kind == RequestKind::kMobikeUpdate; });
  if (!queued && pending_.size() >= kMaxQueuedRequests) {
    ++counters_->requests_queue_full;
    return false;
  }
  if (!(local == local_)) ++counters_->mobike_local_moves;
  local_ = local;
  // The update waits for nothing but the exchange in flight: queued requests go after it, from
  // the new address. One queued update is enough: it takes the address at the time it is sent.
  if (!queued) pending_.insert(pending_.begin(), Pending{RequestKind::kMobikeUpdate});
  StartNext(now);
  return true;
}

bool IkeSa::CheckLiveness(TimePoint now) {
  if (state_ != State::kEstablished) return false;
  return Enqueue({RequestKind::kLiveness}, now);
}

void IkeSa::StartNext(TimePoint now) {
  // Nothing starts while work of this SA runs on a worker (ResumeOffloaded calls this again).
  while (!outstanding_ && !offload_ && !pending_.empty() && state_ == State::kEstablished) {
    const Pending p = pending_.front();
    // A request with a DH (CREATE_CHILD_SA with PFS, an IKE rekey) waits, first in the queue,
    // for its key pair from a worker.
    if (OffloadKeyPair(p)) return;
    pending_.erase(pending_.begin());
    switch (p.kind) {
      case RequestKind::kCreateChild:
        SendChildRequest(RequestKind::kCreateChild, 0, now);
        break;
      case RequestKind::kRekeyChild:
        if (FindChildByInbound(p.child_spi) != nullptr)
          SendChildRequest(RequestKind::kRekeyChild, p.child_spi, now);
        break;
      case RequestKind::kDeleteChild:
        if (FindChildByInbound(p.child_spi) != nullptr) {
          DeletePayload d{ProtocolId::kEsp, 4, {ChildSpiBytes(p.child_spi)}};
          SendRequest(RequestKind::kDeleteChild, Exchange::kInformational,
                      {Payload{PayloadType::kDelete, d}}, now);
          pending_delete_spi_ = p.child_spi;
        }
        break;
      case RequestKind::kDeleteIke:
        SendRequest(RequestKind::kDeleteIke, Exchange::kInformational,
                    {Payload{PayloadType::kDelete, DeletePayload{ProtocolId::kIke, 0, {}}}}, now);
        SetState(State::kDeleting);
        break;
      case RequestKind::kLiveness:
        SendRequest(RequestKind::kLiveness, Exchange::kInformational, {}, now);
        break;
      case RequestKind::kMobikeUpdate: {
        std::vector<Payload> p{Notify(NotifyType::kUpdateSaAddresses)};
        for (auto& n : NatDetectionPayloads()) p.push_back(std::move(n));
        ++counters_->mobike_updates_sent;
        SendRequest(RequestKind::kMobikeUpdate, Exchange::kInformational, std::move(p), now);
        break;
      }
      case RequestKind::kMobikeCheck: {
        // RFC 4555 3.7: an INFORMATIONAL to the peer's new address carrying COOKIE2 (8 to 64
        // random octets) that the peer must echo. Retransmissions resend the same message.
        if (!esp_remote_) {
          rr_queued_ = false;  // the peer went back to where the CHILD SAs are
          break;
        }
        rr_cookie_.assign(kCookie2MinLen + crypto::RandomU32() % (kCookie2MaxLen - kCookie2MinLen + 1), 0);
        crypto::RandomBytes(rr_cookie_);
        rr_target_ = remote_;
        ++counters_->mobike_rr_checks;
        SendRequest(RequestKind::kMobikeCheck, Exchange::kInformational,
                    {Notify(NotifyType::kCookie2, rr_cookie_)}, now);
        break;
      }
      case RequestKind::kMobikeAddresses:
        // 4555 3.6: our address list changed (a reload); the whole new list replaces the old.
        if (mobike_ && conn_) {
          ++counters_->mobike_address_lists_sent;
          SendRequest(RequestKind::kMobikeAddresses, Exchange::kInformational, OwnAddressNotifies(*conn_), now);
        }
        break;
      case RequestKind::kRekeyIke:
        if (!rekeyed_) SendIkeRekey(now);
        break;
      default:
        break;
    }
  }
}

void IkeSa::SendRequest(RequestKind kind, Exchange ex, std::vector<Payload> payloads,
                        TimePoint now) {
  Message m;
  m.header = Header{spi_i_, spi_r_, PayloadType::kNone, kVersion, ex,
                    static_cast<std::uint8_t>(role_ == Role::kInitiator ? kFlagInitiator : 0),
                    ex == Exchange::kIkeSaInit ? 0 : next_request_id_, 0};
  m.payloads = std::move(payloads);
  Bytes bytes = Serialize(m, ex == Exchange::kIkeSaInit ? nullptr : &sk_out_);
  std::vector<Bytes> fragments;
  if (ex != Exchange::kIkeSaInit) {
    ++next_request_id_;
    fragments = FragmentIfLarge(m, bytes.size());
    if (!fragments.empty()) Bytes().swap(bytes);
  }
  outstanding_ = Outstanding{kind, m.header.message_id, ex, std::move(bytes), std::move(fragments),
                             0, now + ParamsOr(conn_).retransmit_timeout};
  Transmit(outstanding_->bytes, outstanding_->fragments);
}

std::vector<Bytes> IkeSa::FragmentIfLarge(const Message& m, std::size_t whole_len) {
  if (!fragmentation_ || !conn_) return {};
  // RFC 7383 2.5.1: fragment_size is the IP datagram; see kNonEspMarkerLen.
  const std::size_t below_ike =
      (remote_.family == 6 ? kIpv6HeaderLen : kIpv4HeaderLen) + kUdpHeaderLen + kNonEspMarkerLen;
  const std::size_t limit = conn_->fragment_size;
  if (limit <= below_ike || whole_len + below_ike <= limit) return {};
  std::vector<Bytes> fragments = SerializeFragments(m, sk_out_, limit - below_ike);
  if (!fragments.empty()) ++counters_->fragments.messages_fragmented;
  return fragments;
}

void IkeSa::Transmit(const Bytes& whole, const std::vector<Bytes>& fragments, bool response) {
  // 2.11: a response goes back to where its request came from, moved or not.
  const auto send = [&](const Bytes& d) {
    if (response && reply_to_ && !(*reply_to_ == remote_))
      host_->SendIkeTo(*this, d, *reply_to_);
    else
      host_->SendIke(*this, d);
  };
  if (fragments.empty()) {
    send(whole);
    return;
  }
  for (const Bytes& f : fragments) send(f);
  counters_->fragments.fragments_sent += fragments.size();
}

void IkeSa::SendResponse(const Header& req, std::vector<Payload> payloads, bool encrypted) {
  Message m;
  m.header = Header{spi_i_, spi_r_, PayloadType::kNone, kVersion, req.exchange,
                    static_cast<std::uint8_t>(kFlagResponse |
                                              (role_ == Role::kInitiator ? kFlagInitiator : 0)),
                    req.message_id, 0};
  m.payloads = std::move(payloads);
  last_response_ = Serialize(m, encrypted ? &sk_out_ : nullptr);
  last_response_fragments_.clear();
  if (encrypted) last_response_fragments_ = FragmentIfLarge(m, last_response_.size());
  if (!last_response_fragments_.empty()) Bytes().swap(last_response_);
  last_response_id_ = req.message_id;
  next_peer_request_id_ = req.message_id + 1;
  Transmit(last_response_, last_response_fragments_, true);
}

void IkeSa::SetState(State s) {
  if (state_ == s) return;
  state_ = s;
  if (s == State::kEstablished && conn_)
    ike_rekey_at_ = Jittered(established_at_, conn_->ike_rekey_time, conn_->rekey_jitter);
  if (s == State::kEstablished) {
    // The IKE_SA_INIT messages were needed for the AUTH payloads only; a gateway holding a
    // million IKE SAs should not keep ~600 bytes of each.
    Bytes().swap(init_request_);
    Bytes().swap(init_response_);
    // So were SK_pi and SK_pr (2.15), and SK_a* and SK_e* live on in sk_in_ and sk_out_; only
    // SK_d is derived from again (CHILD SAs, the IKE rekey).
    for (crypto::SecureBytes* k : {&keys_.sk_ai, &keys_.sk_ar, &keys_.sk_ei, &keys_.sk_er,
                                   &keys_.sk_pi, &keys_.sk_pr})
      *k = crypto::SecureBytes();  // wiped and freed (Clear() would keep the buffer)
  }
  host_->StateChanged(*this);
}

void IkeSa::Die(std::string why) {
  if (state_ == State::kDead) return;
  if (failure_.empty()) failure_ = std::move(why);
  if (child_neg_ && child_neg_->spi_in != 0) host_->ReleaseChildSpi(child_neg_->spi_in);
  child_neg_.reset();
  offload_.reset();  // a worker may still run its work; the result goes nowhere
  dh_ready_.reset();
  auth_ready_.reset();
  while (!children_.empty()) RemoveChildBySpi(children_.back().spi_in);
  outstanding_.reset();
  pending_.clear();
  reassembly_request_.reset();
  reassembly_response_.reset();
  SetState(State::kDead);
}

ChildSaInfo* IkeSa::FindChildByInbound(std::uint32_t spi) {
  for (auto& c : children_) {
    if (c.spi_in == spi) return &c;
  }
  return nullptr;
}

ChildSaInfo* IkeSa::FindChildByOutbound(std::uint32_t spi) {
  for (auto& c : children_) {
    if (c.spi_out == spi) return &c;
  }
  return nullptr;
}

void IkeSa::RemoveChildBySpi(std::uint32_t spi_in) {
  auto it = std::find_if(children_.begin(), children_.end(),
                         [&](const ChildSaInfo& c) { return c.spi_in == spi_in; });
  if (it == children_.end()) return;
  children_.erase(it);
  host_->RemoveChild(*this, spi_in);
}

}  // namespace spigot::ike
