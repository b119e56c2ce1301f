#include "spigot/gateway/lease_store.h"

#include <arpa/inet.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>

#include <spdlog/spdlog.h>

namespace spigot::gateway {
namespace {

// PRAGMA application_id of a spigot lease database ("SPGL"), and the schema's version
// (PRAGMA user_version). A file with another id and any table in it is not ours.
constexpr std::int32_t kLeaseDbApplicationId = 0x5350474c;
constexpr int kLeaseDbVersion = 1;
// Another process holding the write lock (an old daemon still exiting) is waited for this long.
constexpr int kLeaseDbBusyMs = 200;

// Addresses as text ("198.18.0.7", "2001:db8::7"): what `sqlite3 PATH` shows an operator.
std::string LeaseDbAddress(const policy::Prefix& p) {
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(p.family == policy::Family::kIpv4 ? AF_INET : AF_INET6, p.address.data(), text,
            sizeof text);
  return text;
}

bool LeaseDbCorruptCode(int rc) {
  const int primary = rc & 0xff;
  return primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB;
}

bool LeaseDbFileExists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

}  // namespace

const char* ToString(LeaseStore::State state) {
  switch (state) {
    case LeaseStore::State::kOk: return "ok";
    case LeaseStore::State::kCreated: return "created";
    case LeaseStore::State::kRebuilt: return "rebuilt";
    case LeaseStore::State::kUnavailable: return "unavailable";
  }
  return "?";
}

LeaseStore::LeaseStore(std::string path) { status_.path = std::move(path); }

LeaseStore::~LeaseStore() { Close(); }

void LeaseStore::Close() {
  sqlite3_finalize(drop_other_);
  sqlite3_finalize(upsert_);
  drop_other_ = upsert_ = nullptr;
  if (db_ != nullptr) sqlite3_close_v2(db_);
  db_ = nullptr;
}

std::unique_ptr<LeaseStore> LeaseStore::Open(const std::string& path,
                                             std::vector<AddressPools::StoredLease>* loaded) {
  std::unique_ptr<LeaseStore> store(new LeaseStore(path));
  Status& s = store->status_;
  const bool existed = LeaseDbFileExists(path);
  std::string error;
  bool corrupt = false;
  bool ok = store->TryOpen(&error, &corrupt) && store->ReadAll(loaded, &error);
  if (!ok && !corrupt && store->db_ != nullptr) corrupt = LeaseDbCorruptCode(sqlite3_errcode(store->db_));
  if (ok) {
    s.state = existed ? State::kOk : State::kCreated;
    s.loaded = loaded->size();
    if (existed) {
      spdlog::info("lease database {}: {} lease(s)", path, s.loaded);
    } else {
      spdlog::warn("lease database {}: not found; created a new one (no leases to restore)", path);
    }
    return store;
  }
  store->Close();
  loaded->clear();
  if (corrupt) {
    store->MoveAside();
    spdlog::error("lease database {}: {}; moved aside to {}.corrupt, starting with a new one", path,
                  error, path);
    ++s.rebuilds;
    s.last_error = error;
    std::string again;
    bool ignored = false;
    if (store->TryOpen(&again, &ignored)) {
      s.state = State::kRebuilt;
      return store;
    }
    error = again;
    store->Close();
  }
  s.state = State::kUnavailable;
  s.last_error = error;
  spdlog::error("lease database {}: {}; virtual IP leases are kept in memory only", path, error);
  return store;
}

bool LeaseStore::Exec(const char* sql) {
  return sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) == SQLITE_OK;
}

bool LeaseStore::TryOpen(std::string* error, bool* corrupt) {
  *corrupt = false;
  const auto fail = [&](const std::string& what) {
    const int rc = db_ != nullptr ? sqlite3_extended_errcode(db_) : SQLITE_CANTOPEN;
    *error = what + ": " + (db_ != nullptr ? sqlite3_errmsg(db_) : "cannot open");
    *corrupt = LeaseDbCorruptCode(rc);
    return false;
  };
  if (sqlite3_open_v2(status_.path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                      nullptr) != SQLITE_OK) {
    return fail("cannot open");
  }
  sqlite3_extended_result_codes(db_, 1);
  sqlite3_busy_timeout(db_, kLeaseDbBusyMs);
  // SQLite falls back to reading a file it may not write; we need to write.
  if (sqlite3_db_readonly(db_, "main") == 1) {
    *error = "read-only (" + std::string(std::strerror(EACCES)) + ")";
    return false;
  }
  // The first statement reads the header: random bytes fail here with "file is not a database".
  sqlite3_stmt* st = nullptr;
  std::int32_t app_id = 0;
  int version = 0;
  std::int64_t tables = 0;
  const auto scalar = [&](const char* sql, std::int64_t& out) {
    if (sqlite3_prepare_v2(db_, sql, -1, &st, nullptr) != SQLITE_OK) return false;
    const int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    st = nullptr;
    return rc == SQLITE_ROW || rc == SQLITE_DONE;
  };
  std::int64_t v = 0;
  if (!scalar("PRAGMA application_id", v)) return fail("reading the header");
  app_id = static_cast<std::int32_t>(v);
  if (!scalar("PRAGMA user_version", v)) return fail("reading the header");
  version = static_cast<int>(v);
  if (!scalar("SELECT count(*) FROM sqlite_schema", tables)) return fail("reading the schema");
  // A whole-file check is O(file) once per start; it catches damaged pages a query would only
  // meet later.
  if (sqlite3_prepare_v2(db_, "PRAGMA quick_check", -1, &st, nullptr) != SQLITE_OK)
    return fail("checking the file");
  int rc = sqlite3_step(st);
  const std::string check =
      rc == SQLITE_ROW ? reinterpret_cast<const char*>(sqlite3_column_text(st, 0)) : "";
  sqlite3_finalize(st);
  if (rc != SQLITE_ROW) return fail("checking the file");
  if (check != "ok") {
    *error = "integrity check failed: " + check;
    *corrupt = true;
    return false;
  }
  if (app_id != kLeaseDbApplicationId && tables != 0) {
    *error = "not a spigot lease database (application_id " + std::to_string(app_id) + ")";
    *corrupt = true;
    return false;
  }
  if (app_id == kLeaseDbApplicationId && version != kLeaseDbVersion) {
    *error = "lease database version " + std::to_string(version) + ", this spigot reads " +
             std::to_string(kLeaseDbVersion);
    *corrupt = true;
    return false;
  }
  // WAL: a commit appends to PATH-wal; a crash mid-commit leaves the last complete commit.
  if (sqlite3_prepare_v2(db_, "PRAGMA journal_mode = WAL", -1, &st, nullptr) != SQLITE_OK)
    return fail("setting WAL mode");
  rc = sqlite3_step(st);
  const std::string mode =
      rc == SQLITE_ROW ? reinterpret_cast<const char*>(sqlite3_column_text(st, 0)) : "";
  sqlite3_finalize(st);
  if (rc != SQLITE_ROW) return fail("setting WAL mode");
  if (mode != "wal") {
    *error = "cannot use WAL mode (journal_mode is \"" + mode + "\")";
    return false;
  }
  if (!Exec("PRAGMA synchronous = NORMAL")) return fail("setting synchronous");
  if (app_id != kLeaseDbApplicationId) {
    const std::string init =
        "BEGIN IMMEDIATE;"
        "CREATE TABLE leases(pool TEXT NOT NULL, address TEXT NOT NULL, identity BLOB NOT NULL,"
        " seq INTEGER NOT NULL, PRIMARY KEY (pool, address)) WITHOUT ROWID;"
        "CREATE UNIQUE INDEX leases_by_identity ON leases(pool, identity);"
        "PRAGMA application_id = " + std::to_string(kLeaseDbApplicationId) + ";"
        "PRAGMA user_version = " + std::to_string(kLeaseDbVersion) + ";"
        "COMMIT;";
    if (!Exec(init.c_str())) {
      std::string why = std::string("creating the schema: ") + sqlite3_errmsg(db_);
      *corrupt = LeaseDbCorruptCode(sqlite3_extended_errcode(db_));
      Exec("ROLLBACK");
      *error = why;
      return false;
    }
  }
  if (sqlite3_prepare_v3(db_, "DELETE FROM leases WHERE pool = ?1 AND identity = ?2 AND address <> ?3",
                         -1, SQLITE_PREPARE_PERSISTENT, &drop_other_, nullptr) != SQLITE_OK ||
      sqlite3_prepare_v3(db_,
                         "INSERT INTO leases(pool, address, identity, seq) VALUES (?1, ?3, ?2, ?4) "
                         "ON CONFLICT(pool, address) DO UPDATE SET identity = excluded.identity, "
                         "seq = excluded.seq",
                         -1, SQLITE_PREPARE_PERSISTENT, &upsert_, nullptr) != SQLITE_OK) {
    // Our application id with tables that do not fit: not a file this spigot wrote.
    const bool ours = app_id == kLeaseDbApplicationId;
    fail("preparing statements");
    *corrupt = *corrupt || ours;
    return false;
  }
  return true;
}

bool LeaseStore::ReadAll(std::vector<AddressPools::StoredLease>* out, std::string* error) {
  out->clear();
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db_, "SELECT pool, identity, address, seq FROM leases ORDER BY seq", -1,
                         &st, nullptr) != SQLITE_OK) {
    *error = std::string("reading the leases: ") + sqlite3_errmsg(db_);
    return false;
  }
  int rc;
  std::uint64_t bad = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const auto text = [&](int col) {
      const auto* p = static_cast<const char*>(sqlite3_column_blob(st, col));
      return std::string(p != nullptr ? p : "", static_cast<std::size_t>(sqlite3_column_bytes(st, col)));
    };
    const std::string address = text(2);
    const std::optional<policy::Prefix> host = policy::Prefix::Parse(address);
    if (!host || address.find('/') != std::string::npos) {
      ++bad;
      continue;
    }
    out->push_back(AddressPools::StoredLease{text(0), text(1), *host});
    next_seq_ = std::max<std::int64_t>(next_seq_, sqlite3_column_int64(st, 3) + 1);
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) {
    *error = std::string("reading the leases: ") + sqlite3_errmsg(db_);
    return false;
  }
  if (bad != 0) spdlog::warn("lease database {}: {} row(s) without a valid address skipped", status_.path, bad);
  return true;
}

void LeaseStore::MoveAside() {
  const std::string aside = status_.path + ".corrupt";
  for (const char* suffix : {"", "-wal", "-shm"}) {
    const std::string from = status_.path + suffix;
    const std::string to = aside + suffix;
    if (std::rename(from.c_str(), to.c_str()) != 0 && errno != ENOENT) {
      // Cannot move it (a read-only directory): try to remove it so a new one can be made.
      std::remove(from.c_str());
    }
  }
}

bool LeaseStore::Failed(const char* what, int rc) {
  const std::string why = std::string(what) + ": " + sqlite3_errmsg(db_);
  Exec("ROLLBACK");
  ++status_.write_errors;
  status_.last_error = why;
  if (!LeaseDbCorruptCode(rc)) {
    spdlog::error("lease database {}: {} (the lease stays in memory)", status_.path, why);
    return false;
  }
  // The file went bad under us: start a new one, which wants every lease we hold.
  Close();
  MoveAside();
  ++status_.rebuilds;
  std::string error;
  bool ignored = false;
  if (TryOpen(&error, &ignored)) {
    status_.state = State::kRebuilt;
    wants_snapshot_ = true;
    spdlog::error("lease database {}: {}; moved aside to {}.corrupt, rebuilt from the leases in memory",
                  status_.path, why, status_.path);
  } else {
    Close();
    status_.state = State::kUnavailable;
    status_.last_error = error;
    spdlog::error("lease database {}: {}; then {}; virtual IP leases are kept in memory only",
                  status_.path, why, error);
  }
  return false;
}

bool LeaseStore::Record(const std::string& identity, const std::vector<AddressPools::Lease>& leases) {
  if (db_ == nullptr) return false;
  int rc = sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return Failed("beginning a transaction", sqlite3_extended_errcode(db_));
  for (const AddressPools::Lease& lease : leases) {
    const std::string address = LeaseDbAddress(lease.address);
    for (sqlite3_stmt* st : {drop_other_, upsert_}) {
      sqlite3_reset(st);
      sqlite3_bind_text(st, 1, lease.pool.data(), static_cast<int>(lease.pool.size()), SQLITE_STATIC);
      sqlite3_bind_blob(st, 2, identity.data(), static_cast<int>(identity.size()), SQLITE_STATIC);
      sqlite3_bind_text(st, 3, address.data(), static_cast<int>(address.size()), SQLITE_STATIC);
      if (st == upsert_) sqlite3_bind_int64(st, 4, next_seq_);
      rc = sqlite3_step(st);
      sqlite3_reset(st);
      if (rc != SQLITE_DONE) return Failed("writing a lease", rc);
    }
    ++next_seq_;
  }
  rc = sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return Failed("committing", sqlite3_extended_errcode(db_));
  ++status_.writes;
  return true;
}

bool LeaseStore::Replace(const std::vector<AddressPools::StoredLease>& leases) {
  if (db_ == nullptr) return false;
  wants_snapshot_ = false;
  int rc = sqlite3_exec(db_, "BEGIN IMMEDIATE; DELETE FROM leases", nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return Failed("rewriting the leases", sqlite3_extended_errcode(db_));
  next_seq_ = 0;
  for (const AddressPools::StoredLease& lease : leases) {
    const std::string address = LeaseDbAddress(lease.address);
    sqlite3_reset(upsert_);
    sqlite3_bind_text(upsert_, 1, lease.pool.data(), static_cast<int>(lease.pool.size()), SQLITE_STATIC);
    sqlite3_bind_blob(upsert_, 2, lease.identity.data(), static_cast<int>(lease.identity.size()),
                      SQLITE_STATIC);
    sqlite3_bind_text(upsert_, 3, address.data(), static_cast<int>(address.size()), SQLITE_STATIC);
    sqlite3_bind_int64(upsert_, 4, next_seq_++);
    rc = sqlite3_step(upsert_);
    sqlite3_reset(upsert_);
    if (rc != SQLITE_DONE) return Failed("rewriting the leases", rc);
  }
  rc = sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return Failed("committing", sqlite3_extended_errcode(db_));
  ++status_.writes;
  return true;
}

nlohmann::json LeaseStore::StatusJson() const {
  return {{"path", status_.path},
          {"state", ToString(status_.state)},
          {"loaded", status_.loaded},
          {"writes", status_.writes},
          {"write_errors", status_.write_errors},
          {"rebuilds", status_.rebuilds},
          {"last_error", status_.last_error}};
}

}  // namespace spigot::gateway
