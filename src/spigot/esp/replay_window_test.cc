// Replay window edges as a table (STYLE.md 10; cf. WireGuard selftest/counter.c). Each row is
// one received packet, in order; `expect` is the verdict, and accepted packets are marked
// received (as after a verified ICV).
#include "spigot/esp/replay_window.h"

#include <gtest/gtest.h>

#include <vector>

namespace spigot::esp {
namespace {

using V = ReplayWindow::Verdict;

struct Step {
  std::uint64_t seq;  // full sequence number; the window sees its low 32 bits
  V expect;
  const char* what;
};

void RunTable(std::uint32_t size, bool esn, const std::vector<Step>& steps) {
  ReplayWindow w(size, esn);
  int row = 0;
  for (const Step& s : steps) {
    std::uint64_t full = 0;
    const V got = w.Check(static_cast<std::uint32_t>(s.seq), full);
    EXPECT_EQ(got, s.expect) << "row " << row << " (" << s.what << "), seq " << s.seq;
    if (got == V::kOk) {
      EXPECT_EQ(full, s.seq) << "row " << row << " (" << s.what << "): inferred wrong seq";
      w.Update(full);
    }
    ++row;
  }
}

TEST(ReplayWindow, EdgesWindow64) {
  RunTable(64, false, {
      {0, V::kTooOld, "sequence number 0 is never sent"},
      {1, V::kOk, "first packet"},
      {1, V::kReplay, "duplicate of the first"},
      {2, V::kOk, "next"},
      {64, V::kOk, "top = 64"},
      {1, V::kReplay, "63 behind the top: the window's last slot, seen"},
      {3, V::kOk, "61 behind: inside, never seen"},
      {3, V::kReplay, "duplicate inside the window"},
      {65, V::kOk, "top = 65: the window is now [2, 65]"},
      {1, V::kTooOld, "64 behind: just outside"},
      {2, V::kReplay, "63 behind: on the edge, seen"},
      {4, V::kOk, "61 behind the new top, unseen"},
      {1000, V::kOk, "far ahead: the whole ring is cleared"},
      {937, V::kOk, "63 behind: the last slot inside the window"},
      {936, V::kTooOld, "64 behind: the first slot outside"},
      {937, V::kReplay, "duplicate at the edge"},
      {999, V::kOk, "just below the top"},
      {1000, V::kReplay, "duplicate of the top"},
  });
}

TEST(ReplayWindow, EdgesWindow1024) {
  RunTable(1024, false, {
      {5, V::kOk, "first packet need not be 1"},
      {1, V::kOk, "older but inside the window"},
      {2000, V::kOk, "jump ahead"},
      {977, V::kOk, "1023 behind: inside"},
      {976, V::kTooOld, "1024 behind: outside"},
      {977, V::kReplay, "duplicate"},
      {2001, V::kOk, "top + 1"},
      {977, V::kTooOld, "the edge moved past it"},
      {0xFFFFFFFFull, V::kOk, "the last 32-bit sequence number"},
      {0xFFFFFFFEull, V::kOk, "one below"},
      {0xFFFFFFFFull, V::kReplay, "duplicate of the last"},
  });
}

TEST(ReplayWindow, EdgesWindow4096) {
  RunTable(4096, false, {
      {10000, V::kOk, "start high"},
      {5905, V::kOk, "4095 behind: inside"},
      {5904, V::kTooOld, "4096 behind: outside"},
      {5905, V::kReplay, "duplicate"},
      {10000 + 4096 * 3, V::kOk, "far ahead, several rings"},
      {10000, V::kTooOld, "long gone"},
  });
}

TEST(ReplayWindow, EsnHighWordRollover) {
  const std::uint64_t e = 1ull << 32;  // the first sequence number of epoch 1
  RunTable(1024, true, {
      {1, V::kOk, "first packet, epoch 0"},
      {e - 10, V::kOk, "near the end of epoch 0 (ahead, no earlier epoch exists)"},
      {e - 5, V::kOk, "still epoch 0"},
      {e + 3, V::kOk, "low half wrapped: inferred epoch 1"},
      {e - 7, V::kOk, "late packet from epoch 0, inside the window (case B: Th - 1)"},
      {e - 5, V::kReplay, "duplicate from epoch 0"},
      {e + 3, V::kReplay, "duplicate in epoch 1"},
      {e + 2000, V::kOk, "epoch 1, window now entirely in it"},
      {e + 977, V::kOk, "1023 behind: inside"},
      {e + 977, V::kReplay, "duplicate at the edge"},
      {2 * e + 5, V::kOk, "next rollover, far ahead in epoch 2"},
  });
}

// RFC 4303 A2.2 case A: with ESN a low half below the window is taken to belong to the NEXT
// epoch (the sender may have sent 2^32 packets). Only the ICV can tell; Check() says kOk with
// the inferred number, and a stale packet then fails its ICV and leaves the window alone.
TEST(ReplayWindow, EsnBelowWindowIsInferredAsNextEpoch) {
  const std::uint64_t e = 1ull << 32;
  ReplayWindow w(1024, true);
  w.Update(e + 2000);
  std::uint64_t full = 0;
  EXPECT_EQ(w.Check(976, full), V::kOk);
  EXPECT_EQ(full, 2 * e + 976);
  EXPECT_EQ(w.Check(977, full), V::kOk);
  EXPECT_EQ(full, e + 977);
}

TEST(ReplayWindow, EsnLowHalfZeroIsValidAfterRollover) {
  const std::uint64_t e = 1ull << 32;
  RunTable(64, true, {
      {e - 1, V::kOk, "last of epoch 0"},
      {e, V::kOk, "low half 0 in epoch 1 is a real sequence number"},
      {e, V::kReplay, "duplicate"},
  });
}

TEST(ReplayWindow, SizesAreClampedAndRingIsPowerOfTwo) {
  ReplayWindow small(1, false);
  EXPECT_EQ(small.size(), 64u);
  ReplayWindow big(1u << 30, false);
  EXPECT_EQ(big.size(), 65536u);
  ReplayWindow w(1024, false);
  EXPECT_EQ(w.bitmap_bytes(), 32u * 8u);  // 1024/64 + 1 = 17 blocks, rounded up to 32
  ReplayWindow odd(100, false);            // not a multiple of 64: still exact
  std::uint64_t full;
  odd.Update(1000);
  EXPECT_EQ(odd.Check(901, full), V::kOk);
  EXPECT_EQ(odd.Check(900, full), V::kTooOld);
}

TEST(ReplayWindow, CheckDoesNotUpdate) {
  ReplayWindow w(64, false);
  std::uint64_t full;
  EXPECT_EQ(w.Check(7, full), V::kOk);
  EXPECT_EQ(w.Check(7, full), V::kOk);  // a forged packet that failed its ICV leaves no trace
  w.Update(7);
  EXPECT_EQ(w.Check(7, full), V::kReplay);
}

}  // namespace
}  // namespace spigot::esp
