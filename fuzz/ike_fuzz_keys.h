// Fixed IKE SA keys that ike_parse_fuzz and its corpus generator share, so that committed corpus
// entries are SK messages that verify under these keys and the fuzzer starts inside OpenSk().
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "spigot/crypto/ike_cipher.h"
#include "spigot/crypto/prf.h"
#include "spigot/ike/message.h"

namespace spigot::fuzz {

struct IkeFuzzSuite {
  crypto::IkeEncr encr;
  std::optional<crypto::IntegAlg> integ;  // for the CBC suites
};

inline constexpr std::array<IkeFuzzSuite, 9> kIkeFuzzSuites = {{
    {crypto::IkeEncr::kAesGcm16_128, std::nullopt},
    {crypto::IkeEncr::kAesGcm16_256, std::nullopt},
    {crypto::IkeEncr::kChaCha20Poly1305, std::nullopt},
    {crypto::IkeEncr::kAesCbc128, crypto::IntegAlg::kHmacSha256_128},
    {crypto::IkeEncr::kAesCbc128, crypto::IntegAlg::kHmacSha384_192},
    {crypto::IkeEncr::kAesCbc128, crypto::IntegAlg::kHmacSha512_256},
    {crypto::IkeEncr::kAesCbc256, crypto::IntegAlg::kHmacSha256_128},
    {crypto::IkeEncr::kAesCbc256, crypto::IntegAlg::kHmacSha384_192},
    {crypto::IkeEncr::kAesCbc256, crypto::IntegAlg::kHmacSha512_256},
}};

// Input layout: byte 0 selects the suite (low 7 bits, mod 9) and the mode (bit 7):
//   0: the remaining bytes are a datagram for ParseMessage (and OpenSk if it is an SK message);
//   1: byte 1 is the type of the first payload inside SK and the remaining bytes are the SK
//      plaintext (payloads || padding || pad length, zero-extended to whole cipher blocks),
//      sealed by IkeFuzzSeal under the suite's keys and then parsed like mode 0. Without this
//      mode the fuzzer could not reach the parser of SK contents: it cannot forge an ICV.
inline constexpr std::uint8_t kIkeSealBit = 0x80;

// One direction's keys for suite i: SK_e = 0x30 + i, 0x31 + i, ...; SK_a = 0x70 + i, ...
// Every call gives an independent copy of the same keys (sender's and receiver's ends).
inline ike::SkKeys IkeFuzzKeys(std::size_t i) {
  const IkeFuzzSuite& s = kIkeFuzzSuites[i];
  std::vector<std::uint8_t> ke(crypto::IkeEncrInfoFor(s.encr).keymat_len());
  for (std::size_t j = 0; j < ke.size(); ++j) ke[j] = static_cast<std::uint8_t>(0x30 + i + j);
  ike::SkKeys keys;
  keys.cipher = crypto::IkeCipher::Create(s.encr, ke);
  if (s.integ) {
    std::vector<std::uint8_t> ka(crypto::IntegKeyLength(*s.integ));
    for (std::size_t j = 0; j < ka.size(); ++j) ka[j] = static_cast<std::uint8_t>(0x70 + i + j);
    keys.integ = crypto::Integrity::Create(*s.integ, ka);
  }
  return keys;
}

// Builds a message with header `h` (its next payload and length are filled in) whose SK
// payload carries `plaintext` exactly (RFC 7296 3.14, RFC 5282 5.1), with a fixed IV: fuzzing
// only, never for traffic. `plaintext` is zero-extended to whole cipher blocks. Empty on a
// crypto failure or if the result is too long.
inline std::vector<std::uint8_t> IkeFuzzSealAs(ike::SkKeys& keys, const ike::Header& h, std::uint8_t first,
                                               std::vector<std::uint8_t> plaintext) {
  const crypto::IkeEncrInfo& info = keys.cipher->info();
  const std::size_t icv_len = info.aead ? info.icv_len : keys.integ->icv_length();
  if (plaintext.empty()) plaintext.push_back(0);
  plaintext.resize((plaintext.size() + info.block_len - 1) / info.block_len * info.block_len, 0);
  std::vector<std::uint8_t> out;
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<std::uint8_t>(h.spi_i >> (8 * i)));
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<std::uint8_t>(h.spi_r >> (8 * i)));
  out.push_back(static_cast<std::uint8_t>(ike::PayloadType::kSk));
  out.push_back(h.version);
  out.push_back(static_cast<std::uint8_t>(h.exchange));
  out.push_back(h.flags);
  for (int i = 3; i >= 0; --i) out.push_back(static_cast<std::uint8_t>(h.message_id >> (8 * i)));
  out.insert(out.end(), {0, 0, 0, 0});         // length, below
  out.insert(out.end(), {first, 0, 0, 0});     // SK generic header, length below
  const std::size_t total = out.size() + info.iv_len + plaintext.size() + icv_len;
  if (total > ike::kMaxMessageLen || total - ike::kHeaderLen > 0xFFFF) return {};
  for (int i = 0; i < 4; ++i) out[24 + i] = static_cast<std::uint8_t>(total >> (24 - 8 * i));
  out[30] = static_cast<std::uint8_t>((total - ike::kHeaderLen) >> 8);
  out[31] = static_cast<std::uint8_t>(total - ike::kHeaderLen);
  const std::size_t aad_len = out.size();
  std::vector<std::uint8_t> iv(info.iv_len);
  for (std::size_t j = 0; j < iv.size(); ++j) iv[j] = static_cast<std::uint8_t>(0xa0 + j);
  out.insert(out.end(), iv.begin(), iv.end());
  std::vector<std::uint8_t> icv(icv_len);
  if (info.aead) {
    if (!keys.cipher->Seal(iv, std::span(out).first(aad_len), plaintext, icv)) return {};
    out.insert(out.end(), plaintext.begin(), plaintext.end());
  } else {
    if (!keys.cipher->EncryptCbc(iv, plaintext)) return {};
    out.insert(out.end(), plaintext.begin(), plaintext.end());
    keys.integ->Compute(out, icv);
  }
  out.insert(out.end(), icv.begin(), icv.end());
  return out;
}

// An INFORMATIONAL request from the initiator, SPIs 0xface / 0xbeef, message ID 2, sealed as
// IkeFuzzSealAs does.
inline std::vector<std::uint8_t> IkeFuzzSeal(ike::SkKeys& keys, std::uint8_t first,
                                             std::vector<std::uint8_t> plaintext) {
  ike::Header h;
  h.spi_i = 0xface;
  h.spi_r = 0xbeef;
  h.exchange = ike::Exchange::kInformational;
  h.flags = ike::kFlagInitiator;
  h.message_id = 2;
  return IkeFuzzSealAs(keys, h, first, std::move(plaintext));
}

}  // namespace spigot::fuzz
