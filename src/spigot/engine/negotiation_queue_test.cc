#include "spigot/engine/negotiation_queue.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace spigot::engine {
namespace {

using P = Priority;

// The queue's edges as a table: a sequence of submissions to a queue of depth 3, the status of
// each, and then the order in which everything queued runs.
TEST(NegotiationQueue, FullQueueRefusesOrEvictsTheLowestPriorityFirst) {
  NegotiationQueue q(3);
  std::vector<std::string> ran;
  auto item = [&](std::string name) { return [&ran, name] { ran.push_back(name); }; };
  struct Row {
    P prio;
    const char* name;
    std::uint32_t want;
  };
  const Row rows[] = {
      {P::kNew, "init1", kStatusSuccess},
      {P::kNew, "init2", kStatusSuccess},
      {P::kHalfOpen, "auth1", kStatusSuccess},
      {P::kNew, "init3", kStatusIpsecQueueOverflow},   // full, nothing lower: refused
      {P::kEstablished, "rekey1", kStatusSuccess},     // full: evicts init2 (newest kNew)
      {P::kEstablished, "rekey2", kStatusSuccess},     // evicts init1
      {P::kEstablished, "rekey3", kStatusSuccess},     // evicts auth1
      {P::kEstablished, "rekey4", kStatusIpsecQueueOverflow},  // only rekeys left: refused
  };
  for (const Row& r : rows) EXPECT_EQ(q.Submit(r.prio, item(r.name)), r.want) << r.name;
  EXPECT_EQ(q.depth(), 3u);
  EXPECT_EQ(q.stats().overflows, 5u);
  EXPECT_EQ(q.stats().evicted, 3u);
  EXPECT_EQ(q.Run(100), 3u);
  EXPECT_EQ(ran, (std::vector<std::string>{"rekey1", "rekey2", "rekey3"}));
}

TEST(NegotiationQueue, HighestPriorityFirstFifoWithin) {
  NegotiationQueue q(10);
  std::string order;
  q.Submit(P::kNew, [&] { order += "n1 "; });
  q.Submit(P::kHalfOpen, [&] { order += "h1 "; });
  q.Submit(P::kNew, [&] { order += "n2 "; });
  q.Submit(P::kEstablished, [&] { order += "e1 "; });
  q.Submit(P::kHalfOpen, [&] { order += "h2 "; });
  EXPECT_EQ(q.Run(2), 2u);
  EXPECT_EQ(order, "e1 h1 ");
  q.Run(10);
  EXPECT_EQ(order, "e1 h1 h2 n1 n2 ");
  EXPECT_EQ(q.depth(), 0u);
}

TEST(NegotiationQueue, ResizeTakesEffectForNewArrivals) {
  NegotiationQueue q(1);
  EXPECT_EQ(q.Submit(P::kNew, [] {}), kStatusSuccess);
  EXPECT_EQ(q.Submit(P::kNew, [] {}), kStatusIpsecQueueOverflow);
  q.SetMaxDepth(2);
  EXPECT_EQ(q.Submit(P::kNew, [] {}), kStatusSuccess);
  q.SetMaxDepth(1);  // lowering never drops what is queued
  EXPECT_EQ(q.depth(), 2u);
  EXPECT_EQ(q.Submit(P::kNew, [] {}), kStatusIpsecQueueOverflow);
}

TEST(NegotiationQueue, RunStopsAboveTheLowestPriorityAllowed) {
  NegotiationQueue q(10);
  std::string order;
  q.Submit(P::kNew, [&] { order += "n1 "; });
  q.Submit(P::kEstablished, [&] { order += "e1 "; });
  q.Submit(P::kHalfOpen, [&] { order += "h1 "; });
  EXPECT_EQ(q.Run(10, P::kHalfOpen), 2u);  // the workers are busy: new work waits
  EXPECT_EQ(order, "e1 h1 ");
  EXPECT_EQ(q.depth(P::kNew), 1u);
  EXPECT_EQ(q.Run(10, P::kEstablished), 0u);
  EXPECT_EQ(q.Run(10), 1u);
  EXPECT_EQ(order, "e1 h1 n1 ");
}

}  // namespace
}  // namespace spigot::engine
