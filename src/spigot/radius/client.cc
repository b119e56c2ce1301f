#include "spigot/radius/client.h"

#include <sys/socket.h>

#include <bitset>
#include <cassert>

#include "spigot/crypto/random.h"

namespace spigot::radius {

namespace {

constexpr std::size_t kIdsPerSpace = 256;  // RFC 2865 3: the Identifier is one octet
constexpr std::size_t kRecvSlots = 16;     // datagrams read per readable event

std::optional<std::string> Validate(const ClientOptions& o) {
  if (o.servers.empty()) return "radius: no server";
  for (const auto& s : o.servers) {
    if (!s.valid()) return "radius: a server address is not valid";
  }
  if (o.secret.empty()) return "radius: the shared secret is empty";
  if (o.timeout.count() <= 0) return "radius: timeout must be positive";
  if (o.max_outstanding == 0) return "radius: max_outstanding must be positive";
  if (o.nas_identifier.size() > kMaxAttributeValueLen) return "radius: nas_identifier is longer than 253 octets";
  return std::nullopt;
}

}  // namespace

struct Client::Config {
  ClientOptions options;
  std::vector<std::string> names;  // options.servers[i].ToString()
};

// One UDP socket and, per server it talks to, that server's 256 identifiers.
struct Client::Socket {
  struct IdSpace {
    std::array<Handle, kIdsPerSpace> owner{};  // 0: free
    std::bitset<kIdsPerSpace> used_before;     // tells a late reply from one to a never-used id
    std::size_t in_use = 0;
    std::uint8_t next = 0;                     // round-robin: a freed id is reused last
  };
  std::unique_ptr<io::UdpSocket> udp;
  int family = AF_UNSPEC;
  std::map<std::string, IdSpace> spaces;  // by server address
};

struct Client::Request {
  Handle handle = 0;
  AccessRequest request;
  Done done;
  std::shared_ptr<const Config> config;  // as it was at Send()
  io::Clock::TimePoint started{};
  std::vector<bool> tried;               // per config->options.servers
  std::size_t server = 0;                // index into config->options.servers
  std::optional<std::size_t> socket;     // index into sockets_ while an identifier is held
  std::uint8_t id = 0;
  Authenticator authenticator{};
  Bytes packet;                          // what goes on the wire, identical on each retransmit
  unsigned transmissions = 0;            // to the current server
  io::EventLoop::TimerId timer = 0;

  const std::string& server_name() const { return config->names[server]; }
  const io::Endpoint& server_endpoint() const { return config->options.servers[server]; }
};

// ---------------------------------------------------------------- lifetime

std::unique_ptr<Client> Client::Create(io::EventLoop& loop, ClientOptions options, std::string* error) {
  if (auto problem = Validate(options)) {
    if (error != nullptr) *error = *problem;
    return nullptr;
  }
  auto config = std::make_shared<Config>();
  for (const auto& s : options.servers) config->names.push_back(s.ToString());
  config->options = std::move(options);
  return std::unique_ptr<Client>(new Client(loop, std::move(config)));
}

Client::Client(io::EventLoop& loop, std::shared_ptr<const Config> config)
    : loop_(loop), config_(std::move(config)), alive_(std::make_shared<bool>(true)) {}

Client::~Client() {
  *alive_ = false;
  for (auto& [handle, r] : requests_) {
    if (r->timer != 0) loop_.CancelTimer(r->timer);
  }
  requests_.clear();
  for (auto& s : sockets_) loop_.RemoveReader(s->udp->fd());
}

bool Client::Reconfigure(ClientOptions options, std::string* error) {
  if (auto problem = Validate(options)) {
    if (error != nullptr) *error = *problem;
    return false;
  }
  auto config = std::make_shared<Config>();
  for (const auto& s : options.servers) config->names.push_back(s.ToString());
  config->options = std::move(options);
  config_ = std::move(config);
  return true;
}

// ---------------------------------------------------------------- requests

Client::Handle Client::Send(AccessRequest request, Done done) {
  if (requests_.size() >= config_->options.max_outstanding) {
    ++stats_.refused_full;
    return 0;
  }
  auto r = std::make_unique<Request>();
  r->handle = next_handle_++;
  r->request = std::move(request);
  r->done = std::move(done);
  r->config = config_;
  r->started = loop_.clock().Now();
  r->tried.assign(r->config->options.servers.size(), false);
  r->server = *NextServer(*r);  // a request that tried nothing always has one

  const Handle handle = r->handle;
  Request& ref = *r;
  requests_.emplace(handle, std::move(r));
  if (!AllocateId(ref)) {
    // No socket (EMFILE and the like): give up on the loop, not inside Send().
    ++stats_.send_errors;
    ref.timer = loop_.AddTimer("radius.unsent", io::EventLoop::Duration::zero(), [this, handle] {
      auto it = requests_.find(handle);
      if (it == requests_.end()) return;
      it->second->timer = 0;
      ++stats_.timeouts;
      Reply reply;
      reply.rtt = std::chrono::duration_cast<std::chrono::microseconds>(loop_.clock().Now() - it->second->started);
      Finish(handle, std::move(reply));
    });
    ++stats_.requests;
    return handle;
  }
  if (!StartOnServer(ref)) {
    ReleaseId(ref);
    requests_.erase(handle);
    ++stats_.refused_invalid;
    return 0;
  }
  ++stats_.requests;
  return handle;
}

void Client::Cancel(Handle handle) {
  auto it = requests_.find(handle);
  if (it == requests_.end()) return;
  Request& r = *it->second;
  if (r.timer != 0) loop_.CancelTimer(r.timer);
  ReleaseId(r);
  requests_.erase(it);
}

// Needs an identifier already (AllocateId). false: the request cannot be encoded.
bool Client::StartOnServer(Request& r) {
  const ClientOptions& o = r.config->options;
  crypto::RandomBytes(r.authenticator);
  AccessRequestFields fields;
  fields.user_name = r.request.user_name;
  fields.nas_identifier = o.nas_identifier;
  fields.nas_ip = o.nas_ip;
  fields.called_station = r.request.called_station;
  fields.calling_station = r.request.calling_station;
  fields.framed_mtu = o.framed_mtu;
  fields.state = r.request.state;
  fields.eap_message = r.request.eap_message;
  auto packet = BuildAccessRequest(fields, r.id, r.authenticator, o.secret);
  if (!packet) return false;
  r.packet = std::move(*packet);
  r.tried[r.server] = true;
  ++servers_[r.server_name()].requests;
  r.transmissions = 0;
  Transmit(r);
  return true;
}

void Client::Transmit(Request& r) {
  assert(r.socket);
  if (!sockets_[*r.socket]->udp->SendTo(r.server_endpoint(), r.packet)) ++stats_.send_errors;
  ++r.transmissions;
  const Handle handle = r.handle;
  r.timer = loop_.AddTimer("radius.retransmit", r.config->options.timeout, [this, handle] { OnRetransmitTimer(handle); });
}

void Client::OnRetransmitTimer(Handle handle) {
  auto it = requests_.find(handle);
  if (it == requests_.end()) return;
  Request& r = *it->second;
  r.timer = 0;
  if (r.transmissions <= r.config->options.retries) {
    ++stats_.retransmits;
    Transmit(r);
    return;
  }

  // The server left every transmission unanswered.
  ServerState& failed = servers_[r.server_name()];
  ++failed.timeouts;
  failed.dead_until = loop_.clock().Now() + r.config->options.dead_time;
  ReleaseId(r);
  while (auto next = NextServer(r)) {
    ++stats_.failovers;
    r.server = *next;
    if (!AllocateId(r)) {
      ++stats_.send_errors;
      r.tried[r.server] = true;
      continue;
    }
    if (StartOnServer(r)) return;
    ReleaseId(r);  // not reached: the same fields encoded for the first server
    break;
  }
  ++stats_.timeouts;
  Reply reply;
  reply.rtt = std::chrono::duration_cast<std::chrono::microseconds>(loop_.clock().Now() - r.started);
  Finish(handle, std::move(reply));
}

// The first untried server that is not dead; when every server is dead, the first untried one.
std::optional<std::size_t> Client::NextServer(const Request& r) const {
  const auto& names = r.config->names;
  bool all_dead = true;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (!IsDead(names[i])) {
      all_dead = false;
      if (!r.tried[i]) return i;
    }
  }
  if (all_dead) {
    for (std::size_t i = 0; i < names.size(); ++i) {
      if (!r.tried[i]) return i;
    }
  }
  return std::nullopt;
}

bool Client::IsDead(const std::string& server) const {
  auto it = servers_.find(server);
  return it != servers_.end() && it->second.dead_until && loop_.clock().Now() < *it->second.dead_until;
}

void Client::Finish(Handle handle, Reply reply) {
  auto it = requests_.find(handle);
  if (it == requests_.end()) return;
  std::unique_ptr<Request> r = std::move(it->second);
  requests_.erase(it);
  if (r->timer != 0) loop_.CancelTimer(r->timer);
  ReleaseId(*r);
  Done done = std::move(r->done);
  r.reset();
  // Last: `done` may destroy this Client.
  if (done) done(std::move(reply));
}

// ---------------------------------------------------------------- identifiers and sockets

bool Client::AllocateId(Request& r) {
  const int family = r.server_endpoint().family();
  for (std::size_t i = 0;; ++i) {
    if (i == sockets_.size() && !OpenSocket(family)) return false;
    Socket& s = *sockets_[i];
    if (s.family != family) continue;
    Socket::IdSpace& space = s.spaces[r.server_name()];
    if (space.in_use == kIdsPerSpace) continue;
    for (std::size_t k = 0; k < kIdsPerSpace; ++k) {
      const std::uint8_t id = static_cast<std::uint8_t>(space.next + k);
      if (space.owner[id] != 0) continue;
      space.owner[id] = r.handle;
      space.used_before.set(id);
      ++space.in_use;
      space.next = static_cast<std::uint8_t>(id + 1);
      r.socket = i;
      r.id = id;
      return true;
    }
  }
}

void Client::ReleaseId(Request& r) {
  if (!r.socket) return;
  Socket::IdSpace& space = sockets_[*r.socket]->spaces[r.server_name()];
  assert(space.owner[r.id] == r.handle);
  space.owner[r.id] = 0;
  --space.in_use;
  r.socket.reset();
}

std::optional<std::size_t> Client::OpenSocket(int family) {
  const auto any = io::Endpoint::Parse(family == AF_INET6 ? "::" : "0.0.0.0", 0);
  auto udp = io::UdpSocket::Bind(*any, {});
  if (udp == nullptr) return std::nullopt;
  const std::size_t index = sockets_.size();
  if (!loop_.AddReader(udp->fd(), [this, index] { OnReadable(index); })) return std::nullopt;
  auto s = std::make_unique<Socket>();
  s->udp = std::move(udp);
  s->family = family;
  sockets_.push_back(std::move(s));
  return index;
}

// ---------------------------------------------------------------- replies

void Client::OnReadable(std::size_t socket_index) {
  // One batch per event: the loop is level-triggered and calls again while more are queued.
  if (recv_buffer_.empty()) recv_buffer_.resize(kRecvSlots * kMaxPacketLen);
  std::array<io::RecvSlot, kRecvSlots> slots;
  for (std::size_t i = 0; i < kRecvSlots; ++i) {
    slots[i].buffer = std::span(recv_buffer_).subspan(i * kMaxPacketLen, kMaxPacketLen);
  }
  const io::BatchResult got = sockets_[socket_index]->udp->RecvBatch(slots);
  const std::shared_ptr<bool> alive = alive_;
  for (std::size_t i = 0; i < got.count; ++i) {
    // A datagram cut at 4096 octets lost only padding: Length is at most 4096.
    HandleDatagram(socket_index, slots[i].peer, slots[i].buffer.first(slots[i].length));
    if (!*alive) return;
  }
}

void Client::HandleDatagram(std::size_t socket_index, const io::Endpoint& from, std::span<const std::uint8_t> datagram) {
  Socket& s = *sockets_[socket_index];
  auto space_it = s.spaces.find(from.ToString());
  if (space_it == s.spaces.end()) {
    ++stats_.dropped.wrong_source;
    return;
  }
  if (datagram.size() < kHeaderLen) {
    ++stats_.dropped.malformed;
    return;
  }
  const Socket::IdSpace& space = space_it->second;
  const std::uint8_t id = datagram[1];
  const Handle handle = space.owner[id];
  if (handle == 0) {
    if (space.used_before.test(id)) {
      ++stats_.dropped.late;
    } else {
      ++stats_.dropped.unknown_id;
    }
    return;
  }
  Request& r = *requests_.at(handle);
  const auto& secret = r.config->options.secret;
  switch (CheckReply(datagram, r.authenticator, secret)) {
    case ReplyCheck::kOk: break;
    case ReplyCheck::kMalformed: ++stats_.dropped.malformed; return;
    case ReplyCheck::kBadAuthenticator: ++stats_.dropped.bad_authenticator; return;
    case ReplyCheck::kBadMessageAuthenticator: ++stats_.dropped.bad_message_authenticator; return;
  }
  const std::optional<Packet> packet = Parse(datagram);  // CheckReply() parsed it already
  Reply reply;
  static_cast<ReplyAttributes&>(reply) = ReadReply(*packet, r.authenticator, secret);
  switch (static_cast<Code>(packet->code)) {
    case Code::kAccessAccept:
      reply.outcome = Reply::Outcome::kAccept;
      ++stats_.accepts;
      break;
    case Code::kAccessReject:
      reply.outcome = Reply::Outcome::kReject;
      ++stats_.rejects;
      break;
    default:
      reply.outcome = Reply::Outcome::kChallenge;
      ++stats_.challenges;
      break;
  }
  reply.rtt = std::chrono::duration_cast<std::chrono::microseconds>(loop_.clock().Now() - r.started);
  ++stats_.rtt.count;
  stats_.rtt.sum += reply.rtt;
  stats_.rtt.max = std::max(stats_.rtt.max, reply.rtt);
  servers_[r.server_name()].dead_until.reset();  // it answers
  Finish(handle, std::move(reply));
}

Client::Stats Client::stats() const {
  Stats out = stats_;
  out.outstanding = requests_.size();
  out.sockets = sockets_.size();
  for (const auto& name : config_->names) {
    ServerStats s;
    s.address = name;
    s.dead = IsDead(name);
    if (auto it = servers_.find(name); it != servers_.end()) {
      s.requests = it->second.requests;
      s.timeouts = it->second.timeouts;
    }
    out.servers.push_back(std::move(s));
  }
  return out;
}

}  // namespace spigot::radius
