#include "spigot/datapath/path_set.h"

#include <algorithm>
#include <cassert>
#include <mutex>

#include "spigot/datapath/handoff.h"

namespace spigot::datapath {
namespace {

constexpr std::size_t kRoom = bounds::kDataplaneMailbox;

}  // namespace

void PathSet::Add(InboundPath& in, OutboundPath& out) {
  in_.push_back(&in);
  out_.push_back(&out);
}

void PathSet::Send(Command c) {
  if (!backlog_.empty() || !TryPush(c)) {
    backlog_.push_back(std::move(c));
    backlog_peak_ = std::max(backlog_peak_, backlog_.size());
  }
}

bool PathSet::TryPush(Command& c) {
  // Under the held packets' lock: a thread that holds a trap packet sees all of this command's
  // pushes pending, or none of them (HeldPackets).
  return held_->With([&c](policy::AcquireQueue&) {
    if (!c.fits()) return false;
    c.push();
    return true;
  });
}

PathSet::Command PathSet::ToEveryOutbound(std::function<bool(OutboundPath&)> push) {
  return Command{[this] {
                   return std::all_of(out_.begin(), out_.end(), [](const OutboundPath* o) {
                     return o->mailbox_depth() < kRoom;
                   });
                 },
                 [this, push = std::move(push)] {
                   for (OutboundPath* o : out_) {
                     [[maybe_unused]] const bool pushed = push(*o);
                     assert(pushed);
                   }
                 }};
}

void PathSet::InstallInbound(InboundSpec spec) {
  InboundPath* in = in_[OwnerOf(spec.spi, in_.size())];
  auto shared = std::make_shared<InboundSpec>(std::move(spec));
  Send({[in] { return in->mailbox_depth() < kRoom; },
        [in, shared] {
          [[maybe_unused]] const bool pushed = in->Install(std::move(*shared));
          assert(pushed);
        }});
}

void PathSet::RemoveInbound(std::uint32_t spi) {
  InboundPath* in = in_[OwnerOf(spi, in_.size())];
  Send({[in] { return in->mailbox_depth() < kRoom; },
        [in, spi] {
          [[maybe_unused]] const bool pushed = in->Remove(spi);
          assert(pushed);
        }});
}

void PathSet::SetOutbound(OutboundSpec spec) {
  if (out_.size() > 1 && !spec.next_seq) spec.next_seq = std::make_shared<std::atomic<std::uint64_t>>(1);
  auto shared = std::make_shared<OutboundSpec>(std::move(spec));
  Send(ToEveryOutbound([shared](OutboundPath& o) { return o.SetSa(*shared); }));
}

void PathSet::ClearOutbound(policy::PolicyId policy, std::uint32_t spi) {
  Send(ToEveryOutbound([policy, spi](OutboundPath& o) { return o.ClearSa(policy, spi); }));
}

void PathSet::SetTrap(policy::PolicyId policy, bool trap) {
  Send(ToEveryOutbound([policy, trap](OutboundPath& o) { return o.SetTrap(policy, trap); }));
}

void PathSet::AcquireFailed(policy::PolicyId policy) {
  Send(ToEveryOutbound([policy](OutboundPath& o) { return o.AcquireFailed(policy); }));
}

void PathSet::MovePeer(const std::vector<std::uint32_t>& spis_in,
                       const std::vector<std::uint32_t>& spis_out, const io::Endpoint& peer,
                       const io::IpAddress& source) {
  // Every outbound copy first, then the inbound owners, as with one thread.
  Send(ToEveryOutbound([spis_out, peer, source](OutboundPath& o) {
    return o.MovePeer(spis_out, peer, source);
  }));
  std::vector<std::vector<std::uint32_t>> by_owner(in_.size());
  for (std::uint32_t spi : spis_in) by_owner[OwnerOf(spi, in_.size())].push_back(spi);
  for (std::size_t i = 0; i < in_.size(); ++i) {
    if (by_owner[i].empty() && in_.size() > 1) continue;
    InboundPath* in = in_[i];
    auto spis = std::make_shared<std::vector<std::uint32_t>>(std::move(by_owner[i]));
    Send({[in] { return in->mailbox_depth() < kRoom; },
          [in, spis, peer] {
            [[maybe_unused]] const bool pushed = in->MovePeer(std::move(*spis), peer);
            assert(pushed);
          }});
  }
}

void PathSet::Tick() {
  // In order, up to the first command a mailbox still refuses: a removal must not overtake
  // the install it undoes.
  std::size_t done = 0;
  while (done < backlog_.size() && TryPush(backlog_[done])) ++done;
  backlog_.erase(backlog_.begin(), backlog_.begin() + static_cast<std::ptrdiff_t>(done));
}

}  // namespace spigot::datapath
