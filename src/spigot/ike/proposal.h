// Proposals: strongSwan's proposal syntax ("aes128gcm16-prfsha256-x25519", "aes256-sha256")
// to IKEv2 SA payload proposals (RFC 7296 3.3), the responder's choice among the initiator's
// proposals (2.7), and the negotiated algorithms.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "spigot/crypto/dh.h"
#include "spigot/crypto/esp_cipher.h"
#include "spigot/crypto/ike_cipher.h"
#include "spigot/crypto/prf.h"
#include "spigot/ike/message.h"

namespace spigot::ike {

// Parses a comma-separated list of proposals for `protocol` (IKE or ESP). On failure returns
// false and says which keyword is wrong in `error`. ESP proposals without an ESN keyword get
// "noesn" (strongSwan's default); IKE proposals without a PRF take it from the integrity
// algorithm (sha256 -> prfsha256), as strongSwan does.
bool ParseProposals(std::string_view text, ProtocolId protocol, std::vector<Proposal>& out,
                    std::string& error);

// The responder's choice (2.7): the first of `ours` (our preference order) that shares, for
// every transform type either side lists, a transform with one of `theirs`. The result holds
// exactly one transform of each type, the number and SPI of the peer's proposal.
std::optional<Proposal> SelectProposal(const std::vector<Proposal>& ours,
                                       const std::vector<Proposal>& theirs);

// True if `chosen` (a responder's answer) is one transform of each type offered in one of
// `offered` — an initiator accepts nothing else.
bool AcceptableChoice(const std::vector<Proposal>& offered, const Proposal& chosen);

struct IkeAlgorithms {
  crypto::IkeEncr encr;
  crypto::PrfAlg prf;
  std::optional<crypto::IntegAlg> integ;  // absent for AEADs
  std::uint16_t dh_group;
};
struct ChildAlgorithms {
  crypto::EspSuite suite;
  bool esn = false;
  std::uint16_t dh_group = 0;  // PFS group for CREATE_CHILD_SA; 0: none
};

// The algorithms of a single-transform-per-type proposal; nullopt if one is unsupported or
// missing.
std::optional<IkeAlgorithms> IkeAlgorithmsOf(const Proposal& p);
std::optional<ChildAlgorithms> ChildAlgorithmsOf(const Proposal& p);

// The first DH group listed in the first proposal (what an initiator puts in its KE payload).
std::uint16_t PreferredDhGroup(const std::vector<Proposal>& proposals);
// Whether any proposal lists `group`.
bool OffersDhGroup(const std::vector<Proposal>& proposals, std::uint16_t group);

// strongSwan-style names for logs and `spigot sas`, e.g. "AES_GCM_16_128/PRF_HMAC_SHA2_256/CURVE_25519".
std::string Describe(const IkeAlgorithms& a);
std::string Describe(const ChildAlgorithms& a);

}  // namespace spigot::ike
