// IKEv2 message fragmentation (RFC 7383): the receiving half — the reassembly of one message from
// its Encrypted Fragment payloads — and the counters of both halves. Sending is
// SerializeFragments() in message.h; IkeSa decides when (fragmentation negotiated in
// IKE_SA_INIT, a protected message larger than the connection's fragment_size).
//
// Bounds (all per reassembly; an IKE SA has at most two, one for the peer's request and one for
// the response to ours, each allocated only while fragments are arriving):
//   kMaxFragments        Total Fragments above this: the fragment is dropped before its ICV is
//                        even checked (too_many).
//   kMaxReassemblyBytes  decrypted content held; a fragment that would pass it ends the
//                        reassembly (too_large): such a message could never be accepted.
//   kReassemblyTimeout   from the first fragment stored; then the fragments are freed
//                        (timed_out). The peer's retransmissions resend every fragment, so a
//                        fragment lost once is normally back within a few seconds.
// Drop policy (RFC 7383 2.6): a fragment is stored only after its ICV verified. Duplicates are
// dropped; a fragment of another message, or with a larger Total Fragments (the sender
// re-fragmented smaller, 2.5.2), replaces what was stored (replaced); one with a smaller Total
// Fragments than stored is dropped (stale). Every drop is counted.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <vector>

#include "spigot/bounds.h"
#include "spigot/ike/message.h"
#include "spigot/io/clock.h"

namespace spigot::ike {

// Counters of fragmentation, summed over the IKE SAs of a host (IkeCounters::fragments).
struct FragmentCounters {
  std::uint64_t messages_fragmented = 0;  // messages we sent as fragments (not retransmissions)
  std::uint64_t fragments_sent = 0;       // fragment datagrams sent, retransmissions included
  std::uint64_t fragments_received = 0;   // fragments verified and stored
  std::uint64_t messages_reassembled = 0;
  // Dropped fragments, by reason.
  std::uint64_t not_negotiated = 0;  // on an IKE SA that did not negotiate fragmentation
  std::uint64_t bad_icv = 0;         // integrity check failed
  std::uint64_t malformed = 0;       // zero numbers, number > total, bad lengths or padding
  std::uint64_t duplicate = 0;
  std::uint64_t too_many = 0;        // Total Fragments > kMaxFragments
  std::uint64_t too_large = 0;       // reassembly would exceed kMaxReassemblyBytes
  std::uint64_t stale = 0;           // smaller Total Fragments than stored, or an old message
  // Reassemblies given up.
  std::uint64_t timed_out = 0;
  std::uint64_t replaced = 0;        // by another message or a larger Total Fragments

  FragmentCounters& operator+=(const FragmentCounters& o);
};

inline constexpr std::size_t kMaxFragments = bounds::kIkeFragmentsPerMessage;
// A message with a certificate chain is a few KB; 2.5 x kMaxMessageLen would never fit anyway.
inline constexpr std::size_t kMaxReassemblyBytes = bounds::kIkeReassemblyBytes;
inline constexpr auto kReassemblyTimeout = std::chrono::seconds(15);

// RFC 7383 2.6, the checks that need no keys and no state: numbers non-zero, Fragment Number <=
// Total Fragments, Total Fragments <= kMaxFragments. False: drop (counted here).
bool CheckFragmentNumbers(std::uint16_t number, std::uint16_t total, FragmentCounters& counters);

// One message being reassembled (one direction of one IKE SA).
class Reassembly {
 public:
  using TimePoint = io::Clock::TimePoint;
  enum class Verdict : std::uint8_t { kDropped, kStored, kComplete };

  // Before the ICV is checked: false if the fragment would be dropped anyway (a duplicate, or
  // stale), counted here — no decryption for it. Does not change what is stored.
  bool Wanted(std::uint32_t message_id, std::uint16_t number, std::uint16_t total,
              FragmentCounters& counters) const;
  // A fragment whose ICV verified (CheckFragmentNumbers passed) and its decrypted content;
  // `first` is the SKF Next Payload (meaningful in fragment 1). kComplete: TakeMessage() holds
  // the inner payload chain.
  Verdict Add(std::uint32_t message_id, std::uint16_t number, std::uint16_t total,
              PayloadType first, Bytes content, TimePoint now, FragmentCounters& counters);
  // After kComplete: the inner chain in order and its first payload type; frees the fragments.
  Bytes TakeMessage(PayloadType& first);
  // Frees the fragments when the reassembly is older than kReassemblyTimeout (counted). True
  // if it did.
  bool Expire(TimePoint now, FragmentCounters& counters);
  void Clear();

  bool active() const { return total_ != 0; }
  std::uint32_t message_id() const { return message_id_; }
  TimePoint deadline() const { return started_ + kReassemblyTimeout; }
  std::size_t bytes() const { return bytes_; }
  std::size_t count() const { return count_; }

 private:
  std::uint32_t message_id_ = 0;
  std::uint16_t total_ = 0;  // 0: nothing stored
  std::uint16_t count_ = 0;
  PayloadType first_ = PayloadType::kNone;
  std::size_t bytes_ = 0;
  TimePoint started_{};
  std::vector<Bytes> parts_;  // by Fragment Number - 1; empty: not received
  std::vector<bool> have_;
};

}  // namespace spigot::ike
