// Helpers shared by the files that define IkeSa (ike_sa.cc and ike_sa_*.cc, one per exchange).
// Not for other users: include ike_sa.h.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <span>
#include <vector>

#include "spigot/crypto/dh.h"
#include "spigot/ike/ike_sa.h"

namespace spigot::ike::internal {

// A fresh Ni or Nr (kNonceLen bytes, 2.10).
Bytes RandomNonce();
// 2.8.1/2.8.2: nonces compare as octet strings, a prefix being the lower. The lower of two,
// and whether `a` is lower than `b`.
Bytes LowerNonce(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b);
bool NonceBelow(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b);
Payload Notify(NotifyType type, Bytes data = {}, ProtocolId proto = ProtocolId::kNone,
               Bytes spi = {});
// "NO_PROPOSAL_CHOSEN", ... for failure messages.
const char* NotifyName(NotifyType t);

// SPIs and DH group numbers on the wire, through the one writer and reader (STYLE.md 3).
Bytes ChildSpiBytes(std::uint32_t spi);
// The data of an INVALID_KE_PAYLOAD notify: the group the responder wants (3.10.1).
Bytes DhGroupBytes(std::uint16_t group);
// A CHILD SA's SPI (4 bytes); 0 if `b` is not 4 bytes long.
std::uint32_t SpiFromBytes(std::span<const std::uint8_t> b);

// ESP proposals for IKE_AUTH carry no DH transform: no KE is exchanged there (1.2).
std::vector<Proposal> WithoutDh(std::vector<Proposal> ps);
// A soft lifetime shortened by a random fraction of up to `jitter` (spreads rekeys).
TimePoint Jittered(TimePoint from, std::chrono::seconds life, double jitter);

}  // namespace spigot::ike::internal

namespace spigot::ike {

// A Diffie-Hellman step that may run on an IKE worker (ike_sa_offload.cc): it owns all it reads.
struct IkeSa::DhWork {
  std::uint16_t group = 0;
  Bytes peer_public;                      // empty: only our key pair is made
  std::unique_ptr<crypto::DhKeyPair> dh;  // ours: given (a response to our request) or made here
  crypto::SecureBytes shared;
  bool ok = false;  // the key pair made, the peer's value valid
  std::atomic<bool> done{false};

  void Run() {
    if (!dh) dh = crypto::DhKeyPair::Generate(group);
    ok = dh != nullptr && (peer_public.empty() || dh->ComputeShared(peer_public, shared));
    done.store(true, std::memory_order_release);
  }
};

}  // namespace spigot::ike
