#include "spigot/ike/identity.h"

#include <arpa/inet.h>

#include "spigot/pki/names.h"

namespace spigot::ike {

std::optional<Identity> ParseIdentity(std::string_view text) {
  if (text.empty()) return std::nullopt;
  const std::string s(text);
  Identity id;
  std::uint8_t addr[16];
  if (inet_pton(AF_INET, s.c_str(), addr) == 1) {
    id.type = IdType::kIpv4;
    id.data.assign(addr, addr + 4);
  } else if (inet_pton(AF_INET6, s.c_str(), addr) == 1) {
    id.type = IdType::kIpv6;
    id.data.assign(addr, addr + 16);
  } else if (pki::LooksLikeDn(s)) {
    std::string error;
    auto der = pki::ParseDn(s, &error);
    if (!der) return std::nullopt;
    id.type = IdType::kDerAsn1Dn;
    id.data = std::move(*der);
  } else if (s.rfind("@#", 0) == 0) {
    id.type = IdType::kKeyId;
    const std::string hex = s.substr(2);
    if (hex.empty() || hex.size() % 2 != 0) return std::nullopt;
    for (std::size_t i = 0; i < hex.size(); i += 2) {
      const std::string byte = hex.substr(i, 2);
      if (byte.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) return std::nullopt;
      id.data.push_back(static_cast<std::uint8_t>(std::stoi(byte, nullptr, 16)));
    }
  } else if (s.rfind("keyid:", 0) == 0 && s.size() > 6) {
    id.type = IdType::kKeyId;
    id.data.assign(s.begin() + 6, s.end());
  } else if (s[0] == '@') {
    if (s.size() == 1) return std::nullopt;
    id.type = IdType::kFqdn;
    id.data.assign(s.begin() + 1, s.end());
  } else if (s.find('@') != std::string::npos) {
    id.type = IdType::kRfc822;
    id.data.assign(s.begin(), s.end());
  } else {
    id.type = IdType::kFqdn;
    id.data.assign(s.begin(), s.end());
  }
  return id;
}

std::string ToString(const Identity& id) {
  char buf[INET6_ADDRSTRLEN];
  switch (id.type) {
    case IdType::kIpv4:
      if (id.data.size() == 4 && inet_ntop(AF_INET, id.data.data(), buf, sizeof(buf))) return buf;
      break;
    case IdType::kIpv6:
      if (id.data.size() == 16 && inet_ntop(AF_INET6, id.data.data(), buf, sizeof(buf))) return buf;
      break;
    case IdType::kFqdn:
    case IdType::kRfc822:
      return std::string(id.data.begin(), id.data.end());
    case IdType::kDerAsn1Dn:
      return pki::DnToString(id.data);
    default:
      break;
  }
  std::string hex = "@#";
  static const char* kDigits = "0123456789abcdef";
  for (std::uint8_t b : id.data) {
    hex.push_back(kDigits[b >> 4]);
    hex.push_back(kDigits[b & 15]);
  }
  return hex;
}

bool SameIdentity(const Identity& a, const Identity& b) {
  if (a.type != b.type) return false;
  if (a.type == IdType::kDerAsn1Dn && a.data != b.data) return pki::SameDn(a.data, b.data);
  return a.data == b.data;
}

bool CertificateHolds(const pki::Certificate& cert, const IdPayload& id) {
  const std::string_view text(reinterpret_cast<const char*>(id.data.data()), id.data.size());
  switch (id.type) {
    case IdType::kDerAsn1Dn: return pki::CertSubjectIs(cert, id.data);
    case IdType::kFqdn: return pki::CertHasDns(cert, text);
    case IdType::kRfc822: return pki::CertHasEmail(cert, text);
    case IdType::kIpv4:
    case IdType::kIpv6: return pki::CertHasIp(cert, id.data);
    default: return false;
  }
}

}  // namespace spigot::ike
