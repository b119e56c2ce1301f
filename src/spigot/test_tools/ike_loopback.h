// An in-process IKE host pair: two IkeSas wired back to back through bounded in-memory
// queues, with a small SPI allocator. Used by ike_test, spigot_bench (BM_IkeHandshake,
// BM_IkeSaMemory) and the IKE responder fuzzer; never by the daemon. Built as its own library,
// spigot_test_tools_ike (no GoogleTest, so fuzz builds have it too). It keeps namespace
// spigot::ike: it is an IKE host, like the gateway's.
#pragma once

#include <functional>

#include <deque>
#include <cstdint>
#include <map>
#include <set>
#include <memory>

#include "spigot/ike/ike_sa.h"

namespace spigot::ike {

class LoopbackHost : public IkeSaHost {
 public:
  // Messages in flight toward this host's SA. Bounded: a test that floods it fails loudly.
  static constexpr std::size_t kMaxInFlight = 64;

  void SendIke(IkeSa& sa, const Bytes& datagram) override;
  std::optional<std::uint32_t> AllocateChildSpi(bool rekey, NotifyType& refusal) override;
  void ReleaseChildSpi(std::uint32_t spi) override { live_spis.erase(spi); }
  void InstallChild(IkeSa& sa, const ChildSaInfo& child) override;
  void RemoveChild(IkeSa& sa, std::uint32_t spi_in) override;
  std::shared_ptr<const ConnectionParams> ConnectionForPeer(const Identity& peer,
                                                            const Address& remote) override;
  void StateChanged(IkeSa&) override { ++state_changes; }
  std::uint64_t NewIkeSpi() override;
  void AdoptIkeSa(IkeSa& old, std::unique_ptr<IkeSa> replacement) override;
  // Simultaneous IKE rekeys (2.8.2): an IKE SA adopted beside the current one waits in
  // `retired`; a surviving one becomes the current one.
  bool KeepsIkeRekeyCandidates() const override { return keeps_rekey_candidates; }
  void AdoptIkeSaBeside(IkeSa& old, std::unique_ptr<IkeSa> sa) override;
  IkeSa* FindIkeSa(std::uint64_t our_spi) override { return Find(our_spi); }
  void IkeRekeySurvivor(IkeSa& old, IkeSa& survivor) override;
  bool keeps_rekey_candidates = true;
  // A fake address pool: kNotServed unless `serves_vips`; otherwise the first address of
  // `vip_pool` of each family asked for, with vip_dns4 and vip_subnets, or kFailed when the
  // pool has none of them.
  CpResult AssignVirtualIps(IkeSa& sa, bool want_v4, bool want_v6, VirtualIps& out) override;
  // Work of the kinds in `offload` (IkeSaHost::Offload) is kept in `offloaded` for the test to
  // run (on a thread of its choice) before it calls the SA's ResumeOffloaded; other work, and
  // all of it once `offload_room` hand-offs were taken, the SA does itself (a busy pool).
  bool Offload(IkeSa& sa, OffloadKind kind, std::function<void()> work) override {
    if (offload.count(kind) == 0 || offload_room == 0) return false;
    --offload_room;
    offloaded.push_back({kind, std::move(work), sa.role() == IkeSa::Role::kInitiator ? sa.spi_i() : sa.spi_r()});
    return true;
  }
  struct OffloadedWork {
    OffloadKind kind;
    std::function<void()> work;
    std::uint64_t spi;  // the SA's own SPI: Find(spi), if it still exists
  };
  std::set<OffloadKind> offload;
  std::size_t offload_room = SIZE_MAX;
  std::vector<OffloadedWork> offloaded;
  // The CHILD SAs' moves (RFC 7296 2.23, RFC 4555 3.5): the address each went to, in order.
  void PeerMoved(IkeSa& sa, const Address&) override { esp_moves.push_back(sa.esp_remote()); }
  std::vector<Address> esp_moves;
  // The SA with our SPI `spi`: the current one or one replaced by a rekey.
  IkeSa* Find(std::uint64_t spi);

  LoopbackHost* peer = nullptr;
  std::deque<Bytes> inbox;        // datagrams sent to this host
  bool drop_next_send = false;    // lose our next outgoing datagram
  // A lossy link: each outgoing datagram it returns true for is lost (counted in `lost`).
  std::function<bool(const Bytes&)> lose;
  std::uint64_t lost = 0;
  std::size_t spi_limit = 1u << 20;
  std::uint32_t next_spi = 0xC0000100;
  std::map<std::uint32_t, bool> live_spis;  // allocated inbound SPIs
  std::map<std::uint32_t, ChildSaInfo> installed;
  std::vector<std::shared_ptr<const ConnectionParams>> connections;
  bool serves_vips = false;
  std::vector<TrafficSelector> vip_pool;
  std::vector<Bytes> vip_dns4;
  std::vector<TrafficSelector> vip_subnets;
  int vip_requests = 0;  // AssignVirtualIps calls
  int state_changes = 0;
  std::uint64_t sent = 0;
  std::unique_ptr<IkeSa>* current = nullptr;   // the pair's field holding this side's SA
  std::vector<std::unique_ptr<IkeSa>> retired;  // replaced by IKE rekeys, kept until deleted
};

// Two hosts and their IKE SAs; Pump() delivers queued datagrams until both inboxes are empty.
struct LoopbackPair {
  LoopbackPair(std::shared_ptr<const ConnectionParams> initiator_conn,
               std::shared_ptr<const ConnectionParams> responder_conn);
  void Pump(TimePoint now, int max_rounds = 64);

  LoopbackHost ihost, rhost;
  IkeCounters icounters, rcounters;
  std::unique_ptr<IkeSa> initiator;
  std::unique_ptr<IkeSa> responder;  // created when the first request arrives
  std::shared_ptr<const ConnectionParams> responder_conn;
};

// A connection for tests: PSK "secret", IDs "@alice"/"@bob", 192.0.2.0/24 <-> 198.51.100.0/24.
std::shared_ptr<ConnectionParams> TestConnection(bool initiator, const char* ike, const char* esp);

}  // namespace spigot::ike
