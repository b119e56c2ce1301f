#include "spigot/io/endpoint.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace spigot::io {
namespace {

const sockaddr_in& V4(const sockaddr_storage& s) { return reinterpret_cast<const sockaddr_in&>(s); }
const sockaddr_in6& V6(const sockaddr_storage& s) {
  return reinterpret_cast<const sockaddr_in6&>(s);
}

}  // namespace

std::optional<Endpoint> Endpoint::Parse(std::string_view address, std::uint16_t port) {
  const std::string text(address);  // inet_pton wants a NUL-terminated string
  Endpoint e;
  auto& v4 = reinterpret_cast<sockaddr_in&>(e.storage_);
  auto& v6 = reinterpret_cast<sockaddr_in6&>(e.storage_);
  if (inet_pton(AF_INET, text.c_str(), &v4.sin_addr) == 1) {
    v4.sin_family = AF_INET;
    v4.sin_port = htons(port);
    return e;
  }
  e.storage_ = {};
  if (inet_pton(AF_INET6, text.c_str(), &v6.sin6_addr) == 1) {
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(port);
    return e;
  }
  return std::nullopt;
}

Endpoint Endpoint::FromSockaddr(const sockaddr* addr, socklen_t len) {
  Endpoint e;
  if (addr == nullptr) return e;
  if ((addr->sa_family == AF_INET && len >= static_cast<socklen_t>(sizeof(sockaddr_in))) ||
      (addr->sa_family == AF_INET6 && len >= static_cast<socklen_t>(sizeof(sockaddr_in6)))) {
    std::memcpy(&e.storage_, addr, addr->sa_family == AF_INET ? sizeof(sockaddr_in)
                                                             : sizeof(sockaddr_in6));
  }
  return e;
}

std::uint16_t Endpoint::port() const {
  if (family() == AF_INET) return ntohs(V4(storage_).sin_port);
  if (family() == AF_INET6) return ntohs(V6(storage_).sin6_port);
  return 0;
}

std::span<const std::uint8_t> Endpoint::address_bytes() const {
  if (family() == AF_INET) {
    return {reinterpret_cast<const std::uint8_t*>(&V4(storage_).sin_addr), 4};
  }
  if (family() == AF_INET6) {
    return {reinterpret_cast<const std::uint8_t*>(&V6(storage_).sin6_addr), 16};
  }
  return {};
}

socklen_t Endpoint::sockaddr_len() const {
  if (family() == AF_INET) return sizeof(sockaddr_in);
  if (family() == AF_INET6) return sizeof(sockaddr_in6);
  return 0;
}

std::string Endpoint::AddressString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (!valid() || inet_ntop(family(), address_bytes().data(), buf, sizeof buf) == nullptr) {
    return "";
  }
  return buf;
}

std::string Endpoint::ToString() const {
  if (family() == AF_INET) return AddressString() + ":" + std::to_string(port());
  if (family() == AF_INET6) return "[" + AddressString() + "]:" + std::to_string(port());
  return "(none)";
}

bool Endpoint::operator==(const Endpoint& other) const {
  if (family() != other.family()) return false;
  if (!valid()) return true;
  const auto a = address_bytes();
  const auto b = other.address_bytes();
  return port() == other.port() && std::equal(a.begin(), a.end(), b.begin(), b.end()) &&
         (family() != AF_INET6 || V6(storage_).sin6_scope_id == V6(other.storage_).sin6_scope_id);
}

IpAddress IpAddress::Of(const Endpoint& e) {
  IpAddress a;
  const std::span<const std::uint8_t> b = e.address_bytes();
  if (b.empty()) return a;
  a.family = e.family();
  std::copy(b.begin(), b.end(), a.bytes.begin());
  return a;
}

bool Endpoint::wildcard() const {
  const std::span<const std::uint8_t> b = address_bytes();
  return !b.empty() && std::all_of(b.begin(), b.end(), [](std::uint8_t x) { return x == 0; });
}

Endpoint Endpoint::From(const IpAddress& address, std::uint16_t port) {
  Endpoint e;
  if (address.family == AF_INET) {
    auto& v4 = reinterpret_cast<sockaddr_in&>(e.storage_);
    v4.sin_family = AF_INET;
    v4.sin_port = htons(port);
    std::memcpy(&v4.sin_addr, address.bytes.data(), 4);
  } else if (address.family == AF_INET6) {
    auto& v6 = reinterpret_cast<sockaddr_in6&>(e.storage_);
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(port);
    std::memcpy(&v6.sin6_addr, address.bytes.data(), 16);
  }
  return e;
}

}  // namespace spigot::io
