// CHILD SAs' own outbound policies (issue 11): one per peer's tunnel, not one per connection.
//
// Each CHILD SA carries the traffic its negotiated (narrowed, RFC 7296 2.9) selectors cover;
// a concentrator's %any connection has thousands of peers, each with its own inner addresses.
// A policy here is such a set of selectors with the CHILD SAs that serve it: a rekey's
// successor serves its predecessor's policy (make-before-break within one policy); a second
// CHILD SA of the same peer with the same selectors joins it too (the newest carries the
// traffic, as before). The data plane's SPD gets one entry per policy, not per SA.
//
// Claims: two different peers (connection + authenticated identity) must never share a
// destination silently. Conflict() answers whether a new CHILD SA's selectors overlap — on
// both the local and the remote side — those of another peer's policy; the responder refuses
// such a CHILD SA with TS_UNACCEPTABLE. The index is ordered by remote prefix, so the check is
// O(log N + prefix lengths + overlapping entries), not a scan of every peer.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "spigot/gateway/ports.h"
#include "spigot/policy/prefix.h"

namespace spigot::gateway {

class SaPolicies {
 public:
  struct Policy {
    std::string peer;  // IkeSaTable::PeerKey of the IKE SA that negotiated it
    std::vector<policy::Prefix> locals;
    std::vector<policy::Prefix> remotes;
    std::vector<std::uint32_t> members;  // inbound SPIs of the CHILD SAs serving it, oldest first
  };

  // The policy for a new CHILD SA `spi_in` of `peer` with these selectors: the peer's policy
  // with exactly these selectors if there is one, else a new one (`*created` set: the caller
  // gives it to the data plane). Ids are reused after Leave() freed them.
  policy::PolicyId Join(const std::string& peer, std::vector<policy::Prefix> locals,
                        std::vector<policy::Prefix> remotes, std::uint32_t spi_in, bool* created);
  // A rekey's successor serves its predecessor's policy.
  void JoinExisting(policy::PolicyId id, std::uint32_t spi_in);
  // CHILD SA `spi_in` no longer serves `id`; true if that was the last one (the policy is
  // gone: the caller removes it from the data plane).
  bool Leave(policy::PolicyId id, std::uint32_t spi_in);

  // The peer key of another peer whose policy overlaps these selectors, or null.
  const std::string* Conflict(const std::string& peer, const std::vector<policy::Prefix>& locals,
                              const std::vector<policy::Prefix>& remotes) const;

  const Policy* Find(policy::PolicyId id) const;
  std::size_t size() const { return policies_.size(); }

 private:
  // A remote prefix in the claims index: (family, network, length), ordered by address.
  using RemoteKey = std::tuple<policy::Family, std::array<std::uint8_t, 16>, std::uint8_t>;
  static RemoteKey KeyOf(const policy::Prefix& p) { return {p.family, p.address, p.prefix_len}; }
  static std::string SelectorKey(const std::string& peer, const std::vector<policy::Prefix>& locals,
                                 const std::vector<policy::Prefix>& remotes);
  // Whether policy `id` (of another peer) overlaps `locals` on the local side.
  bool LocalsOverlap(policy::PolicyId id, const std::vector<policy::Prefix>& locals) const;

  std::unordered_map<policy::PolicyId, Policy> policies_;
  std::unordered_map<std::string, policy::PolicyId> by_selectors_;  // SelectorKey -> id
  std::multimap<RemoteKey, policy::PolicyId> claims_;
  std::vector<policy::PolicyId> free_ids_;
  policy::PolicyId next_id_ = kFirstSaPolicy;
};

}  // namespace spigot::gateway
