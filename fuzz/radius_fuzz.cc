// RADIUS replies as a hostile network hands them to radius::Client, and the encoders the
// client trusts, checked as round trips. The first input octet picks what runs on the rest:
//   bit 0: the rest is re-signed as the server would (a correct Message-Authenticator where
//          there is exactly one of 16 octets, then the Response Authenticator), so that
//          CheckReply() must say kOk for every reply it should accept and ReadReply() runs on
//          authenticated input; otherwise it is taken as it came (nothing can forge it).
// Always: Parse() and Serialize() agree with the bytes up to Length; ReadReply() never reads
// outside the packet and gives an MSK of 0 or 64 octets; an Access-Request built from the
// input parses back to the same EAP packet with a Message-Authenticator that verifies; an
// MS-MPPE key encrypted from the input decrypts to itself.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "src/spigot/radius/packet.h"

namespace radius = spigot::radius;

namespace {

const radius::Authenticator kRequestAuth = {0x0f, 0x40, 0x3f, 0x94, 0x73, 0x97, 0x80, 0x57,
                                            0xbd, 0x83, 0xd5, 0xcb, 0x98, 0xf4, 0x22, 0x7a};
const std::uint8_t kSecret[] = {'x', 'y', 'z', 'z', 'y', '5', '4', '6', '1'};

void Check(bool ok) {
  if (!ok) std::abort();
}

// Offsets of the Message-Authenticator values (RFC 3579 3.2) and whether there is an EAP-Message.
void Scan(std::span<const std::uint8_t> packet, std::vector<std::size_t>& ma, std::vector<std::size_t>& ma_len,
          bool& eap) {
  for (std::size_t i = radius::kHeaderLen; i + 2 <= packet.size(); i += packet[i + 1]) {
    if (packet[i] == radius::attr::kMessageAuthenticator) {
      ma.push_back(i + 2);
      ma_len.push_back(packet[i + 1] - 2u);
    }
    if (packet[i] == radius::attr::kEapMessage) eap = true;
  }
}

void Replies(std::span<const std::uint8_t> in, bool sign) {
  std::vector<std::uint8_t> bytes(in.begin(), in.end());
  const std::size_t length = radius::PacketLength(bytes);
  const auto parsed = radius::Parse(bytes);
  Check(parsed.has_value() == (length != 0));
  if (!parsed) {
    Check(radius::CheckReply(bytes, kRequestAuth, kSecret) == radius::ReplyCheck::kMalformed);
    return;
  }
  const auto again = radius::Serialize(*parsed);
  Check(again && *again == std::vector<std::uint8_t>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(length)));

  std::vector<std::size_t> ma, ma_len;
  bool eap = false;
  Scan(std::span(bytes).first(length), ma, ma_len, eap);
  if (sign) {
    std::copy(kRequestAuth.begin(), kRequestAuth.end(), bytes.begin() + 4);
    if (ma.size() == 1 && ma_len[0] == radius::kMessageAuthenticatorLen) {
      std::fill_n(bytes.begin() + static_cast<std::ptrdiff_t>(ma[0]), 16, 0);
      const auto mac = radius::HmacMd5(kSecret, std::span(bytes).first(length));
      std::copy(mac.begin(), mac.end(), bytes.begin() + static_cast<std::ptrdiff_t>(ma[0]));
    }
    const auto auth = radius::Md5({std::span(bytes).first(length), kSecret});
    std::copy(auth.begin(), auth.end(), bytes.begin() + 4);
  }

  const auto check = radius::CheckReply(bytes, kRequestAuth, kSecret);
  const std::uint8_t code = bytes[0];
  const bool reply_code = code == 2 || code == 3 || code == 11;
  if (!reply_code) Check(check == radius::ReplyCheck::kMalformed);
  if (sign && reply_code) {
    const bool ma_ok = ma.size() == 1 && ma_len[0] == radius::kMessageAuthenticatorLen;
    const bool want_ok = ma.empty() ? !eap : ma_ok;
    Check((check == radius::ReplyCheck::kOk) == want_ok);
    if (!want_ok) Check(check == radius::ReplyCheck::kBadMessageAuthenticator);
  }
  // ReadReply on whatever parsed (the client calls it on checked replies only; it must be
  // safe on anything).
  const auto reply = radius::ReadReply(*radius::Parse(bytes), kRequestAuth, kSecret);
  Check(reply.msk.empty() || reply.msk.size() == radius::kMskLen);
  Check(reply.eap_message.size() <= length);
}

void RequestRoundTrip(std::span<const std::uint8_t> in) {
  if (in.empty()) return;
  const std::size_t name_len = std::min<std::size_t>(in[0], in.size() - 1);
  radius::AccessRequestFields f;
  f.user_name.assign(in.begin() + 1, in.begin() + 1 + static_cast<std::ptrdiff_t>(name_len));
  f.eap_message.assign(in.begin() + 1 + static_cast<std::ptrdiff_t>(name_len), in.end());
  f.nas_identifier = "spigot";
  const auto bytes = radius::BuildAccessRequest(f, in[0], kRequestAuth, kSecret);
  // Header, User-Name, NAS-Identifier "spigot", three 4-octet integers (Service-Type,
  // NAS-Port-Type, Framed-MTU), the EAP-Message attributes, Message-Authenticator.
  const std::size_t n = f.eap_message.size();
  const std::size_t predicted = radius::kHeaderLen + 2 + f.user_name.size() + 2 + 6 + 3 * (2 + 4) + n +
                                2 * ((n + 252) / 253) + 2 + radius::kMessageAuthenticatorLen;
  Check(!bytes == (n == 0 || f.user_name.size() > radius::kMaxAttributeValueLen || predicted > radius::kMaxPacketLen));
  if (!bytes) return;
  Check(bytes->size() == predicted);
  const auto p = radius::Parse(*bytes);
  Check(p && p->identifier == in[0] && p->authenticator == kRequestAuth);
  std::vector<std::uint8_t> eap;
  std::vector<std::size_t> ma, ma_len;
  bool has_eap = false;
  Scan(*bytes, ma, ma_len, has_eap);
  for (const auto& a : p->attributes) {
    if (a.type == radius::attr::kEapMessage) eap.insert(eap.end(), a.value.begin(), a.value.end());
  }
  Check(eap == f.eap_message);
  Check(ma.size() == 1 && ma[0] + 16 == bytes->size());
  std::vector<std::uint8_t> zeroed = *bytes;
  std::fill(zeroed.end() - 16, zeroed.end(), 0);
  const auto mac = radius::HmacMd5(kSecret, zeroed);
  Check(std::equal(mac.begin(), mac.end(), bytes->end() - 16));
}

void MppeRoundTrip(std::span<const std::uint8_t> in) {
  (void)radius::DecryptMppeKey(in, kRequestAuth, kSecret);  // hostile String: no crash
  const auto key = in.first(std::min<std::size_t>(in.size(), 255));
  const auto enc = radius::EncryptMppeKey(key, 0x1234, kRequestAuth, kSecret);
  Check(enc.has_value() == !key.empty());
  if (!enc) return;
  const auto back = radius::DecryptMppeKey(*enc, kRequestAuth, kSecret);
  Check(back && back->size() == key.size() && std::equal(key.begin(), key.end(), back->data()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t mode = data[0];
  const std::span<const std::uint8_t> in(data + 1, size - 1);
  Replies(in, (mode & 1) != 0);
  RequestRoundTrip(in);
  MppeRoundTrip(in);
  return 0;
}
