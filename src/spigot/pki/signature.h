// Signatures for IKE AUTH payloads (RFC 7296 2.15, 3.8; RFC 7427; RFC 4754), through OpenSSL.
//
// Methods:
//   1  RSA Digital Signature: RSASSA-PKCS1-v1_5 with SHA-1 (the hash RFC 7296 implies).
//   9, 10, 11  ECDSA with SHA-256 on P-256, SHA-384 on P-384, SHA-512 on P-521 (RFC 4754):
//      the signature is r | s, each the curve's size, not DER.
//   14 Digital Signature (RFC 7427): AUTH data = one octet length, the DER AlgorithmIdentifier,
//      the signature (RSA PKCS#1 v1.5 or PSS, ECDSA in DER). The hash comes from what both
//      sides announced in SIGNATURE_HASH_ALGORITHMS (RFC 7427 4).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "spigot/pki/certificate.h"

namespace spigot::pki {

inline constexpr std::uint8_t kAuthRsaSignature = 1;
inline constexpr std::uint8_t kAuthEcdsaSha256 = 9;
inline constexpr std::uint8_t kAuthEcdsaSha384 = 10;
inline constexpr std::uint8_t kAuthEcdsaSha512 = 11;
inline constexpr std::uint8_t kAuthDigitalSignature = 14;

// RFC 7427 4 hash algorithm identifiers (IKEv2 "Hash Algorithms" registry).
enum class HashAlgorithm : std::uint16_t { kSha1 = 1, kSha256 = 2, kSha384 = 3, kSha512 = 4 };
// What we announce in SIGNATURE_HASH_ALGORITHMS (SHA-1 is not: RFC 8247 says MUST NOT).
inline constexpr HashAlgorithm kOurHashes[] = {HashAlgorithm::kSha256, HashAlgorithm::kSha384,
                                               HashAlgorithm::kSha512};
// The notify's data for kOurHashes, and the reverse (unknown identifiers skipped; an odd
// length reads as no list).
std::vector<std::uint8_t> EncodeHashAlgorithms();
std::vector<HashAlgorithm> DecodeHashAlgorithms(std::span<const std::uint8_t> data);

struct SignOptions {
  // The hashes the peer announced; empty: the peer sent no SIGNATURE_HASH_ALGORITHMS, so the
  // classic method for the key (1 or 9/10/11) is used.
  std::vector<HashAlgorithm> peer_hashes;
  bool rsa_pss = false;  // RSA with method 14: RSASSA-PSS (salt = hash length) not PKCS#1 v1.5
};

struct AuthSignature {
  std::uint8_t method = 0;
  std::vector<std::uint8_t> data;  // the AUTH payload's data after the method
};

// Signs `octets` (the InitiatorSignedOctets / ResponderSignedOctets of 2.15). nullopt with the
// reason in *error (no hash in common, a key OpenSSL refuses).
std::optional<AuthSignature> Sign(const PrivateKey& key, std::span<const std::uint8_t> octets,
                                  const SignOptions& options, std::string* error);

// Checks an AUTH payload (method, data) over `octets` with the certificate's public key.
// nullopt if it verifies; else the reason ("method 9 needs a P-256 key", "signature does not
// verify", "unknown signature algorithm ..."). Never reads outside `data`.
std::optional<std::string> Verify(const Certificate& signer, std::uint8_t method, std::span<const std::uint8_t> data,
                                  std::span<const std::uint8_t> octets);

}  // namespace spigot::pki
