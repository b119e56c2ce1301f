#include "spigot/io/event_loop.h"

#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <climits>
#include <cstring>

namespace spigot::io {
namespace {

// Events taken from the kernel per epoll_wait(); more simply wait for the next iteration.
constexpr int kMaxEventsPerWait = 64;

// Heap order for std::push_heap & co: the entry that fires first is at the front.
constexpr auto kFiresLater = [](const auto& a, const auto& b) {
  return a.deadline != b.deadline ? a.deadline > b.deadline : a.seq > b.seq;
};

std::uint64_t EpollToken(std::uint32_t generation, int fd) {
  return (std::uint64_t{generation} << 32) | static_cast<std::uint32_t>(fd);
}

}  // namespace

std::unique_ptr<EventLoop> EventLoop::Create(const Options& options, std::string* error) {
  std::unique_ptr<EventLoop> loop(new EventLoop(
      options.clock != nullptr ? *options.clock : DefaultClock(), options.max_posted));
  if (!loop->Init(error)) return nullptr;
  return loop;
}

EventLoop::EventLoop(Clock& clock, std::size_t max_posted)
    : clock_(&clock), max_posted_(max_posted) {}

bool EventLoop::Init(std::string* error) {
  const auto fail = [error](const char* what) {
    if (error != nullptr) *error = std::string(what) + ": " + std::strerror(errno);
    return false;
  };
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) return fail("epoll_create1");
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) return fail("eventfd");
  if (!AddReader(wake_fd_, [this] { DrainPosted(); })) return fail("epoll_ctl");
  return true;
}

EventLoop::~EventLoop() {
  if (signal_fd_ >= 0) close(signal_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (!signals_we_blocked_.empty()) {
    sigset_t set;
    sigemptyset(&set);
    for (int signo : signals_we_blocked_) sigaddset(&set, signo);
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  }
}

bool EventLoop::AddReader(int fd, Callback on_readable) {
  if (readers_.count(fd) != 0) {
    errno = EEXIST;
    return false;
  }
  const std::uint32_t generation = next_generation_++;
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = EpollToken(generation, fd);
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event) != 0) return false;
  readers_[fd] = Reader{generation, std::make_shared<Callback>(std::move(on_readable))};
  return true;
}

bool EventLoop::RemoveReader(int fd) {
  if (readers_.erase(fd) == 0) {
    errno = ENOENT;
    return false;
  }
  // The fd may already be closed (and so gone from the epoll set): not an error.
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  return true;
}

EventLoop::TimerId EventLoop::AddTimer(std::string name, Duration delay, Callback fn) {
  return Schedule(std::move(name), delay, Duration::zero(), std::move(fn));
}

EventLoop::TimerId EventLoop::AddRepeatingTimer(std::string name, Duration period, Callback fn) {
  assert(period > Duration::zero());
  if (period <= Duration::zero()) period = Duration(1);
  return Schedule(std::move(name), period, period, std::move(fn));
}

EventLoop::TimerId EventLoop::Schedule(std::string name, Duration delay, Duration period,
                                       Callback fn) {
  const Clock::TimePoint now = clock_->Now();
  delay = std::max(delay, Duration::zero());
  const Clock::TimePoint deadline =
      delay < Clock::TimePoint::max() - now ? now + delay : Clock::TimePoint::max();
  const TimerId id = next_timer_id_++;
  Timer& timer = timers_[id];
  timer = Timer{std::move(name), period, deadline, 0, std::make_shared<Callback>(std::move(fn))};
  Push(id, timer);
  return id;
}

void EventLoop::Push(TimerId id, Timer& timer) {
  timer.seq = next_seq_++;
  heap_.push_back(HeapEntry{timer.deadline, timer.seq, id});
  std::push_heap(heap_.begin(), heap_.end(), kFiresLater);
}

bool EventLoop::CancelTimer(TimerId id) {
  if (timers_.erase(id) == 0) return false;
  CompactHeapIfMostlyStale();
  return true;
}

// Cancelled timers leave their heap entries behind; rebuild once they are the majority, so a
// workload that schedules and cancels (retransmissions) keeps the heap proportional to the
// pending timers.
void EventLoop::CompactHeapIfMostlyStale() {
  if (heap_.size() < 64 || heap_.size() < 2 * timers_.size()) return;
  heap_.clear();
  for (const auto& [id, timer] : timers_) heap_.push_back(HeapEntry{timer.deadline, timer.seq, id});
  std::make_heap(heap_.begin(), heap_.end(), kFiresLater);
}

void EventLoop::DropStaleHeapTop() {
  while (!heap_.empty()) {
    const HeapEntry& top = heap_.front();
    const auto it = timers_.find(top.id);
    if (it != timers_.end() && it->second.seq == top.seq) return;
    std::pop_heap(heap_.begin(), heap_.end(), kFiresLater);
    heap_.pop_back();
  }
}

std::vector<std::string> EventLoop::PendingTimerNames() const {
  std::vector<const Timer*> pending;
  for (const auto& [id, timer] : timers_) pending.push_back(&timer);
  std::sort(pending.begin(), pending.end(),
            [](const Timer* a, const Timer* b) { return kFiresLater(*b, *a); });
  std::vector<std::string> names;
  for (const Timer* timer : pending) names.push_back(timer->name);
  return names;
}

void EventLoop::FireDueTimers() {
  const Clock::TimePoint now = clock_->Now();
  // Timers scheduled by the callbacks below wait for the next iteration, so a callback that
  // re-arms a zero-delay timer cannot keep this loop going forever.
  const std::uint64_t seq_limit = next_seq_;
  while (true) {
    DropStaleHeapTop();
    if (heap_.empty()) return;
    const HeapEntry top = heap_.front();
    if (top.deadline > now || top.seq >= seq_limit) return;
    std::pop_heap(heap_.begin(), heap_.end(), kFiresLater);
    heap_.pop_back();

    const auto it = timers_.find(top.id);
    // The callback may cancel this or any timer: hold on to it while it runs.
    const std::shared_ptr<Callback> fn = it->second.fn;
    if (it->second.period > Duration::zero()) {
      Timer& timer = it->second;
      timer.deadline += timer.period;
      if (timer.deadline <= now) timer.deadline = now + timer.period;  // skip missed periods
      Push(top.id, timer);
    } else {
      timers_.erase(it);
    }
    ++timers_fired_;
    (*fn)();
  }
}

bool EventLoop::OnSignal(int signo, Callback fn) {
  const bool first_for_signo = signal_handlers_.count(signo) == 0;
  if (first_for_signo) {
    sigset_t one;
    sigset_t old;
    sigemptyset(&one);
    if (sigaddset(&one, signo) != 0) return false;
    const int rc = pthread_sigmask(SIG_BLOCK, &one, &old);
    if (rc != 0) {
      errno = rc;
      return false;
    }
    if (sigismember(&old, signo) == 0) signals_we_blocked_.push_back(signo);
  }
  signal_handlers_[signo] = std::move(fn);
  if (!first_for_signo) return true;

  sigset_t all;
  sigemptyset(&all);
  for (const auto& [handled, unused] : signal_handlers_) sigaddset(&all, handled);
  const int fd = signalfd(signal_fd_, &all, SFD_NONBLOCK | SFD_CLOEXEC);
  if (fd < 0) {
    signal_handlers_.erase(signo);
    return false;
  }
  if (signal_fd_ < 0) {
    signal_fd_ = fd;
    return AddReader(signal_fd_, [this] { ReadSignals(); });
  }
  return true;
}

void EventLoop::ReadSignals() {
  signalfd_siginfo info;
  while (read(signal_fd_, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
    const auto it = signal_handlers_.find(static_cast<int>(info.ssi_signo));
    if (it == signal_handlers_.end()) continue;
    ++signals_;
    const Callback fn = it->second;  // the handler may replace itself
    fn();
  }
}

bool EventLoop::Post(Callback fn) {
  bool was_empty = false;
  {
    std::lock_guard<std::mutex> lock(posted_mu_);
    if (posted_.size() >= max_posted_) {
      ++post_refused_;
      return false;
    }
    was_empty = posted_.empty();
    posted_.push_back(std::move(fn));
  }
  ++posted_count_;
  // DrainPosted() reads the eventfd before it takes the queue, so a Post() onto a non-empty
  // queue is always seen by the drain that is due for the earlier one.
  if (was_empty) Wake();
  return true;
}

void EventLoop::DrainPosted() {
  std::uint64_t ignored;
  while (read(wake_fd_, &ignored, sizeof ignored) < 0 && errno == EINTR) {
  }
  std::vector<Callback> batch;
  {
    std::lock_guard<std::mutex> lock(posted_mu_);
    batch.swap(posted_);
  }
  for (Callback& fn : batch) fn();
}

void EventLoop::Wake() {
  const std::uint64_t one = 1;
  while (write(wake_fd_, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

void EventLoop::Stop() {
  stop_ = true;
  Wake();
}

void EventLoop::Run() {
  while (!stop_) RunOnce(kForever);
  stop_ = false;
}

int EventLoop::EpollTimeoutMs(Duration max_wait) {
  DropStaleHeapTop();
  Duration wait = max_wait;
  if (!heap_.empty()) {
    const Duration until_due = heap_.front().deadline - clock_->Now();
    wait = std::clamp(until_due, Duration::zero(), wait);
  }
  if (wait == kForever) return -1;
  // Round up: waking just before the deadline would find nothing due and spin.
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(wait).count();
  return static_cast<int>(std::min<decltype(ms)>(ms, INT_MAX));
}

void EventLoop::RunOnce(Duration max_wait) {
  epoll_event events[kMaxEventsPerWait];
  const int n = epoll_wait(epoll_fd_, events, kMaxEventsPerWait, EpollTimeoutMs(max_wait));
  for (int i = 0; i < n; ++i) {
    const int fd = static_cast<int>(events[i].data.u64 & 0xFFFFFFFFu);
    const std::uint32_t generation = static_cast<std::uint32_t>(events[i].data.u64 >> 32);
    const auto it = readers_.find(fd);
    // Removed (or removed and re-added) by an earlier callback in this batch.
    if (it == readers_.end() || it->second.generation != generation) continue;
    const std::shared_ptr<Callback> fn = it->second.fn;
    (*fn)();
  }
  FireDueTimers();
}

EventLoop::Stats EventLoop::stats() const {
  Stats s;
  s.posted = posted_count_.load();
  s.post_refused = post_refused_.load();
  {
    std::lock_guard<std::mutex> lock(posted_mu_);
    s.pending = posted_.size();
  }
  s.max_posted = max_posted_;
  s.timers_fired = timers_fired_;
  s.signals = signals_;
  return s;
}

}  // namespace spigot::io
