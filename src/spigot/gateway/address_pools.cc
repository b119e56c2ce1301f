#include "spigot/gateway/address_pools.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <limits>
#include <optional>
#include <string>

namespace spigot::gateway {
namespace {

using PoolAddr = unsigned __int128;

// The lease file's format; Load refuses any other.
constexpr int kLeaseFileVersion = 1;
// A lease file holds at most a few million leases; anything larger is not ours.
constexpr std::size_t kMaxLeaseFileBytes = 1u << 30;

policy::Family PoolFamily(config::AddressFamily family) {
  return family == config::AddressFamily::kIpv4 ? policy::Family::kIpv4 : policy::Family::kIpv6;
}

PoolAddr PoolAddrFromBytes(policy::Family family, const std::uint8_t* bytes) {
  PoolAddr a = 0;
  for (std::size_t i = 0; i < policy::AddressLength(family); ++i) a = (a << 8) | bytes[i];
  return a;
}

policy::Prefix PoolHostPrefix(policy::Family family, PoolAddr a) {
  policy::Prefix p;
  p.family = family;
  p.prefix_len = policy::MaxPrefixLength(family);
  for (std::size_t i = policy::AddressLength(family); i-- > 0;) {
    p.address[i] = static_cast<std::uint8_t>(a);
    a >>= 8;
  }
  return p;
}

// "198.18.0.7", "2001:db8::7": a lease's address without the /32 or /128.
std::string PoolAddressText(const policy::Prefix& p) {
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(p.family == policy::Family::kIpv4 ? AF_INET : AF_INET6, p.address.data(), text,
            sizeof text);
  return text;
}

std::uint64_t PoolSize(PoolAddr first, PoolAddr last) {
  const PoolAddr span = last - first;  // size - 1, which cannot overflow
  constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
  return span >= kMax ? kMax : static_cast<std::uint64_t>(span) + 1;
}

const char* PoolFamilyName(policy::Family family) {
  return family == policy::Family::kIpv4 ? "ipv4" : "ipv6";
}

// Sets `missing` (and returns false) when there is no file at `path`.
bool ReadLeaseFile(const std::string& path, std::string& out, bool& missing,
                   std::string& reason) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  missing = fd < 0 && errno == ENOENT;
  if (fd < 0) {
    reason = std::string("cannot read: ") + std::strerror(errno);
    return false;
  }
  std::string data;
  char chunk[65536];
  while (true) {
    const ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      reason = std::string("cannot read: ") + std::strerror(errno);
      break;
    }
    if (n == 0) break;
    if (data.size() + static_cast<std::size_t>(n) > kMaxLeaseFileBytes) {
      reason = "larger than " + std::to_string(kMaxLeaseFileBytes) + " bytes";
      break;
    }
    data.append(chunk, static_cast<std::size_t>(n));
  }
  close(fd);
  if (!reason.empty()) return false;
  out = std::move(data);
  return true;
}

// Writes `data` to `path` through `path`.tmp, fsync and rename, so a crash leaves the old file
// or the new one, never half of one.
bool WriteLeaseFileAtomically(const std::string& path, const std::string& data,
                              std::string& reason) {
  const std::string temp = path + ".tmp";
  const int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    reason = "cannot create " + temp + ": " + std::strerror(errno);
    return false;
  }
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      reason = "cannot write " + temp + ": " + std::strerror(errno);
      break;
    }
    done += static_cast<std::size_t>(n);
  }
  if (reason.empty() && fsync(fd) != 0) {
    reason = "cannot fsync " + temp + ": " + std::strerror(errno);
  }
  if (close(fd) != 0 && reason.empty()) {
    reason = "cannot close " + temp + ": " + std::strerror(errno);
  }
  if (reason.empty() && rename(temp.c_str(), path.c_str()) != 0) {
    reason = "cannot rename " + temp + ": " + std::strerror(errno);
  }
  if (!reason.empty()) {
    unlink(temp.c_str());
    return false;
  }
  return true;
}

}  // namespace

AddressPools::Pool* AddressPools::FindPool(const std::string& name) {
  for (Pool& pool : pools_) {
    if (pool.name == name) return &pool;
  }
  return nullptr;
}

const AddressPools::Pool* AddressPools::FindPool(const std::string& name) const {
  for (const Pool& pool : pools_) {
    if (pool.name == name) return &pool;
  }
  return nullptr;
}

AddressPools::Pool* AddressPools::CoveringPool(policy::Family family, Addr address) {
  for (Pool& pool : pools_) {
    if (pool.family == family && pool.first <= address && address <= pool.last) return &pool;
  }
  return nullptr;
}

// --- never-used intervals -----------------------------------------------------------------

void AddressPools::AddNeverUsed(Pool& pool, Addr from, Addr to) {
  // Merge with a neighbour that ends right before `from` or starts right after `to`.
  auto next = pool.never_used.upper_bound(from);
  if (next != pool.never_used.begin()) {
    auto before = std::prev(next);
    if (before->second + 1 == from) {
      from = before->first;
      pool.never_used.erase(before);
    }
  }
  if (next != pool.never_used.end() && to + 1 == next->first) {
    to = next->second;
    pool.never_used.erase(next);
  }
  pool.never_used.emplace(from, to);
}

bool AddressPools::RemoveNeverUsed(Pool& pool, Addr address) {
  auto it = pool.never_used.upper_bound(address);
  if (it == pool.never_used.begin()) return false;
  --it;
  const Addr from = it->first;
  const Addr to = it->second;
  if (to < address) return false;
  pool.never_used.erase(it);
  if (from < address) pool.never_used.emplace(from, address - 1);
  if (address < to) pool.never_used.emplace(address + 1, to);
  return true;
}

// --- reload --------------------------------------------------------------------------------

void AddressPools::Apply(const std::vector<config::PoolConfig>& configs) {
  std::vector<Pool> next;
  next.reserve(configs.size());
  std::vector<bool> kept(pools_.size(), false);
  for (const config::PoolConfig& config : configs) {
    std::size_t i = 0;
    while (i < pools_.size() && (kept[i] || pools_[i].name != config.name)) ++i;
    if (i < pools_.size()) {
      kept[i] = true;
      next.push_back(std::move(pools_[i]));
      Reshape(next.back(), config);
    } else {
      Pool pool;
      pool.name = config.name;
      pool.family = PoolFamily(config.family);
      pool.first = PoolAddrFromBytes(pool.family, config.first.data());
      pool.last = PoolAddrFromBytes(pool.family, config.last.data());
      pool.never_used.emplace(pool.first, pool.last);
      next.push_back(std::move(pool));
    }
  }
  for (std::size_t i = 0; i < pools_.size(); ++i) {
    if (kept[i]) continue;
    Pool& removed = pools_[i];
    while (!removed.leases.empty()) Retire(removed, removed.leases.begin());
  }
  pools_ = std::move(next);

  // A retired address inside a (new or grown) pool's range stays out of its never-used set
  // until released. RemoveNeverUsed is a no-op where it already is out.
  for (const auto& [key, retired] : retired_) {
    if (Pool* pool = CoveringPool(key.first, key.second)) RemoveNeverUsed(*pool, key.second);
  }
}

void AddressPools::Reshape(Pool& pool, const config::PoolConfig& config) {
  const policy::Family family = PoolFamily(config.family);
  const Addr first = PoolAddrFromBytes(family, config.first.data());
  const Addr last = PoolAddrFromBytes(family, config.last.data());
  if (family == pool.family && first == pool.first && last == pool.last) return;

  // Leases outside the new range go first (retired or dropped).
  const bool same_family = family == pool.family;
  for (auto it = pool.leases.begin(); it != pool.leases.end();) {
    if (same_family && first <= it->first && it->first <= last) {
      ++it;
    } else {
      auto gone = it++;
      Retire(pool, gone);
    }
  }

  // Never used now: what was never used and is still in range, and what the range gained.
  std::map<Addr, Addr> old_never_used;
  old_never_used.swap(pool.never_used);
  if (same_family) {
    for (const auto& [from, to] : old_never_used) {
      const Addr a = std::max(from, first);
      const Addr b = std::min(to, last);
      if (a <= b) AddNeverUsed(pool, a, b);
    }
    if (first < pool.first) AddNeverUsed(pool, first, std::min(last, pool.first - 1));
    if (last > pool.last) AddNeverUsed(pool, std::max(first, pool.last + 1), last);
  } else {
    AddNeverUsed(pool, first, last);
  }
  pool.family = family;
  pool.first = first;
  pool.last = last;
}

void AddressPools::Retire(Pool& pool, std::map<Addr, Record>::iterator lease) {
  Record& record = lease->second;
  pool.by_identity.erase(record.identity);
  if (record.holders > 0) {
    retired_[{pool.family, lease->first}] =
        Retired{pool.name, std::move(record.identity), record.holders, record.since};
    --pool.online;
  } else {
    pool.offline.erase(record.offline_seq);
  }
  pool.leases.erase(lease);
}

// --- acquire and release -------------------------------------------------------------------

AddressPools::AcquireResult AddressPools::Acquire(const std::vector<std::string>& pool_names,
                                                  policy::Family family,
                                                  const std::string& identity, Lease* out) {
  std::vector<Pool*> candidates;
  for (const std::string& name : pool_names) {
    Pool* pool = FindPool(name);
    if (pool != nullptr && pool->family == family &&
        std::find(candidates.begin(), candidates.end(), pool) == candidates.end()) {
      candidates.push_back(pool);
    }
  }
  if (candidates.empty()) return AcquireResult::kNoPoolForFamily;

  // Three passes over the pools, as strongSwan's attribute providers make: the identity's own
  // lease anywhere, then a never-used address, then a reclaimed one.
  for (Pool* pool : candidates) {
    const auto it = pool->by_identity.find(identity);
    if (it != pool->by_identity.end()) {
      *out = Hold(*pool, it->second);
      return AcquireResult::kOk;
    }
  }
  for (Pool* pool : candidates) {
    if (!pool->never_used.empty()) {
      *out = TakeNeverUsed(*pool, identity);
      return AcquireResult::kOk;
    }
  }
  for (Pool* pool : candidates) {
    if (!pool->offline.empty()) {
      *out = Reclaim(*pool, identity);
      return AcquireResult::kOk;
    }
  }
  for (Pool* pool : candidates) ++pool->exhausted;
  return AcquireResult::kExhausted;
}

AddressPools::AcquireResult AddressPools::AcquireAddress(const std::vector<std::string>& pool_names,
                                                         const policy::Prefix& prefix,
                                                         const std::string& identity, Lease* out) {
  const policy::Family family = prefix.family;
  const Addr address = PoolAddrFromBytes(family, prefix.address.data());
  Pool* pool = nullptr;
  for (const std::string& name : pool_names) {
    Pool* p = FindPool(name);
    if (p != nullptr && p->family == family && p->first <= address && address <= p->last) {
      pool = p;
      break;
    }
  }
  if (pool == nullptr) return AcquireResult::kUnavailable;
  if (const auto own = pool->by_identity.find(identity); own != pool->by_identity.end() && own->second != address) {
    Record& old = pool->leases.at(own->second);
    if (old.holders > 0) return AcquireResult::kUnavailable;
    // Its offline lease goes back to the pool: one address per identity and pool.
    pool->offline.erase(old.offline_seq);
    const Addr freed = own->second;
    pool->leases.erase(freed);
    pool->by_identity.erase(own);
    AddNeverUsed(*pool, freed, freed);
  }
  const auto it = pool->leases.find(address);
  if (it != pool->leases.end() && it->second.identity == identity) {
    *out = Hold(*pool, address);
    return AcquireResult::kOk;
  }
  if (it == pool->leases.end()) {
    if (!RemoveNeverUsed(*pool, address)) return AcquireResult::kUnavailable;  // retired and still held
    pool->leases.emplace(address, Record{identity, 1, 0, clock_.Now()});
  } else {
    // Another identity's lease: taken only when offline, as Reclaim takes the oldest.
    Record& record = it->second;
    if (record.holders > 0) return AcquireResult::kUnavailable;
    pool->offline.erase(record.offline_seq);
    pool->by_identity.erase(record.identity);
    record = Record{identity, 1, 0, clock_.Now()};
  }
  pool->by_identity.emplace(identity, address);
  ++pool->online;
  *out = Lease{pool->name, PoolHostPrefix(family, address)};
  return AcquireResult::kOk;
}

AddressPools::Lease AddressPools::Hold(Pool& pool, Addr address) {
  Record& record = pool.leases.at(address);
  if (record.holders == 0) {
    pool.offline.erase(record.offline_seq);
    ++pool.online;
    record.since = clock_.Now();
  }
  ++record.holders;
  return Lease{pool.name, PoolHostPrefix(pool.family, address)};
}

AddressPools::Lease AddressPools::TakeNeverUsed(Pool& pool, const std::string& identity) {
  auto lowest = pool.never_used.begin();
  const Addr address = lowest->first;
  if (lowest->first == lowest->second) {
    pool.never_used.erase(lowest);
  } else {
    auto node = pool.never_used.extract(lowest);
    node.key() = address + 1;
    pool.never_used.insert(pool.never_used.begin(), std::move(node));
  }
  pool.leases.emplace(address, Record{identity, 1, 0, clock_.Now()});
  pool.by_identity.emplace(identity, address);
  ++pool.online;
  return Lease{pool.name, PoolHostPrefix(pool.family, address)};
}

AddressPools::Lease AddressPools::Reclaim(Pool& pool, const std::string& identity) {
  const auto oldest = pool.offline.begin();
  const Addr address = oldest->second;
  pool.offline.erase(oldest);
  Record& record = pool.leases.at(address);
  pool.by_identity.erase(record.identity);
  record = Record{identity, 1, 0, clock_.Now()};
  pool.by_identity.emplace(identity, address);
  ++pool.online;
  return Lease{pool.name, PoolHostPrefix(pool.family, address)};
}

void AddressPools::GoOffline(Pool& pool, Addr address, Record& record) {
  record.offline_seq = next_offline_seq_++;
  record.since = clock_.Now();
  pool.offline.emplace(record.offline_seq, address);
  --pool.online;
}

bool AddressPools::Release(const std::string& identity, const Lease& lease) {
  const policy::Family family = lease.address.family;
  const Addr address = PoolAddrFromBytes(family, lease.address.address.data());
  if (Pool* pool = FindPool(lease.pool); pool != nullptr && pool->family == family) {
    const auto it = pool->leases.find(address);
    if (it != pool->leases.end() && it->second.holders > 0 && it->second.identity == identity) {
      if (--it->second.holders == 0) GoOffline(*pool, address, it->second);
      return true;
    }
  }
  const auto retired = retired_.find({family, address});
  if (retired == retired_.end() || retired->second.identity != identity ||
      retired->second.pool != lease.pool) {
    return false;
  }
  if (--retired->second.holders == 0) {
    retired_.erase(retired);
    if (Pool* pool = CoveringPool(family, address)) AddNeverUsed(*pool, address, address);
  }
  return true;
}

// --- what the operator sees ----------------------------------------------------------------

std::vector<AddressPools::PoolStats> AddressPools::Stats() const {
  std::vector<PoolStats> stats;
  stats.reserve(pools_.size());
  for (const Pool& pool : pools_) {
    stats.push_back(PoolStats{pool.name, pool.family, PoolSize(pool.first, pool.last),
                              pool.online, pool.offline.size(), pool.exhausted});
  }
  return stats;
}

std::vector<AddressPools::LeaseInfo> AddressPools::Leases() const {
  std::vector<LeaseInfo> leases;
  for (const Pool& pool : pools_) {
    for (const auto& [address, record] : pool.leases) {
      leases.push_back(LeaseInfo{pool.name, record.identity,
                                 PoolHostPrefix(pool.family, address), record.holders, false,
                                 record.since});
    }
  }
  for (const auto& [key, retired] : retired_) {
    leases.push_back(LeaseInfo{retired.pool, retired.identity,
                               PoolHostPrefix(key.first, key.second), retired.holders, true,
                               retired.since});
  }
  return leases;
}

nlohmann::json AddressPools::LeasesJson() const {
  nlohmann::json pools = nlohmann::json::array();
  for (const Pool& pool : pools_) {
    nlohmann::json leases = nlohmann::json::array();
    for (const auto& [address, record] : pool.leases) {
      if (record.holders == 0) continue;
      leases.push_back({{"identity", record.identity},
                        {"address", PoolAddressText(PoolHostPrefix(pool.family, address))}});
    }
    pools.push_back({{"name", pool.name},
                     {"family", PoolFamilyName(pool.family)},
                     {"size", PoolSize(pool.first, pool.last)},
                     {"in_use", pool.online},
                     {"offline", pool.offline.size()},
                     {"exhausted", pool.exhausted},
                     {"leases", std::move(leases)}});
  }
  nlohmann::json retired = nlohmann::json::array();
  for (const auto& [key, lease] : retired_) {
    retired.push_back({{"pool", lease.pool},
                       {"identity", lease.identity},
                       {"address", PoolAddressText(PoolHostPrefix(key.first, key.second))}});
  }
  return {{"pools", std::move(pools)}, {"retired", std::move(retired)}};
}

// --- persistence ---------------------------------------------------------------------------
//
// {"version": 1, "pools": [{"name": "rw", "leases": [{"identity": "alice",
//                                                      "address": "198.18.0.7"}]}]}
// Offline leases come first, oldest release first, then the online ones: Load makes them all
// offline in file order, so the reclaim order survives a restart.

bool AddressPools::Save(const std::string& path, std::string* error) const {
  nlohmann::json pools = nlohmann::json::array();
  for (const Pool& pool : pools_) {
    nlohmann::json leases = nlohmann::json::array();
    const auto add = [&](Addr address, const Record& record) {
      leases.push_back({{"identity", record.identity},
                        {"address", PoolAddressText(PoolHostPrefix(pool.family, address))}});
    };
    for (const auto& [seq, address] : pool.offline) add(address, pool.leases.at(address));
    for (const auto& [address, record] : pool.leases) {
      if (record.holders > 0) add(address, record);
    }
    pools.push_back({{"name", pool.name}, {"leases", std::move(leases)}});
  }
  const nlohmann::json file = {{"version", kLeaseFileVersion}, {"pools", std::move(pools)}};
  std::string reason;
  // An identity that is not UTF-8 is written with U+FFFD in place of the bad bytes (dump would
  // throw otherwise); after a restart that identity merely loses its sticky address.
  const std::string text =
      file.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  if (!WriteLeaseFileAtomically(path, text, reason)) {
    if (error != nullptr) *error = path + ": " + reason;
    return false;
  }
  return true;
}

bool AddressPools::Load(const std::string& path, std::string* error) {
  const auto fail = [&](const std::string& reason) {
    if (error != nullptr) *error = path + ": " + reason;
    return false;
  };
  std::string text;
  std::string reason;
  bool missing = false;
  if (!ReadLeaseFile(path, text, missing, reason)) return missing || fail(reason);
  const nlohmann::json file = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (file.is_discarded()) return fail("not a lease file (not JSON)");
  const auto version = file.is_object() ? file.find("version") : file.end();
  if (version == file.end() || !version->is_number_integer() ||
      version->get<int>() != kLeaseFileVersion) {
    return fail("not a lease file (\"version\": " + std::to_string(kLeaseFileVersion) +
                " expected)");
  }
  const auto pools = file.find("pools");
  if (pools == file.end() || !pools->is_array()) return fail("not a lease file (no \"pools\")");

  // Check everything before changing anything: a bad file loads nothing.
  std::vector<StoredLease> entries;
  for (const nlohmann::json& pool : *pools) {
    const auto name = pool.is_object() ? pool.find("name") : pool.end();
    const auto leases = pool.is_object() ? pool.find("leases") : pool.end();
    if (name == pool.end() || !name->is_string() || leases == pool.end() ||
        !leases->is_array()) {
      return fail("not a lease file (a pool without \"name\" or \"leases\")");
    }
    for (const nlohmann::json& lease : *leases) {
      const auto identity = lease.is_object() ? lease.find("identity") : lease.end();
      const auto address = lease.is_object() ? lease.find("address") : lease.end();
      if (identity == lease.end() || !identity->is_string() || address == lease.end() ||
          !address->is_string()) {
        return fail("not a lease file (a lease without \"identity\" or \"address\")");
      }
      const std::string& text_address = address->get_ref<const std::string&>();
      const std::optional<policy::Prefix> host = policy::Prefix::Parse(text_address);
      if (!host || text_address.find('/') != std::string::npos) {
        return fail("not a lease file (\"" + text_address + "\" is not an address)");
      }
      entries.push_back(StoredLease{name->get<std::string>(), identity->get<std::string>(), *host});
    }
  }
  Restore(entries);
  return true;
}

std::vector<AddressPools::StoredLease> AddressPools::Snapshot() const {
  std::vector<StoredLease> out;
  for (const Pool& pool : pools_) {
    for (const auto& [seq, address] : pool.offline) {
      out.push_back(StoredLease{pool.name, pool.leases.at(address).identity,
                                PoolHostPrefix(pool.family, address)});
    }
    for (const auto& [address, record] : pool.leases) {
      if (record.holders > 0) {
        out.push_back(StoredLease{pool.name, record.identity, PoolHostPrefix(pool.family, address)});
      }
    }
  }
  return out;
}

std::size_t AddressPools::Restore(const std::vector<StoredLease>& leases) {
  std::size_t added = 0;
  for (const StoredLease& entry : leases) {
    Pool* pool = FindPool(entry.pool);
    if (pool == nullptr || pool->family != entry.address.family ||
        entry.address.prefix_len != policy::MaxPrefixLength(pool->family) ||
        pool->by_identity.count(entry.identity) != 0) {
      continue;
    }
    const Addr address = PoolAddrFromBytes(pool->family, entry.address.address.data());
    if (!RemoveNeverUsed(*pool, address)) continue;  // outside the range, or taken
    Record record{entry.identity, 0, next_offline_seq_++, clock_.Now()};
    pool->offline.emplace(record.offline_seq, address);
    pool->by_identity.emplace(entry.identity, address);
    pool->leases.emplace(address, std::move(record));
    ++added;
  }
  return added;
}

}  // namespace spigot::gateway
