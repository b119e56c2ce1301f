#include "spigot/ike/fragments.h"

#include "spigot/crypto/secure_bytes.h"

namespace spigot::ike {

FragmentCounters& FragmentCounters::operator+=(const FragmentCounters& o) {
  messages_fragmented += o.messages_fragmented;
  fragments_sent += o.fragments_sent;
  fragments_received += o.fragments_received;
  messages_reassembled += o.messages_reassembled;
  not_negotiated += o.not_negotiated;
  bad_icv += o.bad_icv;
  malformed += o.malformed;
  duplicate += o.duplicate;
  too_many += o.too_many;
  too_large += o.too_large;
  stale += o.stale;
  timed_out += o.timed_out;
  replaced += o.replaced;
  return *this;
}

bool CheckFragmentNumbers(std::uint16_t number, std::uint16_t total, FragmentCounters& counters) {
  if (number == 0 || total == 0 || number > total) {
    ++counters.malformed;
    return false;
  }
  if (total > kMaxFragments) {
    ++counters.too_many;
    return false;
  }
  return true;
}

bool Reassembly::Wanted(std::uint32_t message_id, std::uint16_t number, std::uint16_t total,
                        FragmentCounters& counters) const {
  if (!active() || message_id != message_id_ || total > total_) return true;
  if (total < total_) {
    ++counters.stale;
    return false;
  }
  if (have_[number - 1]) {
    ++counters.duplicate;
    return false;
  }
  return true;
}

Reassembly::Verdict Reassembly::Add(std::uint32_t message_id, std::uint16_t number,
                                    std::uint16_t total, PayloadType first, Bytes content,
                                    TimePoint now, FragmentCounters& counters) {
  if (!CheckFragmentNumbers(number, total, counters) || !Wanted(message_id, number, total, counters)) {
    crypto::Wipe(content.data(), content.size());
    return Verdict::kDropped;
  }
  if (active() && (message_id != message_id_ || total > total_)) {
    // Another message (the peer moved on, or this one was an old one's), or the sender
    // re-fragmented smaller (RFC 7383 2.5.2: start over with this fragment).
    ++counters.replaced;
    Clear();
  }
  if (!active()) {
    message_id_ = message_id;
    total_ = total;
    count_ = 0;
    bytes_ = 0;
    started_ = now;
    parts_.assign(total, Bytes());
    have_.assign(total, false);
  }
  if (bytes_ + content.size() > kMaxReassemblyBytes) {
    ++counters.too_large;
    crypto::Wipe(content.data(), content.size());
    Clear();
    return Verdict::kDropped;
  }
  ++counters.fragments_received;
  bytes_ += content.size();
  if (number == 1) first_ = first;
  parts_[number - 1] = std::move(content);
  have_[number - 1] = true;
  ++count_;
  if (count_ < total_) return Verdict::kStored;
  ++counters.messages_reassembled;
  return Verdict::kComplete;
}

Bytes Reassembly::TakeMessage(PayloadType& first) {
  Bytes out;
  out.reserve(bytes_);
  for (const Bytes& p : parts_) out.insert(out.end(), p.begin(), p.end());
  first = first_;
  Clear();
  return out;
}

bool Reassembly::Expire(TimePoint now, FragmentCounters& counters) {
  if (!active() || now < deadline()) return false;
  ++counters.timed_out;
  Clear();
  return true;
}

void Reassembly::Clear() {
  for (Bytes& p : parts_) crypto::Wipe(p.data(), p.size());
  std::vector<Bytes>().swap(parts_);
  std::vector<bool>().swap(have_);
  total_ = 0;
  count_ = 0;
  bytes_ = 0;
  first_ = PayloadType::kNone;
}

}  // namespace spigot::ike
