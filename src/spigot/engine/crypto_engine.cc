#include "spigot/engine/crypto_engine.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "spigot/engine/async_engine.h"
#include "spigot/engine/fault_engine.h"
#include "spigot/engine/inline_engine.h"

namespace spigot::engine {
namespace {

constexpr std::uint64_t Word(std::uint64_t ticket, JobState s) {
  return ticket << 8 | static_cast<std::uint64_t>(s);
}
constexpr JobState StateOf(std::uint64_t word) { return static_cast<JobState>(word & 0xFF); }

}  // namespace

// ---------------------------------------------------------------- signal

CompletionSignal::CompletionSignal() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
CompletionSignal::~CompletionSignal() { close(fd_); }

void CompletionSignal::Notify() {
  if (pending_.exchange(true, std::memory_order_acq_rel)) return;
  const std::uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(fd_, &one, sizeof(one));
}

void CompletionSignal::Clear() {
  if (!pending_.load(std::memory_order_acquire)) return;
  std::uint64_t v;
  [[maybe_unused]] ssize_t n = read(fd_, &v, sizeof(v));
  // After the read: a completion that lands from here on writes again.
  pending_.store(false, std::memory_order_release);
}

// ---------------------------------------------------------------- jobs

bool Claim(const JobRef& ref) {
  std::uint64_t expected = Word(ref.ticket, JobState::kQueued);
  return ref.job->word.compare_exchange_strong(expected, Word(ref.ticket, JobState::kRunning),
                                               std::memory_order_acquire, kRelaxed);
}

void Complete(const JobRef& ref, JobResult result) {
  ref.job->result = result;
  std::uint64_t expected = Word(ref.ticket, JobState::kRunning);
  if (ref.job->word.compare_exchange_strong(expected, Word(ref.ticket, JobState::kDone),
                                            std::memory_order_acq_rel, std::memory_order_acquire)) {
    if (ref.job->signal != nullptr) ref.job->signal->Notify();
    return;
  }
  // The owner gave up on the job while it ran (kAbandoned): the slot is free again now.
  if (StateOf(expected) == JobState::kAbandoned)
    ref.job->word.store(Word(ref.ticket, JobState::kFree), std::memory_order_release);
}

JobResult Execute(crypto::ImbManager& mgr, const CryptoJob& job) {
  return esp::RunCrypto(mgr, *job.cipher, job.op, job.esp) ? JobResult::kOk
                                                           : JobResult::kAuthFailed;
}

void ExecuteAndComplete(crypto::ImbManager& mgr, esp::CryptoBatch& batch,
                        std::span<const JobRef> claimed) {
  while (!claimed.empty()) {
    const std::size_t n = std::min(claimed.size(), esp::CryptoBatch::kCapacity);
    batch.Clear();
    for (std::size_t i = 0; i < n; ++i) {
      const CryptoJob& job = *claimed[i].job;
      batch.Add(*job.cipher, job.op, job.esp);
    }
    batch.Run(mgr);
    for (std::size_t i = 0; i < n; ++i)
      Complete(claimed[i], batch.ok(i) ? JobResult::kOk : JobResult::kAuthFailed);
    claimed = claimed.subspan(n);
  }
}

// ---------------------------------------------------------------- engines

std::unique_ptr<CryptoEngine> MakeEngine(const std::string& name) {
  if (name == "inline") return std::make_unique<InlineEngine>();
  if (name == "async") return std::make_unique<AsyncEngine>(AsyncEngine::Options{});
  if (name == "fault") return std::make_unique<FaultEngine>(AsyncEngine::Options{});
  return nullptr;
}

// ---------------------------------------------------------------- monitor

EngineMonitor::EngineMonitor(CryptoEngine& engine, Options options, EventFn on_event)
    : engine_(engine), options_(options), on_event_(std::move(on_event)) {
  crypto::ImbManager& mgr = crypto::ImbManager::ForThisThread();
  std::vector<std::uint8_t> key(crypto::SuiteInfo(crypto::EspSuite::kAesGcm128).keymat_len());
  for (std::size_t i = 0; i < key.size(); ++i) key[i] = static_cast<std::uint8_t>(0xA5 ^ i);
  probe_cipher_.Init(mgr, crypto::EspSuite::kAesGcm128, key);
  // A 64-byte IPv4 packet, sealed once inline for the expected answer.
  probe_plain_.assign(esp::kSealHeadroom + 64 + esp::kSealTailroom, 0);
  std::uint8_t* inner = probe_plain_.data() + esp::kSealHeadroom;
  for (std::size_t i = 0; i < 64; ++i) inner[i] = static_cast<std::uint8_t>(i);
  inner[0] = 0x45;
  inner[2] = 0;
  inner[3] = 64;
  esp::OutboundState out{0x50B0B0B0, false, 1};
  esp::PacketView pkt{probe_plain_, esp::kSealHeadroom, 64};
  esp::CryptoOp op;
  esp::SealPrepare(probe_cipher_, out, esp::kNextHeaderIpv4, pkt, op);
  // probe_plain_ now holds the framed, not yet encrypted packet.
  probe_expected_ = probe_plain_;
  esp::RunCrypto(mgr, probe_cipher_, op, probe_expected_.data() + pkt.offset);
  probe_buffer_ = probe_plain_;
  probe_job_.cipher = &probe_cipher_;
  probe_job_.op = op;
  probe_job_.esp = probe_buffer_.data() + pkt.offset;
}

EngineMonitor::~EngineMonitor() = default;

void EngineMonitor::Register(CryptoPipeline* p) {
  std::lock_guard<std::mutex> lock(mu_);
  pipelines_.push_back(p);
}

void EngineMonitor::Unregister(CryptoPipeline* p) {
  std::lock_guard<std::mutex> lock(mu_);
  pipelines_.erase(std::remove(pipelines_.begin(), pipelines_.end(), p), pipelines_.end());
}

void EngineMonitor::ReportStall(io::Clock::TimePoint now, Event event) {
  State expected = State::kOk;
  if (!state_.compare_exchange_strong(expected, State::kStalled, std::memory_order_acq_rel))
    return;
  stalls_.fetch_add(1, kRelaxed);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stalled_since_ = now;
    next_probe_ = now + options_.probe_interval;
    probes_this_stall_ = 0;
  }
  if (on_event_) on_event_(event);
}

void EngineMonitor::Tick(io::Clock::TimePoint now) {
  if (!stalled()) return;
  std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
  if (!lock.owns_lock()) return;  // the other data-path thread is on it
  if (probe_out_) {
    const std::uint64_t w = probe_job_.word.load(std::memory_order_acquire);
    const JobState s = StateOf(w);
    if (s == JobState::kDone) {
      probe_out_ = false;
      probe_job_.word.store(Word(probe_ticket_, JobState::kFree), kRelaxed);
      if (probe_job_.result == JobResult::kOk && probe_buffer_ == probe_expected_) {
        state_.store(State::kOk, std::memory_order_release);
        Event e{Event::Kind::kRecovered};
        e.stalled_for = std::chrono::duration_cast<std::chrono::milliseconds>(now - stalled_since_);
        e.probes = probes_this_stall_;
        lock.unlock();
        if (on_event_) on_event_(e);
        return;
      }
    } else if (s == JobState::kFree) {
      probe_out_ = false;  // it was abandoned mid-run and the engine has handed it back
    } else if (now >= probe_deadline_) {
      // Take it back if the engine has not started it; one that runs is waited for (its
      // buffer is the engine's until then), and no second probe goes out meanwhile.
      std::uint64_t expected = Word(probe_ticket_, JobState::kQueued);
      if (probe_job_.word.compare_exchange_strong(expected, Word(probe_ticket_, JobState::kRevoked)))
        probe_out_ = false;
    }
  }
  if (probe_out_ || now < next_probe_) return;
  next_probe_ = now + options_.probe_interval;
  ++probe_ticket_;
  probe_buffer_ = probe_plain_;  // same size: no allocation
  probe_job_.result = JobResult::kOk;
  probe_job_.word.store(Word(probe_ticket_, JobState::kQueued), std::memory_order_release);
  probe_deadline_ = now + options_.stall_timeout;
  probe_out_ = true;
  ++probes_this_stall_;
  probes_.fetch_add(1, kRelaxed);
  const JobRef next{&probe_job_, probe_ticket_};
  if (engine_.Submit({&next, 1}) == 0) {
    probe_job_.word.store(Word(probe_ticket_, JobState::kFree), kRelaxed);
    probe_out_ = false;
  }
}

EngineMonitor::Stats EngineMonitor::stats() const {
  Stats s;
  s.state = state_.load(std::memory_order_acquire);
  s.stalls = stalls_.load(kRelaxed);
  s.probes = probes_.load(kRelaxed);
  s.late_discarded = engine_.late_discarded();
  std::lock_guard<std::mutex> lock(mu_);
  for (const CryptoPipeline* p : pipelines_) {
    const CryptoPipeline::Counters& c = p->counters();
    s.completed += c.completed.load(kRelaxed);
    s.fallbacks += c.fallbacks.load(kRelaxed);
    s.failed += c.failed.load(kRelaxed);
    s.abandoned += c.abandoned.load(kRelaxed);
    s.bypassed += c.bypassed.load(kRelaxed);
    s.ring_full += c.ring_full.load(kRelaxed);
    s.refused += c.refused.load(kRelaxed);
    s.in_flight += c.in_flight.load(kRelaxed);
  }
  return s;
}

// ---------------------------------------------------------------- pipeline

CryptoPipeline::CryptoPipeline(EngineMonitor& monitor, std::size_t capacity,
                               std::size_t buffer_size)
    : monitor_(monitor), buffer_size_(buffer_size) {
  std::size_t n = 1;
  while (n < capacity) n <<= 1;
  mask_ = n - 1;
  slots_ = std::make_unique<Slot[]>(n);
  buffers_ = std::make_unique<std::uint8_t[]>(n * buffer_size);
  staged_.reserve(n);
  for (std::size_t i = 0; i < n; ++i) slots_[i].job.signal = &signal_;
  monitor_.Register(this);
}

CryptoPipeline::~CryptoPipeline() { monitor_.Unregister(this); }

bool CryptoPipeline::Bypass() {
  if (in_flight_ > 0 || !monitor_.stalled()) return false;
  counters_.bypassed.fetch_add(1, kRelaxed);
  return true;
}

bool CryptoPipeline::Reserve(std::size_t& slot, std::span<std::uint8_t>& buffer) {
  const std::size_t i = tail_ & mask_;
  // A slot the engine still holds (abandoned mid-run) is not reused before it hands it back.
  if (in_flight_ > mask_ ||
      StateOf(slots_[i].job.word.load(std::memory_order_acquire)) != JobState::kFree) {
    counters_.ring_full.fetch_add(1, kRelaxed);
    return false;
  }
  slot = i;
  buffer = {buffers_.get() + i * buffer_size_, buffer_size_};
  return true;
}

void CryptoPipeline::Commit(std::size_t slot, const crypto::EspCipher& cipher,
                            const esp::CryptoOp& op, std::uint8_t* esp, io::Clock::TimePoint now) {
  Slot& s = slots_[slot];
  s.job.cipher = &cipher;
  s.job.op = op;
  s.job.esp = esp;
  s.job.deadline = now + monitor_.options().stall_timeout;
  s.job.result = JobResult::kOk;
  ++s.ticket;
  s.job.word.store(Word(s.ticket, JobState::kQueued), std::memory_order_release);
  staged_.push_back(JobRef{&s.job, s.ticket});
  ++tail_;
  ++in_flight_;
}

void CryptoPipeline::Flush(crypto::ImbManager& mgr) {
  if (staged_.empty()) return;
  const std::size_t n = monitor_.engine().Submit(staged_);
  // Refused by a full engine queue: done here, still delivered in order by Poll().
  for (std::size_t i = n; i < staged_.size(); ++i) {
    const JobRef& ref = staged_[i];
    if (!Claim(ref)) continue;
    ref.job->result = Execute(mgr, *ref.job);
    ref.job->word.store(Word(ref.ticket, JobState::kDone), std::memory_order_release);
    counters_.refused.fetch_add(1, kRelaxed);
  }
  staged_.clear();
  counters_.in_flight.store(in_flight_, kRelaxed);
}

JobResult CryptoPipeline::Redo(crypto::ImbManager& mgr, Slot& s) {
  counters_.fallbacks.fetch_add(1, kRelaxed);
  return Execute(mgr, s.job);
}

bool CryptoPipeline::Take(crypto::ImbManager& mgr, io::Clock::TimePoint now, std::size_t slot,
                          JobResult& r) {
  Slot& s = slots_[slot];
  for (;;) {
    const std::uint64_t w = s.job.word.load(std::memory_order_acquire);
    const JobState state = StateOf(w);
    if (state == JobState::kDone) {
      r = s.job.result;
      if (r == JobResult::kEngineError) {
        counters_.failed.fetch_add(1, kRelaxed);
        EngineMonitor::Event e{EngineMonitor::Event::Kind::kFailed};
        e.in_flight = in_flight_;
        monitor_.ReportStall(now, e);
        // Contract: an engine fails a job without having written its buffer, so the job is
        // redone inline from the bytes the owner prepared.
        r = Redo(mgr, s);
      } else {
        counters_.completed.fetch_add(1, kRelaxed);
      }
      s.job.word.store(Word(s.ticket, JobState::kFree), std::memory_order_release);
      return true;
    }
    const bool late = now >= s.job.deadline;
    if (!late && !monitor_.stalled()) return false;
    if (late && !monitor_.stalled()) {
      EngineMonitor::Event e{EngineMonitor::Event::Kind::kStalled};
      e.late = std::chrono::duration_cast<std::chrono::milliseconds>(now - s.job.deadline) +
               monitor_.options().stall_timeout;
      e.in_flight = in_flight_;
      monitor_.ReportStall(now, e);
    }
    std::uint64_t expected = Word(s.ticket, JobState::kQueued);
    if (s.job.word.compare_exchange_strong(expected, Word(s.ticket, JobState::kRevoked),
                                           std::memory_order_acq_rel)) {
      r = Redo(mgr, s);
      s.job.word.store(Word(s.ticket, JobState::kFree), std::memory_order_release);
      return true;
    }
    if (StateOf(expected) == JobState::kRunning) {
      // The engine is inside this job and owns its buffer: it cannot be redone. It is given
      // up (the packet is lost and counted); the engine hands the slot back when it finishes.
      if (!late) return false;  // running in time: wait for it, it is nearly done
      if (s.job.word.compare_exchange_strong(expected, Word(s.ticket, JobState::kAbandoned),
                                             std::memory_order_acq_rel)) {
        counters_.abandoned.fetch_add(1, kRelaxed);
        r = JobResult::kAbandoned;
        return true;
      }
    }
    // It completed meanwhile: look again.
  }
}

int CryptoPipeline::WaitMs(io::Clock::TimePoint now) const {
  if (in_flight_ == 0) return -1;
  const Slot& s = slots_[head_ & mask_];
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(s.job.deadline - now).count();
  return static_cast<int>(std::clamp<std::int64_t>(left + 1, 1, 1000));
}

}  // namespace spigot::engine
