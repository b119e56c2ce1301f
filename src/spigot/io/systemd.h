// What a service manager (systemd) asks of a daemon: the readiness and status notifications of
// sd_notify(3), the watchdog that restarts a daemon that stopped making progress, and log lines
// the journal can file by priority.
//
// The watchdog contract: WATCHDOG=1 goes out only when every watched thread (the data-path
// threads, each with a ProgressWatch::Beat it stores into once per loop turn) made progress
// within `stall_after`; the check runs on the control thread, so a wedged control thread sends
// nothing either. systemd then kills and restarts the service WatchdogSec= after the last ping.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace spigot::io {

// sd_notify(3) through libsystemd. With no NOTIFY_SOCKET in the environment (not started by
// systemd with Type=notify) every call does nothing.
class ServiceNotifier {
 public:
  // Reads NOTIFY_SOCKET, and WATCHDOG_USEC / WATCHDOG_PID (sd_watchdog_enabled(3): the
  // watchdog is ours only if WATCHDOG_PID is unset or names this process).
  static ServiceNotifier FromEnvironment();

  bool enabled() const { return enabled_; }
  // WatchdogSec= as the manager passed it; nullopt when no watchdog is asked for.
  std::optional<std::chrono::microseconds> watchdog() const { return watchdog_; }

  // READY=1 with a first STATUS=.
  void Ready(std::string_view status);
  // STATUS=: one line, newlines become spaces.
  void Status(std::string_view status);
  void Stopping();
  void WatchdogPing();
  // Messages the manager refused (sd_notify < 0), e.g. a socket that went away.
  std::uint64_t send_failures() const { return send_failures_; }

 private:
  void Send(const std::string& state);

  bool enabled_ = false;
  std::optional<std::chrono::microseconds> watchdog_;
  std::uint64_t send_failures_ = 0;
};

// Threads that promise to make progress. Register every thread before it starts; each stores
// the time into its Beat once per loop turn (a relaxed atomic store: no lock, no allocation).
class ProgressWatch {
 public:
  using Clock = std::chrono::steady_clock;

  class Beat {
   public:
    void Now(Clock::time_point t) {
      last_ns_.store(t.time_since_epoch().count(), std::memory_order_relaxed);
    }
    Clock::time_point last() const {
      return Clock::time_point(Clock::duration(last_ns_.load(std::memory_order_relaxed)));
    }

   private:
    std::atomic<Clock::rep> last_ns_{0};
  };

  struct Stall {
    std::string thread;
    std::chrono::milliseconds silent;  // since its last beat
  };

  // The Beat stays at the same address for the watch's lifetime. Starts beaten at `now`.
  Beat& Register(std::string thread, Clock::time_point now);
  // The threads whose last beat is older than `stall_after` at `now`, in registration order.
  std::vector<Stall> Stalled(Clock::time_point now, Clock::duration stall_after) const;
  std::size_t size() const { return beats_.size(); }

 private:
  struct Entry {
    std::string thread;
    Beat beat;
  };
  std::deque<Entry> beats_;  // deque: Register() never moves a Beat
};

// Decides each watchdog period whether to ping: all watched threads alive -> WatchdogPing();
// otherwise no ping. Control thread only.
class ServiceWatchdog {
 public:
  struct Options {
    std::chrono::microseconds watchdog;  // WatchdogSec=
    // How often Check() should run: half of WatchdogSec=, as sd_watchdog_enabled(3) advises.
    std::chrono::microseconds period() const { return watchdog / 2; }
    // A thread silent this long is stalled: half of WatchdogSec=, but never under kMinStall,
    // so a loaded machine (a data-path thread waits up to 100 ms in poll) is not a stall.
    std::chrono::microseconds stall_after() const;
  };
  static constexpr std::chrono::milliseconds kMinStall{1000};

  // What changed with this check, for the caller to log.
  struct Result {
    bool pinged = false;
    std::vector<ProgressWatch::Stall> stalled;  // empty when pinged
    bool changed = false;                        // stalled <-> healthy since the last check
  };

  ServiceWatchdog(ServiceNotifier& notifier, const ProgressWatch& watch, Options options)
      : notifier_(notifier), watch_(watch), options_(options) {}
  Result Check(ProgressWatch::Clock::time_point now);
  std::uint64_t pings() const { return pings_; }
  std::uint64_t withheld() const { return withheld_; }  // checks that found a stall

 private:
  ServiceNotifier& notifier_;
  const ProgressWatch& watch_;
  Options options_;
  bool stalled_ = false;
  std::uint64_t pings_ = 0;
  std::uint64_t withheld_ = 0;
};

// True when stderr is connected to the journal: JOURNAL_STREAM ("DEV:INODE", set by systemd for
// StandardError=journal) names the file stderr is (systemd.exec(5)). Then log lines carry no
// timestamp of their own and start with a syslog priority prefix "<N>" (sd-daemon(3)).
bool StderrIsJournal();

// The sd-daemon(3) prefix for a syslog priority: 3 -> "<3>".
std::string JournalPrefix(int syslog_priority);

}  // namespace spigot::io
