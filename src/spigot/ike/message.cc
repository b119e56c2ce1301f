#include "spigot/ike/message.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "spigot/crypto/random.h"
#include "spigot/wire/byte_reader.h"
#include "spigot/wire/byte_writer.h"

namespace spigot::ike {
namespace {

using wire::ByteReader;
using wire::ByteWriter;

Bytes Copy(std::span<const std::uint8_t> s) { return Bytes(s.begin(), s.end()); }

// 3.3: "last" markers of proposal and transform substructures.
constexpr std::uint8_t kMoreProposals = 2;
constexpr std::uint8_t kMoreTransforms = 3;

bool ParseTransform(ByteReader& r, Transform& t, bool& last) {
  std::uint8_t more, reserved, type, reserved2;
  std::uint16_t len, id;
  if (!r.ReadU8(more) || !r.ReadU8(reserved) || !r.ReadU16(len) || len < 8) return false;
  ByteReader body;
  if (!r.ReadChild(len - 4u, body)) return false;
  if (!body.ReadU8(type) || !body.ReadU8(reserved2) || !body.ReadU16(id)) return false;
  if (more != 0 && more != kMoreTransforms) return false;
  last = more == 0;
  t.type = static_cast<TransformType>(type);
  t.id = id;
  t.key_bits = 0;
  // 3.3.5: attributes, TV (AF set: 2-octet value inline) or TLV.
  while (!body.empty()) {
    std::uint16_t attr_type, value;
    if (!body.ReadU16(attr_type) || !body.ReadU16(value)) return false;
    if (attr_type & kAttrFormatTv) {
      if ((attr_type & ~kAttrFormatTv) == kAttrKeyLength) t.key_bits = value;
    } else if (!body.Skip(value)) {
      return false;
    }
  }
  return body.ok();
}

bool ParseProposal(ByteReader& r, Proposal& p, bool& last) {
  std::uint8_t more, reserved, num, proto, spi_size, ntransforms;
  std::uint16_t len;
  if (!r.ReadU8(more) || !r.ReadU8(reserved) || !r.ReadU16(len) || len < 8) return false;
  ByteReader body;
  if (!r.ReadChild(len - 4u, body)) return false;
  if (!body.ReadU8(num) || !body.ReadU8(proto) || !body.ReadU8(spi_size) ||
      !body.ReadU8(ntransforms))
    return false;
  if (more != 0 && more != kMoreProposals) return false;
  last = more == 0;
  p.number = num;
  p.protocol = static_cast<ProtocolId>(proto);
  std::span<const std::uint8_t> spi;
  if (!body.ReadBytes(spi_size, spi)) return false;
  p.spi = Copy(spi);
  p.transforms.clear();
  bool last_transform = ntransforms == 0;
  for (unsigned i = 0; i < ntransforms; ++i) {
    Transform t;
    if (!ParseTransform(body, t, last_transform)) return false;
    if (last_transform != (i + 1 == ntransforms)) return false;  // count and markers agree
    p.transforms.push_back(t);
  }
  return body.empty() && last_transform;
}

bool ParseTs(ByteReader& r, TrafficSelector& ts) {
  std::uint16_t len;
  if (!r.ReadU8(ts.type) || !r.ReadU8(ts.ip_protocol) || !r.ReadU16(len)) return false;
  if (ts.type != kTsIpv4AddrRange && ts.type != kTsIpv6AddrRange) return false;
  if (len != (ts.type == kTsIpv4AddrRange ? kTsIpv4Len : kTsIpv6Len)) return false;
  std::span<const std::uint8_t> start, end;
  if (!r.ReadU16(ts.start_port) || !r.ReadU16(ts.end_port) ||
      !r.ReadBytes(ts.addr_len(), start) || !r.ReadBytes(ts.addr_len(), end))
    return false;
  ts.start = {};
  ts.end = {};
  std::memcpy(ts.start.data(), start.data(), start.size());
  std::memcpy(ts.end.data(), end.data(), end.size());
  return true;
}

// 3.15.1: the value lengths of the attributes spigot knows are 0 (a request asking for one) or
// the one length the RFC gives; SUPPORTED_ATTRIBUTES is a list of 2-octet types. Others: any.
bool CpValueLengthOk(std::uint16_t type, std::size_t len) {
  auto zero_or = [&](std::size_t n) { return len == 0 || len == n; };
  switch (type) {
    case kInternalIp4Address:
    case kInternalIp4Netmask:
    case kInternalIp4Dns: return zero_or(kCpIp4Len);
    case kInternalIp4Subnet: return zero_or(kCpIp4SubnetLen);
    case kInternalIp6Address:
    case kInternalIp6Subnet: return zero_or(kCpIp6PrefixLen);
    case kInternalIp6Dns: return zero_or(kCpIp6Len);
    case kSupportedAttributes: return len % 2 == 0;
    default: return true;
  }
}

bool ParseCp(ByteReader& r, CpPayload& cp) {
  if (!r.ReadU8(cp.cfg_type) || !r.Skip(kCpHeaderLen - 1)) return false;
  while (!r.empty()) {
    std::uint16_t type, len;
    std::span<const std::uint8_t> value;
    // Lengths first: a value running past the payload is a syntax error, not a short read.
    if (!r.ReadU16(type) || !r.ReadU16(len) || !r.ReadBytes(len, value)) return false;
    type &= kCpAttrTypeMask;  // the R bit is ignored on receipt (3.15.1)
    if (!CpValueLengthOk(type, len)) return false;
    cp.attributes.push_back({type, Copy(value)});
  }
  return true;
}

// Parses one payload body of a known type. False: INVALID_SYNTAX.
bool ParseBody(PayloadType type, std::span<const std::uint8_t> bytes, bool critical,
               PayloadBody& out) {
  ByteReader r(bytes);
  switch (type) {
    case PayloadType::kSa: {
      SaPayload sa;
      bool last = false;
      while (!r.empty()) {
        if (last) return false;  // a proposal after the one marked last
        Proposal p;
        if (!ParseProposal(r, p, last)) return false;
        sa.proposals.push_back(std::move(p));
      }
      if (!last) return false;
      out = std::move(sa);
      return true;
    }
    case PayloadType::kKe: {
      KePayload ke;
      if (!r.ReadU16(ke.group) || !r.Skip(2)) return false;
      ke.data = Copy(r.ReadRemaining());
      out = std::move(ke);
      return !std::get<KePayload>(out).data.empty();
    }
    case PayloadType::kNonce: {
      if (bytes.size() < kMinNonceLen || bytes.size() > kMaxNonceLen) return false;
      out = NoncePayload{Copy(bytes)};
      return true;
    }
    case PayloadType::kNotify: {
      NotifyPayload n;
      std::uint8_t proto, spi_size;
      std::uint16_t ntype;
      std::span<const std::uint8_t> spi;
      if (!r.ReadU8(proto) || !r.ReadU8(spi_size) || !r.ReadU16(ntype) ||
          !r.ReadBytes(spi_size, spi))
        return false;
      n.protocol = static_cast<ProtocolId>(proto);
      n.type = static_cast<NotifyType>(ntype);
      n.spi = Copy(spi);
      n.data = Copy(r.ReadRemaining());
      out = std::move(n);
      return true;
    }
    case PayloadType::kIdi:
    case PayloadType::kIdr: {
      IdPayload id;
      std::uint8_t t;
      if (!r.ReadU8(t) || !r.Skip(3)) return false;
      id.type = static_cast<IdType>(t);
      id.data = Copy(r.ReadRemaining());
      out = std::move(id);
      return true;
    }
    case PayloadType::kAuth: {
      AuthPayload a;
      if (!r.ReadU8(a.method) || !r.Skip(3)) return false;
      a.data = Copy(r.ReadRemaining());
      out = std::move(a);
      return !std::get<AuthPayload>(out).data.empty();
    }
    case PayloadType::kTsi:
    case PayloadType::kTsr: {
      TsPayload ts;
      std::uint8_t count;
      if (!r.ReadU8(count) || !r.Skip(3) || count == 0) return false;
      for (unsigned i = 0; i < count; ++i) {
        TrafficSelector s;
        if (!ParseTs(r, s)) return false;
        ts.selectors.push_back(s);
      }
      out = std::move(ts);
      return r.empty();
    }
    case PayloadType::kDelete: {
      DeletePayload d;
      std::uint8_t proto;
      std::uint16_t count;
      if (!r.ReadU8(proto) || !r.ReadU8(d.spi_size) || !r.ReadU16(count)) return false;
      d.protocol = static_cast<ProtocolId>(proto);
      // 3.11: lengths first — the SPIs must fill the payload exactly; SPI size 0 (IKE) means
      // no SPIs.
      if (std::size_t{count} * d.spi_size != r.remaining() || (d.spi_size == 0 && count != 0))
        return false;
      for (unsigned i = 0; i < count; ++i) {
        std::span<const std::uint8_t> spi;
        if (!r.ReadBytes(d.spi_size, spi)) return false;
        d.spis.push_back(Copy(spi));
      }
      out = std::move(d);
      return r.empty();
    }
    case PayloadType::kVendor:
      out = VendorPayload{Copy(bytes)};
      return true;
    case PayloadType::kCertReq: {
      CertReqPayload c;
      if (!r.ReadU8(c.encoding)) return false;
      c.data = Copy(r.ReadRemaining());
      out = std::move(c);
      return true;
    }
    case PayloadType::kCert: {
      CertPayload c;
      if (!r.ReadU8(c.encoding)) return false;
      c.data = Copy(r.ReadRemaining());
      out = std::move(c);
      return true;
    }
    case PayloadType::kCp: {
      CpPayload cp;
      if (!ParseCp(r, cp)) return false;
      out = std::move(cp);
      return true;
    }
    default:
      out = OtherPayload{static_cast<std::uint8_t>(type), critical, Copy(bytes)};
      return true;
  }
}

bool IsKnown(std::uint8_t t) {
  return (t >= static_cast<std::uint8_t>(PayloadType::kSa) &&
          t <= static_cast<std::uint8_t>(PayloadType::kEap)) ||
         t == static_cast<std::uint8_t>(PayloadType::kSkf);
}

// Parses a payload chain starting with `first`. Stops at an SK payload (recording where it
// starts) when `sk` is given; inside SK another SK is a syntax error.
ParseResult ParseChain(ByteReader& r, std::size_t base, PayloadType first,
                       std::vector<Payload>& out, ParseResult* sk) {
  ParseResult res;
  PayloadType type = first;
  while (type != PayloadType::kNone) {
    const std::size_t start = base + r.position();
    std::uint8_t next, flags;
    std::uint16_t len;
    if (!r.ReadU8(next) || !r.ReadU8(flags) || !r.ReadU16(len)) return {ParseError::kTruncated};
    if (len < kPayloadHeaderLen) return {ParseError::kInvalidSyntax};
    const bool critical = flags & kCriticalBit;
    if (type == PayloadType::kSk || type == PayloadType::kSkf) {
      if (sk == nullptr) return {ParseError::kInvalidSyntax};
      // 3.14: SK is the last payload; its Next Payload names the first payload inside. RFC 7383
      // 2.5: so is SKF, whose Next Payload does so in fragment 1 only.
      if (len - kPayloadHeaderLen != r.remaining()) return {ParseError::kTruncated};
      sk->sk_offset = start;
      sk->sk_first = static_cast<PayloadType>(next);
      if (type == PayloadType::kSkf) {
        sk->fragment = true;
        if (!r.ReadU16(sk->fragment_number) || !r.ReadU16(sk->total_fragments))
          return {ParseError::kTruncated};
      }
      return res;
    }
    std::span<const std::uint8_t> body;
    if (!r.ReadBytes(len - kPayloadHeaderLen, body)) return {ParseError::kTruncated};
    if (!IsKnown(static_cast<std::uint8_t>(type)) && critical) {
      ParseResult e{ParseError::kUnsupportedCritical};
      e.unsupported_type = static_cast<std::uint8_t>(type);
      return e;
    }
    Payload p{type, OtherPayload{}};
    if (!ParseBody(type, body, critical, p.body)) return {ParseError::kInvalidSyntax};
    out.push_back(std::move(p));
    type = static_cast<PayloadType>(next);
  }
  if (!r.empty()) return {ParseError::kTruncated};  // bytes after the last payload
  return res;
}

void WriteHeader(ByteWriter& w, const Header& h, PayloadType next) {
  w.WriteU64(h.spi_i);
  w.WriteU64(h.spi_r);
  w.WriteU8(static_cast<std::uint8_t>(next));
  w.WriteU8(h.version);
  w.WriteU8(static_cast<std::uint8_t>(h.exchange));
  w.WriteU8(h.flags);
  w.WriteU32(h.message_id);
  w.WriteU32(0);  // length, patched when the message is complete
}

void WriteTransform(ByteWriter& w, const Transform& t, bool last) {
  const std::size_t start = w.size();
  w.WriteU8(last ? 0 : kMoreTransforms);
  w.WriteU8(0);
  auto len = w.OpenU16Length(start);
  w.WriteU8(static_cast<std::uint8_t>(t.type));
  w.WriteU8(0);
  w.WriteU16(t.id);
  if (t.key_bits != 0) {
    w.WriteU16(kAttrFormatTv | kAttrKeyLength);
    w.WriteU16(t.key_bits);
  }
}

void WriteBody(ByteWriter& w, const PayloadBody& body) {
  std::visit(
      [&](const auto& b) {
        using T = std::decay_t<decltype(b)>;
        if constexpr (std::is_same_v<T, SaPayload>) {
          for (std::size_t i = 0; i < b.proposals.size(); ++i) {
            const Proposal& p = b.proposals[i];
            const std::size_t start = w.size();
            w.WriteU8(i + 1 == b.proposals.size() ? 0 : kMoreProposals);
            w.WriteU8(0);
            auto len = w.OpenU16Length(start);
            w.WriteU8(p.number);
            w.WriteU8(static_cast<std::uint8_t>(p.protocol));
            w.WriteU8(static_cast<std::uint8_t>(p.spi.size()));
            w.WriteU8(static_cast<std::uint8_t>(p.transforms.size()));
            w.WriteBytes(p.spi);
            for (std::size_t j = 0; j < p.transforms.size(); ++j)
              WriteTransform(w, p.transforms[j], j + 1 == p.transforms.size());
          }
        } else if constexpr (std::is_same_v<T, KePayload>) {
          w.WriteU16(b.group);
          w.WriteU16(0);
          w.WriteBytes(b.data);
        } else if constexpr (std::is_same_v<T, NoncePayload>) {
          w.WriteBytes(b.data);
        } else if constexpr (std::is_same_v<T, NotifyPayload>) {
          w.WriteU8(static_cast<std::uint8_t>(b.protocol));
          w.WriteU8(static_cast<std::uint8_t>(b.spi.size()));
          w.WriteU16(static_cast<std::uint16_t>(b.type));
          w.WriteBytes(b.spi);
          w.WriteBytes(b.data);
        } else if constexpr (std::is_same_v<T, IdPayload>) {
          w.WriteBytes(b.Body());
        } else if constexpr (std::is_same_v<T, AuthPayload>) {
          w.WriteU8(b.method);
          w.WriteU24(0);
          w.WriteBytes(b.data);
        } else if constexpr (std::is_same_v<T, TsPayload>) {
          w.WriteU8(static_cast<std::uint8_t>(b.selectors.size()));
          w.WriteU24(0);
          for (const TrafficSelector& ts : b.selectors) {
            w.WriteU8(ts.type);
            w.WriteU8(ts.ip_protocol);
            w.WriteU16(static_cast<std::uint16_t>(ts.type == kTsIpv4AddrRange ? kTsIpv4Len : kTsIpv6Len));
            w.WriteU16(ts.start_port);
            w.WriteU16(ts.end_port);
            w.WriteBytes({ts.start.data(), ts.addr_len()});
            w.WriteBytes({ts.end.data(), ts.addr_len()});
          }
        } else if constexpr (std::is_same_v<T, DeletePayload>) {
          w.WriteU8(static_cast<std::uint8_t>(b.protocol));
          w.WriteU8(b.spi_size);
          w.WriteU16(static_cast<std::uint16_t>(b.spis.size()));
          for (const Bytes& spi : b.spis) w.WriteBytes(spi);
        } else if constexpr (std::is_same_v<T, VendorPayload>) {
          w.WriteBytes(b.id);
        } else if constexpr (std::is_same_v<T, CertReqPayload> || std::is_same_v<T, CertPayload>) {
          w.WriteU8(b.encoding);
          w.WriteBytes(b.data);
        } else if constexpr (std::is_same_v<T, CpPayload>) {
          w.WriteU8(b.cfg_type);
          w.WriteU24(0);
          for (const CpAttribute& a : b.attributes) {
            w.WriteU16(a.type & kCpAttrTypeMask);
            auto len = w.OpenU16Length();  // the value's length alone (3.15.1)
            w.WriteBytes(a.value);
          }
        } else {
          w.WriteBytes(b.body);
        }
      },
      body);
}

void WriteChain(ByteWriter& w, const std::vector<Payload>& payloads) {
  for (std::size_t i = 0; i < payloads.size(); ++i) {
    const Payload& p = payloads[i];
    const std::size_t start = w.size();
    w.WriteU8(static_cast<std::uint8_t>(i + 1 < payloads.size() ? payloads[i + 1].type
                                                                  : PayloadType::kNone));
    const auto* other = std::get_if<OtherPayload>(&p.body);
    w.WriteU8(other != nullptr && other->critical ? kCriticalBit : 0);
    auto len = w.OpenU16Length(start);
    WriteBody(w, p.body);
  }
}

}  // namespace

Bytes IdPayload::Body() const {
  Bytes out(4 + data.size(), 0);
  out[0] = static_cast<std::uint8_t>(type);
  std::copy(data.begin(), data.end(), out.begin() + 4);
  return out;
}

const NotifyPayload* Message::FindNotify(NotifyType type) const {
  for (const auto& p : payloads) {
    const auto* n = std::get_if<NotifyPayload>(&p.body);
    if (n != nullptr && n->type == type) return n;
  }
  return nullptr;
}

const NotifyPayload* Message::FirstError() const {
  for (const auto& p : payloads) {
    const auto* n = std::get_if<NotifyPayload>(&p.body);
    if (n != nullptr && static_cast<std::uint16_t>(n->type) < kFirstStatusNotify) return n;
  }
  return nullptr;
}

const char* ToString(ParseError e) {
  switch (e) {
    case ParseError::kOk: return "ok";
    case ParseError::kTruncated: return "truncated";
    case ParseError::kInvalidMajorVersion: return "invalid_major_version";
    case ParseError::kInvalidSyntax: return "invalid_syntax";
    case ParseError::kUnsupportedCritical: return "unsupported_critical_payload";
    case ParseError::kIntegrityFailed: return "integrity_failed";
  }
  return "unknown";
}

bool ParseHeader(std::span<const std::uint8_t> datagram, Header& h) {
  ByteReader r(datagram);
  std::uint8_t next, exchange;
  if (!r.ReadU64(h.spi_i) || !r.ReadU64(h.spi_r) || !r.ReadU8(next) || !r.ReadU8(h.version) ||
      !r.ReadU8(exchange) || !r.ReadU8(h.flags) || !r.ReadU32(h.message_id) ||
      !r.ReadU32(h.length))
    return false;
  h.next_payload = static_cast<PayloadType>(next);
  h.exchange = static_cast<Exchange>(exchange);
  return h.length == datagram.size();
}

ParseResult ParseMessage(std::span<const std::uint8_t> datagram, Message& msg) {
  msg = Message{};
  if (datagram.size() > kMaxMessageLen || !ParseHeader(datagram, msg.header))
    return {ParseError::kTruncated};
  if ((msg.header.version >> 4) != kMajorVersion) return {ParseError::kInvalidMajorVersion};
  ByteReader r(datagram.subspan(kHeaderLen));
  ParseResult located;
  ParseResult res = ParseChain(r, kHeaderLen, msg.header.next_payload, msg.payloads, &located);
  if (res.error != ParseError::kOk) return res;
  if (located.sk_offset != 0) {
    msg.encrypted = true;
    // Cleartext payloads before SK are not allowed in the exchanges spigot speaks.
    if (!msg.payloads.empty()) return {ParseError::kInvalidSyntax};
    return located;
  }
  return res;
}

namespace {

// Verifies and decrypts the SK or SKF body that starts (with its IV) at `body_start`: 3.14, RFC
// 5282 5.1 (the AAD is everything before the IV), RFC 7383 2.5. On success `plain` holds the
// content without padding and Pad Length.
ParseError Decrypt(std::span<const std::uint8_t> datagram, std::size_t body_start, SkKeys& keys,
                   Bytes& plain) {
  if (!keys.cipher || (!keys.cipher->info().aead && !keys.integ)) return ParseError::kIntegrityFailed;
  const crypto::IkeEncrInfo& info = keys.cipher->info();
  const std::size_t icv_len = info.aead ? info.icv_len : keys.integ->icv_length();
  if (body_start > datagram.size()) return ParseError::kTruncated;
  const std::size_t body_len = datagram.size() - body_start;
  if (body_len < info.iv_len + 1 + icv_len) return ParseError::kInvalidSyntax;
  const std::size_t ct_len = body_len - info.iv_len - icv_len;
  if (ct_len % info.block_len != 0) return ParseError::kInvalidSyntax;
  const auto iv = datagram.subspan(body_start, info.iv_len);
  const auto icv = datagram.subspan(datagram.size() - icv_len, icv_len);
  plain.assign(datagram.begin() + static_cast<long>(body_start + info.iv_len),
               datagram.begin() + static_cast<long>(body_start + info.iv_len + ct_len));
  if (info.aead) {
    if (!keys.cipher->Open(iv, datagram.first(body_start), plain, icv)) {
      crypto::Wipe(plain.data(), plain.size());
      plain.clear();
      return ParseError::kIntegrityFailed;
    }
  } else {
    // 3.14: the ICV covers the whole message up to the ICV itself.
    if (!keys.integ->Verify(datagram.first(datagram.size() - icv_len), icv)) {
      plain.clear();  // still ciphertext
      return ParseError::kIntegrityFailed;
    }
    if (!keys.cipher->DecryptCbc(iv, plain)) {
      crypto::Wipe(plain.data(), plain.size());
      plain.clear();
      return ParseError::kInvalidSyntax;
    }
  }
  // 3.14: plaintext = payloads || padding || Pad Length (1 octet).
  const std::size_t pad = plain.back();
  if (pad + 1 > plain.size()) {
    crypto::Wipe(plain.data(), plain.size());
    plain.clear();
    return ParseError::kInvalidSyntax;
  }
  const std::size_t keep = plain.size() - pad - 1;
  crypto::Wipe(plain.data() + keep, pad + 1);
  plain.resize(keep);
  return ParseError::kOk;
}

// The header, then one SK payload (`fragment` null) or SKF payload (`fragment` = {number,
// total}) carrying `content` — an inner payload chain or a piece of one — padded, encrypted under
// a fresh IV and integrity-protected. Empty on an internal error or past 65535 octets of payload.
Bytes Seal(const Header& h, PayloadType first_inner, std::span<const std::uint8_t> content,
           SkKeys& keys, const std::array<std::uint16_t, 2>* fragment) {
  Bytes out;
  out.reserve(kHeaderLen + kSkfHeaderLen + 64 + content.size());
  ByteWriter w(out);
  const crypto::IkeEncrInfo& info = keys.cipher->info();
  const std::size_t icv_len = info.aead ? info.icv_len : keys.integ->icv_length();
  WriteHeader(w, h, fragment != nullptr ? PayloadType::kSkf : PayloadType::kSk);
  const std::size_t sk_start = w.size();
  w.WriteU8(static_cast<std::uint8_t>(first_inner));
  w.WriteU8(0);
  w.WriteU16(0);  // payload length, patched below
  if (fragment != nullptr) {
    w.WriteU16((*fragment)[0]);
    w.WriteU16((*fragment)[1]);
  }
  const std::size_t iv_pos = w.size();
  w.WriteZeros(info.iv_len);
  const std::size_t plain_start = w.size();
  w.WriteBytes(content);
  // Padding so that content + padding + pad length fill whole cipher blocks (3.14).
  const std::size_t plain_len = content.size() + 1;
  const std::size_t pad = (info.block_len - plain_len % info.block_len) % info.block_len;
  w.WriteZeros(pad);
  w.WriteU8(static_cast<std::uint8_t>(pad));
  const std::size_t ct_len = w.size() - plain_start;
  w.WriteZeros(icv_len);
  if (!w.ok() || w.size() - sk_start > 0xFFFF) {
    crypto::Wipe(out.data(), out.size());
    return {};
  }
  w.PatchBE(sk_start + 2, w.size() - sk_start, 2);
  w.PatchBE(24, w.size(), 4);
  std::span<std::uint8_t> all(out);
  const auto iv = all.subspan(iv_pos, info.iv_len);
  // RFC 5282 3.1 / RFC 7634: an AEAD IV must never repeat under a key; 64 random bits make a
  // repeat negligible for the messages one IKE SA exchanges. CBC needs unpredictable IVs.
  crypto::RandomBytes(iv);
  const auto plain = all.subspan(plain_start, ct_len);
  const auto icv = all.subspan(plain_start + ct_len, icv_len);
  bool sealed = true;
  if (info.aead) {
    sealed = keys.cipher->Seal(iv, all.first(iv_pos), plain, icv);
  } else {
    sealed = keys.cipher->EncryptCbc(iv, plain);
    if (sealed) keys.integ->Compute(all.first(plain_start + ct_len), icv);
  }
  if (!sealed) {
    crypto::Wipe(out.data(), out.size());
    return {};
  }
  return out;
}

// The inner payload chain of a message to be protected.
Bytes InnerChain(const Message& msg) {
  Bytes chain;
  ByteWriter w(chain);
  WriteChain(w, msg.payloads);
  if (!w.ok()) return {};
  return chain;
}

PayloadType FirstType(const Message& msg) {
  return msg.payloads.empty() ? PayloadType::kNone : msg.payloads[0].type;
}

}  // namespace

ParseResult OpenSk(std::span<const std::uint8_t> datagram, const ParseResult& located,
                   SkKeys& keys, Message& msg) {
  if (located.sk_offset == 0 || located.fragment) return {ParseError::kTruncated};
  Bytes plain;
  const ParseError e = Decrypt(datagram, located.sk_offset + kPayloadHeaderLen, keys, plain);
  if (e != ParseError::kOk) return {e};
  ParseResult res = ParseInner(plain, located.sk_first, msg);
  crypto::Wipe(plain.data(), plain.size());
  return res;
}

ParseResult OpenSkf(std::span<const std::uint8_t> datagram, const ParseResult& located,
                    SkKeys& keys, Bytes& content) {
  if (located.sk_offset == 0 || !located.fragment) return {ParseError::kTruncated};
  return {Decrypt(datagram, located.sk_offset + kSkfHeaderLen, keys, content)};
}

ParseResult ParseInner(std::span<const std::uint8_t> chain, PayloadType first, Message& msg) {
  ByteReader inner(chain);
  msg.payloads.clear();
  ParseResult res = ParseChain(inner, 0, first, msg.payloads, nullptr);
  // Authenticated, so a bad chain is the peer's syntax error, to be answered (2.21.3).
  if (res.error == ParseError::kTruncated) res.error = ParseError::kInvalidSyntax;
  return res;
}

Bytes Serialize(const Message& msg, SkKeys* keys) {
  if (keys == nullptr) {
    Bytes out;
    out.reserve(512);
    ByteWriter w(out);
    WriteHeader(w, msg.header, FirstType(msg));
    WriteChain(w, msg.payloads);
    if (!w.ok() || !w.PatchBE(24, w.size(), 4)) return {};
    return out;
  }
  Bytes chain = InnerChain(msg);
  Bytes out = Seal(msg.header, FirstType(msg), chain, *keys, nullptr);
  crypto::Wipe(chain.data(), chain.size());
  return out;
}

std::vector<Bytes> SerializeFragments(const Message& msg, SkKeys& keys, std::size_t max_message) {
  const crypto::IkeEncrInfo& info = keys.cipher->info();
  const std::size_t icv_len = info.aead ? info.icv_len : keys.integ->icv_length();
  // RFC 7383 2.5.1: what one fragment can carry once its headers, IV and ICV are paid for,
  // in whole cipher blocks, less the Pad Length octet.
  const std::size_t overhead = kHeaderLen + kSkfHeaderLen + info.iv_len + icv_len;
  if (max_message <= overhead) return {};
  std::size_t room = max_message - overhead;
  room -= room % info.block_len;
  if (room < 2) return {};
  const std::size_t per_fragment = room - 1;
  Bytes chain = InnerChain(msg);
  const std::size_t total = std::max<std::size_t>(1, (chain.size() + per_fragment - 1) / per_fragment);
  std::vector<Bytes> out;
  if (total <= 0xFFFF) {
    out.reserve(total);
    for (std::size_t i = 0; i < total; ++i) {
      const std::size_t from = i * per_fragment;
      const std::size_t n = std::min(per_fragment, chain.size() - std::min(from, chain.size()));
      const std::array<std::uint16_t, 2> numbers{static_cast<std::uint16_t>(i + 1),
                                                 static_cast<std::uint16_t>(total)};
      // 2.5: fragment 1's Next Payload is the first inner payload's type; the others' is 0.
      Bytes f = Seal(msg.header, i == 0 ? FirstType(msg) : PayloadType::kNone,
                     std::span<const std::uint8_t>(chain).subspan(std::min(from, chain.size()), n),
                     keys, &numbers);
      if (f.empty()) {
        out.clear();
        break;
      }
      out.push_back(std::move(f));
    }
  }
  crypto::Wipe(chain.data(), chain.size());
  return out;
}

bool ParseSaBody(std::span<const std::uint8_t> body, SaPayload& out) {
  PayloadBody b;
  if (!ParseBody(PayloadType::kSa, body, false, b)) return false;
  out = std::move(std::get<SaPayload>(b));
  return true;
}

}  // namespace spigot::ike
