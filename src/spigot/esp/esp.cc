#include "spigot/esp/esp.h"

#include <cstring>

#include "spigot/crypto/secure_bytes.h"

namespace spigot::esp {
namespace {

using crypto::EspSuiteInfo;

// Whole-word big-endian stores and loads: the cipher reads these bytes right after they are
// written, and one wide store forwards to its loads where four byte stores would stall them.
inline void PutU32(std::uint8_t* p, std::uint32_t v) {
  v = __builtin_bswap32(v);
  std::memcpy(p, &v, 4);
}

inline void PutU64(std::uint8_t* p, std::uint64_t v) {
  v = __builtin_bswap64(v);
  std::memcpy(p, &v, 8);
}

inline std::uint32_t GetU32(const std::uint8_t* p) {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return __builtin_bswap32(v);
}

// RFC 4303 2.4: the pad bytes are 1, 2, 3, ...
alignas(16) constexpr std::uint8_t kPadBytes[16] = {1, 2, 3, 4, 5, 6, 7, 8,
                                                   9, 10, 11, 12, 13, 14, 15, 16};

inline std::size_t PaddedPayload(const EspSuiteInfo& info, std::size_t inner_len) {
  const std::size_t align = info.pad_align;
  return (inner_len + kEspTrailerLen + align - 1) / align * align;
}

// RFC 4106 5 / RFC 7634 2.1: AAD = SPI || seq (32-bit) or SPI || seq_hi || seq_lo (ESN).
// Built in registers and stored whole, so the cipher's wide load of it is forwarded.
inline std::size_t BuildAad(std::uint8_t* aad, std::uint32_t spi, std::uint64_t seq, bool esn) {
  if (esn) {
    const std::uint64_t first = std::uint64_t{spi} << 32 | (seq >> 32);
    PutU64(aad, first);
    PutU32(aad + 8, static_cast<std::uint32_t>(seq));
    return 12;
  }
  PutU64(aad, std::uint64_t{spi} << 32 | static_cast<std::uint32_t>(seq));
  return 8;
}

// RFC 4303 2.7 (and 2.4 for TFC padding): the inner packet's own length decides where it ends;
// it must agree with its version and fit in what was decrypted.
bool InnerLength(std::uint8_t next_header, const std::uint8_t* p, std::size_t avail,
                 std::size_t& len) {
  if (next_header == kNextHeaderIpv4) {
    if (avail < 20 || (p[0] >> 4) != 4 || (p[0] & 0x0F) < 5) return false;
    len = std::size_t{p[2]} << 8 | p[3];
    return len >= std::size_t{(p[0] & 0x0Fu) * 4u} && len <= avail;
  }
  if (avail < 40 || (p[0] >> 4) != 6) return false;
  len = 40 + (std::size_t{p[4]} << 8 | p[5]);
  return len <= avail;
}

}  // namespace

const char* ToString(Status s) {
  switch (s) {
    case Status::kOk: return "ok";
    case Status::kShort: return "short";
    case Status::kMalformed: return "malformed";
    case Status::kBadPadding: return "bad_padding";
    case Status::kBadIcv: return "bad_icv";
    case Status::kReplay: return "replay";
    case Status::kUnknownSpi: return "unknown_spi";
    case Status::kDummy: return "dummy";
    case Status::kSeqExhausted: return "seq_exhausted";
    case Status::kNoRoom: return "no_room";
  }
  return "unknown";
}

std::size_t SealedLength(crypto::EspSuite suite, std::size_t inner_len) {
  const EspSuiteInfo& info = crypto::SuiteInfo(suite);
  return kEspHeaderLen + info.iv_len + PaddedPayload(info, inner_len) + info.icv_len;
}

Status SealPrepare(const crypto::EspCipher& cipher, OutboundState& out, std::uint8_t next_header,
                   PacketView& pkt, CryptoOp& op) {
  const EspSuiteInfo& info = crypto::SuiteInfo(cipher.suite());
  // RFC 4303 3.3.3: the counter must not cycle. next_seq == 0 means 2^64 - 1 was sent.
  const auto exhausted = [&out](std::uint64_t s) { return s == 0 || (!out.esn && s > 0xFFFFFFFFu); };
  if (exhausted(out.shared_next_seq != nullptr ? out.shared_next_seq->load(std::memory_order_relaxed)
                                               : out.next_seq))
    return Status::kSeqExhausted;

  const std::size_t head = kEspHeaderLen + info.iv_len;
  const std::size_t payload = PaddedPayload(info, pkt.length);
  const std::size_t pad = payload - pkt.length - kEspTrailerLen;
  if (pkt.offset < head || pkt.buffer.size() - pkt.offset < payload + info.icv_len)
    return Status::kNoRoom;
  // Taken only once the packet will be sent: a refused packet consumes no number.
  std::uint64_t seq = out.next_seq;
  if (out.shared_next_seq != nullptr) {
    // The counter stays at the first number it cannot give (never past it, so it cannot wrap
    // and hand out 1 again). Relaxed: the number itself is the only thing shared.
    seq = out.shared_next_seq->load(std::memory_order_relaxed);
    do {
      if (exhausted(seq)) return Status::kSeqExhausted;
    } while (!out.shared_next_seq->compare_exchange_weak(seq, seq + 1, std::memory_order_relaxed));
  }

  std::uint8_t* const start = pkt.buffer.data() + pkt.offset - head;
  std::uint8_t* const body = start + head;
  PutU32(start, out.spi);
  PutU32(start + 4, static_cast<std::uint32_t>(seq));
  // Pad bytes, then pad length and next header. The 16-byte copy may run past the padding
  // into the trailer and ICV space, which are written next.
  std::uint8_t* trailer = body + pkt.length;
  static_assert(kSealTailroom >= sizeof(kPadBytes));
  if (pad <= 6) {
    // The AEADs' case (at most 3 pad bytes): pad bytes, pad length and next header composed in
    // a register and stored at once, right before the cipher reads them.
    std::uint64_t t = 0;
    for (std::size_t i = 0; i < pad; ++i) t |= std::uint64_t{i + 1} << (8 * i);
    t |= std::uint64_t{pad} << (8 * pad) | std::uint64_t{next_header} << (8 * (pad + 1));
    std::memcpy(trailer, &t, sizeof(t));  // little-endian: byte i of t lands at trailer[i]
  } else {
    std::memcpy(trailer, kPadBytes, sizeof(kPadBytes));
    trailer[pad] = static_cast<std::uint8_t>(pad);
    trailer[pad + 1] = next_header;
  }
  // RFC 4106 3.1 / RFC 7634 2: the IV must never repeat under one key; the sequence number
  // never does, so it is the IV. (CBC derives its IV from it in RunCrypto.)
  if (info.aead) PutU64(start + kEspHeaderLen, seq);
  op = CryptoOp{true, out.esn, out.spi, seq, static_cast<std::uint16_t>(head),
                static_cast<std::uint16_t>(payload)};
  if (out.shared_next_seq == nullptr) out.next_seq = seq + 1;  // 0 after 2^64 - 1: exhausted
  pkt.offset -= head;
  pkt.length = head + payload + info.icv_len;
  return Status::kOk;
}

bool RunCrypto(crypto::ImbManager& mgr, const crypto::EspCipher& cipher, const CryptoOp& op,
               std::uint8_t* esp) {
  const EspSuiteInfo& info = crypto::SuiteInfo(cipher.suite());
  std::uint8_t* const body = esp + op.head;
  std::uint8_t* const icv = body + op.payload;
  if (info.aead) {
    std::uint8_t aad[12];
    const std::size_t aad_len = BuildAad(aad, op.spi, op.seq, op.esn);
    if (op.seal) {
      cipher.SealAead(mgr, esp + kEspHeaderLen, {aad, aad_len}, {body, op.payload}, icv);
      return true;
    }
    return cipher.OpenAead(mgr, esp + kEspHeaderLen, {aad, aad_len}, {body, op.payload}, icv);
  }
  // RFC 4303 2.2.1 / 3.3.4: with ESN the high half is appended (not sent) for the ICV; it
  // takes the place of the ICV's first 4 bytes (every ICV is at least 12) while the MAC runs.
  std::size_t mac_len = std::size_t{op.head} + op.payload;
  const std::size_t icv_len = info.icv_len;
  if (op.seal) {
    cipher.MakeCbcIv(mgr, op.seq, esp + kEspHeaderLen);
    cipher.EncryptCbc(mgr, esp + kEspHeaderLen, {body, op.payload});
    if (op.esn) {
      PutU32(icv, static_cast<std::uint32_t>(op.seq >> 32));
      mac_len += 4;
    }
    std::uint8_t tag[crypto::kEspIcvLen];
    cipher.Mac(mgr, {esp, mac_len}, tag);
    std::memcpy(icv, tag, icv_len);
    return true;
  }
  std::uint8_t received[crypto::kEspIcvLen];
  std::memcpy(received, icv, icv_len);
  if (op.esn) {
    PutU32(icv, static_cast<std::uint32_t>(op.seq >> 32));
    mac_len += 4;
  }
  const bool ok = cipher.VerifyMac(mgr, {esp, mac_len}, received);
  std::memcpy(icv, received, icv_len);
  if (!ok) return false;
  cipher.DecryptCbc(mgr, esp + kEspHeaderLen, {body, op.payload});
  return true;
}

bool CryptoBatch::Add(const crypto::EspCipher& cipher, const CryptoOp& op, std::uint8_t* esp) {
  if (size_ == kCapacity) return false;
  Item& it = items_[size_++];
  it.cipher = &cipher;
  it.op = op;
  it.esp = esp;
  it.ok = false;
  return true;
}

void CryptoBatch::Run(crypto::ImbManager& mgr) {
  // The zero IV of the seal jobs: see the header.
  alignas(16) static constexpr std::uint8_t kZeroIv[16] = {};
  std::size_t cbc = 0;
  for (std::size_t i = 0; i < size_; ++i) {
    Item& it = items_[i];
    const EspSuiteInfo& info = crypto::SuiteInfo(it.cipher->suite());
    if (info.aead) {
      it.ok = RunCrypto(mgr, *it.cipher, it.op, it.esp);
      continue;
    }
    std::uint8_t* const iv = it.esp + kEspHeaderLen;
    std::uint8_t* const icv = it.esp + it.op.head + it.op.payload;
    crypto::CbcHmacJob& j = jobs_[cbc++];
    j.cipher = it.cipher;
    j.encrypt = it.op.seal;
    j.msg = it.esp;
    j.mac_len = std::size_t{it.op.head} + it.op.payload;
    if (it.op.seal) {
      // The counter block E_K() of which is the IV (EspCipher::MakeCbcIv), where the IV goes.
      PutU64(iv, 0);
      PutU64(iv + 8, it.op.seq);
      j.cipher_offset = kEspHeaderLen;
      j.cipher_len = 16 + std::size_t{it.op.payload};
      j.iv = kZeroIv;
    } else {
      j.cipher_offset = it.op.head;
      j.cipher_len = it.op.payload;
      j.iv = iv;
      if (it.op.esn) std::memcpy(it.received, icv, info.icv_len);
    }
    // RFC 4303 2.2.1 / 3.3.4: with ESN the high half of the sequence number is appended (not
    // sent) for the ICV, in the place of the ICV's first 4 bytes, as RunCrypto() does.
    if (it.op.esn) {
      PutU32(icv, static_cast<std::uint32_t>(it.op.seq >> 32));
      j.mac_len += 4;
    }
  }
  crypto::RunCbcHmacBatch(mgr, {jobs_, cbc});
  cbc = 0;
  for (std::size_t i = 0; i < size_; ++i) {
    Item& it = items_[i];
    const EspSuiteInfo& info = crypto::SuiteInfo(it.cipher->suite());
    if (info.aead) continue;
    const crypto::CbcHmacJob& j = jobs_[cbc++];
    std::uint8_t* const icv = it.esp + it.op.head + it.op.payload;
    if (it.op.seal) {
      std::memcpy(icv, j.tag, info.icv_len);
      it.ok = true;
      continue;
    }
    if (it.op.esn) std::memcpy(icv, it.received, info.icv_len);
    it.ok = crypto::ConstantTimeEqual({j.tag, info.icv_len}, {icv, info.icv_len});
  }
}

// flatten: the inline engine path pays nothing for the split into steps the async engines need.
[[gnu::flatten]] Status Seal(crypto::ImbManager& mgr, const crypto::EspCipher& cipher, OutboundState& out,
            std::uint8_t next_header, PacketView& pkt) {
  CryptoOp op;
  const Status st = SealPrepare(cipher, out, next_header, pkt, op);
  if (st == Status::kOk) RunCrypto(mgr, cipher, op, pkt.buffer.data() + pkt.offset);
  return st;
}

bool PeekSpi(std::span<const std::uint8_t> esp, std::uint32_t& spi) {
  if (esp.size() < 4) return false;
  spi = GetU32(esp.data());
  return true;
}

Status OpenPrepare(const crypto::EspCipher& cipher, const InboundState& in, PacketView& pkt,
                   CryptoOp& op) {
  const EspSuiteInfo& info = crypto::SuiteInfo(cipher.suite());
  const std::size_t head = kEspHeaderLen + info.iv_len;
  // Lengths first (STYLE.md 3): at least one aligned block of payload holding the trailer.
  const std::size_t min_payload = info.pad_align < kEspTrailerLen ? kEspTrailerLen : info.pad_align;
  if (pkt.offset > pkt.buffer.size() || pkt.length > pkt.buffer.size() - pkt.offset)
    return Status::kMalformed;
  if (pkt.length < head + min_payload + info.icv_len) return Status::kShort;
  const std::size_t payload = pkt.length - head - info.icv_len;
  if (payload % info.pad_align != 0) return Status::kMalformed;

  const std::uint8_t* const start = pkt.buffer.data() + pkt.offset;
  if (GetU32(start) != in.spi) return Status::kUnknownSpi;
  std::uint64_t seq;
  if (in.replay.Check(GetU32(start + 4), seq) != ReplayWindow::Verdict::kOk)
    return Status::kReplay;
  op = CryptoOp{false, in.replay.esn(), in.spi, seq, static_cast<std::uint16_t>(head),
                static_cast<std::uint16_t>(payload)};
  return Status::kOk;
}

namespace {

// The part of Open() after the ICV verified.
Status Finish(InboundState& in, const CryptoOp& op, PacketView& pkt, std::uint8_t& next_header,
              std::uint64_t* seq_out) {
  // Authentic: the sequence number was really sent, so it is consumed whatever follows.
  in.replay.Update(op.seq);
  if (seq_out != nullptr) *seq_out = op.seq;

  const std::uint8_t* const body = pkt.buffer.data() + pkt.offset + op.head;
  const std::size_t payload = op.payload;
  next_header = body[payload - 1];
  const std::size_t pad = body[payload - 2];
  if (pad + kEspTrailerLen > payload) return Status::kBadPadding;
  const std::uint8_t* pad_bytes = body + payload - kEspTrailerLen - pad;
  for (std::size_t i = 0; i < pad; ++i) {
    if (pad_bytes[i] != static_cast<std::uint8_t>(i + 1)) return Status::kBadPadding;
  }
  if (next_header == kNextHeaderNone) return Status::kDummy;
  if (next_header != kNextHeaderIpv4 && next_header != kNextHeaderIpv6) return Status::kMalformed;
  std::size_t inner_len;
  if (!InnerLength(next_header, body, payload - kEspTrailerLen - pad, inner_len))
    return Status::kMalformed;
  pkt.offset += op.head;
  pkt.length = inner_len;
  return Status::kOk;
}

}  // namespace

Status OpenFinish(InboundState& in, const CryptoOp& op, PacketView& pkt, std::uint8_t& next_header,
                  std::uint64_t* seq_out) {
  std::uint64_t seq;
  if (in.replay.Check(static_cast<std::uint32_t>(op.seq), seq) != ReplayWindow::Verdict::kOk ||
      seq != op.seq)
    return Status::kReplay;
  return Finish(in, op, pkt, next_header, seq_out);
}

Status OpenFailed(const InboundState& in, const CryptoOp& op) {
  std::uint64_t seq;
  return in.replay.Check(static_cast<std::uint32_t>(op.seq), seq) == ReplayWindow::Verdict::kOk
             ? Status::kBadIcv
             : Status::kReplay;
}

[[gnu::flatten]] Status Open(crypto::ImbManager& mgr, const crypto::EspCipher& cipher, InboundState& in,
            PacketView& pkt, std::uint8_t& next_header, std::uint64_t* seq_out) {
  CryptoOp op;
  const Status st = OpenPrepare(cipher, in, pkt, op);
  if (st != Status::kOk) return st;
  if (!RunCrypto(mgr, cipher, op, pkt.buffer.data() + pkt.offset)) return Status::kBadIcv;
  return Finish(in, op, pkt, next_header, seq_out);
}

UdpPayload ClassifyUdpEncap(std::span<const std::uint8_t> datagram,
                            std::span<const std::uint8_t>& inner) {
  inner = {};
  if (datagram.size() == 1 && datagram[0] == kNatKeepalive) return UdpPayload::kKeepalive;
  if (datagram.size() < kNonEspMarkerLen) return UdpPayload::kMalformed;
  if (GetU32(datagram.data()) == 0) {
    inner = datagram.subspan(kNonEspMarkerLen);
    return UdpPayload::kIke;
  }
  // RFC 3948 2.2: an ESP packet needs at least its header; SPI 0 is the marker, handled above.
  if (datagram.size() < kEspHeaderLen) return UdpPayload::kMalformed;
  inner = datagram;
  return UdpPayload::kEsp;
}

}  // namespace spigot::esp
