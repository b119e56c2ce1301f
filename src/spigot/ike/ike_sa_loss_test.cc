// IKE SAs over a lossy link (issue 16 item 2), driven in process as the peer would be: every
// message of a kind lost, and both sides' timers run until nothing is due. What must hold: an
// exchange completes within the retransmission schedule or is given up and counted (RFC 7296
// 2.1, 2.4), and a lost DELETE or a lost rekey response leaves no SA behind on either side.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <vector>

#include "spigot/ike/ike_sa.h"
#include "spigot/test_tools/ike_loopback.h"

namespace spigot::ike {
namespace loss_test {

using State = IkeSa::State;
using std::chrono::milliseconds;
using std::chrono::seconds;

TimePoint At(milliseconds ms) { return TimePoint{} + std::chrono::hours(1) + ms; }

// Short timers, as tests/lossy_links.sh sets them: 200 ms first retransmission, 3 resends
// (gives up 200 * 15 = 3 s after the request), DPD after 2 s.
std::shared_ptr<ConnectionParams> LossyConnection(bool initiator) {
  auto c = TestConnection(initiator, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  c->retransmit_timeout = milliseconds(200);
  c->retransmit_tries = 3;
  c->half_open_timeout = milliseconds(2000);
  c->dpd_delay = seconds(2);
  return c;
}

// Every IKE SA of a host: the current one and those replaced by rekeys.
std::vector<IkeSa*> SasOf(LoopbackHost& h) {
  std::vector<IkeSa*> out;
  if (*h.current) out.push_back(h.current->get());
  for (auto& r : h.retired) out.push_back(r.get());
  return out;
}

// IKE SAs that hold state: not dead, and not a responder the harness made for a stray
// datagram that never began an exchange (the daemon drops those unknown SPIs).
std::size_t Alive(LoopbackHost& h) {
  const auto sas = SasOf(h);
  return static_cast<std::size_t>(std::count_if(sas.begin(), sas.end(), [](IkeSa* s) {
    return s->state() != State::kDead && s->state() != State::kNew;
  }));
}

// Runs both sides' timers and deliveries, deadline by deadline, until `until`.
void RunUntil(LoopbackPair& pair, TimePoint until) {
  for (int step = 0; step < 100000; ++step) {
    TimePoint next = TimePoint::max();
    std::vector<IkeSa*> all = SasOf(pair.ihost);
    for (IkeSa* s : SasOf(pair.rhost)) all.push_back(s);
    for (IkeSa* s : all) next = std::min(next, s->NextDeadline());
    if (next > until) return;
    for (IkeSa* s : all) {
      if (s->state() != State::kDead && s->NextDeadline() <= next) s->Tick(next);
    }
    pair.Pump(next);
  }
  FAIL() << "timers never settled";
}

// The CHILD SAs both hosts hold must pair up exactly (our inbound SPI is the peer's outbound).
void ExpectSameChildSas(LoopbackPair& pair) {
  std::set<std::pair<std::uint32_t, std::uint32_t>> i, r;
  for (const auto& [spi, c] : pair.ihost.installed) i.insert({c.spi_in, c.spi_out});
  for (const auto& [spi, c] : pair.rhost.installed) r.insert({c.spi_out, c.spi_in});
  EXPECT_EQ(i, r) << "the two sides' CHILD SAs differ";
}

Header HeaderOf(const Bytes& d) {
  Header h;
  ParseHeader(d, h);
  return h;
}

class Lossy : public ::testing::Test {
 protected:
  void SetUp() override {
    pair_ = std::make_unique<LoopbackPair>(LossyConnection(true), LossyConnection(false));
    pair_->initiator->Initiate(At(milliseconds(0)));
    pair_->Pump(At(milliseconds(0)));
    ASSERT_EQ(pair_->initiator->state(), State::kEstablished);
    ASSERT_EQ(pair_->ihost.installed.size(), 1u);
  }
  LoopbackHost& Host(bool initiator) { return initiator ? pair_->ihost : pair_->rhost; }
  IkeCounters& Counters(bool initiator) { return initiator ? pair_->icounters : pair_->rcounters; }
  IkeSa& Side(bool initiator) { return initiator ? *pair_->initiator : *pair_->responder; }
  std::unique_ptr<LoopbackPair> pair_;
};

// 2.1 / 2.4 with the configured schedule: resends after 200, 400 and 800 ms (+-10 %), then
// 1600 ms more without an answer and the exchange is given up, counted by its type, and the
// IKE SA goes with its CHILD SAs.
TEST_F(Lossy, ScheduleIsConfigurableAndAGiveUpIsCountedByExchange) {
  const TimePoint t0 = At(milliseconds(1000));
  pair_->ihost.lose = [](const Bytes&) { return true; };
  ASSERT_TRUE(pair_->initiator->CheckLiveness(t0));
  EXPECT_EQ(pair_->initiator->NextDeadline(), t0 + milliseconds(200));
  TimePoint now = t0;
  while (pair_->initiator->state() != State::kDead && now < t0 + seconds(60)) {
    now = pair_->initiator->NextDeadline();
    pair_->initiator->Tick(now);
  }
  EXPECT_EQ(pair_->initiator->state(), State::kDead);
  EXPECT_EQ(pair_->icounters.retransmits, 3u);
  EXPECT_EQ(pair_->icounters.gave_up.informational, 1u);
  EXPECT_EQ(pair_->icounters.gave_up.create_child_sa, 0u);
  // 200 + 400 + 800 + 1600 = 3000 ms (RetransmitSpan), the last three waits jittered by +-10 %.
  EXPECT_EQ(LossyConnection(true)->RetransmitSpan(), milliseconds(3000));
  EXPECT_GE(now - t0, milliseconds(2720));
  EXPECT_LE(now - t0, milliseconds(3280));
  EXPECT_TRUE(pair_->ihost.installed.empty());
  EXPECT_EQ(pair_->ihost.lost, 4u);  // the request and its three resends
}

// A responder's IKE SA that gets no IKE_AUTH dies after half_open_timeout, counted.
TEST(LossyHalfOpen, HalfOpenTimeoutIsConfigurable) {
  LoopbackPair pair(LossyConnection(true), LossyConnection(false));
  pair.ihost.lose = [](const Bytes& d) { return HeaderOf(d).exchange == Exchange::kIkeAuth; };
  pair.initiator->Initiate(At(milliseconds(0)));
  pair.Pump(At(milliseconds(0)));
  ASSERT_NE(pair.responder, nullptr);
  EXPECT_EQ(pair.responder->NextDeadline(), At(milliseconds(2000)));
  RunUntil(pair, At(milliseconds(10000)));
  EXPECT_EQ(pair.responder->state(), State::kDead);
  EXPECT_EQ(pair.rcounters.half_open_expired, 1u);
  EXPECT_EQ(pair.initiator->state(), State::kDead);
  EXPECT_EQ(pair.icounters.gave_up.ike_auth, 1u);
  EXPECT_EQ(pair.icounters.gave_up.ike_sa_init, 0u);
}

// An IKE rekey goes through, but every copy of the rekey initiator's DELETE of the old IKE SA
// is lost. The old SA on the side that sent it gives its DELETE up; the peer must not keep its
// old SA for ever waiting for it (it did: a rekeyed SA ran no timer at all).
TEST_F(Lossy, LostDeleteOfTheOldIkeSaAfterARekeyLeavesNothing) {
  for (bool from_initiator : {true, false}) {
    SCOPED_TRACE(from_initiator ? "rekeyed by the initiator" : "rekeyed by the responder");
    SetUp();
    const TimePoint t0 = At(milliseconds(1000));
    IkeSa& old = Side(from_initiator);
    const std::uint64_t old_spi_i = old.spi_i();
    const auto children = Host(from_initiator).installed.size();
    Host(from_initiator).lose = [&](const Bytes& d) {
      const Header h = HeaderOf(d);
      return h.exchange == Exchange::kInformational && !h.is_response() && h.spi_i == old_spi_i;
    };
    ASSERT_TRUE(old.RekeyIke(t0));
    RunUntil(*pair_, t0 + seconds(30));
    EXPECT_GE(Host(from_initiator).lost, 4u) << "the DELETE was never sent";
    EXPECT_EQ(Alive(pair_->ihost), 1u) << "an old IKE SA is left on the initiator";
    EXPECT_EQ(Alive(pair_->rhost), 1u) << "an old IKE SA is left on the responder";
    EXPECT_EQ(Counters(from_initiator).gave_up.informational, 1u);
    EXPECT_EQ(Counters(!from_initiator).rekeyed_expired, 1u);
    EXPECT_EQ(pair_->initiator->state(), State::kEstablished);
    EXPECT_EQ(pair_->responder->state(), State::kEstablished);
    EXPECT_NE(pair_->initiator->spi_i(), old_spi_i);
    EXPECT_EQ(pair_->initiator->spi_i(), pair_->responder->spi_i());
    EXPECT_EQ(pair_->ihost.installed.size(), children) << "the CHILD SAs did not survive the rekey";
    ExpectSameChildSas(*pair_);
  }
}

// Every response to an IKE rekey is lost: the peer installed the new IKE SA (and moved the
// CHILD SAs to it), the rekey's initiator retransmits, gives up, and its IKE SA dies. The peer
// must end with nothing either: the new IKE SA by its liveness check, the old one by the
// `rekeyed` timer.
TEST_F(Lossy, LostIkeRekeyResponseLeavesNothingOnEitherSide) {
  for (bool from_initiator : {true, false}) {
    SCOPED_TRACE(from_initiator ? "rekeyed by the initiator" : "rekeyed by the responder");
    SetUp();
    const TimePoint t0 = At(milliseconds(1000));
    IkeSa& old = Side(from_initiator);
    const std::uint64_t old_spi_i = old.spi_i();
    Host(!from_initiator).lose = [&](const Bytes& d) {
      const Header h = HeaderOf(d);
      return h.exchange == Exchange::kCreateChildSa && h.is_response() && h.spi_i == old_spi_i;
    };
    ASSERT_TRUE(old.RekeyIke(t0));
    RunUntil(*pair_, t0 + seconds(60));
    EXPECT_EQ(Counters(from_initiator).gave_up.create_child_sa, 1u);
    EXPECT_EQ(Counters(!from_initiator).rekeyed_expired, 1u);
    EXPECT_GE(Counters(!from_initiator).gave_up.informational, 1u) << "no liveness check gave up";
    EXPECT_EQ(Alive(pair_->ihost), 0u);
    EXPECT_EQ(Alive(pair_->rhost), 0u) << "the peer kept an IKE SA";
    EXPECT_TRUE(pair_->ihost.installed.empty());
    EXPECT_TRUE(pair_->rhost.installed.empty()) << "the peer kept a CHILD SA";
    EXPECT_TRUE(pair_->rhost.live_spis.empty()) << "the peer kept an SPI";
  }
}

// Every response to a CHILD rekey is lost: the peer installed the new CHILD SA, the rekey's
// initiator gives up and dies; the peer's IKE SA, with the old and the new CHILD SA, goes by
// its liveness check. Until then the tunnel keeps an SA on both sides (make-before-break).
TEST_F(Lossy, LostChildRekeyResponseLeavesNothingOnEitherSide) {
  for (bool from_initiator : {true, false}) {
    SCOPED_TRACE(from_initiator ? "rekeyed by the initiator" : "rekeyed by the responder");
    SetUp();
    const TimePoint t0 = At(milliseconds(1000));
    Host(!from_initiator).lose = [](const Bytes& d) {
      const Header h = HeaderOf(d);
      return h.exchange == Exchange::kCreateChildSa && h.is_response();
    };
    const std::uint32_t old_in = Host(from_initiator).installed.begin()->first;
    ASSERT_TRUE(Side(from_initiator).RekeyChild(old_in, t0));
    RunUntil(*pair_, t0 + milliseconds(2000));
    EXPECT_EQ(Host(from_initiator).installed.count(old_in), 1u) << "the old CHILD SA went before a new one came";
    EXPECT_EQ(Host(!from_initiator).installed.size(), 2u);
    RunUntil(*pair_, t0 + seconds(60));
    EXPECT_EQ(Counters(from_initiator).gave_up.create_child_sa, 1u);
    EXPECT_EQ(Alive(pair_->ihost), 0u);
    EXPECT_EQ(Alive(pair_->rhost), 0u);
    EXPECT_TRUE(pair_->ihost.installed.empty());
    EXPECT_TRUE(pair_->rhost.installed.empty());
  }
}

// A DELETE of a CHILD SA lost (every copy of the request, or every copy of the response):
// the deleting side gives up and its IKE SA goes; the peer's goes too, by its liveness check
// or because it got the DELETE. Both sides end with the same (no) SAs.
TEST_F(Lossy, LostChildDeleteLeavesTheSameSasOnBothSides) {
  for (bool lose_response : {false, true}) {
    for (bool from_initiator : {true, false}) {
      SCOPED_TRACE(std::string(lose_response ? "response" : "request") + " lost, deleted by the " +
                   (from_initiator ? "initiator" : "responder"));
      SetUp();
      const TimePoint t0 = At(milliseconds(1000));
      Host(lose_response ? !from_initiator : from_initiator).lose = [=](const Bytes& d) {
        const Header h = HeaderOf(d);
        return h.exchange == Exchange::kInformational && h.is_response() == lose_response;
      };
      const std::uint32_t spi = Host(from_initiator).installed.begin()->first;
      ASSERT_TRUE(Side(from_initiator).DeleteChild(spi, t0));
      RunUntil(*pair_, t0 + seconds(60));
      EXPECT_EQ(Counters(from_initiator).gave_up.informational, 1u);
      EXPECT_EQ(Alive(pair_->ihost), 0u);
      EXPECT_EQ(Alive(pair_->rhost), 0u);
      EXPECT_TRUE(pair_->ihost.installed.empty());
      EXPECT_TRUE(pair_->rhost.installed.empty());
    }
  }
}

// 2.25.2: our DELETE of the IKE SA is lost once and retransmitted; meanwhile the peer rekeys
// the IKE SA. Answering that rekey would move the CHILD SAs to a new IKE SA that outlives our
// DELETE on both sides (it did): it is refused with TEMPORARY_FAILURE, and both sides end
// with nothing.
TEST_F(Lossy, IkeRekeyCrossingOurLostDeleteIsRefused) {
  for (bool from_initiator : {true, false}) {
    SCOPED_TRACE(from_initiator ? "deleted by the initiator" : "deleted by the responder");
    SetUp();
    const TimePoint t0 = At(milliseconds(1000));
    Host(from_initiator).drop_next_send = true;  // the first copy of our DELETE
    ASSERT_TRUE(Side(from_initiator).Delete(t0));
    ASSERT_EQ(Side(from_initiator).state(), State::kDeleting);
    ASSERT_TRUE(Side(!from_initiator).RekeyIke(t0));
    pair_->Pump(t0);
    RunUntil(*pair_, t0 + seconds(30));
    EXPECT_EQ(Alive(pair_->ihost), 0u) << "an IKE SA outlived the DELETE";
    EXPECT_EQ(Alive(pair_->rhost), 0u) << "an IKE SA outlived the DELETE";
    EXPECT_TRUE(pair_->ihost.installed.empty());
    EXPECT_TRUE(pair_->rhost.installed.empty());
  }
}

// 2.25.1: the same for a CHILD SA: our DELETE of it is lost once, the peer rekeys it
// meanwhile. Its successor must not outlive the DELETE; the IKE SA stays.
TEST_F(Lossy, ChildRekeyCrossingOurLostDeleteIsRefused) {
  for (bool from_initiator : {true, false}) {
    SCOPED_TRACE(from_initiator ? "deleted by the initiator" : "deleted by the responder");
    SetUp();
    const TimePoint t0 = At(milliseconds(1000));
    const std::uint32_t ours = Host(from_initiator).installed.begin()->first;
    const std::uint32_t theirs = Host(!from_initiator).installed.begin()->first;
    Host(from_initiator).drop_next_send = true;
    ASSERT_TRUE(Side(from_initiator).DeleteChild(ours, t0));
    ASSERT_TRUE(Side(!from_initiator).RekeyChild(theirs, t0));
    pair_->Pump(t0);
    RunUntil(*pair_, t0 + seconds(30));
    EXPECT_EQ(pair_->initiator->state(), State::kEstablished);
    EXPECT_EQ(pair_->responder->state(), State::kEstablished);
    EXPECT_TRUE(pair_->ihost.installed.empty()) << "a successor outlived the DELETE";
    EXPECT_TRUE(pair_->rhost.installed.empty()) << "a successor outlived the DELETE";
    // The refusal asks the rekeying side to try later: a retry, not a failed negotiation.
    EXPECT_EQ(Counters(!from_initiator).child_failures, 0u);
    EXPECT_GE(Counters(!from_initiator).rekey_retries, 1u);
  }
}

// 5, 20 and 40 % of all datagrams lost both ways, over many rekeys of both kinds: whatever
// happens, the two sides never disagree once the link is clean again and the timers settled,
// and a CHILD SA is installed throughout on a side whose IKE SA is up.
TEST(LossyRandom, RandomLossNeverLeavesOneSidedSas) {
  for (int percent : {5, 20, 40}) {
    SCOPED_TRACE(std::to_string(percent) + " % loss");
    std::uint64_t seed = 0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(percent);
    auto lossy = [&seed, percent](const Bytes&) {
      seed = seed * 6364136223846793005ull + 1442695040888963407ull;
      return static_cast<int>((seed >> 33) % 100) < percent;
    };
    int established = 0, failed = 0;
    const int trials = getenv("LOSSY_TRIALS") ? atoi(getenv("LOSSY_TRIALS")) : 20;
    for (int trial = 0; trial < trials; ++trial) {
      LoopbackPair pair(LossyConnection(true), LossyConnection(false));
      pair.ihost.lose = lossy;
      pair.rhost.lose = lossy;
      TimePoint now = At(milliseconds(0));
      pair.initiator->Initiate(now);
      pair.Pump(now);
      now += seconds(8);  // IKE_SA_INIT and IKE_AUTH each given up within 3 s
      RunUntil(pair, now);
      if (pair.initiator->state() != State::kEstablished) {
        ++failed;
        EXPECT_EQ(pair.initiator->state(), State::kDead);
        EXPECT_FALSE(pair.initiator->failure().empty());
      } else {
        ++established;
        for (int round = 0; round < 8; ++round) {
          now += seconds(5);
          // From both sides, overlapping: CHILD rekeys, an IKE rekey, a new CHILD SA and its
          // DELETE, and in the last round a DELETE of the IKE SA.
          IkeSa* i = pair.initiator.get();
          IkeSa* r = pair.responder.get();
          IkeSa* by = round % 2 == 0 ? i : r;
          const bool up = i->state() == State::kEstablished && r->state() == State::kEstablished;
          if (up && !by->children().empty()) by->RekeyChild(by->children()[0].spi_in, now);
          if (up && round % 3 == 1) (round % 2 == 0 ? r : i)->RekeyIke(now);
          if (up && round % 4 == 2) by->CreateChild(now);
          if (up && round % 4 == 3 && by->children().size() > 1) by->DeleteChild(by->children().back().spi_in, now);
          if (up && round == 7) by->Delete(now);
          pair.Pump(now);
          RunUntil(pair, now + seconds(4));
          if (pair.initiator->state() == State::kEstablished && !pair.initiator->rekeyed()) {
            EXPECT_FALSE(pair.ihost.installed.empty()) << "an established tunnel without a CHILD SA";
          }
        }
      }
      // The link is clean again; let every timer run out.
      pair.ihost.lose = nullptr;
      pair.rhost.lose = nullptr;
      RunUntil(pair, now + seconds(120));
      EXPECT_EQ(Alive(pair.ihost), Alive(pair.rhost)) << "trial " << trial;
      EXPECT_LE(Alive(pair.ihost), 1u) << "trial " << trial;
      ExpectSameChildSas(pair);
      EXPECT_EQ(pair.ihost.live_spis.size(), pair.ihost.installed.size()) << "an SPI without an SA";
      EXPECT_EQ(pair.rhost.live_spis.size(), pair.rhost.installed.size()) << "an SPI without an SA";
    }
    std::printf("%d %% loss: %d established, %d failed\n", percent, established, failed);
  }
}

}  // namespace loss_test
}  // namespace spigot::ike
