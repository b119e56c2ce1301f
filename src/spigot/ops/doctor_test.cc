#include "spigot/ops/doctor.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace spigot::ops {
namespace {

using nlohmann::json;

std::string TestData(const std::string& name) {
  return std::string(SPIGOT_SOURCE_DIR) + "/src/spigot/ops/testdata/" + name;
}

std::vector<Finding> DiagnoseFile(const std::string& name) {
  Counters c;
  std::string error;
  EXPECT_TRUE(LoadSnapshot(TestData(name), c, error)) << error;
  return Diagnose(c);
}

std::vector<Finding> DiagnoseJson(const json& j) {
  Counters c;
  std::string error;
  EXPECT_TRUE(ParseCounters(j, c, error)) << error;
  return Diagnose(c);
}

bool Has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(Doctor, HealthyGateway) {
  Counters c;
  std::string error;
  ASSERT_TRUE(LoadSnapshot(TestData("healthy.json"), c, error)) << error;
  EXPECT_EQ(c.active_sas, 500);
  EXPECT_EQ(c.child_lifetime, 3600);
  EXPECT_EQ(c.engine_name, "ipsec-mb");
  const std::vector<Finding> findings = Diagnose(c);
  EXPECT_TRUE(findings.empty());
  EXPECT_EQ(FindingsJson(findings).dump(), R"({"findings":[]})");
  const std::string text = FindingsText(c, findings);
  EXPECT_EQ(text.rfind("all is well", 0), 0u) << text;
  EXPECT_TRUE(Has(text, "active_sas 500 of max_spi 1048576")) << text;
}

TEST(Doctor, PasswordGuessing) {
  std::ifstream in(TestData("healthy.json"));
  json j = json::parse(in);
  EXPECT_TRUE(DiagnoseJson(j).empty());
  j["ike"]["eap_logins"] = {{"mschapv2", {{"success", 10}, {"failure", 3}}}, {"throttled", 0},
                            {"backoff", {{"entries", 1}, {"backing_off", 0}, {"evicted", 0}}}};
  EXPECT_TRUE(DiagnoseJson(j).empty()) << "a few mistyped passwords are not an attack";
  j["ike"]["eap_logins"]["throttled"] = 12;
  j["ike"]["eap_logins"]["backoff"]["backing_off"] = 2;
  const std::vector<Finding> f = DiagnoseJson(j);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].cause, "password_guessing");
  EXPECT_TRUE(Has(f[0].evidence, "3 failed EAP logins, 12 attempts refused unchecked by the back-off, 2 (user, address)"))
      << f[0].evidence;
  EXPECT_TRUE(Has(f[0].fix, "nftables")) << f[0].fix;
}

// eap-radius logins that no RADIUS server answered, and servers marked dead.
TEST(Doctor, RadiusUnreachable) {
  std::ifstream in(TestData("healthy.json"));
  json j = json::parse(in);
  j["radius"] = nullptr;  // no [radius] table
  EXPECT_TRUE(DiagnoseJson(j).empty());
  j["radius"] = {{"timeouts", 0}, {"failovers", 0},
                 {"servers", json::array({{{"address", "192.0.2.10:1812"}, {"dead", false}}})}};
  EXPECT_TRUE(DiagnoseJson(j).empty()) << "a RADIUS server that answers is not a finding";
  j["radius"]["timeouts"] = 4;
  j["radius"]["failovers"] = 9;
  j["radius"]["servers"][0]["dead"] = true;
  const std::vector<Finding> f = DiagnoseJson(j);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].cause, "radius_unreachable");
  EXPECT_TRUE(Has(f[0].evidence, "4 EAP logins failed because no RADIUS server answered, 9 requests moved to the next "
                                 "server; not answering now: 192.0.2.10:1812"))
      << f[0].evidence;
  EXPECT_TRUE(Has(f[0].fix, "shared secret")) << f[0].fix;
}

// The remote-access twin of SPI exhaustion: road warriors refused a virtual IP.
TEST(Doctor, VirtualIpPoolExhausted) {
  std::ifstream in(TestData("healthy.json"));
  json j = json::parse(in);
  j["pools"] = json::array({{{"name", "rw"}, {"size", 6}, {"in_use", 6}, {"offline", 0}, {"exhausted", 4}},
                            {{"name", "spare"}, {"size", 254}, {"in_use", 3}, {"exhausted", 0}}});
  const std::vector<Finding> f = DiagnoseJson(j);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].cause, "pool_exhausted");
  EXPECT_TRUE(Has(f[0].evidence, "pool rw: 6 of 6 addresses in use (100.0%), 4 peers refused")) << f[0].evidence;
  EXPECT_FALSE(Has(f[0].evidence, "spare")) << f[0].evidence;
  EXPECT_TRUE(Has(f[0].fix, "name = \"rw\" give addrs at least 20 addresses (an IPv4 /27")) << f[0].fix;
  EXPECT_TRUE(Has(f[0].fix, "spigot reload")) << f[0].fix;
  // Refused before, but the pool was grown: 10 of 14 in use is not exhausted.
  j["pools"][0]["size"] = 14;
  j["pools"][0]["in_use"] = 10;
  EXPECT_TRUE(DiagnoseJson(j).empty());
  j["pools"][0]["size"] = 6;
  // Room left and nobody refused: healthy.
  j["pools"][0]["in_use"] = 2;
  j["pools"][0]["exhausted"] = 0;
  EXPECT_TRUE(DiagnoseJson(j).empty());
  // A malformed pools entry is a clear error.
  j["pools"][0]["size"] = "many";
  Counters c;
  std::string error;
  EXPECT_FALSE(ParseCounters(j, c, error));
  EXPECT_TRUE(Has(error, "pools[].size")) << error;
}

TEST(Doctor, SpiPoolExhausted) {
  const std::vector<Finding> f = DiagnoseFile("spi_pool_exhausted.json");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].cause, "spi_pool_exhausted");
  EXPECT_TRUE(Has(f[0].evidence, "active_sas 60000 of max_spi 65536 (91.6%")) << f[0].evidence;
  EXPECT_TRUE(Has(f[0].evidence, "refused from 61440")) << f[0].evidence;
  EXPECT_TRUE(Has(f[0].evidence, "failed_sas 1532")) << f[0].evidence;
  // Double the pool (131072 >= 61440 / 0.7 too); the queue is half full: double it as well.
  EXPECT_TRUE(Has(f[0].fix, "max_spi = 131072")) << f[0].fix;
  EXPECT_TRUE(Has(f[0].fix, "max_queue = 131072")) << f[0].fix;
  EXPECT_TRUE(Has(f[0].fix, "spigot reload")) << f[0].fix;
}

TEST(Doctor, PoolFullAndRefusingBelowNinetyPercentActive) {
  // 80% active, but the pool is at max_spi - reserve (1048576 - 65536) and negotiations fail.
  const json j = {{"active_sas", 838861},
                  {"max_spi", 1048576},
                  {"spi_in_use", 983040},
                  {"failed_sas", 12},
                  {"max_queue", 65536}};
  const std::vector<Finding> f = DiagnoseJson(j);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].cause, "spi_pool_exhausted");
  EXPECT_TRUE(Has(f[0].fix, "max_spi = 2097152")) << f[0].fix;
  EXPECT_TRUE(Has(f[0].fix, "max_queue = 65536 (unchanged")) << f[0].fix;
  // A gateway that reports its reserve (spi_reserve_percent = 5): refusing from 996148.
  json with_reserve = j;
  with_reserve["spi_reserve"] = 52428;
  with_reserve["spi_in_use"] = 983040;  // under 996148: new negotiations still admitted
  EXPECT_TRUE(DiagnoseJson(with_reserve).empty());
  with_reserve["spi_in_use"] = 996148;
  const std::vector<Finding> reported = DiagnoseJson(with_reserve);
  ASSERT_EQ(reported.size(), 1u);
  EXPECT_TRUE(Has(reported[0].evidence, "refused from 996148 (max_spi - rekey reserve 52428)"))
      << reported[0].evidence;
  // No failures yet: not (yet) a finding.
  json calm = j;
  calm["failed_sas"] = 0;
  EXPECT_TRUE(DiagnoseJson(calm).empty());
  // 95% active in a pool of 2^24 cannot double: split the tunnels.
  const std::vector<Finding> top =
      DiagnoseJson({{"active_sas", 16'000'000}, {"max_spi", 16'777'216}});
  ASSERT_EQ(top.size(), 1u);
  EXPECT_TRUE(Has(top[0].fix, "split the tunnels")) << top[0].fix;
}

TEST(Doctor, RenegotiationStorm) {
  const std::vector<Finding> f = DiagnoseFile("renegotiation_storm.json");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].cause, "renegotiation_storm");
  EXPECT_TRUE(Has(f[0].evidence, "rekeys_per_minute 250 with active_sas 500")) << f[0].evidence;
  EXPECT_TRUE(Has(f[0].evidence, "every 2.0 minutes")) << f[0].evidence;
  EXPECT_TRUE(Has(f[0].evidence, "child_lifetime 120 s (2m) rekeys every 1.9 minutes"))
      << f[0].evidence;
  EXPECT_TRUE(Has(f[0].fix, R"(ike_rekey_time = "8h")")) << f[0].fix;
  EXPECT_TRUE(Has(f[0].fix, R"(child_rekey_time = "1h")")) << f[0].fix;
  EXPECT_TRUE(Has(f[0].fix, "spigot reload")) << f[0].fix;
  // 500 / (60 * 0.95) CHILD per minute afterwards.
  EXPECT_TRUE(Has(f[0].fix, "8.8 CHILD")) << f[0].fix;
}

TEST(Doctor, StormFromRatesAloneOrConfigAlone) {
  // Only the counters: 1000 SAs renegotiated 400 times a minute, every 2.5 minutes, half of
  // them rekeys (each SA rekeyed every 5 minutes: not under 5 by itself).
  std::vector<Finding> f = DiagnoseJson({{"active_sas", 1000},
                                         {"negotiations_per_minute", 400.0},
                                         {"rekeys_per_minute", 200.0},
                                         {"max_spi", 1048576}});
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].cause, "renegotiation_storm");
  EXPECT_TRUE(Has(f[0].evidence, "every 2.5 minutes")) << f[0].evidence;
  // The same rate made of new peers (few rekeys) is no renegotiation storm; with overflows it
  // is a login storm.
  EXPECT_TRUE(DiagnoseJson({{"active_sas", 1000},
                            {"negotiations_per_minute", 400.0},
                            {"rekeys_per_minute", 20.0},
                            {"max_spi", 1048576}})
                  .empty());
  f = DiagnoseJson({{"active_sas", 1000},
                    {"negotiations_per_minute", 400.0},
                    {"rekeys_per_minute", 20.0},
                    {"queue_overflows", 50},
                    {"max_spi", 1048576}});
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].cause, "login_storm");
  // Only the configuration: a 4-minute IKE lifetime, counters quiet.
  f = DiagnoseJson(
      {{"active_sas", 10}, {"config", {{"ike_lifetime", 240}, {"child_lifetime", 3600}}}});
  ASSERT_EQ(f.size(), 1u);
  EXPECT_TRUE(Has(f[0].evidence, "ike_lifetime 240 s (4m)")) << f[0].evidence;
  // A long configured CHILD lifetime is kept, not shortened to 1h.
  EXPECT_TRUE(Has(f[0].fix, R"(child_rekey_time = "1h")")) << f[0].fix;
  f = DiagnoseJson({{"config", {{"ike_lifetime", 240}, {"child_lifetime", 7200}}}});
  ASSERT_EQ(f.size(), 1u);
  EXPECT_TRUE(Has(f[0].fix, R"(child_rekey_time = "2h")")) << f[0].fix;
  // Exactly 5 minutes between rekeys is not under 5 minutes ...
  EXPECT_TRUE(DiagnoseJson({{"active_sas", 500}, {"rekeys_per_minute", 100.0}}).empty());
  // ... but a configured 5m is: with 10% jitter it rekeys every 4.75 minutes on average.
  f = DiagnoseJson({{"config", {{"child_lifetime", 300}}}});
  ASSERT_EQ(f.size(), 1u);
  EXPECT_TRUE(Has(f[0].evidence, "child_lifetime 300 s (5m) rekeys every 4.8 minutes"))
      << f[0].evidence;
  EXPECT_TRUE(DiagnoseJson({{"config", {{"child_lifetime", 316}}}}).empty());
}

TEST(Doctor, OffloadStall) {
  const std::vector<Finding> f = DiagnoseFile("offload_stall.json");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].cause, "offload_stall");
  EXPECT_TRUE(Has(f[0].evidence, "queue_overflows 1200")) << f[0].evidence;
  EXPECT_TRUE(Has(f[0].evidence, "\"async\" state \"stalled\", stalls 3, fallbacks 2"))
      << f[0].evidence;
  EXPECT_TRUE(Has(f[0].evidence, "no_sa_queue_full 4200")) << f[0].evidence;
  EXPECT_TRUE(Has(f[0].evidence, "active_sas 800 is only 0.08% of max_spi 1048576"))
      << f[0].evidence;
  EXPECT_TRUE(Has(f[0].fix, R"(crypto_engine = "inline")")) << f[0].fix;
  EXPECT_TRUE(Has(f[0].fix, "restart spigot")) << f[0].fix;
}

TEST(Doctor, OverflowsNearAFullPoolAreNotAttributed) {
  // 60% of the pool in use, nothing refused yet: the overflows may be the pool's doing, so
  // neither an engine nor a login storm is blamed.
  EXPECT_TRUE(
      DiagnoseJson({{"active_sas", 629146}, {"max_spi", 1048576}, {"queue_overflows", 5}}).empty());
  // Overflows on a healthy engine, no storm, the pool nearly empty: new peers, not the engine.
  const std::vector<Finding> f =
      DiagnoseJson({{"active_sas", 100},
                    {"max_spi", 1048576},
                    {"queue_overflows", 5},
                    {"max_queue", 1024},
                    {"crypto_engine", {{"name", "ipsec-mb"}, {"state", "ok"}, {"stalls", 0}}}});
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].cause, "login_storm");
  EXPECT_TRUE(Has(f[0].evidence, "crypto_engine \"ipsec-mb\" state \"ok\", stalls 0, fallbacks 0 is healthy"))
      << f[0].evidence;
  EXPECT_TRUE(Has(f[0].fix, "max_queue = 2048")) << f[0].fix;
}

// The issue this table answers: an overflowing queue next to a storm, with a healthy engine,
// was reported as offload_stall too. Now the evidence picks one cause.
TEST(Doctor, StormThatOverflowsTheQueueIsOneFinding) {
  const std::vector<Finding> f = DiagnoseFile("storm_overflow.json");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].cause, "renegotiation_storm");
  EXPECT_EQ(f[0].evidence,
            "rekeys_per_minute 250 with active_sas 500: each CHILD SA is rekeyed every 2.0 minutes "
            "(under 5); negotiations_per_minute 260 with active_sas 500: one negotiation per CHILD "
            "SA every 1.9 minutes (under 5); configured child_lifetime 120 s (2m) rekeys every 1.9 "
            "minutes on average with 10% rekey jitter (under 5); queue_overflows 700 (queue_depth 1024 of max_queue 1024): the renegotiations fill the "
            "queue, while crypto_engine \"ipsec-mb\" state \"ok\", stalls 0, fallbacks 0 is healthy");
  // The fix is the storm's: longer lifetimes, not the crypto engine.
  EXPECT_FALSE(Has(f[0].fix, "crypto_engine")) << f[0].fix;
  EXPECT_TRUE(Has(f[0].fix, R"(child_rekey_time = "1h")")) << f[0].fix;
}

TEST(Doctor, LoginStorm) {
  const std::vector<Finding> f = DiagnoseFile("login_storm.json");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].cause, "login_storm");
  EXPECT_EQ(f[0].evidence,
            "queue_overflows 9000 (queue_depth 4096 of max_queue 4096, 9000 of them new "
            "negotiations); half_open_ike_sas 1024, negotiations_per_minute 300; ike_workers 2 "
            "threads, 8 of 8 jobs in flight; cookies_sent 0; crypto_engine \"ipsec-mb\" state "
            "\"ok\", stalls 0, fallbacks 0 is healthy, and no renegotiation storm; active_sas "
            "2000 is 0.19% of max_spi 1048576");
  EXPECT_EQ(f[0].fix,
            "add capacity for the logins: in [global] set ike_workers = 4 (now 2; at most one per "
            "core, a restart applies it) and max_queue = 8192 (room for the burst), and lower "
            "cookie_threshold below the half-open peak of 1024 (cookies make a new peer prove its "
            "address before it costs a DH), then run `spigot reload` for max_queue and "
            "cookie_threshold; if the workers are already one per core, spread the peers over "
            "more gateways");
  // Without the optional sections (an older snapshot) it is still a login storm, with what
  // there is.
  const std::vector<Finding> old = DiagnoseJson(
      {{"active_sas", 10}, {"max_spi", 65536}, {"queue_overflows", 3}, {"max_queue", 64}});
  ASSERT_EQ(old.size(), 1u);
  EXPECT_EQ(old[0].cause, "login_storm");
  EXPECT_TRUE(Has(old[0].evidence, "queue_overflows 3 (queue_depth 0 of max_queue 64)"))
      << old[0].evidence;
  EXPECT_TRUE(Has(old[0].fix, "ike_workers = 2 (now unknown")) << old[0].fix;
}

// Every combination of the causes of an overflow: which findings, and which one carries the
// overflow as evidence.
TEST(Doctor, OverflowAttributionTable) {
  std::ifstream in(TestData("healthy.json"));
  const json healthy = json::parse(in);
  enum Engine { kOk, kStalled, kFailing };
  struct Case {
    bool overflow;
    Engine engine;
    bool storm;
    bool address_pool_full;
    bool spi_pool_full;
    std::vector<std::string> causes;  // in order
    std::string blamed;               // the finding naming queue_overflows; "" for none
  };
  const std::vector<Case> cases = {
      {false, kOk, false, false, false, {}, ""},
      {true, kOk, false, false, false, {"login_storm"}, "login_storm"},
      {true, kStalled, false, false, false, {"offload_stall"}, "offload_stall"},
      {true, kFailing, false, false, false, {"offload_stall"}, "offload_stall"},
      {false, kStalled, false, false, false, {"offload_stall"}, ""},
      {true, kOk, true, false, false, {"renegotiation_storm"}, "renegotiation_storm"},
      {false, kOk, true, false, false, {"renegotiation_storm"}, ""},
      {true, kStalled, true, false, false, {"renegotiation_storm", "offload_stall"}, "offload_stall"},
      {true, kOk, false, true, false, {"pool_exhausted"}, "pool_exhausted"},
      {false, kOk, false, true, false, {"pool_exhausted"}, ""},
      {true, kOk, true, true, false, {"renegotiation_storm", "pool_exhausted"}, "renegotiation_storm"},
      {true, kStalled, false, true, false, {"offload_stall", "pool_exhausted"}, "offload_stall"},
      {true, kOk, false, false, true, {"spi_pool_exhausted"}, "spi_pool_exhausted"},
      {true, kStalled, false, false, true, {"spi_pool_exhausted", "offload_stall"}, "spi_pool_exhausted"},
      {true, kOk, true, false, true, {"spi_pool_exhausted", "renegotiation_storm"}, "spi_pool_exhausted"},
  };
  for (const Case& k : cases) {
    json j = healthy;
    const std::string name = std::string(k.overflow ? "overflow" : "no overflow") +
                             (k.engine == kStalled ? ", stalled engine" : k.engine == kFailing ? ", failing engine" : "") +
                             (k.storm ? ", storm" : "") + (k.address_pool_full ? ", address pool full" : "") +
                             (k.spi_pool_full ? ", SPI pool full" : "");
    if (k.overflow) {
      j["queue_overflows"] = 40;
      j["queue_depth"] = 65536;
    }
    if (k.engine != kOk) j["crypto_engine"] = {{"name", "async"}, {"state", "ok"}, {"stalls", 0}, {"fallbacks", 0}};
    if (k.engine == kStalled) j["crypto_engine"]["state"] = "stalled", j["crypto_engine"]["stalls"] = 2;
    if (k.engine == kFailing) j["crypto_engine"]["failed"] = 17;
    if (k.storm) j["rekeys_per_minute"] = 250.0;
    if (k.address_pool_full) j["pools"] = json::array({{{"name", "rw"}, {"size", 6}, {"in_use", 6}, {"exhausted", 4}}});
    if (k.spi_pool_full) {
      j["max_spi"] = 512;
      j["spi_in_use"] = 500;
      j["failed_sas"] = 20;
    }
    const std::vector<Finding> f = DiagnoseJson(j);
    std::vector<std::string> causes;
    std::string blamed;
    for (const Finding& x : f) {
      causes.push_back(x.cause);
      if (Has(x.evidence, "queue_overflows")) {
        EXPECT_EQ(blamed, "") << name << ": the overflow is in two findings";
        blamed = x.cause;
      }
      EXPECT_FALSE(x.evidence.empty()) << name;
      EXPECT_FALSE(x.fix.empty()) << name;
    }
    EXPECT_EQ(causes, k.causes) << name;
    EXPECT_EQ(blamed, k.blamed) << name;
  }
}

TEST(Doctor, FailingEngineIsAnOffloadStall) {
  const std::vector<Finding> f = DiagnoseJson(
      {{"active_sas", 10},
       {"max_spi", 1048576},
       {"crypto_engine", {{"name", "async"}, {"state", "ok"}, {"stalls", 0}, {"failed", 9}}}});
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].cause, "offload_stall");
  EXPECT_EQ(f[0].evidence, "crypto_engine \"async\" state \"ok\", stalls 0, fallbacks 0, failed 9");
  EXPECT_TRUE(Has(f[0].fix, R"(crypto_engine = "inline")")) << f[0].fix;
}

TEST(Doctor, SeveralCausesInTableOrder) {
  const std::vector<Finding> f =
      DiagnoseJson({{"active_sas", 950},
                    {"max_spi", 1000},
                    {"rekeys_per_minute", 1000.0},
                    {"crypto_engine", {{"name", "async"}, {"state", "stalled"}, {"stalls", 1}}}});
  // A stalled engine is a finding of its own, however full the pool.
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f[0].cause, "spi_pool_exhausted");
  EXPECT_EQ(f[1].cause, "renegotiation_storm");
  EXPECT_EQ(f[2].cause, "offload_stall");
}

TEST(Doctor, JsonShapeIsTheContract) {
  const json j = FindingsJson(DiagnoseFile("offload_stall.json"));
  ASSERT_TRUE(j.is_object());
  ASSERT_EQ(j.size(), 1u);
  ASSERT_TRUE(j["findings"].is_array());
  ASSERT_EQ(j["findings"].size(), 1u);
  const json& f = j["findings"][0];
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f["cause"], "offload_stall");
  EXPECT_TRUE(f["evidence"].is_string());
  EXPECT_TRUE(f["fix"].is_string());
  // Key order as in DESIGN.md.
  EXPECT_EQ(FindingsJson({{"spi_pool_exhausted", "e", "f"}}).dump(),
            R"({"findings":[{"cause":"spi_pool_exhausted","evidence":"e","fix":"f"}]})");
}

TEST(Doctor, MissingFieldsReadAsZero) {
  Counters c;
  std::string error;
  ASSERT_TRUE(ParseCounters(json::object(), c, error)) << error;
  EXPECT_EQ(c.active_sas, 0);
  EXPECT_EQ(c.max_spi, 0);
  EXPECT_TRUE(Diagnose(c).empty());
  EXPECT_EQ(FindingsText(c, {}).rfind("all is well", 0), 0u);
  ASSERT_TRUE(ParseCounters({{"active_sas", nullptr}, {"crypto_engine", nullptr}}, c, error));
  // Extra fields (the daemon's "traffic", "ike", ...) are fine.
  ASSERT_TRUE(ParseCounters({{"traffic", {{"tx_packets", 1}}}, {"new_field", "x"}}, c, error));
}

TEST(Doctor, InvalidSnapshotsSayWhichFileAndWhy) {
  Counters c;
  std::string error;
  EXPECT_FALSE(LoadSnapshot(TestData("wrong_type.json"), c, error));
  EXPECT_TRUE(Has(error, "wrong_type.json: active_sas: expected a number >= 0, got \"lots\""))
      << error;
  EXPECT_FALSE(LoadSnapshot(TestData("truncated.json"), c, error));
  EXPECT_TRUE(Has(error, "truncated.json: not valid JSON")) << error;
  EXPECT_FALSE(LoadSnapshot(TestData("no-such-file.json"), c, error));
  EXPECT_TRUE(Has(error, "no-such-file.json: cannot open: No such file or directory")) << error;
  EXPECT_FALSE(LoadSnapshot(TestData(""), c, error));
  EXPECT_TRUE(Has(error, "is a directory")) << error;

  EXPECT_FALSE(ParseCounters(json::array({1, 2}), c, error));
  EXPECT_TRUE(Has(error, "expected a JSON object")) << error;
  EXPECT_FALSE(ParseCounters({{"crypto_engine", {{"stalls", -1}}}}, c, error));
  EXPECT_EQ(error, "crypto_engine.stalls: expected a number >= 0, got -1");
  EXPECT_FALSE(ParseCounters({{"crypto_engine", "ipsec-mb"}}, c, error));
  EXPECT_EQ(error, "crypto_engine: expected an object, got \"ipsec-mb\"");
  EXPECT_FALSE(ParseCounters({{"config", {{"child_lifetime", "1h"}}}}, c, error));
  EXPECT_EQ(error, "config.child_lifetime: expected a number >= 0, got \"1h\"");
}

}  // namespace
}  // namespace spigot::ops
