// A layer-3 TUN device (/dev/net/tun, IFF_TUN | IFF_NO_PI): every read() is one IPv4 or IPv6
// packet the kernel routed to the device, every write() one packet handed to the kernel's stack
// as if it had arrived on the device. No packet-information header, no virtio-net header.
//
// Queues: with queues > 1 the device is opened with IFF_MULTI_QUEUE and each queue is its own
// non-blocking fd; the kernel spreads outbound flows across the queues (by flow hash), so each
// data-path thread reads and writes its own queue (DESIGN.md, Threads). A packet written to any
// queue goes to the same stack. queues == 1 opens a classic single-queue device.
//
// Lifetime: the device is created by Open() unless a device of that name already exists, and it
// disappears (with its addresses and routes) when the last queue fd is closed — unless it was
// made persistent beforehand (`ip tuntap add dev NAME mode tun [multi_queue]`), in which case
// Open() attaches to it and it stays after the TunDevice is gone. Attaching works when:
//   - the existing device is a TUN (not a TAP, not another kind of link): otherwise EINVAL;
//   - its queue mode matches ours (multi_queue iff queues > 1): otherwise EINVAL;
//   - the caller may use it (CAP_NET_ADMIN, or the device's owner/group): otherwise EPERM;
//   - a single-queue device has no reader yet: otherwise EBUSY. A multi-queue device in use by
//     another process does accept more queues (up to kMaxQueues in all), and the kernel then
//     spreads packets over both processes — keeping a second daemon away is not this class's job.
//
// Offloads (Open() with OffloadRequest::enable): the device is opened with IFF_VNET_HDR and asks
// the kernel, by TUNSETOFFLOAD, for the most it grants of TUN_F_CSUM, TUN_F_TSO4/6 and
// TUN_F_USO4/6 (USO since Linux 6.2), falling back to fewer (TSO without USO, CSUM alone, none)
// and saying what it got (offloads()). Every read then starts with a virtio-net header and may
// be a 64 KiB super-segment (ReadFrame, split with io/tun_offload.h's GsoSplitter); every write
// carries a header too (WriteFrame; Write() adds an empty one). ReadBatch/WriteBatch are for
// devices without offloads.
//
// Threading: the class keeps no per-call state, so any queue may be used from any thread; the
// intended use is one thread per queue. Nothing here allocates per packet.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "spigot/io/tun_offload.h"
#include "spigot/io/udp_socket.h"  // BatchResult

namespace spigot::io {

// One packet slot for TunDevice::ReadBatch().
struct PacketSlot {
  std::span<std::uint8_t> buffer;  // in: where the packet goes (the caller's memory)
  std::size_t length = 0;          // out: bytes stored in `buffer`
  bool truncated = false;          // out: the packet was longer than `buffer` (tail lost)
};

class TunDevice {
 public:
  // The kernel's limit on queues per device (MAX_TAP_QUEUES in drivers/net/tun.c).
  static constexpr int kMaxQueues = 256;
  // Packets per ReadBatch()/WriteBatch() call; larger batches are cut to this, so one busy
  // queue cannot starve the other fds of the same event loop.
  static constexpr std::size_t kMaxBatch = 64;

  // Creates (or attaches to, see above) the TUN device `name` with `queues` queues (1 to
  // kMaxQueues). `name` may be a template such as "spigot%d"; name() is what the kernel chose.
  // The device is left down, without addresses: see Netlink. nullptr on failure, with `error`
  // naming the device and the cause ("cannot create TUN device spigot0: Operation not permitted
  // (are you root?)") and errno set.
  static std::unique_ptr<TunDevice> Open(const std::string& name, int queues,
                                         std::string* error = nullptr);

  // TUNSETOFFLOAD bits (linux/if_tun.h; USO's are missing from older headers).
  static constexpr unsigned kOffloadCsum = 0x01;  // TUN_F_CSUM
  static constexpr unsigned kOffloadTso4 = 0x02;  // TUN_F_TSO4
  static constexpr unsigned kOffloadTso6 = 0x04;  // TUN_F_TSO6
  static constexpr unsigned kOffloadUso4 = 0x20;  // TUN_F_USO4
  static constexpr unsigned kOffloadUso6 = 0x40;  // TUN_F_USO6
  struct OffloadRequest {
    bool enable = false;
    // Test hook: every TUNSETOFFLOAD asking for any of these bits fails as an older kernel's
    // does (EINVAL), without reaching the kernel, so that the fallback runs.
    unsigned refuse_for_test = 0;
  };
  // As above, with offloads if `offload.enable`. A kernel that refuses IFF_VNET_HDR or every
  // offload leaves a device without them (vnet_hdr() false, offloads() 0), not an error.
  static std::unique_ptr<TunDevice> Open(const std::string& name, int queues, std::string* error,
                                         const OffloadRequest& offload);
  // Closes every queue; a non-persistent device is removed.
  ~TunDevice();
  TunDevice(const TunDevice&) = delete;
  TunDevice& operator=(const TunDevice&) = delete;

  const std::string& name() const { return name_; }
  int ifindex() const { return ifindex_; }
  int queues() const { return static_cast<int>(fds_.size()); }
  // The non-blocking fd of queue `i` (0 <= i < queues()), for EventLoop::AddReader(). Owned by
  // this object.
  int queue_fd(int i) const { return fds_[static_cast<std::size_t>(i)]; }
  // Reads and writes carry a virtio-net header.
  bool vnet_hdr() const { return vnet_hdr_; }
  // The TUNSETOFFLOAD bits the kernel granted (0 without vnet_hdr()).
  unsigned offloads() const { return offloads_; }
  // TUNSETOFFLOAD requests the kernel refused before one succeeded (0: all asked for granted).
  int offload_refusals() const { return offload_refusals_; }

  // A device with vnet_hdr(): reads one frame (virtio-net header, then the packet) into
  // `frame` without blocking. false: errno says why (EAGAIN: nothing to read). A frame that
  // fills `frame` may have lost its tail (`length` == frame.size()); 65536 + kSize bytes hold
  // any frame the kernel sends.
  bool ReadFrame(int queue, std::span<std::uint8_t> frame, std::size_t& length);
  // A device with vnet_hdr(): writes `packet` behind `hdr` (one writev). false: errno says why
  // (EINVAL: the kernel refused the header or the packet).
  bool WriteFrame(int queue, const VirtioNetHdr& hdr, std::span<const std::uint8_t> packet);

  // Reads up to min(slots.size(), kMaxBatch) packets from queue `queue` without blocking, one
  // read() each, into the slots in order. `error` is 0 when the batch filled, EAGAIN when the
  // queue ran empty first, otherwise the errno that stopped it. A buffer of MTU bytes holds
  // any packet the kernel routes to the device; a longer packet is consumed anyway, its slot
  // holding the head, marked truncated when its IP header says it was longer.
  BatchResult ReadBatch(int queue, std::span<PacketSlot> slots);

  // Hands one IPv4 or IPv6 packet to the kernel's stack (behind an empty virtio-net header
  // with vnet_hdr()). false: errno says why (EINVAL: not an IPv4/IPv6 packet by its first
  // nibble; EIO: the device is down).
  bool Write(int queue, std::span<const std::uint8_t> packet);
  // Writes up to min(packets.size(), kMaxBatch) packets in order, stopping at the first that
  // fails: `count` were written and `error` is the failing packet's errno (the caller may skip
  // it and continue with the rest).
  BatchResult WriteBatch(int queue, std::span<const std::span<const std::uint8_t>> packets);

 private:
  TunDevice(std::string name, int ifindex, std::vector<int> fds)
      : name_(std::move(name)), ifindex_(ifindex), fds_(std::move(fds)) {}

  std::string name_;
  int ifindex_;
  std::vector<int> fds_;  // one per queue
  bool vnet_hdr_ = false;
  unsigned offloads_ = 0;
  int offload_refusals_ = 0;
};

}  // namespace spigot::io
