// libFuzzer target: IKEv2 message parsing (ParseMessage, and OpenSk for SK messages under fixed
// keys), with round trips: whatever parses must serialize, parse again and serialize to the same
// octets, in cleartext and sealed again in an SK payload. Input layout: fuzz/ike_fuzz_keys.h.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "fuzz/ike_fuzz_keys.h"
#include "spigot/ike/message.h"

using namespace spigot;
using ike::Bytes;
using ike::Message;
using ike::ParseError;
using ike::ParseResult;

namespace {

struct SuiteKeys {
  ike::SkKeys tx;  // the peer's end: seals
  ike::SkKeys rx;  // ours: opens
};

SuiteKeys& KeysFor(std::size_t suite) {
  static SuiteKeys* keys = [] {
    auto* k = new SuiteKeys[fuzz::kIkeFuzzSuites.size()];
    for (std::size_t i = 0; i < fuzz::kIkeFuzzSuites.size(); ++i) {
      k[i].tx = fuzz::IkeFuzzKeys(i);
      k[i].rx = fuzz::IkeFuzzKeys(i);
    }
    return k;
  }();
  return keys[suite];
}

void Check(bool cond, const char* what) {
  if (!cond) {
    std::fprintf(stderr, "round trip broken: %s\n", what);
    std::abort();
  }
}

// A payload list as octets: its cleartext chain under a default header.
Bytes Canon(const std::vector<ike::Payload>& payloads) {
  Message m;
  m.payloads = payloads;
  return ike::Serialize(m, nullptr);
}

bool SameHeader(const ike::Header& a, const ike::Header& b) {
  return a.spi_i == b.spi_i && a.spi_r == b.spi_r && a.version == b.version &&
         a.exchange == b.exchange && a.flags == b.flags && a.message_id == b.message_id;
}

// Serialize -> ParseMessage -> Serialize gives the same octets, and nothing is encrypted.
void CleartextRoundTrip(const Message& m) {
  const Bytes b1 = ike::Serialize(m, nullptr);
  Check(!b1.empty(), "serialize of a parsed message failed");
  Check(b1.size() <= ike::kMaxMessageLen, "re-serialized message grew past the maximum");
  Message m1;
  const ParseResult r = ike::ParseMessage(b1, m1);
  Check(r.error == ParseError::kOk, "re-serialized message does not parse");
  Check(!m1.encrypted, "cleartext message parsed as encrypted");
  Check(SameHeader(m.header, m1.header), "header changed");
  Check(m1.payloads.size() == m.payloads.size(), "payload count changed");
  for (std::size_t i = 0; i < m.payloads.size(); ++i) {
    Check(m1.payloads[i].type == m.payloads[i].type, "payload type changed");
    Check(m1.payloads[i].body.index() == m.payloads[i].body.index(), "payload kind changed");
  }
  Check(ike::Serialize(m1, nullptr) == b1, "second serialization differs");
}

// Sealed again under the peer's keys, the message opens under ours to the same payloads.
void SkRoundTrip(const Message& m, SuiteKeys& keys) {
  const Bytes sealed = ike::Serialize(m, &keys.tx);
  Check(!sealed.empty(), "serialize with SK failed");
  Message m2;
  const ParseResult loc = ike::ParseMessage(sealed, m2);
  Check(loc.error == ParseError::kOk, "sealed message does not parse");
  Check(m2.encrypted && loc.sk_offset == ike::kHeaderLen, "sealed message has no SK first");
  Check(ike::OpenSk(sealed, loc, keys.rx, m2).error == ParseError::kOk, "sealed message does not open");
  Check(SameHeader(m.header, m2.header), "header changed through SK");
  Check(Canon(m2.payloads) == Canon(m.payloads), "payloads changed through SK");
}

// `authentic`: the datagram was sealed here under the peer's keys, so its header and SK
// payload are well formed and its ICV must verify whatever the plaintext holds.
void ParseAndCheck(std::span<const std::uint8_t> datagram, SuiteKeys& keys, bool authentic) {
  Message m;
  const ParseResult loc = ike::ParseMessage(datagram, m);
  if (authentic) Check(loc.error == ParseError::kOk && m.encrypted, "own SK message rejected");
  if (loc.error != ParseError::kOk) return;
  Check(m.header.length == datagram.size(), "accepted a Length that disagrees");
  Check((m.header.version >> 4) == ike::kMajorVersion, "accepted another major version");
  if (m.encrypted) {
    Check(loc.sk_offset >= ike::kHeaderLen &&
              loc.sk_offset + ike::kPayloadHeaderLen <= datagram.size(),
          "SK located outside the datagram");
    Check(m.payloads.empty(), "payloads before opening SK");
    const ParseError opened = ike::OpenSk(datagram, loc, keys.rx, m).error;
    if (authentic) Check(opened != ParseError::kIntegrityFailed, "own SK message fails its ICV");
    if (opened != ParseError::kOk) return;
    SkRoundTrip(m, keys);
  }
  CleartextRoundTrip(m);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::size_t suite = (data[0] & 0x7Fu) % fuzz::kIkeFuzzSuites.size();
  SuiteKeys& keys = KeysFor(suite);
  if (data[0] & fuzz::kIkeSealBit) {
    if (size < 2) return 0;
    const Bytes sealed = fuzz::IkeFuzzSeal(keys.tx, data[1], Bytes(data + 2, data + size));
    if (sealed.empty()) return 0;
    ParseAndCheck(sealed, keys, true);
  } else {
    ParseAndCheck({data + 1, size - 1}, keys, false);
  }
  return 0;
}
