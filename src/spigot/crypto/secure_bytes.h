// Key material buffers: wiped on destruction and on every reassignment, never printed
// (STYLE.md 9). There is deliberately no operator<< and no hex dump.
#pragma once

#include <openssl/crypto.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace spigot::crypto {

inline void Wipe(void* p, std::size_t n) {
  if (n != 0) OPENSSL_cleanse(p, n);
}

// Heap-backed secret of variable length (IKE keys, shared secrets, SKEYSEED...).
class SecureBytes {
 public:
  SecureBytes() = default;
  explicit SecureBytes(std::size_t n) : bytes_(n) {}
  explicit SecureBytes(std::span<const std::uint8_t> src) : bytes_(src.begin(), src.end()) {}
  // A secret given as text (a PSK, an EAP password from the configuration or a command line).
  static SecureBytes FromText(std::string_view text) {
    return SecureBytes(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
  }
  SecureBytes(const SecureBytes& o) : bytes_(o.bytes_) {}
  SecureBytes(SecureBytes&& o) noexcept : bytes_(std::move(o.bytes_)) {}
  SecureBytes& operator=(const SecureBytes& o) {
    if (this != &o) {
      Clear();
      bytes_ = o.bytes_;
    }
    return *this;
  }
  SecureBytes& operator=(SecureBytes&& o) noexcept {
    if (this != &o) {
      Clear();
      bytes_ = std::move(o.bytes_);
    }
    return *this;
  }
  ~SecureBytes() { Clear(); }

  void Clear() {
    Wipe(bytes_.data(), bytes_.capacity());
    bytes_.clear();
  }
  // Resizing never leaves an unwiped copy behind: grow through a fresh buffer.
  void Resize(std::size_t n) {
    if (n <= bytes_.capacity()) {
      bytes_.resize(n);
      return;
    }
    std::vector<std::uint8_t> next;
    next.reserve(n);
    next.assign(bytes_.begin(), bytes_.end());
    next.resize(n);
    Clear();
    bytes_ = std::move(next);
  }
  void Append(std::span<const std::uint8_t> src) {
    const std::size_t old = bytes_.size();
    Resize(old + src.size());
    if (!src.empty()) std::copy(src.begin(), src.end(), bytes_.begin() + static_cast<std::ptrdiff_t>(old));
  }

  std::uint8_t* data() { return bytes_.data(); }
  const std::uint8_t* data() const { return bytes_.data(); }
  std::size_t size() const { return bytes_.size(); }
  bool empty() const { return bytes_.empty(); }
  std::span<std::uint8_t> span() { return bytes_; }
  std::span<const std::uint8_t> span() const { return bytes_; }
  operator std::span<const std::uint8_t>() const { return bytes_; }
  std::span<const std::uint8_t> first(std::size_t n) const { return span().first(n); }
  std::span<const std::uint8_t> subspan(std::size_t off, std::size_t n) const {
    return span().subspan(off, n);
  }

  bool operator==(const SecureBytes& o) const;

 private:
  std::vector<std::uint8_t> bytes_;
};

inline bool SecureBytes::operator==(const SecureBytes& o) const {
  return size() == o.size() && CRYPTO_memcmp(data(), o.data(), size()) == 0;
}

// Fixed-capacity inline secret (raw ESP keys stored in every SA record: no heap, no pointer).
template <std::size_t N>
class InlineSecret {
 public:
  InlineSecret() = default;
  InlineSecret(const InlineSecret& o) : len_(o.len_), bytes_(o.bytes_) {}
  InlineSecret& operator=(const InlineSecret& o) {
    len_ = o.len_;
    bytes_ = o.bytes_;
    return *this;
  }
  ~InlineSecret() { Wipe(bytes_.data(), bytes_.size()); }

  bool Assign(std::span<const std::uint8_t> src) {
    if (src.size() > N) return false;
    Wipe(bytes_.data(), bytes_.size());
    std::copy(src.begin(), src.end(), bytes_.begin());
    len_ = static_cast<std::uint8_t>(src.size());
    return true;
  }
  std::span<const std::uint8_t> span() const { return {bytes_.data(), len_}; }
  std::size_t size() const { return len_; }

 private:
  std::uint8_t len_ = 0;
  std::array<std::uint8_t, N> bytes_{};
};

// Constant-time comparison for tags and ICVs.
inline bool ConstantTimeEqual(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace spigot::crypto
