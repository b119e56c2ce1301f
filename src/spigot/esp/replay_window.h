// Inbound anti-replay window: RFC 6479's ring of 64-bit blocks (no shifting), with RFC 4303
// Appendix A2's inference of the high 32 bits of an extended sequence number (RFC 4304).
//
// Use: Check() before decryption (cheap rejection of replays and old packets), then Update()
// only after the ICV has verified, so forged packets never move the window.
#pragma once

#include <cstdint>
#include <memory>

namespace spigot::esp {

class ReplayWindow {
 public:
  enum class Verdict : std::uint8_t { kOk, kReplay, kTooOld };

  // `size`: packets behind the highest one that are still accepted, kMinReplayWindow to
  // kMaxReplayWindow (clamped). `esn`: 64-bit extended sequence numbers.
  explicit ReplayWindow(std::uint32_t size = 1024, bool esn = false);
  ReplayWindow(ReplayWindow&&) noexcept = default;
  ReplayWindow& operator=(ReplayWindow&&) noexcept = default;

  // Infers the full sequence number of a packet whose low 32 bits are `seq_low` and says
  // whether it may be accepted. `seq_full` is what the ICV must be checked with (ESN).
  Verdict Check(std::uint32_t seq_low, std::uint64_t& seq_full) const;
  // Marks `seq_full` received. Call only after the ICV verified and Check() said kOk.
  void Update(std::uint64_t seq_full);

  std::uint64_t highest() const { return top_; }
  std::uint32_t size() const { return size_; }
  bool esn() const { return esn_; }
  // Heap bytes held by the bitmap (for memory accounting).
  std::size_t bitmap_bytes() const { return std::size_t{blocks_} * sizeof(std::uint64_t); }

 private:
  bool Seen(std::uint64_t seq) const;

  std::unique_ptr<std::uint64_t[]> bitmap_;
  std::uint64_t top_ = 0;    // highest sequence number accepted so far (0: none yet)
  std::uint32_t size_;       // window size W
  std::uint32_t blocks_;     // bitmap blocks, a power of two with blocks_*64 >= W + 64
  bool esn_;
};

}  // namespace spigot::esp
