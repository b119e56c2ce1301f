// Writes the seed corpus of ike_sa_fuzz (its input layout is described there): conversations
// with an established responder built from the codec, so that the fuzzer starts with
// authenticated IKE_AUTHs, CHILD SAs created, rekeyed and deleted, IKE rekeys both ways, a
// configuration request and liveness checks. Usage: gen_ike_sa_corpus OUT_DIR
#include <cstdio>
#include <string>
#include <vector>

#include "spigot/ike/identity.h"
#include "spigot/ike/message.h"
#include "spigot/ike/proposal.h"
#include "spigot/ike/traffic_selectors.h"

using namespace spigot::ike;

namespace {

// The first payload type and the payload chain of `payloads`, as Serialize lays them out.
std::pair<std::uint8_t, Bytes> Chain(std::vector<Payload> payloads) {
  Message m;
  m.header.exchange = Exchange::kInformational;
  m.payloads = std::move(payloads);
  const Bytes wire = Serialize(m, nullptr);
  return {wire[16], Bytes(wire.begin() + kHeaderLen, wire.end())};
}

class Seed {
 public:
  explicit Seed(std::uint8_t variant) { out_.push_back(variant); }
  Seed& Request(std::uint8_t exchange, std::vector<Payload> payloads, std::uint8_t id = 0) {
    auto [first, chain] = Chain(std::move(payloads));
    Bytes d = {exchange, id, first};
    d.insert(d.end(), chain.begin(), chain.end());
    return Record(0, d);
  }
  Seed& Response(std::vector<Payload> payloads) {
    auto [first, chain] = Chain(std::move(payloads));
    Bytes d = {first};
    d.insert(d.end(), chain.begin(), chain.end());
    return Record(1, d);
  }
  Seed& Action(std::uint8_t what) { return Record(2, {what}); }
  Seed& Wait(std::uint16_t tenths) {
    return Record(3, {static_cast<std::uint8_t>(tenths), static_cast<std::uint8_t>(tenths >> 8)});
  }
  Seed& Replay() { return Record(4, {}); }
  bool Write(const std::string& path) const {
    FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) return false;
    const bool ok = std::fwrite(out_.data(), 1, out_.size(), f) == out_.size();
    return std::fclose(f) == 0 && ok;
  }

 private:
  Seed& Record(std::uint8_t op, const Bytes& d) {
    out_.push_back(op);
    out_.push_back(static_cast<std::uint8_t>(d.size() >> 8));
    out_.push_back(static_cast<std::uint8_t>(d.size()));
    out_.insert(out_.end(), d.begin(), d.end());
    return *this;
  }
  Bytes out_;
};

Payload Notify(NotifyType t, Bytes data = {}, ProtocolId proto = ProtocolId::kNone, Bytes spi = {}) {
  return {PayloadType::kNotify, NotifyPayload{proto, std::move(spi), t, std::move(data)}};
}

std::vector<Proposal> Esp(const char* text, Bytes spi) {
  std::vector<Proposal> out;
  std::string err;
  ParseProposals(text, ProtocolId::kEsp, out, err);
  for (auto& p : out) p.spi = spi;
  return out;
}

Payload Ts(PayloadType type, const char* cidr) { return {type, TsPayload{{*SelectorFromCidr(cidr)}}}; }

// IKE_AUTH from @alice with a placeholder AUTH (the harness computes it) and a first CHILD SA.
std::vector<Payload> Auth(bool cp, bool extras) {
  std::vector<Payload> p = {
      {PayloadType::kIdi, ParseIdentity("@alice")->ToPayload()},
      {PayloadType::kAuth, AuthPayload{kAuthSharedKey, Bytes(32, 0)}},
  };
  if (extras) {
    p.push_back(Notify(NotifyType::kInitialContact));
    p.push_back(Notify(NotifyType::kMobikeSupported));
    p.push_back({PayloadType::kIdr, ParseIdentity("@bob")->ToPayload()});
  }
  if (cp) {
    p.push_back({PayloadType::kCp, CpPayload{kCfgRequest, {{kInternalIp4Address, {}}, {kInternalIp4Dns, {}}, {kInternalIp6Address, {}}}}});
  }
  p.push_back({PayloadType::kSa, SaPayload{Esp("aes128gcm16,aes256-sha256", {0xC1, 0, 0, 1})}});
  p.push_back(Ts(PayloadType::kTsi, cp ? "0.0.0.0/0" : "192.0.2.0/24"));
  p.push_back(Ts(PayloadType::kTsr, "198.51.100.0/24"));
  return p;
}

// The SPI the responder's host gives its first CHILD SA, and the next (LoopbackHost).
const Bytes kChild1 = {0xC0, 0, 1, 0};

// A CHILD SA's payloads from the peer: in its request (`ours` false) TSi is the peer's side; in
// its response to a request of the responder's, TSi is the responder's side (2.9).
std::vector<Payload> NewChild(Bytes spi, bool pfs, const char* esp = "aes128gcm16", bool ours = false) {
  std::vector<Payload> p = {{PayloadType::kSa, SaPayload{Esp(esp, spi)}},
                            {PayloadType::kNonce, NoncePayload{Bytes(32, 0x6E)}}};
  if (pfs) p.push_back({PayloadType::kKe, KePayload{31, Bytes(32, 0x09)}});
  p.push_back(Ts(PayloadType::kTsi, ours ? "198.51.100.0/24" : "192.0.2.0/24"));
  p.push_back(Ts(PayloadType::kTsr, ours ? "192.0.2.0/24" : "198.51.100.0/24"));
  return p;
}

std::vector<Payload> IkeRekey() {
  std::vector<Proposal> ike;
  std::string err;
  ParseProposals("aes128gcm16-prfsha256-x25519", ProtocolId::kIke, ike, err);
  ike[0].spi = Bytes(8, 0x2B);
  return {{PayloadType::kSa, SaPayload{ike}},
          {PayloadType::kNonce, NoncePayload{Bytes(32, 0x6F)}},
          {PayloadType::kKe, KePayload{31, Bytes(32, 0x09)}}};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  constexpr std::uint8_t kAuthEx = 0, kCreate = 1, kInfo = 2;
  std::vector<std::pair<std::string, Seed>> seeds;
  // The peer's requests.
  seeds.emplace_back("auth_only", Seed(0).Request(kAuthEx, Auth(false, true)));
  seeds.emplace_back("auth_then_create_child",
                     Seed(0).Request(kAuthEx, Auth(false, false)).Request(kCreate, NewChild({0xC1, 0, 0, 2}, true)).Replay());
  {
    auto rekey = NewChild({0xC1, 0, 0, 3}, false);
    rekey.insert(rekey.begin(), Notify(NotifyType::kRekeySa, {}, ProtocolId::kEsp, kChild1));
    seeds.emplace_back("child_rekey_then_delete_old",
                       Seed(0).Request(kAuthEx, Auth(false, false)).Request(kCreate, rekey).Request(
                           kInfo, {{PayloadType::kDelete, DeletePayload{ProtocolId::kEsp, 4, {{0xC1, 0, 0, 1}}}}}));
  }
  seeds.emplace_back("ike_rekey_by_peer",
                     Seed(0).Request(kAuthEx, Auth(false, false)).Request(kCreate, IkeRekey()).Request(
                         kInfo, {{PayloadType::kDelete, DeletePayload{ProtocolId::kIke, 0, {}}}}));
  seeds.emplace_back("liveness_and_mobike",
                     Seed(0).Request(kAuthEx, Auth(false, true)).Request(kInfo, {}).Request(
                         kInfo, {Notify(NotifyType::kUpdateSaAddresses),
                                 Notify(NotifyType::kNatDetectionSourceIp, Bytes(20, 1)),
                                 Notify(NotifyType::kNatDetectionDestinationIp, Bytes(20, 2))}));
  seeds.emplace_back("road_warrior_cp", Seed(1).Request(kAuthEx, Auth(true, true)).Request(kInfo, {}));
  seeds.emplace_back("fragmented_answers", Seed(2).Request(kAuthEx, Auth(false, true)).Request(kCreate, NewChild({0xC1, 0, 0, 4}, false, "aes256-sha256")));
  // The SA's own requests and their answers.
  seeds.emplace_back("our_create_child",
                     Seed(0).Request(kAuthEx, Auth(false, false)).Action(0).Response(NewChild({0xC1, 0, 0, 5}, false, "aes128gcm16", true)));
  {
    auto resp = NewChild({0xC1, 0, 0, 6}, false, "aes128gcm16", true);
    seeds.emplace_back("our_child_rekey", Seed(0).Request(kAuthEx, Auth(false, false)).Action(1).Response(resp).Wait(20));
  }
  seeds.emplace_back("our_ike_rekey", Seed(0).Request(kAuthEx, Auth(false, false)).Action(3).Response(IkeRekey()).Wait(100));
  seeds.emplace_back("our_delete_child",
                     Seed(0).Request(kAuthEx, Auth(false, false)).Action(2).Response(
                         {{PayloadType::kDelete, DeletePayload{ProtocolId::kEsp, 4, {{0xC1, 0, 0, 1}}}}}));
  seeds.emplace_back("our_liveness_then_timeouts",
                     Seed(0).Request(kAuthEx, Auth(false, false)).Action(5).Wait(15).Wait(40).Response({}).Action(4).Wait(600));
  seeds.emplace_back("refusals",
                     Seed(0).Request(kAuthEx, Auth(false, false)).Action(0).Response({Notify(NotifyType::kNoProposalChosen)}).Request(
                         kCreate, {Notify(NotifyType::kTemporaryFailure)}).Request(kCreate, NewChild({0xC1, 0, 0, 7}, true), 3));
  // The SA as initiator (variant bit 2): our IKE_AUTH responses, then our requests.
  auto auth_response = [](bool cp) {
    std::vector<Payload> p = {{PayloadType::kIdr, ParseIdentity("@bob")->ToPayload()},
                              {PayloadType::kAuth, AuthPayload{kAuthSharedKey, Bytes(32, 0)}}};
    if (cp) p.push_back({PayloadType::kCp, CpPayload{kCfgReply, {{kInternalIp4Address, {198, 18, 0, 9}}, {kInternalIp4Dns, {203, 0, 113, 53}}}}});
    p.push_back({PayloadType::kSa, SaPayload{Esp("aes128gcm16", {0xC1, 0, 0, 9})}});
    p.push_back(Ts(PayloadType::kTsi, cp ? "198.18.0.9/32" : "192.0.2.0/24"));
    p.push_back(Ts(PayloadType::kTsr, "198.51.100.0/24"));
    p.push_back(Notify(NotifyType::kMobikeSupported));
    return p;
  };
  seeds.emplace_back("initiator_auth", Seed(4).Response(auth_response(false)).Request(kInfo, {}));
  seeds.emplace_back("initiator_auth_then_peer_requests",
                     Seed(4).Response(auth_response(false)).Request(kCreate, NewChild({0xC1, 0, 0, 10}, true, "aes128gcm16", true)).Request(
                         kCreate, IkeRekey()).Request(kInfo, {{PayloadType::kDelete, DeletePayload{ProtocolId::kIke, 0, {}}}}));
  seeds.emplace_back("initiator_cp", Seed(5).Response(auth_response(true)).Action(0).Wait(30));
  seeds.emplace_back("initiator_auth_refused", Seed(6).Response({Notify(NotifyType::kAuthenticationFailed)}).Wait(30));
  for (const auto& [name, seed] : seeds) {
    if (!seed.Write(dir + "/" + name)) {
      std::perror((dir + "/" + name).c_str());
      return 1;
    }
  }
  std::printf("%zu seeds in %s\n", seeds.size(), dir.c_str());
  return 0;
}
