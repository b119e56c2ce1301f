// How the load generator's initiators authenticate (`spigot loadgen --psk`, `--cert`, `--key`,
// `--ca`, `--id`), checked once before any initiator starts.
//
// Each direction is chosen on its own:
//   - we prove ourselves with a signature when --cert and --key are given (RFC 7296 2.15,
//     RFC 7427), else with the PSK;
//   - we check the responder's certificate when --ca is given: it must chain to a CA in that
//     file (through the intermediates it sends) and hold the identity it claims in IDr, any
//     identity (as with the PSK: the load generator has no remote_id); else its PSK AUTH.
// --psk is required exactly when one direction uses it, and refused otherwise.
//
// EAP login (--eap-id, --eap-secret): instead of a certificate or the PSK, every initiator runs
// EAP-MSCHAPv2 as that one user; the responder's AUTH is checked by --ca or the PSK as above.
//
// Certificate login: every initiator signs with the same certificate and key and names itself
// with one identity the certificate holds: --id, or by default its subject DN. N initiators are
// then N IKE SAs of one user, so the responder must allow duplicate identities (spigot
// `unique = "no"`, strongSwan `unique = never`), or each login replaces the one before. (A
// responder checks the same chain N times; strongSwan caches the signature checks of a chain it
// has seen, spigot does not.) With a PSK, initiator i is the FQDN "<id_prefix>-<i>" as before.
#pragma once

#include <string>

#include "spigot/ike/ike_sa.h"

namespace spigot::loadgen {

struct AuthOptions {
  std::string psk;
  // PEM: the end-entity certificate first, intermediates after it (all sent in CERT payloads,
  // up to the first the responder's CERTREQ names); its unencrypted private key.
  std::string cert_file;
  std::string key_file;
  std::string ca_file;  // PEM CA certificate(s) the responder's certificate must chain to
  std::string id;       // with a certificate: the identity; "": the certificate's subject DN
  // EAP-MSCHAPv2 login (RFC 7296 2.16): every initiator logs in as this user with this password
  // (its IKE identity stays "<id_prefix>-<i>"); "%d" in it is replaced by the initiator's number,
  // so that each is its own user (a responder keys leases and uniqueness by the EAP user). The
  // responder proves itself by --ca or --psk.
  std::string eap_id;
  std::string eap_secret;
};

// Sets `c`'s local_auth, remote_auth, psk, local_credentials, trust and (with a certificate)
// local_id. Returns "" when the options are consistent and every file loads, else an error
// naming the option ("--key: ... does not belong to the certificate ...").
std::string ApplyAuth(const AuthOptions& o, ike::ConnectionParams& c);

}  // namespace spigot::loadgen
