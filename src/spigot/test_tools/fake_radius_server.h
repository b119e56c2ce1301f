// A RADIUS server for tests of radius::Client: a UDP socket on the test's io::EventLoop that
// hands each Access-Request to a handler and sends back what the handler answers, with real
// authenticators. Written apart from src/spigot/radius/packet.cc (straight OpenSSL calls, its
// own encoding) so that a mistake there is not mirrored here: the Response Authenticator
// (RFC 2865 3), Message-Authenticator (RFC 3579 3.2) and MS-MPPE key encryption (RFC 2548
// 2.4.2) are computed the server's way. Header-only: only tests that link spigot_radius
// include it.
#pragma once

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "spigot/io/event_loop.h"
#include "spigot/io/udp_socket.h"

namespace spigot::test_tools {

class FakeRadiusServer {
 public:
  using Bytes = std::vector<std::uint8_t>;
  using Auth = std::array<std::uint8_t, 16>;

  struct Request {
    std::uint8_t code = 0;
    std::uint8_t id = 0;
    Auth authenticator{};
    std::vector<std::pair<std::uint8_t, Bytes>> attributes;
    Bytes raw;
    io::Endpoint from;
    bool message_authenticator_ok = false;  // present and right

    Bytes Joined(std::uint8_t type) const {
      Bytes out;
      for (const auto& [t, v] : attributes) {
        if (t == type) out.insert(out.end(), v.begin(), v.end());
      }
      return out;
    }
    std::size_t Count(std::uint8_t type) const {
      std::size_t n = 0;
      for (const auto& a : attributes) n += a.first == type;
      return n;
    }
    std::string Text(std::uint8_t type) const {
      const Bytes b = Joined(type);
      return std::string(b.begin(), b.end());
    }
  };

  struct Answer {
    std::uint8_t code = 2;  // Access-Accept
    Bytes eap_message;      // split into 253-octet EAP-Message attributes
    std::vector<std::pair<std::uint8_t, Bytes>> attributes;
    Bytes mppe_recv_key, mppe_send_key;  // sent encrypted when not empty
    bool message_authenticator = true;
    bool corrupt_authenticator = false;
    bool corrupt_message_authenticator = false;  // the Response Authenticator stays right
    bool from_other_port = false;                // sent from a second socket
  };
  using Handler = std::function<std::vector<Answer>(const Request&)>;

  static std::unique_ptr<FakeRadiusServer> Start(io::EventLoop& loop, std::string secret, Handler handler) {
    auto s = std::unique_ptr<FakeRadiusServer>(new FakeRadiusServer(loop, std::move(secret), std::move(handler)));
    const auto local = io::Endpoint::Parse("127.0.0.1", 0);
    s->socket_ = io::UdpSocket::Bind(*local, {});
    s->other_ = io::UdpSocket::Bind(*local, {});
    if (!s->socket_ || !s->other_) return nullptr;
    FakeRadiusServer* self = s.get();
    if (!loop.AddReader(s->socket_->fd(), [self] { self->OnReadable(); })) return nullptr;
    return s;
  }
  ~FakeRadiusServer() {
    if (socket_) loop_.RemoveReader(socket_->fd());
  }

  const io::Endpoint& endpoint() const { return socket_->local_endpoint(); }
  const std::vector<Request>& received() const { return received_; }
  void set_handler(Handler h) { handler_ = std::move(h); }

  // RFC 2548 2.4.2, the server's side: Salt | E(Key-Length | Key | zero padding).
  static Bytes EncryptMppe(const Bytes& key, std::uint16_t salt, const Auth& request_auth, const std::string& secret) {
    Bytes plain{static_cast<std::uint8_t>(key.size())};
    plain.insert(plain.end(), key.begin(), key.end());
    while (plain.size() % 16 != 0) plain.push_back(0);
    Bytes out{static_cast<std::uint8_t>(0x80 | (salt >> 8)), static_cast<std::uint8_t>(salt)};
    Bytes seed(request_auth.begin(), request_auth.end());
    seed.push_back(out[0]);
    seed.push_back(out[1]);
    for (std::size_t i = 0; i < plain.size(); i += 16) {
      Bytes in(secret.begin(), secret.end());
      in.insert(in.end(), seed.begin(), seed.end());
      std::uint8_t b[16];
      unsigned int n = 0;
      EVP_Digest(in.data(), in.size(), b, &n, EVP_md5(), nullptr);
      for (int j = 0; j < 16; ++j) out.push_back(plain[i + j] ^ b[j]);
      seed.assign(out.end() - 16, out.end());
    }
    return out;
  }

  // The reply to `request`, as the server sends it.
  Bytes Encode(const Request& request, const Answer& a) const {
    Bytes p{a.code, request.id, 0, 0};
    p.insert(p.end(), request.authenticator.begin(), request.authenticator.end());
    auto add = [&p](std::uint8_t type, const Bytes& v) {
      p.push_back(type);
      p.push_back(static_cast<std::uint8_t>(v.size() + 2));
      p.insert(p.end(), v.begin(), v.end());
    };
    for (std::size_t i = 0; i < a.eap_message.size(); i += 253) {
      add(79, Bytes(a.eap_message.begin() + static_cast<std::ptrdiff_t>(i),
                    a.eap_message.begin() + static_cast<std::ptrdiff_t>(std::min(i + 253, a.eap_message.size()))));
    }
    for (const auto& [t, v] : a.attributes) add(t, v);
    std::uint16_t salt = 0x0101;
    for (const auto& [type, key] : {std::pair{std::uint8_t{17}, &a.mppe_recv_key}, std::pair{std::uint8_t{16}, &a.mppe_send_key}}) {
      if (key->empty()) continue;
      const Bytes enc = EncryptMppe(*key, salt++, request.authenticator, secret_);
      Bytes vsa{0, 0, 0x01, 0x37, type, static_cast<std::uint8_t>(enc.size() + 2)};  // vendor 311
      vsa.insert(vsa.end(), enc.begin(), enc.end());
      add(26, vsa);
    }
    std::size_t ma_at = 0;
    if (a.message_authenticator) {
      add(80, Bytes(16, 0));
      ma_at = p.size() - 16;
    }
    p[2] = static_cast<std::uint8_t>(p.size() >> 8);
    p[3] = static_cast<std::uint8_t>(p.size());
    if (a.message_authenticator) {
      // Over the reply with the request's authenticator in place: that is what p holds now.
      unsigned int n = 0;
      HMAC(EVP_md5(), secret_.data(), static_cast<int>(secret_.size()), p.data(), p.size(), p.data() + ma_at, &n);
      if (a.corrupt_message_authenticator) p[ma_at] ^= 1;
    }
    Bytes in(p);
    in.insert(in.end(), secret_.begin(), secret_.end());
    unsigned int n = 0;
    EVP_Digest(in.data(), in.size(), p.data() + 4, &n, EVP_md5(), nullptr);
    if (a.corrupt_authenticator) p[4] ^= 1;
    return p;
  }

 private:
  FakeRadiusServer(io::EventLoop& loop, std::string secret, Handler handler)
      : loop_(loop), secret_(std::move(secret)), handler_(std::move(handler)) {}

  // Everything queued, so a burst of requests is answered in one loop iteration.
  void OnReadable() {
    for (int i = 0; i < 4096 && ReadOne(); ++i) {
    }
  }

  bool ReadOne() {
    std::array<std::uint8_t, 4096> buf;
    io::RecvSlot slot;
    slot.buffer = buf;
    if (socket_->RecvBatch(std::span(&slot, 1)).count != 1) return false;
    const Bytes raw(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(slot.length));
    if (raw.size() < 20) return true;
    Request r;
    r.code = raw[0];
    r.id = raw[1];
    std::memcpy(r.authenticator.data(), raw.data() + 4, 16);
    r.raw = raw;
    r.from = slot.peer;
    const std::size_t len = std::min<std::size_t>(raw.size(), (std::size_t{raw[2]} << 8) | raw[3]);
    std::size_t ma_at = 0;
    for (std::size_t i = 20; i + 2 <= len && raw[i + 1] >= 2 && i + raw[i + 1] <= len; i += raw[i + 1]) {
      r.attributes.emplace_back(raw[i], Bytes(raw.begin() + static_cast<std::ptrdiff_t>(i + 2),
                                              raw.begin() + static_cast<std::ptrdiff_t>(i + raw[i + 1])));
      if (raw[i] == 80 && raw[i + 1] == 18) ma_at = i + 2;
    }
    if (ma_at != 0) {
      Bytes zeroed(raw.begin(), raw.begin() + static_cast<std::ptrdiff_t>(len));
      std::fill_n(zeroed.begin() + static_cast<std::ptrdiff_t>(ma_at), 16, 0);
      std::uint8_t mac[16];
      unsigned int n = 0;
      HMAC(EVP_md5(), secret_.data(), static_cast<int>(secret_.size()), zeroed.data(), zeroed.size(), mac, &n);
      r.message_authenticator_ok = std::memcmp(mac, raw.data() + ma_at, 16) == 0;
    }
    received_.push_back(r);
    if (!handler_) return true;
    for (const Answer& a : handler_(r)) {
      const Bytes reply = Encode(r, a);
      (a.from_other_port ? other_ : socket_)->SendTo(r.from, reply);
    }
    return true;
  }

  io::EventLoop& loop_;
  std::string secret_;
  Handler handler_;
  std::unique_ptr<io::UdpSocket> socket_;
  std::unique_ptr<io::UdpSocket> other_;
  std::vector<Request> received_;
};

}  // namespace spigot::test_tools
