// The few rtnetlink requests spigot needs to put a TUN device into service: bring a link up with
// an MTU, give it addresses, route traffic selectors to it. Written directly against
// <linux/rtnetlink.h> over a NETLINK_ROUTE socket.
//
// Every call sends one request with NLM_F_ACK and waits for the kernel's answer, so when it
// returns true the change is in place (one exception: AddAddress for IPv6). On failure the calls
// return false and, if `error` is not nullptr, say what was asked and why it failed, with the
// kernel's extended-ack text when it gives one: "netlink: add route 198.51.100.0/24 dev spigot0:
// File exists (...)".
//
// Idempotence, so that a restart or `spigot reload` can simply apply the configuration again:
//   - AddAddress: the address is already on the device (EEXIST) counts as success.
//   - AddRoute: EEXIST counts as success only if the route to exactly that prefix in the main
//     table goes out through `ifindex`. A route to the same prefix through another device is an
//     error: traffic would not reach the tunnel, and spigot does not take routes away from
//     other software.
//   - ReplaceRoute: as AddRoute, but our own route to the prefix is replaced (a new preferred
//     source), never one through another device.
//   - DeleteRoute: the route is already gone (ESRCH) counts as success. Only a route through
//     `ifindex` is deleted.
//   - DeleteAddress: the address is already gone (EADDRNOTAVAIL) counts as success.
//
// Addresses are bytes in network order: 4 for AF_INET, 16 for AF_INET6 (Endpoint's
// address_bytes() gives them). Routes go into the main table as device routes (no gateway,
// scope link), which is what a point-to-point TUN needs.
//
// Threading: one thread at a time per Netlink object. The socket is blocking, with a receive
// timeout (kReplyTimeout) so that a lost answer becomes an error rather than a hang.
//
// The host's addresses, for MOBIKE (RFC 4555): ListAddresses and RouteSource ask; an
// AddressMonitor (a second, non-blocking socket subscribed to RTMGRP_IPV4_IFADDR,
// RTMGRP_IPV6_IFADDR and the two route groups, for an event loop) says when they, or the
// routes that pick a source address, change.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "spigot/io/endpoint.h"

namespace spigot::io {

// A link's counters (IFLA_STATS64), as `ip -s link` shows them. For a TUN device, "tx" is the
// kernel handing packets to the process that reads the device, "rx" the process writing them.
struct LinkStats {
  std::uint64_t rx_packets = 0, tx_packets = 0;
  // tx_dropped on a TUN: packets routed into it that the kernel threw away before the reader
  // took them (its queue, txqueuelen, was full; or no reader was attached). rx_dropped: packets
  // written to it that the kernel dropped on the way in: on Linux 6.x every write it refuses
  // (EIO while the device is down, EINVAL for a first nibble other than 4 or 6), and any it
  // dropped after write() returned success (e.g. an RPS backlog that was full).
  std::uint64_t rx_dropped = 0, tx_dropped = 0;
};

class Netlink {
 public:
  static constexpr std::chrono::seconds kReplyTimeout{5};

  // nullptr (with `error` set) when the kernel refuses a NETLINK_ROUTE socket.
  static std::unique_ptr<Netlink> Open(std::string* error = nullptr);
  ~Netlink();
  Netlink(const Netlink&) = delete;
  Netlink& operator=(const Netlink&) = delete;

  // Sets the link administratively up, with MTU `mtu` (`ip link set DEV up mtu MTU`).
  bool SetLinkUp(int ifindex, int mtu, std::string* error = nullptr);

  // Adds `address`/`prefix_len` to the device, which also installs the prefix route
  // (`ip addr add`). IPv6 addresses are added with IFA_F_NODAD: nobody on the far side of a TUN
  // answers duplicate address detection, and an address in DAD stays tentative (unusable as a
  // source or for bind) for about a second. Even so, the kernel installs an IPv6 address's
  // local route from a work queue shortly after the ACK (and only once the link is up), so
  // packets addressed to it may be dropped for the first few milliseconds; IPv4 addresses are
  // complete when this returns.
  bool AddAddress(int ifindex, int family, std::span<const std::uint8_t> address, int prefix_len,
                  std::string* error = nullptr);

  // Routes `destination`/`prefix_len` out through the device (`ip route add DST/LEN dev DEV
  // [src PREFSRC]`). `preferred_source` (empty: none) is the source address the kernel picks
  // for locally originated packets on this route; it must be an address of this host.
  bool AddRoute(int ifindex, int family, std::span<const std::uint8_t> destination, int prefix_len,
                std::span<const std::uint8_t> preferred_source = {}, std::string* error = nullptr);
  // AddRoute, except that a route to the prefix through `ifindex` that is there already is
  // replaced (NLM_F_REPLACE: `ip route replace`), so that its preferred source becomes
  // `preferred_source`. A route to the prefix through another device is still an error.
  bool ReplaceRoute(int ifindex, int family, std::span<const std::uint8_t> destination,
                    int prefix_len, std::span<const std::uint8_t> preferred_source,
                    std::string* error = nullptr);
  bool DeleteRoute(int ifindex, int family, std::span<const std::uint8_t> destination,
                   int prefix_len, std::string* error = nullptr);
  // Takes `address`/`prefix_len` off the device (`ip addr del`); an address that is not there
  // (EADDRNOTAVAIL) counts as success.
  bool DeleteAddress(int ifindex, int family, std::span<const std::uint8_t> address,
                     int prefix_len, std::string* error = nullptr);
  // The link's counters now (`ip -s link show dev DEV`).
  bool GetLinkStats(int ifindex, LinkStats& stats, std::string* error = nullptr);
  // Every address of the host, both families (`ip addr`), but those not usable as a source
  // yet or any more (IPv6 tentative, DAD failed).
  bool ListAddresses(std::vector<IpAddress>& out, std::string* error = nullptr);
  // The source address the kernel picks for a datagram to `to` (`ip route get TO`: its src).
  // Empty, and false, when there is no route.
  bool RouteSource(const IpAddress& to, IpAddress& source, std::string* error = nullptr);

 private:
  // AddRoute (replace = false) and ReplaceRoute.
  bool SetRoute(bool replace, int ifindex, int family, std::span<const std::uint8_t> destination,
                int prefix_len, std::span<const std::uint8_t> preferred_source, std::string* error);
  class Request;
  struct RouteMatch;

  explicit Netlink(int fd) : fd_(fd) {}
  // Sends `request` and reads until the kernel's ACK or error for it (or the end of a dump).
  // Returns 0 or a positive errno; `kernel_message` gets the extended-ack text, if any. A route
  // message in the answer (to an RTM_GETROUTE) is stored in `route`, a link's counters
  // (RTM_GETLINK) in `link`, addresses (an RTM_GETADDR dump) appended to `addresses`.
  int Transact(Request& request, std::string* kernel_message, RouteMatch* route = nullptr,
               LinkStats* link = nullptr, bool* link_found = nullptr,
               std::vector<IpAddress>* addresses = nullptr);
  // true if the main table's route to exactly `destination`/`prefix_len` leaves via `ifindex`.
  bool RouteIsVia(int ifindex, int family, std::span<const std::uint8_t> destination,
                  int prefix_len);

  int fd_;
  std::uint32_t seq_ = 0;
};

// An address that came or went (RTM_NEWADDR / RTM_DELADDR).
struct AddressEvent {
  bool added = false;
  int ifindex = 0;
  IpAddress address;
};

// The host's address and route changes as the kernel announces them, read on an event loop.
class AddressMonitor {
 public:
  // nullptr (with `error` set) when the kernel refuses the socket or the subscription.
  static std::unique_ptr<AddressMonitor> Open(std::string* error = nullptr);
  ~AddressMonitor();
  AddressMonitor(const AddressMonitor&) = delete;
  AddressMonitor& operator=(const AddressMonitor&) = delete;

  int fd() const { return fd_; }  // readable: notifications wait
  // Reads every notification waiting (without blocking), `on_event` for each address in them
  // (route changes are only counted: the caller asks for the routes it needs). Returns false if
  // the kernel dropped notifications since the last call (ENOBUFS: the socket's queue
  // overflowed): the caller must read the whole list again.
  bool Drain(const std::function<void(const AddressEvent&)>& on_event);
  std::uint64_t events() const { return events_; }
  std::uint64_t overruns() const { return overruns_; }
  std::uint64_t route_events() const { return route_events_; }

 private:
  explicit AddressMonitor(int fd) : fd_(fd) {}
  int fd_;
  std::uint64_t events_ = 0;
  std::uint64_t overruns_ = 0;
  std::uint64_t route_events_ = 0;
};

}  // namespace spigot::io
