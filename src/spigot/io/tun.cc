#include "spigot/io/tun.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstring>

namespace spigot::io {
namespace {

// What an operator should check, for the errors Open() commonly meets.
const char* Hint(int err) {
  switch (err) {
    case EPERM:
    case EACCES:
      return " (are you root? creating or attaching a TUN device needs CAP_NET_ADMIN)";
    case ENOENT:
    case ENODEV:
      return " (no /dev/net/tun: is the tun module loaded?)";
    case EINVAL:
      return " (the name exists but is not a TUN device, or its multi_queue mode differs)";
    case EBUSY:
      return " (the single-queue device is already in use)";
    default:
      return "";
  }
}

// Opens one queue of the device. On success `name` (which may have been a template) is updated
// to the device's actual name.
int OpenQueue(std::string& name, bool multi_queue, bool vnet_hdr) {
  const int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return -1;
  ifreq ifr{};
  ifr.ifr_flags = static_cast<short>(IFF_TUN | IFF_NO_PI | (multi_queue ? IFF_MULTI_QUEUE : 0) |
                                     (vnet_hdr ? IFF_VNET_HDR : 0));
  std::memcpy(ifr.ifr_name, name.data(), name.size());  // Open() checked size() < IFNAMSIZ
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
    const int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  name.assign(ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ));
  return fd;
}

// The packet length its IPv4 or IPv6 header declares; 0 if `head` is too short to say.
std::size_t DeclaredLength(std::span<const std::uint8_t> head) {
  const auto u16 = [&](std::size_t at) -> std::size_t { return (head[at] << 8) | head[at + 1]; };
  if (head.size() >= 4 && (head[0] >> 4) == 4) return u16(2);       // Total Length
  if (head.size() >= 6 && (head[0] >> 4) == 6) return 40 + u16(4);  // 40 + Payload Length
  return 0;
}

}  // namespace

std::unique_ptr<TunDevice> TunDevice::Open(const std::string& name, int queues,
                                           std::string* error) {
  return Open(name, queues, error, OffloadRequest{});
}

std::unique_ptr<TunDevice> TunDevice::Open(const std::string& name, int queues,
                                           std::string* error, const OffloadRequest& offload) {
  std::vector<int> fds;
  const auto fail = [&](const std::string& what) -> std::unique_ptr<TunDevice> {
    const int saved = errno;
    if (error != nullptr) *error = what + ": " + std::strerror(saved) + Hint(saved);
    for (int fd : fds) close(fd);
    errno = saved;
    return nullptr;
  };
  if (name.empty() || name.size() >= IFNAMSIZ) {
    errno = EINVAL;
    if (error != nullptr) {
      *error = "cannot create TUN device \"" + name + "\": a name has 1 to " +
               std::to_string(IFNAMSIZ - 1) + " characters";
    }
    return nullptr;
  }
  if (queues < 1 || queues > kMaxQueues) {
    errno = EINVAL;
    if (error != nullptr) {
      *error = "cannot create TUN device " + name + " with " + std::to_string(queues) +
               " queues: 1 to " + std::to_string(kMaxQueues) + " are possible";
    }
    return nullptr;
  }

  std::string actual = name;
  bool vnet_hdr = offload.enable;
  for (int i = 0; i < queues; ++i) {
    int fd = OpenQueue(actual, queues > 1, vnet_hdr);
    if (fd < 0 && i == 0 && vnet_hdr && errno == EINVAL) {
      // A kernel without IFF_VNET_HDR (or a persistent device that will not take it): plain.
      vnet_hdr = false;
      fd = OpenQueue(actual, queues > 1, false);
    }
    if (fd < 0) {
      return fail(i == 0 ? "cannot create TUN device " + name
                         : "cannot attach queue " + std::to_string(i) + " to TUN device " + actual);
    }
    fds.push_back(fd);
  }
  const unsigned ifindex = if_nametoindex(actual.c_str());
  if (ifindex == 0) return fail("cannot find the index of TUN device " + actual);
  std::unique_ptr<TunDevice> tun(
      new TunDevice(std::move(actual), static_cast<int>(ifindex), std::move(fds)));
  tun->vnet_hdr_ = vnet_hdr;
  if (vnet_hdr) {
    // The most the kernel grants, then less: USO needs Linux 6.2, TSO needs TUN_F_CSUM. The
    // features are the device's, so one queue's fd sets them for all.
    constexpr unsigned kTries[] = {
        kOffloadCsum | kOffloadTso4 | kOffloadTso6 | kOffloadUso4 | kOffloadUso6,
        kOffloadCsum | kOffloadTso4 | kOffloadTso6, kOffloadCsum, 0};
    for (const unsigned bits : kTries) {
      const bool refused = (bits & offload.refuse_for_test) != 0 ||
                           ioctl(tun->fds_[0], TUNSETOFFLOAD, static_cast<unsigned long>(bits)) != 0;
      if (!refused) {
        tun->offloads_ = bits;
        break;
      }
      ++tun->offload_refusals_;
    }
  }
  return tun;
}

TunDevice::~TunDevice() {
  for (int fd : fds_) close(fd);
}

BatchResult TunDevice::ReadBatch(int queue, std::span<PacketSlot> slots) {
  assert(queue >= 0 && queue < queues());
  if (vnet_hdr_) return BatchResult{0, EINVAL};  // frames, not packets: ReadFrame
  const int fd = queue_fd(queue);
  const std::size_t n = std::min(slots.size(), kMaxBatch);
  std::size_t count = 0;
  while (count < n) {
    PacketSlot& slot = slots[count];
    const ssize_t got = read(fd, slot.buffer.data(), slot.buffer.size());
    if (got < 0) {
      if (errno == EINTR) continue;
      return BatchResult{count, errno};
    }
    // A packet longer than the buffer is consumed whole: the kernel copies what fits and
    // returns that, with no sign of the loss (IFF_NO_PI has no TUN_PKT_STRIP flag), so a full
    // buffer is checked against the length the IP header declares.
    slot.length = static_cast<std::size_t>(got);
    slot.truncated = slot.length == slot.buffer.size() &&
                     DeclaredLength(slot.buffer.first(slot.length)) > slot.length;
    ++count;
  }
  return BatchResult{count, 0};
}

bool TunDevice::ReadFrame(int queue, std::span<std::uint8_t> frame, std::size_t& length) {
  assert(queue >= 0 && queue < queues());
  ssize_t got;
  do {
    got = read(queue_fd(queue), frame.data(), frame.size());
  } while (got < 0 && errno == EINTR);
  if (got < 0) return false;
  length = static_cast<std::size_t>(got);
  return true;
}

bool TunDevice::WriteFrame(int queue, const VirtioNetHdr& hdr,
                           std::span<const std::uint8_t> packet) {
  assert(queue >= 0 && queue < queues());
  std::uint8_t head[VirtioNetHdr::kSize];
  hdr.Serialize(head);
  iovec iov[2] = {{head, sizeof head},
                  {const_cast<std::uint8_t*>(packet.data()), packet.size()}};  // not written
  ssize_t written;
  do {
    written = writev(queue_fd(queue), iov, 2);
  } while (written < 0 && errno == EINTR);
  return written >= 0;
}

bool TunDevice::Write(int queue, std::span<const std::uint8_t> packet) {
  assert(queue >= 0 && queue < queues());
  if (vnet_hdr_) return WriteFrame(queue, VirtioNetHdr{}, packet);
  ssize_t written;
  do {
    written = write(queue_fd(queue), packet.data(), packet.size());
  } while (written < 0 && errno == EINTR);
  return written >= 0;
}

BatchResult TunDevice::WriteBatch(int queue,
                                  std::span<const std::span<const std::uint8_t>> packets) {
  const std::size_t n = std::min(packets.size(), kMaxBatch);
  for (std::size_t i = 0; i < n; ++i) {
    if (!Write(queue, packets[i])) return BatchResult{i, errno};
  }
  return BatchResult{n, 0};
}

}  // namespace spigot::io
