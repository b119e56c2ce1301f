// Big-endian writer with sticky failure and length-prefixed scopes (STYLE.md 3).
//
// Two backings: a fixed span (the data path: no allocation, overflow fails sticky) or a
// std::vector that grows (IKE messages). A LengthScope reserves a length field and fills it in
// when it closes, so nested IKE payload lengths cannot go wrong.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace spigot::wire {

class ByteWriter;

// Reserves a big-endian length field of `width` bytes at creation; Close() (or the destructor)
// writes the number of bytes from `counted_from` to the writer's position at that time.
class LengthScope {
 public:
  LengthScope(ByteWriter& w, int width, std::size_t counted_from);
  LengthScope(const LengthScope&) = delete;
  LengthScope& operator=(const LengthScope&) = delete;
  ~LengthScope() { Close(); }
  void Close();

 private:
  ByteWriter* w_;
  int width_;
  std::size_t field_pos_;
  std::size_t counted_from_;
};

class ByteWriter {
 public:
  static constexpr std::size_t kHere = static_cast<std::size_t>(-1);

  explicit ByteWriter(std::span<std::uint8_t> fixed) : fixed_(fixed) {}
  explicit ByteWriter(std::vector<std::uint8_t>& grow) : grow_(&grow), base_(grow.size()) {}

  bool ok() const { return ok_; }
  // Bytes written through this writer.
  std::size_t size() const { return pos_; }
  std::span<std::uint8_t> written();

  bool WriteU8(std::uint8_t v);
  bool WriteU16(std::uint16_t v);
  bool WriteU24(std::uint32_t v);
  bool WriteU32(std::uint32_t v);
  bool WriteU64(std::uint64_t v);
  bool WriteBytes(std::span<const std::uint8_t> bytes);
  bool WriteZeros(std::size_t n);
  // Space for n bytes the caller fills in place (e.g. ciphertext); empty span on failure.
  std::span<std::uint8_t> Reserve(std::size_t n);

  // A u16 length field here, counting bytes from `counted_from` (default: just after the field).
  [[nodiscard]] LengthScope OpenU16Length(std::size_t counted_from = kHere) {
    return LengthScope(*this, 2, counted_from);
  }
  [[nodiscard]] LengthScope OpenU32Length(std::size_t counted_from = kHere) {
    return LengthScope(*this, 4, counted_from);
  }

  // Overwrites bytes already written (used by LengthScope). Fails if out of range.
  bool PatchBE(std::size_t pos, std::uint64_t v, int width);
  void Fail() { ok_ = false; }

 private:
  std::uint8_t* Take(std::size_t n);

  std::span<std::uint8_t> fixed_;
  std::vector<std::uint8_t>* grow_ = nullptr;
  std::size_t base_ = 0;  // grow_: where this writer's bytes start in the vector
  std::size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace spigot::wire
