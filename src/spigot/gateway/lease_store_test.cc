#include "spigot/gateway/lease_store.h"

#include <grp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "spigot/test_tools/fake_clock.h"

namespace spigot::gateway {
namespace {

using StoreState = LeaseStore::State;

class StoreTempDir {
 public:
  StoreTempDir() {
    std::string pattern = std::filesystem::temp_directory_path() / "spigot-leasedb-XXXXXX";
    path_ = mkdtemp(pattern.data());
  }
  ~StoreTempDir() {
    std::error_code ignored;
    std::filesystem::permissions(path_, std::filesystem::perms::owner_all, ignored);
    std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::vector<config::PoolConfig> StorePools() {
  const config::LoadResult r = config::LoadString(
      "[[pool]]\nname = \"rw\"\naddrs = \"198.18.0.8/29\"\n"
      "[[pool]]\nname = \"rw6\"\naddrs = \"2001:db8:1::/112\"\n",
      "lease-store-test.toml");
  EXPECT_TRUE(r.ok) << r.error;
  return r.config.pools;
}

// A gateway's view: pools, plus the store every acquisition is recorded in.
struct StoreNode {
  explicit StoreNode(const std::string& path) {
    pools.Apply(StorePools());
    std::vector<AddressPools::StoredLease> loaded;
    store = LeaseStore::Open(path, &loaded);
    restored = pools.Restore(loaded);
    store->Replace(pools.Snapshot());
  }
  // `identity`'s address from `pool` ("" if none), recorded as the gateway does.
  std::string Acquire(const std::string& identity, const std::string& pool = "rw") {
    AddressPools::Lease lease;
    const policy::Family family = pool == "rw" ? policy::Family::kIpv4 : policy::Family::kIpv6;
    if (pools.Acquire({pool}, family, identity, &lease) != AddressPools::AcquireResult::kOk) return "";
    recorded = store->Record(identity, {lease});
    return lease.address.ToString();
  }
  test_tools::FakeClock clock;
  AddressPools pools{clock};
  std::unique_ptr<LeaseStore> store;
  std::size_t restored = 0;
  bool recorded = false;
};

std::string StoreFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(LeaseStoreTest, AMissingDatabaseIsCreatedAndReported) {
  StoreTempDir dir;
  StoreNode node(dir.File("leases.db"));
  EXPECT_EQ(node.store->status().state, StoreState::kCreated);
  EXPECT_EQ(node.store->StatusJson()["state"], "created");
  EXPECT_TRUE(std::filesystem::exists(dir.File("leases.db")));
  EXPECT_EQ(node.Acquire("alice"), "198.18.0.9/32");
  EXPECT_TRUE(node.recorded);
  EXPECT_EQ(node.store->status().writes, 2u);  // the startup Replace and alice
}

// The process dies (SIGKILL) right after Record returned, before any checkpoint or close: the
// WAL holds the commits, and the next Open finds every identity's address.
TEST(LeaseStoreTest, KilledAfterRecordEveryIdentityGetsItsAddressBack) {
  StoreTempDir dir;
  const std::string path = dir.File("leases.db");
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    StoreNode node(path);
    bool ok = node.Acquire("alice") == "198.18.0.9/32" && node.recorded;
    ok = ok && node.Acquire("bob") == "198.18.0.10/32" && node.recorded;
    ok = ok && node.Acquire("carol") == "198.18.0.11/32" && node.recorded;
    ok = ok && node.Acquire("alice", "rw6") == "2001:db8:1::1/128" && node.recorded;
    // bob leaves, and his address goes to nobody yet: still his.
    ok = ok && node.pools.Release("bob", {"rw", *policy::Prefix::Parse("198.18.0.10")});
    if (!ok) _exit(1);
    raise(SIGKILL);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "child failed: " << status;
  EXPECT_TRUE(std::filesystem::exists(path + "-wal"));

  StoreNode restarted(path);
  EXPECT_EQ(restarted.store->status().state, StoreState::kOk);
  EXPECT_EQ(restarted.store->status().loaded, 4u);
  EXPECT_EQ(restarted.restored, 4u);
  // A newcomer first: it must get a never-used address, not one of theirs.
  EXPECT_EQ(restarted.Acquire("dave"), "198.18.0.12/32");
  EXPECT_EQ(restarted.Acquire("carol"), "198.18.0.11/32");
  EXPECT_EQ(restarted.Acquire("bob"), "198.18.0.10/32");
  EXPECT_EQ(restarted.Acquire("alice"), "198.18.0.9/32");
  EXPECT_EQ(restarted.Acquire("alice", "rw6"), "2001:db8:1::1/128");
}

// An offline lease reclaimed by another identity: the database follows (one row per address,
// one per identity and pool), and a restart keeps the new owner.
TEST(LeaseStoreTest, AReclaimedAddressChangesOwnerInTheDatabase) {
  StoreTempDir dir;
  const std::string path = dir.File("leases.db");
  {
    StoreNode node(path);
    for (const char* id : {"a", "b", "c", "d", "e", "f"}) ASSERT_NE(node.Acquire(id), "") << id;
    ASSERT_TRUE(node.pools.Release("c", {"rw", *policy::Prefix::Parse("198.18.0.11")}));
    EXPECT_EQ(node.Acquire("g"), "198.18.0.11/32");  // the pool is full: c's is reclaimed
    EXPECT_TRUE(node.recorded);
  }
  StoreNode restarted(path);
  EXPECT_EQ(restarted.store->status().loaded, 6u);
  EXPECT_EQ(restarted.Acquire("g"), "198.18.0.11/32");
  for (const auto& lease : restarted.pools.Leases()) EXPECT_NE(lease.identity, "c");
}

TEST(LeaseStoreTest, ACorruptFileIsMovedAsideAndRebuilt) {
  StoreTempDir dir;
  const std::string path = dir.File("leases.db");
  std::string junk(64 * 1024, '\0');
  std::mt19937 rng(16);
  for (char& c : junk) c = static_cast<char>(rng());
  std::ofstream(path, std::ios::binary) << junk;

  StoreNode node(path);
  const LeaseStore::Status& s = node.store->status();
  EXPECT_EQ(s.state, StoreState::kRebuilt);
  EXPECT_EQ(s.rebuilds, 1u);
  EXPECT_NE(s.last_error.find("not a database"), std::string::npos) << s.last_error;
  EXPECT_EQ(StoreFileBytes(path + ".corrupt"), junk);  // kept for a look
  EXPECT_EQ(node.Acquire("alice"), "198.18.0.9/32");
  EXPECT_TRUE(node.recorded);
  node.store.reset();

  StoreNode again(path);
  EXPECT_EQ(again.store->status().state, StoreState::kOk);
  EXPECT_EQ(again.store->status().loaded, 1u);
}

// A good SQLite file, but not ours (another program's schema): moved aside as well.
TEST(LeaseStoreTest, ADatabaseOfAnotherSchemaIsMovedAside) {
  StoreTempDir dir;
  const std::string path = dir.File("leases.db");
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  EXPECT_EQ(sqlite3_exec(db, "CREATE TABLE t(x); INSERT INTO t VALUES (1);", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  StoreNode node(path);
  EXPECT_EQ(node.store->status().state, StoreState::kRebuilt);
  EXPECT_NE(node.store->status().last_error.find("not a spigot lease database"), std::string::npos)
      << node.store->status().last_error;
  EXPECT_TRUE(std::filesystem::exists(path + ".corrupt"));
}

// Runs `check` in a child process without root's override of file permissions (as nobody when
// we are root); its exit code is the result.
int StoreRunUnprivileged(const std::function<bool()>& check) {
  const pid_t child = fork();
  if (child == 0) {
    if (geteuid() == 0 && (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0)) _exit(3);
    _exit(check() ? 0 : 1);
  }
  int status = 0;
  waitpid(child, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 100;
}

TEST(LeaseStoreTest, AReadOnlyPathIsReportedNotRebuilt) {
  StoreTempDir dir;
  const std::string path = dir.File("leases.db");
  { StoreNode node(path); ASSERT_NE(node.Acquire("alice"), ""); }
  const std::string before = StoreFileBytes(path);
  chmod(path.c_str(), 0444);
  chmod(dir.path().c_str(), 0555);
  const int result = StoreRunUnprivileged([&] {
    StoreNode node(path);
    const LeaseStore::Status& s = node.store->status();
    const bool reported = s.state == StoreState::kUnavailable && !s.last_error.empty() &&
                          node.store->StatusJson()["state"] == "unavailable";
    // The gateway still serves: the address comes from memory, it just is not persisted.
    const bool serves = node.Acquire("bob") != "" && !node.recorded;
    return reported && serves && s.rebuilds == 0;
  });
  EXPECT_EQ(result, 0);
  EXPECT_EQ(StoreFileBytes(path), before);  // left as it was
  EXPECT_FALSE(std::filesystem::exists(path + ".corrupt"));
}

TEST(LeaseStoreTest, APathInNoDirectoryIsReported) {
  StoreTempDir dir;
  StoreNode node(dir.File("no/such/dir/leases.db"));
  EXPECT_EQ(node.store->status().state, StoreState::kUnavailable);
  EXPECT_NE(node.store->status().last_error.find("cannot open"), std::string::npos)
      << node.store->status().last_error;
  EXPECT_EQ(node.Acquire("alice"), "198.18.0.9/32");
  EXPECT_FALSE(node.recorded);
  EXPECT_EQ(node.store->status().rebuilds, 0u);
}

}  // namespace
}  // namespace spigot::gateway
