// IKEv2 key derivation: SKEYSEED and the SK_* keys (RFC 7296 2.14), their rekeyed form (2.18),
// CHILD SA key material (2.17), PSK authentication (2.15) and NAT detection hashes (2.23).
#pragma once

#include <cstdint>
#include <span>

#include "spigot/crypto/prf.h"
#include "spigot/crypto/secure_bytes.h"
#include "spigot/ike/message.h"
#include "spigot/ike/proposal.h"

namespace spigot::ike {

struct IkeSaKeys {
  crypto::SecureBytes sk_d, sk_ai, sk_ar, sk_ei, sk_er, sk_pi, sk_pr;
};

// 2.14: SKEYSEED = prf(Ni | Nr, g^ir); {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr}
//       = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr).
// 2.18 (IKE SA rekey): SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr), with the new SPIs;
//       pass the old SA's SK_d and its PRF as `rekey_sk_d` / `old_prf`.
// SK_e* include the 4-octet salt for AEADs (RFC 5282 7.1); SK_a* are empty for AEADs.
bool DeriveIkeSaKeys(const IkeAlgorithms& algs, std::span<const std::uint8_t> ni,
                     std::span<const std::uint8_t> nr, std::span<const std::uint8_t> shared,
                     std::uint64_t spi_i, std::uint64_t spi_r, IkeSaKeys& out,
                     const crypto::SecureBytes* rekey_sk_d = nullptr,
                     crypto::PrfAlg old_prf = crypto::PrfAlg::kHmacSha256);

// The SK payload keys for messages we send (`outbound`) or receive, given our role.
SkKeys MakeSkKeys(const IkeAlgorithms& algs, const IkeSaKeys& keys, bool initiator, bool outbound);

// 2.17: KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr). The first half protects initiator-to-
// responder traffic, the second responder-to-initiator, each laid out as EspCipher expects.
struct ChildKeymat {
  crypto::SecureBytes i_to_r, r_to_i;
};
bool DeriveChildKeymat(crypto::PrfAlg prf, const crypto::SecureBytes& sk_d,
                       crypto::EspSuite suite, std::span<const std::uint8_t> shared,
                       std::span<const std::uint8_t> ni, std::span<const std::uint8_t> nr,
                       ChildKeymat& out);

// 2.15: what AUTH covers, <message> | <peer nonce> | prf(SK_p, IDx') (InitiatorSignedOctets,
// ResponderSignedOctets); a signature method signs exactly these octets.
crypto::SecureBytes SignedOctets(crypto::PrfAlg prf, std::span<const std::uint8_t> message,
                                 std::span<const std::uint8_t> peer_nonce, const crypto::SecureBytes& sk_p,
                                 std::span<const std::uint8_t> id_body);

// 2.15: AUTH = prf(prf(PSK, "Key Pad for IKEv2"), <message> | <peer nonce> | prf(SK_p, IDx')),
// where IDx' is the ID payload body (type, 3 reserved octets, data).
crypto::SecureBytes PskAuth(crypto::PrfAlg prf, std::span<const std::uint8_t> psk,
                            std::span<const std::uint8_t> message,
                            std::span<const std::uint8_t> peer_nonce,
                            const crypto::SecureBytes& sk_p, std::span<const std::uint8_t> id_body);

// 2.23: SHA-1(SPIi | SPIr | IP address | port) for NAT_DETECTION_*_IP notifies.
Bytes NatDetectionHash(std::uint64_t spi_i, std::uint64_t spi_r,
                       std::span<const std::uint8_t> address, std::uint16_t port);

}  // namespace spigot::ike
