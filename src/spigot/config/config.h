// The TOML configuration (DESIGN.md "Configuration (TOML) — a contract"): load, validate, diff.
//
// Loading never throws. Every error names the file, the key and the reason:
//   "spigot.toml: global.max_spi: must be an integer between 256 and 16777216, got -5"
//   "spigot.toml: connection[2].esp_proposals: must not be empty"
// Connections and pools are numbered from 0 in file order, as TOML arrays are. Unknown keys are
// errors, so a typo is never silently ignored.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "spigot/config/traffic_selector.h"
#include "spigot/pki/certificate.h"

namespace spigot::config {

// A string that is overwritten with zeros when destroyed or replaced (STYLE.md 9). Never
// printed by this module.
class SecretString {
 public:
  SecretString() = default;
  explicit SecretString(std::string value) : value_(std::move(value)) {}
  SecretString(const SecretString& other) : value_(other.value_) {}
  SecretString& operator=(const SecretString& other);
  ~SecretString() { Wipe(); }

  std::string_view view() const { return value_; }
  bool empty() const { return value_.empty(); }
  bool operator==(const SecretString& other) const { return value_ == other.value_; }

 private:
  void Wipe();
  std::string value_;
};

// Wipes `s` in place (volatile writes the compiler may not drop).
void WipeString(std::string& s);

// The smallest global.fragment_size: room for every IKE suite's headers, IV and ICV over IPv6
// plus some content (ike::kMinFragmentSize, which gateway/connections.cc checks against).
inline constexpr std::uint32_t kMinFragmentSize = 160;

// The most data-path threads: the kernel's limit on TUN queues (MAX_TAP_QUEUES).
inline constexpr std::uint32_t kMaxDatapathThreads = 256;

struct GlobalConfig {
  std::uint32_t max_spi = 1048576;        // SPI pool size, 256..16777216 (2^24 slots)
  std::uint32_t max_queue = 65536;        // negotiation queue depth, >= 1
  std::uint32_t spi_reserve_percent = 5;  // share of max_spi only rekeys may use, 0..50
  std::uint32_t max_rekeys_per_second = 0;  // CHILD rekeys started per second; 0: derived
  // Dead peer detection probes started per second; 0: ten times max_rekeys_per_second.
  std::uint32_t max_dpd_per_second = 0;
                                            // from the measured DH capacity at startup
  std::uint32_t ike_workers = 0;          // threads for IKE's DH work, 0..256; 0: one per core
  // Data-path threads, each with its own TUN queue and UDP 4500 socket and serving both
  // directions, 0..kMaxDatapathThreads; 0: one per core. Restart to change.
  std::uint32_t datapath_threads = 0;
  std::uint32_t cookie_threshold = 1000;  // half-open IKE SAs before cookies are demanded
  std::string control_socket = "/run/spigot/spigot.sock";
  // Least privilege (config/run_as.h): once its sockets and devices are open the daemon
  // switches to `user` keeping only CAP_NET_ADMIN. Empty: "spigot" when that user exists, else
  // it stays root and logs why; "root": stays root. Restart to change.
  std::string user;
  // May run the read-only control commands (stats, sas, leases, doctor); the socket file gets
  // this group and mode 0660. Empty: no group, mode 0600 (root and `user` only).
  std::string socket_group;
  // Where virtual IP leases (identity -> address) are kept across restarts; empty: nowhere.
  std::string leases_file;
  // The lease database (SQLite, WAL; gateway/lease_store.h): every lease committed before the
  // CFG_REPLY that carries it, so a crash (kill -9) loses none; empty: none. Read at start.
  std::string lease_db;
  std::string tun_name = "spigot0";       // at most 15 bytes (IFNAMSIZ - 1)
  std::string listen = "0.0.0.0";         // an IPv4 or IPv6 address literal
  // Prometheus GET /metrics on "ADDRESS:PORT" ("[IPV6]:PORT"); empty: off. Restart to change.
  std::string metrics_listen;
  std::uint16_t ike_port = 500;
  std::uint16_t natt_port = 4500;
  // The data path's AEAD work: "inline" (intel-ipsec-mb on the data-path threads), "async"
  // (a lookaside engine on worker threads, under the stall watchdog), or "fault" (async with
  // a fault switch, `spigot debug crypto-fault`: for tests only).
  std::string crypto_engine = "inline";
  // A job not completed this long after submission marks the engine stalled, 1..10000 ms.
  std::uint32_t crypto_stall_timeout_ms = 50;
  // RFC 7296 2.1 / 2.4, ike::ConnectionParams: the first resend of an unanswered IKE request
  // after retransmit_timeout ms (10..60000), doubling, retransmit_tries resends (0..10) before
  // the exchange is given up; a responder's IKE SA without IKE_AUTH dies half_open_timeout ms
  // (100..600000) after IKE_SA_INIT. Applied on reload to new IKE SAs.
  std::uint32_t retransmit_timeout_ms = 1000;
  std::uint32_t retransmit_tries = 5;
  std::uint32_t half_open_timeout_ms = 30000;
  // IKE fragmentation (RFC 7383): the largest IP datagram (IP, UDP and non-ESP marker included,
  // 2.5.1) a protected IKE message may take before it is sent as fragments, on connections with
  // `fragmentation = "yes"`. kMinFragmentSize..65535; applied on reload to new IKE SAs.
  std::uint32_t fragment_size = 1280;
  // UDP GSO and GRO on UDP 4500 where the kernel has them (io/udp_socket.h); false: one
  // datagram per message both ways, as a kernel without them. Read at start.
  bool udp_offload = true;
  // TUN offloads (io/tun.h): TSO/USO super-segments read and split, TCP segments coalesced
  // into super-segments on write, checksums left to us; false: one packet per read and write,
  // as a kernel without them. Read at start.
  bool tun_offload = true;

  bool operator==(const GlobalConfig&) const = default;
};

enum class StartAction : std::uint8_t {
  kNone,   // wait for the peer or `spigot initiate`
  kStart,  // initiate when the daemon starts (or the connection is added by a reload)
  kTrap,   // initiate when the first matching packet arrives (acquire)
};
const char* ToString(StartAction a);

// What a responder does when a peer authenticates with an identity that already has an IKE SA
// on the same connection (strongSwan's `unique`). INITIAL_CONTACT from the peer (RFC 7296 2.4:
// "this is the only IKE SA between us", sent after the peer lost its state) always replaces.
enum class Unique : std::uint8_t {
  kNo,       // keep both, unless the new one carries INITIAL_CONTACT
  kKeep,     // refuse the new one, unless it carries INITIAL_CONTACT
  kReplace,  // delete the old one
};
const char* ToString(Unique u);

// Default proposals (strongSwan syntax). The first of each is what spigot has always offered,
// so two spigots agree on it as before; the others are there for the native clients.
inline constexpr std::string_view kDefaultIkeProposals =
    "aes128gcm16-prfsha256-x25519, "
    "aes256gcm16-aes128gcm16-prfsha384-prfsha256-x25519-ecp256-ecp384-modp2048-modp3072-modp4096, "
    "aes256-aes128-sha256-sha384-sha512-sha1-x25519-ecp256-ecp384-modp2048-modp3072-modp4096";
inline constexpr std::string_view kDefaultEspProposals =
    "aes128gcm16, aes256gcm16-chacha20poly1305, aes256-aes128-sha256-sha1";
// The weak transforms allow_weak may name (strongSwan's keywords).
inline constexpr std::string_view kWeakTransforms[] = {"modp1024", "3des"};

// "eap-mschapv2": as remote_auth (responder), EAP-MSCHAPv2 against [[eap_user]] entries; as
// local_auth (initiator), logging in as eap_id with the [[eap_user]] of that id.
// "eap-tls" (remote_auth only): EAP-TLS, the user's certificate checked against ca_certs, the
// gateway's TLS certificate its local_cert (local_auth = "pubkey").
// "eap-radius" (remote_auth only): every EAP packet passed to the [radius] servers.
enum class AuthKind : std::uint8_t { kPsk, kPubkey, kEapMschapV2, kEapTls, kEapRadius };

struct ConnectionConfig {
  std::string name;  // required, unique
  // Address literals (IPv4/IPv6), or "%any". local_addrs defaults to "%any"; remote_addrs is
  // required ("%any" for a responder that accepts any peer).
  std::vector<std::string> local_addrs{"%any"};
  std::vector<std::string> remote_addrs;
  std::string local_id;   // empty: the local address
  std::string remote_id;  // empty: the peer's address
  SecretString psk;       // from `psk`, or read from `psk_file` (one trailing newline stripped)
  // strongSwan proposal syntax, comma-separated, as written (the IKE module parses them). Every
  // entry is non-empty. The defaults take what the native IKEv2 clients of Windows 10/11,
  // macOS/iOS and Android send, as far as it is secure (RFC 8247): AEADs first, then AES-CBC
  // with HMAC-SHA-2/SHA-1; Curve25519, ECP-256/384 and MODP-2048/3072/4096. kDefault* below.
  std::string ike_proposals{kDefaultIkeProposals};
  std::string esp_proposals{kDefaultEspProposals};
  // Weak transforms (RFC 8247) this connection may negotiate: "modp1024" and/or "3des"
  // (strongSwan's keywords), in the order written, each at most once. A proposal naming one
  // that is not listed is an error; without explicit ike_proposals, the defaults gain a last IKE
  // proposal with them. Peers offering them otherwise are refused with NO_PROPOSAL_CHOSEN,
  // logged and counted (stats: ike.weak_proposals_refused).
  std::vector<std::string> allow_weak;
  // Empty: host-to-host between the tunnel addresses.
  std::vector<TrafficSelector> local_ts;
  std::vector<TrafficSelector> remote_ts;
  StartAction start_action = StartAction::kNone;
  Unique unique = Unique::kReplace;
  std::chrono::seconds ike_rekey_time{4 * 3600};
  std::chrono::seconds child_rekey_time{3600};
  // Hard limits, after which the SA is deleted whatever the rekey did. Default: rekey time *
  // 1.1 (rounded up). Always greater than the rekey time.
  std::chrono::seconds ike_lifetime{4 * 3960};
  std::chrono::seconds child_lifetime{3960};
  // Volume lifetimes of a CHILD SA, both directions together (0: no limit): at 80-90 % (random)
  // it is rekeyed, at the limit deleted.
  std::uint64_t child_life_bytes = 0;
  std::uint64_t child_life_packets = 0;
  std::uint32_t replay_window = 1024;  // 64..65536 packets
  std::chrono::seconds dpd_delay{30};  // 0: no dead peer detection

  // Remote access, responder side: the [[pool]]s (by name, each one exists) a peer's
  // CFG_REQUEST is served from, tried in order.
  std::vector<std::string> pools;
  // `remote_ts = "dynamic"`: the peer's traffic is narrowed to its virtual IP (remote_ts stays
  // empty). The default when `pools` is set and remote_ts is absent.
  bool remote_ts_dynamic = false;
  // Remote access, initiator side: the families to ask a virtual IP for (`vips = "0.0.0.0"`,
  // `"::"` or `"0.0.0.0, ::"`), in the order written, each at most once.
  std::vector<AddressFamily> vips;
  // IKE fragmentation (RFC 7383), strongSwan's `fragmentation`: "yes" (default) offers and
  // accepts it in IKE_SA_INIT and fragments protected messages above global.fragment_size;
  // "no" neither offers nor accepts it (fragments from the peer are dropped).
  bool fragmentation = true;
  // MOBIKE (RFC 4555), strongSwan's `mobike`: true (default) announces and accepts
  // MOBIKE_SUPPORTED in IKE_AUTH; a peer that moves then tells us with UPDATE_SA_ADDRESSES
  // (and RFC 7296 2.23's following of NAT mappings is off for that IKE SA, as 4555 3.5 says).
  bool mobike = true;

  // Authentication (RFC 7296 2.15), strongSwan's names: each side "psk" (default) or "pubkey"
  // (a signature with a certificate's key; RSA or ECDSA). psk/psk_file is required only when a
  // side uses it.
  AuthKind local_auth = AuthKind::kPsk;
  std::string eap_id;  // local_auth "eap-mschapv2": who we log in as
  AuthKind remote_auth = AuthKind::kPsk;
  // local_auth "pubkey": local_cert (PEM, the certificate first, intermediates after it) and
  // local_key, loaded and checked to match at load; read again by every load (a reload picks up
  // a renewed certificate).
  std::string local_cert;
  std::string local_key;
  std::shared_ptr<const pki::LocalCredentials> credentials;
  // remote_auth "pubkey": ca_certs (comma-separated PEM files of CAs) a peer's certificate must
  // chain to, and crl_files (optional) revoking certificates under them.
  std::vector<std::string> ca_certs;
  std::vector<std::string> crl_files;
  std::shared_ptr<const pki::TrustStore> trust;
  // RSA keys sign with RSASSA-PSS (RFC 7427) rather than PKCS#1 v1.5 where the peer takes it.
  bool rsa_pss = false;

  bool operator==(const ConnectionConfig&) const = default;
};

// A virtual IP address pool ([[pool]]): the addresses handed to road warriors in CFG_REPLY.
//
// `addrs` is a CIDR or an inclusive range "first-last" of one family. A CIDR loses the
// addresses no host may have: for IPv4 with a prefix length <= 30 the network and broadcast
// addresses, for IPv6 with a prefix length <= 126 the first (the subnet-router anycast address,
// RFC 4291 2.6.1); a /31, /32, /127 or /128 is used whole. first <= last always holds, and no
// two pools share an address.
struct PoolConfig {
  std::string name;  // required, unique among pools
  AddressFamily family = AddressFamily::kIpv4;
  // Network byte order, bytes [0, 4) for IPv4, [0, 16) for IPv6; the rest zero. Inclusive.
  std::array<std::uint8_t, 16> first{};
  std::array<std::uint8_t, 16> last{};
  std::vector<std::string> dns;                 // address literals (INTERNAL_IP4/6_DNS)
  std::vector<TrafficSelector> split_include;   // INTERNAL_IP4/6_SUBNET

  std::size_t address_length() const { return family == AddressFamily::kIpv4 ? 4 : 16; }
  // "198.18.0.1-198.18.255.254".
  std::string RangeString() const;
  bool operator==(const PoolConfig&) const = default;
};

// [[eap_user]]: a local EAP-MSCHAPv2 user. The secret is never printed or logged.
struct EapUserConfig {
  std::string id;
  SecretString secret;
  bool operator==(const EapUserConfig&) const = default;
};

// [radius]: the RADIUS servers behind remote_auth = "eap-radius" (RFC 2865, RFC 3579).
struct RadiusServerConfig {
  std::string address;  // an IPv4 or IPv6 literal
  std::uint16_t port = 1812;
  bool operator==(const RadiusServerConfig&) const = default;
};
struct RadiusConfig {
  std::vector<RadiusServerConfig> servers;  // "192.0.2.10:1812, [2001:db8::10]:1812", tried in order
  SecretString secret;                      // shared with every server; never printed or logged
  std::chrono::seconds timeout{2};          // per transmission
  std::uint32_t retries = 3;                // retransmissions per server before the next one
  std::uint32_t max_requests = 4096;        // RADIUS requests in flight, all logins together
  std::string nas_identifier = "spigot";
  bool configured() const { return !servers.empty(); }
  bool operator==(const RadiusConfig&) const = default;
};

struct Config {
  GlobalConfig global;
  RadiusConfig radius;
  std::vector<ConnectionConfig> connections;
  std::vector<PoolConfig> pools;  // in file order
  std::vector<EapUserConfig> eap_users;  // in file order, ids unique

  // nullptr when there is no connection of that name.
  const ConnectionConfig* FindConnection(std::string_view name) const;
  // nullptr when there is no pool of that name.
  const PoolConfig* FindPool(std::string_view name) const;
  bool operator==(const Config&) const = default;
};

struct LoadResult {
  bool ok = false;
  Config config;      // valid iff ok
  std::string error;  // iff !ok: "<file>: <key>: <reason>"
};

// Reads and validates the file at `path`. A relative psk_file is resolved against the
// directory of `path`.
LoadResult LoadFile(const std::string& path);

// Validates TOML text. `source_name` is used in error messages and, as for LoadFile, its
// directory resolves relative psk_file paths.
LoadResult LoadString(std::string_view toml_text, const std::string& source_name);

// What `spigot reload` must do to go from `before` to `after`.
struct ConfigDiff {
  std::vector<std::string> added;    // connection names only in `after`
  std::vector<std::string> removed;  // connection names only in `before`
  std::vector<std::string> changed;  // in both, with any setting different
  // max_spi, max_queue or cookie_threshold differ: applied on reload.
  bool limits_changed = false;
  // Any [[pool]] added, removed or changed: the address pools are re-applied on reload
  // (gateway::AddressPools::Apply keeps the leases that still fit).
  bool pools_changed = false;
  // [radius] differs: the RADIUS client takes the new servers and secret for new requests.
  bool radius_changed = false;
  // Other global keys that differ ("global.listen", ...): these take effect only after a
  // restart.
  std::vector<std::string> restart_required;

  bool empty() const {
    return added.empty() && removed.empty() && changed.empty() && !limits_changed &&
           !pools_changed && !radius_changed && restart_required.empty();
  }
};
ConfigDiff Diff(const Config& before, const Config& after);

}  // namespace spigot::config
