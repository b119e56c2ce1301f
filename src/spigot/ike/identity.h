// IKE identities (RFC 7296 3.5) written as strongSwan writes them: "192.0.2.1", "2001:db8::1",
// "gw.example.org" or "@gw" (FQDN), "user@example.org" (RFC822), "@#0a0b" (KEY_ID, hex),
// "keyid:text" (KEY_ID, raw bytes), "C=CH, O=Example, CN=gw" (DER_ASN1_DN).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "spigot/ike/message.h"
#include "spigot/pki/certificate.h"

namespace spigot::ike {

struct Identity {
  IdType type = IdType::kFqdn;
  Bytes data;
  bool operator==(const Identity&) const = default;
  IdPayload ToPayload() const { return IdPayload{type, data}; }
  static Identity FromPayload(const IdPayload& p) { return Identity{p.type, p.data}; }
};

std::optional<Identity> ParseIdentity(std::string_view text);
std::string ToString(const Identity& id);

// Whether two identities are the same: DNs compared canonically (pki::SameDn: the same name in
// another string type is the same), everything else octet for octet.
bool SameIdentity(const Identity& a, const Identity& b);

// RFC 4945 3.1: whether `cert` holds identity `id`: an ID_DER_ASN1_DN must be its subject, an
// ID_FQDN / ID_RFC822_ADDR / ID_IPV4_ADDR / ID_IPV6_ADDR one of its subjectAltNames; other
// types never match.
bool CertificateHolds(const pki::Certificate& cert, const IdPayload& id);

}  // namespace spigot::ike
