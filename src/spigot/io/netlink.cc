#include "spigot/io/netlink.h"

#include <arpa/inet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cassert>
#include <cerrno>
#include <cstring>

namespace spigot::io {

// One rtnetlink request: the nlmsghdr, the family header (ifinfomsg, ifaddrmsg, rtmsg) and
// attributes, laid out with the alignment <linux/netlink.h> prescribes. Every request spigot
// sends is far below kCapacity; overflowing it is a programming error.
class Netlink::Request {
 public:
  template <typename FamilyHeader>
  Request(std::uint16_t type, std::uint16_t flags, const FamilyHeader& header) {
    nlmsghdr h{};
    h.nlmsg_type = type;
    h.nlmsg_flags = static_cast<std::uint16_t>(NLM_F_REQUEST | NLM_F_ACK | flags);
    std::memcpy(buf_.data(), &h, sizeof h);
    length_ = NLMSG_HDRLEN;
    Append(&header, sizeof header);
  }

  void AddAttribute(std::uint16_t type, std::span<const std::uint8_t> value) {
    nlattr a{};
    a.nla_type = type;
    a.nla_len = static_cast<std::uint16_t>(NLA_HDRLEN + value.size());
    Append(&a, sizeof a);
    Append(value.data(), value.size());
  }
  void AddU32(std::uint16_t type, std::uint32_t value) {
    AddAttribute(type, std::span(reinterpret_cast<const std::uint8_t*>(&value), sizeof value));
  }

  // Finishes the header (length, sequence number) and returns the bytes to send.
  std::span<const std::uint8_t> Seal(std::uint32_t seq) {
    nlmsghdr h;
    std::memcpy(&h, buf_.data(), sizeof h);
    h.nlmsg_len = static_cast<std::uint32_t>(length_);
    h.nlmsg_seq = seq;
    std::memcpy(buf_.data(), &h, sizeof h);
    return std::span(buf_.data(), length_);
  }

 private:
  static constexpr std::size_t kCapacity = 256;

  // Copies `len` bytes and pads to NLMSG_ALIGNTO (== NLA_ALIGNTO).
  void Append(const void* data, std::size_t len) {
    assert(NLMSG_ALIGN(length_ + len) <= kCapacity);
    if (len != 0) std::memcpy(buf_.data() + length_, data, len);
    length_ = NLMSG_ALIGN(length_ + len);  // the padding is already zero
  }

  alignas(nlmsghdr) std::array<std::uint8_t, kCapacity> buf_{};
  std::size_t length_ = 0;
};

// The parts of an RTM_NEWROUTE answer that RouteIsVia() compares.
struct Netlink::RouteMatch {
  bool found = false;
  int dst_len = -1;
  std::array<std::uint8_t, 16> dst{};
  std::size_t dst_size = 0;
  int oif = 0;
  IpAddress prefsrc;  // RTA_PREFSRC: the source the route gives
};

namespace {

std::size_t AddressSize(int family) { return family == AF_INET ? 4 : family == AF_INET6 ? 16 : 0; }

std::string AddressString(int family, std::span<const std::uint8_t> address) {
  char text[INET6_ADDRSTRLEN] = {};
  if (address.size() != AddressSize(family) ||
      inet_ntop(family, address.data(), text, sizeof text) == nullptr) {
    return "(bad address)";
  }
  return text;
}

std::string DeviceName(int ifindex) {
  char name[IF_NAMESIZE] = {};
  if (ifindex > 0 && if_indextoname(static_cast<unsigned>(ifindex), name) != nullptr) {
    return name;
  }
  return "ifindex " + std::to_string(ifindex);
}

// Checks the caller's family, address and prefix length; "" if they fit together.
std::string CheckPrefix(int family, std::span<const std::uint8_t> address, int prefix_len) {
  const std::size_t size = AddressSize(family);
  if (size == 0) return "address family " + std::to_string(family) + " is not AF_INET/AF_INET6";
  if (address.size() != size) {
    return std::to_string(address.size()) + "-byte address, expected " + std::to_string(size);
  }
  if (prefix_len < 0 || prefix_len > static_cast<int>(size * 8)) {
    return "prefix length " + std::to_string(prefix_len) + " out of range";
  }
  return "";
}

// "operation: strerror (kernel text)" as the header promises; always false, to return.
bool Fail(std::string* error, const std::string& what, int err, const std::string& kernel_text) {
  if (error != nullptr) {
    *error = "netlink: " + what + ": " + std::strerror(err);
    if (!kernel_text.empty()) *error += " (" + kernel_text + ")";
  }
  errno = err;
  return false;
}

bool FailInput(std::string* error, const std::string& what, const std::string& problem) {
  if (error != nullptr) *error = "netlink: " + what + ": " + problem;
  errno = EINVAL;
  return false;
}

// The address of an RTM_NEWADDR / RTM_DELADDR message: IFA_LOCAL (IFA_ADDRESS is the peer's on
// a point-to-point link), else IFA_ADDRESS (IPv6 sends only that). False if it has none or
// is not usable as a source (tentative, DAD failed).
bool ParseAddress(const nlmsghdr* h, IpAddress& out, int& ifindex) {
  if (h->nlmsg_len < NLMSG_LENGTH(sizeof(ifaddrmsg))) return false;
  const auto* ifa = static_cast<const ifaddrmsg*>(NLMSG_DATA(h));
  const std::size_t size = AddressSize(ifa->ifa_family);
  if (size == 0) return false;
  std::uint32_t flags = ifa->ifa_flags;
  IpAddress local, address;
  int attr_len = static_cast<int>(IFA_PAYLOAD(h));
  for (const rtattr* a = IFA_RTA(ifa); RTA_OK(a, attr_len); a = RTA_NEXT(a, attr_len)) {
    if ((a->rta_type == IFA_LOCAL || a->rta_type == IFA_ADDRESS) && RTA_PAYLOAD(a) == size) {
      IpAddress& into = a->rta_type == IFA_LOCAL ? local : address;
      into.family = ifa->ifa_family;
      std::memcpy(into.bytes.data(), RTA_DATA(a), size);
    } else if (a->rta_type == IFA_FLAGS && RTA_PAYLOAD(a) == sizeof(std::uint32_t)) {
      std::memcpy(&flags, RTA_DATA(a), sizeof flags);
    }
  }
  // RTM_DELADDR of a tentative address is still news; the caller decides by the type.
  if (h->nlmsg_type == RTM_NEWADDR && (flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)) != 0) return false;
  out = !local.empty() ? local : address;
  ifindex = static_cast<int>(ifa->ifa_index);
  return !out.empty();
}

// The NLMSGERR_ATTR_MSG text of an extended ACK, if there is one.
std::string ExtendedAckText(const nlmsghdr* h) {
  if ((h->nlmsg_flags & NLM_F_ACK_TLVS) == 0) return "";
  const auto* err = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
  // With NETLINK_CAP_ACK (NLM_F_CAPPED) the kernel echoes only our header, not our payload.
  const std::size_t echoed =
      (h->nlmsg_flags & NLM_F_CAPPED) != 0 ? sizeof(nlmsghdr) : err->msg.nlmsg_len;
  const std::size_t offset = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(int) + echoed);
  const auto* base = reinterpret_cast<const std::uint8_t*>(h);
  for (std::size_t at = offset; at + NLA_HDRLEN <= h->nlmsg_len;) {
    nlattr a;
    std::memcpy(&a, base + at, sizeof a);
    if (a.nla_len < NLA_HDRLEN || at + a.nla_len > h->nlmsg_len) break;
    if ((a.nla_type & NLA_TYPE_MASK) == NLMSGERR_ATTR_MSG) {
      const char* text = reinterpret_cast<const char*>(base + at + NLA_HDRLEN);
      return std::string(text, strnlen(text, a.nla_len - NLA_HDRLEN));
    }
    at += NLA_ALIGN(a.nla_len);
  }
  return "";
}

}  // namespace

std::unique_ptr<Netlink> Netlink::Open(std::string* error) {
  const int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) {
    if (error != nullptr) *error = std::string("netlink: socket: ") + std::strerror(errno);
    return nullptr;
  }
  // Extended ACKs carry the kernel's reason in words; capped ACKs leave our request out of them.
  // Both are best effort: older kernels answer with a bare errno.
  const int on = 1;
  setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &on, sizeof on);
  setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &on, sizeof on);
  const timeval timeout{static_cast<time_t>(kReplyTimeout.count()), 0};
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;  // nl_pid 0: the kernel assigns our port id
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout) != 0 ||
      bind(fd, reinterpret_cast<const sockaddr*>(&local), sizeof local) != 0) {
    const int saved = errno;
    if (error != nullptr) *error = std::string("netlink: bind: ") + std::strerror(saved);
    close(fd);
    errno = saved;
    return nullptr;
  }
  return std::unique_ptr<Netlink>(new Netlink(fd));
}

Netlink::~Netlink() { close(fd_); }

int Netlink::Transact(Request& request, std::string* kernel_message, RouteMatch* route,
                      LinkStats* link, bool* link_found, std::vector<IpAddress>* addresses) {
  const std::uint32_t seq = ++seq_;
  const std::span<const std::uint8_t> bytes = request.Seal(seq);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  ssize_t sent;
  do {
    sent = sendto(fd_, bytes.data(), bytes.size(), 0, reinterpret_cast<const sockaddr*>(&kernel),
                  sizeof kernel);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) return errno;

  // Answers to one request fit easily: an ACK, or one route message and an ACK.
  alignas(nlmsghdr) std::array<std::uint8_t, 16384> buf;
  for (;;) {
    const ssize_t got = recv(fd_, buf.data(), buf.size(), 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? ETIMEDOUT : errno;
    }
    int remaining = static_cast<int>(got);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, remaining);
         h = NLMSG_NEXT(h, remaining)) {
      if (h->nlmsg_seq != seq) continue;  // a late answer to an earlier, timed-out request
      if (h->nlmsg_type == NLMSG_ERROR) {
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(int))) return EPROTO;
        const auto* err = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
        if (kernel_message != nullptr) *kernel_message = ExtendedAckText(h);
        return -err->error;  // 0: the ACK
      }
      if (h->nlmsg_type == NLMSG_DONE) return 0;
      if (h->nlmsg_type == RTM_NEWADDR && addresses != nullptr) {
        IpAddress a;
        int ifindex = 0;
        if (ParseAddress(h, a, ifindex)) addresses->push_back(a);
      }
      if (h->nlmsg_type == RTM_NEWLINK && link != nullptr &&
          h->nlmsg_len >= NLMSG_LENGTH(sizeof(ifinfomsg))) {
        const auto* ifi = static_cast<const ifinfomsg*>(NLMSG_DATA(h));
        int attr_len = static_cast<int>(IFLA_PAYLOAD(h));
        for (const rtattr* a = IFLA_RTA(ifi); RTA_OK(a, attr_len); a = RTA_NEXT(a, attr_len)) {
          // Older kernels send a shorter struct; the fields read here are in every version.
          if (a->rta_type != IFLA_STATS64 ||
              RTA_PAYLOAD(a) < offsetof(rtnl_link_stats64, tx_dropped) + sizeof(__u64))
            continue;
          rtnl_link_stats64 st{};
          std::memcpy(&st, RTA_DATA(a), std::min<std::size_t>(RTA_PAYLOAD(a), sizeof st));
          link->rx_packets = st.rx_packets;
          link->tx_packets = st.tx_packets;
          link->rx_dropped = st.rx_dropped;
          link->tx_dropped = st.tx_dropped;
          if (link_found != nullptr) *link_found = true;
        }
      }
      if (h->nlmsg_type == RTM_NEWROUTE && route != nullptr &&
          h->nlmsg_len >= NLMSG_LENGTH(sizeof(rtmsg))) {
        const auto* rt = static_cast<const rtmsg*>(NLMSG_DATA(h));
        route->found = true;
        route->dst_len = rt->rtm_dst_len;
        int attr_len = static_cast<int>(RTM_PAYLOAD(h));
        for (const rtattr* a = RTM_RTA(rt); RTA_OK(a, attr_len); a = RTA_NEXT(a, attr_len)) {
          const std::size_t size = RTA_PAYLOAD(a);
          if (a->rta_type == RTA_DST && size <= route->dst.size()) {
            std::memcpy(route->dst.data(), RTA_DATA(a), size);
            route->dst_size = size;
          } else if (a->rta_type == RTA_OIF && size == sizeof(std::uint32_t)) {
            std::memcpy(&route->oif, RTA_DATA(a), sizeof(std::uint32_t));
          } else if (a->rta_type == RTA_PREFSRC && size == AddressSize(rt->rtm_family)) {
            route->prefsrc.family = rt->rtm_family;
            std::memcpy(route->prefsrc.bytes.data(), RTA_DATA(a), size);
          }
        }
      }
    }
  }
}

bool Netlink::SetLinkUp(int ifindex, int mtu, std::string* error) {
  const std::string what = "set link " + DeviceName(ifindex) + " up mtu " + std::to_string(mtu);
  if (mtu <= 0) return FailInput(error, what, "the MTU must be positive");
  ifinfomsg link{};
  link.ifi_family = AF_UNSPEC;
  link.ifi_index = ifindex;
  link.ifi_flags = IFF_UP;
  link.ifi_change = IFF_UP;
  Request request(RTM_NEWLINK, 0, link);
  request.AddU32(IFLA_MTU, static_cast<std::uint32_t>(mtu));
  std::string kernel_text;
  const int err = Transact(request, &kernel_text);
  return err == 0 || Fail(error, what, err, kernel_text);
}

bool Netlink::AddAddress(int ifindex, int family, std::span<const std::uint8_t> address,
                         int prefix_len, std::string* error) {
  const std::string what = "add address " + AddressString(family, address) + "/" +
                           std::to_string(prefix_len) + " dev " + DeviceName(ifindex);
  if (const std::string problem = CheckPrefix(family, address, prefix_len); !problem.empty()) {
    return FailInput(error, what, problem);
  }
  ifaddrmsg addr{};
  addr.ifa_family = static_cast<std::uint8_t>(family);
  addr.ifa_prefixlen = static_cast<std::uint8_t>(prefix_len);
  addr.ifa_scope = RT_SCOPE_UNIVERSE;
  addr.ifa_index = static_cast<std::uint32_t>(ifindex);
  const std::uint32_t flags = family == AF_INET6 ? IFA_F_NODAD : 0;
  addr.ifa_flags = static_cast<std::uint8_t>(flags);
  Request request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, addr);
  // IFA_LOCAL is the address itself; IFA_ADDRESS the peer's, which for a link that is not
  // configured point-to-point is the same (as `ip addr add` sends it).
  request.AddAttribute(IFA_LOCAL, address);
  request.AddAttribute(IFA_ADDRESS, address);
  request.AddU32(IFA_FLAGS, flags);
  std::string kernel_text;
  const int err = Transact(request, &kernel_text);
  return err == 0 || err == EEXIST || Fail(error, what, err, kernel_text);
}

bool Netlink::AddRoute(int ifindex, int family, std::span<const std::uint8_t> destination,
                       int prefix_len, std::span<const std::uint8_t> preferred_source,
                       std::string* error) {
  return SetRoute(false, ifindex, family, destination, prefix_len, preferred_source, error);
}

bool Netlink::ReplaceRoute(int ifindex, int family, std::span<const std::uint8_t> destination,
                           int prefix_len, std::span<const std::uint8_t> preferred_source,
                           std::string* error) {
  return SetRoute(true, ifindex, family, destination, prefix_len, preferred_source, error);
}

bool Netlink::SetRoute(bool replace, int ifindex, int family,
                       std::span<const std::uint8_t> destination, int prefix_len,
                       std::span<const std::uint8_t> preferred_source, std::string* error) {
  std::string what = std::string(replace ? "replace" : "add") + " route " +
                     AddressString(family, destination) + "/" + std::to_string(prefix_len) +
                     " dev " + DeviceName(ifindex);
  if (!preferred_source.empty()) what += " src " + AddressString(family, preferred_source);
  if (const std::string problem = CheckPrefix(family, destination, prefix_len); !problem.empty()) {
    return FailInput(error, what, problem);
  }
  if (!preferred_source.empty() && preferred_source.size() != AddressSize(family)) {
    return FailInput(error, what, "the preferred source is not of the route's family");
  }
  // Only our own route is ever replaced. Otherwise NLM_F_EXCL, as `ip route add`: a new route
  // is added, and one someone else installed (through another device) is left alone.
  const bool ours = replace && RouteIsVia(ifindex, family, destination, prefix_len);
  rtmsg rt{};
  rt.rtm_family = static_cast<std::uint8_t>(family);
  rt.rtm_dst_len = static_cast<std::uint8_t>(prefix_len);
  rt.rtm_table = RT_TABLE_MAIN;
  rt.rtm_protocol = RTPROT_STATIC;
  rt.rtm_scope = RT_SCOPE_LINK;
  rt.rtm_type = RTN_UNICAST;
  Request request(RTM_NEWROUTE, NLM_F_CREATE | (ours ? NLM_F_REPLACE : NLM_F_EXCL), rt);
  request.AddAttribute(RTA_DST, destination);
  request.AddU32(RTA_OIF, static_cast<std::uint32_t>(ifindex));
  if (!preferred_source.empty()) request.AddAttribute(RTA_PREFSRC, preferred_source);
  std::string kernel_text;
  const int err = Transact(request, &kernel_text);
  if (err == 0) return true;
  if (err == EEXIST && !ours) {
    if (RouteIsVia(ifindex, family, destination, prefix_len)) return true;
    return Fail(
        error, what, err,
        kernel_text.empty() ? "a route to this prefix leaves via another device" : kernel_text);
  }
  return Fail(error, what, err, kernel_text);
}

bool Netlink::DeleteAddress(int ifindex, int family, std::span<const std::uint8_t> address,
                            int prefix_len, std::string* error) {
  const std::string what = "delete address " + AddressString(family, address) + "/" +
                           std::to_string(prefix_len) + " dev " + DeviceName(ifindex);
  if (const std::string problem = CheckPrefix(family, address, prefix_len); !problem.empty()) {
    return FailInput(error, what, problem);
  }
  ifaddrmsg addr{};
  addr.ifa_family = static_cast<std::uint8_t>(family);
  addr.ifa_prefixlen = static_cast<std::uint8_t>(prefix_len);
  addr.ifa_index = static_cast<std::uint32_t>(ifindex);
  Request request(RTM_DELADDR, 0, addr);
  request.AddAttribute(IFA_LOCAL, address);
  std::string kernel_text;
  const int err = Transact(request, &kernel_text);
  return err == 0 || err == EADDRNOTAVAIL || Fail(error, what, err, kernel_text);
}

bool Netlink::DeleteRoute(int ifindex, int family, std::span<const std::uint8_t> destination,
                          int prefix_len, std::string* error) {
  const std::string what = "delete route " + AddressString(family, destination) + "/" +
                           std::to_string(prefix_len) + " dev " + DeviceName(ifindex);
  if (const std::string problem = CheckPrefix(family, destination, prefix_len); !problem.empty()) {
    return FailInput(error, what, problem);
  }
  rtmsg rt{};
  rt.rtm_family = static_cast<std::uint8_t>(family);
  rt.rtm_dst_len = static_cast<std::uint8_t>(prefix_len);
  rt.rtm_table = RT_TABLE_MAIN;
  // Protocol and type 0 and scope "nowhere" match any route to the prefix; RTA_OIF narrows
  // the match to the routes through our device.
  rt.rtm_scope = RT_SCOPE_NOWHERE;
  Request request(RTM_DELROUTE, 0, rt);
  request.AddAttribute(RTA_DST, destination);
  request.AddU32(RTA_OIF, static_cast<std::uint32_t>(ifindex));
  std::string kernel_text;
  const int err = Transact(request, &kernel_text);
  return err == 0 || err == ESRCH || Fail(error, what, err, kernel_text);
}

bool Netlink::GetLinkStats(int ifindex, LinkStats& stats, std::string* error) {
  const std::string what = "get link " + DeviceName(ifindex) + " stats";
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_index = ifindex;
  Request request(RTM_GETLINK, 0, ifi);
  std::string kernel_text;
  bool found = false;
  const int err = Transact(request, &kernel_text, nullptr, &stats, &found);
  if (err != 0) return Fail(error, what, err, kernel_text);
  return found || FailInput(error, what, "the kernel's answer had no IFLA_STATS64");
}

bool Netlink::RouteIsVia(int ifindex, int family, std::span<const std::uint8_t> destination,
                         int prefix_len) {
  // RTM_F_FIB_MATCH (`ip route get fibmatch`): the answer is the routing entry that matches
  // the destination, with its own prefix and device, rather than a resolved route.
  rtmsg rt{};
  rt.rtm_family = static_cast<std::uint8_t>(family);
  rt.rtm_dst_len = static_cast<std::uint8_t>(destination.size() * 8);
  rt.rtm_flags = RTM_F_FIB_MATCH;
  Request request(RTM_GETROUTE, 0, rt);
  request.AddAttribute(RTA_DST, destination);
  RouteMatch match;
  if (Transact(request, nullptr, &match) != 0 || !match.found) return false;
  // Compare only the prefix bits: the kernel reports the network address.
  const auto masked_equal = [&](std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
    for (int bit = 0; bit < prefix_len; bit += 8) {
      const int bits = prefix_len - bit < 8 ? prefix_len - bit : 8;
      const auto mask = static_cast<std::uint8_t>(0xff << (8 - bits));
      if ((a[bit / 8] & mask) != (b[bit / 8] & mask)) return false;
    }
    return true;
  };
  return match.dst_len == prefix_len && match.oif == ifindex &&
         (prefix_len == 0 ||
          (match.dst_size == destination.size() &&
           masked_equal(std::span(match.dst.data(), match.dst_size), destination)));
}

bool Netlink::ListAddresses(std::vector<IpAddress>& out, std::string* error) {
  ifaddrmsg ifa{};
  ifa.ifa_family = AF_UNSPEC;  // both families
  Request request(RTM_GETADDR, NLM_F_DUMP, ifa);
  std::string kernel_text;
  out.clear();
  const int err = Transact(request, &kernel_text, nullptr, nullptr, nullptr, &out);
  return err == 0 || Fail(error, "list addresses", err, kernel_text);
}

bool Netlink::RouteSource(const IpAddress& to, IpAddress& source, std::string* error) {
  source = IpAddress{};
  const std::size_t size = AddressSize(to.family);
  const std::span<const std::uint8_t> dst(to.bytes.data(), size);
  const std::string what = "get route to " + AddressString(to.family, dst);
  if (size == 0) return FailInput(error, what, "no address");
  rtmsg rt{};
  rt.rtm_family = static_cast<std::uint8_t>(to.family);
  rt.rtm_dst_len = static_cast<std::uint8_t>(size * 8);
  Request request(RTM_GETROUTE, 0, rt);
  request.AddAttribute(RTA_DST, dst);
  RouteMatch match;
  std::string kernel_text;
  const int err = Transact(request, &kernel_text, &match);
  if (err != 0) return Fail(error, what, err, kernel_text);
  source = match.prefsrc;
  return !source.empty() || FailInput(error, what, "the route gives no source address");
}

std::unique_ptr<AddressMonitor> AddressMonitor::Open(std::string* error) {
  const int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);
  if (fd < 0) {
    if (error != nullptr) *error = std::string("netlink: socket: ") + std::strerror(errno);
    return nullptr;
  }
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  // Routes too: a new default route or a changed preferred source moves the path to a peer
  // (RFC 4555 3.5) without any address coming or going.
  local.nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE;
  if (bind(fd, reinterpret_cast<const sockaddr*>(&local), sizeof local) != 0) {
    const int saved = errno;
    if (error != nullptr) *error = std::string("netlink: subscribe to address changes: ") + std::strerror(saved);
    close(fd);
    errno = saved;
    return nullptr;
  }
  return std::unique_ptr<AddressMonitor>(new AddressMonitor(fd));
}

AddressMonitor::~AddressMonitor() { close(fd_); }

bool AddressMonitor::Drain(const std::function<void(const AddressEvent&)>& on_event) {
  alignas(nlmsghdr) std::array<std::uint8_t, 16384> buf;
  bool complete = true;
  for (;;) {
    sockaddr_nl from{};
    socklen_t from_len = sizeof from;
    const ssize_t got = recvfrom(fd_, buf.data(), buf.size(), MSG_DONTWAIT,
                                 reinterpret_cast<sockaddr*>(&from), &from_len);
    if (got < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) {  // notifications lost: the list must be read again
        ++overruns_;
        complete = false;
        continue;
      }
      return complete;  // EAGAIN: all read
    }
    if (from.nl_pid != 0) continue;  // only the kernel speaks for the kernel
    int remaining = static_cast<int>(got);
    for (auto* h = reinterpret_cast<const nlmsghdr*>(buf.data()); NLMSG_OK(h, remaining);
         h = NLMSG_NEXT(h, remaining)) {
      if (h->nlmsg_type == RTM_NEWROUTE || h->nlmsg_type == RTM_DELROUTE) {
        ++route_events_;
        continue;
      }
      if (h->nlmsg_type != RTM_NEWADDR && h->nlmsg_type != RTM_DELADDR) continue;
      AddressEvent e;
      e.added = h->nlmsg_type == RTM_NEWADDR;
      if (!ParseAddress(h, e.address, e.ifindex)) continue;
      ++events_;
      on_event(e);
    }
  }
}

}  // namespace spigot::io
