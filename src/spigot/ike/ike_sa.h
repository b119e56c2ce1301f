// One IKE SA and the CHILD SAs it negotiates (RFC 7296), as a state machine that knows
// nothing of sockets or threads: it is fed datagrams and the time, and acts through an
// IkeSaHost (send, allocate SPIs, install and remove CHILD SAs). The daemon, the load
// generator and the tests are hosts.
//
// Exchanges: IKE_SA_INIT (with COOKIE and INVALID_KE_PAYLOAD retries), IKE_AUTH with PSK, the
// configuration payload that assigns a road warrior its internal address (2.19, 3.15; the
// addresses come from the host) and the first CHILD SA, CREATE_CHILD_SA (new CHILD SA, CHILD SA rekey with optional PFS),
// INFORMATIONAL (DELETE of CHILD and IKE SAs, liveness checks). Message-ID windows are 1 both
// ways (2.3): one request of ours in flight, further ones wait in a bounded queue.
//
// Timers (all driven by the `now` passed in, never by a clock of our own):
//   retransmit  - a request of ours not yet answered: resend after retransmit_timeout, then
//                 twice as long each time (1, 2, 4, 8, 16 s by default, +-10% jitter); when
//                 the last of retransmit_tries resends goes unanswered (32 s after it by
//                 default) the exchange is given up (IkeCounters::gave_up) and the IKE SA is
//                 dead (2.1, 2.4).
//   half_open   - a responder's IKE SA that got no IKE_AUTH within half_open_timeout is dead.
//   rekeyed     - the old IKE SA of a rekey we answered (2.18): its DELETE is the peer's to
//                 send. If none came within the retransmission schedule's whole span, it was
//                 lost (or the peer never got our answer and gave up): the old SA goes by
//                 itself (IkeCounters::rekeyed_expired), holding nothing (its CHILD SAs moved).
//   liveness    - established and nothing heard from the peer for dpd_delay: send an empty
//                 INFORMATIONAL; its retransmission timeout declares the peer dead (2.4).
//   child_rekey - a CHILD SA reached its soft lifetime (child_rekey_time less up to 10%
//                 random jitter, so SAs set up together do not rekey together): rekey it.
//   child_life  - a CHILD SA reached its hard lifetime without being replaced: delete it
//                 (once: from then on only the DELETE's retransmit timer runs).
//   ike_rekey   - the IKE SA reached ike_rekey_time (less jitter): rekey it (2.18); refused
//                 with TEMPORARY_FAILURE (a simultaneous rekey): again 2-5 s later.
//   reassembly  - the first fragment of a message the peer sent fragmented (RFC 7383) was
//                 stored kReassemblyTimeout ago and the message is still incomplete: free it.
//
// Fragmentation (RFC 7383): negotiated in IKE_SA_INIT (IKEV2_FRAGMENTATION_SUPPORTED, both
// roles) when the connection allows it; from then on a protected message larger than
// fragment_size goes out as Encrypted Fragment payloads, built once and retransmitted as the
// same set (the same IVs), and the peer's fragments are reassembled under the bounds of
// fragments.h. Rekeyed IKE SAs inherit it.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "spigot/bounds.h"
#include "spigot/crypto/dh.h"
#include "spigot/eap/eap.h"
#include "spigot/eap/eap_tls.h"
#include "spigot/ike/address.h"
#include "spigot/ike/fragments.h"
#include "spigot/ike/identity.h"
#include "spigot/ike/keys.h"
#include "spigot/ike/message.h"
#include "spigot/ike/proposal.h"
#include "spigot/io/clock.h"
#include "spigot/pki/certificate.h"
#include "spigot/pki/names.h"
#include "spigot/pki/signature.h"

namespace spigot::ike {

// Times come from an io::Clock (the daemon's, a test's FakeClock) and are passed in.
using TimePoint = io::Clock::TimePoint;

// What the IKE SA needs of a configured connection.
// 2.15: how one side proves its identity.
enum class AuthMethod : std::uint8_t {
  kPsk,     // AUTH = the PSK's MAC
  kPubkey,  // AUTH = a signature (pki/signature.h), CERT payloads carry the certificate chain
  // 2.16. remote_auth, responder: the initiator sends no AUTH in its first IKE_AUTH; we
  // authenticate ourselves (local_auth) and run the EAP server that eap_server makes (a local
  // method or RADIUS, eap/eap.h) over further IKE_AUTH exchanges; both final AUTH payloads
  // are MACs keyed with the EAP MSK.
  // local_auth, initiator: EAP-MSCHAPv2 from the client's side, as eap_id with eap_secret.
  kEap,
};

// What an EAP server of one login is told about it (remote_auth kEap).
struct EapServerContext {
  std::string server_name;  // our IKE identity, as text
  Address local;            // the addresses of the IKE SA (RADIUS Called-/Calling-Station-Id)
  Address peer;
  eap::ServerSession::Admission admit;  // the brute-force back-off
};
using EapServerFactory = std::function<std::unique_ptr<eap::ServerSession>(const EapServerContext&)>;
// EAP-MSCHAPv2 against local users ([[eap_user]]).
EapServerFactory LocalMschapV2Servers(std::shared_ptr<const eap::Users> users);
// EAP-TLS (eap/eap_tls.h): every login a session on the connection's one TLS context.
EapServerFactory EapTlsServers(std::shared_ptr<const eap::TlsServerContext> tls);

struct ConnectionParams {
  // remote_id exactly, "%any", or a DN pattern with wildcards ("C=CH, O=Example, CN=*").
  bool AcceptsPeer(const Identity& id) const {
    if (remote_id_any || SameIdentity(id, remote_id)) return true;
    return remote_id_pattern && id.type == IdType::kDerAsn1Dn && remote_id_pattern->Matches(id.data);
  }
  std::string name;
  Identity local_id;
  Identity remote_id;
  bool remote_id_any = false;  // remote_id "%any": any identity that proves the PSK
  crypto::SecureBytes psk;
  AuthMethod local_auth = AuthMethod::kPsk;
  AuthMethod remote_auth = AuthMethod::kPsk;
  // local_auth kPubkey: our certificate, its intermediates and key.
  std::shared_ptr<const pki::LocalCredentials> local_credentials;
  // remote_auth kPubkey: the CAs (and CRLs) a peer's certificate must chain to; their key ids
  // go out in CERTREQ (3.7).
  std::shared_ptr<const pki::TrustStore> trust;
  std::optional<pki::DnPattern> remote_id_pattern;
  bool rsa_pss = false;  // sign with RSASSA-PSS when the peer takes RFC 7427 signatures
  // remote_auth kEap: makes the EAP server of each login.
  EapServerFactory eap_server;
  // local_auth kEap (initiator): our EAP identity and password.
  std::string eap_id;
  crypto::SecureBytes eap_secret;
  bool uses_pubkey() const { return local_auth == AuthMethod::kPubkey || remote_auth == AuthMethod::kPubkey; }
  std::vector<Proposal> ike_proposals;
  std::vector<Proposal> esp_proposals;
  std::vector<TrafficSelector> local_ts;
  std::vector<TrafficSelector> remote_ts;
  std::chrono::seconds dpd_delay{30};
  // Lifetimes; 0 disables. Soft ones are shortened by up to rekey_jitter, at random.
  std::chrono::seconds ike_rekey_time{0};
  std::chrono::seconds child_rekey_time{0};
  std::chrono::seconds child_lifetime{0};
  double rekey_jitter = 0.10;
  // The host starts CHILD rekeys itself (spread by engine::RekeyScheduler); the IKE SA then
  // only reports soft deadlines (ChildSaInfo::rekey_at) and keeps the hard lifetimes.
  bool host_schedules_rekeys = false;
  // Remote access (RFC 7296 2.19, 3.15).
  // Initiator: the address families (4, 6; others are ignored) to ask the responder an
  // internal address for. Then IKE_AUTH carries CP(CFG_REQUEST) and proposes TSi
  // 0.0.0.0-255.255.255.255 and/or ::-ffff:...:ffff in place of local_ts, and the CHILD SAs
  // stand for the assigned addresses; a response without one fails the first CHILD SA.
  std::vector<std::uint8_t> vips;
  // Responder: the peer's selectors are the virtual IPs it was assigned (IkeSa::virtual_ips()),
  // not remote_ts ("remote_ts = dynamic"). A peer that sends no CFG_REQUEST gets no CHILD SA.
  bool remote_ts_dynamic = false;
  // RFC 7383: offer and accept IKE fragmentation; once both sides have, protected messages
  // whose IP datagram would exceed fragment_size octets (IP, UDP and non-ESP marker included,
  // 2.5.1) are sent fragmented.
  bool fragmentation = true;
  std::size_t fragment_size = kDefaultFragmentSize;
  // RFC 4555: announce and accept MOBIKE_SUPPORTED in IKE_AUTH.
  bool mobike = true;
  // RFC 7296 2.1 and 2.4: the retransmission schedule of our requests. The first resend comes
  // retransmit_timeout after the request, each next one after twice the wait before (+-10%
  // jitter); once retransmit_tries resends have gone unanswered for as long again, the exchange
  // is given up and with it the IKE SA.
  std::chrono::milliseconds retransmit_timeout{1000};
  int retransmit_tries = 5;
  // A responder's IKE SA that got no IKE_AUTH this long after IKE_SA_INIT is dead (2.4's
  // half-open SAs, which cost state and count toward cookie_threshold).
  std::chrono::milliseconds half_open_timeout{30000};
  // From the request to the give-up when nothing is answered: retransmit_timeout * (2^(tries+1)
  // - 1), before jitter (63 s by default).
  std::chrono::milliseconds RetransmitSpan() const {
    return retransmit_timeout * ((std::int64_t{1} << (retransmit_tries + 1)) - 1);
  }
  // RFC 4555 3.6: the addresses we can be reached on for this connection (ports unused), in
  // order; with MOBIKE the ones other than the IKE SA's own go to the peer as ADDITIONAL_IP4/6_
  // ADDRESS (at most kMobikeAddresses), NO_ADDITIONAL_ADDRESSES when there are none. Empty:
  // not known (local_addrs "%any" on a wildcard listen), nothing is announced.
  std::vector<Address> local_addresses;
  // RFC 4555 3.5, 3.7: after the peer's UPDATE_SA_ADDRESSES moves the IKE SA, check the new
  // address with COOKIE2 before the CHILD SAs send ESP there.
  bool mobike_return_routability = true;
};

// Responder: what IkeSaHost::AssignVirtualIps answers for a peer's CFG_REQUEST (3.15, 3.15.4).
enum class CpResult : std::uint8_t {
  kNotServed,  // no pools here: the request is ignored, no CP in the reply (3.15.4)
  kAssigned,   // VirtualIps filled in: CP(CFG_REPLY) in the IKE_AUTH response
  kFailed,     // no address could be assigned: INTERNAL_ADDRESS_FAILURE, no CHILD SA
};

// The configuration a responder grants a peer (3.15.1).
struct VirtualIps {
  // One host selector (a single address, any protocol and port) per family granted; only the
  // families the peer asked for are sent. INTERNAL_IP4_ADDRESS / INTERNAL_IP6_ADDRESS (/128).
  std::vector<TrafficSelector> addresses;
  std::vector<Bytes> dns4;  // 4 octets each: INTERNAL_IP4_DNS
  std::vector<Bytes> dns6;  // 16 octets each: INTERNAL_IP6_DNS
  // What the peer should send through the tunnel: INTERNAL_IP4_SUBNET / INTERNAL_IP6_SUBNET.
  // Each must be a prefix (address/netmask on the wire); others are left out.
  std::vector<TrafficSelector> subnets;
};

// A negotiated CHILD SA: everything the SA database and the data path need.
struct ChildSaInfo {
  std::uint32_t spi_in = 0;   // ours: the peer sends with it
  std::uint32_t spi_out = 0;  // the peer's: we send with it
  ChildAlgorithms algs{};
  crypto::SecureBytes keymat_in;
  crypto::SecureBytes keymat_out;
  std::vector<TrafficSelector> local_ts;
  std::vector<TrafficSelector> remote_ts;
  std::uint32_t rekey_of = 0;  // spi_in of the CHILD SA this one replaces, 0 if none
  TimePoint installed{};
  // The lower of the two nonces of the exchange that created it, and whether we initiated
  // that exchange: what resolves simultaneous rekeys (RFC 7296 2.8.1).
  Bytes lowest_nonce;
  bool we_initiated = false;
  TimePoint rekey_at = TimePoint::max();   // soft lifetime: start a rekey
  TimePoint expire_at = TimePoint::max();  // hard lifetime: delete
  bool rekey_started = false;
  // Its hard lifetime passed and our DELETE is queued or in flight: expire_at no longer counts
  // as a deadline (it stays in the past until the DELETE is answered).
  bool delete_started = false;
};

class IkeSa;

// What an IKE SA may hand to an IKE worker (IkeSaHost::Offload).
enum class OffloadKind : std::uint8_t {
  kAuth,      // IKE_AUTH (2.15), a signature with certificate checks or a PSK's MAC: as responder
              // the check of the peer's AUTH (certificate chain and signature, or MAC) and our
              // own AUTH; as initiator our AUTH before the request goes out, and the check of
              // the responder's when its response arrives
  kChildPfs,  // CREATE_CHILD_SA with PFS (1.3.1, 1.3.3): our key pair before our request, the
              // shared secret at the peer's request (with our key pair) or at its response
  kIkeRekey,  // IKE SA rekey (1.3.2, 2.18): the same Diffie-Hellman steps
  kEap,       // responder, an EAP round of IKE_AUTH (2.16) whose step does public-key work (an
              // EAP-TLS handshake flight: signing, key exchange, the user's certificate)
};

class IkeSaHost {
 public:
  virtual ~IkeSaHost() = default;
  // Sends an IKE message to the SA's peer.
  virtual void SendIke(IkeSa& sa, const Bytes& datagram) = 0;
  // A response to a request that came from `to`, not from sa.remote() (RFC 7296 2.11: answered
  // where it came from). Hosts that do not track addresses send it as SendIke.
  virtual void SendIkeTo(IkeSa& sa, const Bytes& datagram, const Address& /*to*/) { SendIke(sa, datagram); }
  // An inbound SPI from the SPI pool. On refusal, nullopt and the notify to answer with
  // (TEMPORARY_FAILURE or NO_ADDITIONAL_SAS).
  virtual std::optional<std::uint32_t> AllocateChildSpi(bool rekey, NotifyType& refusal) = 0;
  virtual void ReleaseChildSpi(std::uint32_t spi) = 0;
  // Responder, before it accepts a new CHILD SA (not a rekey) with these narrowed selectors:
  // false refuses it with TS_UNACCEPTABLE (another peer already has these addresses).
  virtual bool AdmitSelectors(IkeSa& /*sa*/, const std::vector<TrafficSelector>& /*local*/,
                              const std::vector<TrafficSelector>& /*remote*/) {
    return true;
  }
  virtual void InstallChild(IkeSa& sa, const ChildSaInfo& child) = 0;
  virtual void RemoveChild(IkeSa& sa, std::uint32_t spi_in) = 0;
  // Responder, at IKE_AUTH: the connection for the peer's identity, or null.
  virtual std::shared_ptr<const ConnectionParams> ConnectionForPeer(const Identity& peer_id,
                                                                    const Address& remote) = 0;
  // State changes (established, dead) for logs and counters.
  virtual void StateChanged(IkeSa& sa) = 0;
  // A CHILD SA or IKE rekey proposal was refused (NO_PROPOSAL_CHOSEN) and the peer's proposals
  // named weak transforms (WeakTransform bits, proposal.h) this connection does not allow: for
  // the log (counted in IkeCounters::weak_refused_*). IKE_SA_INIT's refusal says it in failure().
  virtual void WeakProposalRefused(IkeSa& /*sa*/, ProtocolId /*protocol*/, unsigned /*weak*/) {}
  // A fresh IKE SPI of ours (unique among this host's SAs, never 0).
  virtual std::uint64_t NewIkeSpi() = 0;
  // Takes over the IKE SA that replaces `old` after a rekey (2.18); it already holds the
  // CHILD SAs. The host indexes it by its own SPI.
  virtual void AdoptIkeSa(IkeSa& old, std::unique_ptr<IkeSa> replacement) = 0;
  // Simultaneous IKE rekeys (2.8.2). Both sides rekeyed `old` at once, so two new IKE SAs
  // exist until the one created with the lowest of the four nonces is deleted by the side
  // that created it; the CHILD SAs go to the survivor. The host keeps an IKE SA that `old`'s
  // rekey created but that does not (yet) replace it (AdoptIkeSaBeside: the peer's candidate,
  // or our redundant one on its way to deletion), finds SAs by our SPI, and, when a candidate
  // it adopted beside `old` survives, moves what it keeps per IKE SA to it (IkeRekeySurvivor:
  // the CHILD SAs' owner, the leases). A host that cannot keep two successors says so: the SA
  // then answers a colliding rekey with TEMPORARY_FAILURE and both sides retry apart.
  // RFC 7296 2.23: the SA followed its peer to a new address or port (`was` the old one).
  virtual void PeerMoved(IkeSa& /*sa*/, const Address& /*was*/) {}
  virtual bool KeepsIkeRekeyCandidates() const { return false; }
  virtual void AdoptIkeSaBeside(IkeSa& /*old*/, std::unique_ptr<IkeSa> /*sa*/) {}
  virtual IkeSa* FindIkeSa(std::uint64_t /*our_spi*/) { return nullptr; }
  virtual void IkeRekeySurvivor(IkeSa& /*old*/, IkeSa& /*survivor*/) {}
  // A CHILD rekey failed and should be tried again at `at` (before the hard lifetime). Hosts
  // that schedule rekeys themselves (ConnectionParams::host_schedules_rekeys) reschedule it;
  // otherwise the IKE SA's own timer does.
  virtual void RetryChildRekey(IkeSa& /*sa*/, std::uint32_t /*spi_in*/, TimePoint /*at*/) {}
  // Responder, IKE_AUTH: the peer asked for an internal IPv4 and/or IPv6 address (CFG_REQUEST,
  // 2.19). Called once, after the peer is authenticated (sa.peer_id(), sa.connection() are
  // final) and before the first CHILD SA is negotiated or the SA reports kEstablished. What it
  // assigns belongs to this IKE SA and its rekeyed successors (3.15.1): AdoptIkeSa hands the
  // same virtual_ips() to the replacement, so a host releasing leases when an IKE SA dies must
  // not release them for one it saw replaced by AdoptIkeSa.
  // Dead peer detection at scale (RFC 7296 2.4): the SA's dpd_delay passed with no IKE
  // message from the peer. True if the peer was heard from otherwise since `since` — an
  // authentic ESP packet on one of its CHILD SAs — so no probe is needed.
  virtual bool HeardFromPeer(IkeSa& /*sa*/, TimePoint /*since*/) { return false; }
  // A probe is due: false if the host's per-second budget for them is spent (the SA asks again
  // a moment later). 100,000 idle tunnels with a 30 s dpd_delay would otherwise be ~3,300
  // INFORMATIONAL exchanges a second: a storm of its own.
  virtual bool AdmitLivenessCheck(IkeSa& /*sa*/, TimePoint /*now*/) { return true; }
  // EAP logins (2.16), responder: how long `user` at this SA's peer address must still wait
  // before a password of theirs is checked (nullopt: not at all), and the outcome of each
  // check, for a brute-force back-off (eap::LoginThrottle).
  // An EAP step that finished after the IKE_AUTH carrying it was handled (a RADIUS round
  // trip): the host calls sa.ResumeEap(now) from its loop, soon and outside the EAP server's
  // callback, and then looks at the SA's state and deadlines as after a datagram.
  virtual void EapStepReady(IkeSa& /*sa*/) {}
  // The public-key and Diffie-Hellman work of an exchange may run off the control thread
  // (OffloadKind). The host runs `work` on an IKE worker and afterwards, on its loop, calls
  // sa.ResumeOffloaded(now); `work` touches nothing of the SA (it owns copies of what it reads).
  // false (no worker free, or no workers): the SA does it at once itself, counted as inline.
  // Meanwhile the SA takes part in no other exchange: it starts no request of its own, drops
  // (counted) the peer's retransmissions of the message being worked on, and keeps any other
  // datagram, at most kOffloadHeld, to handle in order after ResumeOffloaded.
  virtual bool Offload(IkeSa& /*sa*/, OffloadKind /*kind*/, std::function<void()> /*work*/) { return false; }
  virtual std::optional<std::chrono::milliseconds> EapLoginBackoff(IkeSa& /*sa*/, const std::string& /*user*/,
                                                                   TimePoint /*now*/) {
    return std::nullopt;
  }
  virtual void EapLoginChecked(IkeSa& /*sa*/, const std::string& /*user*/, bool /*ok*/, TimePoint /*now*/) {}
  virtual CpResult AssignVirtualIps(IkeSa& /*sa*/, bool /*want_v4*/, bool /*want_v6*/,
                                    VirtualIps& /*out*/) {
    return CpResult::kNotServed;
  }
};

// Counters an IKE SA contributes to (owned by the host; may be shared by many SAs).
struct IkeCounters {
  std::uint64_t retransmits = 0;
  // Exchanges of ours given up after the last retransmission went unanswered (2.4), by exchange
  // type: the IKE SA died with them. IKE_SA_INIT / IKE_AUTH ones are negotiations that failed.
  struct GaveUp {
    std::uint64_t ike_sa_init = 0;
    std::uint64_t ike_auth = 0;
    std::uint64_t create_child_sa = 0;
    std::uint64_t informational = 0;
  };
  GaveUp gave_up;
  std::uint64_t half_open_expired = 0;  // responder: no IKE_AUTH within half_open_timeout
  // The old IKE SA of a rekey the peer made, gone by itself: the peer's DELETE of it never came
  // (lost, or the peer gave up its rekey), see the `rekeyed` timer.
  std::uint64_t rekeyed_expired = 0;
  std::uint64_t requests_queue_full = 0;
  std::uint64_t auth_failures = 0;
  // Of those: a peer certificate refused (no path to a trusted CA, expired, revoked, wrong key
  // usage, malformed, missing) or an identity the certificate does not hold.
  std::uint64_t cert_failures = 0;
  // EAP logins (2.16) by EAP server (eap::Method) and result; failures are also in
  // auth_failures. An initiator counts its own logins under kMschapV2.
  struct EapLogins {
    std::uint64_t success = 0;
    std::uint64_t failure = 0;
  };
  std::array<EapLogins, eap::kMethodCount> eap_logins{};
  EapLogins& eap_login(eap::Method m) { return eap_logins[static_cast<std::size_t>(m)]; }
  const EapLogins& eap_login(eap::Method m) const { return eap_logins[static_cast<std::size_t>(m)]; }
  std::uint64_t eap_throttled = 0;  // of the failures: refused by the back-off before a password check
  // IKE_AUTH's AUTH work, signatures with certificate checks or PSK MACs (the responder's check
  // and its own AUTH, the initiator's own AUTH and its check of the responder's), that ran on an
  // IKE worker (IkeSaHost::Offload), and that ran on the control thread because no worker was
  // free.
  std::uint64_t auth_offloaded = 0;
  std::uint64_t auth_inline = 0;
  // EAP steps with public-key work (EAP-TLS handshake flights, responder), likewise.
  std::uint64_t eap_offloaded = 0;
  std::uint64_t eap_inline = 0;
  // The Diffie-Hellman of CREATE_CHILD_SA with PFS and of IKE rekeys, both roles, by where it
  // ran (per key pair made or shared secret computed).
  std::uint64_t child_pfs_offloaded = 0;
  std::uint64_t child_pfs_inline = 0;
  std::uint64_t ike_rekey_offloaded = 0;
  std::uint64_t ike_rekey_inline = 0;
  // While an SA's work ran on a worker: the peer's retransmissions of the message being worked
  // on, dropped (the answer comes when the work is done); other datagrams kept for after it;
  // and those dropped because kOffloadHeld were already kept.
  std::uint64_t offload_retransmits = 0;
  std::uint64_t offload_held = 0;
  std::uint64_t offload_held_dropped = 0;
  std::uint64_t invalid_messages = 0;
  std::uint64_t child_failures = 0;
  // NO_PROPOSAL_CHOSEN answered to proposals that named weak transforms the connection does not
  // allow (allow_weak; WeakTransform in proposal.h): per refused message and transform.
  std::uint64_t weak_refused_modp1024 = 0;
  std::uint64_t weak_refused_3des = 0;
  void CountWeakRefused(unsigned weak) {
    if ((weak & kWeakModp1024) != 0) ++weak_refused_modp1024;
    if ((weak & kWeak3des) != 0) ++weak_refused_3des;
  }
  std::uint64_t rekey_retries = 0;  // failed CHILD and IKE rekeys scheduled to be tried again
  // Copies of messages already handled (2.1): the peer's last request again, answered with the
  // cached response (its retransmission, or a duplicate made on the way); an older request of
  // the peer's, or a response to a request of ours that was answered before: dropped.
  std::uint64_t requests_answered_again = 0;
  std::uint64_t stale_requests = 0;
  std::uint64_t stale_responses = 0;
  // Datagrams for an IKE SA that was deleted or failed but is still in the table (until the
  // next tick): dropped.
  std::uint64_t for_deleted_sa = 0;
  // Simultaneous IKE rekeys (2.8.2) resolved by the nonce rule: both new IKE SAs created, ours
  // the redundant one (we delete it) or the peer's (it deletes it).
  std::uint64_t ike_rekey_collisions = 0;
  std::uint64_t ike_rekey_collisions_ours_redundant = 0;
  // Dead peer detection: probes sent; probes not needed (ESP heard from the peer); probes put
  // off because the host's budget for this second was spent.
  // RFC 7296 2.23: an authentic new message came from another address or port. Followed (the
  // peer is behind a NAT, we are not: its mapping changed), or not followed (no NAT between us,
  // or we are the one behind it: answered where it came from, the SA stays where it was).
  std::uint64_t peer_moved = 0;
  std::uint64_t peer_move_ignored = 0;
  // MOBIKE (RFC 4555): IKE SAs that negotiated it; UPDATE_SA_ADDRESSES requests followed, and
  // refused (UNEXPECTED_NAT_DETECTED: the peer sent NO_NATS_ALLOWED and a NAT is in between).
  std::uint64_t mobike_negotiated = 0;
  std::uint64_t mobike_updates = 0;
  std::uint64_t mobike_refused = 0;
  // 4555 3.7, as responder: return routability checks sent (INFORMATIONAL with COOKIE2), passed
  // (the CHILD SAs moved), failed (a response without our COOKIE2, or none at all: the CHILD SAs
  // stay where they were), and moves done unchecked because the request queue was full.
  std::uint64_t mobike_rr_checks = 0;
  std::uint64_t mobike_rr_passed = 0;
  std::uint64_t mobike_rr_failed = 0;
  std::uint64_t mobike_rr_skipped = 0;
  // 4555 3.5, as original initiator: our local address moved (the host lost the one in use, or
  // the route to the peer now leaves from another), UPDATE_SA_ADDRESSES requests sent for it
  // (each move sends one; retransmissions are not counted), and address changes after which no
  // usable local address was left for an IKE SA (it stays where it was).
  std::uint64_t mobike_local_moves = 0;
  std::uint64_t mobike_updates_sent = 0;
  std::uint64_t mobike_no_local_address = 0;
  // 4555 3.6: the peer's ADDITIONAL_IP4/6_ADDRESS kept; those past kMobikeAddresses ignored;
  // address notifies of the wrong length (or NO_ADDITIONAL_ADDRESSES with data) ignored; our
  // own lists sent (IKE_AUTH, and INFORMATIONAL when a reload changed them).
  std::uint64_t mobike_additional_addresses = 0;
  std::uint64_t mobike_address_list_overflow = 0;
  std::uint64_t mobike_address_malformed = 0;
  std::uint64_t mobike_address_lists_sent = 0;
  std::uint64_t dpd_probes = 0;
  std::uint64_t dpd_skipped_traffic = 0;
  std::uint64_t dpd_deferred = 0;
  FragmentCounters fragments;  // RFC 7383, both directions
};

class IkeSa {
 public:
  enum class Role : std::uint8_t { kInitiator, kResponder };
  enum class State : std::uint8_t {
    kNew,           // created, nothing sent
    kInitSent,      // initiator: IKE_SA_INIT request out
    kAuthSent,      // initiator: IKE_AUTH request out
    kInitAnswered,  // responder: IKE_SA_INIT answered, waiting for IKE_AUTH
    kEstablished,
    kDeleting,      // our DELETE of the IKE SA is out
    kDead,          // finished; the host removes it
  };
  // Bound on requests waiting behind the one in flight (window 1). Past it, requests are
  // refused and counted in IkeCounters::requests_queue_full.
  static constexpr std::size_t kMaxQueuedRequests = bounds::kIkeRequestQueue;
  static constexpr int kMaxRetransmits = 5;  // ConnectionParams::retransmit_tries' default
  // The shortest wait before a refused CHILD rekey is tried again (RFC 7296 2.25: not at once).
  static constexpr auto kMinRekeyRetry = std::chrono::milliseconds(100);
  // A CHILD SA past its hard lifetime whose DELETE the full request queue refused.
  static constexpr auto kExpiredDeleteRetry = std::chrono::seconds(1);

  IkeSa(IkeSaHost& host, IkeCounters& counters, Role role,
        std::shared_ptr<const ConnectionParams> conn, Address local, Address remote,
        std::uint64_t spi_i, std::uint64_t spi_r);
  ~IkeSa();

  // Initiator: sends the IKE_SA_INIT request.
  void Initiate(TimePoint now);
  // A datagram whose header carries this SA's SPIs (responder: SPIr 0 for the first one).
  void Receive(std::span<const std::uint8_t> datagram, TimePoint now);
  // Runs the timers that are due.
  void Tick(TimePoint now);
  // Moves the SA to another host and counters. An IKE SA belongs to one thread at a time:
  // the daemon lets a worker answer a first IKE_SA_INIT (the DH) against a host that only
  // records what the SA did, then rebinds it to itself on the control thread.
  void Rebind(IkeSaHost& host, IkeCounters& counters) {
    host_ = &host;
    counters_ = &counters;
  }
  TimePoint NextDeadline() const;

  // Requests on an established SA (queued behind the one in flight). False when refused: the
  // SA is not established (or already rekeyed), the CHILD SA is unknown, or the queue is full
  // (only the last is counted, in IkeCounters::requests_queue_full).
  bool CreateChild(TimePoint now);
  bool RekeyChild(std::uint32_t spi_in, TimePoint now);
  bool DeleteChild(std::uint32_t spi_in, TimePoint now);
  bool RekeyIke(TimePoint now);  // CREATE_CHILD_SA rekeying this IKE SA (2.18)
  bool Delete(TimePoint now);  // INFORMATIONAL DELETE of the IKE SA (and with it the CHILD SAs)
  bool CheckLiveness(TimePoint now);
  // The peer has a newer IKE SA (INITIAL_CONTACT, or the host's `unique` policy): one DELETE,
  // not waited for (a peer that lost its state would never answer), and the SA is gone with
  // its CHILD SAs at once, so they hold no SPIs meanwhile.
  void Replace(TimePoint now);
  // Initiator, before Initiate: send INITIAL_CONTACT in IKE_AUTH (2.4: this is the only IKE SA
  // between the two identities, e.g. the first one since we started).
  void set_initial_contact(bool on) { send_initial_contact_ = on; }

  Role role() const { return role_; }
  State state() const { return state_; }
  std::uint64_t spi_i() const { return spi_i_; }
  std::uint64_t spi_r() const { return spi_r_; }
  const Address& local() const { return local_; }
  const Address& remote() const { return remote_; }
  void set_remote(const Address& a) { remote_ = a; }
  // The SA's datagrams leave from this port of ours now (the host floated it to NAT-T): NAT
  // detection from here on hashes the port they really come from (RFC 7296 2.23, 4555 3.5).
  void set_local_port(std::uint16_t port) { local_.port = port; }
  // The source of the datagram the host is about to hand to Receive. The SA follows it only
  // once the message proved authentic and new (RFC 7296 2.23): a spoofed or replayed datagram
  // never redirects it. Before that, IKE_SA_INIT's address is the peer's, whatever it is.
  void set_source(const Address& a) { source_ = a; }
  // An authentic, new ESP packet of one of this SA's CHILD SAs came from `from`: the peer moves
  // there if 2.23 allows (established; the peer behind a NAT, we not), counted either way.
  // True if it moved (host PeerMoved was called).
  bool FollowEspSource(const Address& from);
  // RFC 4555: both sides announced MOBIKE_SUPPORTED in IKE_AUTH.
  bool mobike() const { return mobike_; }
  // RFC 4555 3.5, original initiator with MOBIKE: our address is `local` now; tells the peer
  // (INFORMATIONAL with UPDATE_SA_ADDRESSES and NAT detection from the new address, next after
  // the exchange in flight, whose retransmissions leave from the new address too). Another
  // move before it is sent changes only the address it will carry. False if it cannot be
  // sent (no MOBIKE, not the original initiator, not established, queue full).
  bool UpdateSaAddresses(const Address& local, TimePoint now);
  // An UPDATE_SA_ADDRESSES of ours is queued or unanswered.
  bool mobike_update_pending() const {
    return (outstanding_ && outstanding_->kind == RequestKind::kMobikeUpdate) ||
           std::any_of(pending_.begin(), pending_.end(),
                       [](const Pending& p) { return p.kind == RequestKind::kMobikeUpdate; });
  }
  // Where the CHILD SAs send ESP: remote() except while a MOBIKE return routability check of
  // the peer's new address runs (4555 3.5: the IPsec SAs are updated once it has passed), when
  // it is the address they had before. Hosts install and move CHILD SAs to this address.
  const Address& esp_remote() const { return esp_remote_ ? *esp_remote_ : remote_; }
  // 4555 3.6: the peer's additional addresses (ports 0) from its latest announcement, at most
  // kMobikeAddresses; empty when it announced none or NO_ADDITIONAL_ADDRESSES.
  const std::vector<Address>& peer_addresses() const { return peer_addresses_; }
  static constexpr std::size_t kMobikeAddresses = bounds::kMobikePeerAddresses;
  const ConnectionParams* connection() const { return conn_.get(); }
  // A reload changed the connection: lifetimes and DPD apply from now on; CHILD SAs installed
  // later use its proposals and selectors. The IKE SA's own algorithms stay as negotiated. With
  // MOBIKE, a changed list of our addresses goes to the peer (4555 3.6, INFORMATIONAL).
  void UpdateConnection(std::shared_ptr<const ConnectionParams> conn, TimePoint now);
  const std::optional<IkeAlgorithms>& algorithms() const { return algs_; }
  const std::vector<ChildSaInfo>& children() const { return children_; }
  bool nat_detected() const { return nat_local_ || nat_remote_; }
  // Why the SA died, for logs ("AUTHENTICATION_FAILED from peer", "peer unreachable", ...).
  const std::string& failure() const { return failure_; }
  TimePoint established_at() const { return established_at_; }
  // The peer's authenticated identity (set when IKE_AUTH succeeds; kept across IKE rekeys).
  const std::optional<Identity>& peer_id() const { return peer_id_; }
  // Responder: the peer's IKE_AUTH carried INITIAL_CONTACT.
  bool peer_initial_contact() const { return peer_initial_contact_; }
  // The peer's internal addresses we assigned (responder) or ours the peer assigned
  // (initiator), as host selectors; set before the SA reports kEstablished, kept across IKE
  // rekeys (3.15.1). Empty without a CP exchange.
  const std::vector<TrafficSelector>& virtual_ips() const { return virtual_ips_; }
  // Responder, after an EAP login (2.16): the user name EAP authenticated. Hosts key leases and
  // uniqueness by it (the IKE identity of a native client is often just its address); never log it.
  const std::string& eap_identity() const { return eap_identity_; }
  // Responder, after an EAP login: what the authenticator said about the user (RADIUS
  // Framed-IP-Address and Class); empty otherwise. Valid while AnswerCfgRequest asks the host.
  const eap::Authorization& eap_authorization() const { return eap_authorization_; }
  // See IkeSaHost::EapStepReady.
  void ResumeEap(TimePoint now);
  // See IkeSaHost::Offload. Does nothing unless the offloaded work has finished.
  void ResumeOffloaded(TimePoint now);
  // Work of this SA runs on a worker (IkeSaHost::Offload) and it has not resumed yet.
  bool offloaded() const { return offload_.has_value(); }
  // Datagrams an SA keeps while its work runs on a worker (IkeSaHost::Offload).
  static constexpr std::size_t kOffloadHeld = bounds::kIkeOffloadHeld;
  // Both sides sent IKEV2_FRAGMENTATION_SUPPORTED in IKE_SA_INIT (RFC 7383 2.3).
  bool fragmentation() const { return fragmentation_; }
  // Replaced by a rekey (2.18): its CHILD SAs are on the new IKE SA, only its DELETE remains
  // (see the `rekeyed` timer).
  bool rekeyed() const { return rekeyed_; }

 private:
  enum class RequestKind : std::uint8_t { kInit, kAuth, kCreateChild, kRekeyChild, kDeleteChild,
                                          kDeleteIke, kLiveness, kRekeyIke, kMobikeUpdate,
                                          kMobikeCheck, kMobikeAddresses };
  struct Outstanding {
    RequestKind kind;
    std::uint32_t message_id;
    Exchange exchange;
    Bytes bytes;                 // the whole message; empty when sent as fragments
    std::vector<Bytes> fragments;  // RFC 7383: resent as the same set
    int retransmits = 0;
    TimePoint deadline;
  };
  struct Pending {
    RequestKind kind;
    std::uint32_t child_spi = 0;
  };
  // A CREATE_CHILD_SA or IKE_AUTH child negotiation of ours.
  struct ChildNegotiation {
    std::uint32_t spi_in = 0;
    std::uint32_t rekey_of = 0;
    Bytes nonce;
    std::unique_ptr<crypto::DhKeyPair> dh;
    std::vector<Proposal> proposals;
  };

  // Initiator steps.
  void SendInit(TimePoint now);
  void OnInitResponse(const Message& msg, std::span<const std::uint8_t> datagram, TimePoint now);
  void SendAuth(TimePoint now);
  void OnAuthResponse(const Message& msg, TimePoint now);
  void SendChildRequest(RequestKind kind, std::uint32_t rekey_of, TimePoint now);
  void OnChildResponse(const Message& msg, TimePoint now);
  void OnInformationalResponse(const Message& msg, TimePoint now);
  void SendIkeRekey(TimePoint now);
  void OnIkeRekeyResponse(const Message& msg, TimePoint now);
  void OnIkeRekeyRequest(const Message& msg, TimePoint now);
  // Builds an IKE SA that this one's rekey created and hands it to the host: the replacement,
  // which takes the CHILD SAs (kTakesOver); in a simultaneous rekey (2.8.2) the peer's
  // candidate, kept beside this one until the collision is resolved (kCandidate), or our own
  // redundant one, which deletes itself (kRedundant). Null if its keys cannot be derived.
  enum class Successor : std::uint8_t { kTakesOver, kCandidate, kRedundant };
  IkeSa* HandOver(Role role, std::uint64_t spi_i, std::uint64_t spi_r, const IkeAlgorithms& algs,
                  std::span<const std::uint8_t> ni, std::span<const std::uint8_t> nr,
                  const crypto::SecureBytes& shared, Successor kind, TimePoint now);
  // The CHILD SAs and queued CHILD work go to `next`, which replaces this SA.
  void MoveChildrenTo(IkeSa& next, TimePoint now);
  // 2.8.2: the peer's candidate (ike_collision_) survives: it takes the CHILD SAs. False if
  // it is gone.
  bool CandidateTakesOver(TimePoint now);
  // Responder steps.
  void OnInitRequest(const Message& msg, std::span<const std::uint8_t> datagram, TimePoint now);
  void OnAuthRequest(const Message& msg, TimePoint now);
  void OnCreateChildRequest(const Message& msg, TimePoint now);
  void OnInformationalRequest(const Message& msg, TimePoint now);

  // Authentication (ike_sa_auth.cc, 2.15). Initiator: checks the responder's AUTH in its
  // IKE_AUTH response `msg` (and, for a signature, its CERT payloads: chain, dates, revocation,
  // usage, the identity bound to the certificate). kOk if it proves `idr`; kFailed with the
  // reason in *why, counted in auth_failures (and cert_failures for the certificate's part);
  // kOffloaded if the check (a signature's or a PSK's MAC) went to an IKE worker: the handler
  // returns, and ResumeOffloaded runs HandleResponse again with the result in auth_ready_, which
  // this then returns.
  enum class PeerCheck : std::uint8_t { kOk, kFailed, kOffloaded };
  PeerCheck CheckResponderAuth(const Message& msg, const IdPayload& idr, const AuthPayload& auth, std::string* why);
  // CERT payloads for our chain (as the peer's CERTREQ asks) and CERTREQ for our CAs.
  void AppendCertPayloads(std::vector<Payload>& out) const;
  void AppendCertReq(std::vector<Payload>& out) const;
  // RFC 7427 4 and 3.7: what the peer's IKE_SA_INIT (or IKE_AUTH) announced.
  void NotePeerSignatureInfo(const Message& msg);

  // Remote access (ike_sa_auth.cc). The configuration payload of our IKE_AUTH request, the
  // handling of the peer's, and the reading of the peer's reply: the addresses assigned, or
  // why there are none (for failure_).
  Payload CfgRequest() const;
  // Responder: answers a CFG_REQUEST in `req` through the host, appending CP(CFG_REPLY) or
  // INTERNAL_ADDRESS_FAILURE to `out`. False when the CHILD SA must not be negotiated.
  bool AnswerCfgRequest(const Message& req, std::vector<Payload>& out);
  std::optional<std::string> TakeCfgReply(const Message& resp);
  // The selectors the CHILD SAs stand for on our side (initiator with vips: the wildcard until
  // an address is assigned, then the virtual IPs) and the ones accepted for the peer
  // (responder with remote_ts_dynamic: the virtual IPs assigned to it).
  std::vector<TrafficSelector> OwnSelectors() const;
  const std::vector<TrafficSelector>& PeerSelectors() const;

  // Shared.
  bool DeriveKeys(std::span<const std::uint8_t> peer_ke);
  // Selects, narrows, allocates and installs a CHILD SA for a request (IKE_AUTH or
  // CREATE_CHILD_SA), appending the response payloads (or the refusing notify) to `out`.
  // With `deferred`, its DH may go to a worker: then *deferred is set and nothing is appended.
  bool NegotiateChildAsResponder(const Message& req, std::span<const std::uint8_t> ni,
                                 std::span<const std::uint8_t> nr, std::uint32_t rekey_of,
                                 std::vector<Payload>& out, bool create_child, TimePoint now,
                                 bool* deferred = nullptr);
  bool FinishChildAsInitiator(const Message& resp, ChildNegotiation& neg,
                              std::span<const std::uint8_t> ni, std::span<const std::uint8_t> nr);
  void InstallChild(ChildSaInfo info, TimePoint now);
  // 2.8.1: if both sides rekeyed CHILD SA `old_spi` at once, the new SA created with the
  // lowest of the four nonces is redundant and is closed by the side that created it.
  void ResolveRekeyCollision(std::uint32_t old_spi, TimePoint now);
  void RemoveChildBySpi(std::uint32_t spi_in);
  ChildSaInfo* FindChildByInbound(std::uint32_t spi);
  void RetryRekeyLater(std::uint32_t spi_in, TimePoint now);
  void NoteInitRetry(const Message& msg, std::span<const std::uint8_t> datagram);
  ChildSaInfo* FindChildByOutbound(std::uint32_t spi);
  // False (and counted in requests_queue_full) when kMaxQueuedRequests already wait.
  bool Enqueue(Pending p, TimePoint now);
  void StartNext(TimePoint now);
  void SendRequest(RequestKind kind, Exchange ex, std::vector<Payload> payloads, TimePoint now);
  void SendResponse(const Header& req, std::vector<Payload> payloads, bool encrypted);
  // RFC 7383 2.5: a protected message too large for fragment_size as fragments, or nothing
  // (send it whole) when it fits or fragmentation was not negotiated.
  std::vector<Bytes> FragmentIfLarge(const Message& m, std::size_t whole_len);
  // Sends a message: whole, or all its fragments in order.
  // `response`: to reply_to_ when set (2.11), else to remote_.
  void Transmit(const Bytes& whole, const std::vector<Bytes>& fragments, bool response = false);
  // RFC 7383 2.6: a fragment that passed the message-ID checks. True when it completed the
  // message, which is then in msg.payloads (or res holds the parse error).
  bool ReceiveFragment(std::span<const std::uint8_t> datagram, ParseResult& res, Message& msg,
                       TimePoint now);
  void Die(std::string why);
  void SetState(State s);
  std::vector<Payload> NatDetectionPayloads() const;
  void CheckNatDetection(const Message& msg);
  Bytes SignedOctetsAuth(bool ours) const;

  IkeSaHost* host_;  // never null; see Rebind
  IkeCounters* counters_;
  Role role_;
  State state_ = State::kNew;
  std::shared_ptr<const ConnectionParams> conn_;
  Address local_;
  Address remote_;
  std::optional<Address> source_;  // see set_source
  // While a request is handled: where it came from, where its response goes (2.11).
  std::optional<Address> reply_to_;
  bool mobike_ = false;
  // RFC 4555 3.5: the peer's UPDATE_SA_ADDRESSES: the IKE SA (and its CHILD SAs) move to where
  // the request came from, NAT detection anew; adds the response's payloads. False if refused.
  bool UpdateAddresses(const Message& msg, std::vector<Payload>& out);
  // Responder, IKE_AUTH: MOBIKE_SUPPORTED answered if the peer sent it and the connection has
  // MOBIKE on.
  void AnswerMobike(const Message& request, std::vector<Payload>& out);
  // 4555 3.6: our address list (ADDITIONAL_*_ADDRESS or NO_ADDITIONAL_ADDRESSES; nothing when
  // the connection does not know its addresses), and the peer's, which replaces the one kept
  // if the message carries any well-formed address notify.
  std::vector<Payload> OwnAddressNotifies(const ConnectionParams& conn) const;
  void TakePeerAddresses(const Message& msg);
  // 4555 3.7: the peer's new address (remote_) is checked with COOKIE2 before the CHILD SAs
  // move from esp_remote_; see OnReturnRoutability for the outcome.
  void CheckReturnRoutability(TimePoint now);
  void OnReturnRoutability(const Message& msg, TimePoint now);
  std::optional<Address> esp_remote_;  // see esp_remote()
  bool rr_queued_ = false;             // a kMobikeCheck waits or is in flight
  Address rr_target_;                  // the address the check in flight went to
  Bytes rr_cookie_;                    // its COOKIE2
  std::vector<Address> peer_addresses_;
  // After an authentic, new message: follows the peer to source_ where 2.23 allows it.
  void FollowSource(const Address& from);
  bool MovePeer(const Address& from);  // an established SA's move, if 2.23 allows it
  std::uint64_t spi_i_;
  std::uint64_t spi_r_;

  std::optional<IkeAlgorithms> algs_;
  std::unique_ptr<crypto::DhKeyPair> dh_;
  std::uint16_t dh_group_ = 0;
  Bytes ni_, nr_;
  Bytes cookie_;
  Bytes init_request_;   // IKE_SA_INIT request as sent/received: signed by the initiator's AUTH
  Bytes init_response_;  // IKE_SA_INIT response: signed by the responder's AUTH
  std::vector<pki::HashAlgorithm> peer_hashes_;  // RFC 7427 4: the peer's SIGNATURE_HASH_ALGORITHMS
  Bytes peer_certreq_;  // 3.7: key ids of the CAs the peer asked for (CERTREQ, X.509)
  // Responder, remote_auth EAP (2.16): the method, and the initiator's first IKE_AUTH request
  // (its IDi is signed over by its final AUTH; its SA, TS and CP payloads get the CHILD SA and
  // address once EAP has succeeded).
  // Initiator, local_auth EAP: the client, and the responder's first IKE_AUTH response (its IDr
  // is what the responder's final AUTH signs over).
  struct EapState {
    std::unique_ptr<eap::ServerSession> server;
    Message first_request;
    // A step the server is still working on (a RADIUS round trip): the header of the IKE_AUTH
    // request to answer; retransmissions of it are dropped meanwhile. `ready` holds the step
    // once it is done, until ResumeEap() answers.
    std::optional<Header> pending;
    std::optional<eap::ServerSession::Step> ready;
    bool in_receive = false;
    std::unique_ptr<eap::MschapV2Client> client;
    std::optional<Message> first_response;
    bool succeeded = false;
  };
  std::unique_ptr<EapState> eap_;
  std::string eap_identity_;
  eap::Authorization eap_authorization_;
  void AnswerEapStep(const Header& request, eap::ServerSession::Step step, TimePoint now);
  // IKE_AUTH's AUTH work (signatures, certificate checks, PSK MACs), with copies of what it
  // reads (ike_sa_auth.cc).
  struct AuthWork;
  // Responder: an EAP step with public-key work (kEap), run on a worker with the EAP server,
  // which the work holds meanwhile (ike_sa_auth.cc).
  struct EapWork;
  static bool AuthWorkDone(const AuthWork& work);
  static bool EapWorkDone(const EapWork& work);
  // The EAP step done on a worker: the server back in eap_, the step answered.
  void FinishEapWork(EapWork& work, TimePoint now);
  void FinishAuthRequest(const Message& msg, AuthWork& work, TimePoint now);
  // A Diffie-Hellman step (ike_sa_offload.cc): our key pair made (given none), and the shared
  // secret with peer_public (unless empty).
  struct DhWork;
  // Work of this SA on a worker (IkeSaHost::Offload): one at a time. `message` is the peer's
  // request being answered or its response to ours being finished (none while our own key pair
  // is made, before our request goes out); ResumeOffloaded runs its handler again, which finds
  // the result in dh_ready_ (or FinishAuthRequest takes `auth`'s).
  struct Offloaded {
    OffloadKind kind;
    std::shared_ptr<AuthWork> auth;
    std::shared_ptr<DhWork> dh;
    std::optional<Message> message;
    std::optional<Address> reply_to;  // where the request came from (2.11)
    struct Held {
      Bytes datagram;
      std::optional<Address> from;
    };
    std::vector<Held> held;  // at most kOffloadHeld, in arrival order
    std::shared_ptr<EapWork> eap;
  };
  std::optional<Offloaded> offload_;
  // The response to our request arrived and its DH, or the check of the responder's AUTH,
  // runs on a worker: no retransmission, no give-up meanwhile. Likewise the initiator's IKE_AUTH
  // signature: the IKE_SA_INIT response is here.
  bool FinishingResponse() const {
    return offload_ && ((offload_->message && offload_->message->header.is_response()) ||
                        (offload_->kind == OffloadKind::kAuth && role_ == Role::kInitiator));
  }
  std::shared_ptr<DhWork> dh_ready_;  // a finished DH step, for the handler ResumeOffloaded reruns
  // Initiator: finished work for the handler ResumeOffloaded reruns: our AUTH signed (for
  // SendAuth), or the responder's AUTH checked (for CheckResponderAuth).
  std::shared_ptr<AuthWork> auth_ready_;
  // Hands `work` to the host; true if it took it (offload_ is then set and counted), false if
  // the caller must do it inline (counted).
  bool StartOffload(Offloaded o, const std::function<void()>& work);
  // True while a datagram must wait for the work (kept or dropped here, counted).
  bool HoldWhileOffloaded(std::span<const std::uint8_t> datagram, const std::optional<Address>& from);
  // The peer's request needs a DH with its KE: offloaded (true), or false to do it inline.
  bool OffloadRequestDh(const Message& req, OffloadKind kind, std::uint16_t group,
                        std::span<const std::uint8_t> peer_public);
  // The peer's response to our request: the shared secret with our child_neg_ key pair.
  bool OffloadResponseDh(const Message& resp, OffloadKind kind);
  // Our request `p` (next in pending_) needs a fresh key pair: offloaded (true) or not.
  bool OffloadKeyPair(const Pending& p);
  // The finished step for this group and peer value (responder), or null.
  std::shared_ptr<DhWork> TakeReadyDh(std::uint16_t group, std::span<const std::uint8_t> peer_public);
  // Our key pair made on a worker for `group`, or a fresh one made here.
  std::unique_ptr<crypto::DhKeyPair> KeyPairFor(std::uint16_t group);
  // The part of Receive after a response was opened and checked: its handler, the end of the
  // exchange and the next request of ours.
  void HandleResponse(const Message& msg, std::span<const std::uint8_t> datagram, TimePoint now);
  void OnEapAuthRequest(const Message& msg, TimePoint now);
  void OnEapAuthResponse(const Message& msg, TimePoint now);
  // The end of a successful IKE_AUTH as initiator: the peer's identity, its CP reply, the
  // first CHILD SA.
  void FinishAuthAsInitiator(const Message& msg, const Identity& peer, TimePoint now);
  // The final IKE_AUTH of an EAP login: AUTH checked against the MSK; the CHILD SA.
  void FinishEap(const Message& msg, TimePoint now);
  IkeSaKeys keys_;
  SkKeys sk_out_, sk_in_;
  bool nat_local_ = false, nat_remote_ = false;

  // Our requests (2.3: window 1).
  std::uint32_t next_request_id_ = 0;
  std::optional<Outstanding> outstanding_;
  // A vector, not a deque: at most kMaxQueuedRequests small entries, and an empty std::deque
  // already costs ~600 bytes — per IKE SA, at a hundred thousand IKE SAs.
  std::vector<Pending> pending_;
  std::optional<ChildNegotiation> child_neg_;
  std::uint32_t pending_delete_spi_ = 0;  // the CHILD SA our in-flight DELETE names
  std::uint64_t rekey_spi_ = 0;           // our SPI for the IKE SA our rekey creates
  bool rekeyed_ = false;                  // replaced by a rekey: only the DELETE remains
  // Delete() was called (an operator's terminate, a reload that removed the connection): an IKE
  // rekey that completes after it hands the wish on, so the successor deletes itself too.
  bool delete_requested_ = false;
  TimePoint rekeyed_at_{};                // when (the `rekeyed` timer)
  // The `rekeyed` timer: the peer's DELETE of this replaced SA is overdue (nothing of ours out).
  TimePoint RekeyedExpiry() const;
  // 2.8.2: the peer rekeyed this IKE SA while our rekey was in flight; we answered, and the IKE
  // SA its rekey created (our SPI `spi`, the lower of its two nonces `lowest_nonce`) waits
  // beside this one, without the CHILD SAs, until our rekey's outcome decides which survives.
  struct IkeRekeyCollision {
    std::uint64_t spi = 0;
    Bytes lowest_nonce;
  };
  std::optional<IkeRekeyCollision> ike_collision_;
  // The peer's candidate lost: the peer deletes it, or we do at this time (2.8.2).
  static constexpr auto kRedundantGrace = std::chrono::seconds(10);
  TimePoint redundant_delete_at_ = TimePoint::max();
  int cookie_retries_ = 0;
  int ke_retries_ = 0;
  // The peer's requests: the next expected ID and the cached last response (2.1).
  std::uint32_t next_peer_request_id_ = 0;
  std::optional<std::uint32_t> last_response_id_;
  Bytes last_response_;
  std::vector<Bytes> last_response_fragments_;  // RFC 7383: the response as sent, fragmented
  // RFC 7383.
  bool fragmentation_ = false;
  std::unique_ptr<Reassembly> reassembly_request_;   // the peer's request, while it arrives
  std::unique_ptr<Reassembly> reassembly_response_;  // the response to ours

  std::vector<ChildSaInfo> children_;
  std::optional<Identity> peer_id_;
  std::vector<TrafficSelector> virtual_ips_;
  bool peer_initial_contact_ = false;
  bool send_initial_contact_ = false;
  TimePoint created_at_{};
  TimePoint established_at_{};
  TimePoint last_heard_{};
  // Dead peer detection: a probe is due at last_heard_ + dpd_delay + dpd_jitter_ (0 to 10 % of
  // dpd_delay, drawn once per SA, so tunnels set up together are not probed together), and
  // not before dpd_not_before_ (the host's budget put it off).
  std::chrono::milliseconds dpd_jitter_{0};
  TimePoint dpd_not_before_{};
  TimePoint DpdDue() const;
  std::string failure_;
  TimePoint ike_rekey_at_ = TimePoint::max();
};

const char* ToString(IkeSa::State s);

}  // namespace spigot::ike
