#include "spigot/loadgen/auth.h"

#include "spigot/ike/identity.h"

namespace spigot::loadgen {

std::string ApplyAuth(const AuthOptions& o, ike::ConnectionParams& c) {
  const bool cert = !o.cert_file.empty() || !o.key_file.empty();
  if (cert && o.cert_file.empty()) return "--key needs --cert (the certificate it belongs to)";
  if (cert && o.key_file.empty()) return "--cert needs --key (its private key)";
  if (!cert && !o.id.empty()) return "--id is the identity of --cert (PSK initiators are named by --id-prefix)";
  const bool eap = !o.eap_id.empty() || !o.eap_secret.empty();
  if (eap && (o.eap_id.empty() || o.eap_secret.empty())) return "--eap-id and --eap-secret go together";
  if (eap && cert) return "--eap-id: log in with EAP or with --cert, not both";
  const bool check_cert = !o.ca_file.empty();
  const bool psk_used = (!cert && !eap) || !check_cert;
  if (psk_used && o.psk.empty()) {
    return cert || eap ? "--psk is required to check the responder (or give --ca to check its certificate)"
                       : "--psk is required (or authenticate with --cert and --key)";
  }
  if (!psk_used && !o.psk.empty()) {
    return std::string("--psk is not used: ") + (eap ? "--eap-id" : "--cert") + " and --ca authenticate both sides";
  }

  c.local_auth = cert ? ike::AuthMethod::kPubkey : eap ? ike::AuthMethod::kEap : ike::AuthMethod::kPsk;
  if (eap) {
    c.eap_id = o.eap_id;
    c.eap_secret = crypto::SecureBytes::FromText(o.eap_secret);
  }
  c.remote_auth = check_cert ? ike::AuthMethod::kPubkey : ike::AuthMethod::kPsk;
  c.psk = crypto::SecureBytes::FromText(o.psk);
  std::string error;
  if (check_cert) {
    c.trust = pki::TrustStore::Load({o.ca_file}, {}, &error);
    if (!c.trust) return "--ca: " + error;
  }
  if (!cert) return "";
  auto chain = pki::LoadCertificates(o.cert_file, &error);
  if (chain.empty()) return "--cert: " + error;
  const pki::Certificate leaf = chain.front();
  if (leaf.IsCa()) return "--cert: " + leaf.Subject() + " is a CA certificate; the end entity comes first";
  auto key = pki::PrivateKey::Load(o.key_file, &error);
  if (!key) return "--key: " + error;
  if (!key->Matches(leaf)) return "--key: " + o.key_file + " does not belong to the certificate " + leaf.Subject();
  c.local_credentials = std::make_shared<const pki::LocalCredentials>(
      pki::LocalCredentials{leaf, std::vector<pki::Certificate>(chain.begin() + 1, chain.end()), std::move(*key)});
  if (o.id.empty()) {
    c.local_id = ike::Identity{ike::IdType::kDerAsn1Dn, leaf.SubjectDer()};
    return "";
  }
  const auto id = ike::ParseIdentity(o.id);
  if (!id) return "--id: '" + o.id + "' is not an identity";
  if (!ike::CertificateHolds(leaf, id->ToPayload())) {
    return "--id: " + ike::ToString(*id) + " is not in the certificate " + leaf.Subject() +
           " (its subject DN or a subjectAltName)";
  }
  c.local_id = *id;
  return "";
}

}  // namespace spigot::loadgen
