#include "spigot/policy/spd.h"

#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define SPIGOT_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define SPIGOT_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define SPIGOT_POISON(p, n) ((void)(p), (void)(n))
#define SPIGOT_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#include <algorithm>
#include <bit>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <thread>
#include <tuple>
#include <unordered_set>

namespace spigot::policy {
namespace {

// Address keys: the address as an unsigned integer in host order, so masking to a prefix length
// is one AND. AddressTraits<Family> gives the key type, how to load it from network-order
// bytes, the mask of a length, and a hash whose HIGH bits are well mixed (tables index with
// hash >> shift).

std::uint32_t LoadBe32(const std::uint8_t* p) {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return std::endian::native == std::endian::little ? __builtin_bswap32(v) : v;
}

std::uint64_t LoadBe64(const std::uint8_t* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return std::endian::native == std::endian::little ? __builtin_bswap64(v) : v;
}


struct U128 {
  std::uint64_t hi = 0;
  std::uint64_t lo = 0;
  friend U128 operator&(U128 a, U128 b) { return {a.hi & b.hi, a.lo & b.lo}; }
  bool operator==(const U128&) const = default;
};

struct V4Traits {
  using Key = std::uint32_t;
  static constexpr Family kFamily = Family::kIpv4;
  static Key Load(const std::uint8_t* p) { return LoadBe32(p); }
  static Key Mask(unsigned len) { return len == 0 ? 0 : ~std::uint32_t{0} << (32 - len); }
  static std::uint64_t Hash(Key k) { return std::uint64_t{k} * kGolden; }
};

struct V6Traits {
  using Key = U128;
  static constexpr Family kFamily = Family::kIpv6;
  static Key Load(const std::uint8_t* p) { return {LoadBe64(p), LoadBe64(p + 8)}; }
  static Key Mask(unsigned len) {
    const std::uint64_t ones = ~std::uint64_t{0};
    if (len == 0) return {0, 0};
    if (len <= 64) return {ones << (64 - len), 0};
    return {ones, len == 128 ? ones : ones << (128 - len)};
  }
  static std::uint64_t Hash(Key k) {
    std::uint64_t h = k.hi * kGolden ^ k.lo * 0xC2B2AE3D27D4EB4F;
    h ^= h >> 31;
    return h * 0xBF58476D1CE4E5B9;
  }
};

// One pair as the lookup checks it: src & local_mask == local_net.
template <typename T>
struct LocalRule {
  typename T::Key net;
  typename T::Key mask;
  PolicyId id;
};

// A hash slot: one distinct remote prefix (key = its network, masked).
//   count == 0: empty.
//   count == 1: the single pair inline: value is its PolicyId, local_* its local prefix.
//   count >  1: the pairs are spill[value, value + count), longest local prefix first.
template <typename T>
struct Slot {
  typename T::Key key;
  typename T::Key local_net;
  typename T::Key local_mask;
  std::uint32_t value;
  std::uint32_t count;
};

// One distinct remote prefix length: its hash table is slots[offset, offset + 2^bits).
template <typename T>
struct Level {
  typename T::Key mask;
  std::uint32_t offset;
  std::uint32_t index_mask;  // 2^bits - 1
  std::uint8_t shift;        // 64 - bits
  std::uint8_t len;
};

template <typename T>
struct RemoteTable {
  using Key = typename T::Key;

  std::vector<Level<T>> levels;  // longest prefix length first
  std::vector<Slot<T>> slots;
  std::vector<LocalRule<T>> spill;

  PolicyId Lookup(Key src, Key dst) const {
    for (const Level<T>& level : levels) {
      const Key k = dst & level.mask;
      const Slot<T>* table = slots.data() + level.offset;
      std::uint32_t i = static_cast<std::uint32_t>(T::Hash(k) >> level.shift);
      for (;; i = (i + 1) & level.index_mask) {
        const Slot<T>& s = table[i];
        if (s.count == 0) break;
        if (!(s.key == k)) continue;
        if (s.count == 1) {
          if ((src & s.local_mask) == s.local_net) return s.value;
        } else {
          for (std::uint32_t j = s.value; j < s.value + s.count; ++j) {
            if ((src & spill[j].mask) == spill[j].net) return spill[j].id;
          }
        }
        break;
      }
    }
    return kNoPolicy;
  }
};

// One pair for Allows(): src in remote, dst in local.
template <typename T>
struct AllowRule {
  typename T::Key local_net;
  typename T::Key local_mask;
  typename T::Key remote_net;
  typename T::Key remote_mask;
};

struct PolicyRecord {
  PolicyId id;
  std::uint32_t v4_first, v4_count;
  std::uint32_t v6_first, v6_count;
};

constexpr std::uint32_t kEmptyIndex = 0xFFFFFFFF;

std::uint32_t TableBits(std::size_t keys) {
  // At most half full; at least 2 slots so that the shift stays below 64.
  return std::max<std::uint32_t>(1, std::bit_width(std::max<std::size_t>(keys, 1) * 2 - 1));
}

// A pair on its way into a snapshot.
struct Staged {
  Prefix local;
  Prefix remote;
  PolicyId id;
  std::uint64_t seq;
};

template <typename T>
typename T::Key KeyOf(const Prefix& p) {
  return T::Load(p.address.data());
}

template <typename T>
RemoteTable<T> BuildRemoteTable(std::vector<const Staged*> pairs) {
  // Longest remote length first; within a remote prefix, longest local first, then oldest.
  std::sort(pairs.begin(), pairs.end(), [](const Staged* a, const Staged* b) {
    if (a->remote.prefix_len != b->remote.prefix_len)
      return a->remote.prefix_len > b->remote.prefix_len;
    if (a->remote.address != b->remote.address) return a->remote.address < b->remote.address;
    if (a->local.prefix_len != b->local.prefix_len)
      return a->local.prefix_len > b->local.prefix_len;
    if (a->local.address != b->local.address) return a->local.address < b->local.address;
    return a->seq < b->seq;
  });
  // The same (local, remote) pair twice: only the oldest can ever be returned.
  pairs.erase(std::unique(pairs.begin(), pairs.end(),
                          [](const Staged* a, const Staged* b) {
                            return a->remote == b->remote && a->local == b->local;
                          }),
              pairs.end());

  RemoteTable<T> table;
  std::size_t begin = 0;
  while (begin < pairs.size()) {
    const std::uint8_t len = pairs[begin]->remote.prefix_len;
    std::size_t end = begin;
    std::size_t distinct = 0;
    while (end < pairs.size() && pairs[end]->remote.prefix_len == len) {
      if (end == begin || pairs[end]->remote != pairs[end - 1]->remote) ++distinct;
      ++end;
    }
    Level<T> level;
    const std::uint32_t bits = TableBits(distinct);
    level.mask = T::Mask(len);
    level.offset = static_cast<std::uint32_t>(table.slots.size());
    level.index_mask = (std::uint32_t{1} << bits) - 1;
    level.shift = static_cast<std::uint8_t>(64 - bits);
    level.len = len;
    table.slots.resize(table.slots.size() + (std::size_t{1} << bits), Slot<T>{});
    Slot<T>* slots = table.slots.data() + level.offset;

    for (std::size_t g = begin; g < end;) {
      std::size_t g_end = g + 1;
      while (g_end < end && pairs[g_end]->remote == pairs[g]->remote) ++g_end;
      Slot<T> s{};
      s.key = KeyOf<T>(pairs[g]->remote);
      s.count = static_cast<std::uint32_t>(g_end - g);
      if (s.count == 1) {
        s.local_net = KeyOf<T>(pairs[g]->local);
        s.local_mask = T::Mask(pairs[g]->local.prefix_len);
        s.value = pairs[g]->id;
      } else {
        s.value = static_cast<std::uint32_t>(table.spill.size());
        for (std::size_t j = g; j < g_end; ++j) {
          table.spill.push_back({KeyOf<T>(pairs[j]->local), T::Mask(pairs[j]->local.prefix_len),
                                 pairs[j]->id});
        }
      }
      std::uint32_t i = static_cast<std::uint32_t>(T::Hash(s.key) >> level.shift);
      while (slots[i].count != 0) i = (i + 1) & level.index_mask;
      slots[i] = s;
      g = g_end;
    }
    table.levels.push_back(level);
    begin = end;
  }
  return table;
}

template <typename T>
bool RuleAllows(const AllowRule<T>& r, typename T::Key src, typename T::Key dst) {
  return (src & r.remote_mask) == r.remote_net && (dst & r.local_mask) == r.local_net;
}

// Host policies: both families in one key type (IPv4 in the low 32 bits; the family is
// compared too).
U128 HostKey(Family family, const std::uint8_t* p) {
  return family == Family::kIpv4 ? U128{0, LoadBe32(p)} : V6Traits::Load(p);
}
U128 HostMask(Family family, unsigned len) {
  return family == Family::kIpv4 ? U128{0, V4Traits::Mask(len)} : V6Traits::Mask(len);
}
std::uint64_t HostHash(U128 key) { return V6Traits::Hash(key); }

// Host lookups, written once for LookupOutbound and LookupOutboundBatch (templates so that they
// take SpdSnapshot's private slot types without naming them).
//
// The home slot of hash h in its shard: the bits below the shard index (the top 64 - host_shift
// bits) pick it.
template <typename Ref>
std::uint32_t HomeSlot(std::uint64_t h, std::uint8_t host_shift, Ref shard) {
  return static_cast<std::uint32_t>((h << (64 - host_shift)) >> (64 - shard.bits()));
}

// The probe run from slot i: the first pair for dst whose local prefix contains src.
template <typename Ref, typename Local>
PolicyId FindHost(Ref shard, std::uint32_t i, U128 dst, U128 src, Family family,
                  const Local* locals) {
  const auto* slots = shard.slots();
  const std::uint32_t mask = shard.mask();
  for (;; i = (i + 1) & mask) {
    const auto& slot = slots[i];
    if (!slot.used) return kNoPolicy;
    if (slot.remote == dst && slot.family == family &&
        (src & locals[slot.local].mask) == locals[slot.local].net)
      return slot.id;
  }
}

// Memory for the host shards' slot tables and directories, which lookups hit at random: ~85 MiB
// at 1M policies. From the heap, one table at a time, they would sit on ~21,700 4 KiB pages,
// far more than the TLB holds (2,560 entries on the EPYC this was measured on), and in a
// virtual machine each TLB miss is a two-dimensional page walk: in A/B runs at 1M policies,
// huge pages made lookups, single or batched, ~1.2x as fast. So blocks come from 2 MiB chunks,
// each aligned to 2 MiB and advised MADV_HUGEPAGE (transparent huge pages in "madvise" mode,
// the usual default, back each with one huge page; with THP off they are ordinary pages and
// nothing else changes). A buddy allocator splits chunks into power-of-two blocks (tables are
// powers of two) and merges freed buddies; a chunk that is whole again is unmapped, except one
// kept for the next table. A block larger than a chunk is a mapping of its own. The price: a
// small SPD holds a whole 2 MiB chunk; the first touch of a new chunk may compact memory
// (control thread only). Not thread-safe: the control thread (under Spd's publish mutex)
// allocates and frees. Under AddressSanitizer free blocks are poisoned, so that a reader in a
// table freed too early is caught.
class HostArena {
 public:
  static constexpr unsigned kMinOrder = 6;     // one cache line
  static constexpr unsigned kChunkOrder = 21;  // 2 MiB, a huge page on x86-64 and arm64

  HostArena() = default;
  HostArena(const HostArena&) = delete;
  HostArena& operator=(const HostArena&) = delete;
  ~HostArena() {
    for (std::uintptr_t chunk : chunks_) {
      SPIGOT_UNPOISON(reinterpret_cast<void*>(chunk), std::size_t{1} << kChunkOrder);
      Unmap(chunk, std::size_t{1} << kChunkOrder);
    }
    for (const auto& [block, order] : large_) Unmap(block, std::size_t{1} << order);
  }

  // 2^order bytes (order >= kMinOrder), aligned to 2^order (to 2 MiB past a chunk); contents
  // undefined. Throws std::bad_alloc when the kernel gives no memory.
  void* Allocate(unsigned order) {
    assert(order >= kMinOrder);
    if (order > kChunkOrder) {
      const std::uintptr_t block = Map(std::size_t{1} << order);
      large_.emplace(block, order);
      return reinterpret_cast<void*>(block);
    }
    unsigned k = order;
    while (k <= kChunkOrder && free_[k].empty()) ++k;
    if (k > kChunkOrder) {
      const std::uintptr_t chunk = Map(std::size_t{1} << kChunkOrder);
      SPIGOT_POISON(reinterpret_cast<void*>(chunk), std::size_t{1} << kChunkOrder);
      chunks_.insert(chunk);
      free_[kChunkOrder].insert(chunk);
      k = kChunkOrder;
    }
    const std::uintptr_t block = *free_[k].begin();
    free_[k].erase(free_[k].begin());
    while (k > order) {  // split: keep the lower half, free the upper
      --k;
      free_[k].insert(block + (std::uintptr_t{1} << k));
    }
    SPIGOT_UNPOISON(reinterpret_cast<void*>(block), std::size_t{1} << order);
    return reinterpret_cast<void*>(block);
  }

  void Free(const void* p, unsigned order) {
    std::uintptr_t block = reinterpret_cast<std::uintptr_t>(p);
    if (order > kChunkOrder) {
      large_.erase(block);
      Unmap(block, std::size_t{1} << order);
      return;
    }
    SPIGOT_POISON(p, std::size_t{1} << order);
    // Chunks are aligned to their size, so a block's buddy differs in bit `order` only.
    for (; order < kChunkOrder; ++order) {
      const std::uintptr_t buddy = block ^ (std::uintptr_t{1} << order);
      if (free_[order].erase(buddy) == 0) break;
      block = std::min(block, buddy);
    }
    if (order == kChunkOrder && !free_[kChunkOrder].empty()) {
      chunks_.erase(block);
      SPIGOT_UNPOISON(reinterpret_cast<void*>(block), std::size_t{1} << kChunkOrder);
      Unmap(block, std::size_t{1} << kChunkOrder);
      return;
    }
    free_[order].insert(block);
  }

 private:
  // `bytes` (a multiple of 2 MiB), aligned to 2 MiB: map 2 MiB more and trim both ends.
  static std::uintptr_t Map(std::size_t bytes) {
    constexpr std::size_t kAlign = std::size_t{1} << kChunkOrder;
    void* p = mmap(nullptr, bytes + kAlign, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    const auto raw = reinterpret_cast<std::uintptr_t>(p);
    const std::uintptr_t start = (raw + kAlign - 1) & ~(kAlign - 1);
    if (start > raw) Unmap(raw, start - raw);
    if (const std::uintptr_t end = start + bytes; end < raw + bytes + kAlign)
      Unmap(end, raw + bytes + kAlign - end);
    madvise(reinterpret_cast<void*>(start), bytes, MADV_HUGEPAGE);  // advice: may be refused
    return start;
  }
  static void Unmap(std::uintptr_t start, std::size_t bytes) {
    munmap(reinterpret_cast<void*>(start), bytes);
  }

  std::array<std::unordered_set<std::uintptr_t>, kChunkOrder + 1> free_;  // free blocks by order
  std::unordered_set<std::uintptr_t> chunks_;                      // every chunk mapped
  std::unordered_map<std::uintptr_t, unsigned> large_;             // tables past a chunk: order
};

}  // namespace

// Host policies: a local prefix, named by its index in the snapshot's host_locals_.
struct SpdSnapshot::HostLocal {
  U128 net;
  U128 mask;
  Family family;
};

// A slot of a host-policy shard: 32 bytes, two to a cache line (tables are 64-byte aligned).
struct alignas(32) SpdSnapshot::HostSlot {
  U128 remote;
  PolicyId id;
  std::uint16_t local;  // index into host_locals_
  Family family;
  bool used;
};

struct SpdSnapshot::Impl {
  RemoteTable<V4Traits> v4;
  RemoteTable<V6Traits> v6;

  std::vector<PolicyRecord> policies;
  std::vector<std::uint32_t> policy_index;  // open addressing: index into policies
  std::uint32_t policy_index_mask = 0;
  std::uint8_t policy_shift = 63;
  std::vector<AllowRule<V4Traits>> allow_v4;
  std::vector<AllowRule<V6Traits>> allow_v6;
  std::size_t selector_count = 0;

  const PolicyRecord* FindPolicy(PolicyId id) const {
    if (policies.empty()) return nullptr;
    std::uint32_t i = static_cast<std::uint32_t>((std::uint64_t{id} * kGolden) >> policy_shift);
    for (;; i = (i + 1) & policy_index_mask) {
      const std::uint32_t p = policy_index[i];
      if (p == kEmptyIndex) return nullptr;
      if (policies[p].id == id) return &policies[p];
    }
  }
};

SpdSnapshot::SpdSnapshot(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
SpdSnapshot::~SpdSnapshot() = default;

PolicyId SpdSnapshot::LookupOutbound(Family family, std::span<const std::uint8_t> src,
                                     std::span<const std::uint8_t> dst) const {
  if (host_shards_ != 0 && src.size() == AddressLength(family) && dst.size() == src.size()) {
    const U128 d = HostKey(family, dst.data());
    const std::uint64_t h = HostHash(d);
    const ShardRef shard = hosts_[h >> host_shift_];
    const PolicyId id = FindHost(shard, HomeSlot(h, host_shift_, shard), d,
                                 HostKey(family, src.data()), family, host_local_);
    if (id != kNoPolicy) return id;
  }
  return LookupTables(family, src, dst);
}

void SpdSnapshot::LookupOutboundBatch(std::span<const OutboundKey> keys,
                                      std::span<PolicyId> ids) const {
  assert(keys.size() == ids.size());
  const std::size_t n = std::min(keys.size(), ids.size());
  for (std::size_t base = 0; base < n; base += kBatchStride) {
    const std::size_t m = std::min(kBatchStride, n - base);
    const OutboundKey* key = keys.data() + base;
    PolicyId* id = ids.data() + base;
    // 1. Every key's shard and home slot, prefetched, so that the cache misses of the whole
    //    stride are in flight together before step 2 reads a slot. Also the slot after the
    //    home one, which is in the next cache line if home is the second of its line: a probe
    //    run that goes on (some hits, most misses). No branch on that (it would be mispredicted
    //    half the time); one past a table's end, the prefetch is harmless.
    static_assert(sizeof(HostSlot) == 32, "two slots to a cache line");
    ShardRef shard[kBatchStride];
    std::uint32_t home[kBatchStride];
    bool host[kBatchStride];  // false: no host policy can match
    for (std::size_t k = 0; k < m; ++k) {
      host[k] = host_shards_ != 0 && key[k].src.size() == AddressLength(key[k].family) &&
                key[k].dst.size() == key[k].src.size();
      if (!host[k]) continue;
      const std::uint64_t h = HostHash(HostKey(key[k].family, key[k].dst.data()));
      shard[k] = hosts_[h >> host_shift_];
      home[k] = HomeSlot(h, host_shift_, shard[k]);
      const HostSlot* slot = shard[k].slots() + home[k];
      __builtin_prefetch(slot);
      __builtin_prefetch(slot + 1);
    }
    // 2. Resolve in order: the host policies, then the tables (as LookupOutbound).
    for (std::size_t k = 0; k < m; ++k) {
      id[k] = host[k] ? FindHost(shard[k], home[k], HostKey(key[k].family, key[k].dst.data()),
                                 HostKey(key[k].family, key[k].src.data()), key[k].family,
                                 host_local_)
                      : kNoPolicy;
      if (id[k] == kNoPolicy) id[k] = LookupTables(key[k].family, key[k].src, key[k].dst);
    }
  }
}

PolicyId SpdSnapshot::LookupTables(Family family, std::span<const std::uint8_t> src,
                                   std::span<const std::uint8_t> dst) const {
  if (family == Family::kIpv4) {
    if (src.size() != 4 || dst.size() != 4) return kNoPolicy;
    return impl_->v4.Lookup(V4Traits::Load(src.data()), V4Traits::Load(dst.data()));
  }
  if (family == Family::kIpv6) {
    if (src.size() != 16 || dst.size() != 16) return kNoPolicy;
    return impl_->v6.Lookup(V6Traits::Load(src.data()), V6Traits::Load(dst.data()));
  }
  return kNoPolicy;
}

bool SpdSnapshot::Allows(PolicyId id, Family family, std::span<const std::uint8_t> src,
                         std::span<const std::uint8_t> dst) const {
  const PolicyRecord* p = impl_->FindPolicy(id);
  if (p == nullptr) return false;
  if (family == Family::kIpv4) {
    if (src.size() != 4 || dst.size() != 4) return false;
    const auto s = V4Traits::Load(src.data());
    const auto d = V4Traits::Load(dst.data());
    for (std::uint32_t i = p->v4_first; i < p->v4_first + p->v4_count; ++i) {
      if (RuleAllows(impl_->allow_v4[i], s, d)) return true;
    }
    return false;
  }
  if (family == Family::kIpv6) {
    if (src.size() != 16 || dst.size() != 16) return false;
    const auto s = V6Traits::Load(src.data());
    const auto d = V6Traits::Load(dst.data());
    for (std::uint32_t i = p->v6_first; i < p->v6_first + p->v6_count; ++i) {
      if (RuleAllows(impl_->allow_v6[i], s, d)) return true;
    }
    return false;
  }
  return false;
}

std::size_t SpdSnapshot::selector_count() const { return impl_->selector_count; }
std::size_t SpdSnapshot::policy_count() const { return impl_->policies.size(); }

std::size_t SpdSnapshot::distinct_remote_lengths(Family family) const {
  if (family == Family::kIpv4) return impl_->v4.levels.size();
  if (family == Family::kIpv6) return impl_->v6.levels.size();
  return 0;
}

// ---- SpdBuilder ----------------------------------------------------------------------------

SpdBuilder::AddStatus SpdBuilder::Add(PolicyId id, const Prefix& local, const Prefix& remote,
                                      Rank rank) {
  if (id == kNoPolicy) return AddStatus::kReservedId;
  const auto l = Prefix::Make(local.family, std::span(local.address).first(
                                                AddressLength(local.family)),
                              local.prefix_len);
  const auto r = Prefix::Make(remote.family, std::span(remote.address).first(
                                                 AddressLength(remote.family)),
                              remote.prefix_len);
  if (!l || !r) return AddStatus::kBadPrefix;
  if (l->family != r->family) return AddStatus::kFamilyMismatch;
  // Fallback pairs sort after every kSa pair of the same prefixes (the seq is the tie-break).
  const std::uint64_t seq = next_seq_++ | (rank == Rank::kFallback ? std::uint64_t{1} << 63 : 0);
  pairs_[id].push_back({*l, *r, seq});
  ++count_;
  return AddStatus::kOk;
}

std::size_t SpdBuilder::AddCrossProduct(PolicyId id, std::span<const Prefix> locals,
                                        std::span<const Prefix> remotes, Rank rank) {
  std::size_t added = 0;
  for (const Prefix& l : locals) {
    for (const Prefix& r : remotes) {
      if (l.family == r.family && Add(id, l, r, rank) == AddStatus::kOk) ++added;
    }
  }
  return added;
}

std::size_t SpdBuilder::Remove(PolicyId id) {
  const auto it = pairs_.find(id);
  if (it == pairs_.end()) return 0;
  const std::size_t n = it->second.size();
  pairs_.erase(it);
  count_ -= n;
  return n;
}

bool SpdBuilder::Remove(PolicyId id, const Prefix& local, const Prefix& remote) {
  const auto it = pairs_.find(id);
  if (it == pairs_.end()) return false;
  // Compare normalized, as Add stored them.
  const auto l = Prefix::Make(local.family, std::span(local.address).first(
                                                AddressLength(local.family)),
                              local.prefix_len);
  const auto r = Prefix::Make(remote.family, std::span(remote.address).first(
                                                 AddressLength(remote.family)),
                              remote.prefix_len);
  if (!l || !r) return false;
  std::vector<Pair>& v = it->second;
  const auto p = std::find_if(v.begin(), v.end(), [&](const Pair& pair) {
    return pair.local == *l && pair.remote == *r;
  });
  if (p == v.end()) return false;
  v.erase(p);
  --count_;
  if (v.empty()) pairs_.erase(it);
  return true;
}

void SpdBuilder::Clear() {
  pairs_.clear();
  count_ = 0;
}

std::unique_ptr<const SpdSnapshot> SpdBuilder::Build() const {
  std::vector<Staged> staged;
  staged.reserve(count_);
  for (const auto& [id, pairs] : pairs_) {
    for (const Pair& p : pairs) staged.push_back({p.local, p.remote, id, p.seq});
  }
  // By policy, then insertion order: Allows() ranges are contiguous per policy and family.
  std::sort(staged.begin(), staged.end(), [](const Staged& a, const Staged& b) {
    return a.id != b.id ? a.id < b.id : a.seq < b.seq;
  });

  auto impl = std::make_unique<SpdSnapshot::Impl>();
  std::vector<const Staged*> v4;
  std::vector<const Staged*> v6;
  for (std::size_t i = 0; i < staged.size();) {
    PolicyRecord rec{staged[i].id, static_cast<std::uint32_t>(impl->allow_v4.size()), 0,
                     static_cast<std::uint32_t>(impl->allow_v6.size()), 0};
    std::size_t end = i;
    for (; end < staged.size() && staged[end].id == rec.id; ++end) {
      const Staged& s = staged[end];
      // The same pair twice in one policy: keep one.
      bool duplicate = false;
      for (std::size_t j = i; j < end; ++j) {
        duplicate |= staged[j].local == s.local && staged[j].remote == s.remote;
      }
      if (duplicate) continue;
      ++impl->selector_count;
      if (s.local.family == Family::kIpv4) {
        v4.push_back(&s);
        impl->allow_v4.push_back({KeyOf<V4Traits>(s.local), V4Traits::Mask(s.local.prefix_len),
                                  KeyOf<V4Traits>(s.remote),
                                  V4Traits::Mask(s.remote.prefix_len)});
        ++rec.v4_count;
      } else {
        v6.push_back(&s);
        impl->allow_v6.push_back({KeyOf<V6Traits>(s.local), V6Traits::Mask(s.local.prefix_len),
                                  KeyOf<V6Traits>(s.remote),
                                  V6Traits::Mask(s.remote.prefix_len)});
        ++rec.v6_count;
      }
    }
    impl->policies.push_back(rec);
    i = end;
  }

  const std::uint32_t bits = TableBits(impl->policies.size());
  impl->policy_index.assign(std::size_t{1} << bits, kEmptyIndex);
  impl->policy_index_mask = (std::uint32_t{1} << bits) - 1;
  impl->policy_shift = static_cast<std::uint8_t>(64 - bits);
  for (std::uint32_t p = 0; p < impl->policies.size(); ++p) {
    std::uint32_t i = static_cast<std::uint32_t>(
        (std::uint64_t{impl->policies[p].id} * kGolden) >> impl->policy_shift);
    while (impl->policy_index[i] != kEmptyIndex) i = (i + 1) & impl->policy_index_mask;
    impl->policy_index[i] = p;
  }

  impl->v4 = BuildRemoteTable<V4Traits>(std::move(v4));
  impl->v6 = BuildRemoteTable<V6Traits>(std::move(v6));
  return std::unique_ptr<const SpdSnapshot>(new SpdSnapshot(std::move(impl)));
}

// ---- Spd -----------------------------------------------------------------------------------

// The control thread's side of the host policies: every pair by shard (what a shard is rebuilt
// from), the published directory of shards, and which shards changed since the last commit.
struct Spd::HostState {
  using HostSlot = SpdSnapshot::HostSlot;
  using ShardRef = SpdSnapshot::ShardRef;
  struct Entry {
    U128 remote;
    Family family;
    std::uint8_t local_len;
    std::uint16_t local;  // index into locals
    PolicyId id;
    std::uint64_t seq;  // the order policies were set: the last tie-break
  };
  // Shards grow (double) when they average more than this many pairs (never shrink): a commit
  // rebuilds the shards it touched, <= 64 pairs on average, a 4 or 8 KiB table; the directory
  // is 8 x S bytes, 128 KiB at 1M pairs (a lookup reads one entry, often from the L2 cache).
  // 256 (the directory a quarter the size) made an install at 1M twice as expensive.
  static constexpr std::size_t kMaxAveragePairs = 64;
  // Distinct local prefixes (interned; never removed: they are the connections' local_ts).
  static constexpr std::size_t kMaxLocals = 65535;
  // The table of every shard without pairs: lookups stop at its first slot. Never freed.
  alignas(64) static constexpr HostSlot kNoSlots[2] = {};
  static ShardRef EmptyShard() { return {kNoSlots, 1}; }
  // A table of 2^b slots, or a directory of 2^b entries, is an arena block of order b + this.
  static constexpr unsigned kSlotOrder = std::countr_zero(sizeof(HostSlot));
  static constexpr unsigned kRefOrder = std::countr_zero(sizeof(ShardRef));
  static_assert(std::has_single_bit(sizeof(HostSlot)) && std::has_single_bit(sizeof(ShardRef)));

  std::shared_ptr<const std::vector<SpdSnapshot::HostLocal>> locals =
      std::make_shared<const std::vector<SpdSnapshot::HostLocal>>();
  std::map<std::tuple<Family, std::array<std::uint8_t, 16>, std::uint8_t>, std::uint16_t> local_index;

  // The index of a local prefix, added if new (a new locals array: snapshots keep the one
  // they were published with). nullopt when kMaxLocals are taken.
  std::optional<std::uint16_t> Intern(const Prefix& l) {
    const auto key = std::make_tuple(l.family, l.address, l.prefix_len);
    if (auto it = local_index.find(key); it != local_index.end()) return it->second;
    if (locals->size() >= kMaxLocals) return std::nullopt;
    auto next = std::make_shared<std::vector<SpdSnapshot::HostLocal>>(*locals);
    const U128 mask = HostMask(l.family, l.prefix_len);
    next->push_back({HostKey(l.family, l.address.data()) & mask, mask, l.family});
    const auto index = static_cast<std::uint16_t>(next->size() - 1);
    locals = std::move(next);
    local_index.emplace(key, index);
    return index;
  }

  HostArena arena;  // the tables (but kNoSlots) and the directories
  std::uint8_t bits = 4;  // 2^bits shards
  // Each shard's pairs in the order a lookup must try those of one remote address: longest
  // local prefix first, then the policy set first (kept on insert, so a rebuild never sorts).
  std::vector<std::vector<Entry>> entries = std::vector<std::vector<Entry>>(16);
  // The directories snapshots point at, double-buffered. directories[live] is published; the
  // other's snapshot was freed after the last commit's grace period, so no reader can see it
  // and the next commit writes it: it differs from the published one only at `stale` (the
  // shards that commit rebuilt), unless the sizes differ (none yet; S doubled).
  struct Directory {
    ShardRef* refs = nullptr;
    std::size_t size = 0;
  };
  std::array<Directory, 2> directories;
  unsigned live = 0;
  std::vector<std::uint32_t> stale;
  // Tables no longer in the directory being built that readers may still be in: freed after
  // the commit's grace period.
  std::vector<ShardRef> retired;
  std::vector<bool> dirty = std::vector<bool>(16, false);
  std::vector<std::uint32_t> dirty_list;
  // Each policy's remote addresses, which say its shards (ShardOf) whatever their number.
  std::unordered_map<PolicyId, std::vector<U128>> remotes_of;
  std::size_t pairs = 0;
  std::uint64_t next_seq = 0;

  std::uint32_t ShardOf(U128 remote) const {
    return static_cast<std::uint32_t>(HostHash(remote) >> (64 - bits));
  }
  void MarkDirty(std::uint32_t shard) {
    if (!dirty[shard]) {
      dirty[shard] = true;
      dirty_list.push_back(shard);
    }
  }
  // Adds a pair of the newest policy (e.seq above every other): after the pairs with a local
  // prefix at least as long.
  void Insert(std::uint32_t shard, const Entry& e) {
    std::vector<Entry>& v = entries[shard];
    v.insert(std::partition_point(v.begin(), v.end(),
                                  [&](const Entry& x) { return x.local_len >= e.local_len; }),
             e);
  }
  // Drops the policy's pairs; false if it had none.
  bool Erase(PolicyId id) {
    auto it = remotes_of.find(id);
    if (it == remotes_of.end()) return false;
    for (const U128& remote : it->second) {  // two in one shard: the second finds none left
      const std::uint32_t shard = ShardOf(remote);
      auto& v = entries[shard];
      const auto end = std::remove_if(v.begin(), v.end(), [id](const Entry& e) { return e.id == id; });
      pairs -= static_cast<std::size_t>(v.end() - end);
      v.erase(end, v.end());
      MarkDirty(shard);
    }
    remotes_of.erase(it);
    return true;
  }
  // Twice the shards, every pair moved to its new shard (amortised O(1) per pair). Shard s
  // splits into 2s and 2s + 1, in order: the lookup order within each is kept.
  void Grow() {
    ++bits;
    std::vector<std::vector<Entry>> next(std::size_t{1} << bits);
    for (auto& v : entries) {
      for (Entry& e : v) next[ShardOf(e.remote)].push_back(e);
    }
    entries = std::move(next);
    dirty.assign(entries.size(), false);
    dirty_list.clear();
    for (std::uint32_t shard = 0; shard < entries.size(); ++shard) MarkDirty(shard);
  }
  // A new table for the shard's pairs: open addressing, at most half full; pairs of one remote
  // address along one probe run in the order of `entries`.
  ShardRef BuildShard(std::uint32_t shard) {
    const std::vector<Entry>& v = entries[shard];
    if (v.empty()) return EmptyShard();
    const std::uint32_t table_bits = TableBits(v.size());
    auto* slots = static_cast<HostSlot*>(arena.Allocate(table_bits + kSlotOrder));
    std::memset(static_cast<void*>(slots), 0, sizeof(HostSlot) << table_bits);  // all unused
    const ShardRef out(slots, table_bits);
    const std::uint32_t mask = out.mask();
    for (const Entry& e : v) {
      std::uint32_t i = HomeSlot(HostHash(e.remote), static_cast<std::uint8_t>(64 - bits), out);
      while (slots[i].used) i = (i + 1) & mask;
      // Field by field: GCC builds a braced HostSlot on the stack and reloads it 8 bytes at a
      // time, a store-forwarding stall per pair.
      HostSlot& slot = slots[i];
      slot.remote = e.remote;
      slot.id = e.id;
      slot.local = e.local;
      slot.family = e.family;
      slot.used = true;
    }
    return out;
  }
  void FreeShard(ShardRef ref) {
    if (ref.slots() != kNoSlots) arena.Free(ref.slots(), ref.bits() + kSlotOrder);
  }
  // d resized to n entries, all EmptyShard(); its old block was read by no snapshot left.
  void Resize(Directory& d, std::size_t n) {
    if (d.refs != nullptr) arena.Free(d.refs, std::countr_zero(d.size) + kRefOrder);
    d = {};
    d.refs = static_cast<ShardRef*>(arena.Allocate(std::countr_zero(n) + kRefOrder));
    d.size = n;
    std::uninitialized_fill_n(d.refs, n, EmptyShard());
  }
};

Spd::Spd() : Spd(SpdBuilder().Build()) {}

Spd::Spd(std::unique_ptr<const SpdSnapshot> initial)
    : current_(initial.release()), hosts_(std::make_unique<HostState>()) {
  assert(current_.load() != nullptr);
}

Spd::~Spd() {
  for ([[maybe_unused]] const ReaderSlot& s : slots_) {
    assert(!s.used.load() && "a Reader outlives its Spd");
  }
  delete current_.load();
}

std::optional<Spd::Reader> Spd::RegisterReader() {
  for (ReaderSlot& s : slots_) {
    bool expected = false;
    if (s.used.compare_exchange_strong(expected, true, std::memory_order_acquire)) {
      return Reader(this, &s);
    }
  }
  return std::nullopt;
}

Spd::Reader& Spd::Reader::operator=(Reader&& o) noexcept {
  if (this != &o) {
    if (slot_ != nullptr) slot_->used.store(false, std::memory_order_release);
    spd_ = o.spd_;
    slot_ = std::exchange(o.slot_, nullptr);
  }
  return *this;
}

Spd::Reader::~Reader() {
  if (slot_ == nullptr) return;
  assert(slot_->seq.load() % 2 == 0 && "Reader destroyed inside a ReadGuard");
  // The sequence keeps counting up for the slot's next owner, so a writer waiting on an old
  // odd value is never confused by a reuse.
  slot_->used.store(false, std::memory_order_release);
}

void Spd::Publish(std::unique_ptr<const SpdSnapshot> next) {
  assert(next != nullptr);
  if (next == nullptr) return;
  std::lock_guard lock(publish_mu_);
  // New tables, the host policies as they are.
  const SpdSnapshot* cur = current_.load(std::memory_order_relaxed);
  auto* snap = new SpdSnapshot(next->impl_);
  snap->hosts_ = cur->hosts_;
  snap->host_shards_ = cur->host_shards_;
  snap->host_shift_ = cur->host_shift_;
  snap->host_pairs_ = cur->host_pairs_;
  snap->host_locals_ = cur->host_locals_;
  snap->host_local_ = cur->host_local_;
  Swap(snap);
}

void Spd::Swap(const SpdSnapshot* next) {
  const SpdSnapshot* old = current_.exchange(next, std::memory_order_seq_cst);
  WaitForReaders();
  delete old;
  publications_.fetch_add(1, std::memory_order_relaxed);
}

bool Spd::SetHostPolicy(PolicyId id, std::span<const Prefix> locals,
                        std::span<const Prefix> remotes) {
  if (id == kNoPolicy) return false;
  for (const Prefix& r : remotes) {
    if (r.prefix_len != MaxPrefixLength(r.family)) return false;
  }
  std::lock_guard lock(publish_mu_);
  HostState& h = *hosts_;
  std::vector<HostState::Entry> add;
  for (const Prefix& r : remotes) {
    for (const Prefix& l : locals) {
      if (l.family != r.family || l.prefix_len > MaxPrefixLength(l.family)) continue;
      const auto local = h.Intern(l);
      if (!local) return false;
      add.push_back({HostKey(r.family, r.address.data()), l.family, l.prefix_len, *local, id, 0});
    }
  }
  if (add.empty()) return false;
  h.Erase(id);
  const std::uint64_t seq = h.next_seq++;
  auto& mine = h.remotes_of[id];
  for (HostState::Entry& e : add) {
    e.seq = seq;
    const std::uint32_t shard = h.ShardOf(e.remote);
    h.Insert(shard, e);
    h.MarkDirty(shard);
    if (std::find(mine.begin(), mine.end(), e.remote) == mine.end()) mine.push_back(e.remote);
    ++h.pairs;
  }
  if (h.pairs > (std::size_t{1} << h.bits) * HostState::kMaxAveragePairs) h.Grow();
  return true;
}

bool Spd::RemoveHostPolicy(PolicyId id) {
  std::lock_guard lock(publish_mu_);
  return hosts_->Erase(id);
}

std::size_t Spd::host_policy_count() const { return hosts_->remotes_of.size(); }

std::size_t Spd::CommitHostPolicies() {
  std::lock_guard lock(publish_mu_);
  HostState& h = *hosts_;
  if (h.dirty_list.empty()) return 0;
  const std::size_t n = std::size_t{1} << h.bits;
  const HostState::Directory& cur = h.directories[h.live];
  HostState::Directory& next = h.directories[1 - h.live];
  const bool resized = next.size != n;
  if (resized) h.Resize(next, n);
  // The spare directory catches up with the published one, then takes this commit's shards.
  // First commit: the shards not dirty have no pairs. S doubled: Grow() marked every shard
  // dirty. (If a table's allocation throws, nothing is retired or published yet.)
  assert(cur.size == n || cur.size == 0 || h.dirty_list.size() == n);
  if (cur.size == n && resized) {
    std::copy_n(cur.refs, n, next.refs);
  } else if (cur.size == n) {
    for (std::uint32_t shard : h.stale) next.refs[shard] = cur.refs[shard];
  }
  for (std::uint32_t shard : h.dirty_list) next.refs[shard] = h.BuildShard(shard);
  if (cur.size == n) {
    for (std::uint32_t shard : h.dirty_list) h.retired.push_back(cur.refs[shard]);
  } else {
    h.retired.insert(h.retired.end(), cur.refs, cur.refs + cur.size);
  }
  for (std::uint32_t shard : h.dirty_list) h.dirty[shard] = false;
  const std::size_t rebuilt = h.dirty_list.size();
  h.stale.swap(h.dirty_list);
  h.dirty_list.clear();

  const SpdSnapshot* current = current_.load(std::memory_order_relaxed);
  auto* snap = new SpdSnapshot(current->impl_);
  snap->hosts_ = next.refs;
  snap->host_shards_ = n;
  snap->host_shift_ = static_cast<std::uint8_t>(64 - h.bits);
  snap->host_pairs_ = h.pairs;
  snap->host_locals_ = h.locals;
  snap->host_local_ = h.locals->data();
  Swap(snap);
  h.live = 1 - h.live;
  // Past the grace period: no reader is in the tables this commit replaced.
  for (const SpdSnapshot::ShardRef ref : h.retired) h.FreeShard(ref);
  h.retired.clear();
  return rebuilt;
}

void Spd::WaitForReaders() {
  for (ReaderSlot& s : slots_) {
    const std::uint64_t seq = s.seq.load(std::memory_order_seq_cst);
    if (seq % 2 == 0) continue;
    while (s.seq.load(std::memory_order_seq_cst) == seq) std::this_thread::yield();
  }
}

}  // namespace spigot::policy
