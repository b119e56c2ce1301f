#include "spigot/eap/eap.h"

#include <openssl/evp.h>
#include <openssl/provider.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "spigot/crypto/random.h"

namespace spigot::eap {

namespace {

constexpr std::size_t kHeader = 4;  // Code, Identifier, Length

// MS-CHAPv2 inside EAP (draft-kamath-pppext-eap-mschapv2 2): OpCode, MS-CHAPv2-ID, MS-Length.
enum class OpCode : std::uint8_t { kChallenge = 1, kResponse = 2, kSuccess = 3, kFailure = 4 };
constexpr std::size_t kChallengeLen = 16;
constexpr std::size_t kResponseValueLen = 49;  // Peer-Challenge 16, reserved 8, NT-Response 24, flags 1
constexpr std::size_t kMaxUserName = 255;

// ---------------------------------------------------------------- the legacy provider

struct Legacy {
  OSSL_LIB_CTX* ctx = nullptr;
  EVP_MD* md4 = nullptr;
  EVP_CIPHER* des = nullptr;
  std::string problem;
};

const Legacy& TheLegacy() {
  static Legacy* legacy = [] {
    auto* l = new Legacy;
    l->ctx = OSSL_LIB_CTX_new();
    if (l->ctx == nullptr || OSSL_PROVIDER_load(l->ctx, "legacy") == nullptr ||
        OSSL_PROVIDER_load(l->ctx, "default") == nullptr) {
      l->problem = "OpenSSL's legacy provider (MD4, DES for EAP-MSCHAPv2) cannot be loaded";
      return l;
    }
    l->md4 = EVP_MD_fetch(l->ctx, "MD4", nullptr);
    l->des = EVP_CIPHER_fetch(l->ctx, "DES-ECB", nullptr);
    if (l->md4 == nullptr || l->des == nullptr) l->problem = "OpenSSL's legacy provider has no MD4 or DES-ECB";
    return l;
  }();
  return *legacy;
}

void Sha1(std::initializer_list<std::span<const std::uint8_t>> parts, std::uint8_t out[20]) {
  EVP_MD_CTX* c = EVP_MD_CTX_new();
  EVP_DigestInit_ex(c, EVP_sha1(), nullptr);
  for (const auto& p : parts) EVP_DigestUpdate(c, p.data(), p.size());
  unsigned int n = 0;
  EVP_DigestFinal_ex(c, out, &n);
  EVP_MD_CTX_free(c);
}

std::span<const std::uint8_t> Text(const char* s) {
  return {reinterpret_cast<const std::uint8_t*>(s), std::strlen(s)};
}

std::optional<crypto::SecureBytes> Md4(std::span<const std::uint8_t> data) {
  const Legacy& l = TheLegacy();
  if (!l.problem.empty()) return std::nullopt;
  crypto::SecureBytes out(16);
  unsigned int n = 0;
  if (EVP_Digest(data.data(), data.size(), out.data(), &n, l.md4, nullptr) != 1 || n != 16) return std::nullopt;
  return out;
}

// RFC 2759 8.6: 7 octets of key to an 8-octet DES key (the parity bits are ignored by DES).
std::array<std::uint8_t, 8> DesKey(const std::uint8_t* k) {
  std::array<std::uint8_t, 8> out{};
  out[0] = k[0];
  for (int i = 1; i < 7; ++i) out[i] = static_cast<std::uint8_t>((k[i - 1] << (8 - i)) | (k[i] >> i));
  out[7] = static_cast<std::uint8_t>(k[6] << 1);
  return out;
}

bool DesEncrypt(const std::uint8_t* key7, std::span<const std::uint8_t> block8, std::uint8_t* out8) {
  const Legacy& l = TheLegacy();
  if (!l.problem.empty()) return false;
  auto key = DesKey(key7);
  EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new();
  int n = 0, m = 0;
  const bool ok = EVP_EncryptInit_ex2(c, l.des, key.data(), nullptr, nullptr) == 1 &&
                  EVP_CIPHER_CTX_set_padding(c, 0) == 1 &&
                  EVP_EncryptUpdate(c, out8, &n, block8.data(), 8) == 1 && EVP_EncryptFinal_ex(c, out8 + n, &m) == 1 &&
                  n + m == 8;
  EVP_CIPHER_CTX_free(c);
  crypto::Wipe(key.data(), key.size());
  return ok;
}

std::string Hex(std::span<const std::uint8_t> b) {
  static const char* digits = "0123456789ABCDEF";
  std::string s;
  for (auto x : b) {
    s += digits[x >> 4];
    s += digits[x & 15];
  }
  return s;
}

// "DOMAIN\user" -> "user" (RFC 2759 4: the user name without a domain goes into the hash).
std::span<const std::uint8_t> WithoutDomain(std::span<const std::uint8_t> name) {
  const auto it = std::find(name.rbegin(), name.rend(), '\\');
  if (it == name.rend()) return name;
  return name.subspan(static_cast<std::size_t>(name.rend() - it));
}

}  // namespace

const char* MethodName(Method m) {
  switch (m) {
    case Method::kMschapV2: return "mschapv2";
    case Method::kTls: return "tls";
    case Method::kRadius: return "radius";
  }
  return "?";
}

// ---------------------------------------------------------------- packets

std::optional<Packet> Parse(std::span<const std::uint8_t> bytes) {
  if (bytes.size() < kHeader) return std::nullopt;
  const std::size_t length = (std::size_t{bytes[2]} << 8) | bytes[3];
  if (length != bytes.size() || length < kHeader) return std::nullopt;
  Packet p;
  p.identifier = bytes[1];
  switch (bytes[0]) {
    case 1:
    case 2:
      if (length < kHeader + 1) return std::nullopt;
      p.code = static_cast<Code>(bytes[0]);
      p.type = bytes[4];
      p.data.assign(bytes.begin() + kHeader + 1, bytes.end());
      return p;
    case 3:
    case 4:
      if (length != kHeader) return std::nullopt;
      p.code = static_cast<Code>(bytes[0]);
      return p;
    default: return std::nullopt;
  }
}

Bytes Serialize(const Packet& p) {
  Bytes out{static_cast<std::uint8_t>(p.code), p.identifier, 0, 0};
  if (p.type) {
    out.push_back(*p.type);
    out.insert(out.end(), p.data.begin(), p.data.end());
  }
  out[2] = static_cast<std::uint8_t>(out.size() >> 8);
  out[3] = static_cast<std::uint8_t>(out.size());
  return out;
}

const crypto::SecureBytes* Users::Find(const std::string& id) const {
  const auto it = users_.find(id);
  return it == users_.end() ? nullptr : &it->second;
}

// ---------------------------------------------------------------- RFC 2759 / RFC 3079

std::optional<std::string> LegacyProviderProblem() {
  const Legacy& l = TheLegacy();
  if (l.problem.empty()) return std::nullopt;
  return l.problem;
}

std::optional<crypto::SecureBytes> NtPasswordHash(std::span<const std::uint8_t> password) {
  // The password as UTF-16LE (RFC 2759 8.3). Non-ASCII UTF-8 is decoded to its code points
  // in the Basic Multilingual Plane; anything else is refused by the caller's config check.
  crypto::SecureBytes unicode(password.size() * 2);
  std::size_t n = 0;
  for (std::size_t i = 0; i < password.size();) {
    std::uint32_t cp = password[i];
    std::size_t len = 1;
    if (cp >= 0xE0 && cp < 0xF0 && i + 2 < password.size()) {
      cp = ((cp & 0x0F) << 12) | ((password[i + 1] & 0x3F) << 6) | (password[i + 2] & 0x3F);
      len = 3;
    } else if (cp >= 0xC0 && cp < 0xE0 && i + 1 < password.size()) {
      cp = ((cp & 0x1F) << 6) | (password[i + 1] & 0x3F);
      len = 2;
    }
    unicode.data()[n++] = static_cast<std::uint8_t>(cp);
    unicode.data()[n++] = static_cast<std::uint8_t>(cp >> 8);
    i += len;
  }
  return Md4(std::span<const std::uint8_t>(unicode.data(), n));
}

std::array<std::uint8_t, 8> ChallengeHash(std::span<const std::uint8_t> peer_challenge,
                                          std::span<const std::uint8_t> auth_challenge,
                                          std::span<const std::uint8_t> username) {
  std::uint8_t digest[20];
  Sha1({peer_challenge, auth_challenge, WithoutDomain(username)}, digest);
  std::array<std::uint8_t, 8> out{};
  std::memcpy(out.data(), digest, out.size());
  return out;
}

std::optional<std::array<std::uint8_t, 24>> ChallengeResponse(std::span<const std::uint8_t> challenge_hash,
                                                              std::span<const std::uint8_t> password_hash) {
  if (challenge_hash.size() != 8 || password_hash.size() != 16) return std::nullopt;
  std::uint8_t z[21] = {};
  std::memcpy(z, password_hash.data(), 16);
  std::array<std::uint8_t, 24> out{};
  bool ok = true;
  for (int i = 0; i < 3 && ok; ++i) ok = DesEncrypt(z + 7 * i, challenge_hash, out.data() + 8 * i);
  crypto::Wipe(z, sizeof z);
  if (!ok) return std::nullopt;
  return out;
}

namespace {
constexpr const char* kMagic1 = "Magic server to client signing constant";
constexpr const char* kMagic2 = "Pad to make it do more than one iteration";
constexpr const char* kMasterMagic = "This is the MPPE Master Key";
constexpr const char* kSendMagic =  // RFC 3079 3.4, Magic2: the client's send key
    "On the client side, this is the send key; on the server side, it is the receive key.";
constexpr const char* kReceiveMagic =  // Magic3: the client's receive key
    "On the client side, this is the receive key; on the server side, it is the send key.";
}  // namespace

std::optional<std::string> AuthenticatorResponse(std::span<const std::uint8_t> password_hash,
                                                 std::span<const std::uint8_t> nt_response,
                                                 std::span<const std::uint8_t> challenge_hash) {
  auto hash_hash = Md4(password_hash);
  if (!hash_hash) return std::nullopt;
  std::uint8_t digest[20];
  Sha1({hash_hash->span(), nt_response, Text(kMagic1)}, digest);
  Sha1({std::span<const std::uint8_t>(digest, 20), challenge_hash, Text(kMagic2)}, digest);
  return "S=" + Hex(std::span<const std::uint8_t>(digest, 20));
}

std::optional<crypto::SecureBytes> MschapV2Msk(std::span<const std::uint8_t> password_hash,
                                               std::span<const std::uint8_t> nt_response) {
  auto hash_hash = Md4(password_hash);
  if (!hash_hash) return std::nullopt;
  std::uint8_t master[20], key[20];
  Sha1({hash_hash->span(), nt_response, Text(kMasterMagic)}, master);
  static const std::uint8_t pad1[40] = {};
  std::uint8_t pad2[40];
  std::memset(pad2, 0xF2, sizeof pad2);
  crypto::SecureBytes msk(64);  // zero-filled: the last 32 octets stay zero
  const std::span<const std::uint8_t> mk(master, 16);
  // RFC 3079 3.4 GetAsymmetricStartKey, 16-octet keys: MasterReceiveKey then MasterSendKey.
  Sha1({mk, pad1, Text(kSendMagic), pad2}, key);
  std::memcpy(msk.data(), key, 16);
  Sha1({mk, pad1, Text(kReceiveMagic), pad2}, key);
  std::memcpy(msk.data() + 16, key, 16);
  crypto::Wipe(master, sizeof master);
  crypto::Wipe(key, sizeof key);
  return msk;
}

// ---------------------------------------------------------------- the server

MschapV2Server::MschapV2Server(std::shared_ptr<const Users> users, std::string server_name, Admission admit)
    : users_(std::move(users)), server_name_(std::move(server_name)), admit_(std::move(admit)) {
  crypto::RandomBytes(std::span<std::uint8_t>(&identifier_, 1));
  if (server_name_.empty()) server_name_ = "spigot";
}

Bytes MschapV2Server::Request(Type type, Bytes data) {
  Packet p{Code::kRequest, ++identifier_, static_cast<std::uint8_t>(type), std::move(data)};
  return Serialize(p);
}

Bytes MschapV2Server::Start() {
  phase_ = Phase::kIdentity;
  return Request(Type::kIdentity, {});
}

MschapV2Server::Step MschapV2Server::Fail(std::string reason) {
  phase_ = Phase::kDone;
  return {Status::kFailure, Serialize(Packet{Code::kFailure, identifier_, std::nullopt, {}}), std::move(reason)};
}

MschapV2Server::Step MschapV2Server::Process(std::span<const std::uint8_t> bytes) {
  if (phase_ == Phase::kDone) return Fail("EAP message after the method ended");
  auto p = Parse(bytes);
  if (!p) return Fail("malformed EAP packet");
  if (p->code != Code::kResponse) return Fail("EAP code " + std::to_string(int(p->code)) + " where a response is due");
  if (p->identifier != identifier_) return Fail("EAP response to another request (identifier)");

  if (phase_ == Phase::kIdentity) {
    if (p->type != std::uint8_t(Type::kIdentity)) return Fail("no EAP-Identity response");
    if (p->data.empty() || p->data.size() > kMaxUserName) return Fail("EAP identity empty or too long");
    identity_.assign(p->data.begin(), p->data.end());
    crypto::RandomBytes(challenge_);
    Bytes d{std::uint8_t(OpCode::kChallenge), 0, 0, 0, std::uint8_t(kChallengeLen)};
    d.insert(d.end(), challenge_.begin(), challenge_.end());
    d.insert(d.end(), server_name_.begin(), server_name_.end());
    d[1] = static_cast<std::uint8_t>(identifier_ + 1);  // MS-CHAPv2-ID: the EAP identifier
    const std::size_t ms_length = d.size() + kHeader + 1;  // MS-Length: EAP Length - 5
    d[2] = static_cast<std::uint8_t>((ms_length - 5) >> 8);
    d[3] = static_cast<std::uint8_t>(ms_length - 5);
    phase_ = Phase::kChallenge;
    return {Status::kContinue, Request(Type::kMschapV2, std::move(d)), {}};
  }

  if (p->type == std::uint8_t(Type::kNak)) return Fail("the peer refused EAP-MSCHAPv2 (Nak)");
  if (p->type != std::uint8_t(Type::kMschapV2) || p->data.empty()) return Fail("not an EAP-MSCHAPv2 response");
  const auto op = static_cast<OpCode>(p->data[0]);

  if (phase_ == Phase::kChallenge) {
    if (op != OpCode::kResponse) return Fail("MS-CHAPv2 opcode " + std::to_string(int(op)) + " where a Response is due");
    // OpCode, MS-CHAPv2-ID, MS-Length (2), Value-Size, Value (49), Name.
    if (p->data.size() < 5 + kResponseValueLen || p->data[4] != kResponseValueLen) return Fail("malformed MS-CHAPv2 Response");
    const std::span<const std::uint8_t> value(p->data.data() + 5, kResponseValueLen);
    const std::span<const std::uint8_t> name(p->data.data() + 5 + kResponseValueLen,
                                             std::min(p->data.size() - 5 - kResponseValueLen, kMaxUserName));
    user_.assign(name.begin(), name.end());
    if (admit_) {
      if (auto refusal = admit_(user_)) {
        Step step = Fail(*refusal);
        step.throttled = true;
        return step;
      }
    }
    const crypto::SecureBytes* secret = users_ ? users_->Find(user_) : nullptr;
    // An unknown user and a wrong password read the same to the peer (and in the reason).
    if (secret == nullptr) {
      Step step = Fail("MS-CHAPv2 login refused (unknown user or wrong password)");
      step.password_checked = true;
      return step;
    }
    auto pw_hash = NtPasswordHash(secret->span());
    if (!pw_hash) return Fail(*LegacyProviderProblem());
    const auto peer_challenge = value.subspan(0, 16);
    const auto nt_response = value.subspan(24, 24);
    const auto ch = ChallengeHash(peer_challenge, challenge_, name);
    auto expected = ChallengeResponse(ch, pw_hash->span());
    if (!expected) return Fail(*LegacyProviderProblem());
    if (CRYPTO_memcmp(expected->data(), nt_response.data(), 24) != 0) {
      Step step = Fail("MS-CHAPv2 login refused (unknown user or wrong password)");
      step.password_checked = true;
      return step;
    }
    auto auth = AuthenticatorResponse(pw_hash->span(), nt_response, ch);
    auto msk = MschapV2Msk(pw_hash->span(), nt_response);
    if (!auth || !msk) return Fail(*LegacyProviderProblem());
    msk_ = std::move(*msk);
    Bytes d{std::uint8_t(OpCode::kSuccess), p->data[1], 0, 0};
    const std::string message = *auth + " M=Welcome to spigot";
    d.insert(d.end(), message.begin(), message.end());
    const std::size_t ms_length = d.size() + kHeader + 1 - 5;
    d[2] = static_cast<std::uint8_t>(ms_length >> 8);
    d[3] = static_cast<std::uint8_t>(ms_length);
    phase_ = Phase::kSuccessSent;
    Step step{Status::kContinue, Request(Type::kMschapV2, std::move(d)), {}};
    step.password_checked = true;
    return step;
  }

  // kSuccessSent: the peer checked our authenticator response and acknowledges.
  if (op != OpCode::kSuccess) return Fail("the peer did not accept our MS-CHAPv2 Success (authenticator response)");
  phase_ = Phase::kDone;
  return {Status::kSuccess, Serialize(Packet{Code::kSuccess, identifier_, std::nullopt, {}}), {}};
}

// ---------------------------------------------------------------- the throttle

std::optional<std::chrono::milliseconds> LoginThrottle::Check(const std::string& user, const std::string& address,
                                                              TimePoint now) {
  const auto it = index_.find(user + '\n' + address);
  if (it == index_.end()) return std::nullopt;
  const Entry& e = it->second->second;
  if (now >= e.blocked_until) return std::nullopt;
  ++throttled_;
  return std::chrono::ceil<std::chrono::milliseconds>(e.blocked_until - now);
}

void LoginThrottle::Note(const std::string& user, const std::string& address, bool ok, TimePoint now) {
  const std::string key = user + '\n' + address;
  auto it = index_.find(key);
  if (ok) {
    if (it != index_.end()) {
      lru_.erase(it->second);
      index_.erase(it);
    }
    return;
  }
  // Entries left alone long enough are forgotten (the oldest are at the back).
  while (!lru_.empty() && now - lru_.back().second.last_failure >= policy_.forget_after) {
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
  it = index_.find(key);
  if (it == index_.end()) {
    if (policy_.max_entries == 0) return;
    while (index_.size() >= policy_.max_entries) {
      index_.erase(lru_.back().first);
      lru_.pop_back();
      ++evicted_;
    }
    lru_.emplace_front(key, Entry{});
    it = index_.emplace(lru_.front().first, lru_.begin()).first;
  } else {
    lru_.splice(lru_.begin(), lru_, it->second);
  }
  Entry& e = it->second->second;
  ++e.failures;
  e.last_failure = now;
  if (e.failures > policy_.free_failures) {
    const unsigned doublings = std::min(e.failures - policy_.free_failures - 1, 16u);
    const auto backoff = std::min<std::chrono::seconds>(policy_.first_backoff * (1LL << doublings), policy_.max_backoff);
    e.blocked_until = now + backoff;
  }
}

LoginThrottle::Stats LoginThrottle::stats(TimePoint now) const {
  Stats s;
  s.throttled = throttled_;
  s.evicted = evicted_;
  s.entries = index_.size();
  for (const auto& [key, e] : lru_) {
    if (e.blocked_until > now) ++s.backing_off;
  }
  return s;
}

// ---------------------------------------------------------------- the peer

MschapV2Client::MschapV2Client(std::string identity, crypto::SecureBytes password)
    : identity_(std::move(identity)), password_(std::move(password)) {}

MschapV2Client::Step MschapV2Client::Process(std::span<const std::uint8_t> bytes) {
  if (done_) return Fail("EAP message after the method ended");
  auto p = Parse(bytes);
  if (!p) return Fail("malformed EAP packet");
  if (p->code == Code::kFailure) return Fail("the server sent EAP-Failure (wrong user name or password?)");
  if (p->code == Code::kSuccess) {
    if (!server_verified_) return Fail("EAP-Success before the server proved it knows the password");
    done_ = true;
    return {Status::kSuccess, {}, {}};
  }
  if (p->code != Code::kRequest) return Fail("an EAP response from the server");
  const auto respond = [&](Type type, Bytes data) {
    return Step{Status::kContinue, Serialize(Packet{Code::kResponse, p->identifier, std::uint8_t(type), std::move(data)}), {}};
  };
  if (p->type == std::uint8_t(Type::kIdentity)) return respond(Type::kIdentity, Bytes(identity_.begin(), identity_.end()));
  if (p->type == std::uint8_t(Type::kNotification)) return respond(Type::kNotification, {});
  if (p->type != std::uint8_t(Type::kMschapV2)) return respond(Type::kNak, Bytes{std::uint8_t(Type::kMschapV2)});
  if (p->data.empty()) return Fail("empty EAP-MSCHAPv2 request");
  switch (static_cast<OpCode>(p->data[0])) {
    case OpCode::kChallenge: {
      // OpCode, MS-CHAPv2-ID, MS-Length (2), Value-Size 16, Challenge, Name.
      if (p->data.size() < 5 + kChallengeLen || p->data[4] != kChallengeLen) return Fail("malformed MS-CHAPv2 Challenge");
      const std::span<const std::uint8_t> challenge(p->data.data() + 5, kChallengeLen);
      std::array<std::uint8_t, 16> peer_challenge{};
      crypto::RandomBytes(peer_challenge);
      const std::span<const std::uint8_t> name(reinterpret_cast<const std::uint8_t*>(identity_.data()), identity_.size());
      auto pw_hash = NtPasswordHash(password_.span());
      if (!pw_hash) return Fail(*LegacyProviderProblem());
      const auto ch = ChallengeHash(peer_challenge, challenge, name);
      auto nt = ChallengeResponse(ch, pw_hash->span());
      if (!nt) return Fail(*LegacyProviderProblem());
      auto auth = AuthenticatorResponse(pw_hash->span(), *nt, ch);
      auto msk = MschapV2Msk(pw_hash->span(), *nt);
      if (!auth || !msk) return Fail(*LegacyProviderProblem());
      expected_auth_ = *auth;
      msk_ = std::move(*msk);
      Bytes d{std::uint8_t(OpCode::kResponse), p->data[1], 0, 0, std::uint8_t(kResponseValueLen)};
      d.insert(d.end(), peer_challenge.begin(), peer_challenge.end());
      d.insert(d.end(), 8, 0);
      d.insert(d.end(), nt->begin(), nt->end());
      d.push_back(0);
      d.insert(d.end(), identity_.begin(), identity_.end());
      const std::size_t ms_length = d.size();  // EAP Length - 5
      d[2] = static_cast<std::uint8_t>(ms_length >> 8);
      d[3] = static_cast<std::uint8_t>(ms_length);
      return respond(Type::kMschapV2, std::move(d));
    }
    case OpCode::kSuccess: {
      // OpCode, MS-CHAPv2-ID, MS-Length, "S=<40 hex> M=<message>".
      if (expected_auth_.empty()) return Fail("MS-CHAPv2 Success before a challenge");
      const std::string message(p->data.begin() + std::min<std::size_t>(4, p->data.size()), p->data.end());
      if (message.size() < 42 || message.compare(0, 42, expected_auth_) != 0) {
        return Fail("the server's MS-CHAPv2 authenticator response is wrong (it does not know the password)");
      }
      server_verified_ = true;
      return respond(Type::kMschapV2, Bytes{std::uint8_t(OpCode::kSuccess)});
    }
    case OpCode::kFailure: return Fail("the server refused the MS-CHAPv2 login (wrong user name or password?)");
    default: return Fail("MS-CHAPv2 opcode " + std::to_string(int(p->data[0])) + " from the server");
  }
}

}  // namespace spigot::eap
