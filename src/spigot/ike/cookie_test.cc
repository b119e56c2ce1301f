#include "spigot/ike/cookie.h"

#include <gtest/gtest.h>

namespace spigot::ike {
namespace {

using TP = CookieJar::TimePoint;
TP At(int s) { return TP{} + std::chrono::hours(1) + std::chrono::seconds(s); }

TEST(CookieJar, VerifiesItsOwnCookiesOnly) {
  CookieJar jar(At(0));
  const Bytes ni(32, 7), ip = {192, 0, 2, 1};
  const Bytes c = jar.Make(ni, ip, 0x1122334455667788ull, At(0));
  EXPECT_EQ(c.size(), CookieJar::kCookieLen);
  EXPECT_TRUE(jar.Verify(c, ni, ip, 0x1122334455667788ull, At(1)));
  EXPECT_FALSE(jar.Verify(c, ni, ip, 0x1122334455667789ull, At(1))) << "other SPIi";
  EXPECT_FALSE(jar.Verify(c, ni, Bytes{192, 0, 2, 2}, 0x1122334455667788ull, At(1))) << "other address";
  EXPECT_FALSE(jar.Verify(c, Bytes(32, 8), ip, 0x1122334455667788ull, At(1))) << "other nonce";
  Bytes forged = c;
  forged.back() ^= 1;
  EXPECT_FALSE(jar.Verify(forged, ni, ip, 0x1122334455667788ull, At(1)));
  EXPECT_FALSE(jar.Verify(Bytes(c.begin(), c.end() - 1), ni, ip, 0x1122334455667788ull, At(1)));
  CookieJar other(At(0));
  EXPECT_FALSE(other.Verify(c, ni, ip, 0x1122334455667788ull, At(1))) << "another secret";
}

TEST(CookieJar, SecretRotatesAndThePreviousOneStaysValidOnePeriod) {
  CookieJar jar(At(0));
  const Bytes ni(32, 7), ip = {192, 0, 2, 1};
  const Bytes c = jar.Make(ni, ip, 1, At(0));
  EXPECT_TRUE(jar.Verify(c, ni, ip, 1, At(61)));    // rotated once: previous secret
  EXPECT_NE(jar.Make(ni, ip, 1, At(61)), c);         // new cookies use the new secret
  EXPECT_FALSE(jar.Verify(c, ni, ip, 1, At(122)));  // rotated twice: expired
}

}  // namespace
}  // namespace spigot::ike
