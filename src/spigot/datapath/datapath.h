// The ESP data path: what a data-path thread does with each packet. Each thread has one
// InboundPath and one OutboundPath (app/dataplane.h says how SAs are spread over threads).
//
//   OutboundPath (reads the thread's TUN queue): inner packet -> SPD lookup -> the policy's
//     current CHILD SA -> esp::Seal in place -> datagram for the peer's UDP 4500. No SA yet:
//     the packet is held in the bounded AcquireQueue and the control thread is asked to
//     negotiate; a full queue drops it and counts no_sa_queue_full (STATUS_IPSEC_QUEUE_OVERFLOW).
//   InboundPath (reads the thread's UDP 4500 socket): non-ESP marker -> IKE, handed to the control
//     thread; ESP -> SPI lookup -> replay check -> esp::Open -> selector check -> TUN.
//
// Expanded keys (crypto::EspCipher, ~1 KB per SA and direction for AES-GCM) are what an SA
// costs most; an idle tunnel does not need them. Each path keeps an SA's raw key material and
// expands it on install and again on the first packet after ReleaseIdleKeys() let it go (the
// thread calls that every kIdleKeysPeriod): 100,000 road warriors that are mostly quiet pay
// for the ones that send. Expanding again takes microseconds, once per waking SA.
//
// Batches (issue 14 item 3): without a crypto engine, the packets of CBC + HMAC SAs (what
// native Windows and Apple clients negotiate) are not sealed or opened one at a time. Process()
// does everything up to the cipher (SPD and SA lookup, sequence number or replay check) and
// returns kQueued; FinishBatch() runs the queued cipher steps through intel-ipsec-mb's
// multi-buffer lanes (esp::CryptoBatch) and finishes the packets in the order Process() saw
// them, with the same checks, counters and drop reasons as the per-packet path. The AEADs stay
// on their direct calls in Process(). With an engine, the engine batches (engine/).
//
// Each path's tables belong to its thread alone: no lock and no allocation per packet. The
// control thread changes them only through a bounded mailbox that the thread drains between
// batches and, when a command is pending, before the next packet (Process() looks: one atomic
// load). So a command pushed before a packet was read is in force for that packet: an SA
// installed before an IKE message is sent is in place before any packet that the message
// causes can arrive (make-before-break), on every thread the command went to (path_set.h).
//
// Trap policies' held packets are the exception to "its thread alone": all threads hold them in
// one HeldPackets (a lock, taken only for packets with no SA), so a policy raises one acquire
// and its held packets are bounded per gateway, not per thread.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <variant>
#include <vector>

#include "spigot/bounds.h"
#include "spigot/crypto/esp_cipher.h"
#include "spigot/crypto/secure_bytes.h"
#include "spigot/engine/crypto_engine.h"
#include "spigot/esp/esp.h"
#include "spigot/io/clock.h"
#include "spigot/io/endpoint.h"
#include "spigot/policy/acquire_queue.h"
#include "spigot/policy/spd.h"

namespace spigot::datapath {

// Per-CHILD-SA traffic, written by a data-path thread, read by the control thread.
struct SaCounters {
  std::atomic<std::uint64_t> bytes{0};    // both directions (volume lifetimes)
  std::atomic<std::uint64_t> packets{0};  // both directions
  std::atomic<std::uint64_t> rx_packets{0};  // authentic packets from the peer (DPD)
};

// The stats contract's packets_dropped, plus what else the data path counts. Relaxed atomics.
struct Counters {
  std::atomic<std::uint64_t> tx_packets{0}, tx_bytes{0}, rx_packets{0}, rx_bytes{0};
  std::atomic<std::uint64_t> replay{0}, bad_icv{0}, unknown_spi{0}, no_sa_queue_full{0},
      selector_mismatch{0}, malformed{0};
  std::atomic<std::uint64_t> no_policy{0};        // outbound packet no connection covers
  std::atomic<std::uint64_t> no_sa{0};            // covered, no SA, and not a trap policy
  std::atomic<std::uint64_t> seq_exhausted{0};    // SA out of sequence numbers, awaiting rekey
  std::atomic<std::uint64_t> ike_forward_refused{0};  // IKE on 4500 the control thread refused
  std::atomic<std::uint64_t> first_packet_refused{0};  // first-packet reports it refused
  std::atomic<std::uint64_t> new_source_refused{0};    // new-source reports it refused (retried)
  std::atomic<std::uint64_t> keepalives{0};
  std::atomic<std::uint64_t> dummy{0};            // next header 59 (RFC 4303 2.6)
  std::atomic<std::uint64_t> acquires{0};         // negotiations requested by traffic
  std::atomic<std::uint64_t> acquire_dropped{0};  // held packets dropped: negotiation failed
  std::atomic<std::uint64_t> send_failed{0}, tun_write_failed{0};
  std::atomic<std::uint64_t> crypto_ring_full{0};   // a crypto pipeline's ring was full
  std::atomic<std::uint64_t> crypto_abandoned{0};   // the engine kept the buffer past its deadline
};

// Packet buffers of a crypto pipeline's slots: the largest datagram a 1500-byte link carries,
// plus room for ESP to grow in front of (and behind) an inner packet.
inline constexpr std::size_t kCryptoSlotHead = 64;
inline constexpr std::size_t kCryptoSlotSize = 2048 + kCryptoSlotHead;

// One (local, remote) pair of a CHILD SA's traffic selectors.
struct Selector {
  policy::Prefix local;
  policy::Prefix remote;
};

struct InboundSpec {
  std::uint32_t spi = 0;
  crypto::EspSuite suite = crypto::EspSuite::kAesGcm128;
  crypto::SecureBytes keymat;
  bool esn = false;
  std::uint32_t replay_window = esp::kDefaultReplayWindow;
  // The inner packet's selector check (RFC 4301 5.2): the SA's own negotiated selectors when
  // there are any (its source in a remote prefix, its destination in a local one), else the
  // SPD's pairs of `policy`.
  policy::PolicyId policy = policy::kNoPolicy;
  std::vector<Selector> selectors;
  std::shared_ptr<SaCounters> counters;
  // Report the first authentic packet on this SA (InboundPath::OnFirstPacket): the new SA of a
  // rekey the peer started, whose outbound half we switch to once the peer uses it.
  bool report_first_packet = false;
  // The peer's UDP 4500 as the IKE SA knows it. An authentic packet from elsewhere that is the
  // newest yet (it moves the replay window on) is reported (InboundPath::OnNewSource): a NAT
  // in front of the peer may have changed its mapping (RFC 7296 2.23). Empty: never reported.
  io::Endpoint peer;
};

struct OutboundSpec {
  policy::PolicyId policy = policy::kNoPolicy;
  std::uint32_t spi = 0;
  crypto::EspSuite suite = crypto::EspSuite::kAesGcm128;
  crypto::SecureBytes keymat;
  bool esn = false;
  io::Endpoint peer;  // the peer's UDP 4500
  // Our address the packets leave from (the IKE SA's local address); empty: the kernel's pick.
  io::IpAddress source;
  std::shared_ptr<SaCounters> counters;
  // The connection (trap) policy whose held packets this SA sends first, if any: the acquire
  // was raised on the connection's policy, the SA serves a policy of its own.
  policy::PolicyId flush_held = policy::kNoPolicy;
  // Set when several data-path threads seal with this SA (each has its own copy): the copies
  // take their sequence numbers from this one counter (esp::OutboundState::shared_next_seq),
  // which starts at 1. Null: the path counts on its own.
  std::shared_ptr<std::atomic<std::uint64_t>> next_seq;
};

// A bounded command mailbox from the control thread to one data-path thread, with an eventfd
// the thread polls. Bound: kCapacity commands; Push() refuses when full and the control
// thread retries on its next tick (commands are never dropped).
//
// Only a push into an empty queue writes the eventfd: the thread takes the whole queue at
// once, so one wake-up covers every command pushed before it drains. (A write per command was
// the control thread's largest cost in a login storm: two system calls per CHILD SA.)
template <typename Command>
class Mailbox {
 public:
  static constexpr std::size_t kCapacity = bounds::kDataplaneMailbox;
  Mailbox() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~Mailbox() { close(fd_); }
  int fd() const { return fd_; }
  bool Push(Command c) {
    bool wake = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (q_.size() >= kCapacity) return false;
      wake = q_.empty();
      q_.push_back(std::move(c));
      pending_.store(true, std::memory_order_release);
    }
    if (wake) {
      const std::uint64_t one = 1;
      [[maybe_unused]] ssize_t n = write(fd_, &one, sizeof(one));
      wakeups_.fetch_add(1, std::memory_order_relaxed);
    }
    return true;
  }
  // A command waits (any thread may ask; what Drain() looks at).
  bool pending() const { return pending_.load(std::memory_order_acquire); }
  // Eventfd writes so far.
  std::uint64_t wakeups() const { return wakeups_.load(std::memory_order_relaxed); }
  // Commands waiting for the thread (any thread may ask).
  std::size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return q_.size();
  }
  // Runs `fn` on every queued command. Called before each batch, so the empty case is one
  // atomic load.
  template <typename Fn>
  void Drain(Fn&& fn) {
    if (!pending_.load(std::memory_order_acquire)) return;
    std::uint64_t v;
    [[maybe_unused]] ssize_t n = read(fd_, &v, sizeof(v));
    std::deque<Command> batch;
    {
      std::lock_guard<std::mutex> lock(mu_);
      batch.swap(q_);
      pending_.store(false, std::memory_order_relaxed);
    }
    for (auto& c : batch) fn(c);
  }

 private:
  int fd_;
  mutable std::mutex mu_;
  std::deque<Command> q_;
  std::atomic<bool> pending_{false};
  std::atomic<std::uint64_t> wakeups_{0};
};

// The packets trap policies hold while their CHILD SA is negotiated (policy::AcquireQueue), one
// queue for all the data-path threads: a policy has one acquire and one bound of held packets
// (policy::AcquireQueueOptions) per gateway, whichever threads its packets came in on. The lock
// is taken only for a packet that has no SA (OutboundPath::Process holds it), for the flush when
// the SA arrives, a failed negotiation's drop and the once-a-second expiry; never for a packet
// that has an SA. The control thread pushes commands for several threads under it too
// (PathSet), so a thread holding a packet sees either none of those pushes or all of them.
class HeldPackets {
 public:
  explicit HeldPackets(const policy::AcquireQueueOptions& options = {}) : queue_(options) {}
  // fn(policy::AcquireQueue&) under the lock.
  template <typename Fn>
  decltype(auto) With(Fn&& fn) {
    std::lock_guard<std::mutex> lock(mu_);
    return fn(queue_);
  }
  policy::AcquireQueueStats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return queue_.stats();
  }

 private:
  mutable std::mutex mu_;
  policy::AcquireQueue queue_;
};

// How often a data-path thread calls ReleaseIdleKeys(): an SA's expanded keys go after one
// to two periods without a packet.
inline constexpr auto kIdleKeysPeriod = std::chrono::seconds(10);

class InboundPath {
 public:
  // kQueued: the packet went to the crypto engine, PollCrypto() delivers it; or, without an
  // engine, to the multi-buffer batch, FinishBatch() delivers it.
  enum class Verdict : std::uint8_t { kDeliver, kIke, kDrop, kQueued };

  InboundPath(Counters& counters, const policy::Spd& spd);
  // Before the thread starts: open packets through `monitor`'s engine, `ring` jobs in flight
  // at most. Without it every packet is opened inline in Process().
  void UseEngine(engine::EngineMonitor& monitor, std::size_t ring);
  // Before the thread starts: called on the data-path thread with the SPI of the first
  // authentic packet of an SA installed with report_first_packet. Must not block.
  void OnFirstPacket(std::function<void(std::uint32_t spi)> fn) { first_packet_ = std::move(fn); }
  // Before the thread starts: called on the data-path thread when an SA's newest authentic
  // packet came from another source than its peer (once per new source, until MovePeer; again
  // on the next such packet if it returned false). Must not block.
  using NewSourceFn = std::function<bool(std::uint32_t spi, const io::Endpoint& from)>;
  void OnNewSource(NewSourceFn fn) { new_source_ = std::move(fn); }

  // Control thread.
  bool Install(InboundSpec spec);
  bool Remove(std::uint32_t spi);
  // These SAs' peer is `peer` from now on (the IKE SA followed it), all in one command.
  bool MovePeer(std::vector<std::uint32_t> spis, const io::Endpoint& peer);
  int mailbox_fd() const { return mailbox_.fd(); }
  std::size_t mailbox_depth() const { return mailbox_.size(); }

  // Data-path thread. `reader` is this thread's registration with the SPD.
  void ApplyCommands();
  // One datagram received on UDP 4500 from `from`, in place in `pkt`. kDeliver: `pkt` is now
  // the inner IP packet, for the TUN. kIke: `ike` is the IKE message after the non-ESP marker.
  // Commands pushed before the datagram was received are applied first.
  Verdict Process(crypto::ImbManager& mgr, policy::Spd::Reader& reader, esp::PacketView& pkt,
                  std::span<const std::uint8_t>& ike, io::Clock::TimePoint now = {},
                  const io::Endpoint& from = {});
  // Hands the packets Process() queued to the engine (once per batch).
  void FlushCrypto(crypto::ImbManager& mgr);
  // Finishes opened packets in arrival order: deliver(inner) for each that passes.
  using DeliverFn = std::function<void(std::span<const std::uint8_t>)>;
  void PollCrypto(crypto::ImbManager& mgr, policy::Spd::Reader& reader,
                  io::Clock::TimePoint now, const DeliverFn& deliver);
  engine::CryptoPipeline* pipeline() { return pipeline_.get(); }
  // Opens the packets Process() queued for the multi-buffer lanes and finishes them in arrival
  // order: deliver(inner) for each that passes. Call it before the receive buffers are reused
  // and before ApplyCommands(); every kCapacity packets at least, to keep the queue short.
  void FinishBatch(crypto::ImbManager& mgr, policy::Spd::Reader& reader, const DeliverFn& deliver);
  std::size_t batched() const { return batch_pending_.size(); }  // queued, not yet finished
  std::size_t sa_count() const { return sas_.size(); }
  // Data-path thread: frees the expanded keys of the SAs that opened no packet since the last
  // call and that no crypto job refers to. Returns how many were freed.
  std::size_t ReleaseIdleKeys();
  std::size_t expanded_keys() const;  // SAs holding expanded keys (for tests)

 private:
  struct Sa {
    esp::InboundState state;
    // Null while released (ReleaseIdleKeys); expanded again from keymat on use.
    std::unique_ptr<crypto::EspCipher> cipher;
    crypto::SecureBytes keymat;
    crypto::EspSuite suite = crypto::EspSuite::kAesGcm128;
    bool used = false;  // a packet since the last ReleaseIdleKeys
    policy::PolicyId policy;
    std::vector<Selector> selectors;
    std::shared_ptr<SaCounters> counters;
    std::uint32_t spi = 0;
    bool report_first = false;
    io::Endpoint peer;      // see InboundSpec::peer
    io::Endpoint reported;  // the new source reported last (once each)
  };
  struct Move {
    std::vector<std::uint32_t> spis;
    io::Endpoint peer;
  };
  using Command = std::variant<InboundSpec, std::uint32_t, Move>;  // install, remove by SPI, move
  // A job in flight: the SA stays alive (and its cipher unchanged) until it is delivered.
  struct Job {
    std::shared_ptr<Sa> sa;
    esp::PacketView pkt;
    esp::CryptoOp op;
    std::size_t wire_len = 0;
    io::Endpoint from;
  };

  // A packet waiting for FinishBatch(), in the caller's receive buffer.
  struct Pending {
    std::shared_ptr<Sa> sa;  // keeps the SA, and so its keys, until it is finished
    const crypto::EspCipher* cipher = nullptr;
    esp::PacketView pkt;
    esp::CryptoOp op;
    std::size_t wire_len = 0;
    io::Endpoint from;
    bool ok = false;  // the ICV verified (once its batch ran)
  };

  Verdict Queue(crypto::ImbManager& mgr, const std::shared_ptr<Sa>& sa, const esp::PacketView& pkt,
                io::Clock::TimePoint now, const io::Endpoint& from);
  Verdict Batch(const std::shared_ptr<Sa>& sa, const crypto::EspCipher& cipher,
                const esp::PacketView& pkt, const io::Endpoint& from, crypto::ImbManager& mgr);
  void RunBatch(crypto::ImbManager& mgr);  // the cipher steps not run yet
  Verdict Dropped(esp::Status status);  // counts why
  // Everything after the cipher: counters, then the selector check. `newest`: the packet moved
  // the replay window on.
  Verdict Opened(Sa& sa, esp::Status status, esp::PacketView& pkt, std::size_t wire_len,
                 policy::Spd::Reader& reader, const io::Endpoint& from, bool newest);

  Counters& counters_;
  const policy::Spd& spd_;
  Mailbox<Command> mailbox_;
  std::unordered_map<std::uint32_t, std::shared_ptr<Sa>> sas_;
  std::unique_ptr<engine::CryptoPipeline> pipeline_;
  std::vector<Job> jobs_;  // by pipeline slot
  // Queued for the multi-buffer lanes; [0, batch_ran_) have had their cipher step. Bound: the
  // caller's receive batch (FinishBatch() before its buffers are reused).
  std::vector<Pending> batch_pending_;
  std::size_t batch_ran_ = 0;
  esp::CryptoBatch batch_;
  std::function<void(std::uint32_t)> first_packet_;
  NewSourceFn new_source_;
};

// Where an outbound SA's packets go: to the peer's UDP 4500, from `source` (empty: the
// kernel's pick; see io::UdpSocket).
struct Route {
  io::Endpoint peer;
  io::IpAddress source;
};

class OutboundPath {
 public:
  // kQueued: the packet went to the crypto engine, PollCrypto() sends it; or, without an
  // engine, to the multi-buffer batch, FinishBatch() sends it.
  enum class Verdict : std::uint8_t { kSend, kHeld, kDrop, kQueued };
  // Asks the control thread to negotiate an SA for a trap policy; false if it refused.
  using AcquireFn = std::function<bool(policy::PolicyId)>;
  // Tells the control thread an SA ran out of sequence numbers (it must be rekeyed).
  using ExhaustedFn = std::function<void(policy::PolicyId, std::uint32_t spi)>;
  using SendFn = std::function<void(const Route&, std::span<const std::uint8_t>)>;

  // `held`: the trap policies' held packets, shared by the threads' paths (PathSet::held());
  // null: a queue of this path's own, with the default bounds.
  OutboundPath(Counters& counters, const policy::Spd& spd, AcquireFn acquire,
               ExhaustedFn exhausted, std::shared_ptr<HeldPackets> held = nullptr);
  // Before the thread starts: where Process() sends the held packets an SA command it applies
  // itself flushes (at once, before the packet it is processing). Unset: such packets are
  // counted send_failed. ApplyCommands() sends them by its own argument.
  void SendHeldBy(SendFn send) { send_held_ = std::move(send); }
  // Before the thread starts: seal packets through `monitor`'s engine, `ring` jobs in flight
  // at most. Without it every packet is sealed inline in Process().
  void UseEngine(engine::EngineMonitor& monitor, std::size_t ring);

  // Control thread.
  bool SetSa(OutboundSpec spec);                         // the policy's SA from now on
  bool ClearSa(policy::PolicyId policy, std::uint32_t spi);  // only if it is still `spi`
  bool SetTrap(policy::PolicyId policy, bool trap);      // hold-and-acquire when no SA
  bool AcquireFailed(policy::PolicyId policy);           // drop its held packets (counted)
  // The SAs with these SPIs send to `peer`, from `source`, from now on, all from the same
  // packet on (RFC 4555 make-before-break: no packet leaves a half-moved set).
  bool MovePeer(std::vector<std::uint32_t> spis, const io::Endpoint& peer,
                const io::IpAddress& source = {});
  int mailbox_fd() const { return mailbox_.fd(); }
  std::size_t mailbox_depth() const { return mailbox_.size(); }

  // Data-path thread.
  // Applies commands; `send` transmits packets flushed from the acquire queue.
  void ApplyCommands(crypto::ImbManager& mgr, const SendFn& send);
  // One inner packet from the TUN, in place in `pkt` (kSealHeadroom/kSealTailroom around it).
  // kSend: `pkt` is the ESP packet to send by `*route`. Commands pushed before the packet was
  // read are applied first (SendHeldBy).
  Verdict Process(crypto::ImbManager& mgr, policy::Spd::Reader& reader, esp::PacketView& pkt,
                  const Route*& route, std::chrono::steady_clock::time_point now);
  void ExpireAcquires(std::chrono::steady_clock::time_point now);
  // Hands the packets Process() queued to the engine (once per batch).
  void FlushCrypto(crypto::ImbManager& mgr);
  // Sends sealed packets in the order Process() saw them. The bytes stay valid until the next
  // Process() call.
  void PollCrypto(crypto::ImbManager& mgr, io::Clock::TimePoint now, const SendFn& send);
  engine::CryptoPipeline* pipeline() { return pipeline_.get(); }
  // Seals the packets Process() queued for the multi-buffer lanes and sends them in TUN order.
  // Call it before the read buffers are reused and before ApplyCommands().
  void FinishBatch(crypto::ImbManager& mgr, const SendFn& send);
  std::size_t batched() const { return batch_pending_.size(); }  // queued, not yet sent
  // The held packets' queue (shared with the other threads' paths, if it is).
  policy::AcquireQueueStats acquire_stats() const { return held_->stats(); }
  // As InboundPath's: the keys of SAs that sealed no packet since the last call.
  std::size_t ReleaseIdleKeys();
  std::size_t expanded_keys() const;

 private:
  struct Sa {
    esp::OutboundState state;
    std::unique_ptr<crypto::EspCipher> cipher;  // null while released
    crypto::SecureBytes keymat;
    crypto::EspSuite suite = crypto::EspSuite::kAesGcm128;
    bool used = false;
    Route route;
    std::shared_ptr<SaCounters> counters;
    std::shared_ptr<std::atomic<std::uint64_t>> next_seq;  // OutboundSpec::next_seq
    bool exhausted_reported = false;
  };
  struct Policy {
    std::shared_ptr<Sa> sa;
    bool trap = false;
  };
  // A job in flight: the SA stays alive (and its cipher unchanged) until it is sent.
  struct Job {
    std::shared_ptr<Sa> sa;
    esp::PacketView pkt;
    std::size_t inner_len = 0;
  };
  struct Clear {
    policy::PolicyId policy;
    std::uint32_t spi;
  };
  struct Trap {
    policy::PolicyId policy;
    bool trap;
  };
  struct Failed {
    policy::PolicyId policy;
  };
  struct Move {
    std::vector<std::uint32_t> spis;
    io::Endpoint peer;
    io::IpAddress source;
  };
  using Command = std::variant<OutboundSpec, Clear, Trap, Failed, Move>;

  // Seals in place with the policy's SA; false if it cannot (no SA, exhausted, no room).
  Verdict Seal(crypto::ImbManager& mgr, policy::PolicyId id, Policy& p, esp::PacketView& pkt,
               const Route*& route);
  // A packet waiting for FinishBatch(), framed in the caller's read buffer.
  struct Pending {
    std::shared_ptr<Sa> sa;  // keeps the SA, and so its keys, until it is sent
    const crypto::EspCipher* cipher = nullptr;
    esp::PacketView pkt;
    esp::CryptoOp op;
    std::size_t inner_len = 0;
  };

  Verdict Queue(crypto::ImbManager& mgr, policy::PolicyId id, Policy& p, const esp::PacketView& pkt,
                std::chrono::steady_clock::time_point now);
  Verdict Batch(crypto::ImbManager& mgr, policy::PolicyId id, Policy& p, esp::PacketView& pkt);
  void RunBatch(crypto::ImbManager& mgr);
  // Counts a SealPrepare() failure; kOk is not one.
  Verdict SealFailed(policy::PolicyId id, Sa& sa, esp::Status status);
  void CountSent(Sa& sa, std::size_t inner_len, std::size_t esp_len);

  Counters& counters_;
  const policy::Spd& spd_;
  AcquireFn acquire_fn_;
  ExhaustedFn exhausted_fn_;
  Mailbox<Command> mailbox_;
  std::unordered_map<policy::PolicyId, Policy> policies_;
  std::shared_ptr<HeldPackets> held_;
  SendFn send_held_;
  std::unique_ptr<engine::CryptoPipeline> pipeline_;
  std::vector<Job> jobs_;  // by pipeline slot
  // As InboundPath's. Bound: the caller's read batch.
  std::vector<Pending> batch_pending_;
  std::size_t batch_ran_ = 0;
  esp::CryptoBatch batch_;
};

}  // namespace spigot::datapath
