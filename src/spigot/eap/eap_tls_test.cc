// EAP-TLS (RFC 5216, RFC 9190) server sessions against a peer made of OpenSSL's own TLS client
// over memory BIOs, framed in EAP-TLS here (fragmenting and acknowledging as RFC 5216 2.1.5
// says): logins with TLS 1.2 and 1.3, the MSK against the RFC 5216 2.3 formula computed apart
// from the session (TLS1-PRF over the client's master secret), refused certificates (unknown
// CA, expired, revoked, without the EAP identity, none), fragmentation both ways with long
// chains, and malformed, oversized and endless conversations refused cleanly. The interop test
// (tests/roadwarrior_eap_tls.sh) drives it with strongSwan's client.
#include "spigot/eap/eap_tls.h"

#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <thread>

#include "spigot/pki/names.h"
#include "spigot/test_tools/test_pki.h"
#include "spigot/wire/byte_reader.h"
#include "spigot/wire/byte_writer.h"

namespace spigot::eap {
namespace {

using test_tools::IssueOptions;
using test_tools::TestCert;
using test_tools::TestKey;
using test_tools::TestPki;
using Status = ServerSession::Status;

// ---------------------------------------------------------------- the test peer

// An EAP-TLS peer: answers Identity, runs OpenSSL's TLS client over memory BIOs, reassembles
// the server's fragments (acknowledging each) and fragments its own flights.
class TlsPeer {
 public:
  struct Options {
    std::string identity = "alice@example.org";
    std::string chain;  // PEM, end entity first; empty: no certificate
    std::string key;
    std::string ca;  // what the server's certificate must chain to
    int max_version = TLS1_2_VERSION;
    std::size_t fragment_size = 1000;
  };
  explicit TlsPeer(Options o) : o_(std::move(o)) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx_, o_.max_version);
    if (!o_.chain.empty()) {
      EXPECT_EQ(SSL_CTX_use_certificate_chain_file(ctx_, o_.chain.c_str()), 1);
      EXPECT_EQ(SSL_CTX_use_PrivateKey_file(ctx_, o_.key.c_str(), SSL_FILETYPE_PEM), 1);
    }
    EXPECT_EQ(SSL_CTX_load_verify_locations(ctx_, o_.ca.c_str(), nullptr), 1);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    ssl_ = SSL_new(ctx_);
    BIO* in = BIO_new(BIO_s_mem());
    BIO* out = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(in, -1);
    BIO_set_mem_eof_return(out, -1);
    in_bio_ = in;
    out_bio_ = out;
    SSL_set_bio(ssl_, in, out);
    SSL_set_connect_state(ssl_);
  }
  ~TlsPeer() {
    SSL_free(ssl_);
    SSL_CTX_free(ctx_);
  }

  // The response to one request; empty once the server said Success or Failure.
  Bytes Respond(const Bytes& request) {
    auto p = Parse(request);
    EXPECT_TRUE(p);
    if (!p) return {};
    if (p->code == Code::kSuccess) success_ = true;
    if (p->code == Code::kSuccess || p->code == Code::kFailure) {
      ended_ = true;
      return {};
    }
    id_ = p->identifier;
    if (p->type == std::uint8_t(Type::kIdentity)) return Response(Type::kIdentity, Bytes(o_.identity.begin(), o_.identity.end()));
    EXPECT_EQ(p->type, std::uint8_t(Type::kTls));
    ++requests_;
    wire::ByteReader r(p->data);
    std::uint8_t flags = 0;
    r.ReadU8(flags);
    if (flags & kTlsFlagLength) {
      std::uint32_t n = 0;
      r.ReadU32(n);
    }
    const auto data = r.ReadRemaining();
    if (flags & kTlsFlagMore) ++server_fragments_;
    if (flags & kTlsFlagStart) return Run();
    if (data.empty()) return NextFragment();  // the server acknowledged our fragment
    in_.insert(in_.end(), data.begin(), data.end());
    if (flags & kTlsFlagMore) return Tls(Bytes{0});  // acknowledge
    BIO_write(in_bio_, in_.data(), static_cast<int>(in_.size()));
    in_.clear();
    return Run();
  }

  bool success() const { return success_; }
  bool ended() const { return ended_; }
  int server_fragments() const { return server_fragments_; }
  int requests() const { return requests_; }
  SSL* ssl() const { return ssl_; }
  // What the peer derives: RFC 5216 2.3 / RFC 9190 2.3 through OpenSSL's exporter.
  Bytes Msk() const {
    Bytes km(128);
    static const std::uint8_t type = 13;
    const bool v13 = SSL_version(ssl_) == TLS1_3_VERSION;
    const char* label = v13 ? "EXPORTER_EAP_TLS_Key_Material" : "client EAP encryption";
    EXPECT_EQ(SSL_export_keying_material(ssl_, km.data(), km.size(), label, std::strlen(label), v13 ? &type : nullptr,
                                         v13 ? 1 : 0, v13 ? 1 : 0),
              1);
    km.resize(64);
    return km;
  }

 private:
  Bytes Response(Type type, Bytes data) {
    return Serialize(Packet{Code::kResponse, id_, std::uint8_t(type), std::move(data)});
  }
  Bytes Tls(Bytes data) { return Response(Type::kTls, std::move(data)); }
  Bytes Run() {
    if (!SSL_is_init_finished(ssl_)) SSL_do_handshake(ssl_);
    if (SSL_is_init_finished(ssl_)) {
      std::uint8_t buf[16];
      const int n = SSL_read(ssl_, buf, sizeof buf);  // TLS 1.3: the commitment (one 0x00)
      if (n > 0) commitment_.insert(commitment_.end(), buf, buf + n);
    }
    ERR_clear_error();
    const std::size_t pending = BIO_ctrl_pending(out_bio_);
    out_.assign(pending, 0);
    if (pending > 0) BIO_read(out_bio_, out_.data(), static_cast<int>(pending));
    sent_ = 0;
    if (out_.empty()) return Tls(Bytes{0});  // nothing to say: the empty response
    return NextFragment();
  }
  Bytes NextFragment() {
    const std::size_t chunk = std::min(o_.fragment_size, out_.size() - sent_);
    const bool first = sent_ == 0, more = sent_ + chunk < out_.size();
    Bytes d;
    wire::ByteWriter w(d);
    w.WriteU8(static_cast<std::uint8_t>((first ? kTlsFlagLength : 0) | (more ? kTlsFlagMore : 0)));
    if (first) w.WriteU32(static_cast<std::uint32_t>(out_.size()));
    w.WriteBytes(std::span<const std::uint8_t>(out_).subspan(sent_, chunk));
    sent_ += chunk;
    if (!more) {
      out_.clear();
      sent_ = 0;
    }
    return Tls(std::move(d));
  }

  Options o_;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  BIO* in_bio_ = nullptr;
  BIO* out_bio_ = nullptr;
  std::uint8_t id_ = 0;
  Bytes in_, out_, commitment_;
  std::size_t sent_ = 0;
  bool success_ = false, ended_ = false;
  int server_fragments_ = 0, requests_ = 0;

 public:
  const Bytes& commitment() const { return commitment_; }
};

// RFC 5216 2.3 computed apart from OpenSSL's exporter: TLS-PRF-128(master secret, "client EAP
// encryption", client.random || server.random), first 64 octets, with the PRF hash of the
// negotiated suite (RFC 5246 5).
Bytes Rfc5216Msk(SSL* ssl) {
  std::uint8_t master[48], cr[32], sr[32];
  const std::size_t mlen = SSL_SESSION_get_master_key(SSL_get_session(ssl), master, sizeof master);
  SSL_get_client_random(ssl, cr, sizeof cr);
  SSL_get_server_random(ssl, sr, sizeof sr);
  Bytes seed;
  const std::string label = "client EAP encryption";
  seed.insert(seed.end(), label.begin(), label.end());
  seed.insert(seed.end(), cr, cr + 32);
  seed.insert(seed.end(), sr, sr + 32);
  const EVP_MD* md = SSL_CIPHER_get_handshake_digest(SSL_get_current_cipher(ssl));
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "TLS1-PRF", nullptr);
  EVP_KDF_CTX* kctx = EVP_KDF_CTX_new(kdf);
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, const_cast<char*>(EVP_MD_get0_name(md)), 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET, master, mlen),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, seed.data(), seed.size()),
      OSSL_PARAM_construct_end(),
  };
  Bytes out(128);
  EXPECT_EQ(EVP_KDF_derive(kctx, out.data(), out.size(), params), 1);
  EVP_KDF_CTX_free(kctx);
  EVP_KDF_free(kdf);
  out.resize(64);
  return out;
}

struct Outcome {
  Status status = Status::kContinue;
  std::string reason;
  bool password_checked = false;
  bool throttled = false;
  int rounds = 0;
  int public_key_steps = 0;  // responses PublicKeyStep() said true for
};

// `threads`: the steps PublicKeyStep() names run on a thread of their own, as an IKE responder
// runs them on its IKE workers.
Outcome Drive(TlsServer& server, TlsPeer& peer, bool threads = false) {
  Outcome out;
  Bytes request = server.Start();
  for (int i = 0; i < 200; ++i) {
    const Bytes response = peer.Respond(request);
    std::optional<TlsServer::Step> taken;
    if (server.PublicKeyStep(response)) {
      ++out.public_key_steps;
      if (threads) std::thread([&] { server.Receive(response, [&](TlsServer::Step s) { taken = std::move(s); }); }).join();
    }
    if (!taken) taken = server.Process(response);
    EXPECT_TRUE(taken) << "Receive gave no step before it returned";
    if (!taken) return out;
    TlsServer::Step step = std::move(*taken);
    ++out.rounds;
    if (step.status != Status::kContinue) {
      out.status = step.status;
      out.reason = step.reason;
      out.password_checked = step.password_checked;
      out.throttled = step.throttled;
      peer.Respond(step.reply);
      return out;
    }
    EXPECT_FALSE(step.password_checked);
    request = std::move(step.reply);
  }
  ADD_FAILURE() << "no end after 200 rounds";
  return out;
}

// ---------------------------------------------------------------- the fixture

class EapTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(std::filesystem::temp_directory_path() / ("spigot-eap-tls-test-" + std::to_string(getpid())));
    pki_ = new TestPki(*dir_);
    root_ = new TestCert(pki_->Ca("root", "C=CH, O=Example, CN=Example Root CA"));
    IssueOptions gw;
    gw.dns = {"gw.example.org"};
    gw.eku = "serverAuth";
    gw_ = new TestCert(pki_->Issue("gw", *root_, "C=CH, O=Example, CN=gw.example.org", TestKey::kEcP256, gw));
    IssueOptions user;
    user.email = {"alice@example.org"};
    user.eku = "clientAuth";
    alice_ = new TestCert(pki_->Issue("alice", *root_, "C=CH, O=Example, CN=alice", TestKey::kEcP256, user));
    IssueOptions rsa_user = user;
    rsa_user.email = {"carol@example.org"};
    carol_ = new TestCert(pki_->Issue("carol", *root_, "C=CH, O=Example, CN=carol", TestKey::kRsa2048, rsa_user));
    IssueOptions old = user;
    old.not_before_days = -60;
    old.not_after_days = -1;
    expired_ = new TestCert(pki_->Issue("expired", *root_, "C=CH, O=Example, CN=expired", TestKey::kEcP256, old));
    revoked_ = new TestCert(pki_->Issue("revoked", *root_, "C=CH, O=Example, CN=revoked", TestKey::kEcP256, user));
    crl_ = new std::string(pki_->Crl("root", *root_, {revoked_}));
    other_root_ = new TestCert(pki_->Ca("other", "C=CH, O=Other, CN=Other Root"));
    stranger_ = new TestCert(pki_->Issue("stranger", *other_root_, "C=CH, O=Other, CN=alice", TestKey::kEcP256, user));

    // Long chains both ways (RSA-3072 intermediates), for fragmentation.
    IssueOptions ica;
    ica.ca = true;
    ica.not_after_days = 300;
    const TestCert* up = root_;
    std::vector<TestCert*>& inters = *(inters_ = new std::vector<TestCert*>);
    for (int i = 0; i < 4; ++i) {
      inters.push_back(new TestCert(pki_->Issue("inter" + std::to_string(i), *up,
                                                "C=CH, O=Example, OU=Long chain, CN=Intermediate " + std::to_string(i),
                                                TestKey::kRsa3072, ica)));
      up = inters.back();
    }
    long_gw_ = new TestCert(pki_->Issue("long-gw", *up, "C=CH, O=Example, CN=gw.example.org", TestKey::kRsa3072, gw));
    long_alice_ = new TestCert(pki_->Issue("long-alice", *up, "C=CH, O=Example, CN=alice", TestKey::kRsa3072, user));
    std::vector<const TestCert*> gw_chain{long_gw_}, alice_chain{long_alice_};
    for (auto it = inters.rbegin(); it != inters.rend(); ++it) {
      gw_chain.push_back(*it);
      alice_chain.push_back(*it);
    }
    long_gw_chain_ = new std::string(pki_->Chain("long-gw-chain", gw_chain));
    long_alice_chain_ = new std::string(pki_->Chain("long-alice-chain", alice_chain));
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    for (TestCert* c : *inters_) delete c;
    for (TestCert* c : {root_, gw_, alice_, carol_, expired_, revoked_, other_root_, stranger_, long_gw_, long_alice_}) {
      delete c;
    }
    for (std::string* t : {dir_, crl_, long_gw_chain_, long_alice_chain_}) delete t;
    delete inters_;
    delete pki_;
  }

  static std::shared_ptr<const TlsServerContext> Context(TlsServerOptions o = {}, std::vector<std::string> crls = {},
                                                         const std::string* chain = nullptr,
                                                         const TestCert* leaf = nullptr) {
    std::string error;
    const TestCert& gw = leaf ? *leaf : *gw_;
    auto cred = pki::LocalCredentials::Load(chain ? *chain : gw.cert_path, gw.key_path, &error);
    EXPECT_TRUE(cred) << error;
    auto trust = pki::TrustStore::Load({root_->cert_path}, crls, &error);
    EXPECT_TRUE(trust) << error;
    auto ctx = TlsServerContext::Create(cred, trust, o, &error);
    EXPECT_TRUE(ctx) << error;
    return ctx;
  }
  static TlsPeer::Options PeerFor(const TestCert& c, std::string identity = "alice@example.org") {
    TlsPeer::Options o;
    o.identity = std::move(identity);
    o.chain = c.cert_path;
    o.key = c.key_path;
    o.ca = root_->cert_path;
    return o;
  }

  static inline std::string *dir_, *crl_, *long_gw_chain_, *long_alice_chain_;
  static inline TestPki* pki_;
  static inline std::vector<TestCert*>* inters_;
  static inline TestCert *root_, *gw_, *alice_, *carol_, *expired_, *revoked_, *other_root_, *stranger_, *long_gw_,
      *long_alice_;
};

// ---------------------------------------------------------------- logins

TEST_F(EapTlsTest, Tls12LoginGivesTheRfc5216Msk) {
  TlsServer server(Context());
  TlsPeer peer(PeerFor(*alice_));
  const Outcome o = Drive(server, peer);
  ASSERT_EQ(o.status, Status::kSuccess) << o.reason;
  EXPECT_TRUE(o.password_checked);
  EXPECT_TRUE(peer.success());
  EXPECT_EQ(server.tls_version(), TLS1_2_VERSION);
  EXPECT_EQ(server.user(), "alice@example.org");
  ASSERT_EQ(server.msk().size(), 64u);
  const Bytes msk(server.msk().span().begin(), server.msk().span().end());
  EXPECT_EQ(msk, peer.Msk());
  EXPECT_EQ(msk, Rfc5216Msk(peer.ssl()));
  // Identity -> Start, ClientHello -> our flight, the peer's flight (certificate, key exchange,
  // signature, Finished: over 1000 octets, two fragments and our acknowledgement) -> our
  // ChangeCipherSpec and Finished, the empty response -> EAP-Success.
  EXPECT_EQ(o.rounds, 5);
}

// ServerSession::PublicKeyStep (issue 17): true for exactly the responses that complete one of
// the peer's TLS flights, the ClientHello and the certificate flight (signing, key exchange,
// the user's chain: what an IKE responder hands to an IKE worker); false for the identity,
// fragments and acknowledgements. Those steps run on other threads here, with the same login.
TEST_F(EapTlsTest, OnlyHandshakeFlightsArePublicKeyStepsAndTheyRunOnAnotherThread) {
  for (const int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    for (const std::size_t fragment : {std::size_t{1000}, std::size_t{100}}) {
      SCOPED_TRACE("version " + std::to_string(version) + ", fragments of " + std::to_string(fragment));
      TlsServerOptions opts;
      opts.max_version = version;
      opts.fragment_size = fragment;
      opts.max_rounds = 200;
      auto po = PeerFor(*carol_, "carol@example.org");
      po.max_version = version;
      po.fragment_size = fragment;
      TlsPeer peer(po);
      TlsServer server(Context(opts));
      const Outcome o = Drive(server, peer, true);
      ASSERT_EQ(o.status, Status::kSuccess) << o.reason;
      EXPECT_EQ(server.tls_version(), version);
      EXPECT_EQ(o.public_key_steps, 2);
      EXPECT_GT(o.rounds, 4);
      EXPECT_EQ(Bytes(server.msk().span().begin(), server.msk().span().end()), peer.Msk());
    }
  }
}

TEST_F(EapTlsTest, RsaUserAndDnIdentity) {
  TlsServer server(Context());
  TlsPeer peer(PeerFor(*carol_, "C=CH, O=Example, CN=carol"));
  const Outcome o = Drive(server, peer);
  ASSERT_EQ(o.status, Status::kSuccess) << o.reason;
  EXPECT_EQ(server.user(), "C=CH, O=Example, CN=carol");
  EXPECT_EQ(Bytes(server.msk().span().begin(), server.msk().span().end()), peer.Msk());
}

// strongSwan sends eap_id = "C=CH, O=Example, CN=carol" as the DN's DER encoding.
TEST_F(EapTlsTest, DerDnIdentity) {
  for (const char* cn : {"carol", "alice"}) {
    TlsServer server(Context());
    auto po = PeerFor(*carol_);
    std::string dn = "C=CH, O=Example, CN=";
    dn += cn;
    std::string error;
    const auto d = *pki::ParseDn(dn, &error);
    po.identity.assign(d.begin(), d.end());
    TlsPeer peer(po);
    const Outcome o = Drive(server, peer);
    if (std::string(cn) == "carol") {
      ASSERT_EQ(o.status, Status::kSuccess) << o.reason;
      EXPECT_EQ(server.user(), "C=CH, O=Example, CN=carol");
    } else {
      EXPECT_EQ(o.reason, "the user certificate does not hold the EAP identity");
    }
  }
}

TEST_F(EapTlsTest, Tls13LoginWithCommitmentAndExporterMsk) {
  TlsServerOptions opts;
  opts.max_version = TLS1_3_VERSION;
  TlsServer server(Context(opts));
  auto po = PeerFor(*alice_);
  po.max_version = TLS1_3_VERSION;
  TlsPeer peer(po);
  const Outcome o = Drive(server, peer);
  ASSERT_EQ(o.status, Status::kSuccess) << o.reason;
  EXPECT_EQ(server.tls_version(), TLS1_3_VERSION);
  EXPECT_EQ(peer.commitment(), Bytes{0});  // RFC 9190 2.5
  EXPECT_EQ(Bytes(server.msk().span().begin(), server.msk().span().end()), peer.Msk());
}

TEST_F(EapTlsTest, Tls13PeerGetsTls12FromTheDefaultServer) {
  TlsServer server(Context());
  auto po = PeerFor(*alice_);
  po.max_version = TLS1_3_VERSION;
  TlsPeer peer(po);
  ASSERT_EQ(Drive(server, peer).status, Status::kSuccess);
  EXPECT_EQ(server.tls_version(), TLS1_2_VERSION);
}

// ---------------------------------------------------------------- refused certificates

TEST_F(EapTlsTest, CertificateFromAnotherCaIsRefused) {
  TlsServer server(Context());
  auto po = PeerFor(*stranger_);
  TlsPeer peer(po);
  const Outcome o = Drive(server, peer);
  EXPECT_EQ(o.status, Status::kFailure);
  EXPECT_NE(o.reason.find("user certificate refused: unable to get local issuer certificate"), std::string::npos)
      << o.reason;
  EXPECT_TRUE(o.password_checked);
  EXPECT_TRUE(peer.ended());
  EXPECT_FALSE(peer.success());
  EXPECT_TRUE(server.msk().empty());
}

TEST_F(EapTlsTest, ExpiredCertificateIsRefused) {
  TlsServer server(Context());
  TlsPeer peer(PeerFor(*expired_));
  const Outcome o = Drive(server, peer);
  EXPECT_EQ(o.status, Status::kFailure);
  EXPECT_EQ(o.reason, "user certificate refused: certificate has expired");  // without the subject
  EXPECT_TRUE(o.password_checked);
}

TEST_F(EapTlsTest, RevokedCertificateIsRefusedWithTheCrl) {
  {
    TlsServer server(Context());  // no CRL: valid
    TlsPeer peer(PeerFor(*revoked_));
    EXPECT_EQ(Drive(server, peer).status, Status::kSuccess);
  }
  TlsServer server(Context({}, {*crl_}));
  TlsPeer peer(PeerFor(*revoked_));
  const Outcome o = Drive(server, peer);
  EXPECT_EQ(o.status, Status::kFailure);
  EXPECT_EQ(o.reason, "user certificate refused: certificate revoked");
}

TEST_F(EapTlsTest, EapIdentityNotInTheCertificateIsRefused) {
  for (const char* identity : {"bob@example.org", "C=CH, O=Example, CN=bob", "alice", "192.0.2.9", "example.org"}) {
    TlsServer server(Context());
    TlsPeer peer(PeerFor(*alice_, identity));
    const Outcome o = Drive(server, peer);
    EXPECT_EQ(o.status, Status::kFailure) << identity;
    EXPECT_EQ(o.reason, "the user certificate does not hold the EAP identity") << identity;
    EXPECT_EQ(o.reason.find(identity), std::string::npos);
    EXPECT_TRUE(o.password_checked);
  }
  TlsServer server(Context());
  TlsPeer peer(PeerFor(*alice_, "C=CH, O=Example, CN=alice"));  // the subject DN holds
  EXPECT_EQ(Drive(server, peer).status, Status::kSuccess);
}

TEST_F(EapTlsTest, PeerWithoutCertificateIsRefused) {
  TlsServer server(Context());
  auto po = PeerFor(*alice_);
  po.chain.clear();
  TlsPeer peer(po);
  const Outcome o = Drive(server, peer);
  EXPECT_EQ(o.status, Status::kFailure);
  EXPECT_NE(o.reason.find("TLS handshake failed: "), std::string::npos) << o.reason;
  EXPECT_FALSE(o.password_checked);  // no certificate was looked at
}

TEST_F(EapTlsTest, ServerNotTrustedByThePeerEndsTheLogin) {
  TlsServer server(Context());
  auto po = PeerFor(*alice_);
  po.ca = other_root_->cert_path;  // the peer refuses our certificate and sends an alert
  TlsPeer peer(po);
  const Outcome o = Drive(server, peer);
  EXPECT_EQ(o.status, Status::kFailure);
  EXPECT_NE(o.reason.find("TLS handshake failed: "), std::string::npos) << o.reason;
  EXPECT_FALSE(o.password_checked);
}

TEST_F(EapTlsTest, AdmissionRefusesBeforeAnyTls) {
  std::string asked;
  TlsServer server(Context(), [&](const std::string& user) -> std::optional<std::string> {
    asked = user;
    return "too many failed logins";
  });
  TlsPeer peer(PeerFor(*alice_));
  const Outcome o = Drive(server, peer);
  EXPECT_EQ(o.status, Status::kFailure);
  EXPECT_TRUE(o.throttled);
  EXPECT_FALSE(o.password_checked);
  EXPECT_EQ(o.rounds, 1);
  EXPECT_EQ(asked, "alice@example.org");
}

// ---------------------------------------------------------------- fragmentation

TEST_F(EapTlsTest, LongChainsAreFragmentedBothWays) {
  TlsServer server(Context({}, {}, long_gw_chain_, long_gw_));
  auto po = PeerFor(*long_alice_, "C=CH, O=Example, CN=alice");
  po.chain = *long_alice_chain_;
  po.fragment_size = 700;
  TlsPeer peer(po);
  const Outcome o = Drive(server, peer);
  ASSERT_EQ(o.status, Status::kSuccess) << o.reason;
  EXPECT_GE(peer.server_fragments(), 5);  // 5 RSA-3072 certificates: over 5 x 1000 octets
  EXPECT_GT(o.rounds, 15);                // the peer's flight in 700-octet pieces as well
  EXPECT_EQ(Bytes(server.msk().span().begin(), server.msk().span().end()), peer.Msk());
}

TEST_F(EapTlsTest, SmallFragmentsBothWays) {
  TlsServerOptions opts;
  opts.fragment_size = 64;
  opts.max_rounds = 200;
  TlsServer server(Context(opts));
  auto po = PeerFor(*alice_);
  po.fragment_size = 50;
  TlsPeer peer(po);
  const Outcome o = Drive(server, peer);
  ASSERT_EQ(o.status, Status::kSuccess) << o.reason;
  EXPECT_EQ(Bytes(server.msk().span().begin(), server.msk().span().end()), peer.Msk());
}

TEST_F(EapTlsTest, TooManyRoundsAreRefused) {
  TlsServer server(Context({}, {}, long_gw_chain_, long_gw_));
  auto po = PeerFor(*long_alice_, "C=CH, O=Example, CN=alice");
  po.chain = *long_alice_chain_;
  po.fragment_size = 40;  // ~170 fragments
  TlsPeer peer(po);
  const Outcome o = Drive(server, peer);
  EXPECT_EQ(o.status, Status::kFailure);
  EXPECT_EQ(o.reason, "more than 50 EAP-TLS rounds");
  EXPECT_EQ(o.rounds, 51);
}

// ---------------------------------------------------------------- malformed and hostile

class EapTlsWireTest : public EapTlsTest {
 protected:
  // A server that has asked for the identity and sent Start; returns Start's identifier.
  std::uint8_t Started(TlsServer& s, TlsServerOptions o = {}) {
    (void)o;
    auto id_req = Parse(s.Start());
    auto step = s.Process(Serialize(Packet{Code::kResponse, id_req->identifier, std::uint8_t(Type::kIdentity),
                                           Bytes{'a', '@', 'b'}}));
    EXPECT_EQ(step.status, Status::kContinue);
    auto start = Parse(step.reply);
    EXPECT_EQ(start->data, Bytes{kTlsFlagStart});
    return start->identifier;
  }
  static Bytes TlsResponse(std::uint8_t id, Bytes data) {
    return Serialize(Packet{Code::kResponse, id, std::uint8_t(Type::kTls), std::move(data)});
  }
  void ExpectFailure(TlsServer& s, const Bytes& packet, const std::string& reason) {
    auto step = s.Process(packet);
    EXPECT_EQ(step.status, Status::kFailure);
    EXPECT_EQ(step.reason, reason);
    EXPECT_EQ(Parse(step.reply)->code, Code::kFailure);
    EXPECT_FALSE(step.password_checked);
    // And anything after it.
    EXPECT_EQ(s.Process(packet).reason, "EAP message after the method ended");
  }
};

TEST_F(EapTlsWireTest, MalformedResponses) {
  auto ctx = Context();
  {
    TlsServer s(ctx);
    ExpectFailure(s, TlsResponse(Started(s), Bytes{kTlsFlagLength, 0, 0}), "EAP-TLS response shorter than its TLS Message Length field");
  }
  {
    TlsServer s(ctx);
    ExpectFailure(s, TlsResponse(Started(s), Bytes{}), "not an EAP-TLS response");
  }
  {
    TlsServer s(ctx);
    ExpectFailure(s, TlsResponse(Started(s), Bytes{0}), "an empty EAP-TLS response where TLS data is due");
  }
  {
    TlsServer s(ctx);
    const std::uint8_t id = Started(s);
    ExpectFailure(s, TlsResponse(static_cast<std::uint8_t>(id + 1), Bytes{0, 22}), "EAP response to another request (identifier)");
  }
  {
    TlsServer s(ctx);
    const std::uint8_t id = Started(s);
    ExpectFailure(s, Serialize(Packet{Code::kResponse, id, std::uint8_t(Type::kNak), Bytes{26}}), "the peer refused EAP-TLS (Nak)");
  }
  {
    TlsServer s(ctx);
    const std::uint8_t id = Started(s);
    ExpectFailure(s, Serialize(Packet{Code::kRequest, id, std::uint8_t(Type::kTls), Bytes{0}}), "EAP code 1 where a response is due");
  }
  {
    TlsServer s(ctx);
    // A handshake record cut short: OpenSSL waits for more, but the flight is over.
    ExpectFailure(s, TlsResponse(Started(s), Bytes{0, 0x16, 3, 3, 0, 1, 1}), "the peer's TLS flight ends inside a message");
  }
  {
    TlsServer s(ctx);  // not TLS at all
    auto step = s.Process(TlsResponse(Started(s), Bytes{0, 'G', 'E', 'T', ' ', '/', '\r', '\n', '\r', '\n'}));
    EXPECT_EQ(step.status, Status::kFailure);
    EXPECT_NE(step.reason.find("TLS handshake failed"), std::string::npos) << step.reason;
  }
}

TEST_F(EapTlsWireTest, OversizedMessagesAreRefused) {
  auto ctx = Context();
  {
    TlsServer s(ctx);  // declared over the limit
    ExpectFailure(s, TlsResponse(Started(s), Bytes{kTlsFlagLength | kTlsFlagMore, 0, 1, 0, 1, 22}),
                  "the peer's TLS message is 65537 octets, over the limit of 65536");
  }
  {
    TlsServer s(ctx);  // more than declared
    ExpectFailure(s, TlsResponse(Started(s), Bytes{kTlsFlagLength, 0, 0, 0, 1, 22, 3}), "more TLS data than the TLS Message Length");
  }
  {
    TlsServer s(ctx);  // less than declared
    ExpectFailure(s, TlsResponse(Started(s), Bytes{kTlsFlagLength, 0, 0, 0, 3, 22, 3}), "less TLS data than the TLS Message Length");
  }
  {
    // No length declared, fragments that never end: the size bound, before the rounds run out.
    TlsServerOptions o;
    o.max_message = 4000;
    auto small = Context(o);
    TlsServer s(small);
    std::uint8_t id = Started(s);
    Bytes chunk(1 + 1000, 0x16);
    chunk[0] = kTlsFlagMore;
    for (int i = 0; i < 4; ++i) {
      auto step = s.Process(TlsResponse(id, chunk));
      ASSERT_EQ(step.status, Status::kContinue);
      auto ack = Parse(step.reply);
      EXPECT_EQ(ack->data, Bytes{0});  // an acknowledgement: no flags, no data
      id = ack->identifier;
    }
    ExpectFailure(s, TlsResponse(id, chunk), "the peer's TLS message is over the limit of 4000 octets");
  }
}

TEST_F(EapTlsWireTest, DataWhereAnAcknowledgementIsDue) {
  TlsServer s(Context({}, {}, long_gw_chain_, long_gw_));
  auto po = PeerFor(*alice_);
  TlsPeer peer(po);
  Bytes request = s.Start();
  request = s.Process(peer.Respond(request)).reply;  // Start
  auto step = s.Process(peer.Respond(request));        // ClientHello -> first fragment of our flight
  ASSERT_EQ(step.status, Status::kContinue);
  ASSERT_TRUE(Parse(step.reply)->data[0] & kTlsFlagMore);
  ExpectFailure(s, TlsResponse(Parse(step.reply)->identifier, Bytes{0, 22}),
                "EAP-TLS data where the acknowledgement of our fragment is due");
}

// Every truncated prefix of a real ClientHello response (and of its EAP framing) ends the session
// cleanly; only the whole one goes on.
TEST_F(EapTlsWireTest, EveryTruncatedClientHello) {
  auto ctx = Context();
  TlsServer first(ctx);
  TlsPeer peer(PeerFor(*alice_));
  Bytes request = first.Start();
  const Bytes identity = peer.Respond(request);
  request = first.Process(identity).reply;
  const Bytes hello = peer.Respond(request);
  auto p = Parse(hello);
  ASSERT_TRUE(p);
  for (std::size_t n = 0; n < p->data.size(); ++n) {
    TlsServer s(ctx);
    const std::uint8_t id = Started(s);
    Bytes d(p->data.begin(), p->data.begin() + static_cast<std::ptrdiff_t>(n));
    auto step = s.Process(TlsResponse(id, d));
    EXPECT_EQ(step.status, Status::kFailure) << n;
  }
  for (std::size_t n = 0; n < hello.size(); ++n) {  // the EAP packet cut short
    TlsServer s(ctx);
    Started(s);
    EXPECT_EQ(s.Process(std::span<const std::uint8_t>(hello.data(), n)).status, Status::kFailure) << n;
  }
  TlsServer s(ctx);
  const std::uint8_t id = Started(s);
  EXPECT_EQ(s.Process(TlsResponse(id, p->data)).status, Status::kContinue);
}

TEST_F(EapTlsWireTest, IdentityStep) {
  auto ctx = Context();
  {
    TlsServer s(ctx);
    const auto id = Parse(s.Start())->identifier;
    ExpectFailure(s, Serialize(Packet{Code::kResponse, id, std::uint8_t(Type::kIdentity), {}}), "EAP identity empty or too long");
  }
  {
    TlsServer s(ctx);
    const auto id = Parse(s.Start())->identifier;
    ExpectFailure(s, Serialize(Packet{Code::kResponse, id, std::uint8_t(Type::kIdentity), Bytes(256, 'a')}),
                  "EAP identity empty or too long");
  }
  {
    TlsServer s(ctx);
    const auto id = Parse(s.Start())->identifier;
    ExpectFailure(s, TlsResponse(id, Bytes{0}), "no EAP-Identity response");
  }
}

TEST_F(EapTlsTest, ContextRefusesBadOptionsAndMissingCredentials) {
  std::string error;
  EXPECT_FALSE(TlsServerContext::Create(nullptr, nullptr, {}, &error));
  EXPECT_NE(error.find("local_cert"), std::string::npos);
  TlsServerOptions o;
  o.fragment_size = 0;
  auto cred = pki::LocalCredentials::Load(gw_->cert_path, gw_->key_path, &error);
  auto trust = pki::TrustStore::Load({root_->cert_path}, {}, &error);
  EXPECT_FALSE(TlsServerContext::Create(cred, trust, o, &error));
  o = {};
  o.max_version = 0x0301;
  EXPECT_FALSE(TlsServerContext::Create(cred, trust, o, &error));
}

}  // namespace
}  // namespace spigot::eap
