// The EAP-TLS server (RFC 5216) as a hostile peer drives it through IKE_AUTH, after a fixed
// Identity response: the input is a run of EAP packets (two length octets, then that many
// bytes). The first octet's low bit patches each packet's identifier to the one the server
// expects (so the EAP-TLS framing and OpenSSL's TLS server are reached); the second bit wraps
// each packet's bytes in an EAP-TLS response (Flags and TLS data from the input). The server
// must never read outside a packet, never succeed (the fuzzer holds no certificate under the
// CA, made at start-up with a key nobody keeps), after a failure stay failed, and give a
// reason for every failure. Leaks show under the fuzzer's LeakSanitizer.
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "src/spigot/eap/eap_tls.h"

using spigot::eap::TlsServer;

namespace {

// A self-signed CA (which is also the gateway's TLS certificate): enough for a TLS server, and
// no client can present a certificate under it.
std::shared_ptr<const spigot::eap::TlsServerContext> MakeContext() {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -86400);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 365);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("fuzz gw"), -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509_set_pubkey(x, key);
  X509V3_CTX v3;
  X509V3_set_ctx(&v3, x, x, nullptr, nullptr, 0);
  X509_EXTENSION* bc = X509V3_EXT_conf_nid(nullptr, &v3, NID_basic_constraints, "critical,CA:TRUE");
  X509_add_ext(x, bc, -1);
  X509_EXTENSION_free(bc);
  X509_sign(x, key, EVP_sha256());
  const std::string dir = "/tmp/spigot-eap-tls-fuzz-" + std::to_string(getpid());
  std::string cmd = "mkdir -p " + dir;
  if (std::system(cmd.c_str()) != 0) std::abort();
  const std::string cert_path = dir + "/gw.pem", key_path = dir + "/gw.key";
  FILE* f = std::fopen(cert_path.c_str(), "w");
  PEM_write_X509(f, x);
  std::fclose(f);
  f = std::fopen(key_path.c_str(), "w");
  PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
  X509_free(x);
  EVP_PKEY_free(key);
  std::string error;
  auto cred = spigot::pki::LocalCredentials::Load(cert_path, key_path, &error);
  auto trust = spigot::pki::TrustStore::Load({cert_path}, {}, &error);
  std::remove(cert_path.c_str());
  std::remove(key_path.c_str());
  rmdir(dir.c_str());
  spigot::eap::TlsServerOptions options;
  options.max_message = 16384;  // smaller bounds: reached within the fuzzer's input sizes
  options.fragment_size = 200;
  auto ctx = spigot::eap::TlsServerContext::Create(cred, trust, options, &error);
  if (!ctx) std::abort();
  return ctx;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const auto context = MakeContext();
  if (size == 0) return 0;
  const std::uint8_t mode = data[0];
  std::span<const std::uint8_t> in(data + 1, size - 1);

  TlsServer server(context);
  auto request = server.Start();
  const std::vector<std::uint8_t> id{2, request[1], 0, 9, 1, 'f', 'u', 'z', 'z'};
  auto step = server.Process(id);
  if (step.status != TlsServer::Status::kContinue) std::abort();
  request = step.reply;
  bool failed = false;
  while (in.size() >= 2) {
    const std::size_t n = std::min<std::size_t>((std::size_t(in[0]) << 8) | in[1], in.size() - 2);
    std::vector<std::uint8_t> packet(in.begin() + 2, in.begin() + 2 + static_cast<std::ptrdiff_t>(n));
    in = in.subspan(2 + n);
    if ((mode & 2) != 0) {
      // Code Response, Identifier, Length, Type EAP-TLS, then the input as Flags and TLS data.
      const std::size_t len = 5 + packet.size();
      if (len > 0xffff) continue;
      std::vector<std::uint8_t> eap{2, 0, static_cast<std::uint8_t>(len >> 8), static_cast<std::uint8_t>(len), 13};
      eap.insert(eap.end(), packet.begin(), packet.end());
      packet = std::move(eap);
    }
    if ((mode & 1) != 0 && packet.size() >= 2 && request.size() >= 2) packet[1] = request[1];
    (void)server.PublicKeyStep(packet);  // looks only (an IKE responder asks it before each step)
    step = server.Process(packet);
    if (step.status == TlsServer::Status::kSuccess) std::abort();  // no certificate under the CA here
    if (failed && step.status != TlsServer::Status::kFailure) std::abort();
    if (step.status == TlsServer::Status::kFailure) {
      failed = true;
      if (step.reason.empty() || !server.msk().empty()) std::abort();
    }
    request = step.reply;
  }
  return 0;
}
