#include "spigot/radius/eap_session.h"

#include <utility>

#include "spigot/crypto/random.h"

namespace spigot::radius {

namespace {

constexpr std::size_t kMaxUserName = 253;  // one User-Name attribute

eap::Bytes EapCode(eap::Code code, std::uint8_t identifier) {
  eap::Packet p;
  p.code = code;
  p.identifier = identifier;
  return eap::Serialize(p);
}

}  // namespace

EapSession::EapSession(std::shared_ptr<Client> client, std::string calling_station, std::string called_station,
                       Admission admit)
    : client_(std::move(client)),
      calling_station_(std::move(calling_station)),
      called_station_(std::move(called_station)),
      admit_(std::move(admit)) {
  crypto::RandomBytes(std::span<std::uint8_t>(&identifier_, 1));
}

EapSession::~EapSession() { client_->Cancel(in_flight_); }

eap::Bytes EapSession::Start() {
  eap::Packet p;
  p.code = eap::Code::kRequest;
  p.identifier = identifier_;
  p.type = static_cast<std::uint8_t>(eap::Type::kIdentity);
  return eap::Serialize(p);
}

EapSession::Step EapSession::Fail(std::string reason, bool checked) {
  done_ = true;
  Step step;
  step.status = Status::kFailure;
  step.reply = EapCode(eap::Code::kFailure, identifier_);
  step.reason = std::move(reason);
  step.password_checked = checked;
  return step;
}

void EapSession::Receive(std::span<const std::uint8_t> packet, Done done) {
  if (done_) return done(Fail("EAP message after the login ended", false));
  if (in_flight_ != 0) return done(Fail("EAP message while the RADIUS server still answers the last one", false));
  const auto p = eap::Parse(packet);
  if (!p) return done(Fail("malformed EAP packet", false));
  if (p->code != eap::Code::kResponse) return done(Fail("EAP packet where a response is due", false));
  if (p->identifier != identifier_) return done(Fail("EAP response to another request (identifier)", false));
  if (user_.empty()) {
    // RFC 3579 2.1: the NAS asked for the identity; it becomes the User-Name of every request.
    if (p->type != static_cast<std::uint8_t>(eap::Type::kIdentity)) return done(Fail("no EAP-Identity response", false));
    if (p->data.empty() || p->data.size() > kMaxUserName) return done(Fail("EAP identity empty or too long", false));
    user_.assign(p->data.begin(), p->data.end());
    if (admit_) {
      if (auto refusal = admit_(user_)) {
        Step step = Fail(std::move(*refusal), false);
        step.throttled = true;
        return done(std::move(step));
      }
    }
  }
  AccessRequest request;
  request.user_name = user_;
  request.eap_message.assign(packet.begin(), packet.end());
  request.state = state_;
  request.calling_station = calling_station_;
  request.called_station = called_station_;
  in_flight_ = client_->Send(std::move(request), [this, done](Reply reply) {
    in_flight_ = 0;
    OnReply(std::move(reply), done);
  });
  if (in_flight_ == 0) {
    done(Fail("RADIUS request refused: radius.max_requests are in flight, or the request cannot be encoded", false));
  }
}

void EapSession::OnReply(Reply reply, Done done) {
  const auto eap = eap::Parse(reply.eap_message);
  switch (reply.outcome) {
    case Reply::Outcome::kTimeout:
      return done(Fail("no RADIUS server answered", false));
    case Reply::Outcome::kReject: {
      Step step = Fail("Access-Reject from the RADIUS server", true);
      if (eap && eap->code == eap::Code::kFailure) step.reply = std::move(reply.eap_message);
      return done(std::move(step));
    }
    case Reply::Outcome::kChallenge:
      if (!eap || eap->code != eap::Code::kRequest) {
        return done(Fail("Access-Challenge without an EAP request in it", false));
      }
      identifier_ = eap->identifier;
      state_ = std::move(reply.state);
      return done(Step{Status::kContinue, std::move(reply.eap_message), {}, false, false});
    case Reply::Outcome::kAccept: {
      // RFC 7296 2.16: the final AUTH payloads need the MSK; a method without one (or a server
      // that does not send MS-MPPE keys) cannot finish an IKE login.
      if (reply.msk.empty()) return done(Fail("Access-Accept without MS-MPPE keys (no MSK for the final AUTH)", false));
      done_ = true;
      msk_ = std::move(reply.msk);
      authorization_.framed_ip4 = reply.framed_ip;
      authorization_.classes = std::move(reply.classes);
      Step step{Status::kSuccess, {}, {}, true, false};
      step.reply = eap && eap->code == eap::Code::kSuccess ? std::move(reply.eap_message)
                                                           : EapCode(eap::Code::kSuccess, identifier_);
      return done(std::move(step));
    }
  }
}

}  // namespace spigot::radius
