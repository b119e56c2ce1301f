// libFuzzer target: an established IKE SA, past the first message. The fuzzer plays the SA's
// peer and holds the keys (as QUICHE's quic_framer_process_data_packet_fuzzer holds a
// connection's): the harness runs IKE_SA_INIT with a real IkeSa — as initiator against a
// responder IkeSa, or as responder to an initiator IkeSa — with a fixed DH key and nonce,
// derives SK_* itself (RFC 7296 2.14), and from then on seals whatever payload chain the input
// carries into IKE_AUTH, CREATE_CHILD_SA and INFORMATIONAL requests with the message IDs the SA
// expects, and into responses to the requests the SA sends (its IKE_AUTH too, when it is the
// initiator). So the fuzzer reaches the payload handlers behind OpenSk(): AUTH, SA/TS
// narrowing, CP, CHILD and IKE rekeys, DELETE, notifies, and the SA's own requests and
// retransmissions.
//
// In the peer's IKE_AUTH (request as initiator, response as responder) the harness replaces the
// data of a shared-key AUTH payload with the right PSK MAC over the ID payload the chain
// carries (2.15), so mutated chains still authenticate.
//
// Properties checked, beyond "no crash, no leak, no UB": every protected message the SA sends
// opens under the initiator's keys and its payload chain parses; every response it sends
// carries the message ID of a request we sent.
//
// Input: byte 0 selects the SA's role and connection (bit 2: the SA is the initiator, else the
// responder; bit 0: road warrior — a responder with remote_ts dynamic and an address pool, an
// initiator asking for an address; bit 1: IKE fragmentation announced), then records
// [op][len:2][data:len]:
//   op % 5 == 0  request:  data[0] exchange (0 IKE_AUTH, 1 CREATE_CHILD_SA, 2 INFORMATIONAL,
//                          else the raw value), data[1] message ID (0: the next expected, 1:
//                          the last one again, n: n - 1 ahead), data[2] first payload type,
//                          then the payload chain (padding and pad length added).
//                1 response to the SA's last request: data[0] first payload type, then the chain.
//                2 an action of the SA's own: data[0] % 6 = CreateChild, RekeyChild, DeleteChild,
//                  RekeyIke, Delete, CheckLiveness.
//                3 time passes: data[0] | data[1] << 8 tenths of a second, then Tick.
//                4 our last datagram again, as sent (a retransmission or a replay).
#include <cstdio>
#include <cstdlib>
#include <optional>

#include "fuzz/ike_fuzz_keys.h"
#include "spigot/crypto/dh.h"
#include "spigot/ike/keys.h"
#include "spigot/ike/traffic_selectors.h"
#include "spigot/test_tools/ike_loopback.h"

using namespace spigot;
using namespace spigot::ike;

namespace {

void Require(bool cond, const char* what) {
  if (!cond) {
    std::fprintf(stderr, "established-SA property broken: %s\n", what);
    std::abort();
  }
}

// The responder's host: LoopbackHost's SPIs, children and adoptions, with an unbounded outbox
// the harness drains after every step (a fragmented response may be dozens of datagrams).
class SinkHost final : public LoopbackHost {
 public:
  void SendIke(IkeSa&, const Bytes& datagram) override { outbox.push_back(datagram); }
  std::vector<Bytes> outbox;
};

class Reader {
 public:
  explicit Reader(std::span<const std::uint8_t> in) : in_(in) {}
  bool empty() const { return pos_ >= in_.size(); }
  std::uint8_t Byte() { return empty() ? 0 : in_[pos_++]; }
  std::span<const std::uint8_t> Take(std::size_t n) {
    n = std::min(n, in_.size() - pos_);
    auto s = in_.subspan(pos_, n);
    pos_ += n;
    return s;
  }

 private:
  std::span<const std::uint8_t> in_;
  std::size_t pos_ = 0;
};

constexpr std::uint64_t kSpiI = 0x1A1A1A1A1A1A1A1Aull;
constexpr std::uint64_t kSpiR = 0x5151515151515151ull;
const TimePoint kStart = TimePoint{} + std::chrono::hours(1);

// The peer of the IkeSa under test, holding the IKE SA's keys.
class Peer {
 public:
  explicit Peer(std::uint8_t variant)
      : sa_initiates_((variant & 4) != 0),
        conn_(TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16")),
        our_flag_(sa_initiates_ ? 0 : kFlagInitiator),
        our_spi_(sa_initiates_ ? kSpiI : kSpiR),
        next_id_(sa_initiates_ ? 0 : 1),
        fragmentation_((variant & 2) != 0) {
    auto c = TestConnection(sa_initiates_, "aes128gcm16-prfsha256-x25519,aes256-sha256-x25519",
                            "aes128gcm16,aes256-sha256,chacha20poly1305-x25519");
    c->child_rekey_time = std::chrono::seconds(600);
    c->ike_rekey_time = std::chrono::seconds(3600);
    if ((variant & 1) && sa_initiates_) {
      c->vips = {4, 6};
    } else if (variant & 1) {
      c->remote_ts_dynamic = true;
      host_.serves_vips = true;
      host_.vip_pool = {*SelectorFromCidr("198.18.0.7/32"), *SelectorFromCidr("2001:db8::7/128")};
      host_.vip_dns4 = {{203, 0, 113, 53}};
      host_.vip_subnets = {*SelectorFromCidr("203.0.113.0/24")};
    }
    c->fragmentation = fragmentation_;
    host_.current = &sa_;
    host_.connections.push_back(c);
    Address local, remote;
    local.ip[0] = 192, local.ip[2] = 2, local.ip[3] = 2, local.port = 500;
    remote.ip[0] = 192, remote.ip[2] = 2, remote.ip[3] = 1, remote.port = 500;
    sa_ = std::make_unique<IkeSa>(host_, counters_, sa_initiates_ ? IkeSa::Role::kInitiator : IkeSa::Role::kResponder,
                                  c, local, remote, kSpiI, sa_initiates_ ? 0 : kSpiR);
  }

  // IKE_SA_INIT with a fixed key and nonce; false if the SA did not take it.
  bool Init() {
    static const std::array<std::uint8_t, 32> kPrivate = {
        0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2, 0x66, 0x45,
        0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5, 0x1d, 0xb9, 0x2c, 0x2a};
    auto dh = crypto::DhKeyPair::FromPrivateKey(crypto::kDhGroupCurve25519, kPrivate);
    if (!dh) return false;
    if (sa_initiates_) return Respond(*dh);
    Message m;
    m.header = Header{kSpiI, 0, PayloadType::kNone, kVersion, Exchange::kIkeSaInit, kFlagInitiator, 0, 0};
    const auto pub = dh->public_value();
    m.payloads = {{PayloadType::kSa, SaPayload{conn_->ike_proposals}},
                  {PayloadType::kKe, KePayload{dh->group(), Bytes(pub.begin(), pub.end())}},
                  {PayloadType::kNonce, NoncePayload{ni_}}};
    if (fragmentation_)
      m.payloads.push_back({PayloadType::kNotify, NotifyPayload{ProtocolId::kNone, {}, NotifyType::kIkev2FragmentationSupported, {}}});
    init_request_ = Serialize(m, nullptr);
    sa_->Receive(init_request_, now_);
    if (host_.outbox.size() != 1) return false;
    Message r;
    if (ParseMessage(host_.outbox.front(), r).error != ParseError::kOk) return false;
    host_.outbox.clear();
    const auto* sa = r.Find<SaPayload>(PayloadType::kSa);
    const auto* ke = r.Find<KePayload>(PayloadType::kKe);
    const auto* nr = r.Find<NoncePayload>(PayloadType::kNonce);
    if (sa == nullptr || ke == nullptr || nr == nullptr || sa->proposals.size() != 1) return false;
    algs_ = IkeAlgorithmsOf(sa->proposals[0]);
    crypto::SecureBytes shared;
    nr_ = nr->data;
    if (!algs_ || !dh->ComputeShared(ke->data, shared) ||
        !DeriveIkeSaKeys(*algs_, ni_, nr_, shared, kSpiI, kSpiR, keys_))
      return false;
    tx_ = MakeSkKeys(*algs_, keys_, true, true);
    rx_ = MakeSkKeys(*algs_, keys_, true, false);
    return tx_.cipher && rx_.cipher;
  }

  // The SA initiates: our IKE_SA_INIT response takes its (single) proposal. Afterwards its
  // IKE_AUTH request waits for op 1.
  bool Respond(crypto::DhKeyPair& dh) {
    sa_->Initiate(now_);
    if (host_.outbox.size() != 1) return false;
    init_request_ = host_.outbox.front();
    host_.outbox.clear();
    Message req;
    if (ParseMessage(init_request_, req).error != ParseError::kOk) return false;
    const auto* sa = req.Find<SaPayload>(PayloadType::kSa);
    const auto* ke = req.Find<KePayload>(PayloadType::kKe);
    const auto* ni = req.Find<NoncePayload>(PayloadType::kNonce);
    if (sa == nullptr || ke == nullptr || ni == nullptr || sa->proposals.empty()) return false;
    algs_ = IkeAlgorithmsOf(sa->proposals[0]);
    ni_ = ni->data;
    nr_ = Bytes(kNonceLen, 0x52);
    crypto::SecureBytes shared;
    if (!algs_ || !dh.ComputeShared(ke->data, shared) ||
        !DeriveIkeSaKeys(*algs_, ni_, nr_, shared, kSpiI, kSpiR, keys_))
      return false;
    Message m;
    m.header = Header{kSpiI, kSpiR, PayloadType::kNone, kVersion, Exchange::kIkeSaInit, kFlagResponse, 0, 0};
    const auto pub = dh.public_value();
    m.payloads = {{PayloadType::kSa, SaPayload{{sa->proposals[0]}}},
                  {PayloadType::kKe, KePayload{dh.group(), Bytes(pub.begin(), pub.end())}},
                  {PayloadType::kNonce, NoncePayload{nr_}}};
    if (fragmentation_)
      m.payloads.push_back({PayloadType::kNotify, NotifyPayload{ProtocolId::kNone, {}, NotifyType::kIkev2FragmentationSupported, {}}});
    init_response_ = Serialize(m, nullptr);
    tx_ = MakeSkKeys(*algs_, keys_, false, true);
    rx_ = MakeSkKeys(*algs_, keys_, false, false);
    if (!tx_.cipher || !rx_.cipher) return false;
    requests_.push_back(0);  // the SA's IKE_SA_INIT, answered here
    sa_->Receive(init_response_, now_);
    Drain();
    return sa_->state() == IkeSa::State::kAuthSent;
  }

  void Run(Reader& in) {
    while (!in.empty()) {
      const std::uint8_t op = in.Byte();
      const std::size_t len = std::size_t{in.Byte()} << 8 | in.Byte();
      Reader data(in.Take(len));
      IkeSa* sa = host_.Find(our_spi_);  // the SA whose keys we hold (even once rekeyed)
      if (sa == nullptr) return;
      switch (op % 5) {
        case 0: Request(*sa, data); break;
        case 1: Response(*sa, data); break;
        case 2: Action(*sa, data.Byte()); break;
        case 3: {
          now_ += std::chrono::milliseconds(100) * (data.Byte() | data.Byte() << 8);
          TickAll();
          break;
        }
        case 4:
          if (!last_sent_.empty()) Deliver(*sa, last_sent_);
          break;
      }
      Drain();
      if (trace_) {
        IkeSa* t = host_.Find(our_spi_);
        std::fprintf(stderr, "op %u: %s, %zu CHILD SAs, next ID %u, invalid %llu, auth failures %llu, %s\n",
                     op % 5, t ? ToString(t->state()) : "gone", t ? t->children().size() : 0, next_id_,
                     static_cast<unsigned long long>(counters_.invalid_messages),
                     static_cast<unsigned long long>(counters_.auth_failures), t ? t->failure().c_str() : "");
      }
    }
    // Every timer runs out: retransmissions give up, lifetimes expire, half-open SAs go.
    for (int i = 0; i < 8; ++i) {
      now_ += std::chrono::seconds(900);
      TickAll();
      Drain();
    }
  }

 private:
  void Request(IkeSa& sa, Reader& d) {
    const std::uint8_t ex = d.Byte();
    const std::uint8_t id = d.Byte();
    const std::uint8_t first = d.Byte();
    const auto chain = d.Take(SIZE_MAX);
    Header h{kSpiI, kSpiR, PayloadType::kSk, kVersion, Exchange::kIkeAuth, our_flag_, 0, 0};
    h.exchange = ex == 0   ? Exchange::kIkeAuth
                 : ex == 1 ? Exchange::kCreateChildSa
                 : ex == 2 ? Exchange::kInformational
                           : static_cast<Exchange>(ex);
    h.message_id = id == 0 ? next_id_ : id == 1 ? next_id_ - 1 : next_id_ + (id - 1);
    requests_.push_back(h.message_id);
    Deliver(sa, Seal(h, first, chain));
  }

  void Response(IkeSa& sa, Reader& d) {
    const std::uint8_t first = d.Byte();
    Header h{kSpiI, kSpiR, PayloadType::kSk, kVersion, Exchange::kInformational,
             static_cast<std::uint8_t>(our_flag_ | kFlagResponse), 0, 0};
    if (their_request_) {
      h.exchange = their_request_->exchange;
      h.message_id = their_request_->message_id;
    }
    Deliver(sa, Seal(h, first, d.Take(SIZE_MAX)));
  }

  void Action(IkeSa& sa, std::uint8_t what) {
    const std::uint32_t child = sa.children().empty() ? 0 : sa.children().front().spi_in;
    switch (what % 6) {
      case 0: sa.CreateChild(now_); break;
      case 1: sa.RekeyChild(child, now_); break;
      case 2: sa.DeleteChild(child, now_); break;
      case 3: sa.RekeyIke(now_); break;
      case 4: sa.Delete(now_); break;
      case 5: sa.CheckLiveness(now_); break;
    }
  }

  // The chain as the payloads of a message with header `h`. Our IKE_AUTH (request as
  // initiator, response as responder) whose chain parses gets its shared-key AUTH computed over
  // its ID payload (2.15); anything else is sealed as it is.
  Bytes Seal(const Header& h, std::uint8_t first, std::span<const std::uint8_t> chain) {
    if (h.exchange == Exchange::kIkeAuth && h.is_response() == sa_initiates_) {
      Message m;
      m.header = h;
      if (ParseInner(chain, static_cast<PayloadType>(first), m).error == ParseError::kOk) {
        const IdPayload* id = m.Find<IdPayload>(sa_initiates_ ? PayloadType::kIdr : PayloadType::kIdi);
        for (auto& p : m.payloads) {
          auto* auth = std::get_if<AuthPayload>(&p.body);
          if (id == nullptr || auth == nullptr || auth->method != kAuthSharedKey) continue;
          const auto mac = sa_initiates_
                               ? PskAuth(algs_->prf, conn_->psk, init_response_, ni_, keys_.sk_pr, id->Body())
                               : PskAuth(algs_->prf, conn_->psk, init_request_, nr_, keys_.sk_pi, id->Body());
          auth->data.assign(mac.span().begin(), mac.span().end());
        }
        Bytes out = Serialize(m, &tx_);
        if (!out.empty()) return out;
      }
    }
    Bytes plain(chain.begin(), chain.end());
    plain.push_back(0);  // pad length
    return fuzz::IkeFuzzSealAs(tx_, h, first, std::move(plain));
  }

  void Deliver(IkeSa& sa, const Bytes& datagram) {
    if (datagram.empty()) return;
    last_sent_ = datagram;
    sa.Receive(datagram, now_);
  }

  void TickAll() {
    if (sa_) sa_->Tick(now_);
    for (auto& r : host_.retired) r->Tick(now_);
  }

  // What the SAs sent: each protected message of the SA we hold keys for must open and parse;
  // responses must answer one of our requests; its requests are what op 1 answers.
  void Drain() {
    for (const Bytes& d : host_.outbox) {
      Message m;
      const ParseResult loc = ParseMessage(d, m);
      Require(loc.error == ParseError::kOk, "a message we sent does not parse");
      if (m.header.spi_i != kSpiI || m.header.spi_r != kSpiR) continue;  // a successor's
      if (!m.encrypted) continue;
      if (loc.fragment) {
        Bytes content;
        Require(OpenSkf(d, loc, rx_, content).error == ParseError::kOk, "our fragment does not open");
      } else {
        Require(OpenSk(d, loc, rx_, m).error == ParseError::kOk, "our SK message does not open");
      }
      if (m.header.is_response()) {
        Require(std::find(requests_.begin(), requests_.end(), m.header.message_id) != requests_.end(),
                "a response to a request we never sent");
        if (m.header.message_id == next_id_) ++next_id_;
      } else {
        their_request_ = m.header;
      }
    }
    host_.outbox.clear();
  }

  const bool sa_initiates_;  // the SA under test is the initiator, we the responder
  std::shared_ptr<ConnectionParams> conn_;  // our PSK
  const std::uint8_t our_flag_;  // kFlagInitiator on our messages, or not
  const std::uint64_t our_spi_;  // the SA's own SPI, by which the host finds it
  std::uint32_t next_id_;        // the message ID the SA expects of our next request
  const bool fragmentation_;
  SinkHost host_;
  IkeCounters counters_;
  std::unique_ptr<IkeSa> sa_;
  TimePoint now_ = kStart;
  Bytes ni_ = Bytes(kNonceLen, 0x4E);
  Bytes nr_;
  Bytes init_request_, init_response_;
  std::optional<IkeAlgorithms> algs_;
  IkeSaKeys keys_;
  SkKeys tx_, rx_;
  std::vector<std::uint32_t> requests_;
  std::optional<Header> their_request_;
  Bytes last_sent_;
  bool trace_ = std::getenv("IKE_SA_FUZZ_TRACE") != nullptr;  // each step's outcome on stderr
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Reader in({data, size});
  Peer peer(in.Byte());
  Require(peer.Init(), "IKE_SA_INIT between the SA and its peer failed");
  peer.Run(in);
  return 0;
}
