#include "spigot/ike/proposal.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "spigot/test_tools/hex.h"

namespace spigot::ike {
namespace {

using crypto::EspSuite;
using crypto::IkeEncr;
using crypto::IntegAlg;
using crypto::PrfAlg;
using test_tools::FromHex;
using test_tools::ReadVectorFile;

constexpr auto kEncr = TransformType::kEncr;
constexpr auto kPrf = TransformType::kPrf;
constexpr auto kInteg = TransformType::kInteg;
constexpr auto kDh = TransformType::kDh;
constexpr auto kEsn = TransformType::kEsn;

std::vector<Proposal> Parse(std::string_view text, ProtocolId protocol, unsigned allow_weak = 0) {
  std::vector<Proposal> out;
  std::string error;
  EXPECT_TRUE(ParseProposals(text, protocol, out, error, allow_weak)) << text << ": " << error;
  return out;
}

Proposal One(std::string_view text, ProtocolId protocol, unsigned allow_weak = 0) {
  auto v = Parse(text, protocol, allow_weak);
  EXPECT_EQ(v.size(), 1u) << text;
  return v.empty() ? Proposal{} : v[0];
}

// The error ParseProposals gives for `text`; "" if it accepted it.
std::string ErrorFor(std::string_view text, ProtocolId protocol) {
  std::vector<Proposal> out;
  std::string error;
  if (ParseProposals(text, protocol, out, error)) return "";
  EXPECT_FALSE(error.empty()) << text;
  return error;
}

// ---- ParseProposals -----------------------------------------------------------------------

TEST(ParseProposalsTest, IkeProposals) {
  const struct {
    const char* text;
    std::vector<Transform> transforms;
  } cases[] = {
      {"aes128gcm16-prfsha256-x25519", {{kEncr, 20, 128}, {kPrf, 5, 0}, {kDh, 31, 0}}},
      {"aes256gcm16-prfsha384-ecp256", {{kEncr, 20, 256}, {kPrf, 6, 0}, {kDh, 19, 0}}},
      {"aes128gcm128-prfsha256-curve25519", {{kEncr, 20, 128}, {kPrf, 5, 0}, {kDh, 31, 0}}},
      {"chacha20poly1305-prfsha512-x25519", {{kEncr, 28, 0}, {kPrf, 7, 0}, {kDh, 31, 0}}},
      // No PRF keyword: the PRF follows the integrity algorithm (sha256 -> prfsha256).
      {"aes256-sha256-ecp256", {{kEncr, 12, 256}, {kPrf, 5, 0}, {kInteg, 12, 0}, {kDh, 19, 0}}},
      {"aes128-sha384-x25519", {{kEncr, 12, 128}, {kPrf, 6, 0}, {kInteg, 13, 0}, {kDh, 31, 0}}},
      {"aes128-sha2_512-x25519", {{kEncr, 12, 128}, {kPrf, 7, 0}, {kInteg, 14, 0}, {kDh, 31, 0}}},
      // An explicit PRF is kept, and none is derived.
      {"aes128-sha512-prfsha256-ecp256",
       {{kEncr, 12, 128}, {kPrf, 5, 0}, {kInteg, 14, 0}, {kDh, 19, 0}}},
      // Several of a type, in the order written, sorted by type (3.3.6); duplicates dropped.
      {"x25519-aes256gcm16-prfsha256-aes128gcm16-ecp256-aes256gcm16",
       {{kEncr, 20, 256}, {kEncr, 20, 128}, {kPrf, 5, 0}, {kDh, 31, 0}, {kDh, 19, 0}}},
      {"aes128-aes256-sha256-sha512-x25519",
       {{kEncr, 12, 128},
        {kEncr, 12, 256},
        {kPrf, 5, 0},
        {kPrf, 7, 0},
        {kInteg, 12, 0},
        {kInteg, 14, 0},
        {kDh, 31, 0}}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    const Proposal p = One(c.text, ProtocolId::kIke);
    EXPECT_EQ(p.number, 1);
    EXPECT_EQ(p.protocol, ProtocolId::kIke);
    EXPECT_TRUE(p.spi.empty());
    EXPECT_EQ(p.transforms, c.transforms);
  }
}

TEST(ParseProposalsTest, EspProposals) {
  const struct {
    const char* text;
    std::vector<Transform> transforms;
  } cases[] = {
      // No ESN keyword: "noesn", strongSwan's default.
      {"aes128gcm16", {{kEncr, 20, 128}, {kEsn, 0, 0}}},
      {"aes256gcm16", {{kEncr, 20, 256}, {kEsn, 0, 0}}},
      {"chacha20poly1305", {{kEncr, 28, 0}, {kEsn, 0, 0}}},
      {"aes128-sha256", {{kEncr, 12, 128}, {kInteg, 12, 0}, {kEsn, 0, 0}}},
      {"aes256-sha256", {{kEncr, 12, 256}, {kInteg, 12, 0}, {kEsn, 0, 0}}},
      {"aes128gcm16-esn", {{kEncr, 20, 128}, {kEsn, 1, 0}}},
      {"aes128gcm16-noesn", {{kEncr, 20, 128}, {kEsn, 0, 0}}},
      {"aes128gcm16-esn-noesn", {{kEncr, 20, 128}, {kEsn, 1, 0}, {kEsn, 0, 0}}},
      {"aes128gcm16-noesn-esn", {{kEncr, 20, 128}, {kEsn, 0, 0}, {kEsn, 1, 0}}},
      // A DH group in an ESP proposal is the PFS group for CREATE_CHILD_SA.
      {"aes256gcm16-x25519-esn", {{kEncr, 20, 256}, {kDh, 31, 0}, {kEsn, 1, 0}}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    const Proposal p = One(c.text, ProtocolId::kEsp);
    EXPECT_EQ(p.protocol, ProtocolId::kEsp);
    EXPECT_EQ(p.transforms, c.transforms);
  }
}

TEST(ParseProposalsTest, ListsAreNumberedInOrder) {
  const auto ike = Parse("aes128gcm16-prfsha256-x25519, aes256-sha256-ecp256,"
                         "chacha20poly1305-prfsha512-x25519",
                         ProtocolId::kIke);
  ASSERT_EQ(ike.size(), 3u);
  for (std::size_t i = 0; i < ike.size(); ++i) EXPECT_EQ(std::size_t{ike[i].number}, i + 1);
  EXPECT_EQ(ike[0].transforms[0], (Transform{kEncr, 20, 128}));
  EXPECT_EQ(ike[1].transforms[0], (Transform{kEncr, 12, 256}));
  EXPECT_EQ(ike[2].transforms[0], (Transform{kEncr, 28, 0}));

  const auto esp = Parse("  aes128gcm16 ,chacha20poly1305-esn,aes128-sha256  ", ProtocolId::kEsp);
  ASSERT_EQ(esp.size(), 3u);
  EXPECT_EQ(esp[0].transforms, (std::vector<Transform>{{kEncr, 20, 128}, {kEsn, 0, 0}}));
  EXPECT_EQ(esp[1].transforms, (std::vector<Transform>{{kEncr, 28, 0}, {kEsn, 1, 0}}));
  EXPECT_EQ(esp[2].number, 3);
}

TEST(ParseProposalsTest, ErrorsNameTheProblem) {
  const struct {
    const char* text;
    ProtocolId protocol;
    std::vector<std::string> mentions;  // each must appear in the error
  } cases[] = {
      {"aes128gcm16-prfsha256-modp1536", ProtocolId::kIke, {"'modp1536'", "unknown"}},
      {"aes128gcm16-prfsha256-x25519,3des-sha1-modp2048", ProtocolId::kIke,
       {"'3des'", "weak", "allow_weak"}},
      {"aes256-sha1-modp1024", ProtocolId::kIke, {"'modp1024'", "weak", "allow_weak"}},
      {"aes256-sha1-modp2048-modp1024", ProtocolId::kIke, {"'modp1024'"}},
      {"aes128-md5-modp2048", ProtocolId::kIke, {"'md5'", "unknown"}},
      {"AES128GCM16", ProtocolId::kEsp, {"'AES128GCM16'"}},
      {"aes128gcm16--x25519", ProtocolId::kIke, {"''"}},
      {"aes128gcm16-sha256-prfsha256-x25519", ProtocolId::kIke, {"AEAD", "integrity"}},
      {"aes128gcm16-sha256", ProtocolId::kEsp, {"AEAD", "integrity", "aes128gcm16-sha256"}},
      {"aes128-aes128gcm16-sha256", ProtocolId::kEsp, {"mixed"}},
      {"aes128", ProtocolId::kEsp, {"no integrity", "'aes128'"}},
      {"aes256-prfsha256-x25519", ProtocolId::kIke, {"no integrity"}},
      {"aes128gcm16-prfsha256", ProtocolId::kIke, {"key exchange"}},
      {"aes256-sha256", ProtocolId::kIke, {"key exchange", "'aes256-sha256'"}},
      {"aes128gcm16-x25519", ProtocolId::kIke, {"PRF"}},
      {"chacha20poly1305-ecp256", ProtocolId::kIke, {"PRF"}},
      {"sha256-x25519", ProtocolId::kIke, {"no encryption"}},
      {"x25519", ProtocolId::kEsp, {"no encryption"}},
      {"aes128gcm16-prfsha256-x25519-esn", ProtocolId::kIke, {"'esn'", "ESP"}},
      {"aes128gcm16-prfsha256", ProtocolId::kEsp, {"'prfsha256'", "IKE"}},
      {"", ProtocolId::kEsp, {"empty proposal"}},
      {"aes128gcm16,", ProtocolId::kEsp, {"empty proposal"}},
      {",aes128gcm16", ProtocolId::kEsp, {"empty proposal"}},
      {"aes128gcm16, ,chacha20poly1305", ProtocolId::kEsp, {"empty proposal"}},
      {"aes128gcm16,,chacha20poly1305", ProtocolId::kEsp, {"empty proposal"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    const std::string error = ErrorFor(c.text, c.protocol);
    ASSERT_FALSE(error.empty()) << "accepted";
    for (const auto& m : c.mentions) EXPECT_NE(error.find(m), std::string::npos) << error;
  }
}

// ---- IkeAlgorithmsOf / ChildAlgorithmsOf --------------------------------------------------

TEST(AlgorithmsOfTest, Ike) {
  const struct {
    const char* text;
    IkeEncr encr;
    PrfAlg prf;
    std::optional<IntegAlg> integ;
    std::uint16_t dh;
    const char* describe;
  } cases[] = {
      {"aes128gcm16-prfsha256-x25519", IkeEncr::kAesGcm16_128, PrfAlg::kHmacSha256, std::nullopt,
       31, "AES_GCM_16_128/PRF_HMAC_SHA2_256/CURVE_25519"},
      {"aes256gcm16-prfsha384-ecp256", IkeEncr::kAesGcm16_256, PrfAlg::kHmacSha384, std::nullopt,
       19, "AES_GCM_16_256/PRF_HMAC_SHA2_384/ECP_256"},
      {"chacha20poly1305-prfsha512-x25519", IkeEncr::kChaCha20Poly1305, PrfAlg::kHmacSha512,
       std::nullopt, 31, "CHACHA20_POLY1305/PRF_HMAC_SHA2_512/CURVE_25519"},
      {"aes256-sha256-ecp256", IkeEncr::kAesCbc256, PrfAlg::kHmacSha256,
       IntegAlg::kHmacSha256_128, 19, "AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/ECP_256"},
      {"aes128-sha384-x25519", IkeEncr::kAesCbc128, PrfAlg::kHmacSha384,
       IntegAlg::kHmacSha384_192, 31,
       "AES_CBC_128/HMAC_SHA2_384_192/PRF_HMAC_SHA2_384/CURVE_25519"},
      {"aes128-sha512-x25519", IkeEncr::kAesCbc128, PrfAlg::kHmacSha512,
       IntegAlg::kHmacSha512_256, 31,
       "AES_CBC_128/HMAC_SHA2_512_256/PRF_HMAC_SHA2_512/CURVE_25519"},
      // The native clients' suites (Windows: AES-CBC + SHA-1 or SHA-256 with MODP-2048;
      // macOS/iOS: AES-256 + SHA2-256 with MODP-2048 or ECP-256; Android: ECP-384 too).
      {"aes256-sha1-modp2048", IkeEncr::kAesCbc256, PrfAlg::kHmacSha1, IntegAlg::kHmacSha1_96, 14,
       "AES_CBC_256/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_2048"},
      {"aes256-sha256-modp2048", IkeEncr::kAesCbc256, PrfAlg::kHmacSha256,
       IntegAlg::kHmacSha256_128, 14, "AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048"},
      {"aes256-sha1-ecp384", IkeEncr::kAesCbc256, PrfAlg::kHmacSha1, IntegAlg::kHmacSha1_96, 20,
       "AES_CBC_256/HMAC_SHA1_96/PRF_HMAC_SHA1/ECP_384"},
      {"aes128-sha1-prfsha256-modp3072", IkeEncr::kAesCbc128, PrfAlg::kHmacSha256,
       IntegAlg::kHmacSha1_96, 15, "AES_CBC_128/HMAC_SHA1_96/PRF_HMAC_SHA2_256/MODP_3072"},
      {"aes256gcm16-prfsha384-modp4096", IkeEncr::kAesGcm16_256, PrfAlg::kHmacSha384,
       std::nullopt, 16, "AES_GCM_16_256/PRF_HMAC_SHA2_384/MODP_4096"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    const auto a = IkeAlgorithmsOf(One(c.text, ProtocolId::kIke));
    ASSERT_TRUE(a.has_value());
    EXPECT_EQ(a->encr, c.encr);
    EXPECT_EQ(a->prf, c.prf);
    EXPECT_EQ(a->integ, c.integ);
    EXPECT_EQ(a->dh_group, c.dh);
    EXPECT_EQ(Describe(*a), c.describe);
  }
}

TEST(AlgorithmsOfTest, IkeRejectsIncompleteOrUnsupported) {
  const Proposal good = One("aes256-sha256-ecp256", ProtocolId::kIke);
  for (TransformType drop : {kEncr, kPrf, kInteg, kDh}) {
    Proposal p = good;
    std::erase_if(p.transforms, [&](const Transform& t) { return t.type == drop; });
    EXPECT_FALSE(IkeAlgorithmsOf(p).has_value()) << static_cast<int>(drop);
  }
  const struct {
    const char* what;
    std::vector<Transform> transforms;
  } bad[] = {
      {"AEAD with integrity", {{kEncr, 20, 128}, {kPrf, 5, 0}, {kInteg, 12, 0}, {kDh, 31, 0}}},
      {"AES-GCM 192", {{kEncr, 20, 192}, {kPrf, 5, 0}, {kDh, 31, 0}}},
      {"AES-CBC without Key Length", {{kEncr, 12, 0}, {kPrf, 5, 0}, {kInteg, 12, 0}, {kDh, 31, 0}}},
      {"ChaCha20 with Key Length", {{kEncr, 28, 256}, {kPrf, 5, 0}, {kDh, 31, 0}}},
      {"3DES with Key Length", {{kEncr, 3, 192}, {kPrf, 5, 0}, {kInteg, 12, 0}, {kDh, 31, 0}}},
      {"PRF HMAC-MD5", {{kEncr, 20, 128}, {kPrf, 1, 0}, {kDh, 31, 0}}},
      {"HMAC-MD5-96", {{kEncr, 12, 128}, {kPrf, 5, 0}, {kInteg, 1, 0}, {kDh, 31, 0}}},
      {"MODP 1536", {{kEncr, 20, 128}, {kPrf, 5, 0}, {kDh, 5, 0}}},
      {"ECP 521", {{kEncr, 20, 128}, {kPrf, 5, 0}, {kDh, 21, 0}}},
  };
  for (const auto& b : bad) {
    Proposal p;
    p.transforms = b.transforms;
    EXPECT_FALSE(IkeAlgorithmsOf(p).has_value()) << b.what;
  }
}

TEST(AlgorithmsOfTest, Child) {
  const struct {
    const char* text;
    EspSuite suite;
    bool esn;
    std::uint16_t dh;
    const char* describe;
  } cases[] = {
      {"aes128gcm16", EspSuite::kAesGcm128, false, 0, "AES_GCM_16_128"},
      {"aes256gcm16-esn", EspSuite::kAesGcm256, true, 0, "AES_GCM_16_256/ESN"},
      {"chacha20poly1305", EspSuite::kChaCha20Poly1305, false, 0, "CHACHA20_POLY1305"},
      {"aes128-sha256", EspSuite::kAesCbc128HmacSha256, false, 0, "AES_CBC_128/HMAC_SHA2_256_128"},
      {"aes256-sha256", EspSuite::kAesCbc256HmacSha256, false, 0, "AES_CBC_256/HMAC_SHA2_256_128"},
      {"aes128gcm16-x25519", EspSuite::kAesGcm128, false, 31, "AES_GCM_16_128/CURVE_25519"},
      {"aes256-sha256-ecp256-esn", EspSuite::kAesCbc256HmacSha256, true, 19,
       "AES_CBC_256/HMAC_SHA2_256_128/ECP_256/ESN"},
      {"aes256-sha1", EspSuite::kAesCbc256HmacSha1, false, 0, "AES_CBC_256/HMAC_SHA1_96"},
      {"aes128-sha1-modp2048", EspSuite::kAesCbc128HmacSha1, false, 14,
       "AES_CBC_128/HMAC_SHA1_96/MODP_2048"},
      {"aes256-sha256-ecp384", EspSuite::kAesCbc256HmacSha256, false, 20,
       "AES_CBC_256/HMAC_SHA2_256_128/ECP_384"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    const auto a = ChildAlgorithmsOf(One(c.text, ProtocolId::kEsp));
    ASSERT_TRUE(a.has_value());
    EXPECT_EQ(a->suite, c.suite);
    EXPECT_EQ(a->esn, c.esn);
    EXPECT_EQ(a->dh_group, c.dh);
    EXPECT_EQ(Describe(*a), c.describe);
  }
  Proposal none;
  EXPECT_FALSE(ChildAlgorithmsOf(none).has_value());
  Proposal gcm_integ;
  gcm_integ.transforms = {{kEncr, 20, 128}, {kInteg, 12, 0}, {kEsn, 0, 0}};
  EXPECT_FALSE(ChildAlgorithmsOf(gcm_integ).has_value());
  Proposal modp1536;
  modp1536.transforms = {{kEncr, 20, 128}, {kDh, 5, 0}, {kEsn, 0, 0}};
  EXPECT_FALSE(ChildAlgorithmsOf(modp1536).has_value());
  Proposal des;  // ESP has no 3DES, even where IKE may negotiate it
  des.transforms = {{kEncr, 3, 0}, {kInteg, 2, 0}, {kEsn, 0, 0}};
  EXPECT_FALSE(ChildAlgorithmsOf(des).has_value());
}

// spigot's ESP implements AES-CBC only with HMAC-SHA2-256-128 and HMAC-SHA1-96 (EspSuite), so
// ParseProposals rejects "aes128-sha384" and "aes256-sha512" for ESP: a configuration that
// parsed but could never yield a Child SA.
TEST(AlgorithmsOfTest, EspProposalsParseOnlyWhatChildSasSupport) {
  for (const char* text : {"aes128-sha384", "aes256-sha512", "aes128-sha256-sha512", "3des-sha1"}) {
    std::vector<Proposal> out;
    std::string error;
    EXPECT_FALSE(ParseProposals(text, ProtocolId::kEsp, out, error)) << text;
  }
}

// ---- SelectProposal / AcceptableChoice ----------------------------------------------------

TEST(SelectProposalTest, OurOrderWinsAcrossProposals) {
  const auto ours = Parse("aes128gcm16-prfsha256-x25519, aes256-sha256-ecp256", ProtocolId::kIke);
  auto theirs = Parse("aes256-sha256-ecp256, aes128gcm16-prfsha256-x25519", ProtocolId::kIke);
  const auto chosen = SelectProposal(ours, theirs);
  ASSERT_TRUE(chosen.has_value());
  EXPECT_EQ(chosen->number, 2);  // the peer's number for the AEAD proposal
  EXPECT_EQ(chosen->transforms,
            (std::vector<Transform>{{kEncr, 20, 128}, {kPrf, 5, 0}, {kDh, 31, 0}}));
  EXPECT_TRUE(AcceptableChoice(theirs, *chosen));
  ASSERT_TRUE(IkeAlgorithmsOf(*chosen).has_value());
  EXPECT_EQ(IkeAlgorithmsOf(*chosen)->encr, IkeEncr::kAesGcm16_128);
}

// A transform type is one octet on the wire: one past the five we know (here 33 and 36, which a
// 32-bit mask would have aliased to ENCR and DH — undefined behaviour, found by ike_sa_fuzz)
// makes a peer's proposal one we do not take, and a choice one we do not accept.
TEST(SelectProposalTest, UnknownTransformTypesAreNotAliasedToKnownOnes) {
  const auto ours = Parse("aes128gcm16-prfsha256-x25519", ProtocolId::kIke);
  auto theirs = ours;
  theirs[0].transforms.push_back({static_cast<TransformType>(36), 1, 0});
  EXPECT_FALSE(SelectProposal(ours, theirs).has_value());
  // A choice that leaves out ENCR but carries a type-33 transform the offer also had.
  auto offered = ours;
  offered[0].transforms.push_back({static_cast<TransformType>(33), 7, 0});
  Proposal chosen = offered[0];
  chosen.transforms.erase(chosen.transforms.begin());  // ENCR (transforms are in type order)
  ASSERT_NE(chosen.transforms.front().type, kEncr);
  EXPECT_FALSE(AcceptableChoice(offered, chosen));
  EXPECT_TRUE(AcceptableChoice(offered, offered[0]));
}

TEST(SelectProposalTest, OurOrderWinsWithinAProposal) {
  const auto ours =
      Parse("aes256gcm16-aes128gcm16-prfsha256-prfsha512-x25519-ecp256", ProtocolId::kIke);
  const auto theirs =
      Parse("aes128gcm16-aes256gcm16-prfsha512-prfsha256-ecp256-x25519", ProtocolId::kIke);
  const auto chosen = SelectProposal(ours, theirs);
  ASSERT_TRUE(chosen.has_value());
  // Exactly one of each type, in type order.
  EXPECT_EQ(chosen->transforms,
            (std::vector<Transform>{{kEncr, 20, 256}, {kPrf, 5, 0}, {kDh, 31, 0}}));
  EXPECT_TRUE(AcceptableChoice(theirs, *chosen));

  // Where the peer lacks our favourite, our next choice that it has.
  const auto only128 = Parse("aes128gcm16-prfsha512-ecp256", ProtocolId::kIke);
  const auto c2 = SelectProposal(ours, only128);
  ASSERT_TRUE(c2.has_value());
  EXPECT_EQ(c2->transforms, (std::vector<Transform>{{kEncr, 20, 128}, {kPrf, 7, 0}, {kDh, 19, 0}}));
}

TEST(SelectProposalTest, MismatchedTypesAreRejected) {
  // An AEAD proposal never matches one with an integrity algorithm.
  EXPECT_FALSE(SelectProposal(Parse("aes128gcm16-prfsha256-x25519", ProtocolId::kIke),
                              Parse("aes128-sha256-x25519", ProtocolId::kIke)));
  // Same transforms, other protocol.
  Proposal ike_like_esp = One("aes128gcm16", ProtocolId::kEsp);
  ike_like_esp.protocol = ProtocolId::kIke;
  EXPECT_FALSE(SelectProposal(Parse("aes128gcm16", ProtocolId::kEsp), {ike_like_esp}));
  // Our ESP wants PFS, the peer's has no DH transform; and the other way round.
  EXPECT_FALSE(SelectProposal(Parse("aes128gcm16-x25519", ProtocolId::kEsp),
                              Parse("aes128gcm16", ProtocolId::kEsp)));
  EXPECT_FALSE(SelectProposal(Parse("aes128gcm16", ProtocolId::kEsp),
                              Parse("aes128gcm16-x25519", ProtocolId::kEsp)));
  // The peer lists an extra type (an INTEG next to the AEAD).
  Proposal extra = One("aes128gcm16-prfsha256-x25519", ProtocolId::kIke);
  extra.transforms.push_back({kInteg, 12, 0});
  EXPECT_FALSE(SelectProposal(Parse("aes128gcm16-prfsha256-x25519", ProtocolId::kIke), {extra}));
}

TEST(SelectProposalTest, NoCommonTransformIsNoMatch) {
  const auto ours = Parse("aes128gcm16-prfsha256-x25519", ProtocolId::kIke);
  EXPECT_FALSE(SelectProposal(ours, Parse("aes256gcm16-prfsha256-x25519", ProtocolId::kIke)));
  EXPECT_FALSE(SelectProposal(ours, Parse("aes128gcm16-prfsha384-x25519", ProtocolId::kIke)));
  EXPECT_FALSE(SelectProposal(ours, Parse("aes128gcm16-prfsha256-ecp256", ProtocolId::kIke)));
  // Same algorithm, other Key Length.
  EXPECT_FALSE(SelectProposal(Parse("aes128-sha256", ProtocolId::kEsp),
                              Parse("aes256-sha256", ProtocolId::kEsp)));
  EXPECT_FALSE(SelectProposal(ours, {}));
  EXPECT_FALSE(SelectProposal({}, ours));
  // ESN: we insist on it, the peer refuses it.
  EXPECT_FALSE(SelectProposal(Parse("aes128gcm16-esn", ProtocolId::kEsp),
                              Parse("aes128gcm16-noesn", ProtocolId::kEsp)));
}

TEST(SelectProposalTest, ChosenHasPeersNumberAndSpi) {
  auto theirs = Parse("chacha20poly1305, aes256gcm16, aes128gcm16-esn-noesn", ProtocolId::kEsp);
  theirs[0].spi = {0xc0, 0xff, 0xee, 0x01};
  theirs[1].spi = {0xc0, 0xff, 0xee, 0x02};
  theirs[2].spi = {0xc0, 0xff, 0xee, 0x03};
  const auto chosen = SelectProposal(Parse("aes128gcm16-esn", ProtocolId::kEsp), theirs);
  ASSERT_TRUE(chosen.has_value());
  EXPECT_EQ(chosen->number, 3);
  EXPECT_EQ(chosen->protocol, ProtocolId::kEsp);
  EXPECT_EQ(chosen->spi, Bytes({0xc0, 0xff, 0xee, 0x03}));
  EXPECT_EQ(chosen->transforms, (std::vector<Transform>{{kEncr, 20, 128}, {kEsn, 1, 0}}));
  EXPECT_TRUE(AcceptableChoice(theirs, *chosen));
  const auto child = ChildAlgorithmsOf(*chosen);
  ASSERT_TRUE(child.has_value());
  EXPECT_EQ(child->suite, EspSuite::kAesGcm128);
  EXPECT_TRUE(child->esn);

  // An IKE rekey proposal carries an 8-octet SPI through too.
  auto ike = Parse("aes128gcm16-prfsha256-x25519", ProtocolId::kIke);
  ike[0].number = 7;
  ike[0].spi = Bytes(8, 0x5a);
  const auto rekey = SelectProposal(Parse("aes128gcm16-prfsha256-x25519", ProtocolId::kIke), ike);
  ASSERT_TRUE(rekey.has_value());
  EXPECT_EQ(rekey->number, 7);
  EXPECT_EQ(rekey->spi, Bytes(8, 0x5a));
}

TEST(SelectProposalTest, PeerOmittingEsnMeansNoEsn) {
  Proposal peer;
  peer.number = 1;
  peer.protocol = ProtocolId::kEsp;
  peer.spi = {1, 2, 3, 4};
  peer.transforms = {{kEncr, 20, 256}};
  const auto chosen = SelectProposal(Parse("aes256gcm16", ProtocolId::kEsp), {peer});
  ASSERT_TRUE(chosen.has_value());
  EXPECT_EQ(chosen->transforms, (std::vector<Transform>{{kEncr, 20, 256}, {kEsn, 0, 0}}));
  EXPECT_FALSE(ChildAlgorithmsOf(*chosen)->esn);
  // We list ESN first, but the peer can only do without: no ESN.
  const auto both = SelectProposal(Parse("aes256gcm16-esn-noesn", ProtocolId::kEsp), {peer});
  ASSERT_TRUE(both.has_value());
  EXPECT_EQ(both->transforms.back(), (Transform{kEsn, 0, 0}));
  // We require ESN: no match.
  EXPECT_FALSE(SelectProposal(Parse("aes256gcm16-esn", ProtocolId::kEsp), {peer}));
  // IKE has no ESN transform: an IKE proposal missing one is not "lenient", it just matches.
  EXPECT_TRUE(SelectProposal(Parse("aes128gcm16-prfsha256-x25519", ProtocolId::kIke),
                             Parse("aes128gcm16-prfsha256-x25519", ProtocolId::kIke)));
}

// Selecting from the real strongSwan 5.9.8 offer (testdata; see message_test.cc).
TEST(SelectProposalTest, FromStrongSwanDefaultOffer) {
  const auto blocks = ReadVectorFile("src/spigot/ike/testdata/strongswan_5.9.8_ike_sa_init.txt");
  Message m;
  ASSERT_EQ(ParseMessage(FromHex(blocks.at(0).at("message")), m).error, ParseError::kOk);
  const auto& offer = m.Find<SaPayload>(PayloadType::kSa)->proposals;
  const struct {
    const char* ours;
    std::uint8_t number;
    std::vector<Transform> transforms;
  } cases[] = {
      {"aes128gcm16-prfsha256-x25519", 2, {{kEncr, 20, 128}, {kPrf, 5, 0}, {kDh, 31, 0}}},
      {"chacha20poly1305-prfsha512-x25519", 2, {{kEncr, 28, 0}, {kPrf, 7, 0}, {kDh, 31, 0}}},
      {"aes256-sha256-ecp256", 1, {{kEncr, 12, 256}, {kPrf, 5, 0}, {kInteg, 12, 0}, {kDh, 19, 0}}},
      {"aes256-sha384-prfsha512-ecp256", 1,
       {{kEncr, 12, 256}, {kPrf, 7, 0}, {kInteg, 13, 0}, {kDh, 19, 0}}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.ours);
    const auto chosen = SelectProposal(Parse(c.ours, ProtocolId::kIke), offer);
    ASSERT_TRUE(chosen.has_value());
    EXPECT_EQ(chosen->number, c.number);
    EXPECT_EQ(chosen->transforms, c.transforms);
    EXPECT_TRUE(AcceptableChoice(offer, *chosen));
    EXPECT_TRUE(IkeAlgorithmsOf(*chosen).has_value());
  }
  EXPECT_EQ(PreferredDhGroup(offer), 31);
  EXPECT_TRUE(OffersDhGroup(offer, 19));
  EXPECT_TRUE(OffersDhGroup(offer, 14));
  EXPECT_FALSE(OffersDhGroup(offer, 2));
}

TEST(AcceptableChoiceTest, RejectsWhatWasNotOffered) {
  const auto offered =
      Parse("aes256gcm16-aes128gcm16-prfsha256-x25519-ecp256, aes256-sha256-prfsha384-ecp256",
            ProtocolId::kIke);
  const auto ok = SelectProposal(Parse("aes128gcm16-prfsha256-ecp256", ProtocolId::kIke), offered);
  ASSERT_TRUE(ok.has_value());
  EXPECT_TRUE(AcceptableChoice(offered, *ok));

  auto with = [&](std::vector<Transform> t) {
    Proposal p = *ok;
    p.transforms = std::move(t);
    return p;
  };
  // Two transforms of one type.
  EXPECT_FALSE(AcceptableChoice(
      offered, with({{kEncr, 20, 256}, {kEncr, 20, 128}, {kPrf, 5, 0}, {kDh, 19, 0}})));
  EXPECT_FALSE(AcceptableChoice(
      offered, with({{kEncr, 20, 128}, {kPrf, 5, 0}, {kDh, 19, 0}, {kDh, 31, 0}})));
  // A transform not offered: other Key Length, other PRF, other group.
  EXPECT_FALSE(AcceptableChoice(offered, with({{kEncr, 20, 192}, {kPrf, 5, 0}, {kDh, 19, 0}})));
  EXPECT_FALSE(AcceptableChoice(offered, with({{kEncr, 20, 128}, {kPrf, 7, 0}, {kDh, 19, 0}})));
  EXPECT_FALSE(AcceptableChoice(offered, with({{kEncr, 20, 128}, {kPrf, 5, 0}, {kDh, 14, 0}})));
  // A type missing.
  EXPECT_FALSE(AcceptableChoice(offered, with({{kEncr, 20, 128}, {kPrf, 5, 0}})));
  // Transforms from two different proposals: AES-GCM from #1 with the integrity of #2.
  EXPECT_FALSE(AcceptableChoice(
      offered, with({{kEncr, 20, 128}, {kPrf, 5, 0}, {kInteg, 12, 0}, {kDh, 19, 0}})));
  // Everything from #2 is fine.
  EXPECT_TRUE(AcceptableChoice(
      offered, with({{kEncr, 12, 256}, {kPrf, 6, 0}, {kInteg, 12, 0}, {kDh, 19, 0}})));
  // Other protocol.
  Proposal esp = *ok;
  esp.protocol = ProtocolId::kEsp;
  EXPECT_FALSE(AcceptableChoice(offered, esp));
  EXPECT_FALSE(AcceptableChoice({}, *ok));
}

TEST(AcceptableChoiceTest, EspChoiceMustCarryEsn) {
  const auto offered = Parse("aes128gcm16-esn-noesn", ProtocolId::kEsp);
  Proposal chosen = offered[0];
  chosen.transforms = {{kEncr, 20, 128}, {kEsn, 1, 0}};
  EXPECT_TRUE(AcceptableChoice(offered, chosen));
  chosen.transforms = {{kEncr, 20, 128}, {kEsn, 1, 0}, {kEsn, 0, 0}};
  EXPECT_FALSE(AcceptableChoice(offered, chosen));
  chosen.transforms = {{kEncr, 20, 128}};
  EXPECT_FALSE(AcceptableChoice(offered, chosen));
}

TEST(DhGroupTest, PreferredAndOffered) {
  const auto p = Parse("aes128gcm16-prfsha256-ecp256-x25519, aes256-sha256-x25519",
                       ProtocolId::kIke);
  EXPECT_EQ(PreferredDhGroup(p), 19);
  EXPECT_TRUE(OffersDhGroup(p, 31));
  EXPECT_FALSE(OffersDhGroup(p, 14));
  EXPECT_EQ(PreferredDhGroup(Parse("aes128gcm16", ProtocolId::kEsp)), 0);
  EXPECT_EQ(PreferredDhGroup({}), 0);
}

}  // namespace
}  // namespace spigot::ike

namespace spigot::ike {
namespace {

// ---- Weak transforms (RFC 8247) and the native clients' proposals ------------------------

TEST(WeakTransformsTest, ParsedOnlyWhenAllowed) {
  std::vector<Proposal> out;
  std::string error;
  EXPECT_FALSE(ParseProposals("aes256-sha1-modp1024", ProtocolId::kIke, out, error));
  EXPECT_FALSE(ParseProposals("aes256-sha1-modp1024", ProtocolId::kIke, out, error, kWeak3des));
  ASSERT_TRUE(ParseProposals("aes256-sha1-modp1024", ProtocolId::kIke, out, error, kWeakModp1024))
      << error;
  EXPECT_EQ(WeakTransformsOf(out), kWeakModp1024);
  ASSERT_TRUE(ParseProposals("3des-aes256-sha1-modp2048-modp1024", ProtocolId::kIke, out, error,
                             kWeakModp1024 | kWeak3des))
      << error;
  EXPECT_EQ(WeakTransformsOf(out[0]), kWeakModp1024 | kWeak3des);
  const auto chosen = SelectProposal(
      out, {One("3des-sha1-modp1024", ProtocolId::kIke, kWeakModp1024 | kWeak3des)});
  ASSERT_TRUE(chosen.has_value());
  const auto algs = IkeAlgorithmsOf(*chosen);
  ASSERT_TRUE(algs.has_value());
  EXPECT_EQ(Describe(*algs), "3DES_CBC/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_1024");
}

TEST(WeakTransformsTest, AllowWeakValues) {
  unsigned weak = 99;
  std::string error;
  EXPECT_TRUE(ParseWeakTransforms("", weak, error));
  EXPECT_EQ(weak, 0u);
  EXPECT_TRUE(ParseWeakTransforms("modp1024", weak, error));
  EXPECT_EQ(weak, kWeakModp1024);
  EXPECT_TRUE(ParseWeakTransforms(" 3des , modp1024 ", weak, error));
  EXPECT_EQ(weak, kWeakModp1024 | kWeak3des);
  EXPECT_EQ(WeakTransformNames(weak), "3des, modp1024");
  EXPECT_EQ(WeakTransformNames(0), "");
  for (const char* bad : {"modp768", "des", "modp1024,", "aes128", "MODP1024"}) {
    EXPECT_FALSE(ParseWeakTransforms(bad, weak, error)) << bad;
  }
  EXPECT_NE(error.find("'MODP1024'"), std::string::npos) << error;
}

// What a responder with spigot's default proposals (config::kDefaultIkeProposals, repeated
// here as this module does not see config/) chooses from each native client's offer. The
// offers: Windows 10/11 with the registry's DH2048 setting (AES-256/AES-128 CBC, SHA-1/SHA-256,
// MODP-2048; without it only MODP-1024), macOS/iOS (AES-256-CBC, SHA2-256, MODP-2048 or
// ECP-256), Android's native client (AES-GCM or AES-CBC with SHA2, ECP-384, MODP-2048).
constexpr const char* kDefaultIke =
    "aes128gcm16-prfsha256-x25519, "
    "aes256gcm16-aes128gcm16-prfsha384-prfsha256-x25519-ecp256-ecp384-modp2048-modp3072-modp4096, "
    "aes256-aes128-sha256-sha384-sha512-sha1-x25519-ecp256-ecp384-modp2048-modp3072-modp4096";
constexpr const char* kDefaultEsp =
    "aes128gcm16, aes256gcm16-chacha20poly1305, aes256-aes128-sha256-sha1";

TEST(NativeClientsTest, DefaultsAcceptTheSecureOffers) {
  const auto ours_ike = Parse(kDefaultIke, ProtocolId::kIke);
  const auto ours_esp = Parse(kDefaultEsp, ProtocolId::kEsp);
  const struct {
    const char* client;
    const char* ike;
    const char* esp;
    const char* want_ike;
    const char* want_esp;
  } offers[] = {
      {"Windows, DH2048", "aes256-sha1-modp2048, aes128-sha1-modp2048, aes256-sha256-modp2048",
       "aes256-sha1, aes128-sha1", "AES_CBC_256/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_2048",
       "AES_CBC_256/HMAC_SHA1_96"},
      {"Windows, SHA-256", "aes256-sha256-modp2048", "aes256-sha256",
       "AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048",
       "AES_CBC_256/HMAC_SHA2_256_128"},
      {"macOS/iOS", "aes256-sha256-modp2048, aes256-sha256-ecp256", "aes256-sha256",
       "AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048",
       "AES_CBC_256/HMAC_SHA2_256_128"},
      {"iOS, ECP-256", "aes256-sha256-ecp256", "aes256gcm16",
       "AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/ECP_256", "AES_GCM_16_256"},
      {"Android", "aes256gcm16-prfsha384-ecp384, aes256-sha384-ecp384", "aes256gcm16, aes256-sha256",
       "AES_GCM_16_256/PRF_HMAC_SHA2_384/ECP_384", "AES_GCM_16_256"},
  };
  for (const auto& o : offers) {
    SCOPED_TRACE(o.client);
    const auto ike = SelectProposal(ours_ike, Parse(o.ike, ProtocolId::kIke));
    ASSERT_TRUE(ike.has_value());
    const auto ike_algs = IkeAlgorithmsOf(*ike);
    ASSERT_TRUE(ike_algs.has_value());
    EXPECT_EQ(Describe(*ike_algs), o.want_ike);
    const auto esp = SelectProposal(ours_esp, Parse(o.esp, ProtocolId::kEsp));
    ASSERT_TRUE(esp.has_value());
    const auto esp_algs = ChildAlgorithmsOf(*esp);
    ASSERT_TRUE(esp_algs.has_value());
    EXPECT_EQ(Describe(*esp_algs), o.want_esp);
  }
}

// Windows' default offer (3DES and AES with SHA-1/SHA-256, all with MODP-1024) finds nothing
// in the defaults; the refusal names the weak transforms it offered.
TEST(NativeClientsTest, WeakOnlyOfferIsRefusedAndNamed) {
  const auto ours = Parse(kDefaultIke, ProtocolId::kIke);
  std::vector<Proposal> windows;
  std::string error;
  ASSERT_TRUE(ParseProposals("3des-sha1-modp1024, aes256-sha1-modp1024, 3des-sha256-modp1024, "
                             "aes256-sha256-modp1024",
                             ProtocolId::kIke, windows, error, kWeakModp1024 | kWeak3des));
  EXPECT_FALSE(SelectProposal(ours, windows).has_value());
  const unsigned refused = WeakTransformsOf(windows) & ~WeakTransformsOf(ours);
  EXPECT_EQ(refused, kWeakModp1024 | kWeak3des);
  EXPECT_EQ(WeakTransformNames(refused), "3des, modp1024");
  // With modp1024 allowed (config appends a weak proposal to the defaults), the first of the
  // peer's proposals without 3DES is taken.
  std::vector<Proposal> allowed;
  ASSERT_TRUE(ParseProposals(std::string(kDefaultIke) +
                                 ", aes256-aes128-sha256-sha1-modp2048-ecp256-ecp384-modp1024",
                             ProtocolId::kIke, allowed, error, kWeakModp1024));
  const auto chosen = SelectProposal(allowed, windows);
  ASSERT_TRUE(chosen.has_value());
  EXPECT_EQ(Describe(*IkeAlgorithmsOf(*chosen)),
            "AES_CBC_256/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_1024");
}

}  // namespace
}  // namespace spigot::ike
