// Distinguished names and subjectAltNames, for binding an IKE identity to a certificate
// (RFC 7296 3.5; RFC 4945 3.1, 5.1.3.6): an ID_DER_ASN1_DN must be the certificate's subject,
// an ID_FQDN / ID_RFC822_ADDR / ID_IPV4_ADDR / ID_IPV6_ADDR one of its subjectAltNames.
// Through OpenSSL's X509_NAME and X509_check_* functions.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "spigot/pki/certificate.h"

namespace spigot::pki {

// "C=CH, O=Example, CN=gw.example.org" (strongSwan's notation: RDNs in order, separated by ','
// or '/', short or long attribute names, "\," escapes) as the DER of an X.509 Name; nullopt
// with the reason in *error.
std::optional<Bytes> ParseDn(std::string_view text, std::string* error);
// The DER of a Name back as text; "(malformed DN)" if it does not parse.
std::string DnToString(std::span<const std::uint8_t> der);
// Whether text looks like a DN ("X=..." with a known attribute name before the first '=').
bool LooksLikeDn(std::string_view text);
// Whether `der` is exactly one DER-encoded X.509 Name (as an ID_DER_ASN1_DN carries it).
bool IsDerDn(std::span<const std::uint8_t> der);

// A DN in which a value may be "*": matches a Name with the same attributes in the same order
// whose values equal the pattern's, "*" matching any value (strongSwan's wildcard DNs, e.g.
// "C=CH, O=Example, CN=*").
class DnPattern {
 public:
  static std::optional<DnPattern> Parse(std::string_view text, std::string* error);
  bool Matches(std::span<const std::uint8_t> name_der) const;
  bool has_wildcards() const;
  const std::string& text() const { return text_; }

 private:
  std::vector<std::pair<int, std::string>> rdns_;  // (NID, value; "*" for any)
  std::string text_;
};

// The subjectAltName checks (exact, case-insensitive for names; no wildcard certificates).
bool CertHasDns(const Certificate& cert, std::string_view fqdn);
bool CertHasEmail(const Certificate& cert, std::string_view email);
bool CertHasIp(const Certificate& cert, std::span<const std::uint8_t> address);  // 4 or 16 octets
// The certificate's subject equals the Name `der` (X509_NAME_cmp: canonical comparison).
bool CertSubjectIs(const Certificate& cert, std::span<const std::uint8_t> der);
// Whether `cert` holds a name given as text, as an EAP identity names its user (EAP-TLS, RFC
// 5216 5.2): a DN ("C=CH, O=Example, CN=alice") must be its subject; an IPv4 or IPv6 address
// one of its iPAddress subjectAltNames; anything else one of its rfc822Name or dNSName
// subjectAltNames (exact, case-insensitive, no wildcards).
bool CertHoldsName(const Certificate& cert, std::string_view name);
// Two Names' DER encodings name the same DN, compared canonically as X509_NAME_cmp does (string
// types, case and spacing aside: `pki` writes PrintableString where ParseDn writes UTF8String).
// False if either does not parse.
bool SameDn(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b);

}  // namespace spigot::pki
