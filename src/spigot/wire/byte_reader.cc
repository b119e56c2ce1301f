#include "spigot/wire/byte_reader.h"

namespace spigot::wire {

bool ByteReader::Take(std::size_t n, const std::uint8_t*& p) {
  if (!ok_ || n > data_.size() - pos_) {
    ok_ = false;
    return false;
  }
  p = data_.data() + pos_;
  pos_ += n;
  return true;
}

bool ByteReader::ReadU8(std::uint8_t& out) {
  const std::uint8_t* p;
  if (!Take(1, p)) return (out = 0), false;
  out = p[0];
  return true;
}

bool ByteReader::ReadU16(std::uint16_t& out) {
  const std::uint8_t* p;
  if (!Take(2, p)) return (out = 0), false;
  out = static_cast<std::uint16_t>(p[0] << 8 | p[1]);
  return true;
}

bool ByteReader::ReadU24(std::uint32_t& out) {
  const std::uint8_t* p;
  if (!Take(3, p)) return (out = 0), false;
  out = std::uint32_t{p[0]} << 16 | std::uint32_t{p[1]} << 8 | p[2];
  return true;
}

bool ByteReader::ReadU32(std::uint32_t& out) {
  const std::uint8_t* p;
  if (!Take(4, p)) return (out = 0), false;
  out = std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
  return true;
}

bool ByteReader::ReadU64(std::uint64_t& out) {
  std::uint32_t hi, lo;
  if (!ReadU32(hi) || !ReadU32(lo)) return (out = 0), false;
  out = std::uint64_t{hi} << 32 | lo;
  return true;
}

bool ByteReader::ReadBytes(std::size_t n, std::span<const std::uint8_t>& out) {
  const std::uint8_t* p;
  if (!Take(n, p)) return (out = {}), false;
  out = {p, n};
  return true;
}

bool ByteReader::ReadChild(std::size_t n, ByteReader& out) {
  std::span<const std::uint8_t> view;
  if (!ReadBytes(n, view)) {
    out = ByteReader();
    out.ok_ = false;
    return false;
  }
  out = ByteReader(view);
  return true;
}

std::span<const std::uint8_t> ByteReader::ReadRemaining() {
  std::span<const std::uint8_t> out;
  ReadBytes(remaining(), out);
  return out;
}

bool ByteReader::Skip(std::size_t n) {
  const std::uint8_t* p;
  return Take(n, p);
}

bool ByteReader::Peek(std::size_t n, std::span<const std::uint8_t>& out) const {
  if (!ok_ || n > data_.size() - pos_) return (out = {}), false;
  out = data_.subspan(pos_, n);
  return true;
}

}  // namespace spigot::wire
