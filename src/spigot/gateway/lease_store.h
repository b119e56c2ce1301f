// The lease database (global.lease_db): virtual IP leases, identity -> address per pool, kept
// in SQLite so that after a crash (kill -9) or a restart every identity gets its old address
// back (DESIGN.md "Many peers on one connection"; issue 16 item 3).
//
// Contract:
//  - Control thread only; one connection, no locks of ours.
//  - Record() commits before it returns. The gateway calls it between acquiring the addresses
//    of a CFG_REPLY and sending it, so a peer never holds an address the database does not
//    know. One transaction per call (every address of one CFG_REPLY). The database is in WAL
//    mode with synchronous = NORMAL: a commit is a write() to the WAL file, no fsync, so it
//    survives the process (kill -9, a crash) but the last commits before a power cut may be
//    lost (SQLite's documented trade-off for WAL + NORMAL).
//  - Releases are not written: after a restart every lease comes back offline (no IKE SA
//    survives), and offline leases are reclaimed in the order of their last assignment.
//  - Never throws, never takes the daemon down. A file that is not a spigot lease database
//    (random bytes, a damaged page, another schema) is moved aside to PATH.corrupt and a new
//    one created: state kRebuilt, `rebuilds` + 1. A path that cannot be opened for writing
//    (read-only file or file system, no such directory) makes the store kUnavailable: the
//    leases live in memory only. Every such event is logged with the path and SQLite's error
//    and shown in `spigot stats` ("lease_db").
//  - Bound: one row per lease (AddressPools keeps one record per lease, never per address).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "spigot/gateway/address_pools.h"

struct sqlite3;
struct sqlite3_stmt;

namespace spigot::gateway {

class LeaseStore {
 public:
  enum class State : std::uint8_t {
    kOk,           // opened an existing database
    kCreated,      // there was none at the path: a new one was created
    kRebuilt,      // the file was not a lease database: moved aside, a new one created
    kUnavailable,  // cannot be opened or written: leases are not persisted
  };

  struct Status {
    std::string path;
    State state = State::kUnavailable;
    std::uint64_t loaded = 0;        // rows read at open
    std::uint64_t writes = 0;        // transactions committed
    std::uint64_t write_errors = 0;  // transactions that failed (rolled back)
    std::uint64_t rebuilds = 0;      // corrupt files moved aside (at open or later)
    std::string last_error;          // "" when none
  };

  // Opens (or creates) the database at `path` and reads its leases into `loaded`, oldest
  // assignment first (for AddressPools::Restore). Never fails: see the contract for what a
  // corrupt or unwritable path becomes.
  static std::unique_ptr<LeaseStore> Open(const std::string& path,
                                          std::vector<AddressPools::StoredLease>* loaded);
  ~LeaseStore();
  LeaseStore(const LeaseStore&) = delete;
  LeaseStore& operator=(const LeaseStore&) = delete;

  // `identity` holds `leases` now (each replaces whatever that identity had in the lease's
  // pool, and whoever had that address before), committed before it returns. False (and
  // counted, logged) when it could not be written; a corruption found here rebuilds the
  // file, and wants_snapshot() then asks for Replace.
  bool Record(const std::string& identity, const std::vector<AddressPools::Lease>& leases);

  // The database holds exactly `leases` (AddressPools::Snapshot order), in one transaction:
  // at startup after Restore, after a reload that changed the pools, after a rebuild.
  bool Replace(const std::vector<AddressPools::StoredLease>& leases);

  // True once after a rebuild at runtime: the new file is empty and wants the leases in memory.
  bool wants_snapshot() const { return wants_snapshot_; }

  const Status& status() const { return status_; }
  // The stats' "lease_db" object: path, state, loaded, writes, write_errors, rebuilds, last_error.
  nlohmann::json StatusJson() const;

 private:
  explicit LeaseStore(std::string path);
  // Opens and checks the file; on failure `error` says why and `corrupt` whether the file
  // itself is bad (then moving it aside and starting anew helps).
  bool TryOpen(std::string* error, bool* corrupt);
  bool ReadAll(std::vector<AddressPools::StoredLease>* out, std::string* error);
  void Close();
  void MoveAside();
  // A failed statement: rolls back, counts, logs; rebuilds when SQLite says the file is bad.
  bool Failed(const char* what, int rc);
  bool Exec(const char* sql);

  Status status_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* drop_other_ = nullptr;  // the identity's other rows in the pool
  sqlite3_stmt* upsert_ = nullptr;
  std::int64_t next_seq_ = 0;
  bool wants_snapshot_ = false;
};

const char* ToString(LeaseStore::State state);

}  // namespace spigot::gateway
