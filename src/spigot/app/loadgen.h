// `spigot loadgen`: one process acting as many IKEv2 initiators against one responder (a spigot
// or a strongSwan), for load tests (DESIGN.md, the CLI contract; issue 5). Each initiator has
// its own IKE SPI, identity FQDN "<id_prefix>-<i>" and (up to the fd limit) source port,
// authenticates with the PSK and sets up one CHILD SA; with --cert/--key all of them log in
// with that one certificate under one identity (its subject DN, or --id), so the responder
// must allow duplicate identities, and --ca checks the responder's certificate
// (loadgen/auth.h); the work is spread over worker threads
// (loadgen/worker.h), the figures merged into one report. With --vips they are road warriors
// (issue 11): each asks for a virtual IP, and with --traffic pings --traffic-dst from it through
// its own CHILD SA; the report adds the addresses (how many, all distinct?) and the delivery
// (peers with all / some / none of their replies, requests and replies). With --move-to the
// whole crowd changes address at once (a mobility storm; loadgen/worker.h).
#pragma once

#include <cstdint>
#include <string>

namespace spigot::app {

struct LoadgenOptions {
  std::string target;            // the responder's address: IKE on UDP 500, NAT-T on 4500
  std::string psk;  // required when either side authenticates with it (loadgen/auth.h)
  // Certificate login: our certificate chain (PEM, end entity first, intermediates after) and
  // key; the CA(s) the responder's certificate must chain to; our identity ("": the subject DN).
  std::string cert;
  std::string key;
  std::string ca;
  std::string id;
  // EAP-MSCHAPv2 login: every initiator as this user (loadgen/auth.h).
  std::string eap_id;
  std::string eap_secret;
  std::uint32_t ike_sas = 0;     // initiators
  double rate = 100;             // new initiators started per second
  std::string child_rekey_time;  // rekey each CHILD SA this often (less up to 10% jitter); "": never
  // How long the run lasts from the first IKE_SA_INIT, at least until every initiator has been
  // established or has failed. "0": end then.
  std::string duration = "0";
  bool json = false;
  std::string ike_proposals = "aes128gcm16-prfsha256-x25519";
  std::string esp_proposals = "aes128gcm16";
  std::string local_ts;   // comma-separated CIDRs; "": every address of the target's family
  std::string remote_ts;  // (the responder narrows them to its own)
  std::string id_prefix = "loadgen";
  std::string source;       // our address; "": the one the route to the target uses
  std::uint32_t threads = 0;  // 0: std::thread::hardware_concurrency()
  // Road warriors: every initiator asks for an IPv4 virtual IP (CFG_REQUEST) ...
  bool vips = false;
  // ... and with `traffic` sends `packets` ICMP echo requests from it to `traffic_dst` through
  // its own CHILD SA (ESP in UDP to the target's port 4500), counting the replies.
  bool traffic = false;
  std::uint32_t packets = 5;
  std::uint32_t traffic_interval_ms = 50;  // between one initiator's echo requests, 1-60000
  std::string traffic_dst;
  // Mobility (RFC 4555): once every initiator is up and `move_after_ms` more have passed, all of
  // them move at once to this address of ours (one the host has) and tell the responder with
  // UPDATE_SA_ADDRESSES; the report adds how many moved, were answered and (with traffic) got
  // replies at the new address, and how long that took. "": no move.
  std::string move_to;
  std::uint32_t move_after_ms = 1000;
};

// Prints progress to stderr once a second and the report to stdout (one JSON object with
// `json`). SIGINT/SIGTERM end the run early; either way the IKE SAs are deleted politely at the
// end. Exit code: 0 every initiator was established and none failed (with vips: each got a
// distinct address; with traffic: each got every reply), 1 otherwise, 2 bad
// options or setup (sockets, addresses).
int RunLoadgen(const LoadgenOptions& options);

}  // namespace spigot::app
