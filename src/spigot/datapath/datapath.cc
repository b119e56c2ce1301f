#include "spigot/datapath/datapath.h"

#include <algorithm>

#include <cstring>

namespace spigot::datapath {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

void Add(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) { c.fetch_add(n, kRelaxed); }

// The addresses of an IP packet: false if it is not a plausible IPv4/IPv6 header.
bool Addresses(std::span<const std::uint8_t> ip, policy::Family& family,
               std::span<const std::uint8_t>& src, std::span<const std::uint8_t>& dst) {
  if (ip.size() >= 20 && (ip[0] >> 4) == 4) {
    family = policy::Family::kIpv4;
    src = ip.subspan(12, 4);
    dst = ip.subspan(16, 4);
    return true;
  }
  if (ip.size() >= 40 && (ip[0] >> 4) == 6) {
    family = policy::Family::kIpv6;
    src = ip.subspan(8, 16);
    dst = ip.subspan(24, 16);
    return true;
  }
  return false;
}

// An SA's expanded keys, made again from its raw ones if ReleaseIdleKeys let them go. Null
// only if the key material does not fit the suite, which the install already refused.
template <typename SaT>
const crypto::EspCipher* ExpandedKeys(crypto::ImbManager& mgr, SaT& sa) {
  sa.used = true;
  if (sa.cipher) [[likely]] return sa.cipher.get();
  auto cipher = std::make_unique<crypto::EspCipher>();
  if (!cipher->Init(mgr, sa.suite, sa.keymat)) return nullptr;
  sa.cipher = std::move(cipher);
  return sa.cipher.get();
}

// Expands the keys at install; false if the key material does not fit the suite.
template <typename SaT>
bool SetKeys(crypto::ImbManager& mgr, SaT& sa, crypto::EspSuite suite, const crypto::SecureBytes& keymat) {
  sa.suite = suite;
  sa.keymat = keymat;
  sa.used = true;  // a fresh SA keeps its keys for at least one whole period
  return ExpandedKeys(mgr, sa) != nullptr;
}

// ReleaseIdleKeys for one SA: true if its keys were freed. An SA with a crypto job (in flight,
// or abandoned and still read by the engine) is referenced by that job, so use_count() > 1.
template <typename SaT>
bool ReleaseIfIdle(const std::shared_ptr<SaT>& sa) {
  if (!sa || !sa->cipher) return false;
  if (sa->used) {
    sa->used = false;
    return false;
  }
  if (sa.use_count() != 1) return false;
  sa->cipher.reset();  // ~EspCipher wipes the expanded keys
  return true;
}

}  // namespace

// ---------------------------------------------------------------- inbound

InboundPath::InboundPath(Counters& counters, const policy::Spd& spd)
    : counters_(counters), spd_(spd) {}

void InboundPath::UseEngine(engine::EngineMonitor& monitor, std::size_t ring) {
  pipeline_ = std::make_unique<engine::CryptoPipeline>(monitor, ring, kCryptoSlotSize);
  jobs_.assign(pipeline_->capacity(), Job{});
}

bool InboundPath::Install(InboundSpec spec) { return mailbox_.Push(std::move(spec)); }

bool InboundPath::Remove(std::uint32_t spi) { return mailbox_.Push(spi); }

bool InboundPath::MovePeer(std::vector<std::uint32_t> spis, const io::Endpoint& peer) {
  return mailbox_.Push(Move{std::move(spis), peer});
}

void InboundPath::ApplyCommands() {
  mailbox_.Drain([this](Command& c) {
    if (auto* spec = std::get_if<InboundSpec>(&c)) {
      auto sa = std::make_shared<Sa>();
      sa->state = esp::InboundState{spec->spi, esp::ReplayWindow(spec->replay_window, spec->esn)};
      sa->policy = spec->policy;
      sa->selectors = std::move(spec->selectors);
      sa->counters = spec->counters;
      sa->spi = spec->spi;
      sa->report_first = spec->report_first_packet;
      sa->peer = spec->peer;
      if (!SetKeys(crypto::ImbManager::ForThisThread(), *sa, spec->suite, spec->keymat)) return;
      sas_[spec->spi] = std::move(sa);
    } else if (auto* move = std::get_if<Move>(&c)) {
      for (std::uint32_t spi : move->spis) {
        auto it = sas_.find(spi);
        if (it == sas_.end()) continue;
        it->second->peer = move->peer;
        it->second->reported = {};
      }
    } else {
      sas_.erase(std::get<std::uint32_t>(c));
    }
  });
}

InboundPath::Verdict InboundPath::Process(crypto::ImbManager& mgr, policy::Spd::Reader& reader,
                                          esp::PacketView& pkt,
                                          std::span<const std::uint8_t>& ike,
                                          io::Clock::TimePoint now, const io::Endpoint& from) {
  std::span<const std::uint8_t> inner;
  switch (esp::ClassifyUdpEncap(pkt.bytes(), inner)) {
    case esp::UdpPayload::kIke:
      ike = inner;
      return Verdict::kIke;
    case esp::UdpPayload::kKeepalive:
      Add(counters_.keepalives);
      return Verdict::kDrop;
    case esp::UdpPayload::kMalformed:
      Add(counters_.malformed);
      return Verdict::kDrop;
    case esp::UdpPayload::kEsp:
      break;
  }
  std::uint32_t spi = 0;
  esp::PeekSpi(pkt.bytes(), spi);
  // Commands are taken before each receive batch; one pushed while this batch was being read
  // may install this very SA: the control thread installed it before sending the IKE message
  // that made the peer use it (make-before-break), the data path only has not seen it yet.
  // Take them now (one atomic load when there are none) rather than drop the peer's first
  // packet on it. Queued and batched packets hold their own SA, so a removal among the
  // commands cannot pull one from under them.
  ApplyCommands();
  auto it = sas_.find(spi);
  if (it == sas_.end()) {
    Add(counters_.unknown_spi);
    return Verdict::kDrop;
  }
  if (pipeline_ && !pipeline_->Bypass()) return Queue(mgr, it->second, pkt, now, from);
  Sa& sa = *it->second;
  const crypto::EspCipher* cipher = ExpandedKeys(mgr, sa);
  if (cipher == nullptr) return Dropped(esp::Status::kMalformed);
  if (!pipeline_ && esp::MultiBuffer(sa.suite)) return Batch(it->second, *cipher, pkt, from, mgr);
  std::uint8_t next_header = 0;
  const std::size_t wire_len = pkt.length;
  const std::uint64_t highest = sa.state.replay.highest();
  const esp::Status st = esp::Open(mgr, *cipher, sa.state, pkt, next_header);
  return Opened(sa, st, pkt, wire_len, reader, from, sa.state.replay.highest() > highest);
}

std::size_t InboundPath::ReleaseIdleKeys() {
  std::size_t n = 0;
  for (auto& [spi, sa] : sas_) n += ReleaseIfIdle(sa);
  return n;
}

std::size_t InboundPath::expanded_keys() const {
  std::size_t n = 0;
  for (const auto& [spi, sa] : sas_) n += sa->cipher != nullptr;
  return n;
}

InboundPath::Verdict InboundPath::Dropped(esp::Status status) {
  switch (status) {
    case esp::Status::kReplay: Add(counters_.replay); break;
    case esp::Status::kBadIcv: Add(counters_.bad_icv); break;
    case esp::Status::kDummy: Add(counters_.dummy); break;
    case esp::Status::kUnknownSpi: Add(counters_.unknown_spi); break;
    default: Add(counters_.malformed); break;
  }
  return Verdict::kDrop;
}

InboundPath::Verdict InboundPath::Opened(Sa& sa, esp::Status status, esp::PacketView& pkt,
                                         std::size_t wire_len, policy::Spd::Reader& reader,
                                         const io::Endpoint& from, bool newest) {
  if (status != esp::Status::kOk) return Dropped(status);
  // RFC 4301 5.2: a decrypted packet must match the SA's selectors (its source among the
  // peer's, its destination among ours).
  policy::Family family;
  std::span<const std::uint8_t> src, dst;
  if (!Addresses(pkt.bytes(), family, src, dst)) {
    Add(counters_.malformed);
    return Verdict::kDrop;
  }
  bool allowed = false;
  if (!sa.selectors.empty()) {
    for (const Selector& sel : sa.selectors) {
      if (sel.remote.family == family && sel.remote.Contains(src) && sel.local.Contains(dst)) {
        allowed = true;
        break;
      }
    }
  } else {
    auto spd = reader.Lock();
    allowed = spd->Allows(sa.policy, family, src, dst);
  }
  if (!allowed) {
    Add(counters_.selector_mismatch);
    return Verdict::kDrop;
  }
  Add(counters_.rx_packets);
  Add(counters_.rx_bytes, pkt.length);
  if (sa.counters) {
    Add(sa.counters->packets);
    Add(sa.counters->rx_packets);
    Add(sa.counters->bytes, wire_len);
  }
  if (sa.report_first) {
    sa.report_first = false;
    if (first_packet_) first_packet_(sa.spi);
  }
  // RFC 7296 2.23: only an authentic packet, and only a new one (not a replay of an old packet
  // from elsewhere), may tell that the peer moved. The control thread decides whether to follow.
  if (newest && sa.peer.valid() && from.valid() && !(from == sa.peer) && !(from == sa.reported)) {
    if (new_source_ && new_source_(sa.spi, from)) sa.reported = from;
  }
  return Verdict::kDeliver;
}

InboundPath::Verdict InboundPath::Queue(crypto::ImbManager& mgr, const std::shared_ptr<Sa>& sa,
                                        const esp::PacketView& pkt, io::Clock::TimePoint now,
                                        const io::Endpoint& from) {
  const crypto::EspCipher* cipher = ExpandedKeys(mgr, *sa);
  if (cipher == nullptr) return Dropped(esp::Status::kMalformed);
  std::size_t slot;
  std::span<std::uint8_t> buf;
  if (!pipeline_->Reserve(slot, buf)) {
    Add(counters_.crypto_ring_full);
    return Verdict::kDrop;
  }
  if (pkt.length > buf.size()) {
    Add(counters_.malformed);
    return Verdict::kDrop;
  }
  // The receive buffer is reused by the next batch; the job's copy lives in its slot.
  std::memcpy(buf.data(), pkt.bytes().data(), pkt.length);
  Job& job = jobs_[slot];
  job.pkt = esp::PacketView{buf, 0, pkt.length};
  job.wire_len = pkt.length;
  job.from = from;
  // Replay check now, in arrival order; checked again when the packet is finished.
  const esp::Status st = esp::OpenPrepare(*cipher, sa->state, job.pkt, job.op);
  if (st != esp::Status::kOk) return Dropped(st);
  job.sa = sa;  // keeps the SA, and so its keys, until the job is finished
  pipeline_->Commit(slot, *cipher, job.op, buf.data(), now);
  return Verdict::kQueued;
}

InboundPath::Verdict InboundPath::Batch(const std::shared_ptr<Sa>& sa,
                                        const crypto::EspCipher& cipher,
                                        const esp::PacketView& pkt, const io::Endpoint& from,
                                        crypto::ImbManager& mgr) {
  Pending& p = batch_pending_.emplace_back();
  p.pkt = pkt;
  p.wire_len = pkt.length;
  p.from = from;
  // Replay check now, in arrival order; checked again when the packet is finished.
  const esp::Status st = esp::OpenPrepare(cipher, sa->state, p.pkt, p.op);
  if (st != esp::Status::kOk) {
    batch_pending_.pop_back();
    return Dropped(st);
  }
  p.sa = sa;
  p.cipher = &cipher;
  if (batch_pending_.size() - batch_ran_ == esp::CryptoBatch::kCapacity) RunBatch(mgr);
  return Verdict::kQueued;
}

void InboundPath::RunBatch(crypto::ImbManager& mgr) {
  if (batch_ran_ == batch_pending_.size()) return;
  batch_.Clear();
  for (std::size_t i = batch_ran_; i < batch_pending_.size(); ++i) {
    const Pending& p = batch_pending_[i];
    batch_.Add(*p.cipher, p.op, p.pkt.buffer.data() + p.pkt.offset);
  }
  batch_.Run(mgr);
  for (std::size_t i = batch_ran_; i < batch_pending_.size(); ++i)
    batch_pending_[i].ok = batch_.ok(i - batch_ran_);
  batch_ran_ = batch_pending_.size();
}

void InboundPath::FinishBatch(crypto::ImbManager& mgr, policy::Spd::Reader& reader,
                              const DeliverFn& deliver) {
  if (batch_pending_.empty()) return;
  RunBatch(mgr);
  for (Pending& p : batch_pending_) {
    Sa& sa = *p.sa;
    const std::uint64_t highest = sa.state.replay.highest();
    std::uint8_t next_header = 0;
    // In arrival order, as Open() one at a time: the window moves only for authentic packets,
    // and a packet a predecessor made a replay is counted as one.
    const esp::Status st = p.ok ? esp::OpenFinish(sa.state, p.op, p.pkt, next_header)
                                : esp::OpenFailed(sa.state, p.op);
    if (Opened(sa, st, p.pkt, p.wire_len, reader, p.from, sa.state.replay.highest() > highest) ==
        Verdict::kDeliver)
      deliver(p.pkt.bytes());
  }
  batch_pending_.clear();  // capacity kept: no allocation in the next batch
  batch_ran_ = 0;
}

void InboundPath::FlushCrypto(crypto::ImbManager& mgr) {
  if (pipeline_) pipeline_->Flush(mgr);
}

void InboundPath::PollCrypto(crypto::ImbManager& mgr, policy::Spd::Reader& reader,
                             io::Clock::TimePoint now, const DeliverFn& deliver) {
  if (!pipeline_) return;
  pipeline_->Poll(mgr, now, [&](std::size_t slot, engine::JobResult r) {
    Job& job = jobs_[slot];
    if (r == engine::JobResult::kAbandoned) {
      // The engine still reads the SA's cipher: the reference goes when the slot is reused.
      Add(counters_.crypto_abandoned);
      return;
    }
    Sa& sa = *job.sa;
    esp::Status st = esp::Status::kBadIcv;
    std::uint8_t next_header = 0;
    const std::uint64_t highest = sa.state.replay.highest();
    if (r == engine::JobResult::kOk) st = esp::OpenFinish(sa.state, job.op, job.pkt, next_header);
    else st = esp::OpenFailed(sa.state, job.op);
    if (Opened(sa, st, job.pkt, job.wire_len, reader, job.from, sa.state.replay.highest() > highest) ==
        Verdict::kDeliver)
      deliver(job.pkt.bytes());
    job.sa.reset();
  });
}

// ---------------------------------------------------------------- outbound

OutboundPath::OutboundPath(Counters& counters, const policy::Spd& spd, AcquireFn acquire,
                           ExhaustedFn exhausted, std::shared_ptr<HeldPackets> held)
    : counters_(counters), spd_(spd), acquire_fn_(std::move(acquire)),
      exhausted_fn_(std::move(exhausted)),
      held_(held ? std::move(held) : std::make_shared<HeldPackets>()) {}

void OutboundPath::UseEngine(engine::EngineMonitor& monitor, std::size_t ring) {
  pipeline_ = std::make_unique<engine::CryptoPipeline>(monitor, ring, kCryptoSlotSize);
  jobs_.assign(pipeline_->capacity(), Job{});
}

bool OutboundPath::SetSa(OutboundSpec spec) { return mailbox_.Push(std::move(spec)); }
bool OutboundPath::ClearSa(policy::PolicyId policy, std::uint32_t spi) { return mailbox_.Push(Clear{policy, spi}); }
bool OutboundPath::MovePeer(std::vector<std::uint32_t> spis, const io::Endpoint& peer,
                            const io::IpAddress& source) {
  return mailbox_.Push(Move{std::move(spis), peer, source});
}
bool OutboundPath::SetTrap(policy::PolicyId policy, bool trap) { return mailbox_.Push(Trap{policy, trap}); }
bool OutboundPath::AcquireFailed(policy::PolicyId policy) { return mailbox_.Push(Failed{policy}); }

void OutboundPath::ApplyCommands(crypto::ImbManager& mgr, const SendFn& send) {
  mailbox_.Drain([&](Command& c) {
    if (auto* spec = std::get_if<OutboundSpec>(&c)) {
      auto sa = std::make_shared<Sa>();
      sa->state = esp::OutboundState{spec->spi, spec->esn, 1};
      sa->next_seq = spec->next_seq;
      sa->state.shared_next_seq = sa->next_seq.get();
      sa->route = Route{spec->peer, spec->source};
      sa->counters = spec->counters;
      if (!SetKeys(mgr, *sa, spec->suite, spec->keymat)) return;
      Policy& p = policies_[spec->policy];
      p.sa = std::move(sa);
      // Packets held for this policy (or for the trap policy whose acquire it answers) go out
      // first, in order.
      // The first thread to take the SA sends every thread's held packets, under the lock:
      // another thread's own SA command waits for it there, so its newer packets cannot
      // overtake the held ones.
      auto send_held = [&](std::span<const std::uint8_t> held) {
        std::uint8_t buf[2048 + esp::kSealHeadroom + esp::kSealTailroom];
        if (held.size() > 2048) return;
        std::memcpy(buf + esp::kSealHeadroom, held.data(), held.size());
        esp::PacketView pkt{{buf, sizeof(buf)}, esp::kSealHeadroom, held.size()};
        const Route* route = nullptr;
        if (Seal(mgr, spec->policy, p, pkt, route) != Verdict::kSend) return;
        if (send)
          send(*route, pkt.bytes());
        else
          Add(counters_.send_failed);
      };
      held_->With([&](policy::AcquireQueue& q) {
        q.Flush(spec->policy, send_held);
        if (spec->flush_held != policy::kNoPolicy) q.Flush(spec->flush_held, send_held);
      });
    } else if (auto* clear = std::get_if<Clear>(&c)) {
      auto it = policies_.find(clear->policy);
      if (it != policies_.end() && it->second.sa && it->second.sa->state.spi == clear->spi)
        it->second.sa.reset();
    } else if (auto* trap = std::get_if<Trap>(&c)) {
      policies_[trap->policy].trap = trap->trap;
    } else if (auto* failed = std::get_if<Failed>(&c)) {
      Add(counters_.acquire_dropped,
          held_->With([&](policy::AcquireQueue& q) { return q.Drop(failed->policy); }));
    } else if (auto* move = std::get_if<Move>(&c)) {
      // Every SA of the set at once, between two packets: none goes to a half-moved set.
      for (auto& [id, p] : policies_) {
        if (p.sa && std::find(move->spis.begin(), move->spis.end(), p.sa->state.spi) != move->spis.end())
          p.sa->route = Route{move->peer, move->source};
      }
    }
  });
}

OutboundPath::Verdict OutboundPath::SealFailed(policy::PolicyId id, Sa& sa, esp::Status status) {
  if (status == esp::Status::kSeqExhausted) {
    Add(counters_.seq_exhausted);
    if (!sa.exhausted_reported && exhausted_fn_) exhausted_fn_(id, sa.state.spi);
    sa.exhausted_reported = true;
  } else {
    Add(counters_.malformed);
  }
  return Verdict::kDrop;
}

void OutboundPath::CountSent(Sa& sa, std::size_t inner_len, std::size_t esp_len) {
  Add(counters_.tx_packets);
  Add(counters_.tx_bytes, inner_len);
  if (sa.counters) {
    Add(sa.counters->packets);
    Add(sa.counters->bytes, esp_len);
  }
}

OutboundPath::Verdict OutboundPath::Seal(crypto::ImbManager& mgr, policy::PolicyId id, Policy& p,
                                         esp::PacketView& pkt, const Route*& route) {
  Sa& sa = *p.sa;
  const std::size_t inner_len = pkt.length;
  const std::uint8_t next_header =
      (pkt.bytes()[0] >> 4) == 6 ? esp::kNextHeaderIpv6 : esp::kNextHeaderIpv4;
  const crypto::EspCipher* cipher = ExpandedKeys(mgr, sa);
  if (cipher == nullptr) return SealFailed(id, sa, esp::Status::kMalformed);
  const esp::Status st = esp::Seal(mgr, *cipher, sa.state, next_header, pkt);
  if (st != esp::Status::kOk) return SealFailed(id, sa, st);
  CountSent(sa, inner_len, pkt.length);
  route = &sa.route;
  return Verdict::kSend;
}

std::size_t OutboundPath::ReleaseIdleKeys() {
  std::size_t n = 0;
  for (auto& [id, p] : policies_) n += ReleaseIfIdle(p.sa);
  return n;
}

std::size_t OutboundPath::expanded_keys() const {
  std::size_t n = 0;
  for (const auto& [id, p] : policies_) n += p.sa && p.sa->cipher != nullptr;
  return n;
}

OutboundPath::Verdict OutboundPath::Queue(crypto::ImbManager& mgr, policy::PolicyId id, Policy& p,
                                          const esp::PacketView& pkt,
                                          std::chrono::steady_clock::time_point now) {
  std::size_t slot;
  std::span<std::uint8_t> buf;
  if (!pipeline_->Reserve(slot, buf)) {
    Add(counters_.crypto_ring_full);
    return Verdict::kDrop;
  }
  if (kCryptoSlotHead + pkt.length + esp::kSealTailroom > buf.size()) {
    Add(counters_.malformed);
    return Verdict::kDrop;
  }
  // The read buffer is reused by the next batch; the job's copy lives in its slot.
  std::memcpy(buf.data() + kCryptoSlotHead, pkt.bytes().data(), pkt.length);
  Job& job = jobs_[slot];
  job.pkt = esp::PacketView{buf, kCryptoSlotHead, pkt.length};
  job.inner_len = pkt.length;
  Sa& sa = *p.sa;
  const std::uint8_t next_header =
      (pkt.bytes()[0] >> 4) == 6 ? esp::kNextHeaderIpv6 : esp::kNextHeaderIpv4;
  // The sequence number is taken now, in TUN order, on this thread.
  esp::CryptoOp op;
  const crypto::EspCipher* cipher = ExpandedKeys(mgr, sa);
  if (cipher == nullptr) return SealFailed(id, sa, esp::Status::kMalformed);
  const esp::Status st = esp::SealPrepare(*cipher, sa.state, next_header, job.pkt, op);
  if (st != esp::Status::kOk) return SealFailed(id, sa, st);
  job.sa = p.sa;  // keeps the SA, and so its keys, until the job is finished
  pipeline_->Commit(slot, *cipher, op, job.pkt.buffer.data() + job.pkt.offset, now);
  return Verdict::kQueued;
}

OutboundPath::Verdict OutboundPath::Batch(crypto::ImbManager& mgr, policy::PolicyId id, Policy& p,
                                          esp::PacketView& pkt) {
  Sa& sa = *p.sa;
  const crypto::EspCipher* cipher = ExpandedKeys(mgr, sa);
  if (cipher == nullptr) return SealFailed(id, sa, esp::Status::kMalformed);
  const std::uint8_t next_header =
      (pkt.bytes()[0] >> 4) == 6 ? esp::kNextHeaderIpv6 : esp::kNextHeaderIpv4;
  Pending& q = batch_pending_.emplace_back();
  q.inner_len = pkt.length;
  q.pkt = pkt;
  // The sequence number is taken now, in TUN order.
  const esp::Status st = esp::SealPrepare(*cipher, sa.state, next_header, q.pkt, q.op);
  if (st != esp::Status::kOk) {
    batch_pending_.pop_back();
    return SealFailed(id, sa, st);
  }
  q.sa = p.sa;
  q.cipher = cipher;
  if (batch_pending_.size() - batch_ran_ == esp::CryptoBatch::kCapacity) RunBatch(mgr);
  return Verdict::kQueued;
}

void OutboundPath::RunBatch(crypto::ImbManager& mgr) {
  if (batch_ran_ == batch_pending_.size()) return;
  batch_.Clear();
  for (std::size_t i = batch_ran_; i < batch_pending_.size(); ++i) {
    const Pending& q = batch_pending_[i];
    batch_.Add(*q.cipher, q.op, q.pkt.buffer.data() + q.pkt.offset);
  }
  batch_.Run(mgr);  // a seal always succeeds
  batch_ran_ = batch_pending_.size();
}

void OutboundPath::FinishBatch(crypto::ImbManager& mgr, const SendFn& send) {
  if (batch_pending_.empty()) return;
  RunBatch(mgr);
  for (Pending& q : batch_pending_) {
    CountSent(*q.sa, q.inner_len, q.pkt.length);
    send(q.sa->route, q.pkt.bytes());
  }
  batch_pending_.clear();  // capacity kept: no allocation in the next batch
  batch_ran_ = 0;
}

void OutboundPath::FlushCrypto(crypto::ImbManager& mgr) {
  if (pipeline_) pipeline_->Flush(mgr);
}

void OutboundPath::PollCrypto(crypto::ImbManager& mgr, io::Clock::TimePoint now,
                              const SendFn& send) {
  if (!pipeline_) return;
  pipeline_->Poll(mgr, now, [&](std::size_t slot, engine::JobResult r) {
    Job& job = jobs_[slot];
    if (r != engine::JobResult::kOk) {
      // kAbandoned: the engine still reads the SA's cipher, so the reference stays until the
      // slot is reused. (A seal has no other failure.)
      Add(counters_.crypto_abandoned);
      return;
    }
    CountSent(*job.sa, job.inner_len, job.pkt.length);
    send(job.sa->route, job.pkt.bytes());
    job.sa.reset();
  });
}

OutboundPath::Verdict OutboundPath::Process(crypto::ImbManager& mgr, policy::Spd::Reader& reader,
                                            esp::PacketView& pkt, const Route*& route,
                                            std::chrono::steady_clock::time_point now) {
  policy::Family family;
  std::span<const std::uint8_t> src, dst;
  if (!Addresses(pkt.bytes(), family, src, dst)) {
    Add(counters_.malformed);
    return Verdict::kDrop;
  }
  // Commands pushed before this packet was read are in force for it (make-before-break: the
  // control thread pushes an SA before the SPD entry that sends traffic to it). One atomic
  // load when there are none.
  if (mailbox_.pending()) ApplyCommands(mgr, send_held_);
  policy::PolicyId id;
  {
    auto spd = reader.Lock();
    id = spd->LookupOutbound(family, src, dst);
  }
  if (id == policy::kNoPolicy) {
    Add(counters_.no_policy);
    return Verdict::kDrop;
  }
  // Trap: hold the packet and ask for an SA (DESIGN.md "How a packet flows"). Under the held
  // packets' lock, which the control thread pushes commands for several threads under
  // (PathSet): a command pending here may be this policy's SA, which another thread may already
  // have flushed the held packets with, so the packet would open a second acquire for a policy
  // that has its SA. Apply the commands and look again (twice at most: commands may keep coming).
  policy::HoldResult r;
  for (int attempt = 0;; ++attempt) {
    auto it = policies_.find(id);
    if (it != policies_.end() && it->second.sa) {
      if (pipeline_ && !pipeline_->Bypass()) return Queue(mgr, id, it->second, pkt, now);
      if (!pipeline_ && esp::MultiBuffer(it->second.sa->suite)) return Batch(mgr, id, it->second, pkt);
      return Seal(mgr, id, it->second, pkt, route);
    }
    if (it == policies_.end() || !it->second.trap) {
      Add(counters_.no_sa);
      return Verdict::kDrop;
    }
    bool retry = false;
    r = held_->With([&](policy::AcquireQueue& q) {
      if (attempt < 2 && mailbox_.pending()) {
        retry = true;
        return policy::HoldResult{};
      }
      return q.Hold(id, pkt.bytes(), now);
    });
    if (!retry) break;
    ApplyCommands(mgr, send_held_);
  }
  if (r.status != policy::HoldStatus::kQueued) {
    // r.ntstatus is STATUS_IPSEC_QUEUE_OVERFLOW (0xC000A010).
    Add(counters_.no_sa_queue_full);
    return Verdict::kDrop;
  }
  if (r.new_acquire) {
    Add(counters_.acquires);
    if (acquire_fn_ && !acquire_fn_(id))
      Add(counters_.acquire_dropped, held_->With([&](policy::AcquireQueue& q) { return q.Drop(id); }));
  }
  return Verdict::kHeld;
}

void OutboundPath::ExpireAcquires(std::chrono::steady_clock::time_point now) {
  const policy::ExpireResult r = held_->With([&](policy::AcquireQueue& q) { return q.Expire(now); });
  Add(counters_.acquire_dropped, r.packets);
}

}  // namespace spigot::datapath
