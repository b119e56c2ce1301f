// Known-answer tests for IKEv2 key derivation (keys.h) against
// src/spigot/ike/testdata/ike_kdf_vectors.txt, made by scripts/gen_ike_kdf_vectors.py: an
// implementation written from the text of RFC 7296 2.13-2.18, 2.15 and 2.23 in Python's standard
// library, sharing no code with keys.cc or prf.cc. Each block names its RFC section.
#include "spigot/ike/keys.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "spigot/crypto/esp_cipher.h"
#include "spigot/crypto/ike_cipher.h"
#include "spigot/crypto/prf.h"
#include "spigot/test_tools/hex.h"

namespace spigot::ike {
namespace {

using crypto::EspSuite;
using crypto::IkeEncr;
using crypto::IntegAlg;
using crypto::PrfAlg;
using crypto::SecureBytes;
using test_tools::FromHex;
using test_tools::ReadVectorFile;
using test_tools::ToHex;
using test_tools::VectorBlock;

constexpr char kVectorFile[] = "src/spigot/ike/testdata/ike_kdf_vectors.txt";

// The SK_* in the order of RFC 7296 2.14, with the vector file's field names.
constexpr const char* kSkNames[] = {"sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi", "sk_pr"};

std::vector<VectorBlock> BlocksOfKind(const std::string& kind) {
  std::vector<VectorBlock> out;
  for (auto& b : ReadVectorFile(kVectorFile)) {
    if (b.at("kind") == kind) out.push_back(std::move(b));
  }
  return out;
}

Bytes Field(const VectorBlock& b, const std::string& key) { return FromHex(b.at(key)); }

SecureBytes Secret(const VectorBlock& b, const std::string& key) {
  return SecureBytes(Field(b, key));
}

// The 8 octets of an SPI as on the wire (big-endian) as DeriveIkeSaKeys takes it.
std::uint64_t Spi(const VectorBlock& b, const std::string& key) {
  const Bytes bytes = Field(b, key);
  EXPECT_EQ(bytes.size(), 8u) << key;
  std::uint64_t v = 0;
  for (std::uint8_t x : bytes) v = v << 8 | x;
  return v;
}

PrfAlg PrfByName(const std::string& name) {
  if (name == "PRF_HMAC_SHA2_256") return PrfAlg::kHmacSha256;
  if (name == "PRF_HMAC_SHA2_384") return PrfAlg::kHmacSha384;
  EXPECT_EQ(name, "PRF_HMAC_SHA2_512");
  return PrfAlg::kHmacSha512;
}

std::optional<IntegAlg> IntegByName(const std::string& name) {
  if (name == "NONE") return std::nullopt;
  if (name == "AUTH_HMAC_SHA2_256_128") return IntegAlg::kHmacSha256_128;
  if (name == "AUTH_HMAC_SHA2_384_192") return IntegAlg::kHmacSha384_192;
  EXPECT_EQ(name, "AUTH_HMAC_SHA2_512_256");
  return IntegAlg::kHmacSha512_256;
}

IkeEncr IkeEncrByName(const std::string& name) {
  if (name == "AES_CBC_128") return IkeEncr::kAesCbc128;
  if (name == "AES_CBC_256") return IkeEncr::kAesCbc256;
  if (name == "AES_GCM_16_128") return IkeEncr::kAesGcm16_128;
  if (name == "AES_GCM_16_256") return IkeEncr::kAesGcm16_256;
  EXPECT_EQ(name, "CHACHA20_POLY1305");
  return IkeEncr::kChaCha20Poly1305;
}

EspSuite EspSuiteByName(const std::string& name) {
  if (name == "AES_GCM_16_128") return EspSuite::kAesGcm128;
  if (name == "AES_GCM_16_256") return EspSuite::kAesGcm256;
  if (name == "CHACHA20_POLY1305") return EspSuite::kChaCha20Poly1305;
  if (name == "AES_CBC_128/HMAC_SHA2_256_128") return EspSuite::kAesCbc128HmacSha256;
  EXPECT_EQ(name, "AES_CBC_256/HMAC_SHA2_256_128");
  return EspSuite::kAesCbc256HmacSha256;
}

IkeAlgorithms AlgorithmsOf(const VectorBlock& b) {
  // The DH group does not enter the key derivation: only its shared secret does.
  return IkeAlgorithms{IkeEncrByName(b.at("encr")), PrfByName(b.at("prf")),
                       IntegByName(b.at("integ")), 0};
}

const SecureBytes& Key(const IkeSaKeys& k, int i) {
  const SecureBytes* all[] = {&k.sk_d, &k.sk_ai, &k.sk_ar, &k.sk_ei, &k.sk_er, &k.sk_pi, &k.sk_pr};
  return *all[i];
}

// Runs DeriveIkeSaKeys on an ike_sa or ike_sa_rekey block, with `ni` / `nr` in place of the
// block's own when given.
IkeSaKeys DeriveFromBlock(const VectorBlock& b, const Bytes* ni = nullptr,
                          const Bytes* nr = nullptr) {
  const Bytes block_ni = Field(b, "ni"), block_nr = Field(b, "nr");
  const SecureBytes shared = Secret(b, "shared");
  IkeSaKeys keys;
  bool ok;
  if (b.at("kind") == "ike_sa_rekey") {
    const SecureBytes old_sk_d = Secret(b, "old_sk_d");
    ok = DeriveIkeSaKeys(AlgorithmsOf(b), ni ? *ni : block_ni, nr ? *nr : block_nr, shared,
                         Spi(b, "spi_i"), Spi(b, "spi_r"), keys, &old_sk_d,
                         PrfByName(b.at("old_prf")));
  } else {
    ok = DeriveIkeSaKeys(AlgorithmsOf(b), ni ? *ni : block_ni, nr ? *nr : block_nr, shared,
                         Spi(b, "spi_i"), Spi(b, "spi_r"), keys);
  }
  EXPECT_TRUE(ok);
  return keys;
}

ChildKeymat ChildFromBlock(const VectorBlock& b, const Bytes* ni = nullptr,
                           const Bytes* nr = nullptr) {
  const Bytes block_ni = Field(b, "ni"), block_nr = Field(b, "nr");
  ChildKeymat km;
  EXPECT_TRUE(DeriveChildKeymat(PrfByName(b.at("prf")), Secret(b, "sk_d"),
                                EspSuiteByName(b.at("suite")), Secret(b, "shared"),
                                ni ? *ni : block_ni, nr ? *nr : block_nr, km));
  return km;
}

Bytes FlipLowBit(Bytes b, std::size_t index) {
  b.at(index) ^= 0x01;
  return b;
}

// ---- RFC 7296 2.14 ---------------------------------------------------------------------------

TEST(KeysKatIkeSa, SkeyseedAndSevenKeysRfc7296Section2_14) {
  const auto blocks = BlocksOfKind("ike_sa");
  ASSERT_EQ(blocks.size(), 5u);  // sets (a) to (e)
  for (const auto& b : blocks) {
    SCOPED_TRACE(b.at("name"));
    const IkeSaKeys keys = DeriveFromBlock(b);
    for (int i = 0; i < 7; ++i) {
      EXPECT_EQ(ToHex(Key(keys, i)), ToHex(Field(b, kSkNames[i]))) << kSkNames[i];
    }
  }
}

TEST(KeysKatIkeSa, KeyLengthsFollowTheAlgorithms) {
  // 2.13/2.14: SK_d, SK_p* as long as the PRF's preferred key; SK_a* the integrity key, empty
  // for AEADs; SK_e* the cipher key plus the AEAD salt (RFC 5282 7.1, RFC 7634).
  for (const auto& b : BlocksOfKind("ike_sa")) {
    SCOPED_TRACE(b.at("name"));
    const IkeAlgorithms algs = AlgorithmsOf(b);
    const IkeSaKeys keys = DeriveFromBlock(b);
    const std::size_t prf_len = crypto::PrfOutputLength(algs.prf);
    const std::size_t integ_len = algs.integ ? crypto::IntegKeyLength(*algs.integ) : 0;
    const std::size_t encr_len = crypto::IkeEncrInfoFor(algs.encr).keymat_len();
    EXPECT_EQ(keys.sk_d.size(), prf_len);
    EXPECT_EQ(keys.sk_ai.size(), integ_len);
    EXPECT_EQ(keys.sk_ar.size(), integ_len);
    EXPECT_EQ(keys.sk_ei.size(), encr_len);
    EXPECT_EQ(keys.sk_er.size(), encr_len);
    EXPECT_EQ(keys.sk_pi.size(), prf_len);
    EXPECT_EQ(keys.sk_pr.size(), prf_len);
  }
}

// ---- RFC 7296 2.18 ---------------------------------------------------------------------------

TEST(KeysKatIkeSaRekey, OldSkDAndOldPrfRfc7296Section2_18) {
  const auto blocks = BlocksOfKind("ike_sa_rekey");
  ASSERT_EQ(blocks.size(), 3u);  // same PRF, SHA-256 -> SHA-384, SHA-512 -> SHA-256
  for (const auto& b : blocks) {
    SCOPED_TRACE(b.at("name"));
    const IkeSaKeys keys = DeriveFromBlock(b);
    for (int i = 0; i < 7; ++i) {
      EXPECT_EQ(ToHex(Key(keys, i)), ToHex(Field(b, kSkNames[i]))) << kSkNames[i];
    }
  }
}

TEST(KeysKatIkeSaRekey, OldSkDMatchesTheRekeyedSet) {
  // The rekey vectors chain on the 2.14 ones: old_sk_d is an SK_d derived above, so a rekey
  // tests the whole path from the first SA's inputs.
  std::vector<std::string> sk_ds;
  for (const auto& b : BlocksOfKind("ike_sa")) sk_ds.push_back(b.at("sk_d"));
  for (const auto& b : BlocksOfKind("ike_sa_rekey")) {
    SCOPED_TRACE(b.at("name"));
    EXPECT_NE(std::find(sk_ds.begin(), sk_ds.end(), b.at("old_sk_d")), sk_ds.end());
  }
}

// ---- RFC 7296 2.17 ---------------------------------------------------------------------------

TEST(KeysKatChild, KeymatRfc7296Section2_17) {
  const auto blocks = BlocksOfKind("child");
  ASSERT_EQ(blocks.size(), 8u);
  int with_pfs = 0;
  for (const auto& b : blocks) {
    SCOPED_TRACE(b.at("name"));
    if (!Field(b, "shared").empty()) ++with_pfs;
    const ChildKeymat km = ChildFromBlock(b);
    EXPECT_EQ(ToHex(km.i_to_r), ToHex(Field(b, "keymat_i_to_r")));
    EXPECT_EQ(ToHex(km.r_to_i), ToHex(Field(b, "keymat_r_to_i")));
  }
  EXPECT_EQ(with_pfs, 3);
}

TEST(KeysKatChild, EachDirectionIsEncryptionKeySaltIntegrityKey) {
  // 2.17 with RFC 4301 / RFC 4106 8.1 / RFC 7634: the vector file splits each direction into
  // its parts; the concatenation is the layout EspCipher::Init takes (esp_cipher.h).
  for (const auto& b : BlocksOfKind("child")) {
    SCOPED_TRACE(b.at("name"));
    const crypto::EspSuiteInfo& info = crypto::SuiteInfo(EspSuiteByName(b.at("suite")));
    for (const char* d : {"i", "r"}) {
      const std::string dir = d;
      const Bytes enc = Field(b, "encr_key_" + dir), salt = Field(b, "salt_" + dir),
                  integ = Field(b, "integ_key_" + dir);
      EXPECT_EQ(enc.size(), info.enc_key_len);
      EXPECT_EQ(salt.size(), info.salt_len);
      EXPECT_EQ(integ.size(), info.integ_key_len);
      Bytes joined = enc;
      joined.insert(joined.end(), salt.begin(), salt.end());
      joined.insert(joined.end(), integ.begin(), integ.end());
      EXPECT_EQ(ToHex(joined), b.at(dir == "i" ? "keymat_i_to_r" : "keymat_r_to_i"));
      EXPECT_EQ(joined.size(), info.keymat_len());
    }
  }
}

// ---- RFC 7296 2.15 ---------------------------------------------------------------------------

TEST(KeysKatPskAuth, InitiatorAndResponderRfc7296Section2_15) {
  const auto blocks = BlocksOfKind("psk_auth");
  ASSERT_EQ(blocks.size(), 6u);
  int initiators = 0;
  for (const auto& b : blocks) {
    SCOPED_TRACE(b.at("name"));
    if (b.at("role") == "initiator") ++initiators;
    const SecureBytes auth =
        PskAuth(PrfByName(b.at("prf")), Field(b, "psk"), Field(b, "message"),
                Field(b, "peer_nonce"), Secret(b, "sk_p"), Field(b, "id_body"));
    EXPECT_EQ(ToHex(auth), ToHex(Field(b, "auth")));
  }
  EXPECT_EQ(initiators, 3);
}

TEST(KeysKatPskAuth, SkPComesFromTheIkeSaVectors) {
  // The PSK vectors chain on the 2.14 ones: sk_p is the SK_pi (initiator) or SK_pr (responder)
  // of an IKE SA vector, so the AUTH checked above follows from that SA's inputs.
  std::vector<std::string> sk_pi, sk_pr;
  for (const auto& b : BlocksOfKind("ike_sa")) {
    sk_pi.push_back(b.at("sk_pi"));
    sk_pr.push_back(b.at("sk_pr"));
  }
  for (const auto& b : BlocksOfKind("psk_auth")) {
    SCOPED_TRACE(b.at("name"));
    const auto& pool = b.at("role") == "initiator" ? sk_pi : sk_pr;
    EXPECT_NE(std::find(pool.begin(), pool.end(), b.at("sk_p")), pool.end());
  }
}

// ---- RFC 7296 2.23 ---------------------------------------------------------------------------

TEST(KeysKatNatDetection, Sha1OfSpisAddressPortRfc7296Section2_23) {
  const auto blocks = BlocksOfKind("nat_detection");
  ASSERT_EQ(blocks.size(), 5u);
  for (const auto& b : blocks) {
    SCOPED_TRACE(b.at("name"));
    const unsigned long port = std::stoul(b.at("port"));
    ASSERT_LE(port, 65535u);
    const Bytes hash = NatDetectionHash(Spi(b, "spi_i"), Spi(b, "spi_r"), Field(b, "address"),
                                        static_cast<std::uint16_t>(port));
    EXPECT_EQ(ToHex(hash), ToHex(Field(b, "hash")));
  }
}

// ---- A changed input changes every key -------------------------------------------------------

TEST(KeysKatBitFlip, OneNonceBitChangesEveryIkeSaKey) {
  // One flipped bit in Ni or in Nr (first octet, last octet) must change every SK_*: the nonces
  // enter SKEYSEED (as the PRF key, 2.14; as data, 2.18) and the prf+ seed.
  std::vector<VectorBlock> blocks = BlocksOfKind("ike_sa");
  for (auto& b : BlocksOfKind("ike_sa_rekey")) blocks.push_back(std::move(b));
  for (const auto& b : blocks) {
    SCOPED_TRACE(b.at("name"));
    const IkeSaKeys base = DeriveFromBlock(b);
    const Bytes ni = Field(b, "ni"), nr = Field(b, "nr");
    for (const bool flip_ni : {true, false}) {
      const Bytes& nonce = flip_ni ? ni : nr;
      for (const std::size_t at : {std::size_t{0}, nonce.size() - 1}) {
        SCOPED_TRACE(std::string(flip_ni ? "Ni" : "Nr") + " octet " + std::to_string(at));
        const Bytes flipped = FlipLowBit(nonce, at);
        const IkeSaKeys keys =
            flip_ni ? DeriveFromBlock(b, &flipped, nullptr) : DeriveFromBlock(b, nullptr, &flipped);
        for (int i = 0; i < 7; ++i) {
          ASSERT_EQ(Key(keys, i).size(), Key(base, i).size()) << kSkNames[i];
          if (Key(base, i).empty()) continue;  // SK_a* of an AEAD: nothing to change
          EXPECT_NE(ToHex(Key(keys, i)), ToHex(Key(base, i))) << kSkNames[i];
        }
      }
    }
  }
}

TEST(KeysKatBitFlip, VectorsIncludeSetsWithIntegrityKeys) {
  // The bit-flip test above skips empty SK_a*; make sure it still covers SK_ai / SK_ar.
  int with_integ = 0;
  for (const auto& b : BlocksOfKind("ike_sa")) with_integ += b.at("integ") != "NONE";
  EXPECT_GE(with_integ, 2);
}

TEST(KeysKatBitFlip, OneNonceBitChangesBothChildDirections) {
  for (const auto& b : BlocksOfKind("child")) {
    SCOPED_TRACE(b.at("name"));
    const ChildKeymat base = ChildFromBlock(b);
    const Bytes ni = Field(b, "ni"), nr = Field(b, "nr");
    const Bytes ni2 = FlipLowBit(ni, ni.size() / 2), nr2 = FlipLowBit(nr, 0);
    for (const ChildKeymat& km :
         {ChildFromBlock(b, &ni2, nullptr), ChildFromBlock(b, nullptr, &nr2)}) {
      EXPECT_NE(ToHex(km.i_to_r), ToHex(base.i_to_r));
      EXPECT_NE(ToHex(km.r_to_i), ToHex(base.r_to_i));
    }
  }
}

TEST(KeysKatBitFlip, OneBitOfPskMessageNonceOrIdChangesAuth) {
  const auto blocks = BlocksOfKind("psk_auth");
  ASSERT_FALSE(blocks.empty());
  const VectorBlock& b = blocks.front();
  const PrfAlg prf = PrfByName(b.at("prf"));
  const Bytes psk = Field(b, "psk"), msg = Field(b, "message"), nonce = Field(b, "peer_nonce"),
              id = Field(b, "id_body");
  const SecureBytes sk_p = Secret(b, "sk_p");
  const std::string want = ToHex(Field(b, "auth"));
  ASSERT_EQ(ToHex(PskAuth(prf, psk, msg, nonce, sk_p, id)), want);
  EXPECT_NE(ToHex(PskAuth(prf, FlipLowBit(psk, 0), msg, nonce, sk_p, id)), want);
  EXPECT_NE(ToHex(PskAuth(prf, psk, FlipLowBit(msg, msg.size() - 1), nonce, sk_p, id)), want);
  EXPECT_NE(ToHex(PskAuth(prf, psk, msg, FlipLowBit(nonce, 0), sk_p, id)), want);
  EXPECT_NE(ToHex(PskAuth(prf, psk, msg, nonce, SecureBytes(FlipLowBit(Field(b, "sk_p"), 0)), id)),
            want);
  EXPECT_NE(ToHex(PskAuth(prf, psk, msg, nonce, sk_p, FlipLowBit(id, id.size() - 1))), want);
}

}  // namespace
}  // namespace spigot::ike
