#include "spigot/ike/cookie.h"

#include <openssl/evp.h>

#include "spigot/crypto/random.h"
#include "spigot/wire/byte_reader.h"
#include "spigot/wire/byte_writer.h"

namespace spigot::ike {

CookieJar::CookieJar(TimePoint now) : current_(32), previous_(32), rotated_(now) {
  crypto::RandomBytes(current_.span());
  crypto::RandomBytes(previous_.span());
  version_ = crypto::RandomU32();
}

void CookieJar::Rotate(TimePoint now) {
  if (now - rotated_ < kRotation) return;
  previous_ = current_;
  crypto::RandomBytes(current_.span());
  ++version_;
  rotated_ = now;
}

Bytes CookieJar::Compute(std::uint32_t version, const crypto::SecureBytes& secret,
                         std::span<const std::uint8_t> ni, std::span<const std::uint8_t> ip,
                         std::uint64_t spi_i) const {
  Bytes out(kCookieLen);
  wire::ByteWriter(std::span(out).first(4)).WriteU32(version);
  std::uint8_t spi[8];
  wire::ByteWriter(spi).WriteU64(spi_i);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  unsigned int len = 0;
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  EVP_DigestUpdate(ctx, ni.data(), ni.size());
  EVP_DigestUpdate(ctx, ip.data(), ip.size());
  EVP_DigestUpdate(ctx, spi, sizeof(spi));
  EVP_DigestUpdate(ctx, secret.data(), secret.size());
  EVP_DigestFinal_ex(ctx, out.data() + 4, &len);
  EVP_MD_CTX_free(ctx);
  return out;
}

Bytes CookieJar::Make(std::span<const std::uint8_t> ni, std::span<const std::uint8_t> initiator_ip,
                      std::uint64_t spi_i, TimePoint now) {
  Rotate(now);
  return Compute(version_, current_, ni, initiator_ip, spi_i);
}

bool CookieJar::Verify(std::span<const std::uint8_t> cookie, std::span<const std::uint8_t> ni,
                       std::span<const std::uint8_t> initiator_ip, std::uint64_t spi_i,
                       TimePoint now) {
  Rotate(now);
  if (cookie.size() != kCookieLen) return false;
  std::uint32_t v = 0;
  wire::ByteReader(cookie).ReadU32(v);
  const crypto::SecureBytes* secret = v == version_ ? &current_ : v == version_ - 1 ? &previous_ : nullptr;
  if (secret == nullptr) return false;
  const Bytes expected = Compute(v, *secret, ni, initiator_ip, spi_i);
  return crypto::ConstantTimeEqual(expected, cookie);
}

}  // namespace spigot::ike
