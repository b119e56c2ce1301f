#include "spigot/ike/keys.h"

#include <openssl/evp.h>

#include "spigot/crypto/ike_cipher.h"
#include "spigot/wire/byte_writer.h"

namespace spigot::ike {
namespace {

void PutU64(crypto::SecureBytes& b, std::uint64_t v) {
  std::uint8_t o[8];
  wire::ByteWriter(o).WriteU64(v);
  b.Append(o);
}

std::size_t PrfKeyLen(crypto::PrfAlg prf) { return crypto::PrfOutputLength(prf); }

}  // namespace

bool DeriveIkeSaKeys(const IkeAlgorithms& algs, std::span<const std::uint8_t> ni,
                     std::span<const std::uint8_t> nr, std::span<const std::uint8_t> shared,
                     std::uint64_t spi_i, std::uint64_t spi_r, IkeSaKeys& out,
                     const crypto::SecureBytes* rekey_sk_d, crypto::PrfAlg old_prf) {
  crypto::SecureBytes nonces(ni);
  nonces.Append(nr);
  crypto::SecureBytes skeyseed;
  if (rekey_sk_d == nullptr) {
    skeyseed = crypto::Prf(algs.prf, nonces, shared);
  } else {
    crypto::SecureBytes data(shared);
    data.Append(nonces);
    skeyseed = crypto::Prf(old_prf, *rekey_sk_d, data);
  }
  crypto::SecureBytes seed(nonces);
  PutU64(seed, spi_i);
  PutU64(seed, spi_r);

  const std::size_t prf_len = PrfKeyLen(algs.prf);
  const std::size_t integ_len = algs.integ ? crypto::IntegKeyLength(*algs.integ) : 0;
  const std::size_t encr_len = crypto::IkeEncrInfoFor(algs.encr).keymat_len();
  // 2.14: SK_d and SK_p* are as long as the PRF's key (its output for HMAC).
  const std::size_t total = prf_len + 2 * integ_len + 2 * encr_len + 2 * prf_len;
  auto km = crypto::PrfPlus(algs.prf, skeyseed, seed, total);
  if (!km) return false;
  std::size_t off = 0;
  auto take = [&](crypto::SecureBytes& dst, std::size_t n) {
    dst = crypto::SecureBytes(km->subspan(off, n));
    off += n;
  };
  take(out.sk_d, prf_len);
  take(out.sk_ai, integ_len);
  take(out.sk_ar, integ_len);
  take(out.sk_ei, encr_len);
  take(out.sk_er, encr_len);
  take(out.sk_pi, prf_len);
  take(out.sk_pr, prf_len);
  return true;
}

SkKeys MakeSkKeys(const IkeAlgorithms& algs, const IkeSaKeys& keys, bool initiator,
                  bool outbound) {
  // Initiator-sent messages use SK_ei/SK_ai; responder-sent ones SK_er/SK_ar.
  const bool initiator_key = initiator == outbound;
  SkKeys k;
  k.cipher = crypto::IkeCipher::Create(algs.encr, initiator_key ? keys.sk_ei : keys.sk_er);
  if (algs.integ)
    k.integ = crypto::Integrity::Create(*algs.integ, initiator_key ? keys.sk_ai : keys.sk_ar);
  return k;
}

bool DeriveChildKeymat(crypto::PrfAlg prf, const crypto::SecureBytes& sk_d,
                       crypto::EspSuite suite, std::span<const std::uint8_t> shared,
                       std::span<const std::uint8_t> ni, std::span<const std::uint8_t> nr,
                       ChildKeymat& out) {
  const std::size_t per_dir = crypto::SuiteInfo(suite).keymat_len();
  crypto::SecureBytes seed(shared);
  seed.Append(ni);
  seed.Append(nr);
  auto km = crypto::PrfPlus(prf, sk_d, seed, 2 * per_dir);
  if (!km) return false;
  out.i_to_r = crypto::SecureBytes(km->subspan(0, per_dir));
  out.r_to_i = crypto::SecureBytes(km->subspan(per_dir, per_dir));
  return true;
}

crypto::SecureBytes SignedOctets(crypto::PrfAlg prf, std::span<const std::uint8_t> message,
                                 std::span<const std::uint8_t> peer_nonce, const crypto::SecureBytes& sk_p,
                                 std::span<const std::uint8_t> id_body) {
  const crypto::SecureBytes maced_id = crypto::Prf(prf, sk_p, id_body);
  crypto::SecureBytes octets(message);
  octets.Append(peer_nonce);
  octets.Append(maced_id);
  return octets;
}

crypto::SecureBytes PskAuth(crypto::PrfAlg prf, std::span<const std::uint8_t> psk,
                            std::span<const std::uint8_t> message,
                            std::span<const std::uint8_t> peer_nonce,
                            const crypto::SecureBytes& sk_p,
                            std::span<const std::uint8_t> id_body) {
  const crypto::SecureBytes octets = SignedOctets(prf, message, peer_nonce, sk_p, id_body);
  const auto pad = std::span<const std::uint8_t>(
      reinterpret_cast<const std::uint8_t*>(kKeyPad), kKeyPadLen);
  const crypto::SecureBytes key = crypto::Prf(prf, psk, pad);
  return crypto::Prf(prf, key, octets);
}

Bytes NatDetectionHash(std::uint64_t spi_i, std::uint64_t spi_r,
                       std::span<const std::uint8_t> address, std::uint16_t port) {
  Bytes data;
  wire::ByteWriter w(data);
  w.WriteU64(spi_i);
  w.WriteU64(spi_r);
  w.WriteBytes(address);
  w.WriteU16(port);
  Bytes out(20);
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha1(), nullptr);
  return out;
}

}  // namespace spigot::ike
