// IKE identities (RFC 7296 3.5) written as strongSwan writes them: "192.0.2.1", "2001:db8::1",
// "gw.example.org" or "@gw" (FQDN), "user@example.org" (RFC822), "@#0a0b" (KEY_ID, hex),
// "keyid:text" (KEY_ID, raw bytes), "C=CH, O=Example, CN=gw" (DER_ASN1_DN).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "spigot/ike/message.h"

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

}  // namespace spigot::ike
