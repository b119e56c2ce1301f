#include "spigot/config/config.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <string>

#include "spigot/config/run_as.h"
#include "spigot/test_tools/test_pki.h"

namespace spigot::config {
namespace {

using std::chrono::seconds;

// The example from DESIGN.md, with every key set.
constexpr const char* kFullConfig = R"toml(
[global]
max_spi = 2000000
max_queue = 1000
cookie_threshold = 50
control_socket = "/tmp/spigot-test.sock"
tun_name = "ipsec7"
listen = "::"
ike_port = 1500
natt_port = 14500
crypto_engine = "async"
crypto_stall_timeout = 20

[[connection]]
name = "site-a"
local_addrs = "192.0.2.2"
remote_addrs = "192.0.2.1, 2001:db8::1"
local_id = "gw-b"
remote_id = "gw-a"
psk = "secret"
ike_proposals = "aes128gcm16-prfsha256-x25519, aes256-sha256-ecp256"
esp_proposals = "aes128gcm16"
local_ts = "203.0.113.0/24"
remote_ts = "198.51.100.0/24, 2001:db8:1::/48"
start_action = "trap"
unique = "keep"
ike_rekey_time = "2h"
child_rekey_time = "20m"
ike_lifetime = "3h"
child_lifetime = 1500
child_life_bytes = 1000000000
replay_window = 4096
dpd_delay = "10s"

[[connection]]
name = "roadwarriors"
remote_addrs = "%any"
psk = "other"
)toml";

// A connection with only the required keys, under [[connection]] of a file otherwise empty.
std::string OneConnection(const std::string& extra_lines) {
  return "[[connection]]\nname = \"c\"\nremote_addrs = \"192.0.2.1\"\npsk = \"k\"\n" +
         extra_lines + "\n";
}

LoadResult Load(const std::string& text) { return LoadString(text, "spigot.toml"); }

// Expects loading to fail with exactly `message`.
void ExpectError(const std::string& text, const std::string& message) {
  const LoadResult r = Load(text);
  EXPECT_FALSE(r.ok) << text;
  EXPECT_EQ(r.error, message) << text;
}

class TempDir {
 public:
  TempDir() {
    std::string pattern = std::filesystem::temp_directory_path() / "spigot-config-XXXXXX";
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  // Mode 0600 unless told: config and key files that others may read are refused.
  std::string Write(const std::string& name, const std::string& content, mode_t mode = 0600) const {
    const std::string file = path_ + "/" + name;
    std::ofstream(file, std::ios::binary) << content;
    chmod(file.c_str(), mode);
    return file;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(ConfigTest, FullConfig) {
  const LoadResult r = Load(kFullConfig);
  ASSERT_TRUE(r.ok) << r.error;
  const GlobalConfig& g = r.config.global;
  EXPECT_EQ(g.max_spi, 2000000u);
  EXPECT_EQ(g.max_queue, 1000u);
  EXPECT_EQ(g.cookie_threshold, 50u);
  EXPECT_EQ(g.control_socket, "/tmp/spigot-test.sock");
  EXPECT_EQ(g.tun_name, "ipsec7");
  EXPECT_EQ(g.listen, "::");
  EXPECT_EQ(g.ike_port, 1500);
  EXPECT_EQ(g.natt_port, 14500);
  EXPECT_EQ(g.crypto_engine, "async");
  EXPECT_EQ(g.crypto_stall_timeout_ms, 20u);

  ASSERT_EQ(r.config.connections.size(), 2u);
  const ConnectionConfig& c = r.config.connections[0];
  EXPECT_EQ(c.name, "site-a");
  EXPECT_EQ(c.local_addrs, std::vector<std::string>{"192.0.2.2"});
  EXPECT_EQ(c.remote_addrs, (std::vector<std::string>{"192.0.2.1", "2001:db8::1"}));
  EXPECT_EQ(c.local_id, "gw-b");
  EXPECT_EQ(c.remote_id, "gw-a");
  EXPECT_EQ(c.psk.view(), "secret");
  EXPECT_EQ(c.ike_proposals, "aes128gcm16-prfsha256-x25519, aes256-sha256-ecp256");
  EXPECT_EQ(c.esp_proposals, "aes128gcm16");
  ASSERT_EQ(c.local_ts.size(), 1u);
  EXPECT_EQ(c.local_ts[0].ToString(), "203.0.113.0/24");
  ASSERT_EQ(c.remote_ts.size(), 2u);
  EXPECT_EQ(c.remote_ts[0].ToString(), "198.51.100.0/24");
  EXPECT_EQ(c.remote_ts[1].family, AddressFamily::kIpv6);
  EXPECT_EQ(c.remote_ts[1].ToString(), "2001:db8:1::/48");
  EXPECT_EQ(c.start_action, StartAction::kTrap);
  EXPECT_EQ(c.unique, Unique::kKeep);
  EXPECT_EQ(c.ike_rekey_time, seconds{7200});
  EXPECT_EQ(c.child_rekey_time, seconds{1200});
  EXPECT_EQ(c.ike_lifetime, seconds{10800});
  EXPECT_EQ(c.child_lifetime, seconds{1500});
  EXPECT_EQ(c.child_life_bytes, 1000000000u);
  EXPECT_EQ(c.replay_window, 4096u);
  EXPECT_EQ(c.dpd_delay, seconds{10});

  EXPECT_EQ(r.config.FindConnection("roadwarriors"), &r.config.connections[1]);
  EXPECT_EQ(r.config.FindConnection("nope"), nullptr);
}

TEST(ConfigTest, Defaults) {
  const LoadResult r = Load(OneConnection(""));
  ASSERT_TRUE(r.ok) << r.error;
  const GlobalConfig& g = r.config.global;
  EXPECT_EQ(g.max_spi, 1048576u);
  EXPECT_EQ(g.max_queue, 65536u);
  EXPECT_EQ(g.cookie_threshold, 1000u);
  EXPECT_EQ(g.control_socket, "/run/spigot/spigot.sock");
  EXPECT_EQ(g.tun_name, "spigot0");
  EXPECT_EQ(g.listen, "0.0.0.0");
  EXPECT_EQ(g.ike_port, 500);
  EXPECT_EQ(g.natt_port, 4500);
  EXPECT_EQ(g.crypto_engine, "inline");
  EXPECT_EQ(g.crypto_stall_timeout_ms, 50u);

  const ConnectionConfig& c = r.config.connections.at(0);
  EXPECT_EQ(c.local_addrs, std::vector<std::string>{"%any"});
  EXPECT_TRUE(c.local_id.empty());
  EXPECT_TRUE(c.remote_id.empty());
  EXPECT_EQ(c.ike_proposals, kDefaultIkeProposals);
  EXPECT_EQ(c.esp_proposals, kDefaultEspProposals);
  EXPECT_TRUE(c.allow_weak.empty());
  EXPECT_TRUE(c.local_ts.empty());
  EXPECT_TRUE(c.remote_ts.empty());
  EXPECT_EQ(c.start_action, StartAction::kNone);
  EXPECT_EQ(c.unique, Unique::kReplace);
  EXPECT_EQ(c.ike_rekey_time, seconds{4 * 3600});
  EXPECT_EQ(c.child_rekey_time, seconds{3600});
  EXPECT_EQ(c.ike_lifetime, seconds{4 * 3600 * 11 / 10});
  EXPECT_EQ(c.child_lifetime, seconds{3960});
  EXPECT_EQ(c.child_life_bytes, 0u);
  EXPECT_EQ(c.replay_window, 1024u);
  EXPECT_EQ(c.dpd_delay, seconds{30});
}

TEST(ConfigTest, UdpOffload) {
  const LoadResult d = Load(OneConnection(""));
  ASSERT_TRUE(d.ok) << d.error;
  EXPECT_TRUE(d.config.global.udp_offload);
  const LoadResult r = Load("[global]\nudp_offload = false\n" + OneConnection(""));
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_FALSE(r.config.global.udp_offload);
  // Read when the data path starts: a restart key.
  EXPECT_EQ(Diff(d.config, r.config).restart_required,
            std::vector<std::string>{"global.udp_offload"});
  ExpectError("[global]\nudp_offload = 1",
              "spigot.toml: global.udp_offload: must be true or false, got 1");
}

TEST(ConfigTest, TunOffload) {
  const LoadResult d = Load(OneConnection(""));
  ASSERT_TRUE(d.ok) << d.error;
  EXPECT_TRUE(d.config.global.tun_offload);
  const LoadResult r = Load("[global]\ntun_offload = false\n" + OneConnection(""));
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_FALSE(r.config.global.tun_offload);
  EXPECT_TRUE(r.config.global.udp_offload);
  // Read when the TUN device is opened: a restart key.
  EXPECT_EQ(Diff(d.config, r.config).restart_required,
            std::vector<std::string>{"global.tun_offload"});
  ExpectError("[global]\ntun_offload = \"yes\"",
              "spigot.toml: global.tun_offload: must be true or false, got \"yes\"");
}

TEST(ConfigTest, MetricsListen) {
  const LoadResult off = Load(OneConnection(""));
  ASSERT_TRUE(off.ok) << off.error;
  EXPECT_EQ(off.config.global.metrics_listen, "");
  for (const char* ok : {"127.0.0.1:9187", "[::1]:9187", "0.0.0.0:1"}) {
    const LoadResult r = Load(std::string("[global]\nmetrics_listen = \"") + ok + "\"\n" + OneConnection(""));
    ASSERT_TRUE(r.ok) << ok << ": " << r.error;
    EXPECT_EQ(r.config.global.metrics_listen, ok);
  }
  const LoadResult on = Load("[global]\nmetrics_listen = \"127.0.0.1:9187\"\n" + OneConnection(""));
  // The listening socket is opened at start: a restart key (the reload says so and logs it).
  EXPECT_EQ(Diff(off.config, on.config).restart_required,
            std::vector<std::string>{"global.metrics_listen"});
  for (const char* bad : {"9187", "localhost:9187", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
                          "127.0.0.1:http", "::1:9187", "[127.0.0.1]:9187", "[::1]9187"}) {
    ExpectError(std::string("[global]\nmetrics_listen = \"") + bad + "\"",
                std::string("spigot.toml: global.metrics_listen: must be \"ADDRESS:PORT\" (like "
                            "\"127.0.0.1:9187\" or \"[::1]:9187\", port 1 to 65535) or empty for "
                            "off, got \"") + bad + "\"");
  }
  ExpectError("[global]\nmetrics_listen = 9187",
              "spigot.toml: global.metrics_listen: must be a string, got 9187");
}

// MOBIKE (RFC 4555) is on unless a connection says mobike = false; a reload applies it.
TEST(ConfigTest, Mobike) {
  const LoadResult d = Load(OneConnection(""));
  ASSERT_TRUE(d.ok) << d.error;
  EXPECT_TRUE(d.config.connections[0].mobike);
  const LoadResult r = Load(OneConnection("mobike = false"));
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_FALSE(r.config.connections[0].mobike);
  EXPECT_EQ(Diff(d.config, r.config).changed, std::vector<std::string>{"c"});
  ExpectError(OneConnection("mobike = \"yes\""),
              "spigot.toml: connection[0].mobike: must be true or false, got \"yes\"");
}

TEST(ConfigTest, Fragmentation) {
  const LoadResult d = Load(OneConnection(""));
  ASSERT_TRUE(d.ok) << d.error;
  EXPECT_EQ(d.config.global.fragment_size, 1280u);  // RFC 7383 2.5.1
  EXPECT_TRUE(d.config.connections[0].fragmentation);
  const LoadResult r = Load("[global]\nfragment_size = 576\n" + OneConnection("fragmentation = \"no\""));
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.config.global.fragment_size, 576u);
  EXPECT_FALSE(r.config.connections[0].fragmentation);
  // A reload applies it (to new IKE SAs): not a restart key.
  const ConfigDiff diff = Diff(d.config, r.config);
  EXPECT_TRUE(diff.restart_required.empty());
  EXPECT_EQ(diff.changed, std::vector<std::string>{"c"});
}

// RFC 7296 2.1 / 2.4: the retransmission schedule and the half-open timeout.
TEST(ConfigTest, RetransmissionSchedule) {
  const LoadResult d = Load(OneConnection(""));
  ASSERT_TRUE(d.ok) << d.error;
  EXPECT_EQ(d.config.global.retransmit_timeout_ms, 1000u);
  EXPECT_EQ(d.config.global.retransmit_tries, 5u);
  EXPECT_EQ(d.config.global.half_open_timeout_ms, 30000u);
  const LoadResult r = Load("[global]\nretransmit_timeout = 200\nretransmit_tries = 3\nhalf_open_timeout = 5000\n" +
                            OneConnection(""));
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.config.global.retransmit_timeout_ms, 200u);
  EXPECT_EQ(r.config.global.retransmit_tries, 3u);
  EXPECT_EQ(r.config.global.half_open_timeout_ms, 5000u);
  EXPECT_TRUE(Diff(d.config, r.config).restart_required.empty()) << "applies to new IKE SAs on reload";
  ExpectError("[global]\nretransmit_timeout = 5",
              "spigot.toml: global.retransmit_timeout: must be an integer between 10 and 60000, got 5");
  ExpectError("[global]\nretransmit_tries = 11",
              "spigot.toml: global.retransmit_tries: must be an integer between 0 and 10, got 11");
  ExpectError("[global]\nhalf_open_timeout = \"30s\"",
              "spigot.toml: global.half_open_timeout: must be an integer between 100 and 600000, got \"30s\"");
}

TEST(ConfigTest, EmptyFileIsValid) {
  const LoadResult r = Load("");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_TRUE(r.config.connections.empty());
  EXPECT_EQ(r.config.global, GlobalConfig{});
}

TEST(ConfigTest, DefaultLifetimeIsRekeyTimePlusTenPercentRoundedUp) {
  const LoadResult r = Load(OneConnection("ike_rekey_time = 95\nchild_rekey_time = \"1s\""));
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.config.connections[0].ike_lifetime, seconds{105});  // 95 + ceil(9.5)
  EXPECT_EQ(r.config.connections[0].child_lifetime, seconds{2});  // never equal to the rekey
}

TEST(ConfigTest, DurationsAsStringsOrSeconds) {
  const LoadResult r = Load(OneConnection(
      "ike_rekey_time = \"1d\"\nchild_rekey_time = 90\ndpd_delay = \"0\"\n"
      "ike_lifetime = \"25h\"\nchild_lifetime = \"2m\""));
  ASSERT_TRUE(r.ok) << r.error;
  const ConnectionConfig& c = r.config.connections[0];
  EXPECT_EQ(c.ike_rekey_time, seconds{86400});
  EXPECT_EQ(c.child_rekey_time, seconds{90});
  EXPECT_EQ(c.dpd_delay, seconds{0});
  EXPECT_EQ(c.ike_lifetime, seconds{90000});
  EXPECT_EQ(c.child_lifetime, seconds{120});
}

TEST(ConfigTest, GlobalErrorsNameTheKey) {
  ExpectError("[global]\nmax_spi = -5",
              "spigot.toml: global.max_spi: must be an integer between 256 and 16777216, got -5");
  ExpectError("[global]\nmax_spi = 16777217",
              "spigot.toml: global.max_spi: must be an integer between 256 and 16777216, got "
              "16777217");
  ExpectError("[global]\nmax_spi = \"1M\"",
              "spigot.toml: global.max_spi: must be an integer between 256 and 16777216, got "
              "\"1M\"");
  ExpectError("[global]\nike_workers = 300",
              "spigot.toml: global.ike_workers: must be an integer between 0 and 256, got 300");
  ExpectError("[global]\ndatapath_threads = 257",
              "spigot.toml: global.datapath_threads: must be an integer between 0 and 256, got 257");
  ExpectError("[global]\ndatapath_threads = -1",
              "spigot.toml: global.datapath_threads: must be an integer between 0 and 256, got -1");
  ExpectError("[global]\nmax_queue = 0",
              "spigot.toml: global.max_queue: must be an integer between 1 and 4294967295, got 0");
  ExpectError("[global]\ncookie_threshold = 1.5",
              "spigot.toml: global.cookie_threshold: must be an integer between 0 and "
              "4294967295, got 1.5");
  ExpectError("[global]\nike_port = 0",
              "spigot.toml: global.ike_port: must be an integer between 1 and 65535, got 0");
  ExpectError("[global]\nnatt_port = 65536",
              "spigot.toml: global.natt_port: must be an integer between 1 and 65535, got 65536");
  ExpectError("[global]\ncrypto_engine = \"qat\"",
              "spigot.toml: global.crypto_engine: must be \"inline\", \"async\" or \"fault\" "
              "(tests only), got \"qat\"");
  ExpectError("[global]\ncrypto_engine = 1",
              "spigot.toml: global.crypto_engine: must be a string, got 1");
  ExpectError("[global]\nfragment_size = 100",
              "spigot.toml: global.fragment_size: must be an integer between 160 and 65535, got 100");
  ExpectError("[global]\nfragment_size = 65536",
              "spigot.toml: global.fragment_size: must be an integer between 160 and 65535, got 65536");
  ExpectError("[global]\ncrypto_stall_timeout = 0",
              "spigot.toml: global.crypto_stall_timeout: must be an integer between 1 and 10000, "
              "got 0");
  ExpectError("[global]\ncrypto_stall_timeout = 10001",
              "spigot.toml: global.crypto_stall_timeout: must be an integer between 1 and 10000, "
              "got 10001");
  ExpectError("[global]\ncrypto_stall_timeout = \"50ms\"",
              "spigot.toml: global.crypto_stall_timeout: must be an integer between 1 and 10000, "
              "got \"50ms\"");
  ExpectError("[global]\nike_port = 4500",
              "spigot.toml: global.natt_port: must differ from global.ike_port (4500)");
  ExpectError("[global]\nlisten = \"localhost\"",
              "spigot.toml: global.listen: must be an IPv4 or IPv6 address (like \"0.0.0.0\" or "
              "\"::\"), got \"localhost\"");
  ExpectError("[global]\ntun_name = \"a-very-long-tun-name\"",
              "spigot.toml: global.tun_name: must be an interface name of 1 to 15 bytes, got "
              "\"a-very-long-tun-name\"");
  ExpectError("[global]\ncontrol_socket = \"\"",
              "spigot.toml: global.control_socket: must be a path of 1 to 107 bytes, got \"\"");
  ExpectError("[global]\ncontrol_socket = 5",
              "spigot.toml: global.control_socket: must be a string, got 5");
  ExpectError("global = 5", "spigot.toml: global: must be a table ([global])");
}

TEST(ConfigTest, UnknownKeysAreRejected) {
  ExpectError("[global]\nmax_spis = 1000", "spigot.toml: global.max_spis: unknown key");
  ExpectError("[globl]\nmax_spi = 1000",
              "spigot.toml: globl: unknown key (expected [global], [[connection]], [[pool]], [[eap_user]] or [radius])");
  ExpectError(OneConnection("") + OneConnection("esp_proposal = \"aes128gcm16\""),
              "spigot.toml: connection[1].esp_proposal: unknown key");
  ExpectError("[connection]\nname = \"c\"",
              "spigot.toml: connection: must be an array of tables ([[connection]])");
}

TEST(ConfigTest, ConnectionErrorsNameTheKey) {
  const std::string two = OneConnection("") + OneConnection("");  // connection[1] is "c" too
  ExpectError(two, "spigot.toml: connection[1].name: \"c\" is already used by connection[0]");
  ExpectError("[[connection]]\nremote_addrs = \"%any\"\npsk = \"k\"",
              "spigot.toml: connection[0].name: required (a unique, non-empty name)");
  ExpectError("[[connection]]\nname = \"c\"\npsk = \"k\"",
              "spigot.toml: connection[0].remote_addrs: required (the peer's address, or "
              "\"%any\" to accept any peer)");
  ExpectError("[[connection]]\nname = \"c\"\nremote_addrs = \"192.0.2.1\"",
              "spigot.toml: connection[0].psk: required (the pre-shared key, or psk_file = "
              "\"/path\")");
  const std::string base = "[[connection]]\nname = \"c\"\npsk = \"k\"\n";
  ExpectError(base + "remote_addrs = \"gw.example.com\"",
              "spigot.toml: connection[0].remote_addrs: \"gw.example.com\" is not an IPv4 or "
              "IPv6 address (or \"%any\")");
  ExpectError(base + "remote_addrs = \"\"",
              "spigot.toml: connection[0].remote_addrs: must not be empty (an address, or "
              "\"%any\")");

  ExpectError(OneConnection("esp_proposals = \"\""),
              "spigot.toml: connection[0].esp_proposals: must not be empty");
  ExpectError(OneConnection("ike_proposals = \"aes128-sha256-x25519,,aes256\""),
              "spigot.toml: connection[0].ike_proposals: empty proposal in the comma-separated "
              "list \"aes128-sha256-x25519,,aes256\"");
  ExpectError(OneConnection("local_ts = \"10.0.0.0/33\""),
              "spigot.toml: connection[0].local_ts: \"10.0.0.0/33\": prefix length must be 0..32");
  ExpectError(OneConnection("remote_ts = \"10.0.0.0/8, bogus\""),
              "spigot.toml: connection[0].remote_ts: \"bogus\" is not an address or CIDR prefix "
              "(like 10.0.0.0/8 or 2001:db8::/32)");
  ExpectError(OneConnection("start_action = \"route\""),
              "spigot.toml: connection[0].start_action: must be \"none\", \"start\" or \"trap\", "
              "got \"route\"");
  ExpectError(OneConnection("unique = \"never\""),
              "spigot.toml: connection[0].unique: must be \"no\", \"keep\" or \"replace\", "
              "got \"never\"");
  ExpectError(OneConnection("fragmentation = \"force\""),
              "spigot.toml: connection[0].fragmentation: must be \"yes\" or \"no\" (strongSwan's "
              "\"accept\" and \"force\" are not supported), got \"force\"");
  ExpectError(OneConnection("fragmentation = true"),
              "spigot.toml: connection[0].fragmentation: must be a string, got true");
  ExpectError(OneConnection("replay_window = 32"),
              "spigot.toml: connection[0].replay_window: must be an integer between 64 and "
              "65536, got 32");
  ExpectError(OneConnection("replay_window = 65537"),
              "spigot.toml: connection[0].replay_window: must be an integer between 64 and "
              "65536, got 65537");
  ExpectError(OneConnection("child_life_packets = \"many\""),
              "spigot.toml: connection[0].child_life_packets: must be an integer at least 0, got \"many\"");
  ExpectError(OneConnection("child_life_bytes = -1"),
              "spigot.toml: connection[0].child_life_bytes: must be an integer at least 0, got -1");
  ExpectError(OneConnection("psk_file = \"/k\""),
              "spigot.toml: connection[0].psk_file: set either psk or psk_file, not both");
  ExpectError("[[connection]]\nname = \"c\"\nremote_addrs = \"%any\"\npsk = \"\"",
              "spigot.toml: connection[0].psk: must not be empty");
}

TEST(ConfigTest, DurationErrorsNameTheKey) {
  ExpectError(OneConnection("ike_rekey_time = \"4 hours\""),
              "spigot.toml: connection[0].ike_rekey_time: \"4 hours\" is not a duration (a whole "
              "number with an optional unit s, m, h or d, like \"90s\" or \"4h\")");
  ExpectError(OneConnection("child_rekey_time = 0"),
              "spigot.toml: connection[0].child_rekey_time: must be a duration between 1s and "
              "3650d, got 0");
  ExpectError(OneConnection("dpd_delay = -1"),
              "spigot.toml: connection[0].dpd_delay: must be a duration between 0s and 3650d, got "
              "-1");
  ExpectError(OneConnection("dpd_delay = true"),
              "spigot.toml: connection[0].dpd_delay: must be a duration like \"90s\", \"30m\", "
              "\"4h\" or \"1d\", got true");
  ExpectError(OneConnection("ike_lifetime = \"4h\""),
              "spigot.toml: connection[0].ike_lifetime: must be longer than ike_rekey_time (4h), "
              "got 4h");
  ExpectError(OneConnection("child_rekey_time = \"30m\"\nchild_lifetime = \"20m\""),
              "spigot.toml: connection[0].child_lifetime: must be longer than child_rekey_time "
              "(30m), got 20m");
}

TEST(ConfigTest, SyntaxErrorNamesFileLineAndColumn) {
  const LoadResult r = Load("[global]\nmax_spi = = 5\n");
  ASSERT_FALSE(r.ok);
  EXPECT_EQ(r.error.rfind("spigot.toml:2:", 0), 0u) << r.error;

  // A key set twice is a TOML error, not a silent override.
  const LoadResult twice = Load(OneConnection("remote_addrs = \"192.0.2.9\""));
  ASSERT_FALSE(twice.ok);
  EXPECT_EQ(twice.error.rfind("spigot.toml:5:", 0), 0u) << twice.error;
}

TEST(ConfigTest, PskFile) {
  TempDir dir;
  const std::string with_newline = dir.Write("a.key", "s3cret\n");
  dir.Write("b.key", "two\nlines\n\n");
  dir.Write("crlf.key", "dos\r\n");
  dir.Write("empty.key", "\n");
  const std::string config = dir.Write(
      "spigot.toml",
      "[[connection]]\nname = \"a\"\nremote_addrs = \"%any\"\npsk_file = \"" + with_newline +
          "\"\n"
          "[[connection]]\nname = \"b\"\nremote_addrs = \"%any\"\npsk_file = \"b.key\"\n"
          "[[connection]]\nname = \"crlf\"\nremote_addrs = \"%any\"\npsk_file = \"crlf.key\"\n");
  const LoadResult r = LoadFile(config);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.config.connections[0].psk.view(), "s3cret");
  EXPECT_EQ(r.config.connections[1].psk.view(), "two\nlines\n");  // one newline stripped
  EXPECT_EQ(r.config.connections[2].psk.view(), "dos");

  const std::string missing = dir.Write(
      "missing.toml", "[[connection]]\nname = \"a\"\nremote_addrs = \"%any\"\npsk_file = \"nope.key\"\n");
  const LoadResult m = LoadFile(missing);
  EXPECT_FALSE(m.ok);
  EXPECT_EQ(m.error, missing + ": connection[0].psk_file: \"" + dir.path() +
                         "/nope.key\": cannot read: No such file or directory");

  const std::string empty = dir.Write(
      "empty.toml", "[[connection]]\nname = \"a\"\nremote_addrs = \"%any\"\npsk_file = \"empty.key\"\n");
  const LoadResult e = LoadFile(empty);
  EXPECT_FALSE(e.ok);
  EXPECT_EQ(e.error, empty + ": connection[0].psk_file: \"" + dir.path() +
                         "/empty.key\" holds an empty key");
}

// Secret files that others (or a group other than the daemon's) may read are refused, like ssh
// refuses such a private key: the error names the file, the key, the mode and the fix.
TEST(ConfigTest, SecretFilesOthersMayReadAreRefused) {
  TempDir dir;
  dir.Write("ok.key", "s3cret\n");
  const std::string open_key = dir.Write("open.key", "s3cret\n", 0644);
  const std::string group_key = dir.Write("group.key", "s3cret\n", 0640);
  const auto config = [&](const std::string& name, const std::string& key_file, const std::string& global = "",
                          mode_t mode = 0600) {
    return dir.Write(name, global + "[[connection]]\nname = \"a\"\nremote_addrs = \"%any\"\npsk_file = \"" +
                               key_file + "\"\n", mode);
  };
  const std::string good = config("good.toml", "ok.key");
  EXPECT_TRUE(LoadFile(good).ok) << LoadFile(good).error;

  const std::string c1 = config("c1.toml", "open.key");
  EXPECT_EQ(LoadFile(c1).error, c1 + ": connection[0].psk_file: \"" + open_key +
                                    "\": mode 0644 lets others read it; it holds secrets: chmod 600 "
                                    "(or 640 with the daemon's group)");
  // The daemon's group may read; root's files are group 0, which is not nobody's.
  const std::string c2 = config("c2.toml", "group.key", "[global]\nuser = \"nobody\"\n");
  const gid_t nobody_group = DaemonGroupFor("nobody");
  struct stat st {};
  ASSERT_EQ(stat(group_key.c_str(), &st), 0);
  if (st.st_gid != nobody_group) {
    EXPECT_EQ(LoadFile(c2).error, c2 + ": connection[0].psk_file: \"" + group_key + "\": mode 0640 lets group " +
                                      std::to_string(st.st_gid) + " read it, which is not the daemon's group (" +
                                      std::to_string(nobody_group) + "); it holds secrets: chmod 600 (or 640 "
                                      "with the daemon's group)");
  }
  if (geteuid() == 0) {
    ASSERT_EQ(chown(group_key.c_str(), static_cast<uid_t>(-1), nobody_group), 0);
    EXPECT_TRUE(LoadFile(c2).ok) << LoadFile(c2).error;
  }

  // The configuration file itself (it may hold psk, EAP and RADIUS secrets).
  const std::string c3 = config("c3.toml", "ok.key", "", 0604);
  EXPECT_EQ(LoadFile(c3).error, c3 + ": mode 0604 lets others read it; it holds secrets: chmod 600 "
                                     "(or 640 with the daemon's group)");
  const std::string c4 = config("c4.toml", "ok.key", "", 0620);
  EXPECT_EQ(LoadFile(c4).error, c4 + ": mode 0620 lets its group change it; it holds secrets: "
                                     "chmod 600 (or 640 with the daemon's group)");
}

TEST(ConfigTest, UserAndSocketGroup) {
  const LoadResult r = Load("[global]\nuser = \"nobody\"\nsocket_group = \"root\"\n");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.config.global.user, "nobody");
  EXPECT_EQ(r.config.global.socket_group, "root");
  EXPECT_EQ(Load("").config.global.user, "");  // absent: "spigot" if it exists (run_as.h)
  EXPECT_TRUE(Load("[global]\nuser = \"root\"\n").ok);
  ExpectError("[global]\nuser = \"no-such-user-x9\"",
              "spigot.toml: global.user: no such user \"no-such-user-x9\" (create it, e.g. `useradd "
              "--system --no-create-home no-such-user-x9`, or set \"root\" to keep running as root)");
  ExpectError("[global]\nuser = \"\"",
              "spigot.toml: global.user: must be a user name (or \"root\" to keep running as root), got \"\"");
  ExpectError("[global]\nuser = 0", "spigot.toml: global.user: must be a string, got 0");
  ExpectError("[global]\nsocket_group = \"no-such-group-x9\"",
              "spigot.toml: global.socket_group: no such group \"no-such-group-x9\" (create it, e.g. "
              "`groupadd --system no-such-group-x9`, or remove the key: then only root and the "
              "daemon's user may use the socket)");
  ExpectError("[global]\nsocket_group = \"\"",
              "spigot.toml: global.socket_group: must be a group name (or remove the key for no group)");
  // Both need a restart.
  const LoadResult other = Load("[global]\nuser = \"root\"\nsocket_group = \"root\"\n");
  ASSERT_TRUE(other.ok);
  EXPECT_EQ(Diff(r.config, other.config).restart_required,
            (std::vector<std::string>{"global.user"}));
}

TEST(ConfigTest, MissingFile) {
  const LoadResult r = LoadFile("/nonexistent/spigot.toml");
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "/nonexistent/spigot.toml: cannot read: No such file or directory");
}

TEST(ConfigTest, DiffForReload) {
  const LoadResult before = Load(kFullConfig);
  ASSERT_TRUE(before.ok) << before.error;

  EXPECT_TRUE(Diff(before.config, before.config).empty());

  Config after = before.config;
  after.global.max_spi = 4096;
  after.global.listen = "0.0.0.0";
  after.global.crypto_engine = "fault";
  after.global.crypto_stall_timeout_ms = 10;
  after.connections[0].replay_window = 128;           // site-a changed
  after.connections.erase(after.connections.begin() + 1);  // roadwarriors removed
  ConnectionConfig added;
  added.name = "site-b";
  added.remote_addrs = {"%any"};
  after.connections.push_back(added);

  const ConfigDiff diff = Diff(before.config, after);
  EXPECT_EQ(diff.added, std::vector<std::string>{"site-b"});
  EXPECT_EQ(diff.removed, std::vector<std::string>{"roadwarriors"});
  EXPECT_EQ(diff.changed, std::vector<std::string>{"site-a"});
  EXPECT_TRUE(diff.limits_changed);
  EXPECT_EQ(diff.restart_required,
            (std::vector<std::string>{"global.listen", "global.crypto_engine",
                                      "global.crypto_stall_timeout"}));
  EXPECT_FALSE(diff.empty());
}

TEST(ConfigTest, DiffSeesAPskChange) {
  const LoadResult a = Load(OneConnection(""));
  LoadResult b = Load(OneConnection(""));
  ASSERT_TRUE(a.ok && b.ok);
  b.config.connections[0].psk = SecretString("changed");
  const ConfigDiff diff = Diff(a.config, b.config);
  EXPECT_EQ(diff.changed, std::vector<std::string>{"c"});
  EXPECT_FALSE(diff.limits_changed);
}

// A [[pool]] with `addrs` and any further lines.
std::string PoolTable(const std::string& name, const std::string& addrs,
                      const std::string& extra_lines = "") {
  return "[[pool]]\nname = \"" + name + "\"\naddrs = \"" + addrs + "\"\n" + extra_lines + "\n";
}

// The usable range a one-pool file gives for `addrs`.
std::string PoolRangeOf(const std::string& addrs) {
  const LoadResult r = Load(PoolTable("p", addrs));
  if (!r.ok) return r.error;
  return r.config.pools.at(0).RangeString();
}

TEST(ConfigPoolTest, CidrsLoseTheAddressesNoHostMayHave) {
  EXPECT_EQ(PoolRangeOf("198.18.0.0/16"), "198.18.0.1-198.18.255.254");
  EXPECT_EQ(PoolRangeOf("198.18.0.0/15"), "198.18.0.1-198.19.255.254");
  EXPECT_EQ(PoolRangeOf("10.0.0.8/29"), "10.0.0.9-10.0.0.14");  // 6 addresses
  EXPECT_EQ(PoolRangeOf("10.0.0.4/30"), "10.0.0.5-10.0.0.6");
  EXPECT_EQ(PoolRangeOf("10.0.0.4/31"), "10.0.0.4-10.0.0.5");   // RFC 3021: both usable
  EXPECT_EQ(PoolRangeOf("10.0.0.4/32"), "10.0.0.4-10.0.0.4");
  EXPECT_EQ(PoolRangeOf("10.0.1.77/24"), "10.0.1.1-10.0.1.254");  // host bits cleared first
  EXPECT_EQ(PoolRangeOf("2001:db8:1::/112"), "2001:db8:1::1-2001:db8:1::ffff");
  EXPECT_EQ(PoolRangeOf("2001:db8::/32"), "2001:db8::1-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff");
  EXPECT_EQ(PoolRangeOf("2001:db8::/127"), "2001:db8::-2001:db8::1");
  EXPECT_EQ(PoolRangeOf("2001:db8::5/128"), "2001:db8::5-2001:db8::5");
}

TEST(ConfigPoolTest, RangesAreTakenAsWritten) {
  EXPECT_EQ(PoolRangeOf("198.18.0.10-198.18.0.200"), "198.18.0.10-198.18.0.200");
  EXPECT_EQ(PoolRangeOf(" 198.18.0.10 - 198.18.0.10 "), "198.18.0.10-198.18.0.10");
  EXPECT_EQ(PoolRangeOf("2001:db8::10-2001:db8::1:0"), "2001:db8::10-2001:db8::1:0");
}

TEST(ConfigPoolTest, EveryKey) {
  const LoadResult r = Load(
      PoolTable("rw", "198.18.0.0/16",
                "dns = \"203.0.113.53, 2001:db8::53\"\nsplit_include = \"203.0.113.0/24, 10.0.0.0/8\"") +
      PoolTable("rw6", "2001:db8:1::/112") +
      OneConnection("pools = \"rw, rw6\"\nlocal_ts = \"203.0.113.0/24\""));
  ASSERT_TRUE(r.ok) << r.error;
  ASSERT_EQ(r.config.pools.size(), 2u);
  const PoolConfig& rw = r.config.pools[0];
  EXPECT_EQ(rw.name, "rw");
  EXPECT_EQ(rw.family, AddressFamily::kIpv4);
  EXPECT_EQ(rw.first, (std::array<std::uint8_t, 16>{198, 18, 0, 1}));
  EXPECT_EQ(rw.last, (std::array<std::uint8_t, 16>{198, 18, 255, 254}));
  EXPECT_EQ(rw.dns, (std::vector<std::string>{"203.0.113.53", "2001:db8::53"}));
  ASSERT_EQ(rw.split_include.size(), 2u);
  EXPECT_EQ(rw.split_include[0].ToString(), "203.0.113.0/24");
  EXPECT_EQ(rw.split_include[1].ToString(), "10.0.0.0/8");
  const PoolConfig& rw6 = r.config.pools[1];
  EXPECT_EQ(rw6.family, AddressFamily::kIpv6);
  EXPECT_TRUE(rw6.dns.empty());
  EXPECT_TRUE(rw6.split_include.empty());
  EXPECT_EQ(r.config.FindPool("rw6"), &rw6);
  EXPECT_EQ(r.config.FindPool("nope"), nullptr);

  const ConnectionConfig& c = r.config.connections.at(0);
  EXPECT_EQ(c.pools, (std::vector<std::string>{"rw", "rw6"}));
  EXPECT_TRUE(c.remote_ts_dynamic);  // the default with pools
  EXPECT_TRUE(c.remote_ts.empty());
  EXPECT_TRUE(c.vips.empty());
}

TEST(ConfigPoolTest, RemoteTsDynamic) {
  const std::string pool = PoolTable("rw", "198.18.0.0/16");
  const LoadResult dynamic = Load(pool + OneConnection("pools = \"rw\"\nremote_ts = \" dynamic \""));
  ASSERT_TRUE(dynamic.ok) << dynamic.error;
  EXPECT_TRUE(dynamic.config.connections[0].remote_ts_dynamic);
  EXPECT_TRUE(dynamic.config.connections[0].remote_ts.empty());

  // Selectors written out win over the default.
  const LoadResult fixed = Load(pool + OneConnection("pools = \"rw\"\nremote_ts = \"198.18.0.0/16\""));
  ASSERT_TRUE(fixed.ok) << fixed.error;
  EXPECT_FALSE(fixed.config.connections[0].remote_ts_dynamic);
  ASSERT_EQ(fixed.config.connections[0].remote_ts.size(), 1u);

  // "dynamic" without pools: the peer's own address (the IKE side decides).
  const LoadResult no_pools = Load(OneConnection("remote_ts = \"dynamic\""));
  ASSERT_TRUE(no_pools.ok) << no_pools.error;
  EXPECT_TRUE(no_pools.config.connections[0].remote_ts_dynamic);

  // Without pools nothing changes.
  const LoadResult plain = Load(OneConnection(""));
  ASSERT_TRUE(plain.ok) << plain.error;
  EXPECT_FALSE(plain.config.connections[0].remote_ts_dynamic);
  EXPECT_TRUE(plain.config.connections[0].pools.empty());
  EXPECT_TRUE(plain.config.pools.empty());
}

TEST(ConfigPoolTest, Vips) {
  const auto vips = [](const std::string& value) {
    const LoadResult r = Load(OneConnection("vips = \"" + value + "\""));
    EXPECT_TRUE(r.ok) << r.error;
    return r.ok ? r.config.connections[0].vips : std::vector<AddressFamily>{};
  };
  EXPECT_EQ(vips("0.0.0.0"), std::vector<AddressFamily>{AddressFamily::kIpv4});
  EXPECT_EQ(vips("::"), std::vector<AddressFamily>{AddressFamily::kIpv6});
  EXPECT_EQ(vips("0.0.0.0, ::"),
            (std::vector<AddressFamily>{AddressFamily::kIpv4, AddressFamily::kIpv6}));
  EXPECT_EQ(vips("::,0.0.0.0"),
            (std::vector<AddressFamily>{AddressFamily::kIpv6, AddressFamily::kIpv4}));
}

TEST(ConfigPoolTest, PoolErrorsNameTheKey) {
  ExpectError(PoolTable("rw", "198.18.0.200-198.18.0.10"),
              "spigot.toml: pool[0].addrs: the range \"198.18.0.200-198.18.0.10\" is empty (its "
              "first address is above its last)");
  ExpectError(PoolTable("rw", "2001:db8::2-2001:db8::1"),
              "spigot.toml: pool[0].addrs: the range \"2001:db8::2-2001:db8::1\" is empty (its "
              "first address is above its last)");
  ExpectError(PoolTable("rw", "198.18.0.1-2001:db8::1"),
              "spigot.toml: pool[0].addrs: the range \"198.18.0.1-2001:db8::1\" mixes IPv4 and "
              "IPv6");
  ExpectError(PoolTable("rw", "198.18.0.1-"),
              "spigot.toml: pool[0].addrs: \"\" is not an IPv4 or IPv6 address (in the range "
              "\"198.18.0.1-\")");
  ExpectError(PoolTable("rw", "198.18.0.1-198.18.0.300"),
              "spigot.toml: pool[0].addrs: \"198.18.0.300\" is not an IPv4 or IPv6 address (in "
              "the range \"198.18.0.1-198.18.0.300\")");
  ExpectError(PoolTable("rw", "198.18.0.0/33"),
              "spigot.toml: pool[0].addrs: \"198.18.0.0/33\": prefix length must be 0..32");
  ExpectError(PoolTable("rw", ""),
              "spigot.toml: pool[0].addrs: required (a CIDR like \"198.18.0.0/16\" or a range "
              "like \"198.18.0.10-198.18.0.200\")");
  ExpectError("[[pool]]\nname = \"rw\"",
              "spigot.toml: pool[0].addrs: required (a CIDR like \"198.18.0.0/16\" or a range "
              "like \"198.18.0.10-198.18.0.200\")");
  ExpectError("[[pool]]\naddrs = \"10.0.0.0/8\"",
              "spigot.toml: pool[0].name: required (a unique, non-empty name)");
  ExpectError(PoolTable("rw", "10.0.0.0/8", "size = 5"),
              "spigot.toml: pool[0].size: unknown key");
  ExpectError("[pool]\nname = \"rw\"", "spigot.toml: pool: must be an array of tables ([[pool]])");
  ExpectError(PoolTable("rw", "10.0.0.0/8") + PoolTable("rw", "172.16.0.0/12"),
              "spigot.toml: pool[1].name: \"rw\" is already used by pool[0]");
  ExpectError(PoolTable("a", "10.0.0.0/8") + PoolTable("b", "172.16.0.0/12") +
                  PoolTable("c", "10.200.0.10-10.200.0.20"),
              "spigot.toml: pool[2].addrs: 10.200.0.10-10.200.0.20 overlaps pool[0] (\"a\", "
              "10.0.0.1-10.255.255.254)");
  ExpectError(PoolTable("a", "2001:db8::/64") + PoolTable("b", "2001:db8::ffff-2001:db8:0:1::"),
              "spigot.toml: pool[1].addrs: 2001:db8::ffff-2001:db8:0:1:: overlaps pool[0] (\"a\", "
              "2001:db8::1-2001:db8::ffff:ffff:ffff:ffff)");
  ExpectError(PoolTable("rw", "10.0.0.0/8", "dns = \"203.0.113.53, dns.example.org\""),
              "spigot.toml: pool[0].dns: \"dns.example.org\" is not an IPv4 or IPv6 address");
  ExpectError(PoolTable("rw", "10.0.0.0/8", "dns = \"203.0.113.53,\""),
              "spigot.toml: pool[0].dns: empty entry in the comma-separated list");
  ExpectError(PoolTable("rw", "10.0.0.0/8", "split_include = \"203.0.113.0/24, x\""),
              "spigot.toml: pool[0].split_include: \"x\" is not an address or CIDR prefix (like "
              "10.0.0.0/8 or 2001:db8::/32)");
}

TEST(ConfigPoolTest, PoolsStayOutOfTheGatewaysNetworks) {
  ExpectError(PoolTable("rw", "198.18.0.0/16") +
                  OneConnection("local_ts = \"203.0.113.0/24, 198.18.128.0/17\""),
              "spigot.toml: pool[0].addrs: 198.18.0.1-198.18.255.254 overlaps "
              "connection[0].local_ts 198.18.128.0/17 (virtual IPs must lie outside the "
              "gateway's own networks)");
  ExpectError(PoolTable("rw", "2001:db8:1::/112") + OneConnection("local_ts = \"2001:db8::/32\""),
              "spigot.toml: pool[0].addrs: 2001:db8:1::1-2001:db8:1::ffff overlaps "
              "connection[0].local_ts 2001:db8::/32 (virtual IPs must lie outside the gateway's "
              "own networks)");
  // Adjacent is not overlapping; a full tunnel (/0) covers every pool by design.
  const LoadResult ok = Load(PoolTable("rw", "198.18.0.0/16") +
                             OneConnection("local_ts = \"198.17.0.0/16, 198.19.0.0/16, 0.0.0.0/0, ::/0\""));
  EXPECT_TRUE(ok.ok) << ok.error;
}

TEST(ConfigPoolTest, ConnectionErrorsNameTheKey) {
  const std::string pool = PoolTable("rw", "198.18.0.0/16");
  ExpectError(pool + OneConnection("pools = \"rw, rw2\""),
              "spigot.toml: connection[0].pools: \"rw2\" is not the name of a [[pool]]");
  ExpectError(OneConnection("pools = \"rw\""),
              "spigot.toml: connection[0].pools: \"rw\" is not the name of a [[pool]]");
  ExpectError(pool + OneConnection("pools = \"\""),
              "spigot.toml: connection[0].pools: must not be empty (comma-separated [[pool]] "
              "names)");
  ExpectError(pool + OneConnection("pools = \"rw,,rw\""),
              "spigot.toml: connection[0].pools: empty entry in the comma-separated list");
  ExpectError(pool + OneConnection("pools = 5"),
              "spigot.toml: connection[0].pools: must be a string, got 5");
  ExpectError(pool + OneConnection("pools = \"rw\"\nremote_ts = \"dynamic, 10.0.0.0/8\""),
              "spigot.toml: connection[0].remote_ts: \"dynamic\" cannot be combined with other "
              "selectors");
  for (const char* bad : {"", "10.0.0.1", "0.0.0.0, 0.0.0.0", "any", "0.0.0.0,", "::/0"}) {
    ExpectError(OneConnection(std::string("vips = \"") + bad + "\""),
                std::string("spigot.toml: connection[0].vips: must be \"0.0.0.0\", \"::\" or "
                            "\"0.0.0.0, ::\", got \"") + bad + "\"");
  }
}

TEST(ConfigPoolTest, DiffSeesAPoolChange) {
  const LoadResult a = Load(PoolTable("rw", "198.18.0.0/16") + OneConnection("pools = \"rw\""));
  const LoadResult b = Load(PoolTable("rw", "198.18.0.0/15") + OneConnection("pools = \"rw\""));
  ASSERT_TRUE(a.ok && b.ok) << a.error << b.error;
  EXPECT_TRUE(Diff(a.config, a.config).empty());
  const ConfigDiff diff = Diff(a.config, b.config);
  EXPECT_TRUE(diff.pools_changed);
  EXPECT_TRUE(diff.changed.empty());  // the connection itself is the same
  EXPECT_FALSE(diff.empty());
}

}  // namespace
}  // namespace spigot::config

// ---- certificates (issue 12): local_auth / remote_auth = "pubkey" and their files

namespace spigot::config {
namespace {

std::string PubkeyConnection(const std::string& lines) {
  return "[[connection]]\nname = \"c\"\nremote_addrs = \"192.0.2.1\"\n" + lines + "\n";
}

TEST(ConfigTest, PubkeyLoadsCertificatesAndNeedsNoPsk) {
  TempDir dir;
  test_tools::TestPki pki(dir.path());
  const auto root = pki.Ca("root", "C=CH, O=Example, CN=Root");
  test_tools::IssueOptions o;
  o.dns = {"gw.example.org"};
  const auto gw = pki.Issue("gw", root, "C=CH, O=Example, CN=gw", test_tools::TestKey::kEcP256, o);
  const auto other = pki.Issue("other", root, "C=CH, O=Example, CN=other", test_tools::TestKey::kEcP256, o);
  const std::string files = "local_cert = \"" + gw.cert_path + "\"\nlocal_key = \"" + gw.key_path +
                            "\"\nca_certs = \"" + root.cert_path + "\"\n";
  const LoadResult r = Load(PubkeyConnection("local_auth = \"pubkey\"\nremote_auth = \"pubkey\"\n" + files));
  ASSERT_TRUE(r.ok) << r.error;
  const auto& c = r.config.connections[0];
  EXPECT_EQ(c.local_auth, AuthKind::kPubkey);
  ASSERT_TRUE(c.credentials);
  EXPECT_EQ(c.credentials->cert.Subject(), "C=CH, O=Example, CN=gw");
  ASSERT_TRUE(c.trust);
  EXPECT_EQ(c.trust->cas().size(), 1u);
  // Relative paths are the config file's directory's.
  const std::string rel = dir.Write("spigot.toml", PubkeyConnection("local_auth = \"pubkey\"\nremote_auth = \"psk\"\npsk = \"k\"\nlocal_cert = \"gw.pem\"\nlocal_key = \"gw.key\"\n"));
  const LoadResult r2 = LoadFile(rel);
  EXPECT_TRUE(r2.ok) << r2.error;

  ExpectError(PubkeyConnection("local_auth = \"cert\"\nremote_auth = \"pubkey\"\n" + files),
              "spigot.toml: connection[0].local_auth: must be \"psk\", \"pubkey\", \"eap-mschapv2\", \"eap-tls\" or \"eap-radius\", got \"cert\"");
  ExpectError(PubkeyConnection("remote_auth = \"cert\"\npsk = \"k\"\n"),
              "spigot.toml: connection[0].remote_auth: must be \"psk\", \"pubkey\", \"eap-mschapv2\", \"eap-tls\" or \"eap-radius\", got \"cert\"");
  ExpectError(PubkeyConnection("local_auth = \"pubkey\"\nremote_auth = \"pubkey\"\nca_certs = \"" + root.cert_path + "\"\n"),
              "spigot.toml: connection[0].local_cert: required with local_auth = \"pubkey\" (a PEM certificate file)");
  ExpectError(PubkeyConnection("local_auth = \"pubkey\"\nremote_auth = \"pubkey\"\nlocal_cert = \"" + gw.cert_path +
                               "\"\nlocal_key = \"" + gw.key_path + "\"\n"),
              "spigot.toml: connection[0].ca_certs: required with remote_auth = \"pubkey\" (PEM files of trusted CAs)");
  ExpectError(PubkeyConnection("local_auth = \"pubkey\"\nremote_auth = \"pubkey\"\nlocal_cert = \"" + gw.cert_path +
                               "\"\nlocal_key = \"" + other.key_path + "\"\nca_certs = \"" + root.cert_path + "\"\n"),
              "spigot.toml: connection[0].local_key: " + other.key_path +
                  ": the key does not belong to the certificate C=CH, O=Example, CN=gw of " + gw.cert_path);
  ExpectError(PubkeyConnection("local_auth = \"pubkey\"\nremote_auth = \"pubkey\"\n" + files + "crl_files = \"" +
                               dir.path() + "/none.crl\"\n"),
              "spigot.toml: connection[0].crl_files: " + dir.path() + "/none.crl: cannot open: No such file or directory");
  ExpectError(PubkeyConnection("remote_auth = \"psk\"\npsk = \"k\"\nca_certs = \"" + root.cert_path + "\"\n"),
              "spigot.toml: connection[0].ca_certs: set, but remote_auth is not \"pubkey\" or \"eap-tls\"");
  // A side that uses the PSK still needs it.
  ExpectError(PubkeyConnection("local_auth = \"pubkey\"\n" + files.substr(0, files.find("ca_certs"))),
              "spigot.toml: connection[0].psk: required (the pre-shared key, or psk_file = \"/path\")");
}

// allow_weak (native clients): weak transforms (RFC 8247) are named before they are used.
TEST(ConfigWeakTest, ProposalsNamingWeakTransformsNeedAllowWeak) {
  ExpectError(OneConnection("ike_proposals = \"aes256-sha1-modp1024\""),
              "spigot.toml: connection[0].ike_proposals: 'modp1024' is a weak transform (RFC "
              "8247), refused unless allow_weak names it (allow_weak = \"modp1024\")");
  ExpectError(OneConnection("ike_proposals = \"aes256-sha256-modp2048, 3des-sha1-modp2048\"\n"
                            "allow_weak = \"modp1024\""),
              "spigot.toml: connection[0].ike_proposals: '3des' is a weak transform (RFC 8247), "
              "refused unless allow_weak names it (allow_weak = \"3des\")");
  ExpectError(OneConnection("esp_proposals = \"aes256-sha1-modp1024\""),
              "spigot.toml: connection[0].esp_proposals: 'modp1024' is a weak transform (RFC "
              "8247), refused unless allow_weak names it (allow_weak = \"modp1024\")");
  ExpectError(OneConnection("allow_weak = \"modp768\""),
              "spigot.toml: connection[0].allow_weak: \"modp768\" is not a weak transform that "
              "can be allowed (\"modp1024\", \"3des\")");
  ExpectError(OneConnection("allow_weak = \"modp1024, modp1024\""),
              "spigot.toml: connection[0].allow_weak: \"modp1024\" listed twice");
  ExpectError(OneConnection("allow_weak = true"),
              "spigot.toml: connection[0].allow_weak: must be a string, got true");

  const LoadResult r = Load(OneConnection("ike_proposals = \"aes256-sha1-modp1024, "
                                          "3des-sha1-modp2048\"\nallow_weak = \"3des, modp1024\""));
  ASSERT_TRUE(r.ok) << r.error;
  const ConnectionConfig& c = r.config.connections.at(0);
  EXPECT_EQ(c.allow_weak, (std::vector<std::string>{"3des", "modp1024"}));
  EXPECT_EQ(c.ike_proposals, "aes256-sha1-modp1024, 3des-sha1-modp2048");  // as written
  EXPECT_EQ(c.esp_proposals, kDefaultEspProposals);
}

TEST(ConfigWeakTest, DefaultProposalsGainTheAllowedWeakTransformsLast) {
  const struct {
    const char* allow;
    std::string ike;
  } cases[] = {
      {"modp1024", std::string(kDefaultIkeProposals) +
                       ", aes256-aes128-sha256-sha1-modp2048-ecp256-ecp384-modp1024"},
      {"3des", std::string(kDefaultIkeProposals) +
                   ", aes256-aes128-3des-sha256-sha1-modp2048-ecp256-ecp384"},
      {"modp1024,3des", std::string(kDefaultIkeProposals) +
                            ", aes256-aes128-3des-sha256-sha1-modp2048-ecp256-ecp384-modp1024"},
      {"", std::string(kDefaultIkeProposals)},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.allow);
    const LoadResult r = Load(OneConnection(std::string("allow_weak = \"") + c.allow + "\""));
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.config.connections.at(0).ike_proposals, c.ike);
    EXPECT_EQ(r.config.connections.at(0).esp_proposals, kDefaultEspProposals);
  }
  // A reload that only adds allow_weak is a change of the connection.
  const LoadResult a = Load(OneConnection(""));
  const LoadResult b = Load(OneConnection("allow_weak = \"modp1024\""));
  ASSERT_TRUE(a.ok && b.ok);
  EXPECT_FALSE(a.config.connections[0] == b.config.connections[0]);
}

}  // namespace
}  // namespace spigot::config

// ---- EAP (issue 13): remote_auth = "eap-mschapv2" and [[eap_user]]

namespace spigot::config {
namespace {

const char* kEapUsers = "[[eap_user]]\nid = \"alice\"\nsecret = \"pw a\"\n\n[[eap_user]]\nid = \"bob\"\nsecret = \"pw b\"\n\n";

TEST(ConfigTest, EapMschapV2WithLocalUsers) {
  const LoadResult r = Load(std::string(kEapUsers) + OneConnection("remote_auth = \"eap-mschapv2\""));
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.config.connections[0].remote_auth, AuthKind::kEapMschapV2);
  ASSERT_EQ(r.config.eap_users.size(), 2u);
  EXPECT_EQ(r.config.eap_users[1].id, "bob");
  EXPECT_EQ(r.config.eap_users[1].secret.view(), "pw b");
  const LoadResult client = Load(std::string(kEapUsers) + OneConnection("local_auth = \"eap-mschapv2\"\neap_id = \"bob\""));
  ASSERT_TRUE(client.ok) << client.error;
  EXPECT_EQ(client.config.connections[0].local_auth, AuthKind::kEapMschapV2);
  EXPECT_EQ(client.config.connections[0].eap_id, "bob");
}

TEST(ConfigTest, EapErrorsNameTheKey) {
  ExpectError(OneConnection("remote_auth = \"eap-mschapv2\""),
              "spigot.toml: connection[0].remote_auth: \"eap-mschapv2\" needs at least one [[eap_user]] (id and secret)");
  ExpectError(OneConnection("local_auth = \"eap-mschapv2\""),
              "spigot.toml: connection[0].eap_id: required with local_auth = \"eap-mschapv2\" (the user name; its secret is the [[eap_user]] of that id)");
  ExpectError(OneConnection("local_auth = \"eap-mschapv2\"\neap_id = \"carol\""),
              "spigot.toml: connection[0].eap_id: no [[eap_user]] has id \"carol\" (its secret is the password)");
  ExpectError(OneConnection("eap_id = \"alice\""), "spigot.toml: connection[0].eap_id: set, but local_auth is not \"eap-mschapv2\"");
  ExpectError(OneConnection("remote_auth = \"eap-tls\""),
              "spigot.toml: connection[0].local_auth: must be \"pubkey\" with remote_auth = \"eap-tls\" (local_cert is the gateway's TLS certificate)");
  ExpectError(OneConnection("local_auth = \"eap-tls\""),
              "spigot.toml: connection[0].local_auth: \"eap-tls\" is for remote_auth (spigot logs in with \"eap-mschapv2\" only)");
  ExpectError(OneConnection("remote_auth = \"eap-radius\""),
              "spigot.toml: connection[0].remote_auth: \"eap-radius\" needs a [radius] table with servers and secret");
  ExpectError("[[eap_user]]\nid = \"alice\"\n", "spigot.toml: eap_user[0].secret: required (the user's password, a non-empty string)");
  ExpectError("[[eap_user]]\nsecret = \"x\"\n", "spigot.toml: eap_user[0].id: required (the user name, 1-255 octets)");
  ExpectError("[[eap_user]]\nid = \"a\"\nsecret = \"x\"\n[[eap_user]]\nid = \"a\"\nsecret = \"y\"\n",
              "spigot.toml: eap_user[1].id: \"a\" is already an eap_user");
  ExpectError("[[eap_user]]\nid = \"a\"\nsecret = \"x\"\npassword = \"y\"\n", "spigot.toml: eap_user[0].password: unknown key");
  ExpectError("[eap_user]\nid = \"a\"\n", "spigot.toml: eap_user: must be an array of tables ([[eap_user]])");
}

TEST(ConfigTest, RadiusServersForEapRadius) {
  const LoadResult r = Load(
      "[radius]\nservers = \"192.0.2.10, [2001:db8::10]:11812, 198.51.100.7:1645\"\nsecret = \"s3cret\"\ntimeout = \"3s\"\n"
      "retries = 2\n\n" +
      OneConnection("remote_auth = \"eap-radius\""));
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.config.connections[0].remote_auth, AuthKind::kEapRadius);
  ASSERT_EQ(r.config.radius.servers.size(), 3u);
  EXPECT_EQ(r.config.radius.servers[0], (RadiusServerConfig{"192.0.2.10", 1812}));
  EXPECT_EQ(r.config.radius.servers[1], (RadiusServerConfig{"2001:db8::10", 11812}));
  EXPECT_EQ(r.config.radius.servers[2], (RadiusServerConfig{"198.51.100.7", 1645}));
  EXPECT_EQ(r.config.radius.secret.view(), "s3cret");
  EXPECT_EQ(r.config.radius.timeout, std::chrono::seconds(3));
  EXPECT_EQ(r.config.radius.retries, 2u);
  EXPECT_EQ(r.config.radius.max_requests, 4096u);
  // A reload that changes only the servers says so.
  const LoadResult after = Load("[radius]\nservers = \"192.0.2.11\"\nsecret = \"s3cret\"\n\n" +
                                OneConnection("remote_auth = \"eap-radius\""));
  ASSERT_TRUE(after.ok) << after.error;
  const ConfigDiff d = Diff(r.config, after.config);
  EXPECT_TRUE(d.radius_changed);
  EXPECT_TRUE(d.changed.empty());
}

TEST(ConfigTest, RadiusErrorsNameTheKey) {
  ExpectError("[radius]\nsecret = \"x\"\n", "spigot.toml: radius.servers: required (\"192.0.2.10:1812\", comma-separated, tried in order)");
  ExpectError("[radius]\nservers = \"radius.example.org\"\nsecret = \"x\"\n",
              "spigot.toml: radius.servers: \"radius.example.org\": not an IPv4 or IPv6 address (host names are not resolved)");
  ExpectError("[radius]\nservers = \"192.0.2.1:0\"\nsecret = \"x\"\n", "spigot.toml: radius.servers: \"192.0.2.1:0\": port must be 1-65535");
  ExpectError("[radius]\nservers = \"192.0.2.1\"\n", "spigot.toml: radius.secret: required (the RADIUS shared secret, a non-empty string)");
  ExpectError("[radius]\nservers = \"192.0.2.1\"\nsecret = \"x\"\ntimeout = \"60s\"\n", "spigot.toml: radius.timeout: must be between 1s and 30s");
  ExpectError("[radius]\nservers = \"192.0.2.1\"\nsecret = \"x\"\nretry = 1\n", "spigot.toml: radius.retry: unknown key");
  ExpectError("radius = 1\n", "spigot.toml: radius: must be a table ([radius])");
}

}  // namespace
}  // namespace spigot::config
