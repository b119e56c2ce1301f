// RADIUS wire format: RFC 2865 7.1's exchange as a known answer, every truncated prefix of a
// valid packet refused, the Message-Authenticator and MS-MPPE keys checked against the test
// server's own computation (test_tools/fake_radius_server.h, written apart from packet.cc).
#include "spigot/radius/packet.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <string>

#include "spigot/test_tools/fake_radius_server.h"
#include "spigot/test_tools/hex.h"

namespace spigot::radius {
namespace {

using test_tools::FakeRadiusServer;
using test_tools::FromHex;

std::span<const std::uint8_t> AsBytes(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

Authenticator AuthOf(std::span<const std::uint8_t> packet) {
  Authenticator a{};
  std::copy_n(packet.begin() + 4, 16, a.begin());
  return a;
}

const Authenticator kRequestAuth = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
const std::string kPacketSecret = "radius shared secret";

// ---------------------------------------------------------------- RFC 2865 7.1

TEST(RadiusPacketTest, Rfc2865UserTelnetExample) {
  const auto blocks = test_tools::ReadVectorFile("src/spigot/radius/testdata/rfc2865_examples.txt");
  ASSERT_EQ(blocks.size(), 1u);
  const auto& b = blocks[0];
  const std::string secret = b.at("secret");
  const Bytes request = FromHex(b.at("request"));
  const Bytes reply = FromHex(b.at("reply"));

  const auto req = Parse(request);
  ASSERT_TRUE(req);
  EXPECT_EQ(req->code, static_cast<std::uint8_t>(Code::kAccessRequest));
  EXPECT_EQ(req->identifier, 0);
  ASSERT_EQ(req->attributes.size(), 4u);
  EXPECT_EQ(req->attributes[0], (Attribute{attr::kUserName, Bytes{'n', 'e', 'm', 'o'}}));
  EXPECT_EQ(req->attributes[2], (Attribute{attr::kNasIpAddress, Bytes{192, 168, 1, 16}}));
  EXPECT_EQ(Serialize(*req), request);

  const auto rep = Parse(reply);
  ASSERT_TRUE(rep);
  EXPECT_EQ(rep->code, static_cast<std::uint8_t>(Code::kAccessAccept));
  EXPECT_EQ(Serialize(*rep), reply);
  // The known answer: the reply's Response Authenticator, with the request's authenticator.
  EXPECT_EQ(CheckReply(reply, AuthOf(request), AsBytes(secret)), ReplyCheck::kOk);
  EXPECT_EQ(CheckReply(reply, AuthOf(request), AsBytes("xyzzy5462")), ReplyCheck::kBadAuthenticator);
  Authenticator other = AuthOf(request);
  other[15] ^= 1;
  EXPECT_EQ(CheckReply(reply, other, AsBytes(secret)), ReplyCheck::kBadAuthenticator);
  // An Access-Request is not a reply.
  EXPECT_EQ(CheckReply(request, AuthOf(request), AsBytes(secret)), ReplyCheck::kMalformed);

  // Bytes after Length are padding (RFC 2865 3): ignored, and the reply still verifies.
  Bytes padded = reply;
  padded.insert(padded.end(), {0xde, 0xad, 0xbe});
  EXPECT_EQ(Parse(padded), rep);
  EXPECT_EQ(CheckReply(padded, AuthOf(request), AsBytes(secret)), ReplyCheck::kOk);
}

TEST(RadiusPacketTest, EveryTruncatedPrefixIsRefused) {
  const auto b = test_tools::ReadVectorFile("src/spigot/radius/testdata/rfc2865_examples.txt").at(0);
  for (const Bytes& packet : {FromHex(b.at("request")), FromHex(b.at("reply"))}) {
    for (std::size_t n = 0; n < packet.size(); ++n) {
      EXPECT_FALSE(Parse(std::span(packet).first(n))) << n;
      EXPECT_EQ(CheckReply(std::span(packet).first(n), kRequestAuth, AsBytes(kPacketSecret)), ReplyCheck::kMalformed) << n;
    }
  }
}

// RFC 2865 3's length rules, one case per rule.
TEST(RadiusPacketTest, LengthRules) {
  struct Case {
    const char* name;
    Bytes bytes;
    bool ok;
  };
  Bytes header(20, 0);
  header[0] = 2;
  auto with = [](Bytes b, std::uint16_t length, Bytes attrs) {
    b[2] = static_cast<std::uint8_t>(length >> 8);
    b[3] = static_cast<std::uint8_t>(length);
    b.insert(b.end(), attrs.begin(), attrs.end());
    return b;
  };
  const Case cases[] = {
      {"bare header", with(header, 20, {}), true},
      {"Length 19", with(header, 19, {}), false},
      {"Length 0", with(header, 0, {}), false},
      {"Length past the bytes", with(header, 21, {}), false},
      {"Length 4097", with(with(header, 4097, {}), 4097, Bytes(4077, 0)), false},
      {"Length 4096, all empty attributes", [&] {
         Bytes attrs;
         for (int i = 0; i < 2038; ++i) attrs.insert(attrs.end(), {1, 2});
         return with(header, 4096, attrs);
       }(), true},
      {"empty attribute", with(header, 22, {1, 2}), true},
      {"attribute length 1", with(header, 22, {1, 1}), false},
      {"attribute length 0", with(header, 22, {1, 0}), false},
      {"attribute past Length", with(header, 23, {1, 4, 0}), false},
      {"lone type octet", with(header, 21, {1}), false},
      {"attribute past Length, bytes after", with(header, 22, {1, 4, 0, 0}), false},
      {"padding after Length", with(header, 22, {1, 2, 9, 9, 9}), true},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(Parse(c.bytes).has_value(), c.ok) << c.name;
    EXPECT_EQ(PacketLength(c.bytes) != 0, c.ok) << c.name;
  }
}

TEST(RadiusPacketTest, SerializeRefusesWhatCannotBeSent) {
  Packet p;
  p.attributes.push_back({attr::kClass, Bytes(253, 1)});
  EXPECT_TRUE(Serialize(p));
  p.attributes.push_back({attr::kClass, Bytes(254, 1)});
  EXPECT_FALSE(Serialize(p));
  p.attributes.clear();
  for (int i = 0; i < 16; ++i) p.attributes.push_back({attr::kClass, Bytes(253, 1)});  // 20 + 16 * 255 = 4100
  EXPECT_FALSE(Serialize(p));
}

// ---------------------------------------------------------------- Access-Request

Bytes IndependentHmacMd5(const std::string& key, const Bytes& data) {
  Bytes out(16);
  unsigned int n = 0;
  HMAC(EVP_md5(), key.data(), static_cast<int>(key.size()), data.data(), data.size(), out.data(), &n);
  return out;
}

TEST(RadiusPacketTest, AccessRequestCarriesEverythingAndAValidMessageAuthenticator) {
  AccessRequestFields f;
  f.user_name = "alice@example.org";
  f.nas_identifier = "spigot";
  f.nas_ip = std::array<std::uint8_t, 4>{192, 0, 2, 2};
  f.called_station = "192.0.2.2[4500]";
  f.calling_station = "198.51.100.7[4500]";
  f.state = {0xAA, 0xBB};
  for (int i = 0; i < 600; ++i) f.eap_message.push_back(static_cast<std::uint8_t>(i));
  const auto bytes = BuildAccessRequest(f, 42, kRequestAuth, AsBytes(kPacketSecret));
  ASSERT_TRUE(bytes);
  const auto p = Parse(*bytes);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->code, 1);
  EXPECT_EQ(p->identifier, 42);
  EXPECT_EQ(p->authenticator, kRequestAuth);
  EXPECT_EQ(Serialize(*p), *bytes);

  auto text = [](const std::string& s) { return Bytes(s.begin(), s.end()); };
  const std::vector<Attribute> expected_head = {
      {attr::kUserName, text("alice@example.org")},
      {attr::kNasIdentifier, text("spigot")},
      {attr::kNasIpAddress, {192, 0, 2, 2}},
      {attr::kServiceType, {0, 0, 0, 2}},
      {attr::kNasPortType, {0, 0, 0, 5}},
      {attr::kFramedMtu, {0, 0, 0x05, 0x78}},  // 1400
      {attr::kCalledStationId, text("192.0.2.2[4500]")},
      {attr::kCallingStationId, text("198.51.100.7[4500]")},
      {attr::kState, {0xAA, 0xBB}},
  };
  ASSERT_EQ(p->attributes.size(), expected_head.size() + 3 + 1);
  for (std::size_t i = 0; i < expected_head.size(); ++i) EXPECT_EQ(p->attributes[i], expected_head[i]) << i;
  // 600 octets of EAP: 253 + 253 + 94 (RFC 3579 3.1), in order.
  Bytes eap;
  for (std::size_t i = expected_head.size(); i < expected_head.size() + 3; ++i) {
    EXPECT_EQ(p->attributes[i].type, attr::kEapMessage);
    eap.insert(eap.end(), p->attributes[i].value.begin(), p->attributes[i].value.end());
  }
  EXPECT_EQ(p->attributes[expected_head.size()].value.size(), 253u);
  EXPECT_EQ(eap, f.eap_message);

  // RFC 3579 3.2: HMAC-MD5(secret, the packet with the Message-Authenticator value zeroed).
  const Attribute& ma = p->attributes.back();
  ASSERT_EQ(ma.type, attr::kMessageAuthenticator);
  Bytes zeroed = *bytes;
  std::fill(zeroed.end() - 16, zeroed.end(), 0);
  EXPECT_EQ(ma.value, IndependentHmacMd5(kPacketSecret, zeroed));
}

TEST(RadiusPacketTest, AccessRequestRefusals) {
  AccessRequestFields f;
  f.user_name = "bob";
  f.eap_message = {2, 1, 0, 8, 1, 'b', 'o', 'b'};
  EXPECT_TRUE(BuildAccessRequest(f, 0, kRequestAuth, AsBytes(kPacketSecret)));
  // Optional fields left empty are left out.
  const auto minimal = Parse(*BuildAccessRequest(f, 0, kRequestAuth, AsBytes(kPacketSecret)));
  EXPECT_EQ(minimal->attributes.size(), 1u + 3 + 1 + 1);  // User-Name, Service/Port-Type, MTU, EAP, MA

  auto g = f;
  g.eap_message.clear();
  EXPECT_FALSE(BuildAccessRequest(g, 0, kRequestAuth, AsBytes(kPacketSecret)));
  g = f;
  g.user_name.assign(254, 'x');
  EXPECT_FALSE(BuildAccessRequest(g, 0, kRequestAuth, AsBytes(kPacketSecret)));
  g = f;
  g.eap_message.assign(4100, 1);  // past 4096 before any other attribute
  EXPECT_FALSE(BuildAccessRequest(g, 0, kRequestAuth, AsBytes(kPacketSecret)));
  g.eap_message.assign(3700, 1);
  EXPECT_TRUE(BuildAccessRequest(g, 0, kRequestAuth, AsBytes(kPacketSecret)));
}

// ---------------------------------------------------------------- replies

class ReplyTest : public ::testing::Test {
 protected:
  // What the test server would send in answer to a request with kRequestAuth.
  Bytes Reply(const FakeRadiusServer::Answer& a) {
    FakeRadiusServer::Request r;
    r.id = 7;
    r.authenticator = kRequestAuth;
    return server_->Encode(r, a);
  }
  void SetUp() override {
    loop_ = io::EventLoop::Create({});
    server_ = FakeRadiusServer::Start(*loop_, kPacketSecret, nullptr);
    ASSERT_TRUE(server_);
  }
  std::unique_ptr<io::EventLoop> loop_;
  std::unique_ptr<FakeRadiusServer> server_;
};

TEST_F(ReplyTest, MessageAuthenticatorRules) {
  FakeRadiusServer::Answer a;
  a.code = 11;
  a.eap_message = {1, 2, 0, 4};
  EXPECT_EQ(CheckReply(Reply(a), kRequestAuth, AsBytes(kPacketSecret)), ReplyCheck::kOk);
  a.corrupt_message_authenticator = true;
  EXPECT_EQ(CheckReply(Reply(a), kRequestAuth, AsBytes(kPacketSecret)), ReplyCheck::kBadMessageAuthenticator);
  a.corrupt_message_authenticator = false;
  a.message_authenticator = false;  // an EAP-Message needs one
  EXPECT_EQ(CheckReply(Reply(a), kRequestAuth, AsBytes(kPacketSecret)), ReplyCheck::kBadMessageAuthenticator);
  a.eap_message.clear();  // without EAP it may be left out
  EXPECT_EQ(CheckReply(Reply(a), kRequestAuth, AsBytes(kPacketSecret)), ReplyCheck::kOk);
  a.corrupt_authenticator = true;
  EXPECT_EQ(CheckReply(Reply(a), kRequestAuth, AsBytes(kPacketSecret)), ReplyCheck::kBadAuthenticator);

  // Two Message-Authenticators, or one of the wrong length (the Response Authenticator right).
  FakeRadiusServer::Answer two;
  two.attributes.push_back({attr::kMessageAuthenticator, Bytes(16, 0)});
  EXPECT_EQ(CheckReply(Reply(two), kRequestAuth, AsBytes(kPacketSecret)), ReplyCheck::kBadMessageAuthenticator);
  FakeRadiusServer::Answer short_ma;
  short_ma.message_authenticator = false;
  short_ma.attributes.push_back({attr::kMessageAuthenticator, Bytes(15, 0)});
  EXPECT_EQ(CheckReply(Reply(short_ma), kRequestAuth, AsBytes(kPacketSecret)), ReplyCheck::kBadMessageAuthenticator);

  // A code that is no reply, with valid authenticators.
  FakeRadiusServer::Answer weird;
  weird.code = 4;  // Accounting-Request
  EXPECT_EQ(CheckReply(Reply(weird), kRequestAuth, AsBytes(kPacketSecret)), ReplyCheck::kMalformed);
}

TEST_F(ReplyTest, ReadReplyTakesWhatTheGatewayNeeds) {
  FakeRadiusServer::Answer a;
  a.eap_message = Bytes(300, 0x33);  // two attributes
  a.attributes = {
      {attr::kState, {1, 2, 3}},
      {attr::kFramedIpAddress, {10, 0, 0, 5}},
      {attr::kClass, {'c', '1'}},
      {attr::kReplyMessage, {'h', 'i'}},
      {attr::kClass, {'c', '2'}},
      {attr::kVendorSpecific, {0, 0, 0, 9, 1, 3, 'x'}},  // another vendor: ignored
  };
  for (int i = 0; i < 32; ++i) {
    a.mppe_recv_key.push_back(static_cast<std::uint8_t>(i));
    a.mppe_send_key.push_back(static_cast<std::uint8_t>(0x80 + i));
  }
  const Bytes bytes = Reply(a);
  ASSERT_EQ(CheckReply(bytes, kRequestAuth, AsBytes(kPacketSecret)), ReplyCheck::kOk);
  const ReplyAttributes r = ReadReply(*Parse(bytes), kRequestAuth, AsBytes(kPacketSecret));
  EXPECT_EQ(r.eap_message, a.eap_message);
  EXPECT_EQ(r.state, (Bytes{1, 2, 3}));
  ASSERT_TRUE(r.framed_ip);
  EXPECT_EQ(*r.framed_ip, (std::array<std::uint8_t, 4>{10, 0, 0, 5}));
  EXPECT_EQ(r.classes, (std::vector<Bytes>{{'c', '1'}, {'c', '2'}}));
  EXPECT_EQ(r.reply_message, "hi");
  Bytes msk = a.mppe_recv_key;  // Recv | Send
  msk.insert(msk.end(), a.mppe_send_key.begin(), a.mppe_send_key.end());
  EXPECT_EQ(r.msk, crypto::SecureBytes(msk));

  // 16-octet keys (EAP-MSCHAPv2 through FreeRADIUS): Recv | Send | 32 zeros.
  a.mppe_recv_key.resize(16);
  a.mppe_send_key.resize(16);
  const ReplyAttributes r16 = ReadReply(*Parse(Reply(a)), kRequestAuth, AsBytes(kPacketSecret));
  Bytes msk16 = a.mppe_recv_key;
  msk16.insert(msk16.end(), a.mppe_send_key.begin(), a.mppe_send_key.end());
  msk16.resize(64, 0);
  EXPECT_EQ(r16.msk, crypto::SecureBytes(msk16));

  // One key alone gives no MSK; nor does a key decrypted with another request's authenticator
  // (its Key-Length octet comes out as noise, nearly always past the end).
  a.mppe_send_key.clear();
  EXPECT_TRUE(ReadReply(*Parse(Reply(a)), kRequestAuth, AsBytes(kPacketSecret)).msk.empty());
}

TEST(RadiusMppeTest, KeysRoundTripAndMatchTheServersEncryption) {
  for (std::size_t n = 1; n <= 64; ++n) {
    Bytes key(n);
    for (std::size_t i = 0; i < n; ++i) key[i] = static_cast<std::uint8_t>(n * 7 + i);
    const Bytes server = FakeRadiusServer::EncryptMppe(key, 0x1234, kRequestAuth, kPacketSecret);
    const auto ours = EncryptMppeKey(key, 0x1234, kRequestAuth, AsBytes(kPacketSecret));
    ASSERT_TRUE(ours);
    EXPECT_EQ(*ours, server) << n;
    EXPECT_EQ(server[0] & 0x80, 0x80);  // RFC 2548 2.4.2: the salt's top bit is set
    const auto back = DecryptMppeKey(server, kRequestAuth, AsBytes(kPacketSecret));
    ASSERT_TRUE(back) << n;
    EXPECT_EQ(*back, crypto::SecureBytes(key)) << n;
  }
}

TEST(RadiusMppeTest, MalformedStringsAreRefused) {
  const Bytes good = FakeRadiusServer::EncryptMppe(Bytes(32, 5), 1, kRequestAuth, kPacketSecret);  // 2 + 48
  EXPECT_TRUE(DecryptMppeKey(good, kRequestAuth, AsBytes(kPacketSecret)));
  EXPECT_FALSE(DecryptMppeKey(std::span(good).first(2), kRequestAuth, AsBytes(kPacketSecret)));
  EXPECT_FALSE(DecryptMppeKey(std::span(good).first(2 + 47), kRequestAuth, AsBytes(kPacketSecret)));
  EXPECT_FALSE(DecryptMppeKey(std::span(good).first(1 + 48), kRequestAuth, AsBytes(kPacketSecret)));
  // A 16-octet string cannot hold a 16-octet key (the Key-Length octet comes first): the
  // server's encryption of a 16-octet key takes 32.
  const Bytes key15 = FakeRadiusServer::EncryptMppe(Bytes(15, 5), 1, kRequestAuth, kPacketSecret);
  EXPECT_EQ(key15.size(), 2u + 16);
  Bytes zero_length = FakeRadiusServer::EncryptMppe(Bytes(15, 5), 1, kRequestAuth, kPacketSecret);
  // Flip the encrypted Key-Length octet from 15 to 255: past the decrypted bytes.
  zero_length[2] ^= 15 ^ 255;
  EXPECT_FALSE(DecryptMppeKey(zero_length, kRequestAuth, AsBytes(kPacketSecret)));
}

}  // namespace
}  // namespace spigot::radius
