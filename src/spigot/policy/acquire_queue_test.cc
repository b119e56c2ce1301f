#include "spigot/policy/acquire_queue.h"

#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <random>
#include <vector>

namespace spigot::policy {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;
using TimePoint = AcquireQueue::TimePoint;

const TimePoint kT0 = TimePoint{} + std::chrono::hours(1);

// A packet whose bytes say which policy and sequence number it is.
std::vector<std::uint8_t> Packet(PolicyId id, std::uint32_t seq, std::size_t size = 100) {
  std::vector<std::uint8_t> p(size);
  for (std::size_t i = 0; i < size; ++i) p[i] = static_cast<std::uint8_t>(id * 31 + seq * 7 + i);
  return p;
}

std::vector<std::vector<std::uint8_t>> FlushAll(AcquireQueue& q, PolicyId id) {
  std::vector<std::vector<std::uint8_t>> out;
  q.Flush(id, [&](std::span<const std::uint8_t> p) { out.emplace_back(p.begin(), p.end()); });
  return out;
}

void ExpectConsistent(const AcquireQueue& q) {
  const AcquireQueueStats& s = q.stats();
  EXPECT_EQ(s.held, s.flushed + s.dropped_negotiation_failed + s.dropped_expired + s.packets_in_use);
  EXPECT_EQ(s.bytes_in_use, s.packets_in_use * q.options().buffer_size);
  EXPECT_LE(s.bytes_in_use, q.options().max_bytes);
}

TEST(AcquireQueueTest, StatusCodeIsWindowsQueueOverflow) {
  EXPECT_EQ(kStatusIpsecQueueOverflow, 0xC000A010u);
}

// The per-acquire bound at its edge: exactly N packets are held, the (N+1)th and later overflow
// with STATUS_IPSEC_QUEUE_OVERFLOW, and only the first packet opens an acquire.
TEST(AcquireQueueTest, PerAcquireBoundEdges) {
  for (const std::uint32_t n : {1u, 2u, 32u, 100u}) {
    SCOPED_TRACE(n);
    AcquireQueueOptions o;
    o.max_packets_per_acquire = n;
    AcquireQueue q(o);
    for (std::uint32_t i = 0; i < n + 3; ++i) {
      const HoldResult r = q.Hold(7, Packet(7, i), kT0);
      const bool fits = i < n;
      EXPECT_EQ(r.status, fits ? HoldStatus::kQueued : HoldStatus::kOverflow) << i;
      EXPECT_EQ(r.ntstatus, fits ? kStatusSuccess : kStatusIpsecQueueOverflow) << i;
      EXPECT_EQ(r.new_acquire, i == 0) << i;
    }
    EXPECT_EQ(q.queued(7), n);
    EXPECT_EQ(q.stats().held, n);
    EXPECT_EQ(q.stats().dropped_queue_full, 3u);
    EXPECT_EQ(q.stats().acquires_pending, 1u);
    EXPECT_EQ(q.stats().acquires_opened, 1u);
    // Another policy is not affected by this one's bound.
    EXPECT_EQ(q.Hold(8, Packet(8, 0), kT0).status, HoldStatus::kQueued);
    ExpectConsistent(q);
  }
}

TEST(AcquireQueueTest, DefaultsAre32PacketsAnd4MiB) {
  AcquireQueue q;
  EXPECT_EQ(q.options().max_packets_per_acquire, 32u);
  EXPECT_EQ(q.options().max_bytes, std::size_t{4} << 20);
  EXPECT_EQ(q.buffer_count(), 2048u);
  for (std::uint32_t i = 0; i < 32; ++i) ASSERT_EQ(q.Hold(1, Packet(1, i), kT0).status, HoldStatus::kQueued);
  EXPECT_EQ(q.Hold(1, Packet(1, 32), kT0).ntstatus, kStatusIpsecQueueOverflow);
}

// The byte bound is global: 8 buffers shared by three policies. Every packet is charged a whole
// buffer, however short.
TEST(AcquireQueueTest, GlobalByteBoundAcrossPolicies) {
  AcquireQueueOptions o;
  o.max_bytes = 8 * 2048;
  AcquireQueue q(o);
  const struct {
    PolicyId id;
    std::size_t size;
    HoldStatus want;
    bool new_acquire;
    std::size_t bytes_after;
  } kSteps[] = {
      {1, 1, HoldStatus::kQueued, true, 1 * 2048},
      {1, 2048, HoldStatus::kQueued, false, 2 * 2048},
      {1, 0, HoldStatus::kQueued, false, 3 * 2048},
      {1, 64, HoldStatus::kQueued, false, 4 * 2048},
      {1, 64, HoldStatus::kQueued, false, 5 * 2048},
      {2, 1500, HoldStatus::kQueued, true, 6 * 2048},
      {2, 1500, HoldStatus::kQueued, false, 7 * 2048},
      {2, 1500, HoldStatus::kQueued, false, 8 * 2048},
      {2, 1500, HoldStatus::kOverflow, false, 8 * 2048},
      {1, 40, HoldStatus::kOverflow, false, 8 * 2048},
      // A new policy opens its acquire (the negotiation must start) though its packet is dropped.
      {3, 40, HoldStatus::kOverflow, true, 8 * 2048},
      {3, 40, HoldStatus::kOverflow, false, 8 * 2048},
  };
  std::uint32_t seq = 0;
  for (const auto& s : kSteps) {
    const HoldResult r = q.Hold(s.id, Packet(s.id, seq, s.size), kT0);
    EXPECT_EQ(r.status, s.want) << seq;
    EXPECT_EQ(r.new_acquire, s.new_acquire) << seq;
    if (s.want == HoldStatus::kOverflow) {
      EXPECT_EQ(r.ntstatus, kStatusIpsecQueueOverflow);
    }
    EXPECT_EQ(q.stats().bytes_in_use, s.bytes_after) << seq;
    ++seq;
  }
  EXPECT_EQ(q.stats().dropped_queue_full, 4u);
  EXPECT_EQ(q.stats().acquires_pending, 3u);
  EXPECT_TRUE(q.pending(3));
  EXPECT_EQ(q.queued(3), 0u);

  // Flushing policy 1 frees five buffers; policy 3 can hold packets now.
  EXPECT_EQ(FlushAll(q, 1).size(), 5u);
  EXPECT_EQ(q.stats().bytes_in_use, 3u * 2048);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(q.Hold(3, Packet(3, i), kT0).status, HoldStatus::kQueued);
  EXPECT_EQ(q.Hold(3, Packet(3, 5), kT0).status, HoldStatus::kOverflow);
  ExpectConsistent(q);
}

TEST(AcquireQueueTest, PacketSizeEdges) {
  AcquireQueue q;
  const struct {
    std::size_t size;
    HoldStatus want;
    std::uint32_t ntstatus;
  } kCases[] = {
      {0, HoldStatus::kQueued, kStatusSuccess},
      {1, HoldStatus::kQueued, kStatusSuccess},
      {2047, HoldStatus::kQueued, kStatusSuccess},
      {2048, HoldStatus::kQueued, kStatusSuccess},
      {2049, HoldStatus::kTooLarge, kStatusInvalidBufferSize},
      {65535, HoldStatus::kTooLarge, kStatusInvalidBufferSize},
  };
  std::uint32_t seq = 0;
  for (const auto& c : kCases) {
    const HoldResult r = q.Hold(1, Packet(1, seq++, c.size), kT0);
    EXPECT_EQ(r.status, c.want) << c.size;
    EXPECT_EQ(r.ntstatus, c.ntstatus) << c.size;
  }
  EXPECT_EQ(q.stats().dropped_too_large, 2u);
  EXPECT_EQ(q.stats().dropped_queue_full, 0u);
  const auto out = FlushAll(q, 1);
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0], Packet(1, 0, 0));
  EXPECT_EQ(out[3], Packet(1, 3, 2048));

  // A too-large first packet still opens the acquire.
  const HoldResult r = q.Hold(2, Packet(2, 0, 9000), kT0);
  EXPECT_EQ(r.status, HoldStatus::kTooLarge);
  EXPECT_TRUE(r.new_acquire);
  EXPECT_TRUE(q.pending(2));
}

TEST(AcquireQueueTest, FlushDeliversInArrivalOrderPerPolicy) {
  AcquireQueue q;
  // Interleaved arrivals for three policies.
  for (std::uint32_t i = 0; i < 30; ++i) {
    const PolicyId id = 10 + i % 3;
    ASSERT_EQ(q.Hold(id, Packet(id, i, 60 + i), kT0).status, HoldStatus::kQueued);
  }
  const auto out = FlushAll(q, 11);
  ASSERT_EQ(out.size(), 10u);
  for (std::uint32_t k = 0; k < 10; ++k) EXPECT_EQ(out[k], Packet(11, 3 * k + 1, 61 + 3 * k)) << k;
  EXPECT_FALSE(q.pending(11));
  EXPECT_EQ(q.stats().flushed, 10u);
  EXPECT_EQ(q.stats().acquires_pending, 2u);
  EXPECT_EQ(q.queued(10), 10u);

  // Flushing again, or an unknown policy, delivers nothing.
  EXPECT_EQ(FlushAll(q, 11).size(), 0u);
  EXPECT_EQ(FlushAll(q, 99).size(), 0u);
  // The next packet of a flushed policy opens a new acquire.
  EXPECT_TRUE(q.Hold(11, Packet(11, 0), kT0).new_acquire);
  ExpectConsistent(q);
}

// The callback may hold packets again (the SA went away while flushing): they go to a new
// acquire and are not delivered by the flush in progress.
TEST(AcquireQueueTest, FlushCallbackMayHoldAgain) {
  AcquireQueueOptions o;
  o.max_bytes = 4 * 2048;
  AcquireQueue q(o);
  for (std::uint32_t i = 0; i < 4; ++i) q.Hold(5, Packet(5, i), kT0);
  std::vector<HoldResult> again;
  const std::size_t n = q.Flush(5, [&](std::span<const std::uint8_t> p) {
    again.push_back(q.Hold(5, p, kT0));
  });
  EXPECT_EQ(n, 4u);
  ASSERT_EQ(again.size(), 4u);
  // The first re-hold opens an acquire; the pool is full then (3 of our 4 buffers still held
  // plus the one being delivered): the buffer is freed only after the callback returns.
  EXPECT_TRUE(again[0].new_acquire);
  EXPECT_EQ(again[0].status, HoldStatus::kOverflow);
  EXPECT_EQ(again[1].status, HoldStatus::kQueued);
  EXPECT_EQ(again[3].status, HoldStatus::kQueued);
  EXPECT_EQ(q.queued(5), 3u);
  const auto out = FlushAll(q, 5);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0], Packet(5, 1));
  ExpectConsistent(q);
}

TEST(AcquireQueueTest, DropCountsNegotiationFailures) {
  AcquireQueue q;
  const struct {
    PolicyId id;
    std::uint32_t packets;
  } kPolicies[] = {{1, 0}, {2, 1}, {3, 32}, {4, 40}};
  for (const auto& p : kPolicies) {
    for (std::uint32_t i = 0; i < p.packets; ++i) q.Hold(p.id, Packet(p.id, i), kT0);
  }
  EXPECT_EQ(q.Drop(1), 0u);  // never held anything: no acquire
  EXPECT_EQ(q.Drop(2), 1u);
  EXPECT_EQ(q.Drop(3), 32u);
  EXPECT_EQ(q.Drop(4), 32u);  // 8 overflowed, never held
  EXPECT_EQ(q.Drop(4), 0u);
  EXPECT_EQ(q.stats().dropped_negotiation_failed, 65u);
  EXPECT_EQ(q.stats().dropped_queue_full, 8u);
  EXPECT_EQ(q.stats().acquires_pending, 0u);
  EXPECT_EQ(q.stats().bytes_in_use, 0u);
  EXPECT_TRUE(q.Hold(3, Packet(3, 0), kT0).new_acquire);
  ExpectConsistent(q);
}

// An acquire expires max_age after its FIRST packet; later packets do not extend it.
TEST(AcquireQueueTest, ExpiryEdges) {
  const struct {
    nanoseconds elapsed;
    bool expired;
  } kCases[] = {
      {seconds(0), false},
      {seconds(30) - nanoseconds(1), false},
      {seconds(30), true},
      {seconds(31), true},
  };
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.elapsed.count());
    AcquireQueue q;
    q.Hold(1, Packet(1, 0), kT0);
    q.Hold(1, Packet(1, 1), kT0 + seconds(29));  // does not refresh the acquire
    const ExpireResult r = q.Expire(kT0 + c.elapsed);  // default max_age: 30 s
    EXPECT_EQ(r.acquires, c.expired ? 1u : 0u);
    EXPECT_EQ(r.packets, c.expired ? 2u : 0u);
    EXPECT_EQ(q.pending(1), !c.expired);
    EXPECT_EQ(q.stats().dropped_expired, c.expired ? 2u : 0u);
    EXPECT_EQ(q.stats().acquires_expired, c.expired ? 1u : 0u);
    ExpectConsistent(q);
  }
}

TEST(AcquireQueueTest, ExpireTakesOnlyTheOldAcquires) {
  AcquireQueue q;
  for (PolicyId id = 0; id < 10; ++id) {
    // Policy id opened at kT0 + id seconds with id + 1 packets.
    for (std::uint32_t i = 0; i <= id; ++i) q.Hold(id, Packet(id, i), kT0 + seconds(id));
  }
  q.Flush(2, [](std::span<const std::uint8_t>) {});  // the SA came up; not in the age list
  EXPECT_EQ(q.Drop(3), 4u);
  // At kT0 + 14 s with max age 10 s: opened at or before kT0 + 4 s expire: 0, 1, 4.
  const ExpireResult r = q.Expire(kT0 + seconds(14), seconds(10));
  EXPECT_EQ(r.acquires, 3u);
  EXPECT_EQ(r.packets, 1u + 2u + 5u);
  for (PolicyId id = 0; id < 10; ++id) EXPECT_EQ(q.pending(id), id >= 5) << id;
  EXPECT_EQ(q.Expire(kT0 + seconds(14), seconds(10)).acquires, 0u);
  EXPECT_EQ(q.Expire(kT0 + seconds(100), seconds(10)).acquires, 5u);
  EXPECT_EQ(q.stats().acquires_pending, 0u);
  ExpectConsistent(q);
}

TEST(AcquireQueueTest, ClockGoingBackwardsDoesNotReorderAges) {
  AcquireQueue q;
  q.Hold(1, Packet(1, 0), kT0 + seconds(10));
  q.Hold(2, Packet(2, 0), kT0);  // taken as kT0 + 10 s
  EXPECT_EQ(q.Expire(kT0 + seconds(39), seconds(30)).acquires, 0u);
  EXPECT_EQ(q.Expire(kT0 + seconds(40), seconds(30)).acquires, 2u);
}

TEST(AcquireQueueTest, PendingAcquiresAreBounded) {
  AcquireQueueOptions o;
  o.max_acquires = 2;
  AcquireQueue q(o);
  EXPECT_TRUE(q.Hold(1, Packet(1, 0), kT0).new_acquire);
  EXPECT_TRUE(q.Hold(2, Packet(2, 0), kT0).new_acquire);
  const HoldResult r = q.Hold(3, Packet(3, 0), kT0);
  EXPECT_EQ(r.status, HoldStatus::kOverflow);
  EXPECT_EQ(r.ntstatus, kStatusIpsecQueueOverflow);
  EXPECT_FALSE(r.new_acquire);
  EXPECT_EQ(q.stats().acquires_refused, 1u);
  EXPECT_EQ(q.stats().dropped_queue_full, 1u);
  EXPECT_EQ(q.Hold(1, Packet(1, 1), kT0).status, HoldStatus::kQueued);  // existing ones still hold
  q.Drop(1);
  EXPECT_TRUE(q.Hold(3, Packet(3, 0), kT0).new_acquire);
}

// Random operations against a simple model; many policies, a small index, so that probe runs
// collide and deletions shift entries around.
TEST(AcquireQueueTest, RandomOperationsMatchAModel) {
  AcquireQueueOptions o;
  o.max_packets_per_acquire = 5;
  o.max_bytes = 200 * 2048;
  o.max_acquires = 64;
  AcquireQueue q(o);
  std::map<PolicyId, std::deque<std::vector<std::uint8_t>>> model;  // pending acquires
  std::map<PolicyId, TimePoint> opened;
  std::size_t in_use = 0;
  std::mt19937 rng(3);
  TimePoint now = kT0;
  for (std::uint32_t step = 0; step < 200000; ++step) {
    const PolicyId id = rng() % 100;
    const unsigned op = rng() % 100;
    if (op < 70) {
      const auto packet = Packet(id, step, rng() % 300);
      const bool had = model.count(id) != 0;
      const bool can_open = had || model.size() < o.max_acquires;
      const HoldResult r = q.Hold(id, packet, now);
      ASSERT_EQ(r.new_acquire, !had && can_open) << step;
      if (!can_open) {
        ASSERT_EQ(r.status, HoldStatus::kOverflow) << step;
        continue;
      }
      if (!had) opened[id] = now;
      auto& queue = model[id];
      const bool fits = queue.size() < o.max_packets_per_acquire && in_use < 200;
      ASSERT_EQ(r.status, fits ? HoldStatus::kQueued : HoldStatus::kOverflow) << step;
      if (fits) {
        queue.push_back(packet);
        ++in_use;
      }
    } else if (op < 85) {
      std::deque<std::vector<std::uint8_t>> got;
      q.Flush(id, [&](std::span<const std::uint8_t> p) { got.emplace_back(p.begin(), p.end()); });
      const auto it = model.find(id);
      if (it == model.end()) {
        ASSERT_TRUE(got.empty());
      } else {
        ASSERT_EQ(got, it->second) << step;
        in_use -= it->second.size();
        model.erase(it);
        opened.erase(id);
      }
    } else if (op < 95) {
      const auto it = model.find(id);
      const std::size_t want = it == model.end() ? 0 : it->second.size();
      ASSERT_EQ(q.Drop(id), want) << step;
      if (it != model.end()) {
        in_use -= want;
        model.erase(it);
        opened.erase(id);
      }
    } else {
      now += milliseconds(rng() % 2000);
      std::size_t want_acquires = 0;
      std::size_t want_packets = 0;
      for (auto it = opened.begin(); it != opened.end();) {
        if (now - it->second >= seconds(30)) {
          ++want_acquires;
          want_packets += model[it->first].size();
          in_use -= model[it->first].size();
          model.erase(it->first);
          it = opened.erase(it);
        } else {
          ++it;
        }
      }
      const ExpireResult r = q.Expire(now);
      ASSERT_EQ(r.acquires, want_acquires) << step;
      ASSERT_EQ(r.packets, want_packets) << step;
    }
    ASSERT_EQ(q.stats().packets_in_use, in_use) << step;
    ASSERT_EQ(q.stats().acquires_pending, model.size()) << step;
  }
  for (PolicyId id = 0; id < 100; ++id) {
    ASSERT_EQ(q.pending(id), model.count(id) != 0) << id;
    ASSERT_EQ(q.queued(id), model.count(id) ? model[id].size() : 0u) << id;
  }
  ExpectConsistent(q);
}

}  // namespace
}  // namespace spigot::policy
