#include "spigot/io/systemd.h"

#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace spigot::io {

ServiceNotifier ServiceNotifier::FromEnvironment() {
  ServiceNotifier n;
  const char* socket = std::getenv("NOTIFY_SOCKET");
  n.enabled_ = socket != nullptr && socket[0] != '\0';
  std::uint64_t usec = 0;
  // > 0: WATCHDOG_USEC is set and WATCHDOG_PID is unset or ours.
  if (n.enabled_ && sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
    n.watchdog_ = std::chrono::microseconds(usec);
  }
  return n;
}

void ServiceNotifier::Send(const std::string& state) {
  if (!enabled_) return;
  if (sd_notify(0, state.c_str()) < 0) ++send_failures_;
}

namespace {

std::string OneLine(std::string_view text) {
  std::string s(text);
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

}  // namespace

void ServiceNotifier::Ready(std::string_view status) { Send("READY=1\nSTATUS=" + OneLine(status)); }

void ServiceNotifier::Status(std::string_view status) { Send("STATUS=" + OneLine(status)); }

void ServiceNotifier::Stopping() { Send("STOPPING=1"); }

void ServiceNotifier::WatchdogPing() { Send("WATCHDOG=1"); }

ProgressWatch::Beat& ProgressWatch::Register(std::string thread, Clock::time_point now) {
  Entry& e = beats_.emplace_back();
  e.thread = std::move(thread);
  e.beat.Now(now);
  return e.beat;
}

std::vector<ProgressWatch::Stall> ProgressWatch::Stalled(Clock::time_point now,
                                                         Clock::duration stall_after) const {
  std::vector<Stall> out;
  for (const Entry& e : beats_) {
    const Clock::duration silent = now - e.beat.last();
    if (silent > stall_after) {
      out.push_back({e.thread, std::chrono::duration_cast<std::chrono::milliseconds>(silent)});
    }
  }
  return out;
}

std::chrono::microseconds ServiceWatchdog::Options::stall_after() const {
  return std::max<std::chrono::microseconds>(watchdog / 2, kMinStall);
}

ServiceWatchdog::Result ServiceWatchdog::Check(ProgressWatch::Clock::time_point now) {
  Result r;
  r.stalled = watch_.Stalled(now, options_.stall_after());
  const bool stalled = !r.stalled.empty();
  r.changed = stalled != stalled_;
  stalled_ = stalled;
  if (stalled) {
    ++withheld_;
    return r;
  }
  notifier_.WatchdogPing();
  ++pings_;
  r.pinged = true;
  return r;
}

bool StderrIsJournal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (stream == nullptr) return false;
  unsigned long long dev = 0, ino = 0;
  char tail = 0;
  if (std::sscanf(stream, "%llu:%llu%c", &dev, &ino, &tail) != 2) return false;
  struct stat st {};
  if (fstat(STDERR_FILENO, &st) != 0) return false;
  return static_cast<unsigned long long>(st.st_dev) == dev &&
         static_cast<unsigned long long>(st.st_ino) == ino;
}

std::string JournalPrefix(int syslog_priority) {
  return "<" + std::to_string(std::clamp(syslog_priority, 0, 7)) + ">";
}

}  // namespace spigot::io
