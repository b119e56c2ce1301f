#include "spigot/crypto/ike_cipher.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "spigot/crypto/prf.h"
#include "spigot/crypto/random.h"
#include "spigot/test_tools/hex.h"

namespace spigot::crypto {
namespace {

using test_tools::FromHex;
using test_tools::ReadVectorFile;
using test_tools::ToHex;
using test_tools::VectorBlock;
using Bytes = std::vector<std::uint8_t>;

constexpr IkeEncr kAeads[] = {IkeEncr::kAesGcm16_128, IkeEncr::kAesGcm16_256,
                              IkeEncr::kChaCha20Poly1305};
constexpr const char* kEncrNames[] = {"AesCbc128", "AesCbc256", "AesGcm16_128", "AesGcm16_256",
                                      "ChaCha20Poly1305"};  // indexed by IkeEncr


Bytes Random(std::size_t n) {
  Bytes b(n);
  RandomBytes(b);
  return b;
}

std::unique_ptr<IkeCipher> RandomCipher(IkeEncr encr) {
  return IkeCipher::Create(encr, Random(IkeEncrInfoFor(encr).keymat_len()));
}

// Seals and opens every AEAD block of `file` with key material key || salt.
void CheckAeadVectors(const std::string& file, std::size_t expected_blocks) {
  const auto blocks = ReadVectorFile(file);
  ASSERT_EQ(blocks.size(), expected_blocks);
  for (const VectorBlock& b : blocks) {
    SCOPED_TRACE(b.at("name"));
    const Bytes key = FromHex(b.at("key"));
    Bytes keymat = key;
    const Bytes salt = FromHex(b.at("salt"));
    keymat.insert(keymat.end(), salt.begin(), salt.end());
    const IkeEncr encr = file.find("chacha") != std::string::npos ? IkeEncr::kChaCha20Poly1305
                         : key.size() == 16                       ? IkeEncr::kAesGcm16_128
                                                                  : IkeEncr::kAesGcm16_256;
    auto cipher = IkeCipher::Create(encr, keymat);
    ASSERT_NE(cipher, nullptr);
    const Bytes iv = FromHex(b.at("iv"));
    const Bytes aad = FromHex(b.at("aad"));
    const Bytes plaintext = FromHex(b.at("plaintext"));

    Bytes data = plaintext;
    Bytes icv(16);
    ASSERT_TRUE(cipher->Seal(iv, aad, data, icv));
    EXPECT_EQ(ToHex(data), ToHex(FromHex(b.at("ciphertext"))));
    EXPECT_EQ(ToHex(icv), ToHex(FromHex(b.at("tag"))));

    ASSERT_TRUE(cipher->Open(iv, aad, data, icv));
    EXPECT_EQ(ToHex(data), ToHex(plaintext));
  }
}

TEST(IkeCipherKat, AesGcmSpecTestCases) {
  CheckAeadVectors("src/spigot/crypto/testdata/aes_gcm_ike_mcgrew.txt", 4);
}

TEST(IkeCipherKat, ChaCha20Poly1305Rfc8439) {
  CheckAeadVectors("src/spigot/crypto/testdata/chacha20poly1305_ike_rfc8439.txt", 1);
}

TEST(IkeCipherKat, AesCbc) {
  const auto blocks = ReadVectorFile("src/spigot/crypto/testdata/aes_cbc_ike.txt");
  ASSERT_EQ(blocks.size(), 5u);
  for (const VectorBlock& b : blocks) {
    SCOPED_TRACE(b.at("name"));
    const Bytes key = FromHex(b.at("key"));
    auto cipher =
        IkeCipher::Create(key.size() == 16 ? IkeEncr::kAesCbc128 : IkeEncr::kAesCbc256, key);
    ASSERT_NE(cipher, nullptr);
    const Bytes iv = FromHex(b.at("iv"));
    Bytes data = FromHex(b.at("plaintext"));
    ASSERT_TRUE(cipher->EncryptCbc(iv, data));
    EXPECT_EQ(ToHex(data), ToHex(FromHex(b.at("ciphertext"))));
    ASSERT_TRUE(cipher->DecryptCbc(iv, data));
    EXPECT_EQ(ToHex(data), ToHex(FromHex(b.at("plaintext"))));
  }
}

// 3DES-CBC (RFC 2451), the weak cipher some old clients still offer. Key: the three keys of
// NIST SP 800-67's example (0123456789abcdef, 23456789abcdef01, 456789abcdef0123); IV and
// plaintext arbitrary. Ciphertext computed with python3 `cryptography` 48.0.0 (its decrepit
// TripleDES in CBC mode).
TEST(IkeCipherKat, TripleDesCbc) {
  const Bytes key = FromHex("0123456789abcdef23456789abcdef01456789abcdef0123");
  const Bytes iv = FromHex("f69f2445df4f9b17");
  const Bytes plaintext = FromHex(
      "54686520717569636b2062726f776e20666f78206a756d7073206f76657220746865206c617a7920");
  auto cipher = IkeCipher::Create(IkeEncr::k3desCbc, key);
  ASSERT_NE(cipher, nullptr);
  Bytes data = plaintext;
  ASSERT_TRUE(cipher->EncryptCbc(iv, data));
  EXPECT_EQ(ToHex(data), "63693c3d378a862f8051ae7c2934a296aa6c3102b6e5b79eff6819426963a4c2be1dea5a"
                         "0e774ea3");
  ASSERT_TRUE(cipher->DecryptCbc(iv, data));
  EXPECT_EQ(ToHex(data), ToHex(plaintext));
  // 8-byte blocks and IV: 16 bytes of IV or a partial block are refused.
  EXPECT_FALSE(cipher->EncryptCbc(Bytes(16), std::span(data).first(8)));
  EXPECT_FALSE(cipher->EncryptCbc(iv, std::span(data).first(12)));
  EXPECT_EQ(IkeCipher::Create(IkeEncr::k3desCbc, Bytes(16)), nullptr);
}

class IkeCipherAeadTest : public ::testing::TestWithParam<IkeEncr> {};

TEST_P(IkeCipherAeadTest, RoundTripsAnyLength) {
  auto cipher = RandomCipher(GetParam());
  ASSERT_NE(cipher, nullptr);
  for (std::size_t len : {0, 1, 15, 16, 17, 100, 1500}) {
    SCOPED_TRACE(len);
    const Bytes iv = Random(8), aad = Random(len % 40), plaintext = Random(len);
    Bytes data = plaintext, icv(16);
    ASSERT_TRUE(cipher->Seal(iv, aad, data, icv));
    if (len >= 16) {
      EXPECT_NE(ToHex(data), ToHex(plaintext));
    }
    ASSERT_TRUE(cipher->Open(iv, aad, data, icv));
    EXPECT_EQ(ToHex(data), ToHex(plaintext));
  }
}

// Each change must be refused, and the unauthenticated plaintext must not be left behind.
TEST_P(IkeCipherAeadTest, RejectsTamperedMessages) {
  auto cipher = RandomCipher(GetParam());
  ASSERT_NE(cipher, nullptr);
  const Bytes iv = Random(8), aad = Random(28), plaintext = Random(64);
  Bytes ciphertext = plaintext, icv(16);
  ASSERT_TRUE(cipher->Seal(iv, aad, ciphertext, icv));

  auto open = [&](Bytes iv_x, Bytes aad_x, Bytes ct_x, Bytes icv_x) {
    const bool ok = cipher->Open(iv_x, aad_x, ct_x, icv_x);
    if (!ok) {
      EXPECT_EQ(ToHex(ct_x), ToHex(Bytes(ct_x.size(), 0)));
    }
    return ok;
  };
  ASSERT_TRUE(open(iv, aad, ciphertext, icv));
  for (std::size_t i : {std::size_t{0}, std::size_t{15}}) {
    Bytes bad = icv;
    bad[i] ^= 0x01;
    EXPECT_FALSE(open(iv, aad, ciphertext, bad)) << "tag byte " << i;
  }
  for (std::size_t i : {std::size_t{0}, std::size_t{63}}) {
    Bytes bad = ciphertext;
    bad[i] ^= 0x80;
    EXPECT_FALSE(open(iv, aad, bad, icv)) << "ciphertext byte " << i;
  }
  Bytes bad_aad = aad;
  bad_aad[3] ^= 0x01;
  EXPECT_FALSE(open(iv, bad_aad, ciphertext, icv));
  EXPECT_FALSE(open(iv, Bytes(), ciphertext, icv));
  Bytes bad_iv = iv;
  bad_iv[7] ^= 0x01;
  EXPECT_FALSE(open(bad_iv, aad, ciphertext, icv));
  EXPECT_FALSE(open(iv, aad, Bytes(ciphertext.begin(), ciphertext.end() - 1), icv));
  // A good message still opens after the failures: the context recovers.
  EXPECT_TRUE(open(iv, aad, ciphertext, icv));
}

TEST_P(IkeCipherAeadTest, RejectsWrongLengthsAndCbcCalls) {
  auto cipher = RandomCipher(GetParam());
  ASSERT_NE(cipher, nullptr);
  Bytes data(32), icv(16);
  EXPECT_FALSE(cipher->Seal(Bytes(7), {}, data, icv));
  EXPECT_FALSE(cipher->Seal(Bytes(12), {}, data, icv));
  Bytes short_icv(8);
  EXPECT_FALSE(cipher->Seal(Bytes(8), {}, data, short_icv));
  EXPECT_FALSE(cipher->Open(Bytes(8), {}, data, short_icv));
  EXPECT_FALSE(cipher->EncryptCbc(Bytes(16), data));
  EXPECT_FALSE(cipher->DecryptCbc(Bytes(16), data));
}

// One object serves both directions and many messages; a second object with the same key
// must agree message by message.
TEST_P(IkeCipherAeadTest, ReusedContextsMatchFreshObjects) {
  const Bytes keymat = Random(IkeEncrInfoFor(GetParam()).keymat_len());
  auto reused = IkeCipher::Create(GetParam(), keymat);
  ASSERT_NE(reused, nullptr);
  for (int i = 0; i < 5; ++i) {
    const Bytes iv = Random(8), aad = Random(i * 7), plaintext = Random(i * 33);
    Bytes a = plaintext, b = plaintext, icv_a(16), icv_b(16);
    ASSERT_TRUE(reused->Seal(iv, aad, a, icv_a));
    auto fresh = IkeCipher::Create(GetParam(), keymat);
    ASSERT_TRUE(fresh->Seal(iv, aad, b, icv_b));
    EXPECT_EQ(ToHex(a), ToHex(b));
    EXPECT_EQ(ToHex(icv_a), ToHex(icv_b));
    ASSERT_TRUE(reused->Open(iv, aad, b, icv_b));
    EXPECT_EQ(ToHex(b), ToHex(plaintext));
  }
}

INSTANTIATE_TEST_SUITE_P(IkeCipher, IkeCipherAeadTest, ::testing::ValuesIn(kAeads),
                         [](const auto& info) {
                           return std::string(kEncrNames[static_cast<int>(info.param)]);
                         });

TEST(IkeCipherCbc, RoundTripAndLengthChecks) {
  for (IkeEncr encr : {IkeEncr::kAesCbc128, IkeEncr::kAesCbc256}) {
    auto cipher = RandomCipher(encr);
    ASSERT_NE(cipher, nullptr);
    for (std::size_t len : {0, 16, 32, 1024}) {
      const Bytes iv = Random(16), plaintext = Random(len);
      Bytes data = plaintext;
      ASSERT_TRUE(cipher->EncryptCbc(iv, data));
      ASSERT_TRUE(cipher->DecryptCbc(iv, data));
      EXPECT_EQ(ToHex(data), ToHex(plaintext));
    }
    Bytes data(17), icv(16);
    EXPECT_FALSE(cipher->EncryptCbc(Bytes(16), data));
    EXPECT_FALSE(cipher->DecryptCbc(Bytes(16), std::span(data).first(15)));
    EXPECT_FALSE(cipher->EncryptCbc(Bytes(8), std::span(data).first(16)));
    EXPECT_FALSE(cipher->Seal(Bytes(8), {}, data, icv));
    EXPECT_FALSE(cipher->Open(Bytes(8), {}, data, icv));
  }
}

// The RFC 7296 3.14 layout for CBC: the ICV covers the message from the IKE header through the
// ciphertext (IV included), computed after encryption and checked before decryption.
TEST(IkeCipherCbc, WithIntegrityAsInRfc7296) {
  auto cipher = RandomCipher(IkeEncr::kAesCbc256);
  auto integ = Integrity::Create(IntegAlg::kHmacSha256_128, Random(32));
  ASSERT_NE(cipher, nullptr);
  ASSERT_NE(integ, nullptr);
  const Bytes header = Random(28 + 4), iv = Random(16), plaintext = Random(48);
  Bytes message = header;
  message.insert(message.end(), iv.begin(), iv.end());
  message.insert(message.end(), plaintext.begin(), plaintext.end());
  const std::span<std::uint8_t> body(message.data() + header.size() + iv.size(), plaintext.size());
  ASSERT_TRUE(cipher->EncryptCbc(iv, body));
  Bytes icv(integ->icv_length());
  integ->Compute(message, icv);

  ASSERT_TRUE(integ->Verify(message, icv));
  ASSERT_TRUE(cipher->DecryptCbc(iv, body));
  EXPECT_EQ(ToHex(body), ToHex(plaintext));
}

TEST(IkeCipherInfo, TransformsAndKeyMaterial) {
  EXPECT_EQ(IkeEncrFromTransform(12, 128), IkeEncr::kAesCbc128);
  EXPECT_EQ(IkeEncrFromTransform(12, 256), IkeEncr::kAesCbc256);
  EXPECT_EQ(IkeEncrFromTransform(20, 128), IkeEncr::kAesGcm16_128);
  EXPECT_EQ(IkeEncrFromTransform(20, 256), IkeEncr::kAesGcm16_256);
  EXPECT_EQ(IkeEncrFromTransform(28, 0), IkeEncr::kChaCha20Poly1305);
  EXPECT_FALSE(IkeEncrFromTransform(20, 192).has_value());
  EXPECT_FALSE(IkeEncrFromTransform(28, 256).has_value());
  EXPECT_FALSE(IkeEncrFromTransform(12, 0).has_value());
  EXPECT_EQ(IkeEncrFromTransform(3, 0), IkeEncr::k3desCbc);  // ENCR_3DES: no Key Length
  EXPECT_FALSE(IkeEncrFromTransform(3, 192).has_value());
  EXPECT_EQ(IkeEncrInfoFor(IkeEncr::k3desCbc).keymat_len(), 24u);
  EXPECT_EQ(IkeEncrInfoFor(IkeEncr::k3desCbc).iv_len, 8u);
  EXPECT_EQ(IkeEncrInfoFor(IkeEncr::k3desCbc).block_len, 8u);

  EXPECT_EQ(IkeEncrInfoFor(IkeEncr::kAesGcm16_128).keymat_len(), 20u);
  EXPECT_EQ(IkeEncrInfoFor(IkeEncr::kAesGcm16_256).keymat_len(), 36u);
  EXPECT_EQ(IkeEncrInfoFor(IkeEncr::kChaCha20Poly1305).keymat_len(), 36u);
  EXPECT_EQ(IkeEncrInfoFor(IkeEncr::kAesCbc128).keymat_len(), 16u);
  EXPECT_EQ(IkeEncrInfoFor(IkeEncr::kAesCbc256).iv_len, 16u);
  for (IkeEncr encr : kAeads) {
    const IkeEncrInfo& info = IkeEncrInfoFor(encr);
    EXPECT_EQ(info.encr, encr);
    EXPECT_EQ(info.iv_len, 8u);
    EXPECT_EQ(info.icv_len, 16u);
    EXPECT_EQ(IkeCipher::Create(encr, Bytes(info.keymat_len() - 1)), nullptr);
    EXPECT_EQ(IkeCipher::Create(encr, Bytes(info.key_len)), nullptr);
    EXPECT_NE(IkeCipher::Create(encr, Bytes(info.keymat_len())), nullptr);
  }
}

}  // namespace
}  // namespace spigot::crypto
