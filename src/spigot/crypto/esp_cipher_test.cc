// Known-answer tests for EspCipher. Every vector comes from a file in crypto/testdata/ whose
// first comment names the document, section and test cases it was transcribed from and how
// each value was checked against an independent implementation.
#include "spigot/crypto/esp_cipher.h"

#include <gtest/gtest.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "spigot/test_tools/hex.h"

namespace spigot::crypto {
namespace {

using test_tools::FromHex;
using test_tools::ReadVectorFile;
using test_tools::ToHex;
using test_tools::VectorBlock;
using Bytes = std::vector<std::uint8_t>;

constexpr EspSuite kAllSuites[] = {EspSuite::kAesGcm128,           EspSuite::kAesGcm256,
                                   EspSuite::kChaCha20Poly1305,     EspSuite::kAesCbc128HmacSha256,
                                   EspSuite::kAesCbc256HmacSha256,  EspSuite::kAesCbc128HmacSha1,
                                   EspSuite::kAesCbc256HmacSha1};

Bytes Field(const VectorBlock& b, const std::string& key) {
  const auto it = b.find(key);
  EXPECT_NE(it, b.end()) << "vector block lacks '" << key << "'";
  return it == b.end() ? Bytes{} : FromHex(it->second);
}

std::string Name(const VectorBlock& b) {
  const auto it = b.find("name");
  return it == b.end() ? "(unnamed)" : it->second;
}

Bytes Concat(const Bytes& a, const Bytes& b) {
  Bytes out = a;
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

// Arbitrary filler for the half of the key material a test does not exercise (the HMAC key of
// a CBC test, the AES key of an HMAC test).
Bytes Filler(std::size_t n, std::uint8_t seed) {
  Bytes out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::uint8_t>(seed + 37 * i);
  return out;
}

// Checks one AEAD vector in both directions through EspCipher, plus the ways a receiver must
// refuse it: any change to tag, ciphertext, AAD or IV.
void CheckAeadVector(EspSuite suite, const Bytes& keymat, const Bytes& iv, const Bytes& aad,
                     const Bytes& plaintext, const Bytes& ciphertext, const Bytes& tag) {
  ImbManager& mgr = ImbManager::ForThisThread();
  ASSERT_EQ(iv.size(), 8u);
  ASSERT_EQ(tag.size(), kEspIcvLen);
  ASSERT_EQ(plaintext.size(), ciphertext.size());
  EspCipher cipher;
  ASSERT_TRUE(cipher.Init(mgr, suite, keymat));
  ASSERT_TRUE(cipher.initialized());
  EXPECT_EQ(cipher.suite(), suite);

  Bytes data = plaintext;
  std::array<std::uint8_t, kEspIcvLen> icv{};
  cipher.SealAead(mgr, iv.data(), aad, data, icv.data());
  EXPECT_EQ(ToHex(data), ToHex(ciphertext)) << "ciphertext";
  EXPECT_EQ(ToHex(icv), ToHex(tag)) << "tag";

  data = ciphertext;
  EXPECT_TRUE(cipher.OpenAead(mgr, iv.data(), aad, data, tag.data()));
  EXPECT_EQ(ToHex(data), ToHex(plaintext)) << "decrypted";

  for (std::size_t i : {std::size_t{0}, kEspIcvLen / 2, kEspIcvLen - 1}) {
    Bytes bad_tag = tag;
    bad_tag[i] ^= 0x01;
    data = ciphertext;
    EXPECT_FALSE(cipher.OpenAead(mgr, iv.data(), aad, data, bad_tag.data())) << "tag byte " << i;
  }
  if (!ciphertext.empty()) {
    for (std::size_t i : {std::size_t{0}, ciphertext.size() - 1}) {
      data = ciphertext;
      data[i] ^= 0x80;
      EXPECT_FALSE(cipher.OpenAead(mgr, iv.data(), aad, data, tag.data()))
          << "ciphertext byte " << i;
    }
  }
  if (!aad.empty()) {
    Bytes bad_aad = aad;
    bad_aad.back() ^= 0x01;
    data = ciphertext;
    EXPECT_FALSE(cipher.OpenAead(mgr, iv.data(), bad_aad, data, tag.data())) << "aad";
  }
  Bytes short_aad(aad.begin(), aad.end());
  short_aad.push_back(0);
  data = ciphertext;
  EXPECT_FALSE(cipher.OpenAead(mgr, iv.data(), short_aad, data, tag.data())) << "aad length";
  Bytes bad_iv = iv;
  bad_iv[7] ^= 0x01;
  data = ciphertext;
  EXPECT_FALSE(cipher.OpenAead(mgr, bad_iv.data(), aad, data, tag.data())) << "iv";
}

// --- ChaCha20-Poly1305 -----------------------------------------------------------------------

// RFC 8439 2.8.2 and A.5, with the 96-bit nonce split into ESP's salt (key material) and IV.
TEST(EspCipherKatChaCha20Poly1305, Rfc8439Aead) {
  const auto blocks = ReadVectorFile("src/spigot/crypto/testdata/chacha20poly1305_rfc8439.txt");
  ASSERT_EQ(blocks.size(), 2u);
  for (const VectorBlock& b : blocks) {
    SCOPED_TRACE(Name(b));
    CheckAeadVector(EspSuite::kChaCha20Poly1305, Concat(Field(b, "key"), Field(b, "salt")),
                    Field(b, "iv"), Field(b, "aad"), Field(b, "plaintext"), Field(b, "ciphertext"),
                    Field(b, "tag"));
  }
}

// RFC 7634 Appendix A: the ESP payload of the example packet, AAD = SPI || seq.
TEST(EspCipherKatChaCha20Poly1305, Rfc7634EspExample) {
  const auto blocks = ReadVectorFile("src/spigot/crypto/testdata/chacha20poly1305_esp_rfc7634.txt");
  ASSERT_EQ(blocks.size(), 1u);
  const VectorBlock& b = blocks[0];
  SCOPED_TRACE(Name(b));
  const Bytes aad = Field(b, "aad");
  EXPECT_EQ(ToHex(aad), ToHex(Concat(Field(b, "spi"), Field(b, "seq"))));
  CheckAeadVector(EspSuite::kChaCha20Poly1305, Field(b, "keymat"), Field(b, "iv"), aad,
                  Field(b, "plaintext"), Field(b, "ciphertext"), Field(b, "tag"));
}

// --- AES-GCM ---------------------------------------------------------------------------------

// McGrew-Viega GCM specification, Appendix B test cases 2-4 and 14-16.
TEST(EspCipherKatAesGcm, GcmSpecTestCases) {
  const auto blocks = ReadVectorFile("src/spigot/crypto/testdata/aes_gcm_esp_mcgrew.txt");
  ASSERT_EQ(blocks.size(), 6u);
  for (const VectorBlock& b : blocks) {
    SCOPED_TRACE(Name(b));
    const Bytes key = Field(b, "key");
    ASSERT_TRUE(key.size() == 16 || key.size() == 32);
    const EspSuite suite = key.size() == 16 ? EspSuite::kAesGcm128 : EspSuite::kAesGcm256;
    CheckAeadVector(suite, Concat(key, Field(b, "salt")), Field(b, "iv"), Field(b, "aad"),
                    Field(b, "plaintext"), Field(b, "ciphertext"), Field(b, "tag"));
  }
}

// --- HMAC-SHA-256-128 ------------------------------------------------------------------------

// RFC 4868 2.7.2.1 AUTH256-1..4 through both CBC suites: the HMAC key follows the AES key in
// the key material (RFC 7296 2.17), at offset 16 or 32.
TEST(EspCipherKatHmacSha256, Rfc4868Authenticator) {
  const auto blocks = ReadVectorFile("src/spigot/crypto/testdata/hmac_sha256_128_rfc4868.txt");
  ASSERT_EQ(blocks.size(), 4u);
  ImbManager& mgr = ImbManager::ForThisThread();
  for (const EspSuite suite : {EspSuite::kAesCbc128HmacSha256, EspSuite::kAesCbc256HmacSha256}) {
    const std::size_t aes_len = suite == EspSuite::kAesCbc128HmacSha256 ? 16 : 32;
    for (const VectorBlock& b : blocks) {
      SCOPED_TRACE(Name(b) + (aes_len == 16 ? " with AES-128" : " with AES-256"));
      const Bytes key = Field(b, "key");
      const Bytes data = Field(b, "data");
      const Bytes mac = Field(b, "mac");
      ASSERT_EQ(key.size(), 32u);
      ASSERT_EQ(mac.size(), kEspIcvLen);
      const Bytes prf = Field(b, "prf");
      ASSERT_EQ(prf.size(), 32u);
      EXPECT_EQ(ToHex(Bytes(prf.begin(), prf.begin() + 16)), ToHex(mac)) << "truncation";

      EspCipher cipher;
      ASSERT_TRUE(cipher.Init(mgr, suite, Concat(Filler(aes_len, 0x5a), key)));
      std::array<std::uint8_t, kEspIcvLen> icv{};
      cipher.Mac(mgr, data, icv.data());
      EXPECT_EQ(ToHex(icv), ToHex(mac));
      EXPECT_TRUE(cipher.VerifyMac(mgr, data, mac.data()));

      for (std::size_t i : {std::size_t{0}, kEspIcvLen - 1}) {
        Bytes bad = mac;
        bad[i] ^= 0x01;
        EXPECT_FALSE(cipher.VerifyMac(mgr, data, bad.data())) << "icv byte " << i;
      }
      Bytes longer = data;
      longer.push_back(0);
      EXPECT_FALSE(cipher.VerifyMac(mgr, longer, mac.data())) << "message length";
      Bytes changed = data;
      changed.back() ^= 0x01;
      EXPECT_FALSE(cipher.VerifyMac(mgr, changed, mac.data())) << "message contents";
    }
  }
}

// --- HMAC-SHA1-96 ----------------------------------------------------------------------------

// RFC 2202 HMAC-SHA-1 test cases with a 20-byte key (RFC 2404 3: the key is exactly 160 bits),
// truncated to their first 96 bits (RFC 2404 2), through both AES-CBC + SHA-1 suites.
TEST(EspCipherKatHmacSha1, Rfc2202TruncatedTo96) {
  const auto blocks = ReadVectorFile("src/spigot/crypto/testdata/hmac_sha1_rfc2202.txt");
  ImbManager& mgr = ImbManager::ForThisThread();
  int checked = 0;
  for (const EspSuite suite : {EspSuite::kAesCbc128HmacSha1, EspSuite::kAesCbc256HmacSha1}) {
    const std::size_t aes_len = SuiteInfo(suite).enc_key_len;
    ASSERT_EQ(SuiteInfo(suite).icv_len, 12u);
    for (const VectorBlock& b : blocks) {
      const Bytes key = Field(b, "key");
      if (key.size() != 20) continue;
      SCOPED_TRACE(Name(b) + (aes_len == 16 ? " with AES-128" : " with AES-256"));
      const Bytes data = Field(b, "data");
      const Bytes full = Field(b, "hmac_sha1");
      const Bytes mac(full.begin(), full.begin() + 12);
      EspCipher cipher;
      ASSERT_TRUE(cipher.Init(mgr, suite, Concat(Filler(aes_len, 0x5a), key)));
      std::array<std::uint8_t, kEspIcvLen> icv{};
      icv.fill(0xee);
      cipher.Mac(mgr, data, icv.data());
      EXPECT_EQ(ToHex(Bytes(icv.begin(), icv.begin() + 12)), ToHex(mac));
      EXPECT_EQ(icv[12], 0xee) << "wrote past the 12-byte ICV";
      EXPECT_TRUE(cipher.VerifyMac(mgr, data, mac.data()));
      for (std::size_t i : {std::size_t{0}, std::size_t{11}}) {
        Bytes bad = mac;
        bad[i] ^= 0x01;
        EXPECT_FALSE(cipher.VerifyMac(mgr, data, bad.data())) << "icv byte " << i;
      }
      Bytes changed = data;
      changed.back() ^= 0x01;
      EXPECT_FALSE(cipher.VerifyMac(mgr, changed, mac.data()));
      ++checked;
    }
  }
  EXPECT_EQ(checked, 6);  // test cases 1, 3 and 5, twice
}

// --- AES-CBC ---------------------------------------------------------------------------------

// NIST SP 800-38A F.2.1/F.2.2 (AES-128) and F.2.5/F.2.6 (AES-256), in place, for each whole-
// block prefix of the example (CBC output is a prefix-preserving chain).
TEST(EspCipherKatAesCbc, Sp800_38aExamples) {
  const auto blocks = ReadVectorFile("src/spigot/crypto/testdata/aes_cbc_sp800_38a.txt");
  ASSERT_EQ(blocks.size(), 2u);
  ImbManager& mgr = ImbManager::ForThisThread();
  for (const VectorBlock& b : blocks) {
    SCOPED_TRACE(Name(b));
    const Bytes key = Field(b, "key");
    const Bytes iv = Field(b, "iv");
    const Bytes plaintext = Field(b, "plaintext");
    const Bytes ciphertext = Field(b, "ciphertext");
    ASSERT_TRUE(key.size() == 16 || key.size() == 32);
    ASSERT_EQ(iv.size(), 16u);
    const EspSuite suite =
        key.size() == 16 ? EspSuite::kAesCbc128HmacSha256 : EspSuite::kAesCbc256HmacSha256;
    EspCipher cipher;
    ASSERT_TRUE(cipher.Init(mgr, suite, Concat(key, Filler(32, 0xc3))));
    for (std::size_t len = 16; len <= plaintext.size(); len += 16) {
      SCOPED_TRACE(len);
      Bytes data(plaintext.begin(), plaintext.begin() + len);
      cipher.EncryptCbc(mgr, iv.data(), data);
      EXPECT_EQ(ToHex(data), ToHex(Bytes(ciphertext.begin(), ciphertext.begin() + len)));
      cipher.DecryptCbc(mgr, iv.data(), data);
      EXPECT_EQ(ToHex(data), ToHex(Bytes(plaintext.begin(), plaintext.begin() + len)));
    }
  }
}

// MakeCbcIv: deterministic per (key, counter), distinct across counters and across keys.
TEST(EspCipherKatAesCbc, CbcIvsAreDistinctPerCounterAndKey) {
  ImbManager& mgr = ImbManager::ForThisThread();
  for (const EspSuite suite : {EspSuite::kAesCbc128HmacSha256, EspSuite::kAesCbc256HmacSha256}) {
    const std::size_t len = SuiteInfo(suite).keymat_len();
    EspCipher a, b;
    ASSERT_TRUE(a.Init(mgr, suite, Filler(len, 1)));
    ASSERT_TRUE(b.Init(mgr, suite, Filler(len, 2)));
    std::set<std::string> seen;
    for (std::uint64_t counter :
         {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{2}, std::uint64_t{0xffffffff},
          std::uint64_t{0x100000000}, ~std::uint64_t{0}}) {
      std::array<std::uint8_t, 16> iv1{}, iv2{}, other{};
      a.MakeCbcIv(mgr, counter, iv1.data());
      a.MakeCbcIv(mgr, counter, iv2.data());
      b.MakeCbcIv(mgr, counter, other.data());
      EXPECT_EQ(ToHex(iv1), ToHex(iv2)) << counter;
      EXPECT_NE(ToHex(iv1), ToHex(other)) << counter;
      EXPECT_TRUE(seen.insert(ToHex(iv1)).second) << "repeated IV for counter " << counter;
    }
  }
}

// --- Suite table and key material --------------------------------------------------------------

// The suite parameters against their RFCs and the IANA IKEv2 registry.
TEST(EspCipherKatSuites, TableMatchesRfcs) {
  struct Want {
    EspSuite suite;
    std::uint8_t enc, salt, integ, iv, pad_align;
    bool aead;
    std::uint16_t encr_id, integ_id;
  };
  const Want wants[] = {
      // RFC 4106 4/8.1: 16/32-byte key + 4-byte salt, 8-byte IV; ENCR_AES_GCM_16 = 20.
      {EspSuite::kAesGcm128, 16, 4, 0, 8, 4, true, 20, 0},
      {EspSuite::kAesGcm256, 32, 4, 0, 8, 4, true, 20, 0},
      // RFC 7634 2: 32-byte key + 4-byte salt, 8-byte IV; ENCR_CHACHA20_POLY1305 = 28.
      {EspSuite::kChaCha20Poly1305, 32, 4, 0, 8, 4, true, 28, 0},
      // RFC 3602: 16-byte IV, pad to the block; ENCR_AES_CBC = 12. RFC 4868 2.1.1: 32-byte
      // key; AUTH_HMAC_SHA2_256_128 = 12.
      {EspSuite::kAesCbc128HmacSha256, 16, 0, 32, 16, 16, false, 12, 12},
      {EspSuite::kAesCbc256HmacSha256, 32, 0, 32, 16, 16, false, 12, 12},
      // RFC 2404 3: 20-byte key, 12-byte ICV; AUTH_HMAC_SHA1_96 = 2.
      {EspSuite::kAesCbc128HmacSha1, 16, 0, 20, 16, 16, false, 12, 2},
      {EspSuite::kAesCbc256HmacSha1, 32, 0, 20, 16, 16, false, 12, 2},
  };
  for (const Want& w : wants) {
    const EspSuiteInfo& info = SuiteInfo(w.suite);
    SCOPED_TRACE(std::string(info.name));
    EXPECT_EQ(info.suite, w.suite);
    EXPECT_EQ(info.enc_key_len, w.enc);
    EXPECT_EQ(info.salt_len, w.salt);
    EXPECT_EQ(info.integ_key_len, w.integ);
    EXPECT_EQ(info.iv_len, w.iv);
    EXPECT_EQ(info.icv_len, w.integ_id == 2 ? 12u : kEspIcvLen);
    EXPECT_EQ(info.pad_align, w.pad_align);
    EXPECT_EQ(info.aead, w.aead);
    EXPECT_EQ(info.ikev2_encr_id, w.encr_id);
    EXPECT_EQ(info.ikev2_integ_id, w.integ_id);
    EXPECT_LE(info.keymat_len(), kMaxEspKeymatLen);
    const auto by_name = SuiteByName(info.name);
    ASSERT_TRUE(by_name.has_value());
    EXPECT_EQ(*by_name, w.suite);
  }
  EXPECT_EQ(SuiteByName("aes128gcm16"), EspSuite::kAesGcm128);
  EXPECT_FALSE(SuiteByName("aes192gcm16").has_value());
  EXPECT_FALSE(SuiteByName("").has_value());
}

TEST(EspCipherKatSuites, InitAcceptsExactlyTheKeymatLength) {
  ImbManager& mgr = ImbManager::ForThisThread();
  for (const EspSuite suite : kAllSuites) {
    const std::size_t len = SuiteInfo(suite).keymat_len();
    SCOPED_TRACE(std::string(SuiteInfo(suite).name));
    for (std::size_t wrong : {std::size_t{0}, len - 4, len - 1, len + 1, len + 4}) {
      EspCipher cipher;
      EXPECT_FALSE(cipher.Init(mgr, suite, Filler(wrong, 9))) << wrong << " bytes";
      EXPECT_FALSE(cipher.initialized());
    }
    EspCipher cipher;
    EXPECT_TRUE(cipher.Init(mgr, suite, Filler(len, 9)));
    EXPECT_TRUE(cipher.initialized());
    cipher.Clear();
    EXPECT_FALSE(cipher.initialized());
  }
}

// An AEAD SA opening an empty payload (no plaintext, tag over the AAD only) must still verify;
// ESP never sends one, but the primitive must not depend on data.data() being non-null.
TEST(EspCipherKatAead, EmptyPlaintextRoundTrip) {
  ImbManager& mgr = ImbManager::ForThisThread();
  for (const EspSuite suite :
       {EspSuite::kAesGcm128, EspSuite::kAesGcm256, EspSuite::kChaCha20Poly1305}) {
    SCOPED_TRACE(std::string(SuiteInfo(suite).name));
    EspCipher cipher;
    ASSERT_TRUE(cipher.Init(mgr, suite, Filler(SuiteInfo(suite).keymat_len(), 3)));
    const Bytes iv = Filler(8, 4);
    const Bytes aad = Filler(12, 5);
    std::array<std::uint8_t, kEspIcvLen> icv{};
    std::span<std::uint8_t> empty;
    cipher.SealAead(mgr, iv.data(), aad, empty, icv.data());
    EXPECT_TRUE(cipher.OpenAead(mgr, iv.data(), aad, empty, icv.data()));
    icv[0] ^= 1;
    EXPECT_FALSE(cipher.OpenAead(mgr, iv.data(), aad, empty, icv.data()));
  }
}

}  // namespace
}  // namespace spigot::crypto
