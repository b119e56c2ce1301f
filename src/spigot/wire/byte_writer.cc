#include "spigot/wire/byte_writer.h"

#include <cstring>

namespace spigot::wire {

LengthScope::LengthScope(ByteWriter& w, int width, std::size_t counted_from)
    : w_(&w), width_(width), field_pos_(w.size()) {
  w.WriteZeros(static_cast<std::size_t>(width));
  counted_from_ = counted_from == ByteWriter::kHere ? w.size() : counted_from;
  if (counted_from_ > w.size()) w.Fail();
}

void LengthScope::Close() {
  if (w_ == nullptr) return;
  ByteWriter& w = *w_;
  w_ = nullptr;
  if (!w.ok()) return;
  const std::uint64_t len = w.size() - counted_from_;
  const std::uint64_t max = width_ == 2 ? 0xFFFFu : 0xFFFFFFFFu;
  if (len > max) {
    w.Fail();
    return;
  }
  w.PatchBE(field_pos_, len, width_);
}

std::span<std::uint8_t> ByteWriter::written() {
  if (grow_ != nullptr) return {grow_->data() + base_, pos_};
  return fixed_.first(pos_);
}

std::uint8_t* ByteWriter::Take(std::size_t n) {
  if (!ok_) return nullptr;
  if (grow_ != nullptr) {
    grow_->resize(base_ + pos_ + n);
    std::uint8_t* p = grow_->data() + base_ + pos_;
    pos_ += n;
    return p;
  }
  if (n > fixed_.size() - pos_) {
    ok_ = false;
    return nullptr;
  }
  std::uint8_t* p = fixed_.data() + pos_;
  pos_ += n;
  return p;
}

bool ByteWriter::PatchBE(std::size_t pos, std::uint64_t v, int width) {
  if (!ok_ || pos + static_cast<std::size_t>(width) > pos_) return ok_ = false;
  std::uint8_t* p = grow_ != nullptr ? grow_->data() + base_ + pos : fixed_.data() + pos;
  for (int i = width - 1; i >= 0; --i, v >>= 8) p[i] = static_cast<std::uint8_t>(v);
  return true;
}

bool ByteWriter::WriteU8(std::uint8_t v) {
  std::uint8_t* p = Take(1);
  if (p == nullptr) return false;
  p[0] = v;
  return true;
}

bool ByteWriter::WriteU16(std::uint16_t v) {
  std::uint8_t* p = Take(2);
  if (p == nullptr) return false;
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
  return true;
}

bool ByteWriter::WriteU24(std::uint32_t v) {
  if (v > 0xFFFFFFu) return ok_ = false;
  std::uint8_t* p = Take(3);
  if (p == nullptr) return false;
  p[0] = static_cast<std::uint8_t>(v >> 16);
  p[1] = static_cast<std::uint8_t>(v >> 8);
  p[2] = static_cast<std::uint8_t>(v);
  return true;
}

bool ByteWriter::WriteU32(std::uint32_t v) {
  std::uint8_t* p = Take(4);
  if (p == nullptr) return false;
  p[0] = static_cast<std::uint8_t>(v >> 24);
  p[1] = static_cast<std::uint8_t>(v >> 16);
  p[2] = static_cast<std::uint8_t>(v >> 8);
  p[3] = static_cast<std::uint8_t>(v);
  return true;
}

bool ByteWriter::WriteU64(std::uint64_t v) {
  return WriteU32(static_cast<std::uint32_t>(v >> 32)) && WriteU32(static_cast<std::uint32_t>(v));
}

bool ByteWriter::WriteBytes(std::span<const std::uint8_t> bytes) {
  std::uint8_t* p = Take(bytes.size());
  if (p == nullptr) return false;
  if (!bytes.empty()) std::memcpy(p, bytes.data(), bytes.size());
  return true;
}

bool ByteWriter::WriteZeros(std::size_t n) {
  std::uint8_t* p = Take(n);
  if (p == nullptr) return false;
  if (n != 0) std::memset(p, 0, n);
  return true;
}

std::span<std::uint8_t> ByteWriter::Reserve(std::size_t n) {
  std::uint8_t* p = Take(n);
  if (p == nullptr) return {};
  return {p, n};
}

}  // namespace spigot::wire
