#include "spigot/ike/ike_sa.h"

#include <algorithm>

#include "spigot/crypto/random.h"
#include "spigot/ike/traffic_selectors.h"
#include "spigot/wire/byte_reader.h"
#include "spigot/wire/byte_writer.h"

namespace spigot::ike {
namespace {

constexpr auto kHalfOpenTimeout = std::chrono::seconds(30);
constexpr auto kRetransmitBase = std::chrono::milliseconds(1000);
constexpr int kMaxCookieRetries = 3;

Bytes RandomNonce() {
  Bytes n(kNonceLen);
  crypto::RandomBytes(n);
  return n;
}

Payload Notify(NotifyType type, Bytes data = {}, ProtocolId proto = ProtocolId::kNone,
               Bytes spi = {}) {
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
    case NotifyType::kTsUnacceptable: return "TS_UNACCEPTABLE";
    case NotifyType::kTemporaryFailure: return "TEMPORARY_FAILURE";
    case NotifyType::kChildSaNotFound: return "CHILD_SA_NOT_FOUND";
    default: return "error notify";
  }
}

// SPIs and DH group numbers on the wire, through the one writer and reader (STYLE.md 3).
Bytes ChildSpiBytes(std::uint32_t spi) {
  Bytes b;
  wire::ByteWriter(b).WriteU32(spi);
  return b;
}

Bytes IkeSpiBytes(std::uint64_t spi) {
  Bytes b;
  wire::ByteWriter(b).WriteU64(spi);
  return b;
}

// The data of an INVALID_KE_PAYLOAD notify: the group the responder wants (3.10.1).
Bytes DhGroupBytes(std::uint16_t group) {
  Bytes b;
  wire::ByteWriter(b).WriteU16(group);
  return b;
}

// A CHILD SA's SPI (4 bytes); 0 if `b` is not 4 bytes long.
std::uint32_t SpiFromBytes(std::span<const std::uint8_t> b) {
  std::uint32_t spi = 0;
  if (b.size() != 4) return 0;
  wire::ByteReader(b).ReadU32(spi);
  return spi;
}

// An IKE SA's SPI (8 bytes); 0 if `b` is not 8 bytes long.
std::uint64_t IkeSpiFromBytes(std::span<const std::uint8_t> b) {
  std::uint64_t spi = 0;
  if (b.size() != 8) return 0;
  wire::ByteReader(b).ReadU64(spi);
  return spi;
}

// ESP proposals for IKE_AUTH carry no DH transform: no KE is exchanged there (1.2).
std::vector<Proposal> WithoutDh(std::vector<Proposal> ps) {
  for (auto& p : ps) {
    std::erase_if(p.transforms, [](const Transform& t) { return t.type == TransformType::kDh; });
  }
  return ps;
}

// A soft lifetime shortened by a random fraction of up to `jitter` (spreads rekeys).
TimePoint Jittered(TimePoint from, std::chrono::seconds life, double jitter) {
  if (life.count() <= 0) return TimePoint::max();
  const double f = 1.0 - jitter * crypto::RandomUnit();
  return from + std::chrono::duration_cast<TimePoint::duration>(life * f);
}

// 2.8.1: nonces compare as octet strings; a prefix is the lower.
Bytes LowerNonce(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  const bool a_lower = std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end());
  const auto& lo = a_lower ? a : b;
  return Bytes(lo.begin(), lo.end());
}

std::uint16_t DhOf(const Proposal& p) {
  for (const auto& t : p.transforms) {
    if (t.type == TransformType::kDh) return t.id;
  }
  return 0;
}

}  // namespace

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
      remote_(remote), spi_i_(spi_i), spi_r_(spi_r) {}

IkeSa::~IkeSa() {
  if (child_neg_ && child_neg_->spi_in != 0) host_->ReleaseChildSpi(child_neg_->spi_in);
}

// ---------------------------------------------------------------- plumbing

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
  }
  host_->StateChanged(*this);
}

void IkeSa::Die(std::string why) {
  if (state_ == State::kDead) return;
  if (failure_.empty()) failure_ = std::move(why);
  if (child_neg_ && child_neg_->spi_in != 0) host_->ReleaseChildSpi(child_neg_->spi_in);
  child_neg_.reset();
  while (!children_.empty()) RemoveChildBySpi(children_.back().spi_in);
  outstanding_.reset();
  pending_.clear();
  SetState(State::kDead);
}

void IkeSa::SendRequest(RequestKind kind, Exchange ex, std::vector<Payload> payloads,
                        TimePoint now) {
  Message m;
  m.header = Header{spi_i_, spi_r_, PayloadType::kNone, kVersion, ex,
                    static_cast<std::uint8_t>(role_ == Role::kInitiator ? kFlagInitiator : 0),
                    ex == Exchange::kIkeSaInit ? 0 : next_request_id_, 0};
  m.payloads = std::move(payloads);
  Bytes bytes = Serialize(m, ex == Exchange::kIkeSaInit ? nullptr : &sk_out_);
  if (ex != Exchange::kIkeSaInit) ++next_request_id_;
  outstanding_ = Outstanding{kind, m.header.message_id, ex, bytes, 0, now + kRetransmitBase};
  host_->SendIke(*this, bytes);
}

void IkeSa::SendResponse(const Header& req, std::vector<Payload> payloads, bool encrypted) {
  Message m;
  m.header = Header{spi_i_, spi_r_, PayloadType::kNone, kVersion, req.exchange,
                    static_cast<std::uint8_t>(kFlagResponse |
                                              (role_ == Role::kInitiator ? kFlagInitiator : 0)),
                    req.message_id, 0};
  m.payloads = std::move(payloads);
  last_response_ = Serialize(m, encrypted ? &sk_out_ : nullptr);
  last_response_id_ = req.message_id;
  next_peer_request_id_ = req.message_id + 1;
  host_->SendIke(*this, last_response_);
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
  pending_.clear();
  pending_.insert(pending_.begin(), {RequestKind::kDeleteIke});
  StartNext(now);
  return true;
}

bool IkeSa::RekeyIke(TimePoint now) {
  if (state_ != State::kEstablished || rekeyed_) return false;
  return Enqueue({RequestKind::kRekeyIke}, now);
}

bool IkeSa::CheckLiveness(TimePoint now) {
  if (state_ != State::kEstablished) return false;
  return Enqueue({RequestKind::kLiveness}, now);
}

void IkeSa::StartNext(TimePoint now) {
  while (!outstanding_ && !pending_.empty() && state_ == State::kEstablished) {
    const Pending p = pending_.front();
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
          outstanding_->deadline = now + kRetransmitBase;
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
      case RequestKind::kRekeyIke:
        if (!rekeyed_) SendIkeRekey(now);
        break;
      default:
        break;
    }
  }
}

void IkeSa::Tick(TimePoint now) {
  if (state_ == State::kDead) return;
  if (outstanding_ && now >= outstanding_->deadline) {
    if (outstanding_->retransmits >= kMaxRetransmits) {
      Die("peer unreachable: no answer after " + std::to_string(kMaxRetransmits) +
          " retransmits");
      return;
    }
    ++outstanding_->retransmits;
    ++counters_->retransmits;
    // 2.4: exponential back-off, with +-10% jitter so that many SAs do not resend in step.
    const auto base = kRetransmitBase * (1 << outstanding_->retransmits);
    const double jitter = 0.9 + 0.2 * crypto::RandomUnit();
    outstanding_->deadline =
        now + std::chrono::duration_cast<TimePoint::duration>(base * jitter);
    host_->SendIke(*this, outstanding_->bytes);
  }
  if (state_ == State::kInitAnswered && now - created_at_ >= kHalfOpenTimeout) {
    Die("half-open: no IKE_AUTH within 30 s");
    return;
  }
  if (state_ != State::kEstablished || rekeyed_) return;
  std::vector<std::uint32_t> expired, due;
  for (auto& c : children_) {
    if (now >= c.expire_at) expired.push_back(c.spi_in);
    else if (now >= c.rekey_at && !c.rekey_started && !conn_->host_schedules_rekeys) {
      c.rekey_started = true;
      due.push_back(c.spi_in);
    }
  }
  for (std::uint32_t spi : expired) {
    // Hard lifetime: the SA must not carry traffic any more, answer or not.
    DeleteChild(spi, now);
  }
  for (std::uint32_t spi : due) RekeyChild(spi, now);
  if (now >= ike_rekey_at_) {
    ike_rekey_at_ = TimePoint::max();
    RekeyIke(now);
  }
  if (!outstanding_ && pending_.empty() && conn_ && conn_->dpd_delay.count() > 0 &&
      now - last_heard_ >= conn_->dpd_delay) {
    CheckLiveness(now);
  }
}

TimePoint IkeSa::NextDeadline() const {
  TimePoint next = TimePoint::max();
  if (outstanding_) next = std::min(next, outstanding_->deadline);
  if (state_ == State::kInitAnswered) next = std::min(next, created_at_ + kHalfOpenTimeout);
  if (state_ == State::kEstablished && !rekeyed_) {
    if (!outstanding_ && conn_ && conn_->dpd_delay.count() > 0)
      next = std::min(next, last_heard_ + conn_->dpd_delay);
    next = std::min(next, ike_rekey_at_);
    for (const auto& c : children_) {
      next = std::min(next, c.expire_at);
      if (!c.rekey_started && !conn_->host_schedules_rekeys) next = std::min(next, c.rekey_at);
    }
  }
  return next;
}

// ---------------------------------------------------------------- receive

void IkeSa::Receive(std::span<const std::uint8_t> datagram, TimePoint now) {
  if (state_ == State::kDead) return;
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

  if (h.is_response()) {
    if (!outstanding_ || h.message_id != outstanding_->message_id ||
        h.exchange != outstanding_->exchange) {
      ++counters_->invalid_messages;
      return;
    }
  } else {
    if (last_response_id_ && h.message_id == *last_response_id_) {
      if (h.exchange == Exchange::kIkeSaInit && state_ == State::kInitAnswered) NoteInitRetry(msg, datagram);
      host_->SendIke(*this, last_response_);  // 2.1: a retransmitted request
      return;
    }
    if (h.message_id != next_peer_request_id_) {
      ++counters_->invalid_messages;
      return;
    }
  }

  if (msg.encrypted) {
    if (!sk_in_.cipher) {
      ++counters_->invalid_messages;
      return;
    }
    res = OpenSk(datagram, res, sk_in_, msg);
    if (res.error != ParseError::kOk) {
      ++counters_->invalid_messages;
      if (res.error == ParseError::kIntegrityFailed) return;  // 2.21.2: drop silently
      if (!h.is_response()) {
        SendResponse(h, {res.error == ParseError::kUnsupportedCritical
                             ? Notify(NotifyType::kUnsupportedCriticalPayload, {res.unsupported_type})
                             : Notify(NotifyType::kInvalidSyntax)},
                     true);
      }
      return;
    }
  } else if (h.exchange != Exchange::kIkeSaInit) {
    ++counters_->invalid_messages;  // only IKE_SA_INIT travels in the clear
    return;
  }
  last_heard_ = now;

  if (h.is_response()) {
    const RequestKind kind = outstanding_->kind;
    switch (kind) {
      case RequestKind::kInit: OnInitResponse(msg, datagram, now); break;
      case RequestKind::kAuth: OnAuthResponse(msg, now); break;
      case RequestKind::kCreateChild:
      case RequestKind::kRekeyChild: OnChildResponse(msg, now); break;
      case RequestKind::kRekeyIke: OnIkeRekeyResponse(msg, now); break;
      default: OnInformationalResponse(msg, now); break;
    }
    if (state_ != State::kDead && (!outstanding_ || outstanding_->kind == kind) &&
        kind != RequestKind::kInit) {
      outstanding_.reset();
    }
    StartNext(now);
    return;
  }
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
}

// ---------------------------------------------------------------- IKE_SA_INIT

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
  nat_remote_ = src->data != NatDetectionHash(spi_i_, spi_r_, remote_.bytes(), remote_.port);
  nat_local_ = dst->data != NatDetectionHash(spi_i_, spi_r_, local_.bytes(), local_.port);
}

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
  // Keep the retransmission state across cookie and INVALID_KE retries: they are new requests
  // with message ID 0 (2.6, 1.2).
  SendRequest(RequestKind::kInit, Exchange::kIkeSaInit, std::move(p), now);
  init_request_ = outstanding_->bytes;
  next_request_id_ = 1;
  SetState(State::kInitSent);
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
  if (!DeriveKeys(ke->data)) return Die("invalid KE payload from peer");
  outstanding_.reset();
  SendAuth(now);
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
    return Die("no acceptable IKE proposal from peer");
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
  SendResponse(msg.header, std::move(p), false);
  init_response_ = last_response_;
  SetState(State::kInitAnswered);
}

// ---------------------------------------------------------------- IKE_AUTH

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
  if (!FinishChildAsInitiator(msg, neg, ni_, nr_, {})) {
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
  established_at_ = now;
  last_heard_ = now;
  SetState(State::kEstablished);
  NegotiateChildAsResponder(msg, ni_, nr_, {}, 0, p, false, now);
  SendResponse(msg.header, std::move(p), true);
}

// ---------------------------------------------------------------- CHILD SAs

bool IkeSa::NegotiateChildAsResponder(const Message& req, std::span<const std::uint8_t> ni,
                                      std::span<const std::uint8_t> nr,
                                      const crypto::SecureBytes& /*unused*/,
                                      std::uint32_t rekey_of, std::vector<Payload>& out,
                                      bool create_child, TimePoint now) {
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
  if (!algs || chosen->spi.size() != 4) return refuse(NotifyType::kNoProposalChosen);
  const auto narrowed_i = Narrow(tsi->selectors, conn_->remote_ts);
  const auto narrowed_r = Narrow(tsr->selectors, conn_->local_ts);
  if (narrowed_i.empty() || narrowed_r.empty()) return refuse(NotifyType::kTsUnacceptable);
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
    dh = crypto::DhKeyPair::Generate(algs->dh_group);
    if (!dh || !dh->ComputeShared(ke->data, shared)) return refuse(NotifyType::kInvalidSyntax);
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
                                   std::span<const std::uint8_t> nr,
                                   const crypto::SecureBytes& /*unused*/) {
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
  const auto& local = old != nullptr ? old->local_ts : conn_->local_ts;
  const auto& remote = old != nullptr ? old->remote_ts : conn_->remote_ts;
  if (!Contains(local, tsi->selectors) || !Contains(remote, tsr->selectors)) {
    failure_ = "peer widened the traffic selectors";
    return false;
  }
  crypto::SecureBytes shared;
  if (algs->dh_group != 0) {
    const auto* ke = resp.Find<KePayload>(PayloadType::kKe);
    if (!neg.dh || ke == nullptr || ke->group != algs->dh_group ||
        !neg.dh->ComputeShared(ke->data, shared)) {
      failure_ = "bad KE in CHILD SA response";
      return false;
    }
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
}

void IkeSa::ResolveRekeyCollision(std::uint32_t old_spi, TimePoint now) {
  const ChildSaInfo* ours = nullptr;
  const ChildSaInfo* theirs = nullptr;
  for (const auto& c : children_) {
    if (c.rekey_of != old_spi) continue;
    (c.we_initiated ? ours : theirs) = &c;
  }
  if (ours == nullptr || theirs == nullptr) return;
  const bool ours_lowest = std::lexicographical_compare(
      ours->lowest_nonce.begin(), ours->lowest_nonce.end(), theirs->lowest_nonce.begin(),
      theirs->lowest_nonce.end());
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

void IkeSa::RemoveChildBySpi(std::uint32_t spi_in) {
  auto it = std::find_if(children_.begin(), children_.end(),
                         [&](const ChildSaInfo& c) { return c.spi_in == spi_in; });
  if (it == children_.end()) return;
  children_.erase(it);
  host_->RemoveChild(*this, spi_in);
}

// A rekey of ours failed (refused by the peer — TEMPORARY_FAILURE while it is busy or out of
// SPIs, NO_PROPOSAL_CHOSEN — or by our own SPI pool): try again after 2-5 s (random, so SAs
// refused together do not come back together), as long as that is before the hard lifetime;
// otherwise the hard lifetime deletes the SA as it would have anyway.
void IkeSa::RetryRekeyLater(std::uint32_t spi_in, TimePoint now) {
  ChildSaInfo* c = FindChildByInbound(spi_in);
  if (c == nullptr) return;
  const auto delay = std::chrono::milliseconds(2000 + crypto::RandomU32() % 3000);
  const TimePoint at = now + delay;
  if (at >= c->expire_at) return;
  ++counters_->rekey_retries;
  c->rekey_started = false;
  c->rekey_at = at;
  if (conn_->host_schedules_rekeys) host_->RetryChildRekey(*this, spi_in, at);
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
    neg.dh = crypto::DhKeyPair::Generate(g);
    const auto pub = neg.dh->public_value();
    p.push_back({PayloadType::kKe, KePayload{g, Bytes(pub.begin(), pub.end())}});
  }
  p.push_back({PayloadType::kTsi, TsPayload{old != nullptr ? old->local_ts : conn_->local_ts}});
  p.push_back({PayloadType::kTsr, TsPayload{old != nullptr ? old->remote_ts : conn_->remote_ts}});
  child_neg_ = std::move(neg);
  SendRequest(kind, Exchange::kCreateChildSa, std::move(p), now);
}

void IkeSa::OnChildResponse(const Message& msg, TimePoint now) {
  if (!child_neg_) return;
  ChildNegotiation neg = std::move(*child_neg_);
  child_neg_.reset();
  const auto* nr = msg.Find<NoncePayload>(PayloadType::kNonce);
  if (const auto* err = msg.FirstError(); err != nullptr || nr == nullptr) {
    host_->ReleaseChildSpi(neg.spi_in);
    ++counters_->child_failures;
    failure_ = err != nullptr ? std::string("CHILD SA refused by peer: ") + NotifyName(err->type)
                              : "malformed CREATE_CHILD_SA response";
    if (neg.rekey_of != 0) RetryRekeyLater(neg.rekey_of, now);
    return;
  }
  const std::uint32_t old = neg.rekey_of;
  if (!FinishChildAsInitiator(msg, neg, neg.nonce, nr->data, {})) {
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
  if (!sa->proposals.empty() && sa->proposals[0].protocol == ProtocolId::kIke)
    return OnIkeRekeyRequest(msg, now);
  std::uint32_t rekey_of = 0;
  if (const auto* r = msg.FindNotify(NotifyType::kRekeySa)) {
    const ChildSaInfo* old = FindChildByOutbound(SpiFromBytes(r->spi));
    if (old == nullptr) {
      return SendResponse(msg.header, {Notify(NotifyType::kChildSaNotFound, {}, ProtocolId::kEsp, r->spi)}, true);
    }
    rekey_of = old->spi_in;
  }
  const Bytes nr = RandomNonce();
  std::vector<Payload> out;
  NegotiateChildAsResponder(msg, ni->data, nr, {}, rekey_of, out, true, now);
  SendResponse(msg.header, std::move(out), true);
}

// ---------------------------------------------------------------- IKE SA rekey (2.18)

void IkeSa::SendIkeRekey(TimePoint now) {
  rekey_spi_ = host_->NewIkeSpi();
  std::vector<Proposal> proposals = conn_->ike_proposals;
  const Bytes spi = IkeSpiBytes(rekey_spi_);
  for (auto& p : proposals) p.spi = spi;
  ChildNegotiation neg{0, 0, RandomNonce(), crypto::DhKeyPair::Generate(PreferredDhGroup(proposals)),
                       proposals};
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
  ChildNegotiation neg = std::move(*child_neg_);
  child_neg_.reset();
  const auto* sa = msg.Find<SaPayload>(PayloadType::kSa);
  const auto* nr = msg.Find<NoncePayload>(PayloadType::kNonce);
  const auto* ke = msg.Find<KePayload>(PayloadType::kKe);
  if (const auto* err = msg.FirstError(); err != nullptr || sa == nullptr || nr == nullptr ||
                                          ke == nullptr || sa->proposals.size() != 1) {
    failure_ = err != nullptr ? std::string("IKE rekey refused by peer: ") + NotifyName(err->type)
                              : "malformed IKE rekey response";
    return;
  }
  const Proposal& chosen = sa->proposals[0];
  const auto algs = IkeAlgorithmsOf(chosen);
  crypto::SecureBytes shared;
  if (!algs || chosen.spi.size() != 8 || !AcceptableChoice(conn_->ike_proposals, chosen) ||
      ke->group != algs->dh_group || neg.dh->group() != ke->group ||
      !neg.dh->ComputeShared(ke->data, shared)) {
    failure_ = "bad IKE rekey response";
    return;
  }
  const std::uint64_t peer_spi = IkeSpiFromBytes(chosen.spi);
  // The rekey's initiator is the initiator of the new IKE SA (2.18).
  HandOver(Role::kInitiator, rekey_spi_, peer_spi, *algs, neg.nonce, nr->data, shared, now);
  // Then the old IKE SA goes: its DELETE is the next request here.
  outstanding_.reset();
  pending_.clear();
  pending_.insert(pending_.begin(), {RequestKind::kDeleteIke});
}

void IkeSa::OnIkeRekeyRequest(const Message& msg, TimePoint now) {
  const auto* sa = msg.Find<SaPayload>(PayloadType::kSa);
  const auto* ni = msg.Find<NoncePayload>(PayloadType::kNonce);
  const auto* ke = msg.Find<KePayload>(PayloadType::kKe);
  if (rekeyed_ || (outstanding_ && outstanding_->kind == RequestKind::kRekeyIke)) {
    // 2.8.1/2.25: we are already rekeying; simplest correct answer is to let the peer retry.
    return SendResponse(msg.header, {Notify(NotifyType::kTemporaryFailure)}, true);
  }
  const auto chosen = sa != nullptr ? SelectProposal(conn_->ike_proposals, sa->proposals) : std::nullopt;
  const auto algs = chosen ? IkeAlgorithmsOf(*chosen) : std::nullopt;
  if (!algs || chosen->spi.size() != 8 || ni == nullptr) {
    return SendResponse(msg.header, {Notify(NotifyType::kNoProposalChosen)}, true);
  }
  if (ke == nullptr || ke->group != algs->dh_group) {
    return SendResponse(msg.header,
                        {Notify(NotifyType::kInvalidKePayload, DhGroupBytes(algs->dh_group))}, true);
  }
  auto dh = crypto::DhKeyPair::Generate(algs->dh_group);
  crypto::SecureBytes shared;
  if (!dh || !dh->ComputeShared(ke->data, shared))
    return SendResponse(msg.header, {Notify(NotifyType::kInvalidSyntax)}, true);
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
  HandOver(Role::kResponder, peer_spi, ours, *algs, ni->data, nr, shared, now);
}

void IkeSa::HandOver(Role role, std::uint64_t spi_i, std::uint64_t spi_r, const IkeAlgorithms& algs,
                     std::span<const std::uint8_t> ni, std::span<const std::uint8_t> nr,
                     const crypto::SecureBytes& shared, TimePoint now) {
  auto next = std::make_unique<IkeSa>(*host_, *counters_, role, conn_, local_, remote_, spi_i, spi_r);
  next->algs_ = algs;
  next->ni_.assign(ni.begin(), ni.end());
  next->nr_.assign(nr.begin(), nr.end());
  if (!DeriveIkeSaKeys(algs, ni, nr, shared, spi_i, spi_r, next->keys_, &keys_.sk_d, algs_->prf)) {
    failure_ = "IKE rekey key derivation failed";
    return;
  }
  next->sk_out_ = MakeSkKeys(algs, next->keys_, role == Role::kInitiator, true);
  next->sk_in_ = MakeSkKeys(algs, next->keys_, role == Role::kInitiator, false);
  next->children_ = std::move(children_);
  children_.clear();
  next->nat_local_ = nat_local_;
  next->nat_remote_ = nat_remote_;
  next->created_at_ = now;
  next->established_at_ = now;
  next->last_heard_ = now;
  next->state_ = State::kEstablished;
  next->ike_rekey_at_ = Jittered(now, conn_->ike_rekey_time, conn_->rekey_jitter);
  // CHILD SA work that waited behind the IKE rekey goes on in the new IKE SA, which now owns
  // the CHILD SAs (a queued CHILD rekey or DELETE must not vanish with the old one).
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->kind == RequestKind::kCreateChild || it->kind == RequestKind::kRekeyChild ||
        it->kind == RequestKind::kDeleteChild) {
      next->pending_.push_back(*it);
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
  rekeyed_ = true;
  IkeSa* const adopted = next.get();
  host_->AdoptIkeSa(*this, std::move(next));
  adopted->StartNext(now);  // once the host knows it (it sends through the host)
}

// ---------------------------------------------------------------- INFORMATIONAL

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
  SendResponse(msg.header, std::move(out), true);
  if (delete_ike) Die(rekeyed_ ? "rekeyed" : "deleted by peer");
  (void)now;
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
  (void)msg;
  (void)now;
}

}  // namespace spigot::ike
