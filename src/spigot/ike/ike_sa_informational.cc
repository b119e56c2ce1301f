// INFORMATIONAL, both roles (RFC 7296 1.4): DELETE of CHILD SAs (1.4.1) and of the IKE SA, and
// liveness checks (2.4). Our own requests are queued and sent by StartNext (ike_sa.cc).
#include "spigot/ike/ike_sa.h"

#include "spigot/ike/ike_sa_internal.h"

namespace spigot::ike {

using namespace internal;

void IkeSa::OnInformationalRequest(const Message& msg, TimePoint now) {
  std::vector<Payload> out;
  bool delete_ike = false;
  DeletePayload ours{ProtocolId::kEsp, 4, {}};
  for (const auto& p : msg.payloads) {
    const auto* d = std::get_if<DeletePayload>(&p.body);
    if (d == nullptr) continue;
    if (d->protocol == ProtocolId::kIke) {
      delete_ike = true;
    } else if (d->protocol == ProtocolId::kEsp) {
      // 1.4.1: the peer names the SPIs it receives with; answer with ours for the same SAs.
      for (const Bytes& spi : d->spis) {
        if (const ChildSaInfo* c = FindChildByOutbound(SpiFromBytes(spi))) {
          const std::uint32_t in = c->spi_in;
          ours.spis.push_back(ChildSpiBytes(in));
          RemoveChildBySpi(in);
        }
      }
    }
  }
  if (!ours.spis.empty()) out.push_back({PayloadType::kDelete, ours});
  SendResponse(msg.header, std::move(out), true);
  if (!delete_ike) return;
  // 2.8.2: the peer deletes this IKE SA while our colliding rekey is unresolved here: its own
  // rekey won (it is the one that deletes the old SA), so its IKE SA takes the CHILD SAs.
  if (ike_collision_) CandidateTakesOver(now);
  Die(rekeyed_ ? "rekeyed" : "deleted by peer");
}

void IkeSa::OnInformationalResponse(const Message& msg, TimePoint now) {
  const RequestKind kind = outstanding_->kind;
  if (kind == RequestKind::kDeleteIke) {
    outstanding_.reset();
    return Die(rekeyed_ ? "rekeyed" : "deleted");
  }
  if (kind == RequestKind::kDeleteChild) {
    RemoveChildBySpi(pending_delete_spi_);
    pending_delete_spi_ = 0;
  }
  (void)msg;
  (void)now;
}

}  // namespace spigot::ike
