#include "spigot/crypto/prf.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "spigot/test_tools/hex.h"

namespace spigot::crypto {
namespace {

using test_tools::FromHex;
using test_tools::ReadVectorFile;
using test_tools::ToHex;
using Bytes = std::vector<std::uint8_t>;

constexpr PrfAlg kAllPrfs[] = {PrfAlg::kHmacSha256, PrfAlg::kHmacSha384, PrfAlg::kHmacSha512};


PrfAlg PrfByName(const std::string& name) {
  if (name == "PRF_HMAC_SHA2_256") return PrfAlg::kHmacSha256;
  if (name == "PRF_HMAC_SHA2_384") return PrfAlg::kHmacSha384;
  EXPECT_EQ(name, "PRF_HMAC_SHA2_512");
  return PrfAlg::kHmacSha512;
}

TEST(HmacRfc4231, TestCases1To7) {
  const auto blocks = ReadVectorFile("src/spigot/crypto/testdata/hmac_sha2_rfc4231.txt");
  ASSERT_EQ(blocks.size(), 7u);
  const std::pair<const char*, PrfAlg> fields[] = {{"hmac_sha256", PrfAlg::kHmacSha256},
                                                   {"hmac_sha384", PrfAlg::kHmacSha384},
                                                   {"hmac_sha512", PrfAlg::kHmacSha512}};
  for (const auto& b : blocks) {
    SCOPED_TRACE(b.at("name"));
    const Bytes key = FromHex(b.at("key"));
    const Bytes data = FromHex(b.at("data"));
    for (const auto& [field, alg] : fields) {
      SCOPED_TRACE(field);
      const Bytes want = FromHex(b.at(field));
      const SecureBytes got = Prf(alg, key, data);
      ASSERT_EQ(got.size(), PrfOutputLength(alg));
      if (b.count("truncate") != 0) {
        // Test Case 5 publishes only the leftmost 128 bits.
        ASSERT_EQ(want.size() * 8, std::stoul(b.at("truncate")));
        EXPECT_EQ(ToHex(got.first(want.size())), ToHex(want));
      } else {
        EXPECT_EQ(ToHex(got), ToHex(want));
      }
    }
  }
}

TEST(PrfRfc4868, PrfTestVectors) {
  const auto blocks = ReadVectorFile("src/spigot/crypto/testdata/hmac_sha2_ike_rfc4868.txt");
  const std::pair<const char*, PrfAlg> fields[] = {{"prf_hmac_sha2_256", PrfAlg::kHmacSha256},
                                                   {"prf_hmac_sha2_384", PrfAlg::kHmacSha384},
                                                   {"prf_hmac_sha2_512", PrfAlg::kHmacSha512}};
  int checked = 0;
  for (const auto& b : blocks) {
    SCOPED_TRACE(b.at("name"));
    for (const auto& [field, alg] : fields) {
      if (b.count(field) == 0) continue;
      EXPECT_EQ(ToHex(Prf(alg, FromHex(b.at("key")), FromHex(b.at("data")))),
                ToHex(FromHex(b.at(field))))
          << field;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 6 * 3);  // PRF-1 to PRF-6, three hashes each
}

TEST(HmacIntegrityRfc4868, AuthenticatorTestVectors) {
  const auto blocks = ReadVectorFile("src/spigot/crypto/testdata/hmac_sha2_ike_rfc4868.txt");
  const std::pair<const char*, IntegAlg> fields[] = {
      {"auth_hmac_sha2_256_128", IntegAlg::kHmacSha256_128},
      {"auth_hmac_sha2_384_192", IntegAlg::kHmacSha384_192},
      {"auth_hmac_sha2_512_256", IntegAlg::kHmacSha512_256}};
  int checked = 0;
  for (const auto& b : blocks) {
    SCOPED_TRACE(b.at("name"));
    for (const auto& [field, alg] : fields) {
      if (b.count(field) == 0) continue;
      const Bytes data = FromHex(b.at("data"));
      const Bytes want = FromHex(b.at(field));
      auto integ = Integrity::Create(alg, FromHex(b.at("key")));
      ASSERT_NE(integ, nullptr);
      ASSERT_EQ(integ->icv_length(), want.size());
      Bytes icv(integ->icv_length());
      integ->Compute(data, icv);
      EXPECT_EQ(ToHex(icv), ToHex(want));
      EXPECT_TRUE(integ->Verify(data, want));
      ++checked;
    }
  }
  EXPECT_EQ(checked, 4 * 3);  // AUTH256/384/512-1 to -4
}

TEST(HmacIntegrity, RejectsTamperedIcvAndData) {
  for (IntegAlg alg :
       {IntegAlg::kHmacSha256_128, IntegAlg::kHmacSha384_192, IntegAlg::kHmacSha512_256}) {
    auto integ = Integrity::Create(alg, Bytes(IntegKeyLength(alg), 0x42));
    ASSERT_NE(integ, nullptr);
    Bytes data(100, 0x17);
    Bytes icv(integ->icv_length());
    integ->Compute(data, icv);
    ASSERT_TRUE(integ->Verify(data, icv));
    for (std::size_t i : {std::size_t{0}, icv.size() - 1}) {
      Bytes bad = icv;
      bad[i] ^= 0x01;
      EXPECT_FALSE(integ->Verify(data, bad));
    }
    EXPECT_FALSE(integ->Verify(data, std::span(icv).first(icv.size() - 1)));
    Bytes longer = icv;
    longer.push_back(0);
    EXPECT_FALSE(integ->Verify(data, longer));
    data[50] ^= 0x80;
    EXPECT_FALSE(integ->Verify(data, icv));
  }
}

TEST(HmacIntegrity, RefusesKeyOfWrongLength) {
  EXPECT_EQ(Integrity::Create(IntegAlg::kHmacSha256_128, Bytes(31)), nullptr);
  EXPECT_EQ(Integrity::Create(IntegAlg::kHmacSha256_128, Bytes(33)), nullptr);
  EXPECT_EQ(Integrity::Create(IntegAlg::kHmacSha384_192, Bytes(32)), nullptr);
  EXPECT_EQ(Integrity::Create(IntegAlg::kHmacSha512_256, Bytes(48)), nullptr);
}

// The context is keyed once and restarted per message: each ICV must equal a fresh HMAC.
TEST(HmacIntegrity, ReusedContextMatchesFreshHmac) {
  const Bytes key(48, 0x5c);
  auto integ = Integrity::Create(IntegAlg::kHmacSha384_192, key);
  ASSERT_NE(integ, nullptr);
  for (const Bytes& msg : {Bytes{}, Bytes(1, 1), Bytes(300, 2), Bytes{}, Bytes(1, 1)}) {
    Bytes icv(integ->icv_length());
    integ->Compute(msg, icv);
    EXPECT_EQ(ToHex(icv), ToHex(Prf(PrfAlg::kHmacSha384, key, msg).first(24)));
  }
}

TEST(PrfPlus, GeneratedVectors) {
  const auto blocks = ReadVectorFile("src/spigot/crypto/testdata/prfplus_ike.txt");
  ASSERT_EQ(blocks.size(), 27u);
  for (const auto& b : blocks) {
    SCOPED_TRACE(b.at("name"));
    const std::size_t length = std::stoul(b.at("length"));
    const auto got =
        PrfPlus(PrfByName(b.at("prf")), FromHex(b.at("key")), FromHex(b.at("seed")), length);
    ASSERT_TRUE(got.has_value());
    ASSERT_EQ(got->size(), length);
    if (b.count("output") != 0) {
      EXPECT_EQ(ToHex(*got), ToHex(FromHex(b.at("output"))));
    } else {
      const Bytes tail = FromHex(b.at("output_tail"));
      EXPECT_EQ(ToHex(got->subspan(length - tail.size(), tail.size())), ToHex(tail));
    }
  }
}

TEST(PrfPlus, RefusesMoreThan255Blocks) {
  const Bytes key(32, 1), seed(16, 2);
  for (PrfAlg alg : kAllPrfs) {
    const std::size_t max = kMaxPrfPlusBlocks * PrfOutputLength(alg);
    const auto at_max = PrfPlus(alg, key, seed, max);
    ASSERT_TRUE(at_max.has_value());
    EXPECT_EQ(at_max->size(), max);
    EXPECT_FALSE(PrfPlus(alg, key, seed, max + 1).has_value());
    EXPECT_FALSE(PrfPlus(alg, key, seed, 1'000'000).has_value());
    EXPECT_FALSE(PrfPlus(alg, key, seed, SIZE_MAX).has_value());
  }
}

TEST(PrfPlus, ShorterOutputIsAPrefix) {
  const Bytes key(20, 9), seed(70, 3);
  for (PrfAlg alg : kAllPrfs) {
    const auto full = PrfPlus(alg, key, seed, 5 * PrfOutputLength(alg));
    ASSERT_TRUE(full.has_value());
    for (std::size_t n :
         {std::size_t{0}, std::size_t{1}, PrfOutputLength(alg), 2 * PrfOutputLength(alg) + 3}) {
      const auto part = PrfPlus(alg, key, seed, n);
      ASSERT_TRUE(part.has_value());
      EXPECT_EQ(ToHex(*part), ToHex(full->first(n)));
    }
  }
}

// T1 = prf(K, S | 0x01) (RFC 7296 2.13).
TEST(PrfPlus, FirstBlockIsPrfOfSeedAndOne) {
  const Bytes key(32, 0xab);
  Bytes seed(40, 0xcd);
  const auto out = PrfPlus(PrfAlg::kHmacSha256, key, seed, 32);
  seed.push_back(0x01);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(ToHex(*out), ToHex(Prf(PrfAlg::kHmacSha256, key, seed)));
}

TEST(Prf, EmptyKeyAndData) {
  // HMAC-SHA-256 with an empty key over empty data (python3 hmac.new(b"", b"", sha256)).
  EXPECT_EQ(ToHex(Prf(PrfAlg::kHmacSha256, {}, {})),
            "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

// HMAC-SHA-1 as PRF_HMAC_SHA1 (full 20 bytes) and AUTH_HMAC_SHA1_96 (first 12 bytes, keyed
// with exactly 20 bytes: the test cases with a 20-byte key).
TEST(HmacSha1Rfc2202, PrfAndIntegrity) {
  const auto blocks = ReadVectorFile("src/spigot/crypto/testdata/hmac_sha1_rfc2202.txt");
  ASSERT_EQ(blocks.size(), 7u);
  int integ_checked = 0;
  for (const auto& b : blocks) {
    SCOPED_TRACE(b.at("name"));
    const Bytes key = FromHex(b.at("key"));
    const Bytes data = FromHex(b.at("data"));
    const Bytes want = FromHex(b.at("hmac_sha1"));
    EXPECT_EQ(ToHex(Prf(PrfAlg::kHmacSha1, key, data)), ToHex(want));
    if (key.size() != IntegKeyLength(IntegAlg::kHmacSha1_96)) {
      EXPECT_EQ(Integrity::Create(IntegAlg::kHmacSha1_96, key), nullptr);
      continue;
    }
    auto integ = Integrity::Create(IntegAlg::kHmacSha1_96, key);
    ASSERT_NE(integ, nullptr);
    Bytes icv(integ->icv_length());
    integ->Compute(data, icv);
    EXPECT_EQ(ToHex(icv), ToHex(Bytes(want.begin(), want.begin() + 12)));
    EXPECT_TRUE(integ->Verify(data, icv));
    icv.back() ^= 1;
    EXPECT_FALSE(integ->Verify(data, icv));
    EXPECT_FALSE(integ->Verify(data, want));  // the untruncated HMAC is not the ICV
    ++integ_checked;
  }
  EXPECT_EQ(integ_checked, 3);  // test cases 1, 3 and 5
}

TEST(Prf, TransformIds) {
  EXPECT_EQ(PrfAlgFromId(5), PrfAlg::kHmacSha256);
  EXPECT_EQ(PrfAlgFromId(6), PrfAlg::kHmacSha384);
  EXPECT_EQ(PrfAlgFromId(7), PrfAlg::kHmacSha512);
  EXPECT_EQ(PrfAlgFromId(2), PrfAlg::kHmacSha1);
  EXPECT_FALSE(PrfAlgFromId(1).has_value());  // PRF_HMAC_MD5: not supported
  EXPECT_FALSE(PrfAlgFromId(0).has_value());
  EXPECT_EQ(IntegAlgFromId(12), IntegAlg::kHmacSha256_128);
  EXPECT_EQ(IntegAlgFromId(13), IntegAlg::kHmacSha384_192);
  EXPECT_EQ(IntegAlgFromId(14), IntegAlg::kHmacSha512_256);
  EXPECT_EQ(IntegAlgFromId(2), IntegAlg::kHmacSha1_96);
  EXPECT_FALSE(IntegAlgFromId(1).has_value());  // AUTH_HMAC_MD5_96
  EXPECT_EQ(PrfOutputLength(PrfAlg::kHmacSha1), 20u);
  EXPECT_EQ(IntegKeyLength(IntegAlg::kHmacSha1_96), 20u);
  EXPECT_EQ(IntegIcvLength(IntegAlg::kHmacSha1_96), 12u);  // RFC 2404 2
  EXPECT_EQ(PrfOutputLength(PrfAlg::kHmacSha384), 48u);
  EXPECT_EQ(IntegKeyLength(IntegAlg::kHmacSha512_256), 64u);
  EXPECT_EQ(IntegIcvLength(IntegAlg::kHmacSha256_128), 16u);
  EXPECT_EQ(IntegIcvLength(IntegAlg::kHmacSha384_192), 24u);
  EXPECT_EQ(IntegIcvLength(IntegAlg::kHmacSha512_256), 32u);
}

}  // namespace
}  // namespace spigot::crypto
