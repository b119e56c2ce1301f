// EAP packets (RFC 3748 4) as IKEv2 carries them in EAP payloads (RFC 7296 3.16), and the
// server side of EAP-MSCHAPv2 (draft-kamath-pppext-eap-mschapv2, RFC 2759, RFC 3079) with local
// users: what an IKE responder runs when its connection says remote_auth = "eap-mschapv2".
//
// A server session goes Identity -> MS-CHAPv2 Challenge -> Response checked -> Success request
// (the authenticator response) -> the peer's Success response -> EAP-Success, after which the
// MSK is the key of both sides' final AUTH payloads (RFC 7296 2.16). Anything unexpected or
// malformed ends it with EAP-Failure and a reason; it never reads outside what it was given.
// Identities and passwords are never part of a reason (they must not reach a log).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <unordered_map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "spigot/bounds.h"
#include "spigot/crypto/secure_bytes.h"

namespace spigot::eap {

using Bytes = std::vector<std::uint8_t>;

enum class Code : std::uint8_t { kRequest = 1, kResponse = 2, kSuccess = 3, kFailure = 4 };
enum class Type : std::uint8_t { kIdentity = 1, kNotification = 2, kNak = 3, kMd5 = 4, kTls = 13, kMschapV2 = 26 };

struct Packet {
  Code code = Code::kRequest;
  std::uint8_t identifier = 0;
  std::optional<std::uint8_t> type;  // requests and responses only
  Bytes data;                        // after the type
};
// nullopt for anything RFC 3748 4 does not allow: short, a Length that disagrees with the
// bytes, an unknown code, a request or response without a type, Success/Failure with data.
std::optional<Packet> Parse(std::span<const std::uint8_t> bytes);
Bytes Serialize(const Packet& p);

// Local EAP users ([[eap_user]] id and secret). Immutable once built; shared by connections.
class Users {
 public:
  void Add(std::string id, crypto::SecureBytes secret) { users_[std::move(id)] = std::move(secret); }
  const crypto::SecureBytes* Find(const std::string& id) const;
  std::size_t size() const { return users_.size(); }

 private:
  std::map<std::string, crypto::SecureBytes> users_;
};

// RFC 2759 8 and RFC 3079 3 primitives, public for their test vectors. MD4 and DES come from
// OpenSSL 3's legacy provider, loaded once into a library context of their own (nothing else
// in the process sees the legacy algorithms); nullopt if it cannot be loaded.
std::optional<crypto::SecureBytes> NtPasswordHash(std::span<const std::uint8_t> password);  // UTF-8
std::array<std::uint8_t, 8> ChallengeHash(std::span<const std::uint8_t> peer_challenge,
                                          std::span<const std::uint8_t> auth_challenge,
                                          std::span<const std::uint8_t> username);
std::optional<std::array<std::uint8_t, 24>> ChallengeResponse(std::span<const std::uint8_t> challenge_hash,
                                                              std::span<const std::uint8_t> password_hash);
// "S=" and 40 upper-case hex digits.
std::optional<std::string> AuthenticatorResponse(std::span<const std::uint8_t> password_hash,
                                                 std::span<const std::uint8_t> nt_response,
                                                 std::span<const std::uint8_t> challenge_hash);
// The 64-octet MSK as IKEv2 uses it (strongSwan's, and RFC 3079's keys): MasterReceiveKey |
// MasterSendKey | 32 zero octets.
std::optional<crypto::SecureBytes> MschapV2Msk(std::span<const std::uint8_t> password_hash,
                                               std::span<const std::uint8_t> nt_response);
// Whether the legacy provider (MD4, DES) is usable; the reason if not.
std::optional<std::string> LegacyProviderProblem();

// Which EAP server does the checking: a local method, or a RADIUS server the packets pass
// through (RFC 3579). Counters are kept per kind.
enum class Method : std::uint8_t { kMschapV2, kTls, kRadius };
inline constexpr std::size_t kMethodCount = 3;
const char* MethodName(Method m);  // "mschapv2", "tls", "radius"

// What the authenticator says about the user beyond yes or no (RADIUS Access-Accept).
struct Authorization {
  std::optional<std::array<std::uint8_t, 4>> framed_ip4;  // Framed-IP-Address: the user's virtual IP
  std::vector<Bytes> classes;                              // Class attributes, kept for accounting
};

// The authenticator side of one EAP conversation (RFC 3748 2), whatever checks the peer: a local
// method or a RADIUS server. A step's result may come later than the packet (a RADIUS round
// trip): Receive() hands it to `done`, either before it returns or later from the event loop,
// and never after the session is destroyed (destroying it cancels what is outstanding).
class ServerSession {
 public:
  enum class Status : std::uint8_t { kContinue, kSuccess, kFailure };
  struct Step {
    Status status = Status::kContinue;
    Bytes reply;         // the EAP packet to send (a request, EAP-Success or EAP-Failure)
    std::string reason;  // kFailure: why, without identities or secrets
    // Credentials were checked in this step (right or wrong), for user(); the caller reports
    // it to its LoginThrottle. Not set for a refusal before any check.
    bool password_checked = false;
    bool throttled = false;  // refused by the Admission callback before the credentials were looked at
  };
  using Done = std::function<void(Step)>;
  // Asked with a user name before its credentials are checked: nullopt lets it through; a
  // reason refuses the login without looking at them (brute-force back-off, LoginThrottle).
  using Admission = std::function<std::optional<std::string>(const std::string& user)>;

  virtual ~ServerSession() = default;
  virtual Method method() const = 0;
  // The first request (EAP-Request/Identity for every method here).
  virtual Bytes Start() = 0;
  // One EAP packet from the peer (an EAP payload's data).
  virtual void Receive(std::span<const std::uint8_t> packet, Done done) = 0;
  // True if Receive(packet) would do public-key work (an EAP-TLS handshake flight: signing, key
  // exchange, the peer's certificate) and hand its step to `done` before returning, without
  // calling anything of the caller's (no Admission): the caller may then run that Receive on
  // another thread, as long as nothing else touches the session until it returns. Looks only.
  virtual bool PublicKeyStep(std::span<const std::uint8_t> /*packet*/) const { return false; }
  // The name the credentials were checked for (the back-off's and the lease's key); empty
  // before. Never log it as it is.
  virtual const std::string& user() const = 0;
  // After kSuccess: the MSK (RFC 5247), the key of both final AUTH payloads (RFC 7296 2.16).
  virtual const crypto::SecureBytes& msk() const = 0;
  virtual const Authorization& authorization() const {
    static const Authorization kNone;
    return kNone;
  }
};

class MschapV2Server final : public ServerSession {
 public:
  // `server_name` goes into the challenge's Name field.
  MschapV2Server(std::shared_ptr<const Users> users, std::string server_name, Admission admit = nullptr);
  Method method() const override { return Method::kMschapV2; }
  // The user name of the MS-CHAPv2 Response (what the password was checked for).
  const std::string& user() const override { return user_; }

  Bytes Start() override;
  // The synchronous step; Receive() hands it to `done` before returning.
  Step Process(std::span<const std::uint8_t> packet);
  void Receive(std::span<const std::uint8_t> packet, Done done) override { done(Process(packet)); }
  const crypto::SecureBytes& msk() const override { return msk_; }
  // After an Identity response: the EAP identity (for the caller to bind a lease or log a
  // hash of; never log it as it is).
  const std::string& identity() const { return identity_; }

 private:
  enum class Phase : std::uint8_t { kIdentity, kChallenge, kSuccessSent, kDone };
  Step Fail(std::string reason);
  Bytes Request(Type type, Bytes data);

  std::shared_ptr<const Users> users_;
  std::string server_name_;
  Admission admit_;
  std::string user_;
  Phase phase_ = Phase::kIdentity;
  std::uint8_t identifier_ = 0;
  std::string identity_;
  std::array<std::uint8_t, 16> challenge_{};
  crypto::SecureBytes msk_;
};

// Failed logins per (user name, peer address) with an exponential back-off (issue 13, item 3):
// after `free_failures` failures in a row, the next attempt must wait first_backoff, doubling
// with each further failure up to max_backoff; a success clears the entry, and one left alone
// for forget_after is forgotten. Keyed by address as well as user, so an attacker elsewhere
// cannot lock a user out (the user's own address is unaffected), and never for longer than
// max_backoff. Bounded: at max_entries the least recently failed entry goes (counted).
struct LoginThrottlePolicy {
  unsigned free_failures = 3;
  std::chrono::seconds first_backoff{1};
  std::chrono::seconds max_backoff{60};
  std::chrono::seconds forget_after{600};
  std::size_t max_entries = bounds::kEapLoginTable;
};
class LoginThrottle {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  using Policy = LoginThrottlePolicy;
  struct Stats {
    std::uint64_t throttled = 0;  // attempts refused during a back-off
    std::uint64_t evicted = 0;    // entries dropped at max_entries
    std::size_t entries = 0;      // (user, address) pairs with failures on record
    std::size_t backing_off = 0;  // of those, in a back-off now
  };
  explicit LoginThrottle(Policy policy = {}) : policy_(policy) {}
  // nullopt: may try now; else the time left (the attempt is counted as throttled).
  std::optional<std::chrono::milliseconds> Check(const std::string& user, const std::string& address, TimePoint now);
  void Note(const std::string& user, const std::string& address, bool ok, TimePoint now);
  Stats stats(TimePoint now) const;

 private:
  struct Entry {
    unsigned failures = 0;
    TimePoint last_failure{};
    TimePoint blocked_until{};
  };
  Policy policy_;
  std::uint64_t throttled_ = 0;
  std::uint64_t evicted_ = 0;
  // Most recently failed first.
  std::list<std::pair<std::string, Entry>> lru_;
  std::unordered_map<std::string, decltype(lru_)::iterator> index_;
};

// The peer side of EAP-MSCHAPv2 (spigot as a road warrior, local_auth = "eap-mschapv2"):
// answers EAP-Identity with `identity`, the challenge with an NT-Response for `password`,
// checks the server's authenticator response before it acknowledges Success (so a server
// that does not know the password cannot complete the login), and takes EAP-Success only
// after that. Other methods are refused with a Nak proposing MSCHAPv2.
class MschapV2Client {
 public:
  enum class Status : std::uint8_t { kContinue, kSuccess, kFailure };
  struct Step {
    Status status = Status::kContinue;
    Bytes reply;  // kContinue: the EAP response to send
    std::string reason;
  };
  MschapV2Client(std::string identity, crypto::SecureBytes password);
  Step Process(std::span<const std::uint8_t> packet);
  const crypto::SecureBytes& msk() const { return msk_; }

 private:
  Step Fail(std::string reason) {
    done_ = true;
    return {Status::kFailure, {}, std::move(reason)};
  }
  std::string identity_;
  crypto::SecureBytes password_;
  std::string expected_auth_;  // "S=..." once we answered a challenge
  bool server_verified_ = false;
  bool done_ = false;
  crypto::SecureBytes msk_;
};

}  // namespace spigot::eap
