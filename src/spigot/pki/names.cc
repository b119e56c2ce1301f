#include "spigot/pki/names.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <memory>

namespace spigot::pki {

namespace {

struct NameDeleter {
  void operator()(X509_NAME* n) const { X509_NAME_free(n); }
};
using NamePtr = std::unique_ptr<X509_NAME, NameDeleter>;

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// strongSwan's names for attributes OpenSSL spells otherwise.
int AttributeNid(std::string_view key) {
  const std::string k(Trim(key));
  if (k == "E" || k == "Email" || k == "email") return NID_pkcs9_emailAddress;
  if (k == "SN") return NID_surname;  // strongSwan: SN is the surname, OpenSSL's "SN" is too
  if (k == "serialNumber") return NID_serialNumber;
  const int nid = OBJ_txt2nid(k.c_str());
  return nid;
}

// Splits "C=CH, O=Ex\, Inc, CN=gw" into RDN texts (',' or '/' separate; "\x" escapes x).
std::vector<std::string> SplitRdns(std::string_view text) {
  std::vector<std::string> out;
  std::string cur;
  const char sep = text.find(',') == std::string_view::npos && !text.empty() && text.front() == '/' ? '/' : ',';
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\\' && i + 1 < text.size()) {
      cur.push_back(text[++i]);
    } else if (c == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  out.push_back(cur);
  // A leading '/' ("/C=CH/O=Example") leaves an empty first element.
  if (sep == '/' && !out.empty() && Trim(out.front()).empty()) out.erase(out.begin());
  return out;
}

std::optional<std::vector<std::pair<int, std::string>>> ParseRdns(std::string_view text, std::string* error) {
  std::vector<std::pair<int, std::string>> rdns;
  for (const std::string& rdn : SplitRdns(text)) {
    const std::size_t eq = rdn.find('=');
    if (eq == std::string::npos) {
      *error = "'" + rdn + "' is not an attribute=value pair";
      return std::nullopt;
    }
    const int nid = AttributeNid(std::string_view(rdn).substr(0, eq));
    const std::string value(Trim(std::string_view(rdn).substr(eq + 1)));
    if (nid == NID_undef) {
      *error = "unknown DN attribute '" + std::string(Trim(std::string_view(rdn).substr(0, eq))) + "'";
      return std::nullopt;
    }
    if (value.empty()) {
      *error = "empty value for " + std::string(OBJ_nid2sn(nid));
      return std::nullopt;
    }
    rdns.emplace_back(nid, value);
  }
  if (rdns.empty()) {
    *error = "empty DN";
    return std::nullopt;
  }
  return rdns;
}

NamePtr NameFromDer(std::span<const std::uint8_t> der) {
  const unsigned char* p = der.data();
  X509_NAME* n = d2i_X509_NAME(nullptr, &p, static_cast<long>(der.size()));
  if (n != nullptr && p != der.data() + der.size()) {
    X509_NAME_free(n);
    n = nullptr;
  }
  ERR_clear_error();
  return NamePtr(n);
}

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

}  // namespace

std::optional<Bytes> ParseDn(std::string_view text, std::string* error) {
  auto rdns = ParseRdns(text, error);
  if (!rdns) return std::nullopt;
  NamePtr name(X509_NAME_new());
  for (const auto& [nid, value] : *rdns) {
    if (X509_NAME_add_entry_by_NID(name.get(), nid, MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(value.data()),
                                   static_cast<int>(value.size()), -1, 0) != 1) {
      ERR_clear_error();
      *error = "OpenSSL refuses the value of " + std::string(OBJ_nid2sn(nid));
      return std::nullopt;
    }
  }
  unsigned char* out = nullptr;
  const int n = i2d_X509_NAME(name.get(), &out);
  if (n <= 0) {
    *error = "cannot encode the DN";
    return std::nullopt;
  }
  Bytes der(out, out + n);
  OPENSSL_free(out);
  return der;
}

std::string DnToString(std::span<const std::uint8_t> der) {
  NamePtr name = NameFromDer(der);
  if (!name) return "(malformed DN)";
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  X509_NAME_print_ex(bio.get(), name.get(), 0,
                     (ASN1_STRFLGS_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) | XN_FLAG_SEP_CPLUS_SPC | XN_FLAG_FN_SN);
  char* p = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &p);
  return std::string(p, static_cast<std::size_t>(len));
}

bool IsDerDn(std::span<const std::uint8_t> der) { return NameFromDer(der) != nullptr; }

bool LooksLikeDn(std::string_view text) {
  const std::size_t eq = text.find('=');
  if (eq == std::string_view::npos) return false;
  std::string_view key = Trim(text.substr(0, eq));
  if (!key.empty() && key.front() == '/') key.remove_prefix(1);
  return AttributeNid(key) != NID_undef;
}

std::optional<DnPattern> DnPattern::Parse(std::string_view text, std::string* error) {
  auto rdns = ParseRdns(text, error);
  if (!rdns) return std::nullopt;
  DnPattern p;
  p.rdns_ = std::move(*rdns);
  p.text_ = std::string(text);
  return p;
}

bool DnPattern::has_wildcards() const {
  return std::any_of(rdns_.begin(), rdns_.end(), [](const auto& r) { return r.second == "*"; });
}

bool DnPattern::Matches(std::span<const std::uint8_t> name_der) const {
  NamePtr name = NameFromDer(name_der);
  if (!name || X509_NAME_entry_count(name.get()) != static_cast<int>(rdns_.size())) return false;
  for (int i = 0; i < static_cast<int>(rdns_.size()); ++i) {
    const X509_NAME_ENTRY* e = X509_NAME_get_entry(name.get(), i);
    const auto& [nid, value] = rdns_[static_cast<std::size_t>(i)];
    if (OBJ_obj2nid(X509_NAME_ENTRY_get_object(e)) != nid) return false;
    if (value == "*") continue;
    unsigned char* utf8 = nullptr;
    const int len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(e));
    if (len < 0) return false;
    const bool same = Lower(std::string_view(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(len))) == Lower(value);
    OPENSSL_free(utf8);
    if (!same) return false;
  }
  return true;
}

bool CertHasDns(const Certificate& cert, std::string_view fqdn) {
  return X509_check_host(cert.get(), fqdn.data(), fqdn.size(),
                         X509_CHECK_FLAG_NO_WILDCARDS | X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, nullptr) == 1;
}

bool CertHasEmail(const Certificate& cert, std::string_view email) {
  return X509_check_email(cert.get(), email.data(), email.size(), X509_CHECK_FLAG_NEVER_CHECK_SUBJECT) == 1;
}

bool CertHasIp(const Certificate& cert, std::span<const std::uint8_t> address) {
  if (address.size() != 4 && address.size() != 16) return false;
  return X509_check_ip(cert.get(), address.data(), address.size(), 0) == 1;
}

bool CertSubjectIs(const Certificate& cert, std::span<const std::uint8_t> der) {
  NamePtr name = NameFromDer(der);
  return name && X509_NAME_cmp(X509_get_subject_name(cert.get()), name.get()) == 0;
}

bool CertHoldsName(const Certificate& cert, std::string_view name) {
  if (name.empty()) return false;
  if (LooksLikeDn(name)) {
    std::string error;
    const auto der = ParseDn(name, &error);
    return der && CertSubjectIs(cert, *der);
  }
  const std::string text(name);  // inet_pton wants a terminated string
  std::uint8_t address[16];
  if (inet_pton(AF_INET, text.c_str(), address) == 1) return CertHasIp(cert, std::span<const std::uint8_t>(address, 4));
  if (inet_pton(AF_INET6, text.c_str(), address) == 1) return CertHasIp(cert, std::span<const std::uint8_t>(address, 16));
  return CertHasEmail(cert, name) || CertHasDns(cert, name);
}

bool SameDn(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  NamePtr x = NameFromDer(a), y = NameFromDer(b);
  return x && y && X509_NAME_cmp(x.get(), y.get()) == 0;
}

}  // namespace spigot::pki
