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

// Transforms RFC 8247 deprecates that spigot still implements, because native clients (Windows'
// defaults) send them: MODP-1024 (group 2, RFC 8247 2.4 "SHOULD NOT") and 3DES (ENCR_3DES,
// 2.1 "SHOULD NOT"). A connection lists them only where its `allow_weak` names them; a peer
// offering them otherwise gets NO_PROPOSAL_CHOSEN, counted per transform
// (IkeCounters::weak_refused_*). Values are bits of a set.
enum WeakTransform : unsigned {
  kWeakModp1024 = 1u << 0,  // keyword "modp1024"
  kWeak3des = 1u << 1,      // keyword "3des"
};

// Parses a comma-separated list of proposals for `protocol` (IKE or ESP). On failure returns
// false and says which keyword is wrong in `error`. ESP proposals without an ESN keyword get
// "noesn" (strongSwan's default); IKE proposals without a PRF take it from the integrity
// algorithm (sha256 -> prfsha256, sha1 -> prfsha1), as strongSwan does. A weak transform
// (above) not in `allow_weak` is an error naming it.
bool ParseProposals(std::string_view text, ProtocolId protocol, std::vector<Proposal>& out,
                    std::string& error, unsigned allow_weak = 0);

// `allow_weak`'s value: a comma-separated list of weak transforms' keywords ("modp1024, 3des"),
// or empty. False, with the offending word in `error`, for anything else.
bool ParseWeakTransforms(std::string_view text, unsigned& out, std::string& error);
// The weak transforms a proposal (or any of a list) names, as WeakTransform bits.
unsigned WeakTransformsOf(const Proposal& p);
unsigned WeakTransformsOf(const std::vector<Proposal>& proposals);
// Their keywords, comma-separated ("modp1024, 3des"), for logs and errors.
std::string WeakTransformNames(unsigned weak);

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
