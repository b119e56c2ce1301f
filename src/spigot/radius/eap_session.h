// EAP through RADIUS (RFC 3579) as an eap::ServerSession: remote_auth = "eap-radius". The
// gateway asks for the identity itself (EAP-Request/Identity, as RFC 3579 2.1 allows a NAS to),
// then passes every EAP response of the peer to the RADIUS servers in an Access-Request and
// their EAP request back, until an Access-Accept (with the MSK in MS-MPPE-Recv-Key and
// -Send-Key, RFC 2548) or an Access-Reject. The method inside (MSCHAPv2, TLS, ...) is the
// RADIUS server's business; nothing here looks into it.
//
// Every step waits for a RADIUS answer, so Receive() answers later, from the client's callback
// on the control loop (radius::Client never calls back inside Send()). Destroying the session
// cancels its request in flight.
#pragma once

#include <memory>
#include <string>

#include "spigot/eap/eap.h"
#include "spigot/radius/client.h"

namespace spigot::radius {

class EapSession final : public eap::ServerSession {
 public:
  // `calling_station` / `called_station`: the peer's and the gateway's IKE addresses.
  EapSession(std::shared_ptr<Client> client, std::string calling_station, std::string called_station,
             Admission admit);
  ~EapSession() override;
  EapSession(const EapSession&) = delete;
  EapSession& operator=(const EapSession&) = delete;

  eap::Method method() const override { return eap::Method::kRadius; }
  eap::Bytes Start() override;
  void Receive(std::span<const std::uint8_t> packet, Done done) override;
  // The EAP identity: the RADIUS User-Name.
  const std::string& user() const override { return user_; }
  const crypto::SecureBytes& msk() const override { return msk_; }
  const eap::Authorization& authorization() const override { return authorization_; }

 private:
  void OnReply(Reply reply, Done done);
  // An EAP-Failure the gateway makes itself (RADIUS gave none: a timeout, a refusal).
  Step Fail(std::string reason, bool checked);

  std::shared_ptr<Client> client_;
  std::string calling_station_;
  std::string called_station_;
  Admission admit_;
  std::string user_;
  Bytes state_;  // the last Access-Challenge's State, echoed in the next request
  std::uint8_t identifier_ = 0;  // of the last EAP request the peer was sent
  Client::Handle in_flight_ = 0;
  bool done_ = false;
  crypto::SecureBytes msk_;
  eap::Authorization authorization_;
};

}  // namespace spigot::radius
