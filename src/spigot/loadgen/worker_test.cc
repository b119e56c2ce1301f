// The load generator's worker against an in-process responder over real UDP on 127.0.0.1:
// establishment, NAT-T with the non-ESP marker, cookies, retransmission, CHILD SA rekeys, the
// polite DELETEs at the end, and failures grouped by reason.
#include "spigot/loadgen/worker.h"

#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <map>
#include <thread>

#include "spigot/crypto/random.h"
#include "spigot/ike/cookie.h"
#include "spigot/ike/endpoint.h"
#include "spigot/ike/traffic_selectors.h"

namespace spigot::loadgen {
namespace {

using namespace std::chrono_literals;
constexpr std::uint8_t kMarker[4] = {0, 0, 0, 0};

std::shared_ptr<ike::ConnectionParams> Connection(const char* psk, bool initiator) {
  auto c = std::make_shared<ike::ConnectionParams>();
  c->name = initiator ? "loadgen" : "responder";
  c->local_id = *ike::ParseIdentity(initiator ? "loadgen" : "@responder");
  c->remote_id_any = true;
  c->psk = crypto::SecureBytes(std::span<const std::uint8_t>(
      reinterpret_cast<const std::uint8_t*>(psk), std::strlen(psk)));
  std::string err;
  ike::ParseProposals("aes128gcm16-prfsha256-x25519", ike::ProtocolId::kIke, c->ike_proposals, err);
  ike::ParseProposals("aes128gcm16", ike::ProtocolId::kEsp, c->esp_proposals, err);
  c->local_ts = {*ike::SelectorFromCidr(initiator ? "0.0.0.0/0" : "203.0.113.0/24")};
  c->remote_ts = {*ike::SelectorFromCidr(initiator ? "0.0.0.0/0" : "198.51.100.0/24")};
  c->dpd_delay = 0s;
  return c;
}

// A small IKE responder on its own thread: IKE on one port, NAT-T (with the marker) on another.
class TestResponder : public ike::IkeSaHost {
 public:
  struct Options {
    const char* psk = "secret";
    bool fake_nat = false;     // announce a wrong source port: the initiator sees a NAT
    bool cookies = false;      // every IKE_SA_INIT must echo a COOKIE first
    int drop_first = 0;        // lose this many incoming datagrams
  };

  explicit TestResponder(Options o) : o_(o), conn_(Connection(o.psk, false)) {
    loop_ = io::EventLoop::Create({});
    ike_ = io::UdpSocket::Bind(*io::Endpoint::Parse("127.0.0.1", 0), {});
    natt_ = io::UdpSocket::Bind(*io::Endpoint::Parse("127.0.0.1", 0), {});
    loop_->AddReader(ike_->fd(), [this] { OnReadable(*ike_, false); });
    loop_->AddReader(natt_->fd(), [this] { OnReadable(*natt_, true); });
    thread_ = std::thread([this] { loop_->Run(); });
  }
  ~TestResponder() override {
    Stop();
    loop_->RemoveReader(ike_->fd());
    loop_->RemoveReader(natt_->fd());
  }
  // Ends the responder's thread; the counters below may be read afterwards.
  void Stop() {
    if (!thread_.joinable()) return;
    loop_->Stop();
    thread_.join();
  }

  io::Endpoint ike_endpoint() const { return ike_->local_endpoint(); }
  std::uint16_t natt_port() const { return natt_->local_endpoint().port(); }

  // Read after Stop().
  int established = 0, children = 0, rekeys = 0, cookies_sent = 0, natt_messages = 0;
  std::size_t live() const { return sas_.size(); }

  void SendIke(ike::IkeSa& sa, const ike::Bytes& d) override {
    const io::Endpoint to = ike::ToEndpoint(sa.remote());
    if (!natt_peer_[sa.spi_r()]) return void(ike_->SendTo(to, d));
    ike::Bytes framed(kMarker, kMarker + 4);
    framed.insert(framed.end(), d.begin(), d.end());
    natt_->SendTo(to, framed);
  }
  std::optional<std::uint32_t> AllocateChildSpi(bool, ike::NotifyType&) override { return next_spi_++; }
  void ReleaseChildSpi(std::uint32_t) override {}
  void InstallChild(ike::IkeSa&, const ike::ChildSaInfo& c) override { ++(c.rekey_of ? rekeys : children); }
  void RemoveChild(ike::IkeSa&, std::uint32_t) override {}
  std::shared_ptr<const ike::ConnectionParams> ConnectionForPeer(const ike::Identity&,
                                                                 const ike::Address&) override {
    return conn_;
  }
  void StateChanged(ike::IkeSa& sa) override {
    if (sa.state() == ike::IkeSa::State::kEstablished) ++established;
  }
  std::uint64_t NewIkeSpi() override { return crypto::RandomU64() | 1; }
  void AdoptIkeSa(ike::IkeSa&, std::unique_ptr<ike::IkeSa> r) override {
    const std::uint64_t spi = r->spi_r();
    sas_[spi] = std::move(r);
  }

 private:
  void OnReadable(io::UdpSocket& sock, bool natt) {
    std::vector<std::uint8_t> buf(65536);
    std::array<io::RecvSlot, 1> slot;
    for (;;) {
      slot[0] = io::RecvSlot{buf};
      if (sock.RecvBatch(slot).count == 0) return;
      if (drops_++ < o_.drop_first) continue;
      std::span<const std::uint8_t> m(buf.data(), slot[0].length);
      if (natt) {
        if (m.size() < 4 || std::memcmp(m.data(), kMarker, 4) != 0) continue;
        m = m.subspan(4);
        ++natt_messages;
      }
      OnIke(m, slot[0].peer, natt);
    }
  }

  void OnIke(std::span<const std::uint8_t> m, const io::Endpoint& from, bool natt) {
    ike::Header h;
    if (!ike::ParseHeader(m, h)) return;
    const auto now = io::DefaultClock().Now();
    std::uint64_t ours = h.from_initiator() ? h.spi_r : h.spi_i;
    if (ours == 0) {
      if (auto it = half_open_.find(h.spi_i); it != half_open_.end()) {
        ours = it->second;
      } else {
        if (o_.cookies && !CookieOk(m, h, from, natt)) return;
        ours = crypto::RandomU64() | 1;
        ike::Address local = ike::ToAddress(natt ? natt_->local_endpoint() : ike_->local_endpoint());
        if (o_.fake_nat) local.port ^= 1;
        sas_[ours] = std::make_unique<ike::IkeSa>(*this, counters_, ike::IkeSa::Role::kResponder,
                                                  conn_, local, ike::ToAddress(from), h.spi_i, ours);
        half_open_[h.spi_i] = ours;
      }
    }
    auto it = sas_.find(ours);
    if (it == sas_.end()) return;
    natt_peer_[ours] = natt;
    it->second->set_remote(ike::ToAddress(from));
    it->second->Receive(m, now);
    if (it->second->state() == ike::IkeSa::State::kDead) sas_.erase(it);
  }

  bool CookieOk(std::span<const std::uint8_t> m, const ike::Header& h, const io::Endpoint& from,
                bool natt) {
    ike::Message msg;
    if (ike::ParseMessage(m, msg).error != ike::ParseError::kOk) return false;
    const auto* ni = msg.Find<ike::NoncePayload>(ike::PayloadType::kNonce);
    if (ni == nullptr) return false;
    const auto now = io::DefaultClock().Now();
    if (const auto* c = msg.FindNotify(ike::NotifyType::kCookie);
        c != nullptr && jar_.Verify(c->data, ni->data, from.address_bytes(), h.spi_i, now))
      return true;
    ike::Message reply;
    reply.header = ike::Header{h.spi_i, 0, ike::PayloadType::kNone, ike::kVersion,
                               ike::Exchange::kIkeSaInit, ike::kFlagResponse, 0, 0};
    reply.payloads.push_back({ike::PayloadType::kNotify,
                              ike::NotifyPayload{ike::ProtocolId::kNone, {}, ike::NotifyType::kCookie,
                                                 jar_.Make(ni->data, from.address_bytes(), h.spi_i, now)}});
    ike::Bytes bytes = ike::Serialize(reply, nullptr);
    if (natt) bytes.insert(bytes.begin(), kMarker, kMarker + 4);
    (natt ? natt_ : ike_)->SendTo(from, bytes);
    ++cookies_sent;
    return false;
  }

  Options o_;
  std::shared_ptr<ike::ConnectionParams> conn_;
  std::unique_ptr<io::EventLoop> loop_;
  std::unique_ptr<io::UdpSocket> ike_, natt_;
  ike::IkeCounters counters_;
  ike::CookieJar jar_{io::DefaultClock().Now()};
  std::map<std::uint64_t, std::unique_ptr<ike::IkeSa>> sas_;
  std::map<std::uint64_t, std::uint64_t> half_open_;
  std::map<std::uint64_t, bool> natt_peer_;
  std::uint32_t next_spi_ = 0x1000;
  int drops_ = 0;
  std::thread thread_;
};

struct Outcome {
  Results results;
  std::size_t sockets = 0;
};

// Runs one worker of `count` initiators until all settled (and `until` holds), then finishes.
Outcome RunWorker(TestResponder& r, std::uint32_t count, const char* psk,
              std::chrono::seconds child_rekey = 0s,
              const std::function<bool(const Progress&)>& until = nullptr) {
  WorkerConfig c;
  c.target = r.ike_endpoint();
  c.natt_port = r.natt_port();
  c.source = *io::Endpoint::Parse("127.0.0.1", 0);
  c.sockets = 3;
  auto conn = Connection(psk, true);
  conn->child_rekey_time = child_rekey;
  c.connection = conn;
  c.count = count;
  c.rate = 500;
  c.delete_rate = 1000;
  std::string error;
  auto w = Worker::Create(c, &error);
  EXPECT_TRUE(w) << error;
  if (!w) return {};
  std::thread t([&] { w->Run(io::DefaultClock().Now()); });
  const auto deadline = io::DefaultClock().Now() + 30s;
  for (;;) {
    const Progress p = w->progress();
    if (p.started == count && p.settled() && (!until || until(p))) break;
    if (io::DefaultClock().Now() > deadline) {
      ADD_FAILURE() << "not settled: started " << p.started << " established " << p.established
                    << " failed " << p.failed;
      break;
    }
    std::this_thread::sleep_for(10ms);
  }
  w->Finish();
  t.join();
  r.Stop();
  return {w->results(), w->socket_count()};
}

TEST(Worker, EstablishesEveryInitiatorThenDeletesThem) {
  TestResponder r({});
  Outcome run = RunWorker(r, 40, "secret");
  EXPECT_EQ(run.sockets, 3u);
  EXPECT_EQ(run.results.started, 40u);
  EXPECT_EQ(run.results.established, 40u);
  EXPECT_EQ(run.results.failed, 0u) << (run.results.failures.empty() ? "" : run.results.failures.begin()->first);
  EXPECT_EQ(run.results.latency_ms.size(), 40u);
  EXPECT_EQ(run.results.deletes_unanswered, 0u);
  EXPECT_EQ(r.established, 40);
  EXPECT_EQ(r.children, 40);
  EXPECT_EQ(r.natt_messages, 0);
  EXPECT_EQ(r.live(), 0u) << "every IKE SA deleted toward the responder";
}

TEST(Worker, MovesToNattPortWithTheMarkerWhenANatIsDetected) {
  TestResponder r({.fake_nat = true});
  Outcome run = RunWorker(r, 10, "secret");
  EXPECT_EQ(run.results.established, 10u);
  EXPECT_EQ(run.results.failed, 0u);
  // IKE_AUTH and the DELETE exchange of each went over NAT-T.
  EXPECT_GE(r.natt_messages, 20);
  EXPECT_EQ(r.live(), 0u);
}

TEST(Worker, FollowsCookies) {
  TestResponder r({.cookies = true});
  Outcome run = RunWorker(r, 10, "secret");
  EXPECT_EQ(run.results.established, 10u);
  EXPECT_GE(r.cookies_sent, 10);
}

TEST(Worker, RetransmitsWhatWasLost) {
  TestResponder r({.drop_first = 3});
  Outcome run = RunWorker(r, 5, "secret");
  EXPECT_EQ(run.results.established, 5u);
  EXPECT_GE(run.results.retransmits, 3u);
}

TEST(Worker, RekeysChildSas) {
  TestResponder r({});
  Outcome run = RunWorker(r, 10, "secret", 1s, [](const Progress& p) { return p.rekeys_completed >= 20; });
  EXPECT_EQ(run.results.established, 10u);
  EXPECT_GE(run.results.rekeys_completed, 20u);
  EXPECT_EQ(run.results.lost, 0u);
  EXPECT_GE(r.rekeys, 20);
}

TEST(Worker, GroupsFailuresByReason) {
  TestResponder r({.psk = "other"});
  Outcome run = RunWorker(r, 6, "secret");
  EXPECT_EQ(run.results.established, 0u);
  EXPECT_EQ(run.results.failed, 6u);
  ASSERT_EQ(run.results.failures.size(), 1u);
  EXPECT_EQ(run.results.failures.begin()->first, "peer: AUTHENTICATION_FAILED");
  EXPECT_EQ(run.results.failures.begin()->second, 6u);
}

}  // namespace
}  // namespace spigot::loadgen
