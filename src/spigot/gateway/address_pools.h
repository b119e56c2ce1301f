// Virtual IP address pools ([[pool]], DESIGN.md "Many peers on one connection") and their
// leases: the addresses road warriors get in a CFG_REPLY.
//
// Contract:
//  - Control thread only; no locks.
//  - A lease is keyed by (identity, pool): an identity has at most one address per pool. It is
//    online while at least one IKE SA holds it (Acquire and Release are counted per holder, so
//    several IKE SAs of one identity share one address), offline after the last Release. An
//    offline lease stays with its identity (sticky: a reconnect gets the same address) until
//    the pool has no never-used address left; then the offline lease released longest ago is
//    reclaimed for a new identity (strongSwan's mem pool does the same).
//  - Bound: one record per lease, never one per address. A pool is its range, a set of
//    never-used intervals and its leases, so a /12 (or an IPv6 /32) costs nothing until used.
//    Acquire, Release: O(log n) in the pool's leases (plus O(pools named)).
//  - Full: Acquire answers kExhausted and counts it (`exhausted` of every pool it tried), never
//    hands out an address twice.
//  - Reload (Apply): a pool kept by name keeps the leases still inside its range. An online
//    lease that falls out of every range (its pool removed or shrunk) is retired: it keeps its
//    address, which no pool hands out, until its last holder releases it; offline leases that
//    fall out are dropped.
//  - Persistence: Save / Load keep identity -> address per pool across restarts in a JSON file
//    (global.leases_file), Snapshot / Restore hand the same to the lease database
//    (gateway/lease_store.h, global.lease_db); all come back as offline leases, since no IKE SA
//    survives a restart.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "spigot/config/config.h"
#include "spigot/io/clock.h"
#include "spigot/policy/prefix.h"

namespace spigot::gateway {

class AddressPools {
 public:
  struct Lease {
    std::string pool;
    policy::Prefix address;  // a host: /32 or /128
    bool operator==(const Lease&) const = default;
  };

  enum class AcquireResult : std::uint8_t {
    kOk,
    kExhausted,         // every pool named for the family is full (counted as `exhausted`)
    kNoPoolForFamily,   // none of the pools named serves the family (or exists)
    kUnavailable,       // AcquireAddress: outside the pools named, or online for another identity
  };

  struct PoolStats {
    std::string name;
    policy::Family family = policy::Family::kIpv4;
    std::uint64_t size = 0;       // addresses in the range; saturates at 2^64 - 1 (IPv6)
    std::uint64_t online = 0;     // leases held by at least one IKE SA ("in_use")
    std::uint64_t offline = 0;    // leases remembered for their identity, reclaimable
    std::uint64_t exhausted = 0;  // Acquires refused for lack of room
  };

  struct LeaseInfo {
    std::string pool;
    std::string identity;
    policy::Prefix address;
    std::uint32_t holders = 0;  // IKE SAs holding it; 0: offline
    bool retired = false;       // its pool no longer has the address (see Apply)
    // Acquired by its first holder (online), or released by its last (offline); a lease Load
    // brought back counts from the Load.
    io::Clock::TimePoint since{};
  };

  // `clock` stamps the leases' `since`; it must outlive this object.
  explicit AddressPools(const io::Clock& clock) : clock_(clock) {}

  // Sets the pools (at startup and on every reload), keeping the leases that still fit (see the
  // contract above). Precondition: the pools have distinct names and share no address, as
  // config::LoadString guarantees.
  void Apply(const std::vector<config::PoolConfig>& pools);

  // An address of `family` for `identity` from the first of `pool_names` (in order) that can
  // give one: the identity's own lease (online or offline) in any of them first, else a
  // never-used address, else the oldest offline lease of another identity. Each kOk is one
  // holder, to be given back with one Release. `out` is set iff kOk.
  AcquireResult Acquire(const std::vector<std::string>& pool_names, policy::Family family,
                        const std::string& identity, Lease* out);

  // `address` itself for `identity` (RADIUS Framed-IP-Address), from the one of `pool_names`
  // whose range holds it: never used, the identity's own lease, or another identity's offline
  // lease (the authenticator decides). An identity's offline lease elsewhere in that pool is
  // given up for it. kUnavailable when no pool named holds the address, it is online for
  // another identity, or the identity is online with another address there.
  AcquireResult AcquireAddress(const std::vector<std::string>& pool_names, const policy::Prefix& address,
                               const std::string& identity, Lease* out);

  // Gives back one holder of `lease`, acquired by `identity` (once per IKE SA that held it).
  // The lease goes offline when the last holder releases it; a retired lease is forgotten and
  // its address returns to the pool that now covers it, if any. False (and nothing changes)
  // when `identity` holds no such lease.
  bool Release(const std::string& identity, const Lease& lease);

  // Per pool, in the order Apply got them.
  std::vector<PoolStats> Stats() const;
  // Online leases still held whose pool no longer has their address.
  std::size_t retired_online() const { return retired_.size(); }

  // A lease as it is kept across restarts: no holders, no times.
  struct StoredLease {
    std::string pool;
    std::string identity;
    policy::Prefix address;  // a host
    bool operator==(const StoredLease&) const = default;
  };

  // Every pool's leases (not the retired ones) in the order Restore should get them: offline
  // ones oldest release first, then the online ones by address.
  std::vector<StoredLease> Snapshot() const;

  // Adds `leases` as offline (sticky) leases, the first to be reclaimed first. Entries of a
  // pool that no longer exists, of another family, outside their pool's range, for an
  // identity that has a lease in that pool already, or on an address taken are skipped.
  // Returns how many were added.
  std::size_t Restore(const std::vector<StoredLease>& leases);

  // Every lease: per pool in Apply's order, by address; then the retired ones.
  std::vector<LeaseInfo> Leases() const;

  // What `spigot leases --json` prints (DESIGN.md):
  //   {"pools": [{"name", "family", "size", "in_use", "offline", "exhausted",
  //               "leases": [{"identity", "address"}]}],
  //    "retired": [{"pool", "identity", "address"}]}
  // "leases" lists the online leases (in_use of them); addresses are bare ("198.18.0.7").
  // Identities are the caller's bytes: dump with error_handler_t::replace unless they are
  // known to be UTF-8.
  nlohmann::json LeasesJson() const;

  // Writes every pool's leases (identity -> address, online and offline, offline ones in the
  // order they would be reclaimed) as JSON to `path`, atomically: a temporary file beside it,
  // fsync, rename. False with the reason in `error` on failure; `path` is then unchanged.
  bool Save(const std::string& path, std::string* error) const;

  // Reads a file Save wrote and adds its leases as offline (sticky) leases. Entries of a pool
  // that no longer exists, outside their pool's range, or clashing with a lease already present
  // are ignored. A missing file is an empty one (the first start). False with the reason in
  // `error` when the file cannot be read or is not a lease file; nothing is loaded then.
  bool Load(const std::string& path, std::string* error);

 private:
  // An address as a number; IPv4 in the low 32 bits.
  using Addr = unsigned __int128;

  struct Record {
    std::string identity;
    std::uint32_t holders = 0;      // 0: offline
    std::uint64_t offline_seq = 0;  // its key in Pool::offline, iff holders == 0
    io::Clock::TimePoint since{};
  };

  struct Pool {
    std::string name;
    policy::Family family = policy::Family::kIpv4;
    Addr first = 0;  // inclusive
    Addr last = 0;   // inclusive
    // The addresses in [first, last] never handed out, as disjoint inclusive intervals
    // start -> end in address order; Acquire takes the lowest. Invariant: [first, last] is
    // exactly never_used + leases + the retired addresses that fall inside it.
    std::map<Addr, Addr> never_used;
    std::map<Addr, Record> leases;                      // online and offline, by address
    std::unordered_map<std::string, Addr> by_identity;  // identity -> its lease's address
    std::map<std::uint64_t, Addr> offline;              // offline leases, oldest release first
    std::uint64_t online = 0;
    std::uint64_t exhausted = 0;
  };

  struct Retired {
    std::string pool;
    std::string identity;
    std::uint32_t holders = 0;
    io::Clock::TimePoint since{};
  };

  Pool* FindPool(const std::string& name);
  const Pool* FindPool(const std::string& name) const;
  Pool* CoveringPool(policy::Family family, Addr address);
  // Moves `pool` to the range and family of `config`, retiring or dropping the leases outside.
  void Reshape(Pool& pool, const config::PoolConfig& config);
  // Online leases become retired, offline ones are dropped.
  void Retire(Pool& pool, std::map<Addr, Record>::iterator lease);
  Lease Hold(Pool& pool, Addr address);
  Lease TakeNeverUsed(Pool& pool, const std::string& identity);
  Lease Reclaim(Pool& pool, const std::string& identity);
  void GoOffline(Pool& pool, Addr address, Record& record);

  static void AddNeverUsed(Pool& pool, Addr from, Addr to);
  // False if `address` is not never-used in `pool`.
  static bool RemoveNeverUsed(Pool& pool, Addr address);

  const io::Clock& clock_;
  std::vector<Pool> pools_;
  std::map<std::pair<policy::Family, Addr>, Retired> retired_;
  std::uint64_t next_offline_seq_ = 0;
};

}  // namespace spigot::gateway
