#include "spigot/eap/eap_tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>

#include "spigot/crypto/random.h"
#include "spigot/pki/names.h"
#include "spigot/wire/byte_reader.h"
#include "spigot/wire/byte_writer.h"

namespace spigot::eap {

namespace {

constexpr std::size_t kMaxIdentity = 255;
// Bounds the options may not exceed: a BIO_write takes an int, an EAP packet 65535 octets.
constexpr std::size_t kMaxMessageLimit = 16 * 1024 * 1024;
constexpr std::size_t kMaxFragmentLimit = 65535 - 4 - 1 - 1 - kTlsLengthField;

// RFC 5216 2.3: Key_Material = TLS-PRF-128(master secret, "client EAP encryption",
// client.random || server.random), MSK = Key_Material(0, 63); OpenSSL's exporter with no context
// computes exactly that PRF for TLS 1.2. RFC 9190 2.3 (TLS 1.3): Key_Material =
// TLS-Exporter("EXPORTER_EAP_TLS_Key_Material", Type-Code 0x0D, 128). The TLS 1.3 exporter
// mixes the length in, so 128 octets are asked for in both cases and the first 64 kept.
constexpr char kTls12Label[] = "client EAP encryption";
constexpr char kTls13Label[] = "EXPORTER_EAP_TLS_Key_Material";
constexpr std::uint8_t kTls13Context[] = {static_cast<std::uint8_t>(Type::kTls)};
constexpr std::size_t kKeyMaterial = 128;
constexpr std::size_t kMsk = 64;
// RFC 9190 2.5: the server's commitment that no more handshake messages follow.
constexpr std::uint8_t kTls13Commitment = 0x00;

std::string OpenSslReason() {
  unsigned long last = 0;
  while (const unsigned long e = ERR_get_error()) last = e;
  const char* r = last != 0 ? ERR_reason_error_string(last) : nullptr;
  return r != nullptr ? r : "unknown error";
}

// TrustStore::Verify names the certificate it refused in parentheses at the end; that name is
// the user's (often the EAP identity itself), which a reason must not carry.
std::string WithoutSubject(std::string reason) {
  const auto open = reason.find(" (");
  if (open != std::string::npos && !reason.empty() && reason.back() == ')') reason.resize(open);
  return reason;
}

std::optional<pki::Certificate> ToCertificate(X509* x) {
  unsigned char* der = nullptr;
  const int n = i2d_X509(x, &der);
  if (n <= 0) return std::nullopt;
  std::string error;
  auto cert = pki::Certificate::FromDer(std::span<const std::uint8_t>(der, static_cast<std::size_t>(n)), &error);
  OPENSSL_free(der);
  return cert;
}

// OpenSSL's whole certificate check, replaced (SSL_CTX_set_cert_verify_callback): the peer's
// chain goes to the connection's pki::TrustStore::Verify, the one validation IKE certificates
// get too (chain, dates, CRLs, key usage, EKU), and its leaf must hold the EAP identity. Done
// inside the handshake rather than after it, so a refused certificate ends the handshake with
// an alert before we send our Finished, and no second validation policy (OpenSSL's "SSL client"
// purpose) applies.
int VerifyPeerChain(X509_STORE_CTX* store_ctx, void* /*arg*/) {
  auto* ssl = static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store_ctx, SSL_get_ex_data_X509_STORE_CTX_idx()));
  auto* session = ssl != nullptr ? static_cast<TlsServer*>(SSL_get_app_data(ssl)) : nullptr;
  X509* leaf_x509 = X509_STORE_CTX_get0_cert(store_ctx);
  if (session == nullptr || leaf_x509 == nullptr) return 0;
  auto leaf = ToCertificate(leaf_x509);
  std::vector<pki::Certificate> intermediates;
  if (STACK_OF(X509)* chain = X509_STORE_CTX_get0_untrusted(store_ctx)) {
    for (int i = 0; i < sk_X509_num(chain); ++i) {
      X509* x = sk_X509_value(chain, i);
      if (x == leaf_x509) continue;
      if (auto c = ToCertificate(x)) intermediates.push_back(std::move(*c));
    }
  }
  if (!leaf || !session->CheckPeerChain(*leaf, intermediates)) {
    X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_CERT_REJECTED);  // alert bad_certificate
    return 0;
  }
  return 1;
}

}  // namespace

// ---------------------------------------------------------------- the connection's context

std::shared_ptr<const TlsServerContext> TlsServerContext::Create(
    std::shared_ptr<const pki::LocalCredentials> credentials, std::shared_ptr<const pki::TrustStore> trust,
    const TlsServerOptions& options, std::string* error) {
  if (!credentials) {
    *error = "EAP-TLS needs the gateway's certificate and key (local_cert, local_key)";
    return nullptr;
  }
  if (!trust) {
    *error = "EAP-TLS needs the CAs of the users' certificates (ca_certs)";
    return nullptr;
  }
  if (options.fragment_size == 0 || options.fragment_size > kMaxFragmentLimit || options.max_message == 0 ||
      options.max_message > kMaxMessageLimit || options.max_rounds == 0 ||
      (options.max_version != TLS1_2_VERSION && options.max_version != TLS1_3_VERSION)) {
    *error = "EAP-TLS options out of range";
    return nullptr;
  }
  std::shared_ptr<TlsServerContext> c(new TlsServerContext);
  c->credentials_ = std::move(credentials);
  c->trust_ = std::move(trust);
  c->options_ = options;
  ERR_clear_error();
  c->ctx_ = SSL_CTX_new(TLS_server_method());
  SSL_CTX* ctx = c->ctx_;
  const auto fail = [&](const std::string& what) {
    *error = what + ": " + OpenSslReason();
    return nullptr;
  };
  if (ctx == nullptr) return fail("cannot make an OpenSSL TLS context");
  // TLS 1.2 at least (RFC 9190 5.1 deprecates older versions for EAP-TLS).
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, options.max_version) != 1) {
    return fail("cannot set the TLS versions");
  }
  // No resumption (it would skip the certificate check; RFC 9190 5.7 lets a server refuse it):
  // no session cache, no tickets. No renegotiation, no compression.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  const pki::LocalCredentials& cred = *c->credentials_;
  if (SSL_CTX_use_certificate(ctx, cred.cert.get()) != 1) return fail("OpenSSL refused the gateway certificate");
  for (const auto& i : cred.intermediates) {
    if (SSL_CTX_add1_chain_cert(ctx, i.get()) != 1) return fail("OpenSSL refused an intermediate certificate");
  }
  if (SSL_CTX_use_PrivateKey(ctx, cred.key.get()) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
    return fail("OpenSSL refused the gateway key");
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT | SSL_VERIFY_CLIENT_ONCE, nullptr);
  SSL_CTX_set_cert_verify_callback(ctx, VerifyPeerChain, nullptr);
  // CertificateRequest names the CAs we take, so a client with several certificates picks one.
  for (const auto& ca : c->trust_->cas()) {
    if (SSL_CTX_add_client_CA(ctx, ca.get()) != 1) return fail("cannot name a CA in the certificate request");
  }
  ERR_clear_error();
  return c;
}

TlsServerContext::~TlsServerContext() { SSL_CTX_free(ctx_); }

// ---------------------------------------------------------------- one session

TlsServer::TlsServer(std::shared_ptr<const TlsServerContext> context, Admission admit)
    : context_(std::move(context)), admit_(std::move(admit)) {
  crypto::RandomBytes(std::span<std::uint8_t>(&identifier_, 1));
}

TlsServer::~TlsServer() {
  SSL_free(ssl_);  // and both BIOs; OpenSSL cleanses the handshake's secrets
  crypto::Wipe(in_.data(), in_.size());
  crypto::Wipe(out_.data(), out_.size());
}

int TlsServer::tls_version() const { return ssl_ != nullptr && SSL_is_init_finished(ssl_) ? SSL_version(ssl_) : 0; }

Bytes TlsServer::Request(Bytes data) {
  return Serialize(Packet{Code::kRequest, ++identifier_, static_cast<std::uint8_t>(Type::kTls), std::move(data)});
}

Bytes TlsServer::Start() {
  phase_ = Phase::kIdentity;
  return Serialize(Packet{Code::kRequest, ++identifier_, static_cast<std::uint8_t>(Type::kIdentity), {}});
}

TlsServer::Step TlsServer::Fail(std::string reason) {
  phase_ = Phase::kDone;
  Step step{Status::kFailure, Serialize(Packet{Code::kFailure, identifier_, std::nullopt, {}}), std::move(reason)};
  step.password_checked = cert_checked_;  // a refused or accepted certificate is a login attempt
  return step;
}

bool TlsServer::CheckPeerChain(const pki::Certificate& leaf, const std::vector<pki::Certificate>& intermediates) {
  cert_checked_ = true;
  if (auto why = context_->trust().Verify(leaf, intermediates)) {
    cert_problem_ = "user certificate refused: " + WithoutSubject(*why);
    return false;
  }
  if (identity_dn_.empty() ? !pki::CertHoldsName(leaf, user_) : !pki::CertSubjectIs(leaf, identity_dn_)) {
    cert_problem_ = "the user certificate does not hold the EAP identity";
    return false;
  }
  return true;
}

TlsServer::Step TlsServer::Process(std::span<const std::uint8_t> bytes) {
  if (phase_ == Phase::kDone) return Fail("EAP message after the method ended");
  if (++rounds_ > context_->options().max_rounds) {
    return Fail("more than " + std::to_string(context_->options().max_rounds) + " EAP-TLS rounds");
  }
  auto p = Parse(bytes);
  if (!p) return Fail("malformed EAP packet");
  if (p->code != Code::kResponse) return Fail("EAP code " + std::to_string(int(p->code)) + " where a response is due");
  if (p->identifier != identifier_) return Fail("EAP response to another request (identifier)");
  if (phase_ == Phase::kIdentity) return OnIdentity(*p);
  if (p->type == std::uint8_t(Type::kNak)) return Fail("the peer refused EAP-TLS (Nak)");
  if (p->type != std::uint8_t(Type::kTls) || p->data.empty()) return Fail("not an EAP-TLS response");
  return OnTlsResponse(*p);
}

bool TlsServer::PublicKeyStep(std::span<const std::uint8_t> bytes) const {
  // What OnTlsResponse would pass to RunHandshake: during the handshake, not while our own
  // flight goes out in fragments, a response whose M flag says the peer's flight is complete.
  // A packet Process would refuse may say true too: it then fails at once, wherever it runs.
  if (phase_ != Phase::kHandshake || out_sent_ < out_.size()) return false;
  const auto p = Parse(bytes);
  if (!p || p->code != Code::kResponse || p->type != std::uint8_t(Type::kTls) || p->data.empty()) return false;
  return (p->data[0] & kTlsFlagMore) == 0;
}

TlsServer::Step TlsServer::OnIdentity(const Packet& p) {
  if (p.type != std::uint8_t(Type::kIdentity)) return Fail("no EAP-Identity response");
  if (p.data.empty() || p.data.size() > kMaxIdentity) return Fail("EAP identity empty or too long");
  // strongSwan sends a DN identity (eap_id = "C=CH, O=Example, CN=bob") as its DER encoding:
  // it must then be the certificate's subject, and the user is its text.
  if (p.data.front() == 0x30 && pki::IsDerDn(p.data)) {
    identity_dn_ = p.data;
    user_ = pki::DnToString(p.data);
  } else {
    user_.assign(p.data.begin(), p.data.end());
  }
  // The back-off is asked before any TLS work: a user in a back-off costs us no handshake.
  if (admit_) {
    if (auto refusal = admit_(user_)) {
      Step step = Fail(*refusal);
      step.throttled = true;
      return step;
    }
  }
  ERR_clear_error();
  ssl_ = SSL_new(context_->ssl_ctx());
  network_in_ = BIO_new(BIO_s_mem());
  network_out_ = BIO_new(BIO_s_mem());
  if (ssl_ == nullptr || network_in_ == nullptr || network_out_ == nullptr) {
    BIO_free(network_in_);
    BIO_free(network_out_);
    network_in_ = network_out_ = nullptr;
    return Fail("cannot start a TLS session: " + OpenSslReason());
  }
  // An empty BIO means "wait for the next EAP message", not end of stream.
  BIO_set_mem_eof_return(network_in_, -1);
  BIO_set_mem_eof_return(network_out_, -1);
  SSL_set_bio(ssl_, network_in_, network_out_);
  SSL_set_app_data(ssl_, this);
  SSL_set_accept_state(ssl_);
  phase_ = Phase::kHandshake;
  return {Status::kContinue, Request(Bytes{kTlsFlagStart}), {}};
}

TlsServer::Step TlsServer::OnTlsResponse(const Packet& p) {
  const TlsServerOptions& o = context_->options();
  wire::ByteReader r(p.data);
  std::uint8_t flags = 0;
  r.ReadU8(flags);  // Process() saw that data is not empty
  std::optional<std::size_t> declared;
  if (flags & kTlsFlagLength) {
    std::uint32_t length = 0;
    if (!r.ReadU32(length)) return Fail("EAP-TLS response shorter than its TLS Message Length field");
    declared = length;
  }
  const std::span<const std::uint8_t> tls = r.ReadRemaining();
  const bool more = (flags & kTlsFlagMore) != 0;

  // Sending a flight in fragments: each response must be the empty acknowledgement (2.1.5).
  if (out_sent_ < out_.size()) {
    if (!tls.empty() || more) return Fail("EAP-TLS data where the acknowledgement of our fragment is due");
    return NextFragment();
  }
  switch (phase_) {
    case Phase::kFinishing: {
      // 2.1.1 (RFC 9190 2.1.1): the peer acknowledges our last flight with an empty response.
      if (!tls.empty() || more) return Fail("TLS data from the peer after the handshake ended (an alert?)");
      phase_ = Phase::kDone;
      Step step{Status::kSuccess, Serialize(Packet{Code::kSuccess, identifier_, std::nullopt, {}}), {}};
      step.password_checked = cert_checked_;
      return step;
    }
    case Phase::kHandshake: break;
    case Phase::kIdentity:
    case Phase::kDone: return Fail("EAP-TLS response out of order");
  }

  // Reassembly of the peer's flight. The first fragment's TLS Message Length bounds it; later
  // fragments may repeat it (it is ignored there).
  if (tls.empty()) return Fail("an empty EAP-TLS response where TLS data is due");
  if (in_.empty() && declared) {
    if (*declared > o.max_message) {
      return Fail("the peer's TLS message is " + std::to_string(*declared) + " octets, over the limit of " +
                  std::to_string(o.max_message));
    }
    in_declared_ = declared;
  }
  if (in_.size() + tls.size() > o.max_message) {
    return Fail("the peer's TLS message is over the limit of " + std::to_string(o.max_message) + " octets");
  }
  if (in_declared_ && in_.size() + tls.size() > *in_declared_) return Fail("more TLS data than the TLS Message Length");
  in_.insert(in_.end(), tls.begin(), tls.end());
  if (more) return {Status::kContinue, Request(Bytes{0}), {}};  // the acknowledgement: no flags, no data
  if (in_declared_ && in_.size() != *in_declared_) return Fail("less TLS data than the TLS Message Length");
  const int written = BIO_write(network_in_, in_.data(), static_cast<int>(in_.size()));
  crypto::Wipe(in_.data(), in_.size());
  const std::size_t expected = in_.size();
  in_.clear();
  in_declared_.reset();
  if (written < 0 || static_cast<std::size_t>(written) != expected) return Fail("cannot pass TLS data to OpenSSL");
  return RunHandshake();
}

TlsServer::Step TlsServer::RunHandshake() {
  ERR_clear_error();
  const int r = SSL_do_handshake(ssl_);
  if (r == 1) {
    // SSL_VERIFY_FAIL_IF_NO_PEER_CERT: a finished handshake had a certificate, and
    // VerifyPeerChain took it; checked again, as the MSK must never come without it.
    if (!cert_checked_ || cert_problem_ || SSL_get0_peer_certificate(ssl_) == nullptr) {
      return Fail("the TLS handshake ended without an accepted user certificate");
    }
    if (SSL_version(ssl_) == TLS1_3_VERSION) {
      if (SSL_write(ssl_, &kTls13Commitment, 1) != 1) return Fail("cannot write the TLS 1.3 commitment: " + OpenSslReason());
    }
    if (!DeriveMsk()) return Fail("cannot export the EAP-TLS key material: " + OpenSslReason());
    return SendOutput(Phase::kFinishing);
  }
  const int error = SSL_get_error(ssl_, r);
  if (error == SSL_ERROR_WANT_READ) {
    // A whole flight came in, so OpenSSL must answer; if not, the peer's flight was cut short.
    if (BIO_ctrl_pending(network_out_) == 0) return Fail("the peer's TLS flight ends inside a message");
    return SendOutput(Phase::kHandshake);
  }
  // RFC 5216 2.1.3 would have our TLS alert go out in an EAP-TLS request first and the
  // EAP-Failure after the peer's answer. strongSwan's peer does not answer it: it ends the IKE
  // SA (AUTHENTICATION_FAILED in an INFORMATIONAL), so the login would end uncounted and
  // outside the back-off. The failure goes out at once (EAP-Failure, and AUTHENTICATION_FAILED
  // from the IKE SA); the alert OpenSSL wrote is dropped.
  std::string reason = cert_problem_ ? *cert_problem_ : "TLS handshake failed: " + OpenSslReason();
  ERR_clear_error();
  return Fail(std::move(reason));
}

bool TlsServer::DeriveMsk() {
  crypto::SecureBytes material(kKeyMaterial);
  int ok = 0;
  if (SSL_version(ssl_) == TLS1_3_VERSION) {
    ok = SSL_export_keying_material(ssl_, material.data(), material.size(), kTls13Label, sizeof kTls13Label - 1,
                                    kTls13Context, sizeof kTls13Context, 1);
  } else {
    ok = SSL_export_keying_material(ssl_, material.data(), material.size(), kTls12Label, sizeof kTls12Label - 1,
                                    nullptr, 0, 0);
  }
  if (ok != 1) return false;
  msk_ = crypto::SecureBytes(material.first(kMsk));
  return true;
}

TlsServer::Step TlsServer::SendOutput(Phase next) {
  const std::size_t pending = BIO_ctrl_pending(network_out_);
  out_.assign(pending, 0);
  if (pending == 0 || BIO_read(network_out_, out_.data(), static_cast<int>(pending)) != static_cast<int>(pending)) {
    return Fail("cannot take TLS data from OpenSSL");
  }
  out_sent_ = 0;
  after_output_ = next;
  return NextFragment();
}

TlsServer::Step TlsServer::NextFragment() {
  const std::size_t chunk = std::min(context_->options().fragment_size, out_.size() - out_sent_);
  const bool first = out_sent_ == 0;
  const bool more = out_sent_ + chunk < out_.size();
  Bytes d;
  wire::ByteWriter w(d);
  // L on every flight's first fragment (required when fragmented, allowed otherwise: 3.1).
  w.WriteU8(static_cast<std::uint8_t>((first ? kTlsFlagLength : 0) | (more ? kTlsFlagMore : 0)));
  if (first) w.WriteU32(static_cast<std::uint32_t>(out_.size()));  // our own flight: far below 4 GiB
  w.WriteBytes(std::span<const std::uint8_t>(out_).subspan(out_sent_, chunk));
  out_sent_ += chunk;
  if (!more) {
    out_.clear();
    out_sent_ = 0;
    phase_ = after_output_;
  }
  return {Status::kContinue, Request(std::move(d)), {}};
}

}  // namespace spigot::eap
