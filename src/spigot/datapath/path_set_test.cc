// SA commands across several data-path threads (path_set.h), with real threads and no network:
// each thread owns an InboundPath and an OutboundPath and handles what it reads the way
// app/dataplane.cc's threads do (take the mailboxes, wait for input, handle the batch).
#include "spigot/datapath/path_set.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "spigot/datapath/handoff.h"

// A namespace of its own: the unity build compiles this beside datapath_test.cc.
namespace spigot::datapath::path_set_test {
namespace {

constexpr policy::PolicyId kPolicy = 3;
constexpr std::size_t kThreads = 2;
using Clock = std::chrono::steady_clock;

crypto::ImbManager& Mgr() { return crypto::ImbManager::ForThisThread(); }

std::unique_ptr<const policy::SpdSnapshot> Snapshot(const char* local, const char* remote) {
  policy::SpdBuilder b;
  b.Add(kPolicy, *policy::Prefix::Parse(local), *policy::Prefix::Parse(remote));
  return b.Build();
}

// An IPv4 UDP packet; bytes 28-31 carry `id` (the payload), so a packet can be told apart
// after a round trip through ESP.
std::vector<std::uint8_t> Inner(std::array<std::uint8_t, 4> src, std::array<std::uint8_t, 4> dst,
                                std::uint32_t id) {
  std::vector<std::uint8_t> p(84, 0x5a);
  p[0] = 0x45;
  p[2] = 0;
  p[3] = 84;
  p[8] = 64;
  p[9] = 17;
  std::memcpy(&p[12], src.data(), 4);
  std::memcpy(&p[16], dst.data(), 4);
  std::memcpy(&p[28], &id, 4);
  return p;
}
std::uint32_t IdOf(std::span<const std::uint8_t> inner) {
  std::uint32_t id = 0;
  std::memcpy(&id, inner.data() + 28, 4);
  return id;
}
std::uint32_t SpiOf(std::span<const std::uint8_t> esp) {
  return std::uint32_t{esp[0]} << 24 | std::uint32_t{esp[1]} << 16 | std::uint32_t{esp[2]} << 8 | esp[3];
}
std::uint32_t SeqOf(std::span<const std::uint8_t> esp) { return SpiOf(esp.subspan(4)); }

crypto::SecureBytes Keymat(std::uint32_t spi) {
  crypto::SecureBytes k;
  k.Resize(crypto::SuiteInfo(crypto::EspSuite::kAesGcm128).keymat_len());
  for (std::size_t i = 0; i < k.size(); ++i) k.data()[i] = static_cast<std::uint8_t>(i * 7 + spi);
  return k;
}

OutboundSpec Outbound(std::uint32_t spi) {
  OutboundSpec out;
  out.policy = kPolicy;
  out.spi = spi;
  out.keymat = Keymat(spi);
  out.peer = *io::Endpoint::Parse("192.0.2.2", 4500);
  return out;
}

InboundSpec Inbound(std::uint32_t spi) {
  InboundSpec in;
  in.spi = spi;
  in.keymat = Keymat(spi);
  in.policy = kPolicy;
  return in;
}

// Seals `inner` with `path` (a peer's or ours, on the calling thread); empty if not sent.
std::vector<std::uint8_t> Seal(OutboundPath& path, policy::Spd::Reader& reader,
                               const std::vector<std::uint8_t>& inner,
                               OutboundPath::Verdict* verdict = nullptr) {
  std::vector<std::uint8_t> buf(esp::kSealHeadroom + inner.size() + esp::kSealTailroom);
  std::memcpy(buf.data() + esp::kSealHeadroom, inner.data(), inner.size());
  esp::PacketView pkt{buf, esp::kSealHeadroom, inner.size()};
  const Route* route = nullptr;
  const auto v = path.Process(Mgr(), reader, pkt, route, Clock::now());
  if (verdict != nullptr) *verdict = v;
  if (v != OutboundPath::Verdict::kSend) return {};
  return {pkt.bytes().begin(), pkt.bytes().end()};
}

// Our gateway: 198.51.100.0/24 behind us, 203.0.113.0/24 behind the peer; kThreads threads'
// paths in one PathSet, sharing the counters as app/dataplane.cc's do.
struct Gateway {
  Gateway() : spd(Snapshot("198.51.100.0/24", "203.0.113.0/24")) {
    for (std::size_t i = 0; i < kThreads; ++i) {
      in.push_back(std::make_unique<InboundPath>(counters, spd));
      out.push_back(std::make_unique<OutboundPath>(
          counters, spd,
          [this](policy::PolicyId id) {
            acquired.fetch_add(1);
            acquired_policy = id;
            return true;
          },
          nullptr, paths.held()));
      paths.Add(*in.back(), *out.back());
    }
  }
  Counters counters;
  policy::Spd spd;
  PathSet paths;
  std::vector<std::unique_ptr<InboundPath>> in;
  std::vector<std::unique_ptr<OutboundPath>> out;
  std::atomic<int> acquired{0};
  std::atomic<policy::PolicyId> acquired_policy{policy::kNoPolicy};
};

// The peer: seals what it sends to us with the SAs we install inbound.
struct Peer {
  Peer() : spd(Snapshot("203.0.113.0/24", "198.51.100.0/24")), out(counters, spd, nullptr, nullptr),
           reader(*spd.RegisterReader()) {}
  std::vector<std::uint8_t> Send(std::uint32_t spi, std::uint32_t id) {
    if (spi != current) {
      EXPECT_TRUE(out.SetSa(Outbound(spi)));
      out.ApplyCommands(Mgr(), [](const Route&, std::span<const std::uint8_t>) {});
      current = spi;
    }
    return Seal(out, reader, Inner({203, 0, 113, 5}, {198, 51, 100, 1}, id));
  }
  Counters counters;
  policy::Spd spd;
  OutboundPath out;
  policy::Spd::Reader reader;
  std::uint32_t current = 0;
};

// What a thread reads (from its TUN queue or its UDP socket) and what must become of it.
struct Item {
  bool outbound = false;          // an inner packet to seal, else an ESP datagram to open
  std::vector<std::uint8_t> bytes;
  std::uint32_t expect_spi = 0;   // outbound: the SPI it must leave with; 0: dropped (no SA)
  bool expect_delivered = false;  // inbound
};

// A data-path thread as app/dataplane.cc runs one: take the mailboxes, wait for input, then
// handle what was read. Between the two, the control thread may push a command and the input
// that depends on it arrive: the thread must still handle that input with the command applied.
class Worker {
 public:
  Worker(Gateway& gw, std::size_t index) : gw_(gw), index_(index), thread_([this] { Run(); }) {}
  ~Worker() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void Give(Item item) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      items_.push_back(std::move(item));
      ++given_;
    }
    cv_.notify_all();
  }
  // Returns once every item given is handled and the thread waits for input again (its
  // mailboxes taken before it started waiting).
  void WaitIdle() {
    std::unique_lock<std::mutex> lock(mu_);
    idle_cv_.wait(lock, [this] { return waiting_ && handled_ == given_; });
  }
  std::vector<std::string> failures() {
    std::lock_guard<std::mutex> lock(mu_);
    return failures_;
  }

 private:
  void Run() {
    auto reader = gw_.spd.RegisterReader();
    OutboundPath& out = *gw_.out[index_];
    InboundPath& in = *gw_.in[index_];
    for (;;) {
      out.ApplyCommands(Mgr(), [](const Route&, std::span<const std::uint8_t>) {});
      in.ApplyCommands();
      std::deque<Item> batch;
      {
        std::unique_lock<std::mutex> lock(mu_);
        waiting_ = true;
        idle_cv_.notify_all();
        cv_.wait(lock, [this] { return stop_ || !items_.empty(); });
        waiting_ = false;
        if (items_.empty()) return;
        batch.swap(items_);
      }
      std::vector<std::string> failed;
      for (Item& item : batch) {
        if (item.outbound) {
          OutboundPath::Verdict v;
          const auto esp = Seal(out, *reader, item.bytes, &v);
          const std::uint32_t spi = esp.empty() ? 0 : SpiOf(esp);
          if (spi != item.expect_spi)
            failed.push_back("thread " + std::to_string(index_) + " sealed with SPI " +
                             std::to_string(spi) + ", expected " + std::to_string(item.expect_spi));
        } else {
          esp::PacketView pkt{item.bytes, 0, item.bytes.size()};
          std::span<const std::uint8_t> ike;
          const bool delivered = in.Process(Mgr(), *reader, pkt, ike) == InboundPath::Verdict::kDeliver;
          if (delivered != item.expect_delivered)
            failed.push_back("thread " + std::to_string(index_) + (delivered ? " opened" : " dropped") +
                             " an ESP packet of SPI " + std::to_string(SpiOf(item.bytes)));
        }
      }
      std::lock_guard<std::mutex> lock(mu_);
      handled_ += batch.size();
      failures_.insert(failures_.end(), failed.begin(), failed.end());
    }
  }

  Gateway& gw_;
  std::size_t index_;
  std::mutex mu_;
  std::condition_variable cv_, idle_cv_;
  std::deque<Item> items_;
  std::size_t given_ = 0, handled_ = 0;
  bool waiting_ = false, stop_ = false;
  std::vector<std::string> failures_;
  std::thread thread_;
};

// Make-before-break across threads: once the control thread's call returns, every thread
// handles its next packet with the change, whichever thread it is. Round after round an SA pair
// is installed (inbound on its owner, outbound on every thread) and the previous one removed;
// right after the calls return, each thread is given packets it must seal with the new SA, the
// owner datagrams of the new SA it must open and one of the removed SA it must refuse. Every
// thread had taken its mailboxes and was waiting for input when the calls were made (as a
// thread between its mailbox check and its read), so only a path that applies what was pushed
// before the packet came passes.
TEST(PathSetThreads, AnSaChangeIsInForceOnEveryThreadWhenTheCallReturns) {
  constexpr std::uint32_t kRounds = 60;
  constexpr std::uint32_t kPacketsPerThread = 4;
  Gateway gw;
  Peer peer;
  std::vector<std::unique_ptr<Worker>> workers;
  for (std::size_t i = 0; i < kThreads; ++i) workers.push_back(std::make_unique<Worker>(gw, i));
  const auto out_spi = [](std::uint32_t r) { return 0xA0000000u + r; };
  const auto in_spi = [](std::uint32_t r) { return 0xB0000000u + r; };
  std::uint32_t id = 0;
  for (std::uint32_t r = 1; r <= kRounds; ++r) {
    // What the peer sends on the new SA and, too late, on the old one: sealed beforehand.
    const auto on_new = peer.Send(in_spi(r), ++id), on_new2 = peer.Send(in_spi(r), ++id);
    const auto on_old = r > 1 ? peer.Send(in_spi(r - 1), ++id) : std::vector<std::uint8_t>{};
    for (auto& w : workers) w->WaitIdle();
    // A rekey as the gateway makes it: the new pair, then the old one goes.
    gw.paths.InstallInbound(Inbound(in_spi(r)));
    gw.paths.SetOutbound(Outbound(out_spi(r)));
    if (r > 1) {
      gw.paths.ClearOutbound(kPolicy, out_spi(r - 1));
      gw.paths.RemoveInbound(in_spi(r - 1));
    }
    ASSERT_EQ(gw.paths.backlog(), 0u);
    for (auto& w : workers) {
      for (std::uint32_t k = 0; k < kPacketsPerThread; ++k)
        w->Give({true, Inner({198, 51, 100, 1}, {203, 0, 113, 5}, ++id), out_spi(r), false});
    }
    Worker& owner = *workers[OwnerOf(in_spi(r), kThreads)];
    owner.Give({false, on_new, 0, true});
    owner.Give({false, on_new2, 0, true});
    if (r > 1) workers[OwnerOf(in_spi(r - 1), kThreads)]->Give({false, on_old, 0, false});
  }
  // The last SA goes: no thread seals with it once the call returned.
  for (auto& w : workers) w->WaitIdle();
  gw.paths.ClearOutbound(kPolicy, out_spi(kRounds));
  for (auto& w : workers) w->Give({true, Inner({198, 51, 100, 1}, {203, 0, 113, 5}, ++id), 0, false});
  for (auto& w : workers) w->WaitIdle();
  for (auto& w : workers) {
    const auto failures = w->failures();
    EXPECT_TRUE(failures.empty()) << failures.size() << " packets handled with an SA state older "
                                  << "than the calls that returned before they came, first: "
                                  << failures.front();
  }
  EXPECT_EQ(gw.counters.tx_packets.load(), kRounds * kPacketsPerThread * kThreads);
  EXPECT_EQ(gw.counters.rx_packets.load(), 2 * kRounds);
  EXPECT_EQ(gw.counters.unknown_spi.load(), kRounds - 1);
  EXPECT_EQ(gw.counters.no_sa.load(), kThreads);
}

// A command for every thread reaches all of their mailboxes or none: with one thread's mailbox
// full, an outbound SA waits whole in the backlog (the other thread does not get it alone and
// send with an SA its sibling lacks), and later commands wait behind it in order.
TEST(PathSet, ACommandForEveryThreadReachesAllOrNoneAndTheBacklogKeepsOrder) {
  Gateway gw;
  for (std::size_t i = 0; i < bounds::kDataplaneMailbox; ++i)
    ASSERT_TRUE(gw.out[1]->SetTrap(99, false));  // thread 1 is a full mailbox behind
  gw.paths.SetOutbound(Outbound(0xA1));
  gw.paths.InstallInbound(Inbound(0xB0));  // owner: thread 0, whose mailbox has room
  EXPECT_EQ(gw.paths.backlog(), 2u) << "a command overtook one waiting in the backlog";
  EXPECT_EQ(gw.out[0]->mailbox_depth(), 0u) << "thread 0 got an SA thread 1 has not";
  EXPECT_EQ(gw.in[0]->mailbox_depth(), 0u);
  gw.paths.Tick();
  EXPECT_EQ(gw.paths.backlog(), 2u);
  gw.out[1]->ApplyCommands(Mgr(), [](const Route&, std::span<const std::uint8_t>) {});
  gw.paths.Tick();
  EXPECT_EQ(gw.paths.backlog(), 0u);
  EXPECT_EQ(gw.paths.backlog_peak(), 2u);
  EXPECT_EQ(gw.out[0]->mailbox_depth(), 1u);
  EXPECT_EQ(gw.out[1]->mailbox_depth(), 1u);
  EXPECT_EQ(gw.in[0]->mailbox_depth(), 1u);
  EXPECT_EQ(gw.in[1]->mailbox_depth(), 0u) << "an inbound SA goes to its owner alone";
  // Both copies seal, from one sequence counter.
  std::set<std::uint32_t> seqs;
  for (auto& out : gw.out) {
    auto reader = gw.spd.RegisterReader();
    for (int k = 0; k < 3; ++k) {
      const auto esp = Seal(*out, *reader, Inner({198, 51, 100, 1}, {203, 0, 113, 5}, 1));
      ASSERT_FALSE(esp.empty());
      EXPECT_EQ(SpiOf(esp), 0xA1u);
      EXPECT_TRUE(seqs.insert(SeqOf(esp)).second) << "sequence number sent twice";
    }
  }
}

// Trap policies with several threads: a policy whose packets come in on both threads at once
// raises one acquire, not one per thread; the held packets are bounded once for the gateway
// (AcquireQueueOptions::max_packets_per_acquire, not that many per thread) and every refusal is
// counted once; the SA flushes each held packet exactly once, in each thread's order; a failed
// negotiation drops them counted once.
class TrapAcrossThreads : public ::testing::TestWithParam<bool> {};

// The held packets the paths flush, from whichever thread sends them.
struct Flushed {
  std::mutex mu;
  std::vector<std::vector<std::uint8_t>> packets;
  auto Sender() {
    return [this](const Route&, std::span<const std::uint8_t> d) {
      std::lock_guard<std::mutex> lock(mu);
      packets.emplace_back(d.begin(), d.end());
    };
  }
  void CatchAll(Gateway& gw) {
    for (auto& out : gw.out) out->SendHeldBy(Sender());
  }
};

TEST_P(TrapAcrossThreads, OneAcquireAndOneBoundPerPolicyNotPerThread) {
  const bool negotiation_fails = GetParam();
  constexpr std::uint32_t kPerThread = 40;
  const std::size_t bound = policy::AcquireQueueOptions{}.max_packets_per_acquire;
  Gateway gw;
  Flushed flushed_by;
  flushed_by.CatchAll(gw);
  auto& flushed = flushed_by.packets;
  gw.paths.SetTrap(kPolicy, true);
  std::atomic<std::size_t> held{0}, refused{0};
  std::atomic<int> ready{0};
  auto burst = [&](std::size_t t) {
    auto reader = gw.spd.RegisterReader();
    ready.fetch_add(1);
    while (ready.load() < static_cast<int>(kThreads)) std::this_thread::yield();
    for (std::uint32_t i = 0; i < kPerThread; ++i) {
      OutboundPath::Verdict v;
      Seal(*gw.out[t], *reader,
           Inner({198, 51, 100, 1}, {203, 0, 113, static_cast<std::uint8_t>(t + 1)},
                 static_cast<std::uint32_t>(t << 16 | i)),
           &v);
      ASSERT_NE(v, OutboundPath::Verdict::kSend);
      (v == OutboundPath::Verdict::kHeld ? held : refused).fetch_add(1);
    }
  };
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < kThreads; ++t) threads.emplace_back(burst, t);
  for (auto& t : threads) t.join();
  threads.clear();
  EXPECT_EQ(gw.acquired.load(), 1) << "one acquire per policy, not one per thread";
  EXPECT_EQ(gw.acquired_policy.load(), kPolicy);
  EXPECT_EQ(gw.counters.acquires.load(), 1u);
  EXPECT_EQ(held.load(), bound) << "the bound is per gateway, not per thread";
  EXPECT_EQ(refused.load(), kThreads * kPerThread - bound);
  EXPECT_EQ(gw.counters.no_sa_queue_full.load(), kThreads * kPerThread - bound);
  EXPECT_EQ(gw.paths.held()->stats().packets_in_use, bound);
  for (auto& out : gw.out) EXPECT_EQ(out->acquire_stats().packets_in_use, bound);

  if (negotiation_fails)
    gw.paths.AcquireFailed(kPolicy);
  else
    gw.paths.SetOutbound(Outbound(0xA7));
  // Both threads take the command at once.
  ready = 0;
  for (std::size_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ready.fetch_add(1);
      while (ready.load() < static_cast<int>(kThreads)) std::this_thread::yield();
      gw.out[t]->ApplyCommands(Mgr(), flushed_by.Sender());
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(gw.paths.held()->stats().packets_in_use, 0u);
  if (negotiation_fails) {
    EXPECT_TRUE(flushed.empty());
    EXPECT_EQ(gw.counters.acquire_dropped.load(), bound) << "each held packet dropped once";
    return;
  }
  EXPECT_EQ(gw.counters.acquire_dropped.load(), 0u);
  ASSERT_EQ(flushed.size(), bound) << "each held packet sent once";
  // Opened in sequence order by the peer: every id once, each thread's in the order it read them.
  std::sort(flushed.begin(), flushed.end(),
            [](const auto& a, const auto& b) { return SeqOf(a) < SeqOf(b); });
  Counters peer_counters;
  policy::Spd peer_spd(Snapshot("203.0.113.0/24", "198.51.100.0/24"));
  auto peer_reader = peer_spd.RegisterReader();
  InboundPath peer_in(peer_counters, peer_spd);
  InboundSpec spec = Inbound(0xA7);
  ASSERT_TRUE(peer_in.Install(std::move(spec)));
  std::set<std::uint32_t> ids;
  std::uint32_t last[kThreads] = {0, 0};
  bool seen[kThreads] = {false, false};
  for (auto& d : flushed) {
    esp::PacketView pkt{d, 0, d.size()};
    std::span<const std::uint8_t> ike;
    ASSERT_EQ(peer_in.Process(Mgr(), *peer_reader, pkt, ike), InboundPath::Verdict::kDeliver);
    const std::uint32_t got = IdOf(pkt.bytes());
    EXPECT_TRUE(ids.insert(got).second) << "held packet " << got << " sent twice";
    const std::size_t t = got >> 16;
    ASSERT_LT(t, kThreads);
    if (seen[t]) {
      EXPECT_GT(got & 0xffff, last[t]) << "thread " << t << "'s held packets reordered";
    }
    seen[t] = true;
    last[t] = got & 0xffff;
  }
}

INSTANTIATE_TEST_SUITE_P(SaOrFailure, TrapAcrossThreads, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "NegotiationFails" : "SaArrives"; });

// The SA arrives while both threads are still reading packets for the trap policy: one acquire
// all along, no packet both held and sent or lost, none left held, and none sent twice.
TEST(PathSetThreads, AnSaArrivingMidStreamFlushesOnceAndRaisesNoSecondAcquire) {
  constexpr std::size_t kSentAfter = 500;  // per thread, once the SA is there
  Gateway gw;
  Flushed flushed_by;
  flushed_by.CatchAll(gw);
  auto& flushed = flushed_by.packets;
  gw.paths.SetTrap(kPolicy, true);
  std::atomic<std::size_t> read{0}, sent{0}, refused{0};
  std::atomic<bool> stop{false};
  // A path that never takes the SA must fail the test, not hang it.
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto reader = gw.spd.RegisterReader();
      std::size_t sent_here = 0;
      for (std::uint32_t i = 0; (!stop.load() || sent_here < kSentAfter) && Clock::now() < deadline; ++i) {
        const std::uint32_t id = static_cast<std::uint32_t>(t << 16 | (i & 0xffff));
        OutboundPath::Verdict v;
        Seal(*gw.out[t], *reader,
             Inner({198, 51, 100, 1}, {203, 0, 113, static_cast<std::uint8_t>(t + 1)}, id), &v);
        read.fetch_add(1);
        if (v == OutboundPath::Verdict::kSend) {
          sent.fetch_add(1);
          ++sent_here;
        } else if (v == OutboundPath::Verdict::kDrop) {
          refused.fetch_add(1);
        }
      }
    });
  }
  while (gw.acquired.load() == 0) std::this_thread::yield();
  gw.paths.SetOutbound(Outbound(0xA9));
  stop = true;
  for (auto& t : threads) t.join();
  ASSERT_LT(Clock::now(), deadline) << "a thread never sealed with the SA";
  EXPECT_EQ(gw.acquired.load(), 1) << "a second acquire for a policy whose SA a thread had";
  EXPECT_EQ(gw.counters.acquires.load(), 1u);
  EXPECT_EQ(gw.paths.held()->stats().packets_in_use, 0u) << "packets left held with the SA up";
  EXPECT_EQ(refused.load(), gw.counters.no_sa_queue_full.load());
  EXPECT_EQ(gw.counters.no_sa.load(), 0u);
  EXPECT_EQ(sent.load() + flushed.size() + refused.load(), read.load()) << "a packet lost or sent twice";
  EXPECT_EQ(gw.counters.tx_packets.load(), sent.load() + flushed.size());
  EXPECT_EQ(flushed.size(), gw.paths.held()->stats().flushed);
}

}  // namespace
}  // namespace spigot::datapath::path_set_test
