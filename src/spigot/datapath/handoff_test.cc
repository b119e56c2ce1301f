// The hand-over ring between data-path threads: its bound, its drop policy and counter, and
// that many producers at once lose, duplicate and reorder nothing.
#include "spigot/datapath/handoff.h"

#include <gtest/gtest.h>

#include <poll.h>

#include <thread>
#include <vector>

namespace spigot::datapath {
namespace {

std::vector<std::uint8_t> Datagram(std::uint32_t producer, std::uint32_t n, std::size_t len = 64) {
  std::vector<std::uint8_t> d(len, 0x5a);
  for (int i = 0; i < 4; ++i) {
    d[i] = static_cast<std::uint8_t>(producer >> (24 - 8 * i));
    d[4 + i] = static_cast<std::uint8_t>(n >> (24 - 8 * i));
  }
  return d;
}

std::uint32_t Field(std::span<const std::uint8_t> d, std::size_t at) {
  return std::uint32_t{d[at]} << 24 | std::uint32_t{d[at + 1]} << 16 | std::uint32_t{d[at + 2]} << 8 | d[at + 3];
}

TEST(OwnerOf, IsTheSpiModuloTheThreads) {
  EXPECT_EQ(OwnerOf(0xC0DE0001, 1), 0u);
  EXPECT_EQ(OwnerOf(0xC0DE0001, 2), 1u);
  EXPECT_EQ(OwnerOf(0xC0DE0002, 2), 0u);
  EXPECT_EQ(OwnerOf(10, 4), 2u);
}

// Bound and drop policy at the edge: kCapacity datagrams fit, the next finds the ring full (the
// caller decides to wait or drop, and counts); one larger than kMaxDatagram is dropped and
// counted at once. Released cells take new datagrams.
TEST(Handoff, HoldsCapacityThenRefusesAndCountsWhatItDrops) {
  Handoff h;
  const io::Endpoint from = *io::Endpoint::Parse("192.0.2.2", 4500);
  for (std::uint32_t i = 0; i < Handoff::kCapacity; ++i)
    ASSERT_EQ(h.TryPush(Datagram(0, i), from, {}), Handoff::Push::kOk) << i;
  EXPECT_EQ(h.depth(), Handoff::kCapacity);
  EXPECT_EQ(h.TryPush(Datagram(0, 9999), from, {}), Handoff::Push::kFull);
  EXPECT_EQ(h.dropped(), 0u) << "a full ring is the caller's to count";
  h.CountDrop();
  EXPECT_EQ(h.dropped(), 1u);
  EXPECT_EQ(h.TryPush(std::vector<std::uint8_t>(Handoff::kMaxDatagram + 1), from, {}),
            Handoff::Push::kTooLarge);
  EXPECT_EQ(h.dropped(), 2u);
  // The consumer sees them in order, with their source, and frees their cells on Release().
  std::uint32_t next = 0;
  EXPECT_EQ(h.Peek(10, [&](Handoff::Item& item) {
    EXPECT_EQ(Field(item.datagram(), 4), next++);
    EXPECT_EQ(item.from, from);
  }), 10u);
  EXPECT_EQ(h.TryPush(Datagram(0, 9999), from, {}), Handoff::Push::kFull) << "cells reused before Release()";
  h.Release();
  EXPECT_EQ(h.TryPush(Datagram(0, Handoff::kCapacity), from, {}), Handoff::Push::kOk);
  EXPECT_EQ(h.depth(), Handoff::kCapacity - 9);
  EXPECT_EQ(h.pushed(), Handoff::kCapacity + 1);
}

// The wake-up: Wake() makes fd() readable for poll(), ClearWake() takes it; Peek() alone does not.
TEST(Handoff, WakeMakesTheFdReadable) {
  Handoff h;
  pollfd p{h.fd(), POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 0), 0);
  ASSERT_EQ(h.TryPush(Datagram(0, 1), {}, {}), Handoff::Push::kOk);
  h.Wake();
  ASSERT_EQ(poll(&p, 1, 0), 1);
  h.ClearWake();
  EXPECT_EQ(poll(&p, 1, 0), 0);
  EXPECT_EQ(h.Peek(8, [](Handoff::Item&) {}), 1u);
  h.Release();
}

// Three producers push at once while the owner drains: every datagram arrives once, each
// producer's in the order it pushed them (a flow that moved between threads is not reordered
// by the hand-over), none dropped when producers wait for room.
TEST(Handoff, ManyProducersLoseDuplicateAndReorderNothing) {
  constexpr std::uint32_t kProducers = 3, kEach = 20000;
  Handoff h;
  std::vector<std::thread> producers;
  for (std::uint32_t p = 0; p < kProducers; ++p) {
    producers.emplace_back([&h, p] {
      for (std::uint32_t n = 0; n < kEach; ++n) {
        const auto d = Datagram(p, n, 40 + n % 1400);
        while (h.TryPush(d, {}, {}) == Handoff::Push::kFull) std::this_thread::yield();
        if (n % 32 == 31) h.Wake();
      }
      h.Wake();
    });
  }
  std::vector<std::uint32_t> next(kProducers, 0);
  std::size_t got = 0;
  while (got < kProducers * kEach) {
    got += h.Peek(64, [&](Handoff::Item& item) {
      const std::uint32_t p = Field(item.datagram(), 0), n = Field(item.datagram(), 4);
      ASSERT_LT(p, kProducers);
      EXPECT_EQ(n, next[p]) << "producer " << p;
      EXPECT_EQ(item.length, 40 + n % 1400);
      next[p] = n + 1;
    });
    h.Release();
  }
  for (auto& t : producers) t.join();
  EXPECT_EQ(next, std::vector<std::uint32_t>(kProducers, kEach));
  EXPECT_EQ(h.Peek(64, [](Handoff::Item&) {}), 0u);
  EXPECT_EQ(h.dropped(), 0u);
  EXPECT_EQ(h.pushed(), std::uint64_t{kProducers} * kEach);
}

}  // namespace
}  // namespace spigot::datapath
