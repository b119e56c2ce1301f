// The security policy database (SPD) for outbound packets, and its publication to the data path.
//
// Which CHILD SA does an inner packet belong to? Each policy (PolicyId, one CHILD SA's selectors)
// contributes selector pairs (local prefix, remote prefix). An outbound packet (src, dst) goes to
// the pair whose remote prefix contains dst with the LONGEST remote prefix, among the pairs whose
// local prefix contains src; ties go to the longest local prefix, then to the pair added first.
// Inbound, after decryption, Allows() checks the inner packet against the selectors of the SA's
// policy (RFC 4301 5.2: src in a remote prefix, dst in a local prefix).
//
// Three pieces:
//   SpdBuilder   control thread: a mutable list of selector pairs; Build() makes a snapshot.
//   SpdSnapshot  immutable; lookups from any number of threads at once, no locks, no allocation.
//   Spd          the published snapshot. The data path reads it under a ReadGuard (two stores,
//                no lock, no reference count); the control thread swaps in a new one with
//                Publish(), which frees the old one after the readers that could see it left.
//
// Lookup structure (DPDK's LPM6 rules / Linux fib's "hash per prefix length" idea): per address
// family, one open-addressing hash table per DISTINCT remote prefix length present, probed from
// the longest length to the shortest with dst masked to that length. A hit holds the pairs with
// exactly that remote prefix, ordered by local prefix length (longest first); the first whose
// local prefix contains src is the answer, otherwise the walk goes on to shorter lengths.
//   LookupOutbound: O(D + P) where D <= 33 (IPv4) / 129 (IPv6) is the number of distinct remote
//   prefix lengths in the snapshot, and P the number of pairs sharing a remote prefix that dst
//   hits (usually 1; one such pair is stored inline in the hash slot, no second memory access).
//   The number of pairs n does not appear: 10,000 connections on /24s and /16s cost 1-2 probes.
//   Tables are at most half full (linear probing, expected < 1.5 probes per length on a hit).
//   The hash is not keyed: the keys are configured prefixes, not attacker-chosen, so a lookup
//   can only probe a table, never grow one.
//   Allows: one hash probe for the policy, then O(pairs of that policy).
//   Build: O(n log n), about 3 ms for 10,000 pairs. Memory: 2 to 4 hash slots per distinct
//   remote prefix (IPv4 slot 20 bytes, IPv6 56 bytes), plus 16 (IPv4) or 64 (IPv6) bytes per
//   pair for Allows().
//
// Host policies (Spd::SetHostPolicy: one road warrior's /32 or /128 each; N pairs, up to
// millions) are tried before the tables, in S open-addressing hash shards: S a power of two,
// at least 16, doubled whenever N passes 64 x S (never halved), so N/S <= 64.
//   LookupOutbound: one directory entry (8 bytes; the directory is 8 x S bytes, 128 KiB at 1M
//   pairs) and one probe run in the shard (at most half full: expected 1.5 slots on a hit),
//   usually one cache line. The slot tables sit on 2 MiB transparent huge pages (HostArena in
//   spd.cc): at 1M pairs their ~85 MiB take ~43 TLB entries instead of ~21,700. Past the
//   caches every lookup still waits for one miss; LookupOutboundBatch overlaps those: it
//   hashes a burst, prefetches every key's slot, then resolves.
//   Memory per pair: 64 to 128 bytes of slots (32-byte slots, 2 to 4 per pair), plus the
//   control thread's copy (a 32-byte entry, and per policy its remote addresses in a hash map).
//   Per shard: 16 bytes of directory (two copies). A small SPD still takes one 2 MiB chunk.
//   Commit (Spd::CommitHostPolicies) of k changed shards: O(k x N/S) to rebuild them (no sort:
//   each shard keeps its pairs in lookup order) and O(k) directory entries written. When S
//   doubles, the SetHostPolicy that does it and the next commit are O(N) (every pair moved,
//   every shard rebuilt): once per doubling of N, a pause of ~0.1-0.3 s at 1M.
//
// Why not std::atomic<std::shared_ptr<const SpdSnapshot>>: libstdc++ 12 implements it with a
// spin lock in the control-block pointer (is_always_lock_free == false, is_lock_free() == false),
// and every load bumps the shared reference count, one cache line written by every core per
// packet. Spd instead uses read-side sections tracked by per-reader sequence counters (a minimal
// RCU): see Spd below.
#pragma once

#include <array>
#include <atomic>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "spigot/policy/policy_id.h"
#include "spigot/policy/prefix.h"

namespace spigot::policy {

class SpdSnapshot {
 public:
  ~SpdSnapshot();
  SpdSnapshot(const SpdSnapshot&) = delete;
  SpdSnapshot& operator=(const SpdSnapshot&) = delete;

  // The policy for an outbound packet from src to dst (each AddressLength(family) bytes, network
  // order; any other size matches nothing), or kNoPolicy.
  PolicyId LookupOutbound(Family family, std::span<const std::uint8_t> src,
                          std::span<const std::uint8_t> dst) const;

  // One packet's LookupOutbound arguments.
  struct OutboundKey {
    Family family;
    std::span<const std::uint8_t> src;
    std::span<const std::uint8_t> dst;
  };
  // ids[i] = LookupOutbound(keys[i].family, keys[i].src, keys[i].dst) for every i, the same
  // answer whatever the batch size or the mix of families; ids.size() must be keys.size()
  // (only the first min of the two are looked up). Meant for a receive burst (16 to 64
  // packets): the host-policy slots of kBatchStride keys are prefetched before any is read, so
  // their cache misses overlap instead of following one another (DPDK's rte_hash_lookup_bulk).
  static constexpr std::size_t kBatchStride = 32;
  void LookupOutboundBatch(std::span<const OutboundKey> keys, std::span<PolicyId> ids) const;

  // Inbound selector check for a decrypted inner packet of policy `id`'s CHILD SA: true iff some
  // pair of that policy has src in its remote prefix and dst in its local prefix. False for an
  // unknown policy. Covers the tables' policies only: the SA of a host policy checks against
  // its own selectors (datapath::InboundSpec::selectors).
  bool Allows(PolicyId id, Family family, std::span<const std::uint8_t> src,
              std::span<const std::uint8_t> dst) const;

  std::size_t selector_count() const;  // pairs, after dropping exact duplicates within a policy
  std::size_t policy_count() const;
  // D in the complexity above.
  std::size_t distinct_remote_lengths(Family family) const;
  // Host policies (Spd::SetHostPolicy) in this snapshot: pairs, and shards they are spread over.
  std::size_t host_pair_count() const { return host_pairs_; }
  std::size_t host_shard_count() const { return host_shards_; }

 private:
  friend class SpdBuilder;
  friend class Spd;
  struct Impl;
  struct HostSlot;
  struct HostLocal;
  // A shard's table as a directory entry, one word (8 to a cache line): the address of its 2^b
  // slots, 64-byte aligned, with b in the 6 low bits.
  class ShardRef {
   public:
    ShardRef() = default;
    ShardRef(const HostSlot* slots, unsigned bits)
        : word_(reinterpret_cast<std::uintptr_t>(slots) | bits) {
      assert((reinterpret_cast<std::uintptr_t>(slots) & kBitsMask) == 0 && bits <= 32);
    }
    const HostSlot* slots() const { return reinterpret_cast<const HostSlot*>(word_ & ~kBitsMask); }
    unsigned bits() const { return static_cast<unsigned>(word_ & kBitsMask); }
    std::uint32_t mask() const {
      return static_cast<std::uint32_t>((std::uint64_t{1} << bits()) - 1);
    }

   private:
    static constexpr std::uintptr_t kBitsMask = 63;
    std::uintptr_t word_;  // uninitialized by default: a batch keeps 32 on the stack
  };
  explicit SpdSnapshot(std::shared_ptr<const Impl> impl);
  PolicyId LookupTables(Family family, std::span<const std::uint8_t> src,
                        std::span<const std::uint8_t> dst) const;
  // The tables are shared between snapshots (a host-policy commit keeps them). The host
  // policies' directory and shards are owned by the Spd that publishes the snapshot, and
  // outlive it: a snapshot is freed before the Spd reuses its directory (double-buffered) or
  // frees a shard it points to (both after the grace period that frees the snapshot).
  std::shared_ptr<const Impl> impl_;
  const ShardRef* hosts_ = nullptr;  // host_shards_ = 2^k shards, indexed by the top k hash bits
  std::size_t host_shards_ = 0;
  std::uint8_t host_shift_ = 63;  // 64 - k
  std::size_t host_pairs_ = 0;
  // The distinct local prefixes of host policies (few: the connections' local_ts), which slots
  // name by index. host_local_ is host_locals_->data(), one load closer.
  std::shared_ptr<const std::vector<HostLocal>> host_locals_;
  const HostLocal* host_local_ = nullptr;
};

// Control thread only (not thread-safe). Keeps the pairs between builds, so a reload edits and
// rebuilds.
class SpdBuilder {
 public:
  enum class AddStatus : std::uint8_t {
    kOk = 0,
    kReservedId,      // id == kNoPolicy
    kBadPrefix,       // family not 4/6, or prefix_len past the family's maximum
    kFamilyMismatch,  // local and remote of different families can match no packet
  };

  // Which of two policies with the same pair wins outbound: a CHILD SA's own policy (kSa)
  // beats a connection's policy (kFallback, the one a trap or a "no SA" count hangs on); among
  // equals, the one added first.
  enum class Rank : std::uint8_t { kSa, kFallback };

  // Host bits of the prefixes are cleared. Adding the same pair to the same policy twice is
  // harmless; the same pair in two policies: see Rank.
  AddStatus Add(PolicyId id, const Prefix& local, const Prefix& remote, Rank rank = Rank::kSa);

  // A CHILD SA with local_ts {a, b} and remote_ts {c, d} carries every (local, remote) pair of
  // one family (RFC 7296 2.9: TSi and TSr are sets). Adds those pairs; returns how many.
  std::size_t AddCrossProduct(PolicyId id, std::span<const Prefix> locals,
                              std::span<const Prefix> remotes, Rank rank = Rank::kSa);

  // Removes every pair of `id`; returns how many.
  std::size_t Remove(PolicyId id);
  // Removes one pair; false if it was not there.
  bool Remove(PolicyId id, const Prefix& local, const Prefix& remote);
  void Clear();

  std::size_t selector_count() const { return count_; }

  std::unique_ptr<const SpdSnapshot> Build() const;

 private:
  struct Pair {
    Prefix local;
    Prefix remote;
    std::uint64_t seq;  // insertion order: the last tie-break
  };
  std::unordered_map<PolicyId, std::vector<Pair>> pairs_;
  std::uint64_t next_seq_ = 0;
  std::size_t count_ = 0;
};

// The published snapshot.
//
// Readers: each data-path thread registers once (RegisterReader) and takes a ReadGuard around
// its lookups; a guard may cover one packet or a whole receive batch, but must not be held
// across anything that blocks (epoll_wait, a lock), because Publish() waits for it. One guard at
// a time per Reader. Entering costs one sequentially consistent store (an xchg on x86, ~20
// cycles, on the reader's own cache line) and one load; leaving, one release store.
//
// Writer (Publish, any thread; concurrent publishers are serialized by a mutex):
//   1. swap the pointer (seq_cst exchange);
//   2. grace period: for each reader slot whose sequence is odd (inside a guard), wait until it
//      changes — that reader has left the guard it may have taken before the swap;
//   3. delete the old snapshot.
// Why that is enough: a reader that loaded the old pointer made its sequence odd before that
// load, so (all four operations being seq_cst) before the swap and before the writer's scan;
// the scan sees it odd, or already past that guard. A guard entered after the scan loads the
// pointer after the swap and sees the new snapshot. The reader's release store on leaving
// orders its last read of the old snapshot before the writer's delete.
class Spd {
  struct alignas(64) ReaderSlot {
    std::atomic<std::uint64_t> seq{0};  // odd: inside a ReadGuard
    std::atomic<bool> used{false};
  };

 public:
  static constexpr std::size_t kMaxReaders = 64;

  class ReadGuard {
   public:
    ~ReadGuard() { slot_->seq.store(exit_seq_, std::memory_order_release); }
    ReadGuard(const ReadGuard&) = delete;
    ReadGuard& operator=(const ReadGuard&) = delete;

    const SpdSnapshot& operator*() const { return *snapshot_; }
    const SpdSnapshot* operator->() const { return snapshot_; }

   private:
    friend class Spd;
    ReadGuard(ReaderSlot* slot, const SpdSnapshot* snapshot, std::uint64_t exit_seq)
        : slot_(slot), snapshot_(snapshot), exit_seq_(exit_seq) {}
    ReaderSlot* slot_;
    const SpdSnapshot* snapshot_;
    std::uint64_t exit_seq_;
  };

  // A registered reader thread. Movable; unregisters on destruction (no guard may be open).
  class Reader {
   public:
    Reader(Reader&& o) noexcept : spd_(o.spd_), slot_(std::exchange(o.slot_, nullptr)) {}
    Reader& operator=(Reader&& o) noexcept;
    ~Reader();

    ReadGuard Lock() {
      const std::uint64_t seq = slot_->seq.load(std::memory_order_relaxed);
      assert(seq % 2 == 0 && "one ReadGuard at a time per Reader");
      slot_->seq.store(seq + 1, std::memory_order_seq_cst);
      return ReadGuard(slot_, spd_->current_.load(std::memory_order_seq_cst), seq + 2);
    }

   private:
    friend class Spd;
    Reader(const Spd* spd, ReaderSlot* slot) : spd_(spd), slot_(slot) {}
    const Spd* spd_;
    ReaderSlot* slot_;
  };

  // Starts with an empty snapshot (every lookup kNoPolicy), so readers never see null.
  Spd();
  explicit Spd(std::unique_ptr<const SpdSnapshot> initial);
  // Every Reader must be gone.
  ~Spd();
  Spd(const Spd&) = delete;
  Spd& operator=(const Spd&) = delete;

  // nullopt when kMaxReaders readers are registered.
  std::optional<Reader> RegisterReader();

  // Makes `next` current (a null `next` is ignored); returns once the previous snapshot is
  // freed, i.e. after every guard that might hold it has closed. Typically microseconds; a
  // reader thread preempted inside a guard delays it by up to a scheduler time slice.
  void Publish(std::unique_ptr<const SpdSnapshot> next);

  std::uint64_t publications() const { return publications_.load(std::memory_order_relaxed); }

  // ---- Host policies: one per road warrior ---------------------------------------------
  // A road warrior's CHILD SA narrows the peer's side to its own address: 100,000 peers are
  // 100,000 policies with a /32 (or /128) remote, installed and removed at the pace of a login
  // storm. Rebuilding the tables for each would cost O(N) per install. Host policies live
  // apart, in hash shards that are copied on write: a commit rebuilds only the shards it
  // touched (at most 64 pairs each on average) and writes their entries into a spare copy of
  // the shard directory (double-buffered: the spare is free once the previous commit's grace
  // period has passed), so a commit costs O(shards touched), not O(N) nor O(shards): about
  // 6 us per install plus its removal (two commits) at 1M policies on a 2-core EPYC guest,
  // 2% of the control thread at 3,000 installs a second. Under a storm, commit a tick's
  // worth of changes at once: one snapshot and one grace period for all of them. A
  // lookup tries host policies first (a host is the longest remote prefix there is: the
  // longest-match rule is kept), then the tables. Among host pairs with the same remote
  // address: the longest local prefix, then the policy set first.
  //
  // Control thread (serialized with Publish). Changes take effect at CommitHostPolicies().
  // SetHostPolicy replaces the policy's pairs (locals x remotes of one family); false, and
  // nothing changed, for kNoPolicy, a remote that is not a host prefix, or no pair at all.
  bool SetHostPolicy(PolicyId id, std::span<const Prefix> locals, std::span<const Prefix> remotes);
  bool RemoveHostPolicy(PolicyId id);  // false if it had no pairs
  // Publishes the changes since the last commit: one snapshot, one grace period for all of
  // them. Returns how many shards were rebuilt (0: nothing to publish, nothing published).
  std::size_t CommitHostPolicies();
  std::size_t host_policy_count() const;

 private:
  struct HostState;
  void WaitForReaders();
  // Swaps in `next`, waits out the readers, frees the previous snapshot. Holds publish_mu_.
  void Swap(const SpdSnapshot* next);

  std::atomic<const SpdSnapshot*> current_;
  std::array<ReaderSlot, kMaxReaders> slots_;
  std::mutex publish_mu_;
  std::atomic<std::uint64_t> publications_{0};
  std::unique_ptr<HostState> hosts_;  // owns the shards every snapshot points at
};

}  // namespace spigot::policy
