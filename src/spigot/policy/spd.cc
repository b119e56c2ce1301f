#include "spigot/policy/spd.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <thread>
#include <tuple>
#include <optional>
#include <map>

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

}  // namespace

// Host policies: a local prefix, named by its index in the snapshot's host_locals_.
struct SpdSnapshot::HostLocal {
  U128 net;
  U128 mask;
  Family family;
};

// A slot of a host-policy shard: 32 bytes, so that one never straddles two cache lines.
struct alignas(32) SpdSnapshot::HostSlot {
  U128 remote;
  PolicyId id;
  std::uint16_t local;  // index into host_locals_
  Family family;
  bool used;
};

// One shard of the host policies: open addressing, at most half full. Pairs with the same
// remote address sit along one probe run in the order they must be tried (longest local
// prefix, then the policy set first), so the first that contains the source is the answer.
struct SpdSnapshot::HostShard {
  std::vector<HostSlot> slots;
  std::uint32_t mask = 0;   // slots.size() - 1
  std::uint8_t shift = 63;  // 64 - log2(slots.size())
  static_assert(sizeof(HostSlot) == 32);
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
  if (!hosts_.empty() && src.size() == AddressLength(family) && dst.size() == src.size()) {
    const U128 d = HostKey(family, dst.data());
    const U128 sk = HostKey(family, src.data());
    const std::uint64_t h = HostHash(d);
    const ShardRef& shard = hosts_[h >> host_shift_];
    const HostLocal* locals = host_locals_->data();
    // The bits below the shard index pick the slot.
    std::uint32_t i = static_cast<std::uint32_t>((h << (64 - host_shift_)) >> shard.shift);
    for (;; i = (i + 1) & shard.mask) {
      const HostSlot& slot = shard.slots[i];
      if (!slot.used) break;
      if (slot.remote == d && slot.family == family &&
          (sk & locals[slot.local].mask) == locals[slot.local].net)
        return slot.id;
    }
  }
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
// from), the published shards, and which shards changed since the last commit.
struct Spd::HostState {
  struct Entry {
    U128 remote;
    Family family;
    std::uint8_t local_len;
    std::uint16_t local;  // index into locals
    PolicyId id;
    std::uint64_t seq;  // the order policies were set: the last tie-break
  };
  // Shards grow (double) when they average more than this many pairs: a commit rebuilds a
  // shard (~N/S pairs) and copies the S shard references, balanced near S ~ sqrt(N).
  static constexpr std::size_t kMaxAveragePairs = 256;
  // Distinct local prefixes (interned; never removed: they are the connections' local_ts).
  static constexpr std::size_t kMaxLocals = 65535;

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

  std::uint8_t bits = 4;  // 2^bits shards
  std::vector<std::vector<Entry>> entries = std::vector<std::vector<Entry>>(16);
  std::vector<std::unique_ptr<SpdSnapshot::HostShard>> shards;  // empty until the first commit
  std::vector<bool> dirty = std::vector<bool>(16, false);
  std::vector<std::uint32_t> dirty_list;
  std::unordered_map<PolicyId, std::vector<std::uint32_t>> shards_of;  // policy -> its shards
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
  // Drops the policy's pairs; false if it had none.
  bool Erase(PolicyId id) {
    auto it = shards_of.find(id);
    if (it == shards_of.end()) return false;
    for (std::uint32_t shard : it->second) {
      auto& v = entries[shard];
      const auto end = std::remove_if(v.begin(), v.end(), [id](const Entry& e) { return e.id == id; });
      pairs -= static_cast<std::size_t>(v.end() - end);
      v.erase(end, v.end());
      MarkDirty(shard);
    }
    shards_of.erase(it);
    return true;
  }
  // Twice the shards, every pair moved to its new shard (amortised O(1) per pair).
  void Grow() {
    ++bits;
    std::vector<std::vector<Entry>> next(std::size_t{1} << bits);
    for (auto& v : entries) {
      for (Entry& e : v) next[ShardOf(e.remote)].push_back(e);
    }
    entries = std::move(next);
    for (auto& [id, list] : shards_of) {
      list.clear();
    }
    for (std::uint32_t shard = 0; shard < entries.size(); ++shard) {
      for (const Entry& e : entries[shard]) {
        auto& list = shards_of[e.id];
        if (list.empty() || list.back() != shard) list.push_back(shard);
      }
    }
    dirty.assign(entries.size(), false);
    dirty_list.clear();
    for (std::uint32_t shard = 0; shard < entries.size(); ++shard) MarkDirty(shard);
  }
  std::unique_ptr<SpdSnapshot::HostShard> BuildShard(std::uint32_t shard) const {
    std::vector<const Entry*> v;
    v.reserve(entries[shard].size());
    for (const Entry& e : entries[shard]) v.push_back(&e);
    // Along a probe run, pairs of one remote address in the order they must be tried.
    std::sort(v.begin(), v.end(), [](const Entry* a, const Entry* b) {
      if (a->local_len != b->local_len) return a->local_len > b->local_len;
      return a->seq < b->seq;
    });
    auto out = std::make_unique<SpdSnapshot::HostShard>();
    const std::uint32_t table_bits = TableBits(v.size());
    out->slots.assign(std::size_t{1} << table_bits, SpdSnapshot::HostSlot{});
    out->mask = (std::uint32_t{1} << table_bits) - 1;
    out->shift = static_cast<std::uint8_t>(64 - table_bits);
    for (const Entry* e : v) {
      const std::uint64_t h = HostHash(e->remote);
      std::uint32_t i = static_cast<std::uint32_t>((h << bits) >> out->shift);
      while (out->slots[i].used) i = (i + 1) & out->mask;
      out->slots[i] = {e->remote, e->id, e->local, e->family, true};
    }
    return out;
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
  snap->host_shift_ = cur->host_shift_;
  snap->host_pairs_ = cur->host_pairs_;
  snap->host_locals_ = cur->host_locals_;
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
  auto& list = h.shards_of[id];
  for (HostState::Entry& e : add) {
    e.seq = seq;
    const std::uint32_t shard = h.ShardOf(e.remote);
    h.entries[shard].push_back(e);
    h.MarkDirty(shard);
    if (std::find(list.begin(), list.end(), shard) == list.end()) list.push_back(shard);
    ++h.pairs;
  }
  if (h.pairs > (std::size_t{1} << h.bits) * HostState::kMaxAveragePairs) h.Grow();
  return true;
}

bool Spd::RemoveHostPolicy(PolicyId id) {
  std::lock_guard lock(publish_mu_);
  return hosts_->Erase(id);
}

std::size_t Spd::host_policy_count() const { return hosts_->shards_of.size(); }

std::size_t Spd::CommitHostPolicies() {
  std::lock_guard lock(publish_mu_);
  HostState& h = *hosts_;
  if (h.dirty_list.empty()) return 0;
  const std::size_t n = std::size_t{1} << h.bits;
  // Shards replaced now are freed after the grace period (readers may still be in them).
  std::vector<std::unique_ptr<SpdSnapshot::HostShard>> retired;
  if (h.shards.size() != n) {  // first commit, or grown: every shard is new
    retired = std::move(h.shards);
    h.shards.clear();
    h.shards.resize(n);
  }
  for (std::uint32_t shard : h.dirty_list) {
    if (h.shards[shard]) retired.push_back(std::move(h.shards[shard]));
    h.shards[shard] = h.BuildShard(shard);
    h.dirty[shard] = false;
  }
  const std::size_t rebuilt = h.dirty_list.size();
  h.dirty_list.clear();
  for (std::uint32_t shard = 0; shard < n; ++shard) {
    if (!h.shards[shard]) h.shards[shard] = h.BuildShard(shard);
  }
  const SpdSnapshot* cur = current_.load(std::memory_order_relaxed);
  auto* snap = new SpdSnapshot(cur->impl_);
  snap->hosts_.reserve(n);
  for (const auto& shard : h.shards)
    snap->hosts_.push_back({shard->slots.data(), shard->mask, shard->shift});
  snap->host_shift_ = static_cast<std::uint8_t>(64 - h.bits);
  snap->host_pairs_ = h.pairs;
  snap->host_locals_ = h.locals;
  Swap(snap);
  return rebuilt;  // `retired` goes here, after the grace period
}

void Spd::WaitForReaders() {
  for (ReaderSlot& s : slots_) {
    const std::uint64_t seq = s.seq.load(std::memory_order_seq_cst);
    if (seq % 2 == 0) continue;
    while (s.seq.load(std::memory_order_seq_cst) == seq) std::this_thread::yield();
  }
}

}  // namespace spigot::policy
