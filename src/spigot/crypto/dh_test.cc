#include "spigot/crypto/dh.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "spigot/test_tools/hex.h"

namespace spigot::crypto {
namespace {

using test_tools::FromHex;
using test_tools::ReadVectorFile;
using test_tools::ToHex;
using Bytes = std::vector<std::uint8_t>;


// X25519(scalar, u) through the DhKeyPair API.
std::string X25519(const Bytes& scalar, const Bytes& u) {
  auto pair = DhKeyPair::FromPrivateKey(kDhGroupCurve25519, scalar);
  EXPECT_NE(pair, nullptr);
  SecureBytes out;
  if (pair == nullptr || !pair->ComputeShared(u, out)) return "failed";
  return ToHex(out);
}

TEST(X25519Rfc7748, FunctionVectors) {
  int checked = 0;
  for (const auto& b : ReadVectorFile("src/spigot/crypto/testdata/x25519_rfc7748.txt")) {
    if (b.count("scalar") == 0) continue;
    SCOPED_TRACE(b.at("name"));
    EXPECT_EQ(X25519(FromHex(b.at("scalar")), FromHex(b.at("u"))), ToHex(FromHex(b.at("output"))));
    ++checked;
  }
  EXPECT_EQ(checked, 2);
}

// k = u = 9; then k, u = X25519(k, u), k (RFC 7748 5.2).
TEST(X25519Rfc7748, IteratedVectors) {
  int checked = 0;
  for (const auto& b : ReadVectorFile("src/spigot/crypto/testdata/x25519_rfc7748.txt")) {
    if (b.count("iterations") == 0) continue;
    SCOPED_TRACE(b.at("name"));
    Bytes k = FromHex(b.at("start"));
    Bytes u = k;
    for (unsigned long i = 0; i < std::stoul(b.at("iterations")); ++i) {
      Bytes next = FromHex(X25519(k, u));
      ASSERT_EQ(next.size(), 32u);
      u = std::move(k);
      k = std::move(next);
    }
    EXPECT_EQ(ToHex(k), ToHex(FromHex(b.at("output"))));
    ++checked;
  }
  EXPECT_EQ(checked, 2);
}

TEST(X25519Rfc7748, AliceAndBob) {
  const auto blocks = ReadVectorFile("src/spigot/crypto/testdata/x25519_rfc7748.txt");
  const auto& b = blocks.back();
  ASSERT_EQ(b.at("name"), "6.1");
  auto alice = DhKeyPair::FromPrivateKey(kDhGroupCurve25519, FromHex(b.at("alice_private")));
  auto bob = DhKeyPair::FromPrivateKey(kDhGroupCurve25519, FromHex(b.at("bob_private")));
  ASSERT_NE(alice, nullptr);
  ASSERT_NE(bob, nullptr);
  EXPECT_EQ(ToHex(alice->public_value()), ToHex(FromHex(b.at("alice_public"))));
  EXPECT_EQ(ToHex(bob->public_value()), ToHex(FromHex(b.at("bob_public"))));
  SecureBytes k_alice, k_bob;
  ASSERT_TRUE(alice->ComputeShared(bob->public_value(), k_alice));
  ASSERT_TRUE(bob->ComputeShared(alice->public_value(), k_bob));
  EXPECT_EQ(ToHex(k_alice), ToHex(FromHex(b.at("shared"))));
  EXPECT_EQ(ToHex(k_bob), ToHex(FromHex(b.at("shared"))));
}

// Points of small order make X25519 output zero whatever the scalar (RFC 7748 6.1, 7); the
// shared secret must be refused. Values: u = 0, 1, two points of order 8, and p - 1.
TEST(X25519, RejectsLowOrderPoints) {
  auto pair = DhKeyPair::Generate(kDhGroupCurve25519);
  ASSERT_NE(pair, nullptr);
  for (const char* u : {"0000000000000000000000000000000000000000000000000000000000000000",
                        "0100000000000000000000000000000000000000000000000000000000000000",
                        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
                        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
                        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"}) {
    SCOPED_TRACE(u);
    SecureBytes out(std::span<const std::uint8_t>(FromHex("ff")));
    EXPECT_FALSE(pair->ComputeShared(FromHex(u), out));
    EXPECT_TRUE(out.empty());
  }
}

TEST(EcpRfc5903, Section81) {
  const auto blocks = ReadVectorFile("src/spigot/crypto/testdata/ecp256_rfc5903.txt");
  ASSERT_EQ(blocks.size(), 1u);
  const auto& b = blocks[0];
  const Bytes gi = FromHex(b.at("gix") + b.at("giy"));
  const Bytes gr = FromHex(b.at("grx") + b.at("gry"));
  auto initiator = DhKeyPair::FromPrivateKey(kDhGroupEcp256, FromHex(b.at("i")));
  auto responder = DhKeyPair::FromPrivateKey(kDhGroupEcp256, FromHex(b.at("r")));
  ASSERT_NE(initiator, nullptr);
  ASSERT_NE(responder, nullptr);
  EXPECT_EQ(ToHex(initiator->public_value()), ToHex(gi));
  EXPECT_EQ(ToHex(responder->public_value()), ToHex(gr));
  SecureBytes s_i, s_r;
  ASSERT_TRUE(initiator->ComputeShared(gr, s_i));
  ASSERT_TRUE(responder->ComputeShared(gi, s_r));
  EXPECT_EQ(ToHex(s_i), ToHex(FromHex(b.at("girx"))));
  EXPECT_EQ(ToHex(s_r), ToHex(FromHex(b.at("girx"))));
}

TEST(EcpRfc5903, RejectsPointsNotOnTheCurve) {
  const auto b = ReadVectorFile("src/spigot/crypto/testdata/ecp256_rfc5903.txt").at(0);
  auto pair = DhKeyPair::Generate(kDhGroupEcp256);
  ASSERT_NE(pair, nullptr);
  Bytes off_curve = FromHex(b.at("grx") + b.at("gry"));
  off_curve.back() ^= 0x01;  // y changed: (x, y') is not on the curve
  Bytes zero(64, 0x00);      // (0, 0): not on the curve (and not the point at infinity)
  Bytes too_big(64, 0xff);   // coordinates >= p
  for (const Bytes& peer : {off_curve, zero, too_big}) {
    SecureBytes out;
    EXPECT_FALSE(pair->ComputeShared(peer, out));
    EXPECT_TRUE(out.empty());
  }
}

TEST(EcpRfc5903, RefusesPrivateKeyOutOfRange) {
  // n, the order of the base point (RFC 5903 3.1), and 0 are not private keys.
  const Bytes n = FromHex("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551");
  EXPECT_EQ(DhKeyPair::FromPrivateKey(kDhGroupEcp256, n), nullptr);
  EXPECT_EQ(DhKeyPair::FromPrivateKey(kDhGroupEcp256, Bytes(32, 0)), nullptr);
  Bytes n_minus_1 = n;
  n_minus_1.back() -= 1;
  EXPECT_NE(DhKeyPair::FromPrivateKey(kDhGroupEcp256, n_minus_1), nullptr);
}

TEST(EcpRfc5903, Section82) {
  const auto blocks = ReadVectorFile("src/spigot/crypto/testdata/ecp384_rfc5903.txt");
  ASSERT_EQ(blocks.size(), 1u);
  const auto& b = blocks[0];
  const Bytes gi = FromHex(b.at("gix") + b.at("giy"));
  const Bytes gr = FromHex(b.at("grx") + b.at("gry"));
  auto initiator = DhKeyPair::FromPrivateKey(kDhGroupEcp384, FromHex(b.at("i")));
  auto responder = DhKeyPair::FromPrivateKey(kDhGroupEcp384, FromHex(b.at("r")));
  ASSERT_NE(initiator, nullptr);
  ASSERT_NE(responder, nullptr);
  EXPECT_EQ(ToHex(initiator->public_value()), ToHex(gi));
  EXPECT_EQ(ToHex(responder->public_value()), ToHex(gr));
  SecureBytes s_i, s_r;
  ASSERT_TRUE(initiator->ComputeShared(gr, s_i));
  ASSERT_TRUE(responder->ComputeShared(gi, s_r));
  EXPECT_EQ(ToHex(s_i), ToHex(FromHex(b.at("girx"))));
  EXPECT_EQ(ToHex(s_r), ToHex(FromHex(b.at("girx"))));
  // A P-256 point is no P-384 point, whatever the length.
  Bytes off_curve = gr;
  off_curve.back() ^= 0x01;
  SecureBytes out;
  EXPECT_FALSE(initiator->ComputeShared(off_curve, out));
  EXPECT_FALSE(initiator->ComputeShared(Bytes(96, 0x00), out));
  EXPECT_FALSE(initiator->ComputeShared(Bytes(96, 0xff), out));
  EXPECT_TRUE(out.empty());
}

// Known answers computed outside OpenSSL (testdata header): public values and shared secrets
// are the fixed-length big-endian numbers of RFC 7296 3.4 / 2.14, leading zeros included.
TEST(ModpKat, PublicValuesAndSharedSecrets) {
  const auto blocks = ReadVectorFile("src/spigot/crypto/testdata/modp_kat.txt");
  ASSERT_EQ(blocks.size(), 4u);
  for (const auto& b : blocks) {
    SCOPED_TRACE(b.at("name"));
    const auto group = static_cast<std::uint16_t>(std::stoul(b.at("group")));
    const Bytes gi = FromHex(b.at("gi"));
    const Bytes gr = FromHex(b.at("gr"));
    ASSERT_EQ(gi.size(), DhPublicValueLength(group));
    auto initiator = DhKeyPair::FromPrivateKey(group, FromHex(b.at("i")));
    auto responder = DhKeyPair::FromPrivateKey(group, FromHex(b.at("r")));
    ASSERT_NE(initiator, nullptr);
    ASSERT_NE(responder, nullptr);
    EXPECT_EQ(ToHex(initiator->public_value()), ToHex(gi));
    EXPECT_EQ(ToHex(responder->public_value()), ToHex(gr));
    SecureBytes s_i, s_r;
    ASSERT_TRUE(initiator->ComputeShared(gr, s_i));
    ASSERT_TRUE(responder->ComputeShared(gi, s_r));
    EXPECT_EQ(s_i.size(), DhSharedSecretLength(group));
    EXPECT_EQ(ToHex(s_i), ToHex(FromHex(b.at("shared"))));
    EXPECT_EQ(ToHex(s_r), ToHex(FromHex(b.at("shared"))));
  }
  // The group 14 block was chosen so that padding shows.
  EXPECT_EQ(blocks[1].at("gi").substr(0, 2), "00");
  EXPECT_EQ(blocks[1].at("shared").substr(0, 2), "00");
}

// RFC 6989 2.1: a MODP public value y must satisfy 1 < y < p - 1 (0, 1 and p - 1 force the
// shared secret into a subgroup of order 1 or 2); p and beyond are no residues at all.
TEST(ModpKat, RejectsDegeneratePeerValues) {
  const auto b = ReadVectorFile("src/spigot/crypto/testdata/modp_kat.txt").at(1);
  ASSERT_EQ(b.at("group"), "14");
  auto pair = DhKeyPair::FromPrivateKey(kDhGroupModp2048, FromHex(b.at("i")));
  ASSERT_NE(pair, nullptr);
  // p for group 14 from its public value's group: 2^2048 - 1 is above p, so all-ones is too.
  Bytes zero(256, 0x00), one(256, 0x00), all_ones(256, 0xff);
  one.back() = 1;
  for (const Bytes& peer : {zero, one, all_ones}) {
    SecureBytes out;
    EXPECT_FALSE(pair->ComputeShared(peer, out));
    EXPECT_TRUE(out.empty());
  }
  // 2 is a valid public value (the generator itself): the secret is then 2^i, i.e. our own
  // public value.
  Bytes two(256, 0x00);
  two.back() = 2;
  SecureBytes out;
  ASSERT_TRUE(pair->ComputeShared(two, out));
  EXPECT_EQ(ToHex(out), ToHex(FromHex(b.at("gi"))));
}

TEST(ModpKat, RefusesPrivateKeyOutOfRange) {
  EXPECT_EQ(DhKeyPair::FromPrivateKey(kDhGroupModp2048, Bytes{}), nullptr);
  EXPECT_EQ(DhKeyPair::FromPrivateKey(kDhGroupModp2048, Bytes{0x01}), nullptr);
  EXPECT_EQ(DhKeyPair::FromPrivateKey(kDhGroupModp2048, Bytes(256, 0xff)), nullptr);  // > p
  EXPECT_EQ(DhKeyPair::FromPrivateKey(kDhGroupModp2048, Bytes(257, 0x01)), nullptr);
  EXPECT_NE(DhKeyPair::FromPrivateKey(kDhGroupModp2048, Bytes{0x02}), nullptr);
}

class DhGroupTest : public ::testing::TestWithParam<std::uint16_t> {};

TEST_P(DhGroupTest, GeneratedPairsAgree) {
  const std::uint16_t group = GetParam();
  auto a = DhKeyPair::Generate(group);
  auto b = DhKeyPair::Generate(group);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(a->group(), group);
  EXPECT_EQ(a->public_value().size(), DhPublicValueLength(group));
  EXPECT_NE(ToHex(a->public_value()), ToHex(b->public_value()));
  SecureBytes ab, ba;
  ASSERT_TRUE(a->ComputeShared(b->public_value(), ab));
  ASSERT_TRUE(b->ComputeShared(a->public_value(), ba));
  EXPECT_EQ(ab.size(), DhSharedSecretLength(group));
  EXPECT_TRUE(ab == ba);
  // A key pair may compute with several peers; each result is independent of the last.
  auto c = DhKeyPair::Generate(group);
  ASSERT_NE(c, nullptr);
  SecureBytes ac;
  ASSERT_TRUE(a->ComputeShared(c->public_value(), ac));
  EXPECT_FALSE(ac == ab);
}

TEST_P(DhGroupTest, RejectsWrongLength) {
  const std::uint16_t group = GetParam();
  auto pair = DhKeyPair::Generate(group);
  auto peer = DhKeyPair::Generate(group);
  ASSERT_NE(pair, nullptr);
  ASSERT_NE(peer, nullptr);
  const Bytes good(peer->public_value().begin(), peer->public_value().end());
  for (std::size_t len : {std::size_t{0}, good.size() - 1, good.size() + 1, 2 * good.size()}) {
    SCOPED_TRACE(len);
    Bytes peer_value = good;
    peer_value.resize(len, 0x04);
    SecureBytes out;
    EXPECT_FALSE(pair->ComputeShared(peer_value, out));
    EXPECT_TRUE(out.empty());
  }
  if (group == kDhGroupEcp256 || group == kDhGroupEcp384) {
    // The SEC1 form 0x04 || x || y is 65 (97) bytes: IKEv2 carries x || y only (RFC 5903 7).
    Bytes sec1 = good;
    sec1.insert(sec1.begin(), 0x04);
    SecureBytes out;
    EXPECT_FALSE(pair->ComputeShared(sec1, out));
  }
}

INSTANTIATE_TEST_SUITE_P(Dh, DhGroupTest,
                         ::testing::Values(kDhGroupCurve25519, kDhGroupEcp256, kDhGroupEcp384,
                                           kDhGroupModp1024, kDhGroupModp2048, kDhGroupModp3072,
                                           kDhGroupModp4096),
                         [](const auto& info) { return "Group" + std::to_string(info.param); });

TEST(DhGroupIds, SupportedGroups) {
  // id, public value length, shared secret length.
  const std::size_t groups[][3] = {{31, 32, 32},   {19, 64, 32},   {20, 96, 48},  {2, 128, 128},
                                   {14, 256, 256}, {15, 384, 384}, {16, 512, 512}};
  for (const auto& [g, pub, shared] : groups) {
    SCOPED_TRACE(g);
    EXPECT_TRUE(IsSupportedDhGroup(static_cast<std::uint16_t>(g)));
    EXPECT_EQ(DhPublicValueLength(static_cast<std::uint16_t>(g)), pub);
    EXPECT_EQ(DhSharedSecretLength(static_cast<std::uint16_t>(g)), shared);
  }
  for (std::uint16_t g : {0, 1, 5, 17, 18, 21, 32}) {
    EXPECT_FALSE(IsSupportedDhGroup(g)) << g;
    EXPECT_EQ(DhPublicValueLength(g), 0u);
    EXPECT_EQ(DhSharedSecretLength(g), 0u);
    EXPECT_EQ(DhKeyPair::Generate(g), nullptr);
    EXPECT_EQ(DhKeyPair::FromPrivateKey(g, Bytes(32, 1)), nullptr);
  }
  EXPECT_EQ(DhKeyPair::FromPrivateKey(kDhGroupCurve25519, Bytes(31, 1)), nullptr);
  EXPECT_EQ(DhKeyPair::FromPrivateKey(kDhGroupEcp256, Bytes(33, 1)), nullptr);
  EXPECT_EQ(DhKeyPair::FromPrivateKey(kDhGroupEcp384, Bytes(32, 1)), nullptr);
}

}  // namespace
}  // namespace spigot::crypto
