#include "spigot/ike/proposal.h"

#include <algorithm>
#include <bitset>

#include "spigot/crypto/iana.h"

namespace spigot::ike {
namespace {

// IKEv2 transform IDs: crypto/iana.h.
using crypto::kAuthHmacSha1_96;
using crypto::kAuthHmacSha2_256_128;
using crypto::kAuthHmacSha2_384_192;
using crypto::kAuthHmacSha2_512_256;
using crypto::kDhGroupCurve25519;
using crypto::kDhGroupEcp256;
using crypto::kDhGroupEcp384;
using crypto::kDhGroupModp1024;
using crypto::kDhGroupModp2048;
using crypto::kDhGroupModp3072;
using crypto::kDhGroupModp4096;
using crypto::kEncr3des;
using crypto::kEncrAesCbc;
using crypto::kEncrAesGcm16;
using crypto::kEncrChaCha20Poly1305;
using crypto::kEsnNo;
using crypto::kEsnYes;
using crypto::kPrfHmacSha1;
using crypto::kPrfHmacSha2_256;
using crypto::kPrfHmacSha2_384;
using crypto::kPrfHmacSha2_512;

// The PRF of the same hash as an integrity algorithm, for IKE proposals that name none (as
// strongSwan does: "aes256-sha256-ecp256" means PRF_HMAC_SHA2_256). 0 if there is none.
std::uint16_t PrfForInteg(std::uint16_t integ) {
  switch (integ) {
    case kAuthHmacSha1_96: return kPrfHmacSha1;
    case kAuthHmacSha2_256_128: return kPrfHmacSha2_256;
    case kAuthHmacSha2_384_192: return kPrfHmacSha2_384;
    case kAuthHmacSha2_512_256: return kPrfHmacSha2_512;
    default: return 0;
  }
}

struct Keyword {
  std::string_view name;
  TransformType type;
  std::uint16_t id;
  std::uint16_t key_bits;
  bool aead = false;
  unsigned weak = 0;  // a WeakTransform bit
};

// strongSwan's keywords for the algorithms spigot implements.
constexpr Keyword kKeywords[] = {
    {"3des", TransformType::kEncr, kEncr3des, 0, false, kWeak3des},
    {"aes128", TransformType::kEncr, kEncrAesCbc, 128},
    {"aes256", TransformType::kEncr, kEncrAesCbc, 256},
    {"aes128gcm16", TransformType::kEncr, kEncrAesGcm16, 128, true},
    {"aes128gcm128", TransformType::kEncr, kEncrAesGcm16, 128, true},
    {"aes256gcm16", TransformType::kEncr, kEncrAesGcm16, 256, true},
    {"aes256gcm128", TransformType::kEncr, kEncrAesGcm16, 256, true},
    {"chacha20poly1305", TransformType::kEncr, kEncrChaCha20Poly1305, 0, true},
    {"sha1", TransformType::kInteg, kAuthHmacSha1_96, 0},
    {"sha", TransformType::kInteg, kAuthHmacSha1_96, 0},
    {"sha256", TransformType::kInteg, kAuthHmacSha2_256_128, 0},
    {"sha2_256", TransformType::kInteg, kAuthHmacSha2_256_128, 0},
    {"sha384", TransformType::kInteg, kAuthHmacSha2_384_192, 0},
    {"sha2_384", TransformType::kInteg, kAuthHmacSha2_384_192, 0},
    {"sha512", TransformType::kInteg, kAuthHmacSha2_512_256, 0},
    {"sha2_512", TransformType::kInteg, kAuthHmacSha2_512_256, 0},
    {"prfsha1", TransformType::kPrf, kPrfHmacSha1, 0},
    {"prfsha256", TransformType::kPrf, kPrfHmacSha2_256, 0},
    {"prfsha384", TransformType::kPrf, kPrfHmacSha2_384, 0},
    {"prfsha512", TransformType::kPrf, kPrfHmacSha2_512, 0},
    {"x25519", TransformType::kDh, kDhGroupCurve25519, 0},
    {"curve25519", TransformType::kDh, kDhGroupCurve25519, 0},
    {"ecp256", TransformType::kDh, kDhGroupEcp256, 0},
    {"ecp384", TransformType::kDh, kDhGroupEcp384, 0},
    {"modp2048", TransformType::kDh, kDhGroupModp2048, 0},
    {"modp3072", TransformType::kDh, kDhGroupModp3072, 0},
    {"modp4096", TransformType::kDh, kDhGroupModp4096, 0},
    {"modp1024", TransformType::kDh, kDhGroupModp1024, 0, false, kWeakModp1024},
    {"esn", TransformType::kEsn, kEsnYes, 0},
    {"noesn", TransformType::kEsn, kEsnNo, 0},
};

bool Has(const Proposal& p, TransformType t) {
  return std::any_of(p.transforms.begin(), p.transforms.end(),
                     [t](const Transform& x) { return x.type == t; });
}

const Transform* First(const Proposal& p, TransformType t) {
  for (const auto& x : p.transforms) {
    if (x.type == t) return &x;
  }
  return nullptr;
}

bool ParseOne(std::string_view text, ProtocolId protocol, unsigned allow_weak, Proposal& p,
              std::string& error) {
  p = Proposal{};
  p.protocol = protocol;
  bool aead = false, cbc = false;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    std::size_t dash = text.find('-', pos);
    if (dash == std::string_view::npos) dash = text.size();
    const std::string_view word = text.substr(pos, dash - pos);
    pos = dash + 1;
    const Keyword* kw = nullptr;
    for (const auto& k : kKeywords) {
      if (k.name == word) kw = &k;
    }
    if (kw == nullptr) {
      error = "unknown or unsupported algorithm '" + std::string(word) + "' in '" +
              std::string(text) + "'";
      return false;
    }
    if (protocol == ProtocolId::kIke && kw->type == TransformType::kEsn) {
      error = "'" + std::string(word) + "' applies to ESP proposals only";
      return false;
    }
    if (protocol == ProtocolId::kEsp && kw->type == TransformType::kPrf) {
      error = "'" + std::string(word) + "' applies to IKE proposals only";
      return false;
    }
    if (protocol == ProtocolId::kEsp && kw->type == TransformType::kInteg &&
        kw->id != kAuthHmacSha2_256_128 && kw->id != kAuthHmacSha1_96) {
      error = "'" + std::string(word) +
              "': ESP integrity supports sha256 (HMAC-SHA-256-128) and sha1 (HMAC-SHA1-96) only";
      return false;
    }
    if (protocol == ProtocolId::kEsp && kw->type == TransformType::kEncr && kw->id == kEncr3des) {
      error = "'3des' applies to IKE proposals only (spigot's ESP does not implement it)";
      return false;
    }
    if ((kw->weak & ~allow_weak) != 0) {
      error = "'" + std::string(word) + "' is a weak transform (RFC 8247) and refused unless " +
              "allow_weak names it (allow_weak = \"" + std::string(word) + "\")";
      return false;
    }
    if (kw->type == TransformType::kEncr) (kw->aead ? aead : cbc) = true;
    Transform t{kw->type, kw->id, kw->key_bits};
    if (std::find(p.transforms.begin(), p.transforms.end(), t) == p.transforms.end())
      p.transforms.push_back(t);
  }
  const std::string where = " in '" + std::string(text) + "'";
  if (!Has(p, TransformType::kEncr)) return error = "no encryption algorithm" + where, false;
  if (aead && cbc) return error = "AEAD and non-AEAD ciphers mixed" + where, false;
  if (aead && Has(p, TransformType::kInteg))
    return error = "an AEAD cipher takes no integrity algorithm" + where, false;
  if (cbc && !Has(p, TransformType::kInteg)) return error = "no integrity algorithm" + where, false;
  if (protocol == ProtocolId::kIke) {
    if (!Has(p, TransformType::kPrf)) {
      if (aead) return error = "an AEAD IKE proposal needs a PRF (e.g. prfsha256)" + where, false;
      for (const auto& t : std::vector<Transform>(p.transforms)) {
        if (t.type == TransformType::kInteg)
          p.transforms.push_back({TransformType::kPrf, PrfForInteg(t.id), 0});
      }
    }
    if (!Has(p, TransformType::kDh)) return error = "no key exchange group" + where, false;
  } else if (!Has(p, TransformType::kEsn)) {
    p.transforms.push_back({TransformType::kEsn, kEsnNo, 0});
  }
  // RFC 7296 3.3.6 lists transforms by type; keep the order stable within a type.
  std::stable_sort(p.transforms.begin(), p.transforms.end(),
                   [](const Transform& a, const Transform& b) { return a.type < b.type; });
  return true;
}

// Types a proposal lists, as a set. A peer's transform may carry any of the 256 type numbers
// (one octet on the wire), not only the five we know.
using TypeSet = std::bitset<256>;
TypeSet Types(const Proposal& p) {
  TypeSet types;
  for (const auto& t : p.transforms) types.set(static_cast<std::size_t>(t.type));
  return types;
}

}  // namespace

bool ParseProposals(std::string_view text, ProtocolId protocol, std::vector<Proposal>& out,
                    std::string& error, unsigned allow_weak) {
  out.clear();
  std::size_t pos = 0;
  while (pos <= text.size()) {
    std::size_t comma = text.find(',', pos);
    if (comma == std::string_view::npos) comma = text.size();
    std::string_view one = text.substr(pos, comma - pos);
    while (!one.empty() && one.front() == ' ') one.remove_prefix(1);
    while (!one.empty() && one.back() == ' ') one.remove_suffix(1);
    pos = comma + 1;
    if (one.empty()) {
      error = "empty proposal in '" + std::string(text) + "'";
      return false;
    }
    Proposal p;
    if (!ParseOne(one, protocol, allow_weak, p, error)) return false;
    p.number = static_cast<std::uint8_t>(out.size() + 1);
    out.push_back(std::move(p));
  }
  return true;
}

std::optional<Proposal> SelectProposal(const std::vector<Proposal>& ours,
                                       const std::vector<Proposal>& theirs) {
  for (const Proposal& mine : ours) {
    for (const Proposal& peer : theirs) {
      if (peer.protocol != mine.protocol) continue;
      // An ESP peer that omits ESN means "no ESN" (3.3.3 makes it mandatory; be lenient).
      TypeSet peer_types = Types(peer);
      if (mine.protocol == ProtocolId::kEsp && Has(mine, TransformType::kEsn))
        peer_types.set(static_cast<std::size_t>(TransformType::kEsn));
      if (peer_types != Types(mine)) continue;
      Proposal chosen;
      chosen.number = peer.number;
      chosen.protocol = peer.protocol;
      chosen.spi = peer.spi;
      bool ok = true;
      for (TransformType type : {TransformType::kEncr, TransformType::kPrf, TransformType::kInteg,
                                 TransformType::kDh, TransformType::kEsn}) {
        if (!Has(mine, type)) continue;
        const Transform* match = nullptr;
        for (const Transform& a : mine.transforms) {
          if (a.type != type || match != nullptr) continue;
          if (type == TransformType::kEsn && !Has(peer, TransformType::kEsn)) {
            if (a.id == kEsnNo) match = &a;
            continue;
          }
          for (const Transform& b : peer.transforms) {
            if (a == b) match = &a;
          }
        }
        if (match == nullptr) {
          ok = false;
          break;
        }
        chosen.transforms.push_back(*match);
      }
      if (ok) return chosen;
    }
  }
  return std::nullopt;
}

bool AcceptableChoice(const std::vector<Proposal>& offered, const Proposal& chosen) {
  for (const Proposal& p : offered) {
    if (p.protocol != chosen.protocol) continue;
    TypeSet seen;
    bool ok = true;
    for (const Transform& t : chosen.transforms) {
      const auto type = static_cast<std::size_t>(t.type);
      if (seen.test(type) ||
          std::find(p.transforms.begin(), p.transforms.end(), t) == p.transforms.end()) {
        ok = false;
        break;
      }
      seen.set(type);
    }
    if (ok && seen == Types(p)) return true;
  }
  return false;
}

std::optional<IkeAlgorithms> IkeAlgorithmsOf(const Proposal& p) {
  const Transform* encr = First(p, TransformType::kEncr);
  const Transform* prf = First(p, TransformType::kPrf);
  const Transform* integ = First(p, TransformType::kInteg);
  const Transform* dh = First(p, TransformType::kDh);
  if (encr == nullptr || prf == nullptr || dh == nullptr) return std::nullopt;
  const auto e = crypto::IkeEncrFromTransform(encr->id, encr->key_bits);
  const auto f = crypto::PrfAlgFromId(prf->id);
  if (!e || !f || !crypto::IsSupportedDhGroup(dh->id)) return std::nullopt;
  IkeAlgorithms a{*e, *f, std::nullopt, dh->id};
  const bool aead = crypto::IkeEncrInfoFor(*e).aead;
  if (aead != (integ == nullptr)) return std::nullopt;
  if (integ != nullptr) {
    a.integ = crypto::IntegAlgFromId(integ->id);
    if (!a.integ) return std::nullopt;
  }
  return a;
}

std::optional<ChildAlgorithms> ChildAlgorithmsOf(const Proposal& p) {
  const Transform* encr = First(p, TransformType::kEncr);
  const Transform* integ = First(p, TransformType::kInteg);
  const Transform* dh = First(p, TransformType::kDh);
  const Transform* esn = First(p, TransformType::kEsn);
  if (encr == nullptr) return std::nullopt;
  ChildAlgorithms a{};
  if (encr->id == kEncrAesGcm16 && integ == nullptr) {
    if (encr->key_bits == 128) a.suite = crypto::EspSuite::kAesGcm128;
    else if (encr->key_bits == 256) a.suite = crypto::EspSuite::kAesGcm256;
    else return std::nullopt;
  } else if (encr->id == kEncrChaCha20Poly1305 && integ == nullptr && encr->key_bits == 0) {
    a.suite = crypto::EspSuite::kChaCha20Poly1305;
  } else if (encr->id == kEncrAesCbc && integ != nullptr &&
             integ->id == kAuthHmacSha2_256_128) {
    if (encr->key_bits == 128) a.suite = crypto::EspSuite::kAesCbc128HmacSha256;
    else if (encr->key_bits == 256) a.suite = crypto::EspSuite::kAesCbc256HmacSha256;
    else return std::nullopt;
  } else if (encr->id == kEncrAesCbc && integ != nullptr && integ->id == kAuthHmacSha1_96) {
    if (encr->key_bits == 128) a.suite = crypto::EspSuite::kAesCbc128HmacSha1;
    else if (encr->key_bits == 256) a.suite = crypto::EspSuite::kAesCbc256HmacSha1;
    else return std::nullopt;
  } else {
    return std::nullopt;
  }
  a.esn = esn != nullptr && esn->id == kEsnYes;
  if (dh != nullptr) {
    if (!crypto::IsSupportedDhGroup(dh->id)) return std::nullopt;
    a.dh_group = dh->id;
  }
  return a;
}

unsigned WeakTransformsOf(const Proposal& p) {
  unsigned weak = 0;
  for (const Transform& t : p.transforms) {
    if (t.type == TransformType::kDh && t.id == kDhGroupModp1024) weak |= kWeakModp1024;
    if (t.type == TransformType::kEncr && t.id == kEncr3des) weak |= kWeak3des;
  }
  return weak;
}

unsigned WeakTransformsOf(const std::vector<Proposal>& proposals) {
  unsigned weak = 0;
  for (const Proposal& p : proposals) weak |= WeakTransformsOf(p);
  return weak;
}

std::string WeakTransformNames(unsigned weak) {
  std::string names;
  for (const auto& k : kKeywords) {
    if ((k.weak & weak) == 0) continue;
    if (!names.empty()) names += ", ";
    names += k.name;
  }
  return names;
}

bool ParseWeakTransforms(std::string_view text, unsigned& out, std::string& error) {
  out = 0;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    std::size_t comma = text.find(',', pos);
    if (comma == std::string_view::npos) comma = text.size();
    std::string_view one = text.substr(pos, comma - pos);
    while (!one.empty() && one.front() == ' ') one.remove_prefix(1);
    while (!one.empty() && one.back() == ' ') one.remove_suffix(1);
    pos = comma + 1;
    if (one.empty() && text.find_first_not_of(' ') == std::string_view::npos) return true;
    unsigned bit = 0;
    for (const auto& k : kKeywords) {
      if (k.weak != 0 && k.name == one) bit = k.weak;
    }
    if (bit == 0) {
      error = "'" + std::string(one) + "' is not a weak transform spigot can allow (" +
              WeakTransformNames(kWeakModp1024 | kWeak3des) + ")";
      return false;
    }
    out |= bit;
  }
  return true;
}

std::uint16_t PreferredDhGroup(const std::vector<Proposal>& proposals) {
  for (const Proposal& p : proposals) {
    if (const Transform* dh = First(p, TransformType::kDh)) return dh->id;
  }
  return 0;
}

bool OffersDhGroup(const std::vector<Proposal>& proposals, std::uint16_t group) {
  for (const Proposal& p : proposals) {
    for (const Transform& t : p.transforms) {
      if (t.type == TransformType::kDh && t.id == group) return true;
    }
  }
  return false;
}

namespace {
std::string DhName(std::uint16_t g) {
  switch (g) {
    case kDhGroupCurve25519: return "CURVE_25519";
    case kDhGroupEcp256: return "ECP_256";
    case kDhGroupEcp384: return "ECP_384";
    case kDhGroupModp1024: return "MODP_1024";
    case kDhGroupModp2048: return "MODP_2048";
    case kDhGroupModp3072: return "MODP_3072";
    case kDhGroupModp4096: return "MODP_4096";
    default: return "DH_" + std::to_string(g);
  }
}
std::string EncrName(crypto::IkeEncr e) {
  switch (e) {
    case crypto::IkeEncr::kAesCbc128: return "AES_CBC_128";
    case crypto::IkeEncr::kAesCbc256: return "AES_CBC_256";
    case crypto::IkeEncr::kAesGcm16_128: return "AES_GCM_16_128";
    case crypto::IkeEncr::kAesGcm16_256: return "AES_GCM_16_256";
    case crypto::IkeEncr::kChaCha20Poly1305: return "CHACHA20_POLY1305";
    case crypto::IkeEncr::k3desCbc: return "3DES_CBC";
  }
  return "?";
}
std::string IntegName(crypto::IntegAlg a) {
  switch (a) {
    case crypto::IntegAlg::kHmacSha1_96: return "HMAC_SHA1_96";
    case crypto::IntegAlg::kHmacSha256_128: return "HMAC_SHA2_256_128";
    case crypto::IntegAlg::kHmacSha384_192: return "HMAC_SHA2_384_192";
    case crypto::IntegAlg::kHmacSha512_256: return "HMAC_SHA2_512_256";
  }
  return "?";
}
std::string PrfName(crypto::PrfAlg a) {
  switch (a) {
    case crypto::PrfAlg::kHmacSha1: return "PRF_HMAC_SHA1";
    case crypto::PrfAlg::kHmacSha256: return "PRF_HMAC_SHA2_256";
    case crypto::PrfAlg::kHmacSha384: return "PRF_HMAC_SHA2_384";
    case crypto::PrfAlg::kHmacSha512: return "PRF_HMAC_SHA2_512";
  }
  return "?";
}
}  // namespace

std::string Describe(const IkeAlgorithms& a) {
  std::string s = EncrName(a.encr);
  if (a.integ) s += "/" + IntegName(*a.integ);
  s += "/" + PrfName(a.prf);
  return s + "/" + DhName(a.dh_group);
}

std::string Describe(const ChildAlgorithms& a) {
  std::string s;
  switch (a.suite) {
    case crypto::EspSuite::kAesGcm128: s = "AES_GCM_16_128"; break;
    case crypto::EspSuite::kAesGcm256: s = "AES_GCM_16_256"; break;
    case crypto::EspSuite::kChaCha20Poly1305: s = "CHACHA20_POLY1305"; break;
    case crypto::EspSuite::kAesCbc128HmacSha256: s = "AES_CBC_128/HMAC_SHA2_256_128"; break;
    case crypto::EspSuite::kAesCbc256HmacSha256: s = "AES_CBC_256/HMAC_SHA2_256_128"; break;
    case crypto::EspSuite::kAesCbc128HmacSha1: s = "AES_CBC_128/HMAC_SHA1_96"; break;
    case crypto::EspSuite::kAesCbc256HmacSha1: s = "AES_CBC_256/HMAC_SHA1_96"; break;
  }
  if (a.dh_group != 0) s += "/" + DhName(a.dh_group);
  return s + (a.esn ? "/ESN" : "");
}

}  // namespace spigot::ike
