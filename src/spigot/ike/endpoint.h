// ike::Address <-> io::Endpoint: the one conversion between the IKE SA's view of an address and
// the sockets' (used by the gateway and the load generator).
#pragma once

#include "spigot/ike/address.h"
#include "spigot/io/endpoint.h"

namespace spigot::ike {

// The address and port of an AF_INET or AF_INET6 endpoint. An empty endpoint gives the IPv4
// address 0.0.0.0, port 0.
Address ToAddress(const io::Endpoint& e);
// The AF_INET (family 4) or AF_INET6 endpoint of `a`.
io::Endpoint ToEndpoint(const Address& a);

}  // namespace spigot::ike
