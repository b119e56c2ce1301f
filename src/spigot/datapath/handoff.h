// Inbound ESP handed from the data-path thread that received it to the thread that owns its SA.
//
// With several data-path threads (global.datapath_threads) each thread reads its own UDP 4500
// socket (SO_REUSEPORT), and an inbound SA lives in one thread's table only: its owner,
// OwnerOf(spi). The owner alone checks and moves the SA's replay window, so the window needs no
// lock and no atomic, and a packet replayed to two sockets is still seen twice by one window.
// The kernel is asked to steer each datagram to its owner's socket by the SPI (a reuseport BPF
// program, Dataplane), so a hand-over is the exception: a UDP GRO buffer that mixes SPIs of one
// peer, or a kernel that refused the program and spreads by the 4-tuple. A NAT rebinding or a
// MOBIKE move changes the 4-tuple, never the SPI, so the owner stays the same.
//
// Handoff is the owner's inbox: a bounded multi-producer, single-consumer ring of datagram
// copies (Vyukov's bounded queue: one atomic sequence word per cell, no lock). Bound:
// kCapacity datagrams of at most kMaxDatagram bytes. Drop policy: a larger datagram is dropped
// and counted (dropped()); one that finds the ring full waits for room for up to kFullWait
// (the sender wakes the owner and meanwhile serves its own inbox, so two threads that wait on
// each other both make room; the kernel's socket buffer holds what arrives meanwhile), then is
// dropped and counted. Wake-up: the producer calls Wake() once per receive batch that pushed
// anything, the consumer polls fd().
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>

#include "spigot/bounds.h"
#include "spigot/io/endpoint.h"

namespace spigot::datapath {

// The data-path thread (0 .. threads - 1) that owns inbound SA `spi`. The reuseport BPF program
// computes the same (SPI mod threads), so the kernel delivers to the owner's socket.
inline std::size_t OwnerOf(std::uint32_t spi, std::size_t threads) {
  return threads <= 1 ? 0 : spi % threads;
}

class Handoff {
 public:
  static constexpr std::size_t kCapacity = bounds::kHandoffQueue;  // a power of two
  // The largest datagram a data-path thread receives without UDP GRO (4 KiB slots).
  static constexpr std::size_t kMaxDatagram = 4096;
  static_assert((kCapacity & (kCapacity - 1)) == 0);

  struct Item {
    io::Endpoint from;
    io::IpAddress to;
    std::size_t length = 0;
    std::uint8_t bytes[kMaxDatagram];
    std::span<std::uint8_t> datagram() { return {bytes, length}; }
  };

  Handoff() : cells_(new Cell[kCapacity]), fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    for (std::size_t i = 0; i < kCapacity; ++i) cells_[i].seq.store(i, std::memory_order_relaxed);
  }
  ~Handoff() { close(fd_); }
  Handoff(const Handoff&) = delete;
  Handoff& operator=(const Handoff&) = delete;

  int fd() const { return fd_; }

  // How long a sender waits for room in a full ring before it drops the datagram.
  static constexpr auto kFullWait = std::chrono::milliseconds(50);

  enum class Push : std::uint8_t { kOk, kFull, kTooLarge };
  // Any thread: a copy of `datagram` for the owner. kTooLarge is counted as a drop; kFull is
  // not (the caller may wait and try again, then CountDrop()).
  Push TryPush(std::span<const std::uint8_t> datagram, const io::Endpoint& from,
               const io::IpAddress& to) {
    if (datagram.size() > kMaxDatagram) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return Push::kTooLarge;
    }
    std::size_t pos = tail_.load(std::memory_order_relaxed);
    Cell* cell;
    for (;;) {
      cell = &cells_[pos & (kCapacity - 1)];
      const std::size_t seq = cell->seq.load(std::memory_order_acquire);
      const auto diff = static_cast<std::ptrdiff_t>(seq) - static_cast<std::ptrdiff_t>(pos);
      if (diff == 0) {
        if (tail_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) break;
      } else if (diff < 0) {
        return Push::kFull;  // the owner is behind
      } else {
        pos = tail_.load(std::memory_order_relaxed);
      }
    }
    cell->item.from = from;
    cell->item.to = to;
    cell->item.length = datagram.size();
    std::memcpy(cell->item.bytes, datagram.data(), datagram.size());
    cell->seq.store(pos + 1, std::memory_order_release);
    pushed_.fetch_add(1, std::memory_order_relaxed);
    return Push::kOk;
  }
  // A datagram given up on after kFull.
  void CountDrop() { dropped_.fetch_add(1, std::memory_order_relaxed); }
  // Any thread, after a batch of Push(): wakes the owner (one eventfd write).
  void Wake() {
    const std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(fd_, &one, sizeof(one));
  }

  // Owner thread, when poll() found fd() readable: takes the wake-up. (Items pushed before a
  // Wake() are visible to the next Peek(); a Wake() after it makes fd() readable again.)
  void ClearWake() {
    std::uint64_t v;
    [[maybe_unused]] ssize_t r = read(fd_, &v, sizeof(v));
  }
  // Owner thread: up to `max` items in push order, left in the ring (so the packets may be
  // opened in place) until Release(). No system call.
  template <typename Fn>
  std::size_t Peek(std::size_t max, Fn&& fn) {
    std::size_t n = 0;
    for (; n < max && n < kCapacity; ++n) {
      Cell& cell = cells_[(head_ + n) & (kCapacity - 1)];
      if (cell.seq.load(std::memory_order_acquire) != head_ + n + 1) break;
      fn(cell.item);
    }
    peeked_ = n;
    return n;
  }
  // Owner thread: gives the cells of the last Peek() back to the producers.
  void Release() {
    for (std::size_t i = 0; i < peeked_; ++i) {
      cells_[(head_ + i) & (kCapacity - 1)].seq.store(head_ + i + kCapacity, std::memory_order_release);
    }
    head_ += peeked_;
    head_pub_.store(head_, std::memory_order_relaxed);
    peeked_ = 0;
  }
  // Datagrams waiting (approximate while producers push).
  std::size_t depth() const {
    const std::size_t t = tail_.load(std::memory_order_relaxed);
    const std::size_t h = released_head();
    return t >= h ? t - h : 0;
  }
  std::uint64_t pushed() const { return pushed_.load(std::memory_order_relaxed); }
  std::uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }

 private:
  struct Cell {
    std::atomic<std::size_t> seq{0};
    Item item;
  };
  std::size_t released_head() const { return head_pub_.load(std::memory_order_relaxed); }

  std::unique_ptr<Cell[]> cells_;
  int fd_;
  alignas(64) std::atomic<std::size_t> tail_{0};
  alignas(64) std::size_t head_ = 0;  // owner only
  std::size_t peeked_ = 0;
  std::atomic<std::size_t> head_pub_{0};
  std::atomic<std::uint64_t> pushed_{0}, dropped_{0};
};

}  // namespace spigot::datapath
