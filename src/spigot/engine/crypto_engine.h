// Crypto engines for the ESP data path, and the watchdog that keeps traffic flowing when one
// stops completing work (DESIGN.md, failure cause 3: "offload engine stalls and the queue
// backs up").
//
// This header is the engine interface, the job protocol between an engine and the job's owner,
// and the watchdog. The engines are in their own files:
//   InlineEngine  (inline_engine.h) intel-ipsec-mb on the calling thread: today's data path,
//                 and the fallback.
//   AsyncEngine   (async_engine.h) a lookaside engine: worker threads behind a bounded
//                 submission queue, the way hardware offload and crypto accelerators work.
//   FaultEngine   (fault_engine.h) test only: an AsyncEngine that stalls, slows down or fails
//                 jobs on command.
//
// A CryptoPipeline belongs to one data-path thread. Its ring of job slots is both the bound on
// work in flight and the completion queue: slots complete in any order but are delivered in
// submission order, so packets of one SA leave (and arrive) in order. Each slot owns a packet
// buffer; the SA stays alive through the caller's per-slot context. Nothing allocates per job.
//
// Job ownership, through one atomic word per slot (ticket << 8 | state):
//   owner:  kFree -> kQueued (Commit)          kQueued -> kRevoked (watchdog takes it back)
//           kDone -> kFree (delivered)         kRunning -> kAbandoned (engine hung mid-job)
//   engine: kQueued -> kRunning (Claim)        kRunning -> kDone (Complete)
//           kAbandoned -> kFree (Complete of an abandoned job hands the slot back)
// The ticket changes on every Commit, so a job reference an engine held across a revoke can
// never claim the slot's next job: a late completion is discarded without touching the buffer.
//
// EngineMonitor is the watchdog's shared half: the engine's state (ok / stalled), counters, and
// the probe that brings a stalled engine back.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "spigot/crypto/esp_cipher.h"
#include "spigot/esp/esp.h"
#include "spigot/io/clock.h"

namespace spigot::engine {

// Counters and job words are read and bumped without ordering unless a comment says otherwise.
inline constexpr auto kRelaxed = std::memory_order_relaxed;


enum class JobState : std::uint8_t { kFree, kQueued, kRunning, kDone, kRevoked, kAbandoned };

enum class JobResult : std::uint8_t {
  kOk,           // sealed, or opened with a valid ICV
  kAuthFailed,   // open: the ICV did not verify (the packet is forged or corrupt)
  kEngineError,  // the engine failed the job; its buffer contents are undefined
  kAbandoned,    // delivered by CryptoPipeline only: the engine kept the buffer, packet lost
};

// Wakes a data-path thread when jobs it owns complete. At most one eventfd write per wake-up:
// the owner calls Clear() before it looks at its ring, engines call Notify() after completing.
class CompletionSignal {
 public:
  CompletionSignal();
  ~CompletionSignal();
  CompletionSignal(const CompletionSignal&) = delete;
  CompletionSignal& operator=(const CompletionSignal&) = delete;
  int fd() const { return fd_; }
  void Notify();
  void Clear();

 private:
  int fd_;
  std::atomic<bool> pending_{false};
};

struct CryptoJob {
  // Set by the owner before Commit, read-only to the engine afterwards.
  const crypto::EspCipher* cipher = nullptr;
  esp::CryptoOp op;
  std::uint8_t* esp = nullptr;  // the ESP packet (SPI first)
  CompletionSignal* signal = nullptr;
  io::Clock::TimePoint deadline;
  JobResult result = JobResult::kOk;  // written by the engine before it publishes kDone
  std::atomic<std::uint64_t> word{0};
};

// What an engine holds: the job and the ticket it was submitted under.
struct JobRef {
  CryptoJob* job = nullptr;
  std::uint64_t ticket = 0;
};

// For engines. Claim() before touching the job; false: the owner took it back (or reused the
// slot), the job must be dropped unseen. Complete() publishes the result and wakes the owner.
bool Claim(const JobRef& ref);
void Complete(const JobRef& ref, JobResult result);
// Runs the job's cipher step with the calling thread's intel-ipsec-mb manager.
JobResult Execute(crypto::ImbManager& mgr, const CryptoJob& job);
// Runs claimed jobs' cipher steps together and completes each (an engine's batch): the CBC +
// HMAC ones through the multi-buffer lanes, kCapacity at a time (esp::CryptoBatch), the rest
// one by one. `batch` is the caller's scratch.
void ExecuteAndComplete(crypto::ImbManager& mgr, esp::CryptoBatch& batch,
                        std::span<const JobRef> claimed);

struct EngineCounters {
  std::atomic<std::uint64_t> submitted{0};
  std::atomic<std::uint64_t> refused{0};    // submission queue full: the caller did them inline
  std::atomic<std::uint64_t> completed{0};
  std::atomic<std::uint64_t> late_discarded{0};  // claimed too late: already taken back
};

class CryptoEngine {
 public:
  virtual ~CryptoEngine() = default;
  virtual const char* name() const = 0;
  // Takes jobs in state kQueued. An engine that fails a job (kEngineError) must not have
  // written its buffer: the owner redoes it inline from the same bytes. Returns how many it accepted, always a prefix of `jobs`; the
  // caller must complete the rest itself. Thread-safe.
  virtual std::size_t Submit(std::span<const JobRef> jobs) = 0;
  // Joins the engine's threads; afterwards no job is touched. Idempotent.
  virtual void Stop() {}
  const EngineCounters& counters() const { return counters_; }
  // Jobs the engine claimed too late (already taken back) and dropped unseen.
  virtual std::uint64_t late_discarded() const {
    return counters_.late_discarded.load(std::memory_order_relaxed);
  }

 protected:
  EngineCounters counters_;
};

// "inline", "async" or "fault" (inline_engine.h, async_engine.h, fault_engine.h); nullptr for
// any other name.
std::unique_ptr<CryptoEngine> MakeEngine(const std::string& name);

class CryptoPipeline;

// The watchdog's shared state for one engine: whether it is in service, the counters, and the
// probe that decides when a stalled engine may have work again.
class EngineMonitor {
 public:
  enum class State : std::uint8_t { kOk, kStalled };
  struct Options {
    std::chrono::milliseconds stall_timeout{50};    // a job's deadline after its submission
    std::chrono::milliseconds probe_interval{100};  // one probe job at most this often
  };
  // For the log: what happened, with numbers. Called on the thread that noticed.
  struct Event {
    enum class Kind : std::uint8_t { kStalled, kFailed, kRecovered } kind;
    std::chrono::milliseconds late{0};         // kStalled: how far past its deadline the job was
    std::size_t in_flight = 0;                 // kStalled/kFailed: jobs taken back on that thread
    std::chrono::milliseconds stalled_for{0};  // kRecovered
    std::uint64_t probes = 0;                  // kRecovered: probes sent while stalled
  };
  using EventFn = std::function<void(const Event&)>;

  struct Stats {
    State state = State::kOk;
    std::uint64_t stalls = 0;      // times the engine was taken out of service
    std::uint64_t fallbacks = 0;   // jobs taken back and redone inline
    std::uint64_t failed = 0;      // jobs the engine completed with an error
    std::uint64_t abandoned = 0;   // jobs the engine kept mid-run: packet lost
    std::uint64_t completed = 0;   // jobs delivered by the engine
    std::uint64_t bypassed = 0;    // packets done inline because the engine was out of service
    std::uint64_t ring_full = 0;   // packets dropped: a pipeline's ring was full
    std::uint64_t refused = 0;     // jobs the engine's queue refused (done inline)
    std::uint64_t late_discarded = 0;
    std::uint64_t probes = 0;
    std::uint64_t in_flight = 0;
  };

  EngineMonitor(CryptoEngine& engine, Options options, EventFn on_event = {});
  ~EngineMonitor();
  CryptoEngine& engine() { return engine_; }
  const Options& options() const { return options_; }
  bool stalled() const { return state_.load(std::memory_order_acquire) == State::kStalled; }

  // From data-path threads, at least every probe_interval: sends a probe while stalled and
  // brings the engine back once a probe completed with the right answer. Cheap when ok.
  void Tick(io::Clock::TimePoint now);
  // A pipeline saw a missed deadline (or an engine error): out of service. Counts once.
  void ReportStall(io::Clock::TimePoint now, Event event);
  Stats stats() const;

 private:
  friend class CryptoPipeline;
  void Register(CryptoPipeline* p);
  void Unregister(CryptoPipeline* p);

  CryptoEngine& engine_;
  Options options_;
  EventFn on_event_;
  std::atomic<State> state_{State::kOk};
  std::atomic<std::uint64_t> stalls_{0}, probes_{0};
  mutable std::mutex mu_;  // pipelines_ and the probe
  std::vector<CryptoPipeline*> pipelines_;
  io::Clock::TimePoint stalled_since_{};
  io::Clock::TimePoint next_probe_{};
  std::uint64_t probes_this_stall_ = 0;
  bool probe_out_ = false;
  io::Clock::TimePoint probe_deadline_{};
  // The probe: AES-GCM-128 over a fixed packet under a fixed key; the inline result is the
  // expected answer, so an engine that completes with garbage stays out of service.
  crypto::EspCipher probe_cipher_;
  std::vector<std::uint8_t> probe_plain_, probe_expected_, probe_buffer_;
  CryptoJob probe_job_;
  std::uint64_t probe_ticket_ = 0;
};

// One data-path thread's jobs. Not thread-safe: the owning thread calls everything.
class CryptoPipeline {
 public:
  struct Counters {
    std::atomic<std::uint64_t> completed{0}, fallbacks{0}, failed{0}, abandoned{0}, bypassed{0},
        ring_full{0}, refused{0}, in_flight{0};
  };
  // `capacity` slots (rounded up to a power of two) of `buffer_size` bytes each.
  CryptoPipeline(EngineMonitor& monitor, std::size_t capacity, std::size_t buffer_size);
  ~CryptoPipeline();
  CryptoPipeline(const CryptoPipeline&) = delete;
  CryptoPipeline& operator=(const CryptoPipeline&) = delete;

  // True when the caller should do the work inline now, in place: the engine is out of service
  // and nothing of this thread's is in flight (so order is kept). Counts a bypass.
  bool Bypass();
  // The next free slot's index and buffer, or false when the ring is full (the caller drops
  // the packet; counted in ring_full).
  bool Reserve(std::size_t& slot, std::span<std::uint8_t>& buffer);
  // Queues the reserved slot's job; Flush() hands queued jobs to the engine.
  void Commit(std::size_t slot, const crypto::EspCipher& cipher, const esp::CryptoOp& op,
              std::uint8_t* esp, io::Clock::TimePoint now);
  void Flush(crypto::ImbManager& mgr);
  // Delivers finished jobs in submission order: deliver(slot, result) with kOk, kAuthFailed
  // or kAbandoned. A job past its deadline, failed by the engine, or in flight when the
  // engine went out of service is redone inline here first. The slot's buffer stays valid
  // until the next Reserve().
  template <typename Fn>
  void Poll(crypto::ImbManager& mgr, io::Clock::TimePoint now, Fn&& deliver) {
    signal_.Clear();
    while (in_flight_ > 0) {
      const std::size_t slot = head_ & mask_;
      JobResult r;
      if (!Take(mgr, now, slot, r)) break;
      deliver(slot, r);
      ++head_;
      --in_flight_;
    }
    counters_.in_flight.store(in_flight_, std::memory_order_relaxed);
  }
  // How long the owner may sleep: until the oldest job's deadline (at least 1 ms), or -1
  // (no limit from here) when nothing is in flight.
  int WaitMs(io::Clock::TimePoint now) const;
  int signal_fd() const { return signal_.fd(); }
  std::size_t in_flight() const { return in_flight_; }
  std::size_t capacity() const { return mask_ + 1; }
  const Counters& counters() const { return counters_; }

 private:
  struct Slot {
    CryptoJob job;
    std::uint64_t ticket = 0;
  };
  // The head slot's outcome, or false if it is still the engine's and in time.
  bool Take(crypto::ImbManager& mgr, io::Clock::TimePoint now, std::size_t slot, JobResult& r);
  JobResult Redo(crypto::ImbManager& mgr, Slot& s);

  EngineMonitor& monitor_;
  std::size_t mask_;
  std::size_t buffer_size_;
  std::unique_ptr<Slot[]> slots_;
  std::unique_ptr<std::uint8_t[]> buffers_;
  std::vector<JobRef> staged_;  // committed, not yet submitted (at most capacity)
  std::uint64_t head_ = 0, tail_ = 0;
  std::size_t in_flight_ = 0;
  CompletionSignal signal_;
  Counters counters_;
};

}  // namespace spigot::engine
