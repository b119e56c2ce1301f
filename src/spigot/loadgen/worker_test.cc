// The load generator's worker against an in-process responder over real UDP on 127.0.0.1:
// establishment, NAT-T with the non-ESP marker, cookies, retransmission, CHILD SA rekeys, the
// polite DELETEs at the end, failures grouped by reason, and road warriors: virtual IPs from a
// pool and echo requests through each CHILD SA (the responder answers them itself).
#include "spigot/loadgen/worker.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <thread>

#include "spigot/crypto/random.h"
#include "spigot/ike/cookie.h"
#include "spigot/ike/endpoint.h"
#include "spigot/ike/traffic_selectors.h"
#include "spigot/loadgen/auth.h"
#include "spigot/loadgen/traffic.h"
#include "spigot/test_tools/test_pki.h"

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
    int pool = 0;              // virtual IPs 198.18.0.1 up to .pool (0: CFG_REQUEST ignored)
    bool echo = false;         // answer echo requests to 203.0.113.1 through the CHILD SA
    int lose_echo_of = 0;      // never answer the peer with identifier this (0: none)
    std::shared_ptr<ike::ConnectionParams> conn;  // in place of Connection(psk, false)
  };

  explicit TestResponder(Options o) : o_(o), conn_(o.conn ? o.conn : Connection(o.psk, false)) {
    conn_->remote_ts_dynamic = o.pool != 0;
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
  int established = 0, children = 0, rekeys = 0, cookies_sent = 0, natt_messages = 0, echoes = 0;
  std::map<std::string, int> peers;  // established IKE SAs by the identity the peer proved
  const ike::IkeCounters& counters() const { return counters_; }
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
  void InstallChild(ike::IkeSa&, const ike::ChildSaInfo& c) override {
    ++(c.rekey_of ? rekeys : children);
    auto t = std::make_unique<ChildTunnel>();
    if (o_.echo && t->Init(c)) tunnels_[c.spi_in] = std::move(t);
  }
  ike::CpResult AssignVirtualIps(ike::IkeSa&, bool want_v4, bool, ike::VirtualIps& out) override {
    if (o_.pool == 0 || !want_v4) return ike::CpResult::kNotServed;
    if (next_vip_ > o_.pool) return ike::CpResult::kFailed;
    out.addresses.push_back(*ike::SelectorFromCidr("198.18.0." + std::to_string(next_vip_++) + "/32"));
    return ike::CpResult::kAssigned;
  }
  void RemoveChild(ike::IkeSa&, std::uint32_t) override {}
  std::shared_ptr<const ike::ConnectionParams> ConnectionForPeer(const ike::Identity&,
                                                                 const ike::Address&) override {
    return conn_;
  }
  void StateChanged(ike::IkeSa& sa) override {
    if (sa.state() != ike::IkeSa::State::kEstablished) return;
    ++established;
    if (sa.peer_id()) ++peers[ike::ToString(*sa.peer_id())];
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
        if (m.size() < 4 || std::memcmp(m.data(), kMarker, 4) != 0) {
          OnEsp({buf.data(), slot[0].length}, slot[0].peer);
          continue;
        }
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

  // An echo request to 203.0.113.1 from the CHILD SA's virtual IP gets its reply on that SA.
  void OnEsp(std::span<std::uint8_t> esp, const io::Endpoint& from) {
    std::uint32_t spi = 0;
    if (!esp::PeekSpi(esp, spi)) return;
    const auto it = tunnels_.find(spi);
    std::span<const std::uint8_t> inner;
    if (it == tunnels_.end() || it->second->Open(esp, inner) != esp::Status::kOk) return;
    Echo e;
    if (!ParseEcho(inner, e) || e.type != kIcmpEchoRequest || e.dst != Ipv4{203, 0, 113, 1}) return;
    if (o_.lose_echo_of != 0 && e.id == o_.lose_echo_of) return;
    std::array<std::uint8_t, kEchoPacketLen> reply;
    BuildEcho(Echo{kIcmpEchoReply, e.dst, e.src, e.id, e.seq}, reply);
    std::array<std::uint8_t, ChildTunnel::kBufferLen> buf;
    std::span<const std::uint8_t> out;
    if (it->second->Seal(reply, buf, out) != esp::Status::kOk) return;
    natt_->SendTo(from, out);
    ++echoes;
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
  int next_vip_ = 1;
  std::map<std::uint32_t, std::unique_ptr<ChildTunnel>> tunnels_;
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
              const std::function<bool(const Progress&)>& until = nullptr,
              const std::function<void(WorkerConfig&)>& configure = nullptr) {
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
  if (configure) configure(c);
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

// Road warriors: ask for an address (CFG_REQUEST), and with traffic ping through the CHILD SA.
void RoadWarriors(WorkerConfig& c, bool traffic) {
  auto conn = std::make_shared<ike::ConnectionParams>(*c.connection);
  conn->vips = {4};
  c.connection = conn;
  c.vips = true;
  c.traffic = traffic;
  c.packets = 4;
  c.traffic_dst = {203, 0, 113, 1};
}

TEST(Worker, RoadWarriorsGetDistinctVirtualIps) {
  TestResponder r({.pool = 20});
  Outcome run = RunWorker(r, 12, "secret", 0s, nullptr, [](WorkerConfig& c) { RoadWarriors(c, false); });
  EXPECT_EQ(run.results.established, 12u);
  EXPECT_EQ(run.results.failed, 0u);
  ASSERT_EQ(run.results.virtual_ips.size(), 12u);
  EXPECT_EQ(run.results.DistinctVirtualIps(), 12u);
  for (const std::uint32_t a : run.results.virtual_ips) {
    EXPECT_EQ(a >> 8, (198u << 16) | (18u << 8)) << "inside 198.18.0.0/24";
  }
}

TEST(Worker, AnExhaustedPoolFailsThePeersItRefuses) {
  TestResponder r({.pool = 4});
  Outcome run = RunWorker(r, 6, "secret", 0s, nullptr, [](WorkerConfig& c) { RoadWarriors(c, false); });
  EXPECT_EQ(run.results.established, 4u);
  EXPECT_EQ(run.results.failed, 2u);
  EXPECT_EQ(run.results.failures["first CHILD SA refused by peer: INTERNAL_ADDRESS_FAILURE"], 2u);
  EXPECT_EQ(run.results.DistinctVirtualIps(), 4u);
}

TEST(Worker, RoadWarriorsPingThroughTheirOwnChildSas) {
  TestResponder r({.pool = 20, .echo = true});
  Outcome run = RunWorker(r, 10, "secret", 0s, nullptr, [](WorkerConfig& c) { RoadWarriors(c, true); });
  EXPECT_EQ(run.results.established, 10u);
  EXPECT_EQ(run.results.echo_sent, 40u);
  EXPECT_EQ(run.results.echo_received, 40u);
  EXPECT_EQ(run.results.peers_all_replies, 10u);
  EXPECT_EQ(run.results.peers_some_replies + run.results.peers_no_replies, 0u);
  EXPECT_TRUE(run.results.traffic_drops.empty()) << run.results.traffic_drops.begin()->first;
  EXPECT_EQ(r.echoes, 40);
}

TEST(Worker, CountsPeersWhoseRepliesAreLost) {
  // Initiator 3's echo requests are never answered: it ends after kReplyTimeout with none.
  TestResponder r({.pool = 20, .echo = true, .lose_echo_of = 3});
  Outcome run = RunWorker(r, 5, "secret", 0s, nullptr, [](WorkerConfig& c) { RoadWarriors(c, true); });
  EXPECT_EQ(run.results.established, 5u);
  EXPECT_EQ(run.results.peers_all_replies, 4u);
  EXPECT_EQ(run.results.peers_no_replies, 1u);
  EXPECT_EQ(run.results.echo_sent, 20u);
  EXPECT_EQ(run.results.echo_received, 16u);
}

// A mobility storm (--move-to): once all are up, every initiator moves at once to a second
// address of ours (127.0.0.2) and says so with UPDATE_SA_ADDRESSES from there (MOBIKE, RFC 4555
// 3.5); each update is answered on the same IKE SA, and the echo replies that follow come to
// the new address (this responder answers ESP where it came from). Nobody logs in again.
TEST(Worker, EveryInitiatorMovesAtOnceAndKeepsItsIkeSa) {
  TestResponder r({.pool = 20, .echo = true});
  WorkerConfig c;
  c.target = r.ike_endpoint();
  c.natt_port = r.natt_port();
  c.source = *io::Endpoint::Parse("127.0.0.1", 0);
  c.sockets = 3;
  c.connection = Connection("secret", true);
  c.count = 8;
  c.rate = 500;
  RoadWarriors(c, true);
  c.packets = 40;  // 40 x 50 ms: still pinging well after the move
  c.move_to = *io::Endpoint::Parse("127.0.0.2", 0);
  std::string error;
  auto w = Worker::Create(c, &error);
  ASSERT_TRUE(w) << error;
  EXPECT_EQ(w->socket_count(), 6u) << "each socket with its twin on the address moved to";
  std::thread t([&] { w->Run(io::DefaultClock().Now()); });
  const auto deadline = io::DefaultClock().Now() + 30s;
  bool moved = false;
  for (;;) {
    const Progress p = w->progress();
    if (!moved && p.established == c.count) {
      w->Move();
      moved = true;
    } else if (moved && p.settled()) {
      break;
    }
    if (io::DefaultClock().Now() > deadline) {
      ADD_FAILURE() << "not settled: established " << p.established << ", moves pending " << p.moves_pending;
      break;
    }
    std::this_thread::sleep_for(10ms);
  }
  w->Finish();
  t.join();
  r.Stop();
  const Results& res = w->results();
  EXPECT_EQ(res.established, 8u);
  EXPECT_EQ(res.moved, 8u);
  EXPECT_EQ(res.move_answered, 8u);
  EXPECT_EQ(res.move_answer_ms.size(), 8u);
  EXPECT_EQ(res.move_recovered, 8u) << "echo replies at the new address";
  EXPECT_EQ(res.lost, 0u);
  EXPECT_EQ(res.deletes_unanswered, 0u);
  EXPECT_EQ(res.peers_all_replies, 8u);
  EXPECT_EQ(r.established, 8) << "a moved initiator logged in again";
  EXPECT_EQ(r.counters().mobike_negotiated, 8u);
  EXPECT_EQ(r.counters().mobike_updates, 8u);
}

// Certificate login (loadgen/auth.h): every initiator signs with one client certificate (RSA,
// through an intermediate it sends) under its subject DN; the responder (ECDSA) checks them
// against the root and sends its IKE_AUTH response in fragments (fragment_size 576), which the
// worker reassembles.
TEST(Worker, CertificateLoginSharesOneIdentityAndTakesFragments) {
  const std::string dir = std::filesystem::temp_directory_path() / ("spigot-loadgen-cert-" + std::to_string(getpid()));
  test_tools::TestPki pki(dir);
  const auto root = pki.Ca("root", "C=CH, O=Example, CN=Root");
  test_tools::IssueOptions ca;
  ca.ca = true;
  const auto inter = pki.Issue("inter", root, "C=CH, O=Example, CN=Intermediate", test_tools::TestKey::kEcP256, ca);
  test_tools::IssueOptions gw;
  gw.dns = {"gw.example"};
  gw.eku = "serverAuth";
  const auto server = pki.Issue("gw", inter, "C=CH, O=Example, CN=gw.example", test_tools::TestKey::kEcP256, gw);
  const auto client = pki.Issue("client", inter, "C=CH, O=Example, CN=client", test_tools::TestKey::kRsa2048);

  auto rconn = Connection("unused", false);
  AuthOptions responder{"", pki.Chain("gw-chain", {&server, &inter}), server.key_path, root.cert_path, "gw.example"};
  ASSERT_EQ(ApplyAuth(responder, *rconn), "");
  rconn->fragment_size = 576;
  TestResponder r({.conn = rconn});
  Outcome run = RunWorker(r, 10, "unused", 0s, nullptr, [&](WorkerConfig& c) {
    auto conn = Connection("unused", true);
    AuthOptions login{"", pki.Chain("client-chain", {&client, &inter}), client.key_path, root.cert_path, ""};
    EXPECT_EQ(ApplyAuth(login, *conn), "");
    c.connection = conn;
    c.shared_identity = true;
  });
  std::filesystem::remove_all(dir);
  EXPECT_EQ(run.results.established, 10u);
  EXPECT_EQ(run.results.failed, 0u) << (run.results.failures.empty() ? "" : run.results.failures.begin()->first);
  EXPECT_EQ(r.peers, (std::map<std::string, int>{{"C=CH, O=Example, CN=client", 10}}));
  EXPECT_EQ(r.counters().cert_failures, 0u);
  EXPECT_GE(r.counters().fragments.messages_fragmented, 10u) << "IKE_AUTH responses in fragments";
  EXPECT_GE(r.counters().fragments.messages_reassembled, 10u) << "and the requests, with the RSA chain";
  EXPECT_EQ(r.live(), 0u);
}

}  // namespace
}  // namespace spigot::loadgen
