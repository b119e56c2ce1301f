#include "spigot/ike/endpoint.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace spigot::ike {

Address ToAddress(const io::Endpoint& e) {
  Address a;
  a.family = e.family() == AF_INET6 ? 6 : 4;
  const auto b = e.address_bytes();
  std::copy(b.begin(), b.end(), a.ip.begin());
  a.port = e.port();
  return a;
}

io::Endpoint ToEndpoint(const Address& a) {
  if (a.family == 6) {
    sockaddr_in6 v6{};
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(a.port);
    std::memcpy(&v6.sin6_addr, a.ip.data(), 16);
    return io::Endpoint::FromSockaddr(reinterpret_cast<const sockaddr*>(&v6), sizeof(v6));
  }
  sockaddr_in v4{};
  v4.sin_family = AF_INET;
  v4.sin_port = htons(a.port);
  std::memcpy(&v4.sin_addr, a.ip.data(), 4);
  return io::Endpoint::FromSockaddr(reinterpret_cast<const sockaddr*>(&v4), sizeof(v4));
}

}  // namespace spigot::ike
