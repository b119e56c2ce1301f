// The parse cache behind Certificate::FromDer: the same DER bytes come back as the same parsed
// certificate, other bytes never do, it stays within its capacity (least recently used out),
// and a malformed certificate is refused every time and never cached.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "spigot/pki/certificate.h"
#include "spigot/test_tools/test_pki.h"

namespace spigot::pki {
namespace {

using test_tools::TestCert;
using test_tools::TestKey;
using test_tools::TestPki;

class CertCache : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(std::filesystem::temp_directory_path() / ("spigot-cert-cache-" + std::to_string(getpid())));
    pki_ = new TestPki(*dir_);
    root_ = new TestCert(pki_->Ca("root", "C=CH, O=Example, CN=Cache Root"));
    for (int i = 0; i < 3; ++i) {
      users_.push_back(pki_->Issue("user" + std::to_string(i), *root_, "C=CH, O=Example, CN=user" + std::to_string(i),
                                   TestKey::kEcP256));
    }
  }
  static void TearDownTestSuite() {
    SetCertificateCacheCapacity(kDefaultCertificateCacheEntries);
    std::filesystem::remove_all(*dir_);
  }
  void SetUp() override {
    SetCertificateCacheCapacity(0);  // empties it
  }

  static Bytes DerOf(const TestCert& c) {
    std::string error;
    auto v = LoadCertificates(c.cert_path, &error);
    EXPECT_EQ(v.size(), 1u) << error;
    return v.front().Der();
  }
  static Certificate Parse(const Bytes& der) {
    std::string error;
    auto c = Certificate::FromDer(der, &error);
    EXPECT_TRUE(c) << error;
    return *c;
  }

  static inline std::string* dir_;
  static inline TestPki* pki_;
  static inline TestCert* root_;
  static inline std::vector<TestCert> users_;
};

TEST_F(CertCache, SameBytesGiveTheSameParsedCertificateOthersDoNot) {
  SetCertificateCacheCapacity(8);
  const Bytes a = DerOf(users_[0]), b = DerOf(users_[1]);
  const auto before = GetCertificateCacheStats();
  const Certificate a1 = Parse(a), a2 = Parse(a), b1 = Parse(b);
  EXPECT_EQ(a1.get(), a2.get());  // one X509, parsed once
  EXPECT_NE(a1.get(), b1.get());
  EXPECT_EQ(a2.Subject(), "C=CH, O=Example, CN=user0");
  EXPECT_EQ(b1.Subject(), "C=CH, O=Example, CN=user1");
  const auto after = GetCertificateCacheStats();
  EXPECT_EQ(after.hits - before.hits, 1u);
  EXPECT_EQ(after.misses - before.misses, 2u);
  EXPECT_EQ(after.entries, 2u);
}

TEST_F(CertCache, ByteForByteOnlyAPrefixOrOneFlippedBitIsNotAHit) {
  SetCertificateCacheCapacity(8);
  const Bytes a = DerOf(users_[0]);
  const Certificate a1 = Parse(a);
  Bytes flipped = a;
  flipped[flipped.size() - 1] ^= 0x01;  // inside the signature: still parses, other bytes
  std::string error;
  auto f = Certificate::FromDer(flipped, &error);
  ASSERT_TRUE(f) << error;
  EXPECT_NE(f->get(), a1.get());
  const Bytes prefix(a.begin(), a.end() - 1);
  EXPECT_FALSE(Certificate::FromDer(prefix, &error));
  EXPECT_NE(error.find("malformed certificate"), std::string::npos) << error;
}

TEST_F(CertCache, MalformedBytesAreRefusedEveryTimeAndNeverCached) {
  SetCertificateCacheCapacity(8);
  const Bytes junk{0x30, 0x03, 0x02, 0x01, 0x05};
  std::string error;
  EXPECT_FALSE(Certificate::FromDer(junk, &error));
  EXPECT_FALSE(Certificate::FromDer(junk, &error));
  EXPECT_EQ(GetCertificateCacheStats().entries, 0u);
}

TEST_F(CertCache, StaysWithinItsCapacityDroppingTheLeastRecentlyUsed) {
  SetCertificateCacheCapacity(2);
  const Bytes a = DerOf(users_[0]), b = DerOf(users_[1]), c = DerOf(users_[2]);
  const Certificate a1 = Parse(a);
  const Certificate b1 = Parse(b);
  EXPECT_EQ(Parse(a).get(), a1.get());  // a is now the most recently used
  const Certificate c1 = Parse(c);      // b goes
  EXPECT_EQ(GetCertificateCacheStats().entries, 2u);
  EXPECT_EQ(Parse(a).get(), a1.get());
  EXPECT_NE(Parse(b).get(), b1.get());  // parsed again
  // Turned off: nothing kept, every parse is new.
  SetCertificateCacheCapacity(0);
  EXPECT_EQ(GetCertificateCacheStats().entries, 0u);
  EXPECT_NE(Parse(a).get(), Parse(a).get());
}

}  // namespace
}  // namespace spigot::pki
