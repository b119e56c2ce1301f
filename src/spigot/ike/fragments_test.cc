// IKEv2 fragmentation (RFC 7383): the reassembly bounds on their own, then two IKE SAs in
// process with a tiny fragment_size exchanging IKE_AUTH (and later exchanges) fragmented both
// ways — out of order, duplicated, lost, forged, retransmitted.
#include "spigot/ike/fragments.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "spigot/ike/ike_sa.h"
#include "spigot/test_tools/ike_loopback.h"

namespace spigot::ike {
namespace {

using State = IkeSa::State;
using Verdict = Reassembly::Verdict;

TimePoint FragTime(int seconds) { return TimePoint{} + std::chrono::hours(1) + std::chrono::seconds(seconds); }

Bytes Content(std::size_t n, std::uint8_t fill) { return Bytes(n, fill); }

// ---- Reassembly (RFC 7383 2.6) -------------------------------------------------------------

TEST(Reassembly, OutOfOrderCompletesInFragmentOrder) {
  FragmentCounters c;
  Reassembly r;
  EXPECT_EQ(r.Add(7, 3, 3, PayloadType::kNone, Content(2, 3), FragTime(0), c), Verdict::kStored);
  EXPECT_EQ(r.Add(7, 1, 3, PayloadType::kIdi, Content(2, 1), FragTime(0), c), Verdict::kStored);
  EXPECT_EQ(r.bytes(), 4u);
  EXPECT_EQ(r.Add(7, 2, 3, PayloadType::kNone, Content(1, 2), FragTime(1), c), Verdict::kComplete);
  PayloadType first = PayloadType::kNone;
  EXPECT_EQ(r.TakeMessage(first), (Bytes{1, 1, 2, 3, 3}));
  EXPECT_EQ(first, PayloadType::kIdi);  // from fragment 1, whenever it came
  EXPECT_FALSE(r.active());
  EXPECT_EQ(c.fragments_received, 3u);
  EXPECT_EQ(c.messages_reassembled, 1u);
}

TEST(Reassembly, DuplicatesAreDroppedAndCounted) {
  FragmentCounters c;
  Reassembly r;
  ASSERT_EQ(r.Add(1, 1, 2, PayloadType::kIdi, Content(4, 1), FragTime(0), c), Verdict::kStored);
  EXPECT_FALSE(r.Wanted(1, 1, 2, c));
  EXPECT_EQ(r.Add(1, 1, 2, PayloadType::kIdi, Content(4, 9), FragTime(0), c), Verdict::kDropped);
  EXPECT_EQ(c.duplicate, 2u);
  EXPECT_EQ(r.count(), 1u);
  ASSERT_EQ(r.Add(1, 2, 2, PayloadType::kNone, Content(1, 2), FragTime(0), c), Verdict::kComplete);
  PayloadType first;
  EXPECT_EQ(r.TakeMessage(first), (Bytes{1, 1, 1, 1, 2}));  // the first copy kept
}

TEST(Reassembly, TotalFragmentsChanges) {
  FragmentCounters c;
  Reassembly r;
  ASSERT_EQ(r.Add(1, 1, 2, PayloadType::kIdi, Content(8, 1), FragTime(0), c), Verdict::kStored);
  // 2.5.2: the sender re-fragmented smaller — start over with the new fragment.
  EXPECT_EQ(r.Add(1, 2, 4, PayloadType::kNone, Content(4, 2), FragTime(1), c), Verdict::kStored);
  EXPECT_EQ(c.replaced, 1u);
  EXPECT_EQ(r.count(), 1u);
  EXPECT_EQ(r.bytes(), 4u);
  // A smaller Total Fragments than stored: an older fragmentation, dropped.
  EXPECT_FALSE(r.Wanted(1, 1, 2, c));
  EXPECT_EQ(r.Add(1, 1, 2, PayloadType::kIdi, Content(8, 1), FragTime(1), c), Verdict::kDropped);
  EXPECT_EQ(c.stale, 2u);
  EXPECT_EQ(r.count(), 1u);
}

TEST(Reassembly, AnotherMessageReplacesTheOneHeld) {
  FragmentCounters c;
  Reassembly r;
  ASSERT_EQ(r.Add(1, 1, 2, PayloadType::kIdi, Content(8, 1), FragTime(0), c), Verdict::kStored);
  EXPECT_EQ(r.Add(2, 2, 2, PayloadType::kNone, Content(3, 2), FragTime(1), c), Verdict::kStored);
  EXPECT_EQ(r.message_id(), 2u);
  EXPECT_EQ(r.bytes(), 3u);
  EXPECT_EQ(c.replaced, 1u);
}

TEST(Reassembly, NumbersAreCheckedBeforeAnything) {
  FragmentCounters c;
  EXPECT_FALSE(CheckFragmentNumbers(0, 1, c));
  EXPECT_FALSE(CheckFragmentNumbers(1, 0, c));
  EXPECT_FALSE(CheckFragmentNumbers(3, 2, c));
  EXPECT_EQ(c.malformed, 3u);
  EXPECT_TRUE(CheckFragmentNumbers(kMaxFragments, kMaxFragments, c));
  EXPECT_FALSE(CheckFragmentNumbers(1, kMaxFragments + 1, c));
  EXPECT_EQ(c.too_many, 1u);
  Reassembly r;
  EXPECT_EQ(r.Add(1, 0, 0, PayloadType::kIdi, Content(1, 1), FragTime(0), c), Verdict::kDropped);
  EXPECT_EQ(r.Add(1, 5, 4, PayloadType::kIdi, Content(1, 1), FragTime(0), c), Verdict::kDropped);
  EXPECT_FALSE(r.active());
}

TEST(Reassembly, TooLargeEndsTheReassembly) {
  FragmentCounters c;
  Reassembly r;
  const std::size_t piece = kMaxReassemblyBytes / 3 + 1;
  ASSERT_EQ(r.Add(1, 1, 4, PayloadType::kIdi, Content(piece, 1), FragTime(0), c), Verdict::kStored);
  ASSERT_EQ(r.Add(1, 2, 4, PayloadType::kNone, Content(piece, 2), FragTime(0), c), Verdict::kStored);
  EXPECT_EQ(r.Add(1, 3, 4, PayloadType::kNone, Content(piece, 3), FragTime(0), c), Verdict::kDropped);
  EXPECT_EQ(c.too_large, 1u);
  EXPECT_FALSE(r.active());
  EXPECT_EQ(r.bytes(), 0u);
}

TEST(Reassembly, IncompleteMessageTimesOutAndIsFreed) {
  FragmentCounters c;
  Reassembly r;
  ASSERT_EQ(r.Add(1, 1, 2, PayloadType::kIdi, Content(100, 1), FragTime(0), c), Verdict::kStored);
  EXPECT_EQ(r.deadline(), FragTime(0) + kReassemblyTimeout);
  EXPECT_FALSE(r.Expire(FragTime(0) + kReassemblyTimeout - std::chrono::milliseconds(1), c));
  EXPECT_TRUE(r.Expire(r.deadline(), c));
  EXPECT_FALSE(r.active());
  EXPECT_EQ(r.bytes(), 0u);
  EXPECT_EQ(c.timed_out, 1u);
  EXPECT_FALSE(r.Expire(FragTime(100), c));  // counted once
  EXPECT_EQ(c.timed_out, 1u);
}

// A flood of (authentic) fragments with every number, total and message ID: what is held never
// passes the bounds.
TEST(Reassembly, FloodOfFragmentNumbersStaysBounded) {
  FragmentCounters c;
  Reassembly r;
  std::uint32_t seed = 12345;
  auto next = [&] { return seed = seed * 1103515245u + 12345u, (seed >> 8) & 0xFFFF; };
  for (int i = 0; i < 200000; ++i) {
    const auto number = static_cast<std::uint16_t>(next());
    const auto total = static_cast<std::uint16_t>(next() % (kMaxFragments + 40));
    const std::uint32_t id = next() % 4;
    const Verdict v = r.Add(id, number % (total + 2), total, PayloadType::kNone,
                            Content(next() % 1500, 0x5A), FragTime(i / 1000), c);
    if (v == Verdict::kComplete) {
      PayloadType first;
      EXPECT_LE(r.TakeMessage(first).size(), kMaxReassemblyBytes);
    }
    ASSERT_LE(r.bytes(), kMaxReassemblyBytes);
    ASSERT_LE(r.count(), kMaxFragments);
    r.Expire(FragTime(i / 1000), c);
  }
  EXPECT_GT(c.too_many + c.malformed, 0u);
  EXPECT_GT(c.fragments_received, 0u);
}

// ---- Two IKE SAs with a tiny fragment_size --------------------------------------------------

std::shared_ptr<ConnectionParams> Conn(bool initiator, std::size_t fragment_size,
                                       bool fragmentation = true) {
  auto c = TestConnection(initiator, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  c->fragment_size = fragment_size;
  c->fragmentation = fragmentation;
  return c;
}

struct FragmentedPair {
  explicit FragmentedPair(std::size_t isize = kMinFragmentSize, std::size_t rsize = kMinFragmentSize,
                          bool rfrag = true)
      : pair(Conn(true, isize), Conn(false, rsize, rfrag)) {}

  // IKE_SA_INIT both ways; the initiator's IKE_AUTH is then waiting in the responder's inbox.
  std::vector<Bytes> RunInit() {
    pair.initiator->Initiate(FragTime(0));
    pair.Pump(FragTime(0), 1);
    std::vector<Bytes> out(pair.rhost.inbox.begin(), pair.rhost.inbox.end());
    pair.rhost.inbox.clear();
    return out;
  }
  void ToResponder(const Bytes& d, TimePoint now) { pair.responder->Receive(d, now); }
  std::vector<Bytes> TakeInitiatorInbox() {
    std::vector<Bytes> out(pair.ihost.inbox.begin(), pair.ihost.inbox.end());
    pair.ihost.inbox.clear();
    return out;
  }

  LoopbackPair pair;
};

std::uint16_t FragmentNumber(const Bytes& d) {
  Message m;
  const ParseResult r = ParseMessage(d, m);
  return r.fragment ? r.fragment_number : 0;
}

TEST(IkeFragmentation, IkeAuthFragmentedBothWaysAndLaterExchangesToo) {
  FragmentedPair f;
  f.pair.initiator->Initiate(FragTime(0));
  f.pair.Pump(FragTime(0));
  ASSERT_TRUE(f.pair.responder);
  ASSERT_EQ(f.pair.initiator->state(), State::kEstablished) << f.pair.initiator->failure();
  ASSERT_EQ(f.pair.responder->state(), State::kEstablished) << f.pair.responder->failure();
  EXPECT_TRUE(f.pair.initiator->fragmentation());
  EXPECT_TRUE(f.pair.responder->fragmentation());
  EXPECT_EQ(f.pair.ihost.installed.size(), 1u);
  const FragmentCounters& i = f.pair.icounters.fragments;
  const FragmentCounters& r = f.pair.rcounters.fragments;
  EXPECT_EQ(i.messages_fragmented, 1u);  // IKE_AUTH request
  EXPECT_EQ(r.messages_fragmented, 1u);  // IKE_AUTH response
  EXPECT_GE(i.fragments_sent, 2u);
  EXPECT_EQ(r.fragments_received, i.fragments_sent);
  EXPECT_EQ(i.fragments_received, r.fragments_sent);
  EXPECT_EQ(i.messages_reassembled, 1u);
  EXPECT_EQ(r.messages_reassembled, 1u);

  // CREATE_CHILD_SA and an IKE rekey go fragmented too; the new IKE SA keeps fragmentation.
  ASSERT_TRUE(f.pair.responder->CreateChild(FragTime(1)));
  f.pair.Pump(FragTime(1));
  EXPECT_EQ(f.pair.rhost.installed.size(), 2u);
  EXPECT_GE(r.messages_fragmented, 2u);
  ASSERT_TRUE(f.pair.initiator->RekeyIke(FragTime(2)));
  f.pair.Pump(FragTime(2));
  EXPECT_TRUE(f.pair.initiator->fragmentation());
  EXPECT_EQ(f.pair.initiator->state(), State::kEstablished);
  EXPECT_GE(i.messages_fragmented, 2u);
  ASSERT_TRUE(f.pair.initiator->CreateChild(FragTime(3)));
  f.pair.Pump(FragTime(3));
  EXPECT_EQ(f.pair.ihost.installed.size(), 3u);
  EXPECT_EQ(i.bad_icv + i.malformed + i.duplicate + r.bad_icv + r.malformed + r.duplicate, 0u);
}

TEST(IkeFragmentation, OnlyWhenBothSidesSupportIt) {
  FragmentedPair f(kMinFragmentSize, kMinFragmentSize, /*rfrag=*/false);
  f.pair.initiator->Initiate(FragTime(0));
  f.pair.Pump(FragTime(0));
  ASSERT_EQ(f.pair.responder->state(), State::kEstablished);
  EXPECT_FALSE(f.pair.initiator->fragmentation());
  EXPECT_FALSE(f.pair.responder->fragmentation());
  EXPECT_EQ(f.pair.icounters.fragments.messages_fragmented, 0u);
  EXPECT_EQ(f.pair.rcounters.fragments.messages_fragmented, 0u);

  // A fragment on an IKE SA that did not negotiate fragmentation: dropped, counted, no harm.
  Bytes skf(kHeaderLen + kSkfHeaderLen + 40, 0xAB);
  Message m;
  m.header = Header{f.pair.initiator->spi_i(), f.pair.initiator->spi_r(), PayloadType::kSkf,
                    kVersion, Exchange::kInformational, kFlagInitiator, 5, 0};
  const Bytes head = Serialize(m, nullptr);
  std::copy(head.begin(), head.begin() + kHeaderLen, skf.begin());
  skf[16] = static_cast<std::uint8_t>(PayloadType::kSkf);
  skf[24] = 0, skf[25] = 0, skf[26] = 0, skf[27] = static_cast<std::uint8_t>(skf.size());
  skf[kHeaderLen] = 0, skf[kHeaderLen + 1] = 0;
  skf[kHeaderLen + 2] = 0, skf[kHeaderLen + 3] = static_cast<std::uint8_t>(skf.size() - kHeaderLen);
  f.ToResponder(skf, FragTime(1));
  EXPECT_EQ(f.pair.rcounters.fragments.not_negotiated, 1u);
  EXPECT_EQ(f.pair.responder->state(), State::kEstablished);
}

TEST(IkeFragmentation, OutOfOrderAndDuplicatedFragments) {
  FragmentedPair f;
  std::vector<Bytes> auth = f.RunInit();
  ASSERT_GE(auth.size(), 2u);
  std::reverse(auth.begin(), auth.end());
  for (const Bytes& d : auth) {
    f.ToResponder(d, FragTime(0));
    f.ToResponder(d, FragTime(0));  // each one twice
  }
  ASSERT_EQ(f.pair.responder->state(), State::kEstablished) << f.pair.responder->failure();
  EXPECT_EQ(f.pair.rcounters.fragments.duplicate, auth.size() - 1);  // the last completed it
  std::vector<Bytes> resp = f.TakeInitiatorInbox();
  // The final duplicate came after the message was complete: a retransmitted request, answered
  // only on its fragment 1 (RFC 7383 2.6.1) — fragment 1 was the last one here, so the response
  // went out twice.
  ASSERT_GE(resp.size(), 4u);
  const std::size_t n = resp.size() / 2;
  resp.resize(n);
  std::rotate(resp.begin(), resp.begin() + 1, resp.end());
  for (const Bytes& d : resp) f.pair.initiator->Receive(d, FragTime(0));
  EXPECT_EQ(f.pair.initiator->state(), State::kEstablished) << f.pair.initiator->failure();
}

TEST(IkeFragmentation, RetransmittedFragmentedRequestIsAnsweredOnce) {
  FragmentedPair f;
  const std::vector<Bytes> auth = f.RunInit();
  for (const Bytes& d : auth) f.ToResponder(d, FragTime(0));
  ASSERT_EQ(f.pair.responder->state(), State::kEstablished);
  const std::vector<Bytes> resp = f.TakeInitiatorInbox();
  ASSERT_GE(resp.size(), 2u);
  // The whole request again: the response goes out once more, as the very same fragments.
  for (const Bytes& d : auth) f.ToResponder(d, FragTime(1));
  const std::vector<Bytes> again = f.TakeInitiatorInbox();
  EXPECT_EQ(again, resp);
  EXPECT_EQ(f.pair.rcounters.fragments.duplicate, auth.size() - 1);
}

TEST(IkeFragmentation, LostFragmentTimesOutThenRetransmissionCompletes) {
  FragmentedPair f;
  const std::vector<Bytes> auth = f.RunInit();
  ASSERT_GE(auth.size(), 3u);
  for (std::size_t k = 0; k < auth.size(); ++k) {
    if (FragmentNumber(auth[k]) != 2) f.ToResponder(auth[k], FragTime(0));
  }
  EXPECT_EQ(f.pair.responder->state(), State::kInitAnswered);
  EXPECT_EQ(f.pair.responder->NextDeadline(), FragTime(0) + kReassemblyTimeout);
  f.pair.responder->Tick(FragTime(0) + kReassemblyTimeout);
  EXPECT_EQ(f.pair.rcounters.fragments.timed_out, 1u);
  EXPECT_GT(f.pair.responder->NextDeadline(), FragTime(0) + kReassemblyTimeout);  // nothing held

  // The initiator's retransmission is the same set of fragments (same IVs), all of them.
  f.pair.initiator->Tick(FragTime(2));
  std::vector<Bytes> again(f.pair.rhost.inbox.begin(), f.pair.rhost.inbox.end());
  f.pair.rhost.inbox.clear();
  EXPECT_EQ(again, auth);
  EXPECT_EQ(f.pair.icounters.fragments.fragments_sent, 2 * auth.size());
  EXPECT_EQ(f.pair.icounters.fragments.messages_fragmented, 1u);
  for (const Bytes& d : again) f.ToResponder(d, FragTime(16));
  EXPECT_EQ(f.pair.responder->state(), State::kEstablished) << f.pair.responder->failure();
}

TEST(IkeFragmentation, ForgedFragmentsAreDroppedBeforeTheyAreStored) {
  FragmentedPair f;
  const std::vector<Bytes> auth = f.RunInit();
  ASSERT_GE(auth.size(), 2u);
  // A flipped ciphertext octet: the ICV fails, nothing is stored.
  Bytes bad = auth[0];
  bad[bad.size() - 20] ^= 0x40;
  f.ToResponder(bad, FragTime(0));
  EXPECT_EQ(f.pair.rcounters.fragments.bad_icv, 1u);
  EXPECT_EQ(f.pair.rcounters.fragments.fragments_received, 0u);
  // Total Fragments past kMaxFragments, and zero: refused before any decryption.
  Bytes many = auth[0];
  many[kHeaderLen + 6] = 0x7F;
  f.ToResponder(many, FragTime(0));
  EXPECT_EQ(f.pair.rcounters.fragments.too_many, 1u);
  Bytes zero = auth[0];
  zero[kHeaderLen + 4] = 0, zero[kHeaderLen + 5] = 0;
  f.ToResponder(zero, FragTime(0));
  EXPECT_EQ(f.pair.rcounters.fragments.malformed, 1u);
  // A forged larger Total Fragments must not throw away what is stored: the ICV goes first.
  f.ToResponder(auth[0], FragTime(0));
  Bytes bigger = auth[1];
  bigger[kHeaderLen + 7] = static_cast<std::uint8_t>(bigger[kHeaderLen + 7] + 1);
  f.ToResponder(bigger, FragTime(0));
  EXPECT_EQ(f.pair.rcounters.fragments.bad_icv, 2u);
  EXPECT_EQ(f.pair.rcounters.fragments.replaced, 0u);
  // A flood of forged fragments with every number: dropped, nothing held past the bounds.
  for (int k = 0; k < 5000; ++k) {
    Bytes forged = auth[k % auth.size()];
    forged[kHeaderLen + 4] = static_cast<std::uint8_t>(k >> 8);
    forged[kHeaderLen + 5] = static_cast<std::uint8_t>(k);
    forged[kHeaderLen + 6] = static_cast<std::uint8_t>(k % 3);
    forged[kHeaderLen + 7] = static_cast<std::uint8_t>(k * 7);
    f.ToResponder(forged, FragTime(1));
  }
  EXPECT_EQ(f.pair.rcounters.fragments.fragments_received, 1u);
  for (const Bytes& d : auth) f.ToResponder(d, FragTime(2));
  EXPECT_EQ(f.pair.responder->state(), State::kEstablished) << f.pair.responder->failure();
}

TEST(IkeFragmentation, LargeFragmentSizeSendsWhole) {
  FragmentedPair f(kDefaultFragmentSize, kDefaultFragmentSize);
  f.pair.initiator->Initiate(FragTime(0));
  f.pair.Pump(FragTime(0));
  ASSERT_EQ(f.pair.responder->state(), State::kEstablished);
  EXPECT_TRUE(f.pair.responder->fragmentation());
  EXPECT_EQ(f.pair.icounters.fragments.messages_fragmented, 0u);
  EXPECT_EQ(f.pair.rcounters.fragments.messages_fragmented, 0u);
}

}  // namespace
}  // namespace spigot::ike
