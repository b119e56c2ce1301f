// A single-threaded event loop over epoll: readable fds, timers, signals, and work posted from
// other threads.
//
// Threading: Post() and Stop() may be called from any thread. Everything else (including every
// callback) runs on the thread that calls Run()/RunOnce(), or before the loop starts.
//
// Timers are named by the caller after the event they stand for ("ike.retransmit",
// "child.rekey"); the name shows in PendingTimerNames() and is what a debugger or log prints.
// Deadlines come from the injected Clock. Timers due at the same instant fire in the order they
// were scheduled. A repeating timer that falls behind skips the missed periods rather than
// firing in a burst.
//
// Bounds (STYLE.md 7): the Post() queue holds at most Options::max_posted callbacks; when full,
// Post() refuses (returns false) and counts the refusal in Stats::post_refused.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "spigot/bounds.h"
#include "spigot/io/clock.h"

namespace spigot::io {

class EventLoop {
 public:
  using Callback = std::function<void()>;
  using Duration = std::chrono::nanoseconds;
  using TimerId = std::uint64_t;  // 0 never names a timer
  static constexpr Duration kForever = Duration::max();

  struct Options {
    Clock* clock = nullptr;          // nullptr: DefaultClock(); must outlive the loop
    std::size_t max_posted = bounds::kControlPosts;  // bound of the Post() queue
  };

  struct Stats {
    std::uint64_t posted = 0;        // callbacks accepted by Post()
    std::uint64_t post_refused = 0;  // Post() calls refused because the queue was full
    std::size_t pending = 0;         // posted callbacks not yet run
    std::size_t max_posted = 0;      // the bound
    std::uint64_t timers_fired = 0;
    std::uint64_t signals = 0;       // signals delivered to OnSignal() callbacks
  };

  // nullptr (and `error` set) when the kernel refuses an epoll fd or eventfd.
  static std::unique_ptr<EventLoop> Create(const Options& options, std::string* error = nullptr);
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Calls `on_readable` while `fd` is readable (level-triggered), and on error or hangup, which
  // the callback then meets as a failed read or EOF. The fd stays owned by the caller, who must
  // RemoveReader() it before closing it. A callback may add or remove any reader, itself
  // included. false: errno says why (EEXIST: already registered).
  bool AddReader(int fd, Callback on_readable);
  bool RemoveReader(int fd);

  // Calls `fn` once, `delay` from now.
  TimerId AddTimer(std::string name, Duration delay, Callback fn);
  // Calls `fn` every `period` (> 0) from now on, until cancelled.
  TimerId AddRepeatingTimer(std::string name, Duration period, Callback fn);
  // false when `id` has already fired (one-shot) or been cancelled. Safe inside callbacks.
  bool CancelTimer(TimerId id);
  std::size_t pending_timers() const { return timers_.size(); }
  // Names of the pending timers, soonest first.
  std::vector<std::string> PendingTimerNames() const;

  // Calls `fn` on the loop thread when `signo` arrives (signalfd). The signal is blocked in the
  // calling thread; call this before starting other threads so they inherit the mask and the
  // signal cannot be delivered to them instead. The mask is restored when the loop is
  // destroyed. false: errno says why.
  bool OnSignal(int signo, Callback fn);

  // Thread-safe: queues `fn` to run on the loop thread. false: the queue is full (counted).
  bool Post(Callback fn);

  // Runs until Stop(). A Stop() that came before Run() makes it return at once.
  void Run();
  // Thread-safe: makes Run() return after the current iteration.
  void Stop();
  // One iteration: waits at most `max_wait` (less if a timer is due sooner) for fds, then runs
  // ready fd callbacks, posted callbacks and due timers. With a FakeClock, pass 0 and advance
  // the clock instead of waiting.
  void RunOnce(Duration max_wait);

  Stats stats() const;
  Clock& clock() const { return *clock_; }

 private:
  struct Reader {
    std::uint32_t generation;  // tells a stale epoll event from one for a re-added fd
    std::shared_ptr<Callback> fn;
  };
  struct Timer {
    std::string name;
    Duration period;  // zero: one-shot
    Clock::TimePoint deadline;
    std::uint64_t seq;  // the heap entry that is current for this timer
    std::shared_ptr<Callback> fn;
  };
  struct HeapEntry {
    Clock::TimePoint deadline;
    std::uint64_t seq;  // schedule order; breaks deadline ties
    TimerId id;
  };

  EventLoop(Clock& clock, std::size_t max_posted);
  bool Init(std::string* error);
  TimerId Schedule(std::string name, Duration delay, Duration period, Callback fn);
  void Push(TimerId id, Timer& timer);
  void DropStaleHeapTop();
  void CompactHeapIfMostlyStale();
  int EpollTimeoutMs(Duration max_wait);
  void FireDueTimers();
  void DrainPosted();
  void ReadSignals();
  void Wake();

  Clock* clock_;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;    // eventfd: Post() and Stop() write it to end epoll_wait
  int signal_fd_ = -1;  // signalfd, created by the first OnSignal()

  std::unordered_map<int, Reader> readers_;
  std::uint32_t next_generation_ = 1;

  std::unordered_map<TimerId, Timer> timers_;
  std::vector<HeapEntry> heap_;  // min-heap on (deadline, seq); may hold stale entries
  TimerId next_timer_id_ = 1;
  std::uint64_t next_seq_ = 0;

  std::unordered_map<int, Callback> signal_handlers_;
  std::vector<int> signals_we_blocked_;

  const std::size_t max_posted_;
  mutable std::mutex posted_mu_;
  std::vector<Callback> posted_;  // guarded by posted_mu_

  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> posted_count_{0};
  std::atomic<std::uint64_t> post_refused_{0};
  std::uint64_t timers_fired_ = 0;
  std::uint64_t signals_ = 0;
};

}  // namespace spigot::io
