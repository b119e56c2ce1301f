// Certificate authentication (issue 12), in process, one core:
//   BM_CertSign/<key>       one AUTH signature (RFC 7427, SHA-256; RSA PKCS#1 v1.5 or ECDSA)
//                           over 512 octets, the size of a typical signed-octets string
//   BM_CertVerify/<key>     checking one such signature against the signer's certificate
//   BM_IkeHandshakeCert/<key>/<cached>  a full IKE_SA_INIT + IKE_AUTH (X25519, AES-GCM-128)
//                           with both sides authenticating by certificate: each sends its
//                           certificate, signs its AUTH, validates the peer's certificate
//                           against a trust store (X509_STORE) holding the root and checks the
//                           peer's AUTH. <cached> 0: the certificate parse cache is off, every
//                           peer certificate is parsed (a crowd of distinct users); 1: on, the
//                           same peers again (users reconnecting; every road warrior's
//                           intermediate CA)
// <key> is 0 = RSA-2048, 1 = RSA-3072, 2 = ECDSA P-256: the end entities and the root that
// issued them have that key type, so one handshake costs 2 signatures and 4 verifications
// (each side: the peer's AUTH and the peer's certificate under the root) plus two X25519
// units. bench/ike.sh prints handshakes/s against that ceiling, from the same run.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "spigot/crypto/random.h"
#include "spigot/ike/identity.h"
#include "spigot/io/clock.h"
#include "spigot/pki/certificate.h"
#include "spigot/pki/signature.h"
#include "spigot/test_tools/ike_loopback.h"
#include "spigot/test_tools/test_pki.h"

namespace spigot::ike {
namespace {

using test_tools::IssueOptions;
using test_tools::TestCert;
using test_tools::TestKey;
using test_tools::TestPki;

constexpr TestKey kBenchKeys[] = {TestKey::kRsa2048, TestKey::kRsa3072, TestKey::kEcP256};
constexpr const char* kBenchKeyNames[] = {"RSA-2048", "RSA-3072", "ECDSA-P256"};

// A root and two end entities ("alice", "bob") of one key type, with their credentials and
// a trust store holding the root, minted once per key type and removed at exit.
struct CertSet {
  std::shared_ptr<const pki::LocalCredentials> alice, bob;
  std::shared_ptr<const pki::TrustStore> trust;
};

class BenchPki {
 public:
  BenchPki()
      : dir_(std::filesystem::temp_directory_path() / ("spigot-cert-bench-" + std::to_string(getpid()))),
        pki_(dir_.string()) {}
  ~BenchPki() { std::filesystem::remove_all(dir_); }

  const CertSet& For(int index) {
    auto& set = sets_[static_cast<std::size_t>(index)];
    if (set.trust) return set;
    const TestKey key = kBenchKeys[index];
    const std::string tag = std::to_string(index);
    const TestCert root = pki_.Ca("root" + tag, "C=CH, O=Example, CN=Bench Root", key);
    IssueOptions alice_opts;
    alice_opts.dns = {"alice"};
    IssueOptions bob_opts;
    bob_opts.dns = {"bob"};
    bob_opts.eku = "serverAuth";
    const TestCert alice = pki_.Issue("alice" + tag, root, "C=CH, O=Example, CN=alice", key, alice_opts);
    const TestCert bob = pki_.Issue("bob" + tag, root, "C=CH, O=Example, CN=bob", key, bob_opts);
    std::string error;
    set.alice = pki::LocalCredentials::Load(alice.cert_path, alice.key_path, &error);
    set.bob = pki::LocalCredentials::Load(bob.cert_path, bob.key_path, &error);
    set.trust = pki::TrustStore::Load({root.cert_path}, {}, &error);
    if (!set.alice || !set.bob || !set.trust) set = CertSet{};
    return set;
  }

 private:
  std::filesystem::path dir_;
  TestPki pki_;
  CertSet sets_[std::size(kBenchKeys)];
};

BenchPki& Pki() {
  static BenchPki pki;
  return pki;
}

std::vector<std::uint8_t> Octets() {
  std::vector<std::uint8_t> octets(512);
  crypto::RandomBytes(octets);
  return octets;
}

const pki::SignOptions kRfc7427Sha256{{pki::HashAlgorithm::kSha256}, false};

void BM_CertSign(benchmark::State& state) {
  const CertSet& set = Pki().For(static_cast<int>(state.range(0)));
  if (!set.trust) return state.SkipWithError("test PKI failed");
  const auto octets = Octets();
  std::string error;
  for (auto _ : state) {
    auto sig = pki::Sign(set.alice->key, octets, kRfc7427Sha256, &error);
    if (!sig) return state.SkipWithError(error.c_str());
    benchmark::DoNotOptimize(sig->data.data());
  }
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(kBenchKeyNames[state.range(0)]);
}

void BM_CertVerify(benchmark::State& state) {
  const CertSet& set = Pki().For(static_cast<int>(state.range(0)));
  if (!set.trust) return state.SkipWithError("test PKI failed");
  const auto octets = Octets();
  std::string error;
  const auto sig = pki::Sign(set.alice->key, octets, kRfc7427Sha256, &error);
  if (!sig) return state.SkipWithError(error.c_str());
  for (auto _ : state) {
    if (auto reason = pki::Verify(set.alice->cert, sig->method, sig->data, octets))
      return state.SkipWithError(reason->c_str());
  }
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(kBenchKeyNames[state.range(0)]);
}

std::shared_ptr<ConnectionParams> CertConnection(bool initiator, const CertSet& set) {
  auto c = TestConnection(initiator, "aes128gcm16-prfsha256-x25519", "aes128gcm16");
  c->local_auth = c->remote_auth = AuthMethod::kPubkey;
  c->local_credentials = initiator ? set.alice : set.bob;
  c->trust = set.trust;
  if (initiator) {
    c->local_id = *ParseIdentity("C=CH, O=Example, CN=alice");
  } else {
    c->remote_id = *ParseIdentity("C=CH, O=Example, CN=alice");
  }
  return c;
}

void BM_IkeHandshakeCert(benchmark::State& state) {
  const CertSet& set = Pki().For(static_cast<int>(state.range(0)));
  if (!set.trust) return state.SkipWithError("test PKI failed");
  const auto iconn = CertConnection(true, set);
  const auto rconn = CertConnection(false, set);
  pki::SetCertificateCacheCapacity(state.range(1) != 0 ? pki::kDefaultCertificateCacheEntries : 0);
  for (auto _ : state) {
    LoopbackPair pair(iconn, rconn);
    const TimePoint now = io::DefaultClock().Now();
    pair.initiator->Initiate(now);
    pair.Pump(now);
    if (pair.initiator->state() != IkeSa::State::kEstablished || pair.ihost.installed.size() != 1)
      return state.SkipWithError(("handshake failed: " + pair.initiator->failure()).c_str());
  }
  pki::SetCertificateCacheCapacity(pki::kDefaultCertificateCacheEntries);
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(std::string(kBenchKeyNames[state.range(0)]) + (state.range(1) != 0 ? " cached" : ""));
}

BENCHMARK(BM_CertSign)->DenseRange(0, 2);
BENCHMARK(BM_CertVerify)->DenseRange(0, 2);
BENCHMARK(BM_IkeHandshakeCert)->ArgsProduct({{0, 1, 2}, {0, 1}});

}  // namespace
}  // namespace spigot::ike
