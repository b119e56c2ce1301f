#include "spigot/config/config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <map>
#include <sstream>
#include <toml++/toml.h>

#include "spigot/config/duration.h"
#include "spigot/config/run_as.h"
#include "spigot/config/text.h"

namespace spigot::config {

void WipeString(std::string& s) {
  volatile char* p = s.data();
  for (std::size_t i = 0; i < s.size(); ++i) p[i] = 0;
  s.clear();
}

void SecretString::Wipe() { WipeString(value_); }

SecretString& SecretString::operator=(const SecretString& other) {
  if (this != &other) {
    Wipe();
    value_ = other.value_;
  }
  return *this;
}

const char* ToString(StartAction a) {
  switch (a) {
    case StartAction::kNone: return "none";
    case StartAction::kStart: return "start";
    case StartAction::kTrap: return "trap";
  }
  return "?";
}

const char* ToString(Unique u) {
  switch (u) {
    case Unique::kNo: return "no";
    case Unique::kKeep: return "keep";
    case Unique::kReplace: return "replace";
  }
  return "?";
}

const ConnectionConfig* Config::FindConnection(std::string_view name) const {
  for (const ConnectionConfig& c : connections) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

const PoolConfig* Config::FindPool(std::string_view name) const {
  for (const PoolConfig& pool : pools) {
    if (pool.name == name) return &pool;
  }
  return nullptr;
}

std::string PoolConfig::RangeString() const {
  const int af = family == AddressFamily::kIpv4 ? AF_INET : AF_INET6;
  char a[INET6_ADDRSTRLEN] = {};
  char b[INET6_ADDRSTRLEN] = {};
  inet_ntop(af, first.data(), a, sizeof a);
  inet_ntop(af, last.data(), b, sizeof b);
  return std::string(a) + "-" + b;
}

namespace {

// The largest psk_file accepted; a PSK is a line of text, not a file of any size.
constexpr std::size_t kMaxPskFileBytes = 64 * 1024;
// The largest configuration file accepted (about 30,000 connections).
constexpr std::size_t kMaxConfigFileBytes = 16 * 1024 * 1024;
constexpr std::uint32_t kMinMaxSpi = 256;
constexpr std::uint32_t kMaxMaxSpi = 1u << 24;  // sa::SpiPool::kMaxSlots
constexpr std::uint32_t kMinReplayWindow = 64;     // esp::kMinReplayWindow
constexpr std::uint32_t kMaxReplayWindow = 65536;  // esp::kMaxReplayWindow
constexpr std::size_t kMaxTunNameBytes = 15;  // IFNAMSIZ - 1

// Reads a whole file of at most `max_bytes`. Whatever was read is wiped on failure (it may be a
// secret). `reason` does not name the file.
// `st`, when given, gets the opened file's status (its mode and group for SecretFileProblem).
bool ReadSmallFile(const std::string& path, std::size_t max_bytes, std::string& out,
                   std::string& reason, struct stat* st = nullptr) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    reason = std::string("cannot read: ") + std::strerror(errno);
    return false;
  }
  if (st != nullptr && fstat(fd, st) != 0) {
    reason = std::string("cannot stat: ") + std::strerror(errno);
    close(fd);
    return false;
  }
  std::string data;
  char chunk[4096];
  data.reserve(sizeof chunk);  // a typical key is read without reallocating (and leaving copies)
  while (true) {
    const ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n < 0) reason = std::string("cannot read: ") + std::strerror(errno);
      break;
    }
    if (data.size() + static_cast<std::size_t>(n) > max_bytes) {
      reason = "larger than " + std::to_string(max_bytes) + " bytes";
      break;
    }
    data.append(chunk, static_cast<std::size_t>(n));
  }
  close(fd);
  volatile char* c = chunk;
  for (std::size_t i = 0; i < sizeof chunk; ++i) c[i] = 0;
  if (!reason.empty()) {
    WipeString(data);
    return false;
  }
  out = std::move(data);
  return true;
}

bool IsAddressLiteral(std::string_view text) {
  const std::string s(text);
  std::uint8_t buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

// One address literal of either family, into `out` (network order, the rest zero).
bool ParsePoolAddress(std::string_view text, AddressFamily& family,
                      std::array<std::uint8_t, 16>& out) {
  const std::string s(text);
  out = {};
  if (inet_pton(AF_INET, s.c_str(), out.data()) == 1) {
    family = AddressFamily::kIpv4;
    return true;
  }
  out = {};
  if (inet_pton(AF_INET6, s.c_str(), out.data()) == 1) {
    family = AddressFamily::kIpv6;
    return true;
  }
  return false;
}

// Adds `delta` (+1 or -1) to the big-endian number in the first `length` bytes of `a`. The
// callers never step past the ends of a prefix.
void StepPoolAddress(std::array<std::uint8_t, 16>& a, std::size_t length, int delta) {
  for (std::size_t i = length; i-- > 0;) {
    if (delta > 0) {
      if (++a[i] != 0) return;
    } else {
      if (a[i]-- != 0) return;
    }
  }
}

// Whether the inclusive ranges [a_first, a_last] and [b_first, b_last] (big-endian addresses of
// one family, so byte order is numeric order) share an address.
bool PoolRangesOverlap(const std::array<std::uint8_t, 16>& a_first,
                       const std::array<std::uint8_t, 16>& a_last,
                       const std::array<std::uint8_t, 16>& b_first,
                       const std::array<std::uint8_t, 16>& b_last) {
  return a_first <= b_last && b_first <= a_last;
}

// A pool's `addrs`: a CIDR (minus the addresses no host may have, see PoolConfig) or an
// inclusive range "first-last" of one family. `reason` does not name the key.
bool ParsePoolAddrs(std::string_view text, PoolConfig& pool, std::string& reason) {
  text = Trim(text);
  const std::size_t dash = text.find('-');
  if (dash != std::string_view::npos) {
    const std::string_view from = Trim(text.substr(0, dash));
    const std::string_view to = Trim(text.substr(dash + 1));
    AddressFamily from_family{};
    AddressFamily to_family{};
    const bool from_ok = ParsePoolAddress(from, from_family, pool.first);
    if (!from_ok || !ParsePoolAddress(to, to_family, pool.last)) {
      reason = "\"" + std::string(from_ok ? to : from) +
               "\" is not an IPv4 or IPv6 address (in the range \"" + std::string(text) + "\")";
      return false;
    }
    if (from_family != to_family) {
      reason = "the range \"" + std::string(text) + "\" mixes IPv4 and IPv6";
      return false;
    }
    if (pool.first > pool.last) {
      reason = "the range \"" + std::string(text) +
               "\" is empty (its first address is above its last)";
      return false;
    }
    pool.family = from_family;
    return true;
  }

  TrafficSelector cidr;
  if (!ParseTrafficSelector(text, cidr, reason)) return false;
  pool.family = cidr.family;
  pool.first = cidr.network;
  pool.last = cidr.network;
  const std::size_t bits = cidr.address_length() * 8;
  for (std::size_t bit = cidr.prefix_len; bit < bits; ++bit) {
    pool.last[bit / 8] |= static_cast<std::uint8_t>(0x80u >> (bit % 8));
  }
  if (bits - cidr.prefix_len >= 2) {
    StepPoolAddress(pool.first, cidr.address_length(), +1);  // network / subnet-router anycast
    if (cidr.family == AddressFamily::kIpv4) {
      StepPoolAddress(pool.last, cidr.address_length(), -1);  // broadcast
    }
  }
  return true;
}

// How a value looks in an error message: strings quoted, numbers as written, other types named.
std::string Describe(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string: return "\"" + node.as_string()->get() + "\"";
    case toml::node_type::integer: return std::to_string(node.as_integer()->get());
    case toml::node_type::floating_point: {
      std::ostringstream out;
      out << node.as_floating_point()->get();
      return out.str();
    }
    case toml::node_type::boolean: return node.as_boolean()->get() ? "true" : "false";
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    default: return "a date/time";
  }
}

// Reads one TOML document into a Config. Stops at the first error.
class Loader {
 public:
  explicit Loader(std::string source) : source_(std::move(source)) {}

  bool Load(toml::table& root, Config& out) {
    // Secret files are checked against the daemon's group, which global.user decides; the
    // tables are visited in key order, so it is looked up first.
    if (const toml::node* user = root.at_path("global.user").node(); user != nullptr && user->is_string()) {
      daemon_gid_ = DaemonGroupFor(user->as_string()->get());
    } else {
      daemon_gid_ = DaemonGroupFor("");
    }
    for (auto&& [key, node] : root) {
      if (key.str() == "global") {
        toml::table* table = node.as_table();
        if (table == nullptr) return Fail("global", "must be a table ([global])");
        if (!LoadGlobal(*table, out.global)) return false;
      } else if (key.str() == "connection") {
        toml::array* array = node.as_array();
        if (array == nullptr || !array->is_array_of_tables()) {
          return Fail("connection", "must be an array of tables ([[connection]])");
        }
        for (std::size_t i = 0; i < array->size(); ++i) {
          ConnectionConfig c;
          if (!LoadConnection(*array->get(i)->as_table(), i, c)) return false;
          out.connections.push_back(std::move(c));
        }
      } else if (key.str() == "pool") {
        toml::array* array = node.as_array();
        if (array == nullptr || !array->is_array_of_tables()) {
          return Fail("pool", "must be an array of tables ([[pool]])");
        }
        for (std::size_t i = 0; i < array->size(); ++i) {
          PoolConfig pool;
          if (!LoadPool(*array->get(i)->as_table(), i, pool)) return false;
          out.pools.push_back(std::move(pool));
        }
      } else if (key.str() == "eap_user") {
        toml::array* array = node.as_array();
        if (array == nullptr || !array->is_array_of_tables()) {
          return Fail("eap_user", "must be an array of tables ([[eap_user]])");
        }
        for (std::size_t i = 0; i < array->size(); ++i) {
          EapUserConfig user;
          if (!LoadEapUser(*array->get(i)->as_table(), i, out.eap_users, user)) return false;
          out.eap_users.push_back(std::move(user));
        }
      } else if (key.str() == "radius") {
        toml::table* table = node.as_table();
        if (table == nullptr) return Fail("radius", "must be a table ([radius])");
        if (!LoadRadius(*table, out.radius)) return false;
      } else {
        return Fail(std::string(key.str()),
                    "unknown key (expected [global], [[connection]], [[pool]], [[eap_user]] or [radius])");
      }
    }
    for (std::size_t i = 0; i < out.connections.size(); ++i) {
      if (out.connections[i].remote_auth == AuthKind::kEapMschapV2 && out.eap_users.empty()) {
        return Fail("connection[" + std::to_string(i) + "].remote_auth",
                    "\"eap-mschapv2\" needs at least one [[eap_user]] (id and secret)");
      }
      if (out.connections[i].remote_auth == AuthKind::kEapRadius && !out.radius.configured()) {
        return Fail("connection[" + std::to_string(i) + "].remote_auth",
                    "\"eap-radius\" needs a [radius] table with servers and secret");
      }
      const std::string& id = out.connections[i].eap_id;
      if (!id.empty() && std::none_of(out.eap_users.begin(), out.eap_users.end(), [&](const EapUserConfig& u) { return u.id == id; })) {
        return Fail("connection[" + std::to_string(i) + "].eap_id", "no [[eap_user]] has id \"" + id + "\" (its secret is the password)");
      }
    }
    return CheckUniqueNames(out.connections) && CheckPools(out);
  }

  const std::string& error() const { return error_; }

 private:
  bool Fail(std::string_view key, std::string_view reason) {
    error_ = source_ + ": " + std::string(key) + ": " + std::string(reason);
    return false;
  }

  bool CheckKnownKeys(const toml::table& table, const std::string& prefix,
                      std::initializer_list<std::string_view> known) {
    for (auto&& [key, node] : table) {
      if (std::find(known.begin(), known.end(), key.str()) == known.end()) {
        return Fail(prefix + "." + std::string(key.str()), "unknown key");
      }
    }
    return true;
  }

  // Absent keys keep the default in `out`.
  template <typename T>
  bool GetInteger(const toml::table& table, const std::string& prefix, std::string_view key,
                  std::int64_t min, std::int64_t max, T& out) {
    const toml::node* node = table.get(key);
    if (node == nullptr) return true;
    const toml::value<std::int64_t>* value = node->as_integer();
    if (value == nullptr || value->get() < min || value->get() > max) {
      std::string range = max == std::numeric_limits<std::int64_t>::max()
                              ? "at least " + std::to_string(min)
                              : "between " + std::to_string(min) + " and " + std::to_string(max);
      return Fail(prefix + "." + std::string(key),
                  "must be an integer " + range + ", got " + Describe(*node));
    }
    out = static_cast<T>(value->get());
    return true;
  }

  // Sets `present` to whether the key is there.
  bool GetString(const toml::table& table, const std::string& prefix, std::string_view key,
                 std::string& out, bool* present = nullptr) {
    const toml::node* node = table.get(key);
    if (present != nullptr) *present = node != nullptr;
    if (node == nullptr) return true;
    if (!node->is_string()) {
      return Fail(prefix + "." + std::string(key), "must be a string, got " + Describe(*node));
    }
    out = node->as_string()->get();
    return true;
  }

  bool GetBool(const toml::table& table, const std::string& prefix, std::string_view key, bool& out) {
    const toml::node* node = table.get(key);
    if (node == nullptr) return true;
    if (!node->is_boolean()) {
      return Fail(prefix + "." + std::string(key), "must be true or false, got " + Describe(*node));
    }
    out = node->as_boolean()->get();
    return true;
  }

  // A duration string ("4h") or an integer number of seconds, between `min` and kMaxDuration.
  bool GetDuration(const toml::table& table, const std::string& prefix, std::string_view key,
                   std::chrono::seconds min, std::chrono::seconds& out, bool* present = nullptr) {
    const toml::node* node = table.get(key);
    if (present != nullptr) *present = node != nullptr;
    if (node == nullptr) return true;
    const std::string name = prefix + "." + std::string(key);
    std::chrono::seconds d{};
    if (const toml::value<std::int64_t>* seconds = node->as_integer()) {
      if (seconds->get() < 0 || seconds->get() > kMaxDuration.count()) {
        return Fail(name, "must be a duration between " + FormatDuration(min) + " and " +
                              FormatDuration(kMaxDuration) + ", got " + Describe(*node));
      }
      d = std::chrono::seconds(seconds->get());
    } else if (const toml::value<std::string>* text = node->as_string()) {
      std::string reason;
      if (!ParseDuration(text->get(), d, reason)) return Fail(name, reason);
    } else {
      return Fail(name, "must be a duration like \"90s\", \"30m\", \"4h\" or \"1d\", got " +
                            Describe(*node));
    }
    if (d < min) {
      return Fail(name, "must be a duration between " + FormatDuration(min) + " and " +
                            FormatDuration(kMaxDuration) + ", got " + Describe(*node));
    }
    out = d;
    return true;
  }

  bool LoadGlobal(const toml::table& t, GlobalConfig& g) {
    const std::string p = "global";
    if (!CheckKnownKeys(t, p,
                        {"max_spi", "max_queue", "cookie_threshold", "control_socket", "leases_file", "lease_db", "tun_name",
                         "listen", "ike_port", "natt_port", "spi_reserve_percent", "metrics_listen",
                         "max_rekeys_per_second", "max_dpd_per_second", "ike_workers", "datapath_threads",
                         "crypto_engine",
                         "crypto_stall_timeout", "fragment_size", "udp_offload", "tun_offload",
                         "retransmit_timeout", "retransmit_tries", "half_open_timeout",
                         "user", "socket_group"})) {
      return false;
    }
    constexpr std::int64_t kU32Max = std::numeric_limits<std::uint32_t>::max();
    if (!GetInteger(t, p, "max_spi", kMinMaxSpi, kMaxMaxSpi, g.max_spi) ||
        !GetInteger(t, p, "max_queue", 1, kU32Max, g.max_queue) ||
        !GetInteger(t, p, "spi_reserve_percent", 0, 50, g.spi_reserve_percent) ||
        !GetInteger(t, p, "max_rekeys_per_second", 0, 1000000, g.max_rekeys_per_second) ||
        !GetInteger(t, p, "max_dpd_per_second", 0, 1000000, g.max_dpd_per_second) ||
        !GetInteger(t, p, "ike_workers", 0, 256, g.ike_workers) ||
        !GetInteger(t, p, "datapath_threads", 0, kMaxDatapathThreads, g.datapath_threads) ||
        !GetInteger(t, p, "cookie_threshold", 0, kU32Max, g.cookie_threshold) ||
        !GetInteger(t, p, "ike_port", 1, 65535, g.ike_port) ||
        !GetInteger(t, p, "natt_port", 1, 65535, g.natt_port) ||
        !GetString(t, p, "control_socket", g.control_socket) ||
        !GetString(t, p, "leases_file", g.leases_file) ||
        !GetString(t, p, "lease_db", g.lease_db) ||
        !GetString(t, p, "tun_name", g.tun_name) || !GetString(t, p, "listen", g.listen) ||
        !GetString(t, p, "metrics_listen", g.metrics_listen) ||
        !GetInteger(t, p, "crypto_stall_timeout", 1, 10000, g.crypto_stall_timeout_ms) ||
        !GetInteger(t, p, "retransmit_timeout", 10, 60000, g.retransmit_timeout_ms) ||
        !GetInteger(t, p, "retransmit_tries", 0, 10, g.retransmit_tries) ||
        !GetInteger(t, p, "half_open_timeout", 100, 600000, g.half_open_timeout_ms) ||
        !GetInteger(t, p, "fragment_size", kMinFragmentSize, 65535, g.fragment_size) ||
        !GetString(t, p, "crypto_engine", g.crypto_engine) ||
        !GetBool(t, p, "udp_offload", g.udp_offload) ||
        !GetBool(t, p, "tun_offload", g.tun_offload) || !GetUserAndGroup(t, g)) {
      return false;
    }
    if (g.crypto_engine != "inline" && g.crypto_engine != "async" && g.crypto_engine != "fault") {
      return Fail("global.crypto_engine",
                  "must be \"inline\", \"async\" or \"fault\" (tests only), got \"" +
                      g.crypto_engine + "\"");
    }
    if (g.natt_port == g.ike_port) {
      return Fail("global.natt_port", "must differ from global.ike_port (" +
                                          std::to_string(g.ike_port) + ")");
    }
    if (g.control_socket.empty() || g.control_socket.size() >= sizeof(sockaddr_un{}.sun_path)) {
      return Fail("global.control_socket",
                  "must be a path of 1 to " + std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) +
                      " bytes, got \"" + g.control_socket + "\"");
    }
    if (g.tun_name.empty() || g.tun_name.size() > kMaxTunNameBytes) {
      return Fail("global.tun_name", "must be an interface name of 1 to " +
                                         std::to_string(kMaxTunNameBytes) + " bytes, got \"" +
                                         g.tun_name + "\"");
    }
    if (!IsAddressLiteral(g.listen)) {
      return Fail("global.listen", "must be an IPv4 or IPv6 address (like \"0.0.0.0\" or \"::\"), got \"" +
                                       g.listen + "\"");
    }
    if (!g.metrics_listen.empty()) {
      // "ADDRESS:PORT", IPv6 in brackets.
      const std::string& m = g.metrics_listen;
      const bool v6 = m.starts_with("[");
      const std::size_t colon = v6 ? m.find("]:") : m.rfind(':');
      const std::string host = colon == std::string::npos ? "" : m.substr(v6 ? 1 : 0, colon - (v6 ? 1 : 0));
      const std::string port = colon == std::string::npos ? "" : m.substr(colon + (v6 ? 2 : 1));
      const bool numeric = !port.empty() && port.size() <= 5 &&
                           port.find_first_not_of("0123456789") == std::string::npos;
      if (host.empty() || !IsAddressLiteral(host) || (host.find(':') != std::string::npos) != v6 ||
          !numeric || std::stoi(port) < 1 || std::stoi(port) > 65535) {
        return Fail("global.metrics_listen",
                    "must be \"ADDRESS:PORT\" (like \"127.0.0.1:9187\" or \"[::1]:9187\", port 1 to "
                    "65535) or empty for off, got \"" + m + "\"");
      }
    }
    return true;
  }

  // global.user and global.socket_group name an existing user and group.
  bool GetUserAndGroup(const toml::table& t, GlobalConfig& g) {
    bool present = false;
    if (!GetString(t, "global", "user", g.user, &present)) return false;
    std::string why;
    if (present && g.user.empty()) {
      return Fail("global.user", "must be a user name (or \"root\" to keep running as root), got \"\"");
    }
    if (present && !ResolveRunAs(g.user, &why)) return Fail("global.user", why);
    if (!GetString(t, "global", "socket_group", g.socket_group, &present)) return false;
    if (present && g.socket_group.empty()) {
      return Fail("global.socket_group", "must be a group name (or remove the key for no group)");
    }
    if (present && !ResolveGroup(g.socket_group, &why)) return Fail("global.socket_group", why);
    return true;
  }

  // A file holding secrets that group or others may read (SecretFileProblem) is refused.
  bool CheckSecretFile(const std::string& key, const std::string& path, const struct stat& st) {
    const std::string problem = SecretFileProblem(st.st_mode, st.st_gid, daemon_gid_);
    if (problem.empty()) return true;
    return Fail(key, "\"" + path + "\": " + problem);
  }

  bool GetAddresses(const toml::table& t, const std::string& p, std::string_view key,
                    std::vector<std::string>& out) {
    std::string text;
    bool present = false;
    if (!GetString(t, p, key, text, &present)) return false;
    if (!present) return true;
    const std::string name = p + "." + std::string(key);
    std::vector<std::string> addresses;
    for (std::string_view item : SplitList(text)) {
      if (item != "%any" && !IsAddressLiteral(item)) {
        return Fail(name, "\"" + std::string(item) +
                              "\" is not an IPv4 or IPv6 address (or \"%any\")");
      }
      addresses.emplace_back(item);
    }
    if (addresses.empty()) {
      return Fail(name, "must not be empty (an address, or \"%any\")");
    }
    out = std::move(addresses);
    return true;
  }

  bool GetProposals(const toml::table& t, const std::string& p, std::string_view key,
                    std::string& out) {
    std::string text;
    bool present = false;
    if (!GetString(t, p, key, text, &present)) return false;
    if (!present) return true;
    const std::vector<std::string_view> items = SplitList(text);
    if (items.empty()) return Fail(p + "." + std::string(key), "must not be empty");
    if (std::find(items.begin(), items.end(), std::string_view{}) != items.end()) {
      return Fail(p + "." + std::string(key), "empty proposal in the comma-separated list \"" +
                                                  text + "\"");
    }
    out = std::string(Trim(text));
    return true;
  }

  // `allow_weak`, then the proposals checked against it: a weak transform not allowed is an
  // error naming it; the default proposals gain the allowed ones in a last proposal.
  bool GetWeakTransforms(const toml::table& t, const std::string& p, ConnectionConfig& c) {
    std::string text;
    bool present = false;
    if (!GetString(t, p, "allow_weak", text, &present)) return false;
    const std::string key = p + ".allow_weak";
    const auto is_weak = [](std::string_view w) {
      return std::find(std::begin(kWeakTransforms), std::end(kWeakTransforms), w) !=
             std::end(kWeakTransforms);
    };
    const auto allowed = [&](std::string_view w) {
      return std::find(c.allow_weak.begin(), c.allow_weak.end(), w) != c.allow_weak.end();
    };
    if (present) {
      for (std::string_view item : SplitList(text)) {
        if (!is_weak(item)) {
          return Fail(key, "\"" + std::string(item) +
                               "\" is not a weak transform that can be allowed (\"modp1024\", "
                               "\"3des\")");
        }
        if (allowed(item)) return Fail(key, "\"" + std::string(item) + "\" listed twice");
        c.allow_weak.emplace_back(item);
      }
    }
    for (std::string_view proposals_key : {"ike_proposals", "esp_proposals"}) {
      const std::string_view proposals =
          proposals_key == "ike_proposals" ? c.ike_proposals : c.esp_proposals;
      std::size_t pos = 0;
      while (pos < proposals.size()) {
        const std::size_t end = std::min(proposals.find_first_of(",-", pos), proposals.size());
        const std::string_view word = Trim(proposals.substr(pos, end - pos));
        pos = end + 1;
        if (is_weak(word) && !allowed(word)) {
          return Fail(p + "." + std::string(proposals_key),
                      "'" + std::string(word) +
                          "' is a weak transform (RFC 8247), refused unless allow_weak names it "
                          "(allow_weak = \"" + std::string(word) + "\")");
        }
      }
    }
    if (c.allow_weak.empty() || t.contains("ike_proposals")) return true;
    // A last IKE proposal with the allowed weak transforms beside secure ones: every secure
    // proposal is preferred, so a peer offering both still gets a secure choice.
    c.ike_proposals += std::string(", aes256-aes128") + (allowed("3des") ? "-3des" : "") +
                       "-sha256-sha1-modp2048-ecp256-ecp384" +
                       (allowed("modp1024") ? "-modp1024" : "");
    return true;
  }

  bool GetSelectors(const toml::table& t, const std::string& p, std::string_view key,
                    std::vector<TrafficSelector>& out) {
    std::string text;
    if (!GetString(t, p, key, text)) return false;
    std::string reason;
    if (!ParseTrafficSelectors(text, out, reason)) return Fail(p + "." + std::string(key), reason);
    return true;
  }

  // `psk` or `psk_file`, exactly one. The secret's copy in the TOML tree is wiped.
  bool GetPsk(toml::table& t, const std::string& p, SecretString& out) {
    toml::node* psk = t.get("psk");
    toml::node* file = t.get("psk_file");
    if (psk != nullptr && file != nullptr) {
      return Fail(p + ".psk_file", "set either psk or psk_file, not both");
    }
    if (psk != nullptr) {
      if (!psk->is_string()) return Fail(p + ".psk", "must be a string");
      std::string& value = psk->as_string()->get();
      if (value.empty()) return Fail(p + ".psk", "must not be empty");
      out = SecretString(value);
      WipeString(value);
      return true;
    }
    if (file == nullptr) {
      return Fail(p + ".psk", "required (the pre-shared key, or psk_file = \"/path\")");
    }
    if (!file->is_string()) {
      return Fail(p + ".psk_file", "must be a string, got " + Describe(*file));
    }
    std::filesystem::path path(file->as_string()->get());
    if (path.is_relative()) path = std::filesystem::path(source_).parent_path() / path;
    std::string secret;
    std::string reason;
    struct stat st {};
    if (!ReadSmallFile(path.string(), kMaxPskFileBytes, secret, reason, &st)) {
      return Fail(p + ".psk_file", "\"" + path.string() + "\": " + reason);
    }
    if (!CheckSecretFile(p + ".psk_file", path.string(), st)) {
      WipeString(secret);
      return false;
    }
    if (!secret.empty() && secret.back() == '\n') secret.pop_back();
    if (!secret.empty() && secret.back() == '\r') secret.pop_back();
    if (secret.empty()) {
      return Fail(p + ".psk_file", "\"" + path.string() + "\" holds an empty key");
    }
    out = SecretString(secret);
    WipeString(secret);
    return true;
  }

  // local_auth/remote_auth and the certificates they need, loaded now: a bad file is an error
  // of the key that names it.
  bool GetAuth(const toml::table& t, const std::string& p, ConnectionConfig& c) {
    const auto kind = [&](std::string_view key, AuthKind& out) {
      std::string text;
      bool present = false;
      if (!GetString(t, p, key, text, &present)) return false;
      if (!present || text == "psk") return true;
      if (text == "pubkey") {
        out = AuthKind::kPubkey;
        return true;
      }
      if (text == "eap-mschapv2") {
        out = AuthKind::kEapMschapV2;
        return true;
      }
      if (text == "eap-tls" || text == "eap-radius") {
        if (key == "local_auth") {
          return Fail(p + ".local_auth", "\"" + text + "\" is for remote_auth (spigot logs in with \"eap-mschapv2\" only)");
        }
        out = text == "eap-tls" ? AuthKind::kEapTls : AuthKind::kEapRadius;
        return true;
      }
      return Fail(p + "." + std::string(key),
                  "must be \"psk\", \"pubkey\", \"eap-mschapv2\", \"eap-tls\" or \"eap-radius\", got \"" + text + "\"");
    };
    if (!kind("local_auth", c.local_auth) || !kind("remote_auth", c.remote_auth)) return false;
    if (!GetString(t, p, "eap_id", c.eap_id)) return false;
    if (c.local_auth == AuthKind::kEapMschapV2 && c.eap_id.empty()) {
      return Fail(p + ".eap_id", "required with local_auth = \"eap-mschapv2\" (the user name; its secret is the [[eap_user]] of that id)");
    }
    if (c.local_auth != AuthKind::kEapMschapV2 && !c.eap_id.empty()) {
      return Fail(p + ".eap_id", "set, but local_auth is not \"eap-mschapv2\"");
    }
    const bool remote_eap = c.remote_auth == AuthKind::kEapMschapV2 || c.remote_auth == AuthKind::kEapTls ||
                            c.remote_auth == AuthKind::kEapRadius;
    if (c.local_auth == AuthKind::kEapMschapV2 && remote_eap) {
      return Fail(p + ".remote_auth", "EAP on both sides: the responder must prove itself with \"pubkey\" or \"psk\"");
    }
    const auto path = [&](std::string_view key, std::string& out) {
      bool present = false;
      if (!GetString(t, p, key, out, &present)) return false;
      if (present && out.empty()) return Fail(p + "." + std::string(key), "must not be empty");
      if (present && std::filesystem::path(out).is_relative()) {
        out = (std::filesystem::path(source_).parent_path() / out).string();
      }
      return true;
    };
    const auto paths = [&](std::string_view key, std::vector<std::string>& out) {
      std::vector<std::string> names;
      if (!GetNames(t, p, key, names)) return false;
      for (auto& n : names) {
        out.push_back(std::filesystem::path(n).is_relative() ? (std::filesystem::path(source_).parent_path() / n).string() : n);
      }
      return true;
    };
    if (!path("local_cert", c.local_cert) || !path("local_key", c.local_key) || !paths("ca_certs", c.ca_certs) ||
        !paths("crl_files", c.crl_files) || !GetBool(t, p, "rsa_pss", c.rsa_pss)) {
      return false;
    }
    std::string error;
    if (c.local_auth == AuthKind::kPubkey) {
      if (c.local_cert.empty()) return Fail(p + ".local_cert", "required with local_auth = \"pubkey\" (a PEM certificate file)");
      if (c.local_key.empty()) return Fail(p + ".local_key", "required with local_auth = \"pubkey\" (a PEM private key file)");
      // A missing file is left to the loader below, which says so.
      if (struct stat st {}; stat(c.local_key.c_str(), &st) == 0 && !CheckSecretFile(p + ".local_key", c.local_key, st)) {
        return false;
      }
      c.credentials = pki::LocalCredentials::Load(c.local_cert, c.local_key, &error);
      if (!c.credentials) {
        const bool key_problem = error.rfind(c.local_key, 0) == 0;
        return Fail(p + (key_problem ? ".local_key" : ".local_cert"), error);
      }
    } else if (!c.local_cert.empty() || !c.local_key.empty()) {
      return Fail(p + (c.local_cert.empty() ? ".local_key" : ".local_cert"), "set, but local_auth is not \"pubkey\"");
    }
    if (c.remote_auth == AuthKind::kEapTls && c.local_auth != AuthKind::kPubkey) {
      return Fail(p + ".local_auth", "must be \"pubkey\" with remote_auth = \"eap-tls\" (local_cert is the gateway's TLS certificate)");
    }
    if (c.remote_auth == AuthKind::kPubkey || c.remote_auth == AuthKind::kEapTls) {
      if (c.ca_certs.empty()) {
        return Fail(p + ".ca_certs", std::string("required with remote_auth = \"") +
                                         (c.remote_auth == AuthKind::kPubkey ? "pubkey" : "eap-tls") +
                                         "\" (PEM files of trusted CAs)");
      }
      c.trust = pki::TrustStore::Load(c.ca_certs, c.crl_files, &error);
      if (!c.trust) {
        const bool crl = std::any_of(c.crl_files.begin(), c.crl_files.end(), [&](const std::string& f) { return error.rfind(f, 0) == 0; });
        return Fail(p + (crl ? ".crl_files" : ".ca_certs"), error);
      }
    } else if (!c.ca_certs.empty() || !c.crl_files.empty()) {
      return Fail(p + (c.ca_certs.empty() ? ".crl_files" : ".ca_certs"), "set, but remote_auth is not \"pubkey\" or \"eap-tls\"");
    }
    return true;
  }

  bool LoadConnection(toml::table& t, std::size_t index, ConnectionConfig& c) {
    const std::string p = "connection[" + std::to_string(index) + "]";
    if (!CheckKnownKeys(t, p,
                        {"allow_weak",  // weak transforms for old clients
                         "name", "local_addrs", "remote_addrs", "local_id", "remote_id", "psk",
                         "psk_file", "ike_proposals", "esp_proposals", "local_ts", "remote_ts",
                         "start_action", "ike_rekey_time", "child_rekey_time", "ike_lifetime",
                         "child_lifetime", "child_life_bytes", "child_life_packets", "replay_window",
                         "dpd_delay", "unique", "pools", "vips", "fragmentation", "local_auth", "eap_id",
                         "remote_auth", "local_cert", "local_key", "ca_certs", "crl_files", "rsa_pss", "mobike"})) {
      return false;
    }

    if (!GetString(t, p, "name", c.name)) return false;
    if (c.name.empty()) return Fail(p + ".name", "required (a unique, non-empty name)");

    if (!GetAddresses(t, p, "local_addrs", c.local_addrs) ||
        !GetAddresses(t, p, "remote_addrs", c.remote_addrs)) {
      return false;
    }
    if (c.remote_addrs.empty()) {
      return Fail(p + ".remote_addrs",
                  "required (the peer's address, or \"%any\" to accept any peer)");
    }

    if (!GetAuth(t, p, c)) return false;
    const bool uses_psk = c.local_auth == AuthKind::kPsk || c.remote_auth == AuthKind::kPsk;
    if (!GetString(t, p, "local_id", c.local_id) || !GetString(t, p, "remote_id", c.remote_id) ||
        ((uses_psk || t.get("psk") != nullptr || t.get("psk_file") != nullptr) && !GetPsk(t, p, c.psk)) ||
        !GetProposals(t, p, "ike_proposals", c.ike_proposals) ||
        !GetProposals(t, p, "esp_proposals", c.esp_proposals) ||
        !GetSelectors(t, p, "local_ts", c.local_ts) || !GetNames(t, p, "pools", c.pools) ||
        !GetRemoteSelectors(t, p, c) || !GetVips(t, p, c.vips)) {
      return false;
    }
    if (!GetWeakTransforms(t, p, c)) return false;

    std::string action;
    bool has_action = false;
    if (!GetString(t, p, "start_action", action, &has_action)) return false;
    if (has_action) {
      if (action == "none") {
        c.start_action = StartAction::kNone;
      } else if (action == "start") {
        c.start_action = StartAction::kStart;
      } else if (action == "trap") {
        c.start_action = StartAction::kTrap;
      } else {
        return Fail(p + ".start_action", "must be \"none\", \"start\" or \"trap\", got \"" +
                                             action + "\"");
      }
    }

    std::string unique;
    bool has_unique = false;
    if (!GetString(t, p, "unique", unique, &has_unique)) return false;
    if (has_unique) {
      if (unique == "no") {
        c.unique = Unique::kNo;
      } else if (unique == "keep") {
        c.unique = Unique::kKeep;
      } else if (unique == "replace") {
        c.unique = Unique::kReplace;
      } else {
        return Fail(p + ".unique", "must be \"no\", \"keep\" or \"replace\", got \"" + unique + "\"");
      }
    }

    std::string fragmentation;
    bool has_fragmentation = false;
    if (!GetString(t, p, "fragmentation", fragmentation, &has_fragmentation)) return false;
    if (has_fragmentation) {
      if (fragmentation == "yes") {
        c.fragmentation = true;
      } else if (fragmentation == "no") {
        c.fragmentation = false;
      } else {
        return Fail(p + ".fragmentation",
                    "must be \"yes\" or \"no\" (strongSwan's \"accept\" and \"force\" are not "
                    "supported), got \"" + fragmentation + "\"");
      }
    }

    if (!GetBool(t, p, "mobike", c.mobike)) return false;

    constexpr std::chrono::seconds kOneSecond{1};
    bool has_ike_lifetime = false;
    bool has_child_lifetime = false;
    if (!GetDuration(t, p, "ike_rekey_time", kOneSecond, c.ike_rekey_time) ||
        !GetDuration(t, p, "child_rekey_time", kOneSecond, c.child_rekey_time) ||
        !GetDuration(t, p, "ike_lifetime", kOneSecond, c.ike_lifetime, &has_ike_lifetime) ||
        !GetDuration(t, p, "child_lifetime", kOneSecond, c.child_lifetime, &has_child_lifetime) ||
        !GetDuration(t, p, "dpd_delay", std::chrono::seconds{0}, c.dpd_delay)) {
      return false;
    }
    if (!ResolveLifetime(p, "ike", c.ike_rekey_time, has_ike_lifetime, c.ike_lifetime) ||
        !ResolveLifetime(p, "child", c.child_rekey_time, has_child_lifetime, c.child_lifetime)) {
      return false;
    }

    return GetInteger(t, p, "child_life_bytes", 0, std::numeric_limits<std::int64_t>::max(),
                      c.child_life_bytes) &&
           GetInteger(t, p, "child_life_packets", 0, std::numeric_limits<std::int64_t>::max(),
                      c.child_life_packets) &&
           GetInteger(t, p, "replay_window", kMinReplayWindow, kMaxReplayWindow,
                      c.replay_window);
  }

  // A comma-separated list of names (`pools`); absent keeps `out` empty.
  bool GetNames(const toml::table& t, const std::string& p, std::string_view key,
                std::vector<std::string>& out) {
    std::string text;
    bool present = false;
    if (!GetString(t, p, key, text, &present)) return false;
    if (!present) return true;
    const std::string name = p + "." + std::string(key);
    const std::vector<std::string_view> items = SplitList(text);
    if (items.empty()) return Fail(name, "must not be empty (comma-separated [[pool]] names)");
    for (std::string_view item : items) {
      if (item.empty()) return Fail(name, "empty entry in the comma-separated list");
      out.emplace_back(item);
    }
    return true;
  }

  // remote_ts: selectors, or "dynamic" (the peer's virtual IP), which is also the default for a
  // connection with pools. Call after `pools` is read.
  bool GetRemoteSelectors(const toml::table& t, const std::string& p, ConnectionConfig& c) {
    std::string text;
    bool present = false;
    if (!GetString(t, p, "remote_ts", text, &present)) return false;
    if (!present) {
      c.remote_ts_dynamic = !c.pools.empty();
      return true;
    }
    const std::vector<std::string_view> items = SplitList(text);
    if (std::find(items.begin(), items.end(), "dynamic") != items.end()) {
      if (items.size() != 1) {
        return Fail(p + ".remote_ts", "\"dynamic\" cannot be combined with other selectors");
      }
      c.remote_ts_dynamic = true;
      return true;
    }
    std::string reason;
    if (!ParseTrafficSelectors(text, c.remote_ts, reason)) return Fail(p + ".remote_ts", reason);
    return true;
  }

  // vips: "0.0.0.0", "::" or both, each at most once.
  bool GetVips(const toml::table& t, const std::string& p, std::vector<AddressFamily>& out) {
    std::string text;
    bool present = false;
    if (!GetString(t, p, "vips", text, &present)) return false;
    if (!present) return true;
    const auto fail = [&] {
      return Fail(p + ".vips", "must be \"0.0.0.0\", \"::\" or \"0.0.0.0, ::\", got \"" + text +
                                   "\"");
    };
    std::vector<AddressFamily> families;
    for (std::string_view item : SplitList(text)) {
      AddressFamily family{};
      if (item == "0.0.0.0") {
        family = AddressFamily::kIpv4;
      } else if (item == "::") {
        family = AddressFamily::kIpv6;
      } else {
        return fail();
      }
      if (std::find(families.begin(), families.end(), family) != families.end()) return fail();
      families.push_back(family);
    }
    if (families.empty()) return fail();
    out = std::move(families);
    return true;
  }

  bool LoadEapUser(const toml::table& t, std::size_t index, const std::vector<EapUserConfig>& before,
                   EapUserConfig& user) {
    const std::string p = "eap_user[" + std::to_string(index) + "]";
    if (!CheckKnownKeys(t, p, {"id", "secret"})) return false;
    if (!GetString(t, p, "id", user.id)) return false;
    if (user.id.empty() || user.id.size() > 255) return Fail(p + ".id", "required (the user name, 1-255 octets)");
    for (const auto& u : before) {
      if (u.id == user.id) return Fail(p + ".id", "\"" + user.id + "\" is already an eap_user");
    }
    const toml::node* secret = t.get("secret");
    if (secret == nullptr || !secret->is_string() || secret->as_string()->get().empty()) {
      return Fail(p + ".secret", "required (the user's password, a non-empty string)");
    }
    user.secret = SecretString(secret->as_string()->get());
    return true;
  }

  bool LoadRadius(toml::table& t, RadiusConfig& r) {
    const std::string p = "radius";
    if (!CheckKnownKeys(t, p, {"servers", "secret", "timeout", "retries", "max_requests", "nas_identifier"})) {
      return false;
    }
    std::vector<std::string> servers;
    if (!GetNames(t, p, "servers", servers)) return false;
    if (servers.empty()) return Fail(p + ".servers", "required (\"192.0.2.10:1812\", comma-separated, tried in order)");
    for (const auto& text : servers) {
      RadiusServerConfig server;
      std::string reason;
      if (!ParseRadiusServer(text, server, reason)) return Fail(p + ".servers", "\"" + text + "\": " + reason);
      r.servers.push_back(std::move(server));
    }
    toml::node* secret = t.get("secret");
    if (secret == nullptr || !secret->is_string() || secret->as_string()->get().empty()) {
      return Fail(p + ".secret", "required (the RADIUS shared secret, a non-empty string)");
    }
    r.secret = SecretString(secret->as_string()->get());
    WipeString(secret->as_string()->get());
    if (!GetDuration(t, p, "timeout", std::chrono::seconds{1}, r.timeout)) return false;
    if (r.timeout < std::chrono::seconds{1} || r.timeout > std::chrono::seconds{30}) {
      return Fail(p + ".timeout", "must be between 1s and 30s");
    }
    if (!GetInteger(t, p, "retries", 0, 10, r.retries) || !GetInteger(t, p, "max_requests", 1, 1 << 20, r.max_requests) ||
        !GetString(t, p, "nas_identifier", r.nas_identifier)) {
      return false;
    }
    if (r.nas_identifier.size() > 253) return Fail(p + ".nas_identifier", "at most 253 octets (one RADIUS attribute)");
    return true;
  }

  // "192.0.2.10", "192.0.2.10:1812", "2001:db8::10", "[2001:db8::10]:1812".
  static bool ParseRadiusServer(const std::string& text, RadiusServerConfig& out, std::string& reason) {
    std::string address = text;
    std::string port;
    if (!text.empty() && text.front() == '[') {
      const auto close = text.find(']');
      if (close == std::string::npos) return (reason = "missing ']'", false);
      address = text.substr(1, close - 1);
      if (close + 1 < text.size()) {
        if (text[close + 1] != ':') return (reason = "expected ':' and a port after ']'", false);
        port = text.substr(close + 2);
      }
    } else if (std::count(text.begin(), text.end(), ':') == 1) {
      address = text.substr(0, text.find(':'));
      port = text.substr(text.find(':') + 1);
    }
    in6_addr a6{};
    in_addr a4{};
    if (inet_pton(AF_INET, address.c_str(), &a4) != 1 && inet_pton(AF_INET6, address.c_str(), &a6) != 1) {
      return (reason = "not an IPv4 or IPv6 address (host names are not resolved)", false);
    }
    out.address = address;
    if (!port.empty()) {
      unsigned long n = 0;
      const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), n);
      if (ec != std::errc() || end != port.data() + port.size() || n == 0 || n > 65535) {
        return (reason = "port must be 1-65535", false);
      }
      out.port = static_cast<std::uint16_t>(n);
    }
    return true;
  }

  bool LoadPool(const toml::table& t, std::size_t index, PoolConfig& pool) {
    const std::string p = "pool[" + std::to_string(index) + "]";
    if (!CheckKnownKeys(t, p, {"name", "addrs", "dns", "split_include"})) return false;

    if (!GetString(t, p, "name", pool.name)) return false;
    if (pool.name.empty()) return Fail(p + ".name", "required (a unique, non-empty name)");

    std::string addrs;
    if (!GetString(t, p, "addrs", addrs)) return false;
    if (Trim(addrs).empty()) {
      return Fail(p + ".addrs", "required (a CIDR like \"198.18.0.0/16\" or a range like "
                                "\"198.18.0.10-198.18.0.200\")");
    }
    std::string reason;
    if (!ParsePoolAddrs(addrs, pool, reason)) return Fail(p + ".addrs", reason);

    std::string dns;
    if (!GetString(t, p, "dns", dns)) return false;
    for (std::string_view item : SplitList(dns)) {
      if (item.empty()) return Fail(p + ".dns", "empty entry in the comma-separated list");
      if (!IsAddressLiteral(item)) {
        return Fail(p + ".dns", "\"" + std::string(item) + "\" is not an IPv4 or IPv6 address");
      }
      pool.dns.emplace_back(item);
    }
    return GetSelectors(t, p, "split_include", pool.split_include);
  }

  // What only the whole file can tell: unique pool names, pools apart from each other and from
  // the gateway's own networks, and every connection's pools defined.
  bool CheckPools(const Config& config) {
    const std::vector<PoolConfig>& pools = config.pools;
    for (std::size_t i = 0; i < pools.size(); ++i) {
      for (std::size_t j = 0; j < i; ++j) {
        if (pools[j].name == pools[i].name) {
          return Fail("pool[" + std::to_string(i) + "].name",
                      "\"" + pools[i].name + "\" is already used by pool[" + std::to_string(j) +
                          "]");
        }
      }
    }
    for (std::size_t i = 0; i < pools.size(); ++i) {
      for (std::size_t j = 0; j < i; ++j) {
        if (pools[j].family == pools[i].family &&
            PoolRangesOverlap(pools[i].first, pools[i].last, pools[j].first, pools[j].last)) {
          return Fail("pool[" + std::to_string(i) + "].addrs",
                      pools[i].RangeString() + " overlaps pool[" + std::to_string(j) + "] (\"" +
                          pools[j].name + "\", " + pools[j].RangeString() + ")");
        }
      }
    }
    // A selector of length 0 (a full tunnel, "0.0.0.0/0") covers every pool by design; any
    // other overlap would route road warriors' addresses into the gateway's own networks.
    for (std::size_t i = 0; i < pools.size(); ++i) {
      for (std::size_t k = 0; k < config.connections.size(); ++k) {
        for (const TrafficSelector& ts : config.connections[k].local_ts) {
          if (ts.family != pools[i].family || ts.prefix_len == 0) continue;
          std::array<std::uint8_t, 16> ts_last = ts.network;
          for (std::size_t bit = ts.prefix_len; bit < ts.address_length() * 8; ++bit) {
            ts_last[bit / 8] |= static_cast<std::uint8_t>(0x80u >> (bit % 8));
          }
          if (PoolRangesOverlap(pools[i].first, pools[i].last, ts.network, ts_last)) {
            return Fail("pool[" + std::to_string(i) + "].addrs",
                        pools[i].RangeString() + " overlaps connection[" + std::to_string(k) +
                            "].local_ts " + ts.ToString() +
                            " (virtual IPs must lie outside the gateway's own networks)");
          }
        }
      }
    }
    for (std::size_t k = 0; k < config.connections.size(); ++k) {
      for (const std::string& name : config.connections[k].pools) {
        if (config.FindPool(name) == nullptr) {
          return Fail("connection[" + std::to_string(k) + "].pools",
                      "\"" + name + "\" is not the name of a [[pool]]");
        }
      }
    }
    return true;
  }

  // The hard lifetime defaults to rekey_time * 1.1, rounded up; a configured one must leave
  // time for the rekey.
  bool ResolveLifetime(const std::string& p, const std::string& kind, std::chrono::seconds rekey,
                       bool configured, std::chrono::seconds& lifetime) {
    if (!configured) {
      lifetime = rekey + (rekey + std::chrono::seconds{9}) / 10;
      return true;
    }
    if (lifetime <= rekey) {
      return Fail(p + "." + kind + "_lifetime", "must be longer than " + kind + "_rekey_time (" +
                                                    FormatDuration(rekey) + "), got " +
                                                    FormatDuration(lifetime));
    }
    return true;
  }

  bool CheckUniqueNames(const std::vector<ConnectionConfig>& connections) {
    std::map<std::string_view, std::size_t> first;
    for (std::size_t i = 0; i < connections.size(); ++i) {
      const auto [it, inserted] = first.emplace(connections[i].name, i);
      if (!inserted) {
        return Fail("connection[" + std::to_string(i) + "].name",
                    "\"" + connections[i].name + "\" is already used by connection[" +
                        std::to_string(it->second) + "]");
      }
    }
    return true;
  }

  std::string source_;
  std::string error_;
  gid_t daemon_gid_ = 0;  // the group secret files may be readable by (config/run_as.h)
};

}  // namespace

LoadResult LoadString(std::string_view toml_text, const std::string& source_name) {
  LoadResult result;
  toml::table root;
  try {
    root = toml::parse(toml_text, source_name);
  } catch (const toml::parse_error& e) {
    result.error = source_name + ":" + std::to_string(e.source().begin.line) + ":" +
                   std::to_string(e.source().begin.column) + ": " + std::string(e.description());
    return result;
  }
  Loader loader(source_name);
  result.ok = loader.Load(root, result.config);
  if (!result.ok) {
    result.config = Config{};
    result.error = loader.error();
  }
  return result;
}

LoadResult LoadFile(const std::string& path) {
  std::string data;
  std::string reason;
  struct stat st {};
  if (!ReadSmallFile(path, kMaxConfigFileBytes, data, reason, &st)) {
    LoadResult result;
    result.error = path + ": " + reason;
    return result;
  }
  LoadResult result = LoadString(data, path);
  WipeString(data);  // it may hold a psk
  if (result.ok) {
    // The file may hold PSKs, EAP and RADIUS secrets: checked against the group of the user
    // it names.
    const std::string problem =
        SecretFileProblem(st.st_mode, st.st_gid, DaemonGroupFor(result.config.global.user));
    if (!problem.empty()) {
      result = LoadResult{};
      result.error = path + ": " + problem;
    }
  }
  return result;
}

ConfigDiff Diff(const Config& before, const Config& after) {
  ConfigDiff diff;
  for (const ConnectionConfig& c : after.connections) {
    const ConnectionConfig* old = before.FindConnection(c.name);
    if (old == nullptr) {
      diff.added.push_back(c.name);
    } else if (!(*old == c)) {
      diff.changed.push_back(c.name);
    }
  }
  for (const ConnectionConfig& c : before.connections) {
    if (after.FindConnection(c.name) == nullptr) diff.removed.push_back(c.name);
  }

  diff.pools_changed = before.pools != after.pools;
  diff.radius_changed = before.radius != after.radius;

  const GlobalConfig& a = before.global;
  const GlobalConfig& b = after.global;
  diff.limits_changed = a.max_spi != b.max_spi || a.max_queue != b.max_queue ||
                        a.cookie_threshold != b.cookie_threshold ||
                        a.spi_reserve_percent != b.spi_reserve_percent ||
                        a.max_rekeys_per_second != b.max_rekeys_per_second ||
                        a.max_dpd_per_second != b.max_dpd_per_second;
  const auto restart_if = [&](bool differs, const char* key) {
    if (differs) diff.restart_required.push_back(key);
  };
  restart_if(a.control_socket != b.control_socket, "global.control_socket");
  restart_if(a.tun_name != b.tun_name, "global.tun_name");
  restart_if(a.listen != b.listen, "global.listen");
  restart_if(a.ike_port != b.ike_port, "global.ike_port");
  restart_if(a.natt_port != b.natt_port, "global.natt_port");
  restart_if(a.ike_workers != b.ike_workers, "global.ike_workers");
  restart_if(a.datapath_threads != b.datapath_threads, "global.datapath_threads");
  restart_if(a.crypto_engine != b.crypto_engine, "global.crypto_engine");
  restart_if(a.crypto_stall_timeout_ms != b.crypto_stall_timeout_ms, "global.crypto_stall_timeout");
  restart_if(a.udp_offload != b.udp_offload, "global.udp_offload");
  restart_if(a.metrics_listen != b.metrics_listen, "global.metrics_listen");
  restart_if(a.tun_offload != b.tun_offload, "global.tun_offload");
  restart_if(a.lease_db != b.lease_db, "global.lease_db");
  restart_if(a.user != b.user, "global.user");
  restart_if(a.socket_group != b.socket_group, "global.socket_group");
  return diff;
}

}  // namespace spigot::config
