// A RADIUS client for EAP pass-through (RFC 3579) on the control thread's io::EventLoop: each
// EAP packet of a road warrior goes to a RADIUS server in an Access-Request, and the server's
// Access-Challenge / Accept / Reject comes back through a callback. Nothing blocks: a slow or
// dead server costs a timer, never the loop.
//
// Contract:
// - Send() transmits at once and returns a handle; `done` runs exactly once, later, on the loop
//   (never inside Send()), unless Cancel() comes first. It may call Send() and Cancel(); it
//   may also destroy the Client (nothing of it is touched after `done` returns then).
// - Servers are tried in order, skipping those marked dead. A server gets the identical packet
//   `retries` more times, `timeout` apart; then it is marked dead for `dead_time` and the
//   request fails over to the next live server with a new identifier and authenticator. When
//   every server is dead they are all tried, in order. After the last, `done` gets kTimeout.
// - Bound (STYLE.md 7): at most `max_outstanding` requests in flight. Send() refuses the next
//   one (returns 0, counted in refused_full); a request that cannot be encoded (no EAP
//   message, a field over 253 octets, a packet over 4096) is refused too (refused_invalid).
// - Identifiers: 8 bits per (socket, server). Sockets (one per 256 requests in flight to a
//   server, per address family) are opened when first needed and kept. An identifier still in
//   flight is never reused; freed ones are reused round-robin, as late as possible.
// - Replies are dropped and counted unless they come from the server's address and port, to
//   an identifier in flight, with a valid Response Authenticator and (whenever present, and
//   always with an EAP-Message) a valid Message-Authenticator (packet.h CheckReply). A reply
//   to an identifier that was in flight and has since finished counts as `late`.
// - Reconfigure() takes effect for requests sent afterwards; requests in flight finish with the
//   servers, secret and timers they started with.
//
// Timers (one per request in flight, named for the event it stands for):
//   "radius.retransmit"  `timeout` after each transmission: send again, fail over, or finish
//                        with kTimeout.
//   "radius.unsent"      zero delay: a request whose first packet could not be built finishes
//                        with kTimeout on the loop, never inside Send().
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "spigot/crypto/secure_bytes.h"
#include "spigot/io/endpoint.h"
#include "spigot/io/event_loop.h"
#include "spigot/io/udp_socket.h"
#include "spigot/radius/packet.h"

namespace spigot::radius {

struct ClientOptions {
  std::vector<io::Endpoint> servers;  // tried in order; at least one
  crypto::SecureBytes secret;         // shared with every server; not empty
  std::chrono::milliseconds timeout{2000};  // per transmission
  unsigned retries = 3;                     // retransmissions per server before failing over
  std::size_t max_outstanding = 4096;       // requests in flight; Send() refuses beyond
  std::chrono::seconds dead_time{30};       // a server that failed a request is skipped this long
  std::string nas_identifier = "spigot";    // NAS-Identifier; empty omits it
  std::optional<std::array<std::uint8_t, 4>> nas_ip;  // NAS-IP-Address
  std::uint32_t framed_mtu = kDefaultFramedMtu;       // Framed-MTU; 0 omits it
};

struct AccessRequest {
  std::string user_name;  // the EAP identity
  Bytes eap_message;      // one EAP packet from the peer
  Bytes state;            // State from the previous Access-Challenge of this login
  std::string calling_station;  // the peer: "198.51.100.7[4500]"
  std::string called_station;   // the gateway
};

struct Reply : ReplyAttributes {
  enum class Outcome : std::uint8_t { kAccept, kReject, kChallenge, kTimeout /* every server tried */ };
  Outcome outcome = Outcome::kTimeout;
  std::chrono::microseconds rtt{0};  // Send() to the reply (or to giving up)
};

class Client {
 public:
  using Handle = std::uint64_t;  // 0: refused
  using Done = std::function<void(Reply)>;

  struct ServerStats {
    std::string address;     // "192.0.2.10:1812"
    bool dead = false;       // skipped now (unless all are)
    std::uint64_t requests = 0;  // requests sent to it (first transmissions)
    std::uint64_t timeouts = 0;  // requests it left unanswered through every retransmission
  };
  struct Stats {
    std::uint64_t requests = 0;     // accepted by Send()
    std::uint64_t retransmits = 0;
    std::uint64_t accepts = 0, rejects = 0, challenges = 0;
    std::uint64_t timeouts = 0;     // requests that failed on every server
    std::uint64_t failovers = 0;    // moves of a request to the next server
    std::uint64_t refused_full = 0;     // Send() at max_outstanding
    std::uint64_t refused_invalid = 0;  // Send() with a request that cannot be encoded
    std::uint64_t send_errors = 0;      // sendto() failures (the retransmit timer covers them)
    std::size_t outstanding = 0;        // gauge
    std::size_t sockets = 0;            // gauge
    struct Dropped {
      std::uint64_t malformed = 0;
      std::uint64_t wrong_source = 0;  // not from a server this socket has requests for
      std::uint64_t unknown_id = 0;
      std::uint64_t late = 0;          // to a request that finished, failed over or was cancelled
      std::uint64_t bad_authenticator = 0;
      std::uint64_t bad_message_authenticator = 0;
    } dropped;
    struct Rtt {
      std::uint64_t count = 0;  // replies (timeouts not included)
      std::chrono::microseconds sum{0}, max{0};
    } rtt;
    std::vector<ServerStats> servers;  // the configured servers, in order
  };

  // nullptr (and `error` set) for options that cannot work: no server, an invalid endpoint,
  // an empty secret, a zero timeout or max_outstanding.
  static std::unique_ptr<Client> Create(io::EventLoop& loop, ClientOptions options, std::string* error = nullptr);
  ~Client();  // cancels every request (no callback runs) and closes its sockets
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  Handle Send(AccessRequest request, Done done);
  // `done` will not run. Safe for 0, unknown and finished handles, and inside any callback.
  void Cancel(Handle handle);
  // For requests sent from now on (`spigot reload`). false (and `error`) leaves the old options.
  bool Reconfigure(ClientOptions options, std::string* error = nullptr);

  Stats stats() const;

 private:
  struct Config;
  struct Socket;
  struct Request;
  struct ServerState {
    std::optional<io::Clock::TimePoint> dead_until;
    std::uint64_t requests = 0;
    std::uint64_t timeouts = 0;
  };

  Client(io::EventLoop& loop, std::shared_ptr<const Config> config);

  // Request steps, in the order a request meets them.
  bool StartOnServer(Request& r);        // new identifier and authenticator, first transmission
  void Transmit(Request& r);             // (re)sends r's packet, arms "radius.retransmit"
  void OnRetransmitTimer(Handle handle); // again, fail over, or kTimeout
  std::optional<std::size_t> NextServer(const Request& r) const;
  void OnReadable(std::size_t socket_index);
  void HandleDatagram(std::size_t socket_index, const io::Endpoint& from, std::span<const std::uint8_t> datagram);
  void Finish(Handle handle, Reply reply);  // removes the request, then runs its `done`

  // Identifier bookkeeping.
  bool AllocateId(Request& r);
  void ReleaseId(Request& r);
  std::optional<std::size_t> OpenSocket(int family);

  bool IsDead(const std::string& server) const;

  io::EventLoop& loop_;
  std::shared_ptr<const Config> config_;
  std::vector<std::unique_ptr<Socket>> sockets_;
  std::unordered_map<Handle, std::unique_ptr<Request>> requests_;
  std::map<std::string, ServerState> servers_;  // by address, across reconfigurations
  Handle next_handle_ = 1;
  Stats stats_;
  std::vector<std::uint8_t> recv_buffer_;  // kRecvSlots datagrams of 4096 octets, made on first use
  std::shared_ptr<bool> alive_;  // false once destroyed: a callback that destroyed us stops the reader
};

}  // namespace spigot::radius
