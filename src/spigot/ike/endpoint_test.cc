#include "spigot/ike/endpoint.h"

#include <gtest/gtest.h>

namespace spigot::ike {
namespace {

TEST(Endpoint, RoundTripsIpv4AndIpv6) {
  for (const auto& [text, port, shown] :
       {std::tuple{"192.0.2.1", 500, "192.0.2.1:500"},
        std::tuple{"2001:db8::1", 4500, "[2001:db8::1]:4500"}}) {
    const io::Endpoint e = *io::Endpoint::Parse(text, static_cast<std::uint16_t>(port));
    const Address a = ToAddress(e);
    EXPECT_EQ(ToString(a), shown);
    EXPECT_EQ(a.bytes().size(), e.address_bytes().size());
    EXPECT_EQ(ToEndpoint(a), e);
    EXPECT_EQ(ToAddress(ToEndpoint(a)), a);
  }
}

}  // namespace
}  // namespace spigot::ike
