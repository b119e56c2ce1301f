#include "spigot/radius/packet.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "spigot/crypto/random.h"
#include "spigot/wire/byte_reader.h"
#include "spigot/wire/byte_writer.h"

namespace spigot::radius {

namespace {

// Offsets in the header (RFC 2865 3).
constexpr std::size_t kLengthOffset = 2;
constexpr std::size_t kAuthenticatorOffset = 4;

std::span<const std::uint8_t> Text(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

void WriteAttribute(wire::ByteWriter& w, std::uint8_t type, std::span<const std::uint8_t> value) {
  if (value.size() > kMaxAttributeValueLen) {
    w.Fail();
    return;
  }
  w.WriteU8(type);
  w.WriteU8(static_cast<std::uint8_t>(kAttributeHeaderLen + value.size()));
  w.WriteBytes(value);
}

void WriteU32Attribute(wire::ByteWriter& w, std::uint8_t type, std::uint32_t v) {
  const std::uint8_t be[4] = {static_cast<std::uint8_t>(v >> 24), static_cast<std::uint8_t>(v >> 16),
                              static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)};
  WriteAttribute(w, type, be);
}

// Calls fn(type, value, offset of the value in `packet`) for each attribute of a packet that
// PacketLength() accepted.
template <typename Fn>
void ForEachAttribute(std::span<const std::uint8_t> packet, Fn fn) {
  wire::ByteReader r(packet.subspan(kHeaderLen));
  while (!r.empty()) {
    const std::size_t at = kHeaderLen + r.position();
    std::uint8_t type = 0, len = 0;
    std::span<const std::uint8_t> value;
    if (!r.ReadU8(type) || !r.ReadU8(len) || len < kAttributeHeaderLen ||
        !r.ReadBytes(len - kAttributeHeaderLen, value)) {
      return;  // not reached for a packet PacketLength() accepted
    }
    fn(type, value, at + kAttributeHeaderLen);
  }
}

// RFC 3579 3.2: HMAC-MD5 over `packet` with `authenticator` in the Authenticator field and the
// Message-Authenticator value at `ma_offset` zeroed.
Md5Digest MessageAuthenticator(std::span<const std::uint8_t> packet, const Authenticator& authenticator,
                               std::size_t ma_offset, std::span<const std::uint8_t> secret) {
  Bytes copy(packet.begin(), packet.end());
  std::copy(authenticator.begin(), authenticator.end(), copy.begin() + kAuthenticatorOffset);
  std::fill_n(copy.begin() + static_cast<std::ptrdiff_t>(ma_offset), kMessageAuthenticatorLen, 0);
  return HmacMd5(secret, copy);
}

// RFC 2548 2.4.2: b(1) = MD5(S + R + A), b(i) = MD5(S + c(i-1)); each block of the String is
// the plaintext XOR b(i). `chain` is the ciphertext side (input when decrypting, output when
// encrypting); `out` receives the other side.
void MppeCrypt(std::span<const std::uint8_t> in, std::span<std::uint8_t> out, bool encrypt,
               std::span<const std::uint8_t> salt, const Authenticator& request_authenticator,
               std::span<const std::uint8_t> secret) {
  Md5Digest b = Md5({secret, request_authenticator, salt});
  for (std::size_t i = 0; i < in.size(); i += kMppeBlockLen) {
    for (std::size_t j = 0; j < kMppeBlockLen; ++j) out[i + j] = in[i + j] ^ b[j];
    const std::span<const std::uint8_t> c = (encrypt ? std::span<const std::uint8_t>(out) : in).subspan(i, kMppeBlockLen);
    b = Md5({secret, c});
  }
  crypto::Wipe(b.data(), b.size());
}

}  // namespace

// ---------------------------------------------------------------- digests

Md5Digest Md5(std::initializer_list<std::span<const std::uint8_t>> parts) {
  Md5Digest out{};
  EVP_MD_CTX* c = EVP_MD_CTX_new();
  unsigned int n = 0;
  bool ok = c != nullptr && EVP_DigestInit_ex(c, EVP_md5(), nullptr) == 1;
  for (const auto& p : parts) ok = ok && EVP_DigestUpdate(c, p.data(), p.size()) == 1;
  ok = ok && EVP_DigestFinal_ex(c, out.data(), &n) == 1 && n == out.size();
  EVP_MD_CTX_free(c);
  // MD5 is in OpenSSL's default provider; without it no RADIUS reply could ever verify, and an
  // all-zero digest must not pass for one.
  if (!ok) std::abort();
  return out;
}

Md5Digest HmacMd5(std::span<const std::uint8_t> key, std::span<const std::uint8_t> data) {
  Md5Digest out{};
  unsigned int n = 0;
  if (HMAC(EVP_md5(), key.data(), static_cast<int>(key.size()), data.data(), data.size(), out.data(), &n) ==
          nullptr ||
      n != out.size()) {
    std::abort();
  }
  return out;
}

// ---------------------------------------------------------------- packets

std::size_t PacketLength(std::span<const std::uint8_t> datagram) {
  if (datagram.size() < kHeaderLen) return 0;
  const std::size_t length = (std::size_t{datagram[kLengthOffset]} << 8) | datagram[kLengthOffset + 1];
  if (length < kMinPacketLen || length > kMaxPacketLen || length > datagram.size()) return 0;
  // Attributes must tile the rest of the packet exactly.
  wire::ByteReader r(datagram.subspan(kHeaderLen, length - kHeaderLen));
  while (!r.empty()) {
    std::uint8_t type = 0, len = 0;
    if (!r.ReadU8(type) || !r.ReadU8(len) || len < kAttributeHeaderLen || !r.Skip(len - kAttributeHeaderLen)) {
      return 0;
    }
  }
  return length;
}

std::optional<Packet> Parse(std::span<const std::uint8_t> datagram) {
  const std::size_t length = PacketLength(datagram);
  if (length == 0) return std::nullopt;
  const auto bytes = datagram.first(length);
  Packet p;
  p.code = bytes[0];
  p.identifier = bytes[1];
  std::copy_n(bytes.begin() + kAuthenticatorOffset, kAuthenticatorLen, p.authenticator.begin());
  ForEachAttribute(bytes, [&](std::uint8_t type, std::span<const std::uint8_t> value, std::size_t) {
    p.attributes.push_back({type, Bytes(value.begin(), value.end())});
  });
  return p;
}

std::optional<Bytes> Serialize(const Packet& packet) {
  Bytes out;
  wire::ByteWriter w(out);
  w.WriteU8(packet.code);
  w.WriteU8(packet.identifier);
  {
    auto length = w.OpenU16Length(0);
    w.WriteBytes(packet.authenticator);
    for (const Attribute& a : packet.attributes) WriteAttribute(w, a.type, a.value);
  }
  if (!w.ok() || out.size() > kMaxPacketLen) return std::nullopt;
  return out;
}

std::optional<Bytes> BuildAccessRequest(const AccessRequestFields& fields, std::uint8_t identifier,
                                        const Authenticator& request_authenticator,
                                        std::span<const std::uint8_t> secret) {
  if (fields.eap_message.empty()) return std::nullopt;
  Bytes out;
  wire::ByteWriter w(out);
  w.WriteU8(static_cast<std::uint8_t>(Code::kAccessRequest));
  w.WriteU8(identifier);
  std::size_t ma_offset = 0;
  {
    auto length = w.OpenU16Length(0);
    w.WriteBytes(request_authenticator);
    WriteAttribute(w, attr::kUserName, Text(fields.user_name));
    if (!fields.nas_identifier.empty()) WriteAttribute(w, attr::kNasIdentifier, Text(fields.nas_identifier));
    if (fields.nas_ip) WriteAttribute(w, attr::kNasIpAddress, *fields.nas_ip);
    WriteU32Attribute(w, attr::kServiceType, kServiceTypeFramed);
    WriteU32Attribute(w, attr::kNasPortType, kNasPortTypeVirtual);
    if (fields.framed_mtu != 0) WriteU32Attribute(w, attr::kFramedMtu, fields.framed_mtu);
    if (!fields.called_station.empty()) WriteAttribute(w, attr::kCalledStationId, Text(fields.called_station));
    if (!fields.calling_station.empty()) WriteAttribute(w, attr::kCallingStationId, Text(fields.calling_station));
    if (!fields.state.empty()) WriteAttribute(w, attr::kState, fields.state);
    // RFC 3579 3.1: an EAP packet longer than one attribute goes into consecutive ones.
    std::span<const std::uint8_t> eap = fields.eap_message;
    while (!eap.empty()) {
      const std::size_t n = std::min(eap.size(), kMaxAttributeValueLen);
      WriteAttribute(w, attr::kEapMessage, eap.first(n));
      eap = eap.subspan(n);
    }
    ma_offset = w.size() + kAttributeHeaderLen;
    WriteAttribute(w, attr::kMessageAuthenticator, std::array<std::uint8_t, kMessageAuthenticatorLen>{});
  }
  if (!w.ok() || out.size() > kMaxPacketLen) return std::nullopt;
  const Md5Digest ma = MessageAuthenticator(out, request_authenticator, ma_offset, secret);
  std::copy(ma.begin(), ma.end(), out.begin() + static_cast<std::ptrdiff_t>(ma_offset));
  return out;
}

ReplyCheck CheckReply(std::span<const std::uint8_t> datagram, const Authenticator& request_authenticator,
                      std::span<const std::uint8_t> secret) {
  const std::size_t length = PacketLength(datagram);
  if (length == 0) return ReplyCheck::kMalformed;
  const auto packet = datagram.first(length);
  switch (static_cast<Code>(packet[0])) {
    case Code::kAccessAccept:
    case Code::kAccessReject:
    case Code::kAccessChallenge: break;
    default: return ReplyCheck::kMalformed;
  }

  // RFC 2865 3: ResponseAuth = MD5(Code+ID+Length+RequestAuth+Attributes+Secret).
  const Md5Digest expected = Md5({packet.first(kAuthenticatorOffset), request_authenticator,
                                  packet.subspan(kHeaderLen), secret});
  if (!crypto::ConstantTimeEqual(expected, packet.subspan(kAuthenticatorOffset, kAuthenticatorLen))) {
    return ReplyCheck::kBadAuthenticator;
  }

  bool has_eap = false;
  std::size_t ma_count = 0, ma_offset = 0, ma_len = 0;
  ForEachAttribute(packet, [&](std::uint8_t type, std::span<const std::uint8_t> value, std::size_t at) {
    if (type == attr::kEapMessage) has_eap = true;
    if (type == attr::kMessageAuthenticator) {
      ++ma_count;
      ma_offset = at;
      ma_len = value.size();
    }
  });
  if (ma_count == 0) return has_eap ? ReplyCheck::kBadMessageAuthenticator : ReplyCheck::kOk;
  // RFC 3579 3.2: at most one, of 16 octets.
  if (ma_count > 1 || ma_len != kMessageAuthenticatorLen) return ReplyCheck::kBadMessageAuthenticator;
  const Md5Digest ma = MessageAuthenticator(packet, request_authenticator, ma_offset, secret);
  if (!crypto::ConstantTimeEqual(ma, packet.subspan(ma_offset, kMessageAuthenticatorLen))) {
    return ReplyCheck::kBadMessageAuthenticator;
  }
  return ReplyCheck::kOk;
}

// ---------------------------------------------------------------- reply contents

std::optional<crypto::SecureBytes> DecryptMppeKey(std::span<const std::uint8_t> salt_and_string,
                                                  const Authenticator& request_authenticator,
                                                  std::span<const std::uint8_t> secret) {
  if (salt_and_string.size() < kMppeSaltLen + kMppeBlockLen ||
      (salt_and_string.size() - kMppeSaltLen) % kMppeBlockLen != 0) {
    return std::nullopt;
  }
  const auto salt = salt_and_string.first(kMppeSaltLen);
  const auto cipher = salt_and_string.subspan(kMppeSaltLen);
  crypto::SecureBytes plain(cipher.size());
  MppeCrypt(cipher, plain.span(), /*encrypt=*/false, salt, request_authenticator, secret);
  const std::size_t key_len = plain.data()[0];
  if (key_len == 0 || key_len > plain.size() - 1) return std::nullopt;
  return crypto::SecureBytes(plain.subspan(1, key_len));
}

std::optional<Bytes> EncryptMppeKey(std::span<const std::uint8_t> key, std::uint16_t salt,
                                    const Authenticator& request_authenticator,
                                    std::span<const std::uint8_t> secret) {
  if (key.empty() || key.size() > 255) return std::nullopt;
  salt |= 0x8000;
  const std::uint8_t salt_be[kMppeSaltLen] = {static_cast<std::uint8_t>(salt >> 8), static_cast<std::uint8_t>(salt)};
  // Key-Length | Key | zeros to a multiple of 16.
  const std::size_t padded = (1 + key.size() + kMppeBlockLen - 1) / kMppeBlockLen * kMppeBlockLen;
  crypto::SecureBytes plain(padded);
  plain.data()[0] = static_cast<std::uint8_t>(key.size());
  std::copy(key.begin(), key.end(), plain.data() + 1);
  Bytes out(kMppeSaltLen + padded);
  std::copy_n(salt_be, kMppeSaltLen, out.begin());
  MppeCrypt(plain.span(), std::span(out).subspan(kMppeSaltLen), /*encrypt=*/true, salt_be, request_authenticator,
            secret);
  return out;
}

ReplyAttributes ReadReply(const Packet& reply, const Authenticator& request_authenticator,
                          std::span<const std::uint8_t> secret) {
  ReplyAttributes out;
  bool have_state = false;
  std::optional<crypto::SecureBytes> recv, send;
  for (const Attribute& a : reply.attributes) {
    switch (a.type) {
      case attr::kEapMessage: out.eap_message.insert(out.eap_message.end(), a.value.begin(), a.value.end()); break;
      case attr::kState:
        if (!have_state) out.state = a.value;
        have_state = true;
        break;
      case attr::kFramedIpAddress:
        if (a.value.size() == 4) out.framed_ip = std::array<std::uint8_t, 4>{a.value[0], a.value[1], a.value[2], a.value[3]};
        break;
      case attr::kClass: out.classes.push_back(a.value); break;
      case attr::kReplyMessage: out.reply_message.append(a.value.begin(), a.value.end()); break;
      case attr::kVendorSpecific: {
        // RFC 2865 5.26: Vendor-Id, then (RFC 2548 2) Microsoft's sub-attributes.
        wire::ByteReader r(a.value);
        std::uint32_t vendor = 0;
        if (!r.ReadU32(vendor) || vendor != kVendorMicrosoft) break;
        while (!r.empty()) {
          std::uint8_t type = 0, len = 0;
          std::span<const std::uint8_t> value;
          if (!r.ReadU8(type) || !r.ReadU8(len) || len < kVendorAttributeHeaderLen ||
              !r.ReadBytes(len - kVendorAttributeHeaderLen, value)) {
            break;
          }
          if (type == kMsMppeRecvKey && !recv) recv = DecryptMppeKey(value, request_authenticator, secret);
          if (type == kMsMppeSendKey && !send) send = DecryptMppeKey(value, request_authenticator, secret);
        }
        break;
      }
      default: break;
    }
  }
  if (recv && send) {
    out.msk = std::move(*recv);
    out.msk.Append(*send);
    out.msk.Resize(kMskLen);  // zero-pads or cuts (SecureBytes wipes what it lets go)
  }
  return out;
}

}  // namespace spigot::radius
