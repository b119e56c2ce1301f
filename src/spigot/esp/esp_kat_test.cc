// Known-answer tests for whole ESP packets (esp::Seal / esp::Open) and round trips through
// every suite. The vectors live in files that name their source in their first comment:
//   esp/testdata/draft_mcgrew_gcm_test_01.txt       draft-mcgrew-gcm-test-01 section 4, all cases
//   crypto/testdata/chacha20poly1305_esp_rfc7634.txt RFC 7634 Appendix A
//   esp/testdata/esp_seal_derived.txt                published inputs with Seal's IV (derived)
#include "spigot/esp/esp.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "spigot/crypto/esp_cipher.h"
#include "spigot/esp/constants.h"
#include "spigot/esp/replay_window.h"
#include "spigot/test_tools/hex.h"

namespace spigot::esp {
namespace {

using crypto::EspCipher;
using crypto::EspSuite;
using crypto::ImbManager;
using crypto::kEspIcvLen;
using crypto::SuiteInfo;
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

std::string Text(const VectorBlock& b, const std::string& key) {
  const auto it = b.find(key);
  EXPECT_NE(it, b.end()) << "vector block lacks '" << key << "'";
  return it == b.end() ? std::string{} : it->second;
}

Bytes Concat(std::initializer_list<std::span<const std::uint8_t>> parts) {
  Bytes out;
  for (auto p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

Bytes Slice(const Bytes& b, std::size_t from, std::size_t to) {
  return Bytes(b.begin() + static_cast<std::ptrdiff_t>(from),
               b.begin() + static_cast<std::ptrdiff_t>(to));
}

std::uint64_t BigEndian(std::span<const std::uint8_t> b) {
  std::uint64_t v = 0;
  for (std::uint8_t x : b) v = v << 8 | x;
  return v;
}

Bytes Be32(std::uint32_t v) {
  return {static_cast<std::uint8_t>(v >> 24), static_cast<std::uint8_t>(v >> 16),
          static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)};
}

Bytes Be64(std::uint64_t v) {
  return Concat({Be32(static_cast<std::uint32_t>(v >> 32)), Be32(static_cast<std::uint32_t>(v))});
}

Bytes Filler(std::size_t n, std::uint8_t seed) {
  Bytes out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::uint8_t>(seed + 37 * i);
  return out;
}

std::string SuiteName(EspSuite s) { return std::string(SuiteInfo(s).name); }

// RFC 4303 Appendix A2 infers the high half of an extended sequence number from the window, and a
// fresh window infers 0. For a packet of a later epoch (the draft's ESN cases), the receiver
// is first put where it would stand after authenticating `first_seq - 1`.
InboundState Receiver(std::uint32_t spi, bool esn, std::uint64_t first_seq) {
  InboundState in;
  in.spi = spi;
  in.replay = ReplayWindow(kDefaultReplayWindow, esn);
  // The top of epoch 0 is ambiguous to a fresh ESN window too (it could be epoch -1).
  const bool later_epoch = (first_seq >> 32) != 0;
  const bool ambiguous = first_seq > 0xffffffffu - kDefaultReplayWindow;
  if (esn && (later_epoch || ambiguous)) in.replay.Update(first_seq - 1);
  return in;
}

struct Opened {
  Status status = Status::kOk;
  Bytes inner;
  std::uint8_t next_header = 0;
  std::uint64_t seq = 0;
};

// Opens a copy of `packet` placed at an odd offset inside a larger buffer, so that Open must
// honour PacketView::offset.
Opened OpenCopy(const EspCipher& cipher, InboundState& in, const Bytes& packet) {
  constexpr std::size_t kLead = 5, kTrail = 3;
  Bytes buf(kLead + packet.size() + kTrail, 0xee);
  std::copy(packet.begin(), packet.end(), buf.begin() + kLead);
  PacketView pkt{buf, kLead, packet.size()};
  Opened r;
  r.status = Open(ImbManager::ForThisThread(), cipher, in, pkt, r.next_header, &r.seq);
  if (r.status == Status::kOk) {
    EXPECT_LE(pkt.offset + pkt.length, buf.size());
    const auto bytes = pkt.bytes();
    r.inner = Bytes(bytes.begin(), bytes.end());
  }
  return r;
}

struct Sealed {
  Status status = Status::kOk;
  Bytes packet;
};

// Seals `inner` in a buffer with exactly kSealHeadroom before and kSealTailroom after it.
Sealed SealCopy(const EspCipher& cipher, OutboundState& out, std::uint8_t next_header,
                const Bytes& inner) {
  Bytes buf(kSealHeadroom + inner.size() + kSealTailroom, 0xdd);
  std::copy(inner.begin(), inner.end(), buf.begin() + kSealHeadroom);
  PacketView pkt{buf, kSealHeadroom, inner.size()};
  Sealed r;
  r.status = Seal(ImbManager::ForThisThread(), cipher, out, next_header, pkt);
  if (r.status == Status::kOk) {
    EXPECT_LE(pkt.offset + pkt.length, buf.size());
    const auto bytes = pkt.bytes();
    r.packet = Bytes(bytes.begin(), bytes.end());
  }
  return r;
}

// --- draft-mcgrew-gcm-test-01 ----------------------------------------------------------------

struct DraftCase {
  std::string id;
  bool gmac = false;
  Bytes key, spi, seq, nonce, plaintext, aad, ctext_tag, packet;

  bool esn() const { return seq.size() == 8; }
  std::uint64_t seq_full() const { return BigEndian(seq); }
  Bytes salt() const { return Slice(nonce, 0, 4); }
  Bytes iv() const { return Slice(nonce, 4, 12); }
  Bytes keymat() const { return Concat({key, salt()}); }
  bool supported() const { return !gmac && (key.size() == 16 || key.size() == 32); }
  EspSuite suite() const { return key.size() == 16 ? EspSuite::kAesGcm128 : EspSuite::kAesGcm256; }
  Bytes ciphertext() const { return Slice(ctext_tag, 0, ctext_tag.size() - kEspIcvLen); }
  Bytes tag() const { return Slice(packet, packet.size() - kEspIcvLen, packet.size()); }
};

std::vector<DraftCase> LoadDraft() {
  std::vector<DraftCase> cases;
  for (const VectorBlock& b :
       ReadVectorFile("src/spigot/esp/testdata/draft_mcgrew_gcm_test_01.txt")) {
    DraftCase c;
    c.id = "draft-mcgrew-gcm-test-01 case " + Text(b, "case") + " (page " + Text(b, "page") + ")";
    c.gmac = Text(b, "algorithm") == "AES-GMAC-ESP";
    c.key = Field(b, "key");
    c.spi = Field(b, "spi");
    c.seq = Field(b, "seq");
    c.nonce = Field(b, "nonce");
    c.plaintext = Field(b, "plaintext");
    c.aad = Field(b, "aad");
    if (!c.gmac) c.ctext_tag = Field(b, "ctext_tag");
    c.packet = Field(b, "packet");
    cases.push_back(std::move(c));
  }
  return cases;
}

// The transcription is internally consistent: the fields the draft prints separately agree
// with each other, so a typo in one of them cannot hide.
TEST(EspKatDraftMcgrewGcm, FileIsTheWholeSectionAndConsistent) {
  const auto cases = LoadDraft();
  ASSERT_EQ(cases.size(), 17u);
  int gmac = 0, unsupported = 0;
  for (const DraftCase& c : cases) {
    SCOPED_TRACE(c.id);
    ASSERT_EQ(c.spi.size(), 4u);
    ASSERT_TRUE(c.seq.size() == 4 || c.seq.size() == 8);
    ASSERT_EQ(c.nonce.size(), 12u);
    ASSERT_GE(c.packet.size(), 16 + kEspIcvLen);
    EXPECT_EQ(ToHex(Slice(c.packet, 0, 4)), ToHex(c.spi));
    EXPECT_EQ(ToHex(Slice(c.packet, 4, 8)), ToHex(Slice(c.seq, c.seq.size() - 4, c.seq.size())));
    EXPECT_EQ(ToHex(Slice(c.packet, 8, 16)), ToHex(c.iv()));
    if (c.gmac) {
      ++gmac;
      EXPECT_TRUE(c.plaintext.empty());
      EXPECT_EQ(ToHex(Slice(c.aad, 0, 16)), ToHex(Slice(c.packet, 0, 16)));
      EXPECT_EQ(ToHex(Concat({c.aad, c.tag()})), ToHex(c.packet));
      continue;
    }
    if (!c.supported()) ++unsupported;
    EXPECT_EQ(ToHex(c.aad), ToHex(Concat({c.spi, c.seq})));
    EXPECT_EQ(ToHex(Slice(c.packet, 16, c.packet.size())), ToHex(c.ctext_tag));
    EXPECT_EQ(c.ctext_tag.size(), c.plaintext.size() + kEspIcvLen);
    // RFC 4303 2.4: payload + trailer 4-byte aligned, pad bytes 1, 2, 3, ...
    EXPECT_EQ(c.plaintext.size() % 4, 0u);
    const std::size_t pad = c.plaintext[c.plaintext.size() - 2];
    ASSERT_LE(pad + 2, c.plaintext.size());
    for (std::size_t i = 0; i < pad; ++i) {
      EXPECT_EQ(c.plaintext[c.plaintext.size() - 2 - pad + i], i + 1);
    }
    EXPECT_EQ(c.plaintext.back(), 1) << "the file comment says every case has Next Header 1";
  }
  EXPECT_EQ(gmac, 1);
  EXPECT_EQ(unsupported, 1) << "only case 7 (AES-192) is skipped";
}

// (a) at the cipher level: every supported AES-GCM case decrypts byte-exact, AAD = SPI || seq
// (SPI || seq_hi || seq_lo for the 8-octet ESN cases, RFC 4106 5).
TEST(EspKatDraftMcgrewGcm, OpenAeadDecryptsEveryCase) {
  ImbManager& mgr = ImbManager::ForThisThread();
  int checked = 0;
  for (const DraftCase& c : LoadDraft()) {
    if (!c.supported()) continue;
    SCOPED_TRACE(c.id);
    EspCipher cipher;
    ASSERT_TRUE(cipher.Init(mgr, c.suite(), c.keymat()));
    Bytes data = c.ciphertext();
    const Bytes tag = c.tag();
    EXPECT_TRUE(cipher.OpenAead(mgr, c.iv().data(), c.aad, data, tag.data()));
    EXPECT_EQ(ToHex(data), ToHex(c.plaintext));
    ++checked;
  }
  EXPECT_EQ(checked, 15);
}

// (b) re-encryption: SealAead of the documented plaintext (with its padding and trailer) under
// the documented IV gives the documented ciphertext and ICV.
TEST(EspKatDraftMcgrewGcm, SealAeadReproducesEveryCase) {
  ImbManager& mgr = ImbManager::ForThisThread();
  int checked = 0;
  for (const DraftCase& c : LoadDraft()) {
    if (!c.supported()) continue;
    SCOPED_TRACE(c.id);
    EspCipher cipher;
    ASSERT_TRUE(cipher.Init(mgr, c.suite(), c.keymat()));
    Bytes data = c.plaintext;
    std::array<std::uint8_t, kEspIcvLen> icv{};
    cipher.SealAead(mgr, c.iv().data(), c.aad, data, icv.data());
    EXPECT_EQ(ToHex(Concat({data, icv})), ToHex(c.ctext_tag));
    ++checked;
  }
  EXPECT_EQ(checked, 15);
}

// Case 15 is AES-GMAC-ESP (RFC 4543), not a spigot suite; GMAC is GCM over an empty
// plaintext, so the AES-GCM-128 cipher must produce its tag from the AAD alone.
TEST(EspKatDraftMcgrewGcm, GmacCaseIsGcmOverEmptyPlaintext) {
  ImbManager& mgr = ImbManager::ForThisThread();
  int checked = 0;
  for (const DraftCase& c : LoadDraft()) {
    if (!c.gmac) continue;
    SCOPED_TRACE(c.id);
    ASSERT_EQ(c.key.size(), 16u);
    EspCipher cipher;
    ASSERT_TRUE(cipher.Init(mgr, EspSuite::kAesGcm128, c.keymat()));
    std::array<std::uint8_t, kEspIcvLen> icv{};
    std::span<std::uint8_t> empty;
    cipher.SealAead(mgr, c.iv().data(), c.aad, empty, icv.data());
    EXPECT_EQ(ToHex(icv), ToHex(c.tag()));
    EXPECT_TRUE(cipher.OpenAead(mgr, c.iv().data(), c.aad, empty, c.tag().data()));
    ++checked;
  }
  EXPECT_EQ(checked, 1);
}

// (a) through esp::Open: every draft packet carries Next Header 1, which tunnel mode refuses,
// so none can be delivered. What Open must show is that it authenticated the packet (right
// nonce, right AAD, right ESN) before refusing it: kMalformed, not kBadIcv, and the window
// moved (esp.h: it moves for every packet whose ICV verified), so a second copy is a replay.
// Cases 12 and 13 carry 0 and 18 bytes of payload, less than any IP header, so kShort (decided
// before the ICV) is accepted for them too.
TEST(EspKatDraftMcgrewGcm, OpenAuthenticatesThenRefusesNextHeader1) {
  ImbManager& mgr = ImbManager::ForThisThread();
  int checked = 0;
  for (const DraftCase& c : LoadDraft()) {
    if (!c.supported()) continue;
    SCOPED_TRACE(c.id);
    EspCipher cipher;
    ASSERT_TRUE(cipher.Init(mgr, c.suite(), c.keymat()));
    const std::uint32_t spi = static_cast<std::uint32_t>(BigEndian(c.spi));
    const bool tiny = c.plaintext.size() - 2 - c.plaintext[c.plaintext.size() - 2] < 20;

    std::uint32_t peeked = 0;
    EXPECT_TRUE(PeekSpi(c.packet, peeked));
    EXPECT_EQ(peeked, spi);

    InboundState in = Receiver(spi, c.esn(), c.seq_full());
    const std::uint64_t before = in.replay.highest();
    const Opened first = OpenCopy(cipher, in, c.packet);
    if (tiny && first.status == Status::kShort) {
      EXPECT_EQ(in.replay.highest(), before);
    } else {
      EXPECT_EQ(first.status, Status::kMalformed) << ToString(first.status);
      EXPECT_EQ(in.replay.highest(), c.seq_full()) << "authentic packet must move the window";
      EXPECT_EQ(OpenCopy(cipher, in, c.packet).status, Status::kReplay);
    }

    // A changed ciphertext byte, or the other ESN setting (another AAD), fails the ICV.
    const Status icv_fail_or_short = tiny ? Status::kShort : Status::kBadIcv;
    Bytes bad = c.packet;
    bad[16] ^= 0x01;
    InboundState fresh = Receiver(spi, c.esn(), c.seq_full());
    const Status tampered = OpenCopy(cipher, fresh, bad).status;
    EXPECT_TRUE(tampered == Status::kBadIcv || tampered == icv_fail_or_short) << ToString(tampered);
    EXPECT_EQ(fresh.replay.highest(), before);

    // A receiver without ESN sees only the low half; case 1's is 0, which it may refuse
    // before the ICV (sequence number 0 is never sent, RFC 4303 3.3.3).
    const bool low_zero = (c.seq_full() & 0xffffffffu) == 0;
    InboundState other =
        Receiver(spi, !c.esn(), c.esn() ? c.seq_full() & 0xffffffffu : c.seq_full());
    const std::uint64_t other_before = other.replay.highest();
    const Status wrong_esn = OpenCopy(cipher, other, c.packet).status;
    EXPECT_TRUE(wrong_esn == Status::kBadIcv || wrong_esn == icv_fail_or_short ||
                (low_zero && wrong_esn == Status::kReplay))
        << ToString(wrong_esn);
    EXPECT_EQ(other.replay.highest(), other_before);
    ++checked;
  }
  EXPECT_EQ(checked, 15);
}

// --- RFC 7634 Appendix A ---------------------------------------------------------------------

// The one published ESP packet here that is tunnel mode with Next Header 4: esp::Open delivers
// its inner IPv4 packet byte-exact.
TEST(EspKatRfc7634, OpenDeliversTheInnerPacket) {
  const auto blocks = ReadVectorFile("src/spigot/crypto/testdata/chacha20poly1305_esp_rfc7634.txt");
  ASSERT_EQ(blocks.size(), 1u);
  const VectorBlock& b = blocks[0];
  ImbManager& mgr = ImbManager::ForThisThread();
  EspCipher cipher;
  ASSERT_TRUE(cipher.Init(mgr, EspSuite::kChaCha20Poly1305, Field(b, "keymat")));
  const Bytes packet = Field(b, "packet");
  const Bytes inner = Field(b, "inner");
  const std::uint32_t spi = static_cast<std::uint32_t>(BigEndian(Field(b, "spi")));
  const std::uint64_t seq = BigEndian(Field(b, "seq"));
  ASSERT_EQ(spi, 0x01020304u);
  ASSERT_EQ(seq, 5u);

  InboundState in = Receiver(spi, false, seq);
  const Opened r = OpenCopy(cipher, in, packet);
  ASSERT_EQ(r.status, Status::kOk) << ToString(r.status);
  EXPECT_EQ(r.next_header, kNextHeaderIpv4);
  EXPECT_EQ(r.seq, seq);
  EXPECT_EQ(ToHex(r.inner), ToHex(inner));
  EXPECT_EQ(in.replay.highest(), seq);
  EXPECT_EQ(OpenCopy(cipher, in, packet).status, Status::kReplay);

  InboundState esn = Receiver(spi, true, seq);
  EXPECT_EQ(OpenCopy(cipher, esn, packet).status, Status::kBadIcv);
  Bytes bad = packet;
  bad.back() ^= 0x01;
  InboundState fresh = Receiver(spi, false, seq);
  EXPECT_EQ(OpenCopy(cipher, fresh, bad).status, Status::kBadIcv);
  EXPECT_EQ(fresh.replay.highest(), 0u);
}

// --- Derived whole-packet vectors for esp::Seal ----------------------------------------------

EspSuite SuiteFromKeyword(const std::string& s) {
  if (s == "aes128gcm16") return EspSuite::kAesGcm128;
  if (s == "aes256gcm16") return EspSuite::kAesGcm256;
  EXPECT_EQ(s, "chacha20poly1305");
  return EspSuite::kChaCha20Poly1305;
}

// No published vector uses Seal's IV (the sequence number), so these packets are derived from
// published inputs (see the file's comment). Seal must produce them byte for byte; Open must
// give the inner packet back.
TEST(EspKatSealDerived, SealProducesTheExactPacket) {
  const auto blocks = ReadVectorFile("src/spigot/esp/testdata/esp_seal_derived.txt");
  ASSERT_EQ(blocks.size(), 4u);
  ImbManager& mgr = ImbManager::ForThisThread();
  for (const VectorBlock& b : blocks) {
    SCOPED_TRACE(Text(b, "name"));
    const EspSuite suite = SuiteFromKeyword(Text(b, "suite"));
    EspCipher cipher;
    ASSERT_TRUE(cipher.Init(mgr, suite, Field(b, "keymat")));
    const std::uint32_t spi = static_cast<std::uint32_t>(BigEndian(Field(b, "spi")));
    const std::uint64_t seq = BigEndian(Field(b, "seq"));
    const bool esn = Text(b, "esn") == "1";
    const std::uint8_t next_header = Field(b, "next_header").at(0);
    const Bytes inner = Field(b, "inner");
    const Bytes packet = Field(b, "packet");

    EXPECT_EQ(SealedLength(suite, inner.size()), packet.size());
    OutboundState out;
    out.spi = spi;
    out.esn = esn;
    out.next_seq = seq;
    const Sealed s = SealCopy(cipher, out, next_header, inner);
    ASSERT_EQ(s.status, Status::kOk) << ToString(s.status);
    EXPECT_EQ(ToHex(s.packet), ToHex(packet));
    if (seq != ~std::uint64_t{0}) {
      EXPECT_EQ(out.next_seq, seq + 1);
    }

    InboundState in = Receiver(spi, esn, seq);
    const Opened r = OpenCopy(cipher, in, packet);
    ASSERT_EQ(r.status, Status::kOk) << ToString(r.status);
    EXPECT_EQ(r.next_header, next_header);
    EXPECT_EQ(r.seq, seq);
    EXPECT_EQ(ToHex(r.inner), ToHex(inner));
  }
}

// --- Round trips -----------------------------------------------------------------------------

// RFC 1071 Internet checksum over an IPv4 header.
std::uint16_t Ipv4HeaderChecksum(const Bytes& p) {
  std::uint32_t sum = 0;
  for (std::size_t i = 0; i < 20; i += 2) sum += std::uint32_t{p[i]} << 8 | p[i + 1];
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum);
}

// A minimal valid IPv4 packet of `total_len` bytes (>= 20): no options, Total Length set,
// protocol 253 (RFC 3692 experimentation, so the payload needs no structure), 192.0.2.1 ->
// 198.51.100.2 (RFC 5737), correct header checksum.
Bytes Ipv4Packet(std::size_t total_len, std::uint8_t seed) {
  Bytes p = Filler(total_len, seed);
  const Bytes header = Concat({
      Bytes{0x45, 0x00},                                           // version 4, IHL 5; DSCP/ECN 0
      Be32(static_cast<std::uint32_t>(total_len) << 16 | 0x1234),  // Total Length, ID
      Bytes{0x40, 0x00, 64, 253, 0x00, 0x00},                      // DF; TTL; protocol; checksum 0
      Bytes{192, 0, 2, 1},                                         // source
      Bytes{198, 51, 100, 2},                                      // destination
  });
  std::copy(header.begin(), header.end(), p.begin());
  const std::uint16_t sum = Ipv4HeaderChecksum(p);
  p[10] = static_cast<std::uint8_t>(sum >> 8);
  p[11] = static_cast<std::uint8_t>(sum);
  return p;
}

// A minimal valid IPv6 packet of `total_len` bytes (>= 40): Payload Length set, Next Header 59
// (no next header, RFC 8200 4.7), 2001:db8::1 -> 2001:db8::2 (RFC 3849).
Bytes Ipv6Packet(std::size_t total_len, std::uint8_t seed) {
  Bytes p = Filler(total_len, seed);
  const Bytes header = Concat({
      Be32(0x60000000),  // version 6, class, flow
      Be32(static_cast<std::uint32_t>(total_len - 40) << 16 | 59 << 8 | 64),  // length, NH, hops
      Be32(0x20010db8), Be32(0), Be32(0), Be32(1),                            // source
      Be32(0x20010db8), Be32(0), Be32(0), Be32(2),                            // destination
  });
  std::copy(header.begin(), header.end(), p.begin());
  return p;
}

class EspRoundTrip : public ::testing::TestWithParam<std::tuple<EspSuite, bool>> {
 protected:
  static constexpr std::uint32_t kSpi = 0xc0ffee01;

  void SetUp() override {
    const std::size_t len = SuiteInfo(suite()).keymat_len();
    ASSERT_TRUE(cipher_.Init(ImbManager::ForThisThread(), suite(), Filler(len, 0x21)));
    ASSERT_TRUE(other_key_.Init(ImbManager::ForThisThread(), suite(), Filler(len, 0x22)));
  }

  EspSuite suite() const { return std::get<0>(GetParam()); }
  bool esn() const { return std::get<1>(GetParam()); }

  OutboundState Sender(std::uint64_t next_seq = 1) const {
    OutboundState out;
    out.spi = kSpi;
    out.esn = esn();
    out.next_seq = next_seq;
    return out;
  }

  // Takes a sealed packet apart with EspCipher's own primitives (pinned by the crypto KATs),
  // independently of esp::Open: header, IV, ICV over the RFC 4303 / RFC 4106 input, minimal
  // padding with bytes 1, 2, 3, ..., trailer.
  void CheckLayout(const Bytes& packet, std::uint64_t seq, std::uint8_t next_header,
                   const Bytes& inner) const {
    ImbManager& mgr = ImbManager::ForThisThread();
    const auto& info = SuiteInfo(suite());
    const std::size_t head = kEspHeaderLen + info.iv_len;
    const std::size_t payload = inner.size() + kEspTrailerLen;
    const std::size_t padded = (payload + info.pad_align - 1) / info.pad_align * info.pad_align;
    const std::size_t icv_len = info.icv_len;  // 16, or 12 for HMAC-SHA1-96
    ASSERT_EQ(packet.size(), head + padded + icv_len);
    EXPECT_EQ(SealedLength(suite(), inner.size()), packet.size());
    EXPECT_EQ(ToHex(Slice(packet, 0, 4)), ToHex(Be32(kSpi)));
    EXPECT_EQ(ToHex(Slice(packet, 4, 8)), ToHex(Be32(static_cast<std::uint32_t>(seq))));
    const Bytes iv = Slice(packet, kEspHeaderLen, head);
    Bytes body = Slice(packet, head, packet.size() - icv_len);
    const Bytes icv = Slice(packet, packet.size() - icv_len, packet.size());
    const Bytes seq_hi = esn() ? Be32(static_cast<std::uint32_t>(seq >> 32)) : Bytes{};
    if (info.aead) {
      // RFC 4106 3.1 / RFC 7634 2: an 8-byte IV that never repeats; Seal uses the sequence
      // number. AAD: RFC 4106 5 / RFC 7634 2.1.
      EXPECT_EQ(ToHex(iv), ToHex(Be64(seq)));
      const Bytes aad = Concat({Be32(kSpi), seq_hi, Be32(static_cast<std::uint32_t>(seq))});
      ASSERT_TRUE(cipher_.OpenAead(mgr, iv.data(), aad, body, icv.data())) << "AEAD tag";
    } else {
      // RFC 4303 2.2.1 / 3.3.2.1: the ICV covers SPI .. Next Header, then the high 32 bits of
      // an ESN appended (never transmitted).
      const Bytes covered = Concat({Slice(packet, 0, packet.size() - icv_len), seq_hi});
      ASSERT_TRUE(cipher_.VerifyMac(mgr, covered, icv.data())) << "HMAC";
      ASSERT_EQ(body.size() % 16, 0u);
      cipher_.DecryptCbc(mgr, iv.data(), body);
    }
    ASSERT_EQ(body.size(), padded);
    EXPECT_EQ(body.back(), next_header);
    const std::size_t pad = body[body.size() - 2];
    EXPECT_EQ(pad, padded - payload) << "RFC 4303 2.4: minimal padding, no TFC padding";
    ASSERT_LE(pad + 2, body.size());
    for (std::size_t i = 0; i < pad; ++i) {
      EXPECT_EQ(body[inner.size() + i], i + 1) << "pad byte " << i;
    }
    EXPECT_EQ(ToHex(Slice(body, 0, inner.size())), ToHex(inner));
  }

  EspCipher cipher_;
  EspCipher other_key_;
};

// IPv4 and IPv6 inner packets from header-only to 1500 bytes, including every residue of the
// 16-byte CBC block, all through one SA: Seal -> layout check -> Open -> replay refused.
TEST_P(EspRoundTrip, Ipv4AndIpv6OfManySizes) {
  std::vector<Bytes> inners;
  for (std::size_t n = 20; n < 20 + 16; ++n) inners.push_back(Ipv4Packet(n, 1));
  for (std::size_t n : {64, 255, 256, 576, 1400, 1500}) inners.push_back(Ipv4Packet(n, 2));
  for (std::size_t n = 40; n < 40 + 16; ++n) inners.push_back(Ipv6Packet(n, 3));
  for (std::size_t n : {100, 1280, 1500}) inners.push_back(Ipv6Packet(n, 4));

  OutboundState out = Sender();
  InboundState in = Receiver(kSpi, esn(), 1);
  std::uint64_t seq = 1;
  for (const Bytes& inner : inners) {
    const std::uint8_t nh = (inner[0] >> 4) == 4 ? kNextHeaderIpv4 : kNextHeaderIpv6;
    SCOPED_TRACE("IPv" + std::to_string(inner[0] >> 4) + ", " + std::to_string(inner.size()) +
                 " bytes, seq " + std::to_string(seq));
    const Sealed s = SealCopy(cipher_, out, nh, inner);
    ASSERT_EQ(s.status, Status::kOk) << ToString(s.status);
    EXPECT_EQ(out.next_seq, seq + 1);
    CheckLayout(s.packet, seq, nh, inner);

    const Opened r = OpenCopy(cipher_, in, s.packet);
    ASSERT_EQ(r.status, Status::kOk) << ToString(r.status);
    EXPECT_EQ(r.next_header, nh);
    EXPECT_EQ(r.seq, seq);
    EXPECT_EQ(ToHex(r.inner), ToHex(inner));
    EXPECT_EQ(in.replay.highest(), seq);
    EXPECT_EQ(OpenCopy(cipher_, in, s.packet).status, Status::kReplay);
    ++seq;
  }
}

// Every single-bit change anywhere in the packet is refused, never moves the window, and
// leaves the genuine packet acceptable afterwards.
TEST_P(EspRoundTrip, EveryTamperedByteIsRejected) {
  for (const Bytes& inner : {Ipv4Packet(61, 5), Ipv6Packet(72, 6)}) {
    OutboundState out = Sender();
    const std::uint8_t nh = (inner[0] >> 4) == 4 ? kNextHeaderIpv4 : kNextHeaderIpv6;
    const Sealed s = SealCopy(cipher_, out, nh, inner);
    ASSERT_EQ(s.status, Status::kOk);
    InboundState in = Receiver(kSpi, esn(), 1);
    for (std::size_t i = 0; i < s.packet.size(); ++i) {
      for (std::uint8_t mask : {0x01, 0x80}) {
        Bytes bad = s.packet;
        bad[i] ^= mask;
        const Status st = OpenCopy(cipher_, in, bad).status;
        SCOPED_TRACE("byte " + std::to_string(i) + " mask " + std::to_string(mask) + ": " +
                     ToString(st));
        if (i < 4) {
          // The SPI: Open may compare it with in.spi first; otherwise it is in the ICV input.
          EXPECT_TRUE(st == Status::kBadIcv || st == Status::kUnknownSpi);
        } else if (i < 8) {
          // The sequence number: a changed one is in the ICV input too (0 may be refused first).
          EXPECT_TRUE(st == Status::kBadIcv || st == Status::kReplay);
        } else {
          EXPECT_EQ(st, Status::kBadIcv);
        }
        ASSERT_EQ(in.replay.highest(), 0u) << "a forgery moved the window";
      }
    }
    const Opened r = OpenCopy(cipher_, in, s.packet);
    EXPECT_EQ(r.status, Status::kOk) << ToString(r.status);
    EXPECT_EQ(ToHex(r.inner), ToHex(inner));
  }
}

// Every truncated prefix, and the packet with bytes appended, is refused without moving the
// window (cf. QUICHE CheckFramingBoundaries).
TEST_P(EspRoundTrip, EveryTruncationAndExtensionIsRejected) {
  OutboundState out = Sender();
  const Bytes inner = Ipv4Packet(48, 7);
  const Sealed s = SealCopy(cipher_, out, kNextHeaderIpv4, inner);
  ASSERT_EQ(s.status, Status::kOk);
  InboundState in = Receiver(kSpi, esn(), 1);
  for (std::size_t len = 0; len < s.packet.size(); ++len) {
    const Status st = OpenCopy(cipher_, in, Slice(s.packet, 0, len)).status;
    EXPECT_TRUE(st == Status::kShort || st == Status::kMalformed || st == Status::kBadIcv)
        << len << " bytes: " << ToString(st);
    ASSERT_EQ(in.replay.highest(), 0u) << len;
  }
  for (std::size_t extra : {1, 4, 16}) {
    const Status st = OpenCopy(cipher_, in, Concat({s.packet, Bytes(extra, 0)})).status;
    EXPECT_TRUE(st == Status::kMalformed || st == Status::kBadIcv)
        << "+" << extra << ": " << ToString(st);
    ASSERT_EQ(in.replay.highest(), 0u);
  }
  EXPECT_EQ(OpenCopy(cipher_, in, s.packet).status, Status::kOk);
}

// Another key, the other ESN setting (another AAD / ICV input), or an SA for another SPI.
TEST_P(EspRoundTrip, WrongKeyEsnOrSpiIsRefused) {
  OutboundState out = Sender();
  const Bytes inner = Ipv6Packet(80, 8);
  const Sealed s = SealCopy(cipher_, out, kNextHeaderIpv6, inner);
  ASSERT_EQ(s.status, Status::kOk);

  InboundState in = Receiver(kSpi, esn(), 1);
  EXPECT_EQ(OpenCopy(other_key_, in, s.packet).status, Status::kBadIcv);
  InboundState flipped = Receiver(kSpi, !esn(), 1);
  EXPECT_EQ(OpenCopy(cipher_, flipped, s.packet).status, Status::kBadIcv);
  InboundState other_spi = Receiver(kSpi + 1, esn(), 1);
  const Status st = OpenCopy(cipher_, other_spi, s.packet).status;
  EXPECT_TRUE(st == Status::kUnknownSpi || st == Status::kBadIcv)
      << "packet for SPI " << kSpi << " opened by the SA of SPI " << kSpi + 1 << ": "
      << ToString(st);
  EXPECT_EQ(in.replay.highest(), 0u);
  EXPECT_EQ(flipped.replay.highest(), 0u);
  EXPECT_EQ(other_spi.replay.highest(), 0u);
  EXPECT_EQ(OpenCopy(cipher_, in, s.packet).status, Status::kOk);
}

// The last sequence numbers of the space (2^32 - 1 without ESN, 2^64 - 1 with it, RFC 4303
// 3.3.3) are sent and received; the next Seal is refused, repeatedly.
TEST_P(EspRoundTrip, LastSequenceNumbersThenExhausted) {
  const std::uint64_t last = esn() ? ~std::uint64_t{0} : 0xffffffffu;
  OutboundState out = Sender(last - 1);
  InboundState in = Receiver(kSpi, esn(), last - 1);
  const Bytes inner = Ipv4Packet(40, 9);
  for (std::uint64_t seq : {last - 1, last}) {
    SCOPED_TRACE(seq);
    const Sealed s = SealCopy(cipher_, out, kNextHeaderIpv4, inner);
    ASSERT_EQ(s.status, Status::kOk) << ToString(s.status);
    CheckLayout(s.packet, seq, kNextHeaderIpv4, inner);
    const Opened r = OpenCopy(cipher_, in, s.packet);
    ASSERT_EQ(r.status, Status::kOk) << ToString(r.status);
    EXPECT_EQ(r.seq, seq);
    EXPECT_EQ(ToHex(r.inner), ToHex(inner));
  }
  EXPECT_EQ(SealCopy(cipher_, out, kNextHeaderIpv4, inner).status, Status::kSeqExhausted);
  EXPECT_EQ(SealCopy(cipher_, out, kNextHeaderIpv4, inner).status, Status::kSeqExhausted);
}

// Near the top of the low 32 bits, packets arriving out of order: with ESN the sender carries
// into the high half (RFC 4304) and the receiver infers it (RFC 4303 A2), also for a packet that
// arrives late across the boundary; without ESN the space simply ends at 2^32 - 1.
TEST_P(EspRoundTrip, TopOfTheLowHalfOutOfOrder) {
  const std::uint64_t first = 0xfffffffdu;
  const int count = esn() ? 6 : 3;
  const std::vector<int> order =
      esn() ? std::vector<int>{0, 1, 3, 2, 5, 4} : std::vector<int>{0, 2, 1};
  OutboundState out = Sender(first);
  InboundState in = Receiver(kSpi, esn(), first);
  std::vector<Bytes> packets;
  const Bytes inner = Ipv6Packet(64, 10);
  for (int i = 0; i < count; ++i) {
    const Sealed s = SealCopy(cipher_, out, kNextHeaderIpv6, inner);
    ASSERT_EQ(s.status, Status::kOk) << ToString(s.status);
    CheckLayout(s.packet, first + i, kNextHeaderIpv6, inner);
    packets.push_back(s.packet);
  }
  if (esn()) {
    EXPECT_EQ(out.next_seq, first + count);
  } else {
    EXPECT_EQ(SealCopy(cipher_, out, kNextHeaderIpv6, inner).status, Status::kSeqExhausted);
  }
  for (int i : order) {
    SCOPED_TRACE(i);
    const Opened r = OpenCopy(cipher_, in, packets[i]);
    ASSERT_EQ(r.status, Status::kOk) << ToString(r.status);
    EXPECT_EQ(r.seq, first + i);
    EXPECT_EQ(ToHex(r.inner), ToHex(inner));
  }
  EXPECT_EQ(in.replay.highest(), first + count - 1);
  EXPECT_EQ(OpenCopy(cipher_, in, packets[1]).status, Status::kReplay);
}

// RFC 4303 2.6: an authentic packet with Next Header 59 is a dummy, discarded silently.
TEST_P(EspRoundTrip, DummyPacketIsReportedAsDummy) {
  OutboundState out = Sender();
  const Sealed s = SealCopy(cipher_, out, kNextHeaderNone, Filler(33, 11));
  ASSERT_EQ(s.status, Status::kOk) << ToString(s.status);
  InboundState in = Receiver(kSpi, esn(), 1);
  EXPECT_EQ(OpenCopy(cipher_, in, s.packet).status, Status::kDummy);
}

std::string ParamName(const ::testing::TestParamInfo<EspRoundTrip::ParamType>& info) {
  std::string name = SuiteName(std::get<0>(info.param));
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name + (std::get<1>(info.param) ? "_Esn" : "_NoEsn");
}

INSTANTIATE_TEST_SUITE_P(AllSuites, EspRoundTrip,
                         ::testing::Combine(::testing::ValuesIn(kAllSuites), ::testing::Bool()),
                         ParamName);

}  // namespace
}  // namespace spigot::esp
