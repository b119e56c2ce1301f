// Measures IKE handshakes in process, for `spigot bench ike` (handshakes per second on one
// thread, memory per established IKE SA) and for `spigot plan`'s default capacity (that rate
// times the workers). An initiator and a responder IkeSa, each with a minimal host of its own,
// hand each other datagrams in memory on the calling thread: no sockets, no SPI pool, no SA
// database, no timers — only the cost of the exchanges themselves (the DH, the PRFs, the AUTH
// and the CHILD SA key derivation). Not a test tool: it has no knobs for losing or delaying
// messages; tests use test_tools/ike_loopback.h.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "spigot/ike/ike_sa.h"

namespace spigot::ike {

// Both ends' connections: the same proposals on both, one PSK, made-up identities and
// selectors (192.0.2.0/24 <-> 198.51.100.0/24). Parsed once, shared by any number of pairs.
struct HandshakeConnections {
  std::shared_ptr<const ConnectionParams> initiator;
  std::shared_ptr<const ConnectionParams> responder;
};

// nullopt, with `error` saying which proposal is wrong, if a proposal does not parse
// (strongSwan syntax, as in the config: "aes128gcm16-prfsha256-x25519", "aes128gcm16").
std::optional<HandshakeConnections> MakeHandshakeConnections(std::string_view ike_proposal,
                                                             std::string_view esp_proposal,
                                                             std::string& error);

// One initiator, one responder and their hosts. Run() negotiates IKE_SA_INIT and IKE_AUTH with
// the first CHILD SA; afterwards both IKE SAs stay established until the pair is destroyed,
// which is what `spigot bench ike --pairs` keeps alive to estimate memory per IKE SA. Movable
// (the hosts and SAs live on the heap), so pairs can be kept in a vector.
class HandshakePair {
 public:
  explicit HandshakePair(const HandshakeConnections& connections);
  HandshakePair(HandshakePair&&) noexcept;
  HandshakePair& operator=(HandshakePair&&) noexcept;
  ~HandshakePair();

  // Call once. True if both IKE SAs are established with one CHILD SA each.
  bool Run(TimePoint now);
  bool established() const;
  // After a failed Run(): why, e.g. "NO_PROPOSAL_CHOSEN from peer" (empty if nobody said).
  std::string failure() const;

 private:
  class Host;
  std::unique_ptr<Host> initiator_;
  std::unique_ptr<Host> responder_;
};

struct HandshakeMeasurement {
  bool ok = false;
  std::string error;  // iff !ok
  std::uint64_t handshakes = 0;
  double seconds = 0;
  double handshakes_per_second = 0;  // on one thread
};

// Full handshakes (a new HandshakePair each) back to back on the calling thread for about
// `seconds` (at least one). Fails on a proposal that does not parse or the first handshake that
// does not complete.
HandshakeMeasurement MeasureHandshakes(double seconds, std::string_view ike_proposal,
                                       std::string_view esp_proposal);

}  // namespace spigot::ike
