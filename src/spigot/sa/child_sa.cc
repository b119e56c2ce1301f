#include "spigot/sa/child_sa.h"

namespace spigot::sa {

namespace {
bool Below(std::uint64_t soft, std::uint64_t hard) { return soft == 0 || hard == 0 || soft < hard; }

std::uint64_t LimitOrMax(std::uint64_t limit) {
  return limit == 0 ? std::numeric_limits<std::uint64_t>::max() : limit;
}

TimePoint DeadlineOrMax(TimePoint start, std::chrono::seconds life) {
  return life.count() == 0 ? TimePoint::max() : start + life;
}
}  // namespace

bool Lifetimes::Valid() const {
  if (soft.time.count() < 0 || hard.time.count() < 0) return false;
  return Below(static_cast<std::uint64_t>(soft.time.count()),
               static_cast<std::uint64_t>(hard.time.count())) &&
         Below(soft.bytes, hard.bytes) && Below(soft.packets, hard.packets);
}

const char* ToString(LifetimeAction a) {
  switch (a) {
    case LifetimeAction::kNone: return "none";
    case LifetimeAction::kRekey: return "rekey";
    case LifetimeAction::kDelete: return "delete";
  }
  return "?";
}

ChildSa::ChildSa(const ChildSaParams& p, TimePoint now)
    : inbound{p.inbound_spi, esp::ReplayWindow(p.replay_window, p.esn)},
      outbound{p.outbound_spi, p.esn, 1},
      soft_bytes_(LimitOrMax(p.lifetimes.soft.bytes)),
      hard_bytes_(LimitOrMax(p.lifetimes.hard.bytes)),
      soft_packets_(LimitOrMax(p.lifetimes.soft.packets)),
      hard_packets_(LimitOrMax(p.lifetimes.hard.packets)),
      installed_at_(now),
      soft_at_(DeadlineOrMax(now, p.lifetimes.soft.time)),
      hard_at_(DeadlineOrMax(now, p.lifetimes.hard.time)),
      rekey_of_(p.rekey_of),
      suite_(p.suite) {
  keymat_[Index(Direction::kInbound)].Assign(p.inbound_keymat);
  keymat_[Index(Direction::kOutbound)].Assign(p.outbound_keymat);
}

LifetimeAction ChildSa::CheckTime(TimePoint now) {
  if (now >= hard_at_) return LifetimeAction::kDelete;
  if (!soft_fired_ && now >= soft_at_) {
    soft_fired_ = true;
    return LifetimeAction::kRekey;
  }
  return LifetimeAction::kNone;
}

}  // namespace spigot::sa
