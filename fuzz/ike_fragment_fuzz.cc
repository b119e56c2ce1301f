// libFuzzer target: IKEv2 fragmentation (RFC 7383) — SerializeFragments, ParseMessage/OpenSkf of
// the fragments, and Reassembly — with round trips checked, not only "no crash".
//
// Input: byte 0 selects the suite (low 7 bits, mod 9, fuzz/ike_fuzz_keys.h) and the mode (bit 7):
//   0 (round trip): byte 1 is the fragment size (max_message = 60 + 2 * byte 1), byte 2 a seed
//      for the delivery order; the rest is a cleartext IKE message. If it parses, its payloads
//      are fragmented under the suite's keys, every fragment must parse and open, and delivered
//      in a shuffled order with duplicates they must reassemble to exactly the payload chain that
//      was fragmented, which must parse to the same payloads.
//   1 (hostile peer): the rest is a list of authentic fragments fed straight to a Reassembly, 8
//      octets each — message ID (1), Fragment Number (2), Total Fragments (2), seconds elapsed
//      (1), content length (2) — followed by that much content (0x5A octets when the input runs
//      out). A model of RFC 7383 2.6 predicts every verdict; the bounds must hold throughout.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <vector>

#include "fuzz/ike_fuzz_keys.h"
#include "spigot/ike/fragments.h"
#include "spigot/ike/message.h"

using namespace spigot;
using ike::Bytes;
using ike::Message;
using ike::ParseError;
using ike::ParseResult;
using ike::Reassembly;

namespace {

struct SuiteKeys {
  ike::SkKeys tx;
  ike::SkKeys rx;
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
    std::fprintf(stderr, "fragmentation broken: %s\n", what);
    std::abort();
  }
}

Bytes ChainOf(const Message& m) {
  Message clear;
  clear.payloads = m.payloads;
  const Bytes all = ike::Serialize(clear, nullptr);
  return Bytes(all.begin() + ike::kHeaderLen, all.end());
}

void RoundTrip(std::span<const std::uint8_t> in, SuiteKeys& keys) {
  if (in.size() < 3) return;
  const std::size_t max_message = 60 + 2 * std::size_t{in[0]};
  std::uint32_t seed = in[1] + 1u;
  Message m;
  if (ike::ParseMessage(in.subspan(2), m).error != ParseError::kOk || m.encrypted) return;
  const Bytes chain = ChainOf(m);
  const std::vector<Bytes> frags = ike::SerializeFragments(m, keys.tx, max_message);
  if (frags.empty()) return;  // no room for content at this size
  Check(frags.size() <= 0xFFFF, "too many fragments");
  struct Piece {
    std::uint16_t number, total;
    ike::PayloadType first;
    Bytes content;
    std::uint32_t id;
  };
  std::vector<Piece> pieces;
  for (std::size_t i = 0; i < frags.size(); ++i) {
    Check(frags[i].size() <= max_message, "fragment larger than asked for");
    Message fm;
    const ParseResult loc = ike::ParseMessage(frags[i], fm);
    Check(loc.error == ParseError::kOk && loc.fragment, "own fragment does not parse");
    Check(loc.fragment_number == i + 1 && loc.total_fragments == frags.size(), "fragment numbers");
    Check(fm.header.message_id == m.header.message_id, "message ID changed");
    Bytes content;
    Check(ike::OpenSkf(frags[i], loc, keys.rx, content).error == ParseError::kOk,
          "own fragment does not open");
    pieces.push_back({loc.fragment_number, loc.total_fragments, loc.sk_first, std::move(content),
                      fm.header.message_id});
  }
  if (frags.size() > ike::kMaxFragments) return;  // the receiver refuses these, by design
  // Shuffled, with some duplicated.
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    order.push_back(i);
    if ((seed = seed * 1103515245u + 12345u) & 0x10000) order.push_back(i);
  }
  for (std::size_t i = order.size(); i > 1; --i) {
    seed = seed * 1103515245u + 12345u;
    std::swap(order[i - 1], order[(seed >> 8) % i]);
  }
  ike::FragmentCounters c;
  Reassembly r;
  std::vector<bool> seen(pieces.size(), false);
  std::size_t distinct = 0;
  bool done = false;
  for (std::size_t k : order) {
    if (done) break;
    const Piece& p = pieces[k];
    const auto v = r.Add(p.id, p.number, p.total, p.first, p.content, io::Clock::TimePoint{}, c);
    if (seen[k]) {
      Check(v == Reassembly::Verdict::kDropped, "duplicate stored");
      continue;
    }
    seen[k] = true;
    ++distinct;
    if (chain.size() > ike::kMaxReassemblyBytes) return;
    Check(v == (distinct == pieces.size() ? Reassembly::Verdict::kComplete : Reassembly::Verdict::kStored),
          "wrong verdict for a new fragment");
    done = v == Reassembly::Verdict::kComplete;
  }
  Check(done, "all fragments delivered, message not complete");
  ike::PayloadType first;
  const Bytes joined = r.TakeMessage(first);
  Check(joined == chain, "reassembled chain differs");
  Message back;
  Check(ike::ParseInner(joined, first, back).error == ParseError::kOk, "reassembled chain does not parse");
  Check(ChainOf(back) == chain, "reassembled payloads differ");
}

void Hostile(std::span<const std::uint8_t> in) {
  ike::FragmentCounters c;
  Reassembly r;
  // The model: what RFC 7383 2.6 says is held.
  std::uint32_t id = 0;
  std::uint16_t total = 0;
  std::map<std::uint16_t, std::size_t> held;  // number -> content length
  std::size_t bytes = 0;
  io::Clock::TimePoint now{}, started{};
  std::size_t at = 0;
  auto u8 = [&] { return at < in.size() ? in[at++] : std::uint8_t{0}; };
  for (int step = 0; step < 4096 && at < in.size(); ++step) {
    const std::uint32_t mid = u8() % 4;
    const auto number = static_cast<std::uint16_t>(u8() << 8 | u8());
    const auto tot = static_cast<std::uint16_t>(u8() << 8 | u8());
    now += std::chrono::seconds(u8() % 8);
    const std::size_t len = (std::size_t{u8()} << 8 | u8()) % 4096;
    Bytes content(len, 0x5A);
    for (std::size_t i = 0; i < len && at < in.size(); ++i) content[i] = in[at++];

    if (total != 0 && now >= started + ike::kReassemblyTimeout) {
      Check(r.Expire(now, c), "reassembly not expired");
      total = 0, held.clear(), bytes = 0;
    }
    Check(r.active() == (total != 0), "model and reassembly disagree on activity");
    const auto v = r.Add(mid, number, tot, ike::PayloadType::kNone, content, now, c);
    // The model's verdict.
    auto expect = Reassembly::Verdict::kDropped;
    const bool valid = number != 0 && tot != 0 && number <= tot && tot <= ike::kMaxFragments;
    if (valid) {
      const bool fresh = total == 0 || mid != id || tot > total;
      if (fresh || (tot == total && !held.count(number))) {
        if (fresh) id = mid, total = tot, held.clear(), bytes = 0, started = now;
        if (bytes + len > ike::kMaxReassemblyBytes) {
          total = 0, held.clear(), bytes = 0;
        } else {
          held[number] = len;
          bytes += len;
          expect = held.size() == total ? Reassembly::Verdict::kComplete : Reassembly::Verdict::kStored;
        }
      }
    }
    Check(v == expect, "verdict differs from RFC 7383 2.6");
    Check(r.bytes() <= ike::kMaxReassemblyBytes && r.count() <= ike::kMaxFragments, "bound broken");
    if (v == Reassembly::Verdict::kComplete) {
      ike::PayloadType first;
      Check(r.TakeMessage(first).size() == bytes, "reassembled size");
      total = 0, held.clear(), bytes = 0;
    } else if (total != 0) {
      Check(r.bytes() == bytes && r.count() == held.size(), "held content differs from the model");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::size_t suite = (data[0] & 0x7Fu) % fuzz::kIkeFuzzSuites.size();
  if (data[0] & 0x80) {
    Hostile({data + 1, size - 1});
  } else {
    RoundTrip({data + 1, size - 1}, KeysFor(suite));
  }
  return 0;
}
