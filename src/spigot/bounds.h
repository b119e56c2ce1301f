// Every bound on a queue, table, buffer or rate in the daemon, in one place (as WireGuard's
// messages.h keeps its limits): the fixed ones' values, which the modules take from here, and
// for every bound — fixed or configured — what happens when it is full and which counter says
// so. `spigot stats` shows each bound's limit, its use now and what it has dropped, refused,
// evicted or held, under "bounds" (control/gateway_commands.cc builds it from kBounds; a test
// checks that every row is there).
//
// Policies, in the words used below:
//   refuse    - the new item is not taken; the sender retries (IKE peers retransmit) or fails
//   evict     - an older or lower-priority item makes room and is dropped
//   drop      - the packet or datagram is dropped
//   hold      - nothing is dropped: the producer waits (work stays in an upstream queue that has
//               its own bound)
//   defer     - the work is done later, at the rate the bound allows
//   inline    - the work is done on the calling thread instead of being handed off
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace spigot::bounds {

// ---- IKE (per IKE SA)
// Requests an IKE SA has waiting behind the one in flight (2.3: one at a time).
inline constexpr std::size_t kIkeRequestQueue = 32;
// Fragments of one IKE message (RFC 7383), and the bytes a reassembly may hold.
inline constexpr std::size_t kIkeFragmentsPerMessage = 128;
inline constexpr std::size_t kIkeReassemblyBytes = 32 * 1024;
// CERT payloads past the end-entity certificate that are used to build the chain, and the
// CERTREQ data kept from a peer (64 SHA-1 key ids).
inline constexpr std::size_t kPeerIntermediates = 8;
inline constexpr std::size_t kPeerCertReqBytes = 1280;
// MOBIKE (RFC 4555 3.6): additional addresses of the peer kept (and of ours announced).
inline constexpr std::size_t kMobikePeerAddresses = 16;

// ---- control thread
// Callbacks other threads may queue for the control thread (io::EventLoop::Post).
inline constexpr std::size_t kControlPosts = 4096;
// Jobs the IKE worker pool takes per thread (running and waiting).
inline constexpr std::size_t kIkeJobsPerWorker = 4;
// Datagrams an IKE SA keeps for after its work on an IKE worker (a response to our request, a
// retransmitted fragment...); the peer's window of one request bounds what is legitimate.
inline constexpr std::size_t kIkeOffloadHeld = 4;
// Control socket: clients at once, and the longest request line.
inline constexpr std::size_t kControlClients = 64;
inline constexpr std::size_t kControlRequestBytes = 64 * 1024;
// Prometheus /metrics: connections at once.
inline constexpr std::size_t kMetricsConnections = 32;
// Parsed certificates kept (least recently used evicted).
inline constexpr std::size_t kCertificateCache = 4096;
// Identities with failed EAP logins remembered for the login back-off.
inline constexpr std::size_t kEapLoginTable = 65536;

// ---- data path
// Commands (SA installs, removals, moves) queued for each data-path thread.
inline constexpr std::size_t kDataplaneMailbox = 65536;
// Commands waiting on the control thread for room in a full mailbox. Above this the gateway
// starts no new negotiation (new IKE SAs and IKE_AUTHs stay in the negotiation queue) until the
// data path has caught up; rekeys and deletes of established SAs go on.
inline constexpr std::size_t kDataplaneBacklog = 65536;
// Inbound ESP datagrams handed to the data-path thread that owns their SA (datapath/handoff.h),
// per thread: 512 x 4 KiB = 2 MiB each. A power of two.
inline constexpr std::size_t kHandoffQueue = 512;
// Packets in the crypto engine's ring per data-path thread (async and fault engines).
inline constexpr std::size_t kCryptoRing = 1024;
// Packets of CBC + HMAC SAs whose cipher steps run together through intel-ipsec-mb's
// multi-buffer lanes (esp::CryptoBatch), without an engine; a full batch runs at once.
inline constexpr std::size_t kMultiBufferBatch = 64;
// Packets held while an acquire's negotiation runs: per policy, in bytes, policies at once,
// and for how long.
inline constexpr std::size_t kAcquirePacketsPerPolicy = 32;
inline constexpr std::size_t kAcquireBytes = 4 * 1024 * 1024;
inline constexpr std::size_t kAcquirePolicies = 16384;
inline constexpr std::chrono::seconds kAcquireMaxAge{30};

struct Bound {
  std::string_view name;    // the key under "bounds" in `spigot stats`
  std::string_view limit;   // where the limit comes from: a config key or a constant above
  std::string_view policy;  // what happens when it is full
  std::string_view counter; // what counts it, as a path in `spigot stats`
};

inline constexpr std::array kBounds = {
    Bound{"negotiation_queue", "global.max_queue",
          "evict the newest lower-priority item, else refuse the arrival (STATUS_IPSEC_QUEUE_OVERFLOW); the peer "
          "retransmits",
          "queue_overflows, queue.evicted, queue.overflows_by_priority"},
    Bound{"spi_pool", "global.max_spi (rekeys alone may use the last spi_reserve_percent)",
          "refuse: the negotiation is answered with TEMPORARY_FAILURE (new SAs first, rekeys only when it is full)",
          "bounds.spi_pool.dropped (new and rekey refusals)"},
    Bound{"half_open_ike_sas", "global.cookie_threshold",
          "refuse statelessly: new IKE_SA_INITs must return a COOKIE (RFC 7296 2.6)", "ike.cookies_sent"},
    Bound{"ike_request_queue", "kIkeRequestQueue per IKE SA",
          "refuse: the request (a rekey, delete or probe) is given up and retried by its timer",
          "bounds.ike_request_queue.dropped"},
    Bound{"ike_fragments", "kIkeFragmentsPerMessage, kIkeReassemblyBytes per message",
          "drop the fragment, or the whole reassembly when it grows too large",
          "ike.fragments.dropped.too_many, ike.fragments.dropped.too_large"},
    Bound{"ike_workers", "global.ike_workers x kIkeJobsPerWorker",
          "hold new IKE_SA_INITs in the negotiation queue; IKE_AUTH, EAP-TLS, PFS and IKE rekey work runs inline",
          "bounds.ike_workers.dropped (refused hand-offs), ike.auth_inline, ike.eap_inline, "
          "ike.child_pfs_inline, ike.ike_rekey_inline"},
    Bound{"ike_offload_held", "kIkeOffloadHeld per IKE SA",
          "drop: a datagram for an IKE SA whose work runs on a worker, past those kept for after it",
          "ike.offload.held_dropped"},
    Bound{"mobike_peer_addresses", "kMobikePeerAddresses per IKE SA",
          "drop the addresses past it (the announcement's first ones are kept)",
          "ike.mobike.address_list_overflow"},
    Bound{"control_posts", "kControlPosts",
          "refuse: each poster has its fallback (IKE on 4500 dropped and counted, acquires failed, RADIUS "
          "run inline)",
          "bounds.control_posts.dropped, packets_dropped.ike_forward_refused"},
    Bound{"dataplane_mailbox", "kDataplaneMailbox per data-path thread",
          "hold: the command waits on the control thread (dataplane_backlog) and is never dropped",
          "bounds.dataplane_backlog"},
    Bound{"dataplane_backlog", "kDataplaneBacklog",
          "hold: above it no new negotiation starts until the data path catches up",
          "bounds.dataplane_backlog.dropped (times new negotiations were held)"},
    Bound{"handoff", "kHandoffQueue per data-path thread (datapath_threads > 1)",
          "hold the sender up to 50 ms (it serves its own ring meanwhile), then drop the datagram; "
          "drop one larger than 4 KiB", "datapath.handoff_dropped"},
    Bound{"crypto_ring", "kCryptoRing per data-path thread (async and fault engines)",
          "drop the packet", "crypto_engine.ring_full"},
    Bound{"multibuffer_batch", "kMultiBufferBatch per data-path thread",
          "inline: a full batch is sealed or opened at once (the packets waiting for it are bounded by "
          "the thread's receive or TUN read batch), nothing is dropped",
          "none (never drops)"},
    Bound{"acquire_hold", "kAcquirePacketsPerPolicy, kAcquireBytes, kAcquirePolicies, kAcquireMaxAge",
          "drop the newest packet (tail drop); after the age, the held packets", "packets_dropped.no_sa_queue_full, "
          "packets_dropped.acquire_failed"},
    Bound{"radius_requests", "radius.max_requests",
          "refuse: the login fails (EAP failure)", "radius.refused_full"},
    Bound{"eap_login_table", "kEapLoginTable",
          "evict the least recently failed identity", "ike.eap_logins.backoff.evicted"},
    Bound{"control_clients", "kControlClients",
          "refuse: the newcomer is answered with an error and closed", "bounds.control_clients.dropped"},
    Bound{"certificate_cache", "kCertificateCache",
          "evict the least recently used certificate (it is parsed again when next seen)",
          "bounds.certificate_cache.dropped"},
};

}  // namespace spigot::bounds
