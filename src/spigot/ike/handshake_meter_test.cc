#include "spigot/ike/handshake_meter.h"

#include <gtest/gtest.h>

#include <vector>

#include "spigot/io/clock.h"

namespace spigot::ike {
namespace {

TEST(HandshakeMeter, ShortMeasurementCountsHandshakes) {
  const HandshakeMeasurement m =
      MeasureHandshakes(0.05, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  ASSERT_TRUE(m.ok) << m.error;
  EXPECT_TRUE(m.error.empty());
  EXPECT_GT(m.handshakes, 0u);
  EXPECT_GE(m.seconds, 0.05);
  EXPECT_GT(m.handshakes_per_second, 0);
  EXPECT_DOUBLE_EQ(m.handshakes_per_second, double(m.handshakes) / m.seconds);
}

TEST(HandshakeMeter, CbcProposalsAndAnotherGroup) {
  const HandshakeMeasurement m = MeasureHandshakes(0.01, "aes256-sha256-ecp256", "aes256-sha256");
  ASSERT_TRUE(m.ok) << m.error;
  EXPECT_GT(m.handshakes, 0u);
}

TEST(HandshakeMeter, BadProposalIsAnError) {
  HandshakeMeasurement m =
      MeasureHandshakes(0.01, "aes128gcm16-prfsha256-nosuchgroup", "aes128gcm16");
  EXPECT_FALSE(m.ok);
  EXPECT_NE(m.error.find("IKE proposal"), std::string::npos) << m.error;
  EXPECT_EQ(m.handshakes, 0u);

  m = MeasureHandshakes(0.01, "aes128gcm16-prfsha256-x25519", "nosuchcipher");
  EXPECT_FALSE(m.ok);
  EXPECT_NE(m.error.find("ESP proposal"), std::string::npos) << m.error;
}

// Kept pairs stay established, also after the vector holding them has moved them.
TEST(HandshakeMeter, PairsStayEstablishedWhenMoved) {
  std::string error;
  const auto connections =
      MakeHandshakeConnections("aes128gcm16-prfsha256-x25519", "aes128gcm16", error);
  ASSERT_TRUE(connections) << error;
  std::vector<HandshakePair> kept;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(kept.emplace_back(*connections).Run(io::DefaultClock().Now()))
        << kept.back().failure();
  }
  for (const HandshakePair& pair : kept) EXPECT_TRUE(pair.established());
}

}  // namespace
}  // namespace spigot::ike
