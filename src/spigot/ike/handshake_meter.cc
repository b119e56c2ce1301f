#include "spigot/ike/handshake_meter.h"

#include <chrono>
#include <span>
#include <utility>
#include <vector>

#include "spigot/ike/traffic_selectors.h"
#include "spigot/io/clock.h"

namespace spigot::ike {
namespace {

// IKE_SA_INIT and IKE_AUTH are two round trips; the rest allows for an INVALID_KE_PAYLOAD retry.
constexpr int kMaxRounds = 8;

// Only ever used between the two ends of a pair, in memory.
constexpr std::string_view kPsk = "spigot handshake meter";

Address Ipv4(std::uint8_t last_octet) {
  Address a;
  a.ip[0] = 192, a.ip[1] = 0, a.ip[2] = 2, a.ip[3] = last_octet;
  a.port = 500;
  return a;
}

}  // namespace

// One end: its IKE SA and what the SA needs of a host. SPIs come from counters (a pair's SAs
// only need to differ from each other); CHILD SAs are only counted, the SA keeps its own copy.
class HandshakePair::Host final : public IkeSaHost {
 public:
  // Datagrams in flight toward this host. The exchanges have one message in flight at a time
  // (window 1, 2.3); the bound only stops a runaway exchange. Past it, a datagram is dropped
  // and counted in dropped_, and the handshake does not complete.
  static constexpr std::size_t kMaxInbox = 4;

  Host(IkeSa::Role role, std::shared_ptr<const ConnectionParams> conn, Address local,
       Address remote)
      : role_(role), conn_(std::move(conn)), local_(local), remote_(remote) {}

  void Initiate(TimePoint now) {
    sa_ = std::make_unique<IkeSa>(*this, counters_, IkeSa::Role::kInitiator, conn_, local_,
                                  remote_, NewIkeSpi(), 0);
    sa_->Initiate(now);
  }

  // Feeds what the peer sent us to our SA (what it answers lands in the peer's inbox).
  void Deliver(TimePoint now) {
    std::vector<Bytes> batch;
    batch.swap(inbox_);
    for (const Bytes& datagram : batch) {
      Header h;
      if (!ParseHeader(datagram, h)) continue;
      // The responder's SA comes with the first IKE_SA_INIT. After a refused one (e.g.
      // INVALID_KE_PAYLOAD) the initiator starts over with SPIr 0, and so do we (2.6).
      if (role_ == IkeSa::Role::kResponder && h.spi_r == 0 &&
          (!sa_ || sa_->state() == IkeSa::State::kDead)) {
        sa_ = std::make_unique<IkeSa>(*this, counters_, role_, conn_, local_, remote_, h.spi_i,
                                      NewIkeSpi());
      }
      if (sa_) sa_->Receive(datagram, now);
    }
  }

  bool idle() const { return inbox_.empty(); }
  bool established() const {
    return sa_ && sa_->state() == IkeSa::State::kEstablished && children_ == 1;
  }
  std::string failure() const {
    if (dropped_ > 0) return "a datagram was dropped (inbox full)";
    return sa_ ? sa_->failure() : std::string();
  }

  Host* peer_ = nullptr;

  // IkeSaHost.
  void SendIke(IkeSa&, const Bytes& datagram) override {
    if (peer_->inbox_.size() >= kMaxInbox) {
      ++peer_->dropped_;
      return;
    }
    peer_->inbox_.push_back(datagram);
  }
  std::optional<std::uint32_t> AllocateChildSpi(bool, NotifyType&) override {
    return next_child_spi_++;
  }
  void ReleaseChildSpi(std::uint32_t) override {}
  void InstallChild(IkeSa&, const ChildSaInfo&) override { ++children_; }
  void RemoveChild(IkeSa&, std::uint32_t) override { --children_; }
  std::shared_ptr<const ConnectionParams> ConnectionForPeer(const Identity& peer_id,
                                                            const Address&) override {
    return conn_->AcceptsPeer(peer_id) ? conn_ : nullptr;
  }
  void StateChanged(IkeSa&) override {}
  std::uint64_t NewIkeSpi() override { return next_ike_spi_++; }
  // The connections have no lifetimes, so nothing rekeys and no IKE SA is ever replaced.
  void AdoptIkeSa(IkeSa&, std::unique_ptr<IkeSa>) override {}

 private:
  IkeSa::Role role_;
  std::shared_ptr<const ConnectionParams> conn_;
  Address local_, remote_;
  IkeCounters counters_;
  std::unique_ptr<IkeSa> sa_;
  // A vector, not a deque: kept pairs are what `bench ike --pairs` weighs, and an empty
  // std::deque alone costs ~600 bytes.
  std::vector<Bytes> inbox_;
  std::uint64_t dropped_ = 0;
  std::uint64_t next_ike_spi_ = 1;        // never 0
  std::uint32_t next_child_spi_ = 0x100;  // 1-255 are reserved (RFC 4303 2.1)
  std::size_t children_ = 0;
};

std::optional<HandshakeConnections> MakeHandshakeConnections(std::string_view ike_proposal,
                                                             std::string_view esp_proposal,
                                                             std::string& error) {
  std::vector<Proposal> ike, esp;
  if (!ParseProposals(ike_proposal, ProtocolId::kIke, ike, error)) {
    error = "IKE proposal: " + error;
    return std::nullopt;
  }
  if (!ParseProposals(esp_proposal, ProtocolId::kEsp, esp, error)) {
    error = "ESP proposal: " + error;
    return std::nullopt;
  }
  auto end = [&](const char* local_id, const char* remote_id, const char* local_net,
                 const char* remote_net) {
    auto c = std::make_shared<ConnectionParams>();
    c->name = "handshake-meter";
    c->local_id = *ParseIdentity(local_id);
    c->remote_id = *ParseIdentity(remote_id);
    c->psk = crypto::SecureBytes::FromText(kPsk);
    c->ike_proposals = ike;
    c->esp_proposals = esp;
    c->local_ts = {*SelectorFromCidr(local_net)};
    c->remote_ts = {*SelectorFromCidr(remote_net)};
    return std::shared_ptr<const ConnectionParams>(std::move(c));
  };
  return HandshakeConnections{
      end("@initiator", "@responder", "192.0.2.0/24", "198.51.100.0/24"),
      end("@responder", "@initiator", "198.51.100.0/24", "192.0.2.0/24")};
}

HandshakePair::HandshakePair(const HandshakeConnections& connections)
    : initiator_(std::make_unique<Host>(IkeSa::Role::kInitiator, connections.initiator,
                                        Ipv4(1), Ipv4(2))),
      responder_(std::make_unique<Host>(IkeSa::Role::kResponder, connections.responder,
                                        Ipv4(2), Ipv4(1))) {
  initiator_->peer_ = responder_.get();
  responder_->peer_ = initiator_.get();
}

HandshakePair::HandshakePair(HandshakePair&&) noexcept = default;
HandshakePair& HandshakePair::operator=(HandshakePair&&) noexcept = default;
HandshakePair::~HandshakePair() = default;

bool HandshakePair::Run(TimePoint now) {
  initiator_->Initiate(now);
  for (int round = 0; round < kMaxRounds && !(initiator_->idle() && responder_->idle());
       ++round) {
    responder_->Deliver(now);
    initiator_->Deliver(now);
  }
  return established();
}

bool HandshakePair::established() const {
  return initiator_->established() && responder_->established();
}

std::string HandshakePair::failure() const {
  std::string why = initiator_->failure();
  return why.empty() ? responder_->failure() : why;
}

HandshakeMeasurement MeasureHandshakes(double seconds, std::string_view ike_proposal,
                                       std::string_view esp_proposal) {
  HandshakeMeasurement m;
  const std::optional<HandshakeConnections> connections =
      MakeHandshakeConnections(ike_proposal, esp_proposal, m.error);
  if (!connections) return m;
  const io::Clock& clock = io::DefaultClock();
  const auto budget = std::chrono::duration<double>(seconds);
  const TimePoint start = clock.Now();
  TimePoint now = start;
  do {
    {
      HandshakePair pair(*connections);
      if (!pair.Run(now)) {
        m.error = "handshake " + std::to_string(m.handshakes + 1) + " failed";
        if (const std::string why = pair.failure(); !why.empty()) m.error += ": " + why;
        return m;
      }
    }  // tearing the pair down is part of what is timed
    ++m.handshakes;
    now = clock.Now();
  } while (now - start < budget);
  m.ok = true;
  m.seconds = std::chrono::duration<double>(now - start).count();
  m.handshakes_per_second = double(m.handshakes) / m.seconds;
  return m;
}

}  // namespace spigot::ike
