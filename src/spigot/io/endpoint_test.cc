#include "spigot/io/endpoint.h"

#include <gtest/gtest.h>

namespace spigot::io {
namespace {

TEST(EndpointTest, ParsesIpv4AndIpv6) {
  const auto v4 = Endpoint::Parse("192.0.2.1", 500);
  ASSERT_TRUE(v4.has_value());
  EXPECT_EQ(v4->family(), AF_INET);
  EXPECT_EQ(v4->port(), 500);
  EXPECT_EQ(v4->ToString(), "192.0.2.1:500");
  EXPECT_EQ(v4->AddressString(), "192.0.2.1");
  EXPECT_EQ(v4->address_bytes().size(), 4u);
  EXPECT_EQ(v4->address_bytes()[0], 192);
  EXPECT_EQ(v4->sockaddr_len(), sizeof(sockaddr_in));

  const auto v6 = Endpoint::Parse("2001:db8::1", 4500);
  ASSERT_TRUE(v6.has_value());
  EXPECT_EQ(v6->family(), AF_INET6);
  EXPECT_EQ(v6->port(), 4500);
  EXPECT_EQ(v6->ToString(), "[2001:db8::1]:4500");
  EXPECT_EQ(v6->address_bytes().size(), 16u);
  EXPECT_EQ(v6->sockaddr_len(), sizeof(sockaddr_in6));
}

TEST(EndpointTest, RejectsNonLiterals) {
  for (const char* text : {"", "localhost", "192.0.2.1:500", "[::1]", "::1%lo", "192.0.2",
                           "192.0.2.256"}) {
    EXPECT_FALSE(Endpoint::Parse(text, 1).has_value()) << text;
  }
}

TEST(EndpointTest, EmptyEndpoint) {
  const Endpoint e;
  EXPECT_FALSE(e.valid());
  EXPECT_EQ(e.ToString(), "(none)");
  EXPECT_TRUE(e.address_bytes().empty());
  EXPECT_EQ(e.sockaddr_len(), 0u);
}

TEST(EndpointTest, EqualityAndSockaddrRoundTrip) {
  const Endpoint a = *Endpoint::Parse("::1", 500);
  EXPECT_EQ(Endpoint::FromSockaddr(a.sockaddr_ptr(), a.sockaddr_len()), a);
  EXPECT_FALSE(Endpoint::FromSockaddr(a.sockaddr_ptr(), sizeof(sockaddr_in)).valid());  // short
  EXPECT_FALSE(a == *Endpoint::Parse("::1", 501));
  EXPECT_FALSE(a == *Endpoint::Parse("::2", 500));
  EXPECT_FALSE(*Endpoint::Parse("0.0.0.1", 500) == *Endpoint::Parse("::1", 500));
  EXPECT_EQ(*Endpoint::Parse("10.0.0.1", 7), *Endpoint::Parse("10.0.0.1", 7));
}

}  // namespace
}  // namespace spigot::io
