// EAP-MSCHAPv2 in IKE_AUTH (RFC 7296 2.16), both ends in process: spigot's client against
// spigot's server over the multi-exchange IKE_AUTH, with the responder proving itself by PSK
// first and both final AUTHs keyed with the MSK; a wrong password refused and counted on both
// sides; a peer asking for EAP where the connection has none.
#include <gtest/gtest.h>

#include <cstring>

#include "spigot/ike/ike_sa.h"
#include "spigot/test_tools/ike_loopback.h"

namespace spigot::ike {
namespace {

TimePoint EapTime(int seconds) { return TimePoint{} + std::chrono::hours(1) + std::chrono::seconds(seconds); }

crypto::SecureBytes EapSecret(const char* s) {
  return crypto::SecureBytes(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(s), std::strlen(s)));
}

struct EapPair {
  std::shared_ptr<ConnectionParams> iconn = TestConnection(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  std::shared_ptr<ConnectionParams> rconn = TestConnection(false, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  EapPair(const char* password) {
    iconn->local_auth = AuthMethod::kEapMschapV2;
    iconn->eap_id = "alice";
    iconn->eap_secret = EapSecret(password);
    rconn->remote_auth = AuthMethod::kEapMschapV2;
    auto users = std::make_shared<eap::Users>();
    users->Add("alice", EapSecret("alice's password"));
    rconn->eap_users = users;
  }
};

TEST(EapAuth, MschapV2LoginOverSeveralIkeAuthExchangesEstablishesBothSides) {
  EapPair e("alice's password");
  LoopbackPair pair(e.iconn, e.rconn);
  pair.initiator->Initiate(EapTime(0));
  pair.Pump(EapTime(0));
  ASSERT_EQ(pair.initiator->state(), IkeSa::State::kEstablished) << pair.initiator->failure();
  ASSERT_TRUE(pair.responder);
  EXPECT_EQ(pair.responder->state(), IkeSa::State::kEstablished) << pair.responder->failure();
  EXPECT_EQ(pair.ihost.installed.size(), 1u);
  EXPECT_EQ(pair.rhost.installed.size(), 1u);
  EXPECT_EQ(pair.icounters.eap_mschapv2_success, 1u);
  EXPECT_EQ(pair.rcounters.eap_mschapv2_success, 1u);
  EXPECT_EQ(pair.icounters.auth_failures + pair.rcounters.auth_failures, 0u);
  // IKE_SA_INIT, then IKE_AUTH: first (IDi, no AUTH), identity, MS-CHAPv2 response, success
  // ack, final AUTH: message IDs 0-5, five IKE_AUTH exchanges.
  EXPECT_EQ(pair.ihost.sent, 6u);
  // The SA works after EAP: a CHILD SA rekey.
  pair.initiator->RekeyChild(pair.ihost.installed.begin()->first, EapTime(1));
  pair.Pump(EapTime(1));
  EXPECT_EQ(pair.ihost.installed.size(), 1u);
}

TEST(EapAuth, WrongPasswordIsRefusedAndCountedOnBothSides) {
  EapPair e("guess");
  LoopbackPair pair(e.iconn, e.rconn);
  pair.initiator->Initiate(EapTime(0));
  pair.Pump(EapTime(0));
  EXPECT_EQ(pair.initiator->state(), IkeSa::State::kDead);
  EXPECT_FALSE(pair.responder) << "the loopback drops a responder that died before it was established";
  EXPECT_EQ(pair.rcounters.eap_mschapv2_failure, 1u);
  EXPECT_EQ(pair.rcounters.auth_failures, 1u);
  EXPECT_EQ(pair.icounters.auth_failures, 1u);
  EXPECT_EQ(pair.initiator->failure(), "peer: AUTHENTICATION_FAILED");
  EXPECT_EQ(pair.icounters.eap_mschapv2_failure, 1u);
  EXPECT_TRUE(pair.ihost.installed.empty());
  EXPECT_TRUE(pair.rhost.installed.empty());
  EXPECT_TRUE(pair.ihost.live_spis.empty()) << "the initiator's CHILD SPI was not released";
}

TEST(EapAuth, EapWhereTheConnectionHasNoneIsAuthenticationFailed) {
  EapPair e("alice's password");
  e.rconn->remote_auth = AuthMethod::kPsk;
  LoopbackPair pair(e.iconn, e.rconn);
  pair.initiator->Initiate(EapTime(0));
  pair.Pump(EapTime(0));
  EXPECT_EQ(pair.initiator->state(), IkeSa::State::kDead);
  EXPECT_EQ(pair.rcounters.auth_failures, 1u);
  EXPECT_EQ(pair.rcounters.eap_mschapv2_failure, 0u);
  EXPECT_EQ(pair.initiator->failure(), "peer: AUTHENTICATION_FAILED");
}

}  // namespace
}  // namespace spigot::ike
