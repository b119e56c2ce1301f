// The server side of EAP-TLS (RFC 5216; TLS 1.3 as RFC 9190 has it): what an IKE responder runs
// when its connection says remote_auth = "eap-tls". The TLS is OpenSSL 3's, over memory BIOs;
// this file only frames it in EAP and decides what a finished handshake means.
//
// A session goes Identity -> EAP-TLS Start -> the TLS handshake, one flight per EAP round trip
// (fragmented both ways, RFC 5216 2.1.5) -> the peer's empty response to our last flight ->
// EAP-Success, after which the MSK (RFC 5216 2.3; RFC 9190 2.3) keys both final AUTH payloads
// (RFC 7296 2.16).
//
// The user's certificate must chain to the connection's TrustStore (dates, CRLs, key usage: the
// same pki::TrustStore::Verify as IKE certificates) and hold the EAP identity the user gave
// (pki::CertHoldsName); the identity is user(), what leases and the back-off are keyed on.
//
// Bounds, each refusal a reason (without identities): a TLS message reassembled from fragments
// is at most max_message octets; a session takes at most max_rounds EAP responses. Anything
// malformed or unexpected, and a failed handshake, ends it with EAP-Failure at once (not after
// the TLS alert in a request of its own, as RFC 5216 2.1.3 has it: see RunHandshake).
// A session never reads outside the packet it is given, and wipes what it holds when destroyed.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "spigot/crypto/secure_bytes.h"
#include "spigot/eap/eap.h"
#include "spigot/pki/certificate.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
typedef struct bio_st BIO;

namespace spigot::eap {

// RFC 5216 3.1: Flags octet of an EAP-TLS packet (after the Type), then a 4-octet TLS Message
// Length if L is set.
inline constexpr std::uint8_t kTlsFlagLength = 0x80;    // L: TLS Message Length present
inline constexpr std::uint8_t kTlsFlagMore = 0x40;      // M: more fragments follow
inline constexpr std::uint8_t kTlsFlagStart = 0x20;     // S: EAP-TLS Start (requests only)
inline constexpr std::size_t kTlsLengthField = 4;

struct TlsServerOptions {
  // TLS octets per EAP-TLS request: 1000 + 4 (EAP header) + 1 (Type) + 1 (Flags) + 4 (TLS
  // Message Length) = 1010 octets of EAP, under strongSwan's fragment_size 1024; IKE
  // fragmentation (RFC 7383) carries the rest of the IKE message.
  std::size_t fragment_size = 1000;
  // A TLS message (one flight) reassembled from the peer's fragments: 64 KiB holds any sane
  // certificate chain (a flight is the client's certificates, key exchange and signature).
  std::size_t max_message = 64 * 1024;
  // EAP responses per session: a TLS 1.2 handshake needs 4 and a fragment one more each;
  // strongSwan stops at 32 messages (eap-tls max_message_count).
  unsigned max_rounds = 50;
  // The highest TLS version offered: TLS 1.2 (strongSwan 5.9.8's default tls.version_max), or
  // 1.3 (RFC 9190). Values are OpenSSL's TLS1_2_VERSION / TLS1_3_VERSION.
  int max_version = 0x0303;
};

// One connection's TLS configuration: the OpenSSL SSL_CTX with the gateway's certificate, its
// intermediates and key, and the trust store that checks users' certificates. Built once when
// the configuration is loaded and shared by every session of the connection (read-only after).
class TlsServerContext {
 public:
  // nullptr with the reason in *error if OpenSSL will not take the credentials.
  static std::shared_ptr<const TlsServerContext> Create(std::shared_ptr<const pki::LocalCredentials> credentials,
                                                        std::shared_ptr<const pki::TrustStore> trust,
                                                        const TlsServerOptions& options, std::string* error);
  ~TlsServerContext();
  TlsServerContext(const TlsServerContext&) = delete;
  TlsServerContext& operator=(const TlsServerContext&) = delete;

  const TlsServerOptions& options() const { return options_; }
  const pki::TrustStore& trust() const { return *trust_; }
  SSL_CTX* ssl_ctx() const { return ctx_; }

 private:
  TlsServerContext() = default;
  SSL_CTX* ctx_ = nullptr;
  std::shared_ptr<const pki::LocalCredentials> credentials_;  // the key and certificates ctx_ holds
  std::shared_ptr<const pki::TrustStore> trust_;
  TlsServerOptions options_;
};

class TlsServer final : public ServerSession {
 public:
  explicit TlsServer(std::shared_ptr<const TlsServerContext> context, Admission admit = nullptr);
  ~TlsServer() override;
  TlsServer(const TlsServer&) = delete;
  TlsServer& operator=(const TlsServer&) = delete;

  Method method() const override { return Method::kTls; }
  // The EAP identity, once given (the certificate was checked to hold it).
  const std::string& user() const override { return user_; }
  Bytes Start() override;
  // The synchronous step (TLS runs here); Receive() hands it to `done` before returning.
  Step Process(std::span<const std::uint8_t> packet);
  void Receive(std::span<const std::uint8_t> packet, Done done) override { done(Process(packet)); }
  // The peer's packet completes a TLS flight during the handshake: Process runs OpenSSL's
  // handshake step on it (the Admission was asked at the identity, before any TLS).
  bool PublicKeyStep(std::span<const std::uint8_t> packet) const override;
  const crypto::SecureBytes& msk() const override { return msk_; }
  // The TLS version the handshake settled on (OpenSSL's TLS1_2_VERSION...); 0 before.
  int tls_version() const;

  // For OpenSSL's certificate callback (eap_tls.cc): checks the peer's chain, records the result.
  bool CheckPeerChain(const pki::Certificate& leaf, const std::vector<pki::Certificate>& intermediates);

 private:
  enum class Phase : std::uint8_t {
    kIdentity,   // Identity requested
    kHandshake,  // Start sent; TLS flights go back and forth
    kFinishing,  // our last flight is out; the peer's empty response is due, then EAP-Success
    kDone,
  };
  Step Fail(std::string reason);
  Bytes Request(Bytes data);  // an EAP-TLS request with the next identifier
  Step OnIdentity(const Packet& p);
  Step OnTlsResponse(const Packet& p);
  Step RunHandshake();
  bool DeriveMsk();
  Step SendOutput(Phase next);  // what OpenSSL wrote, fragmented from the first fragment on
  Step NextFragment();

  std::shared_ptr<const TlsServerContext> context_;
  Admission admit_;
  SSL* ssl_ = nullptr;
  BIO* network_in_ = nullptr;   // owned by ssl_: what the peer sent, for OpenSSL to read
  BIO* network_out_ = nullptr;  // owned by ssl_: what OpenSSL wrote, for us to send
  Phase phase_ = Phase::kIdentity;
  Phase after_output_ = Phase::kHandshake;  // where the last fragment of out_ takes us
  std::uint8_t identifier_ = 0;
  unsigned rounds_ = 0;
  std::string user_;
  Bytes in_;                                   // a message being reassembled
  std::optional<std::size_t> in_declared_;     // its TLS Message Length
  Bytes out_;                                  // a flight being sent in fragments
  std::size_t out_sent_ = 0;
  bool cert_checked_ = false;                  // the peer's certificate was looked at
  std::optional<std::string> cert_problem_;    // and refused, why
  Bytes identity_dn_;                          // the EAP identity, if it came as a DER DN
  crypto::SecureBytes msk_;
};

}  // namespace spigot::eap
