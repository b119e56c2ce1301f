#include "spigot/ike/address.h"

#include <arpa/inet.h>

namespace spigot::ike {

std::string ToString(const Address& a) {
  char buf[INET6_ADDRSTRLEN] = "?";
  inet_ntop(a.family == 4 ? AF_INET : AF_INET6, a.ip.data(), buf, sizeof(buf));
  return a.family == 4 ? std::string(buf) + ":" + std::to_string(a.port)
                       : "[" + std::string(buf) + "]:" + std::to_string(a.port);
}

}  // namespace spigot::ike
