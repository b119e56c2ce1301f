// Bounds-checked big-endian reader over a byte span (STYLE.md 3).
//
// Failure is sticky: once a read runs past the end, every later read fails too and returns
// zero/empty, so a parser can read a whole header and check ok() once. Reads of byte strings
// return views into the underlying buffer, never copies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace spigot::wire {

class ByteReader {
 public:
  ByteReader() = default;
  explicit ByteReader(std::span<const std::uint8_t> data) : data_(data) {}

  bool ok() const { return ok_; }
  std::size_t remaining() const { return ok_ ? data_.size() - pos_ : 0; }
  std::size_t position() const { return pos_; }
  bool empty() const { return remaining() == 0; }

  bool ReadU8(std::uint8_t& out);
  bool ReadU16(std::uint16_t& out);
  bool ReadU24(std::uint32_t& out);
  bool ReadU32(std::uint32_t& out);
  bool ReadU64(std::uint64_t& out);
  // A view of the next n bytes.
  bool ReadBytes(std::size_t n, std::span<const std::uint8_t>& out);
  // A child reader over the next n bytes (the reader advances past them).
  bool ReadChild(std::size_t n, ByteReader& out);
  // Everything left; never fails on a healthy reader.
  std::span<const std::uint8_t> ReadRemaining();
  bool Skip(std::size_t n);
  // Look at the next n bytes without consuming them.
  bool Peek(std::size_t n, std::span<const std::uint8_t>& out) const;

 private:
  bool Take(std::size_t n, const std::uint8_t*& p);

  std::span<const std::uint8_t> data_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace spigot::wire
