// The data-path threads' paths as the control thread drives them: which thread's mailbox each
// SA command goes to, and in what order (app/dataplane.h runs the threads themselves).
//
//   - An inbound SA goes to its owner's InboundPath alone (OwnerOf: SPI mod threads), which
//     alone moves its replay window. Everything outbound (an SA, its clear, a trap flag, a
//     failed acquire, a peer move) goes to every thread's OutboundPath: each has its own copy.
//   - All or nothing: a command for several threads is pushed into all of their mailboxes at
//     once, or into none and waits whole in the backlog. No thread sends with an SA another
//     thread has not been given.
//   - In order: once one command waits, every later one waits behind it (Tick() retries them
//     in order), so a removal never overtakes the install it undoes on any thread.
//   - When a call returns with the backlog empty, the command is in every mailbox concerned,
//     and a path applies pending commands before its next packet (datapath.h). So the next
//     packet any thread handles after the call sees the change: an SA the control thread
//     installs before it sends the IKE message that makes the peer use it is in place on every
//     thread first (make-before-break).
//   - Commands for several threads are pushed under the held packets' lock (HeldPackets), so a
//     thread holding a trap packet sees none of a command's pushes or all of them: the held
//     packets are flushed once, by the first thread to take the SA, and no thread opens a
//     second acquire for a policy whose SA another thread already has.
//
// Bounds: each mailbox holds bounds::kDataplaneMailbox commands; a command that finds a
// mailbox full waits in the backlog (bounds::kDataplaneBacklog is where intake stops taking new
// work: the backlog itself never drops a command). A command in the backlog has NOT reached its
// threads when the call returns; backlog() says so.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "spigot/datapath/datapath.h"

namespace spigot::datapath {

class PathSet {
 public:
  explicit PathSet(const policy::AcquireQueueOptions& acquire_options = {})
      : held_(std::make_shared<HeldPackets>(acquire_options)) {}

  // The trap policies' held packets, for every OutboundPath added.
  const std::shared_ptr<HeldPackets>& held() const { return held_; }
  // Before the first command: thread i's paths, in thread order. Not owned; they outlive the
  // set, and their OutboundPath was made with held().
  void Add(InboundPath& in, OutboundPath& out);
  std::size_t threads() const { return in_.size(); }

  // Control thread.
  void InstallInbound(InboundSpec spec);
  void RemoveInbound(std::uint32_t spi);
  // With several threads, the copies take their sequence numbers from one counter
  // (OutboundSpec::next_seq, made here if the spec has none).
  void SetOutbound(OutboundSpec spec);
  void ClearOutbound(policy::PolicyId policy, std::uint32_t spi);
  void SetTrap(policy::PolicyId policy, bool trap);
  void AcquireFailed(policy::PolicyId policy);
  void MovePeer(const std::vector<std::uint32_t>& spis_in, const std::vector<std::uint32_t>& spis_out,
                const io::Endpoint& peer, const io::IpAddress& source);
  // Pushes the backlog's commands, in order, up to the first that still finds a mailbox full.
  void Tick();
  std::size_t backlog() const { return backlog_.size(); }
  std::size_t backlog_peak() const { return backlog_peak_; }

 private:
  // One command for some of the threads: `fits` says whether every mailbox it goes to has
  // room; `push` pushes into them all (it cannot be refused then: the control thread is the
  // only one that pushes, and the threads only take).
  struct Command {
    std::function<bool()> fits;
    std::function<void()> push;
  };
  void Send(Command c);
  bool TryPush(Command& c);
  // For a command to every thread's OutboundPath.
  Command ToEveryOutbound(std::function<bool(OutboundPath&)> push);

  std::shared_ptr<HeldPackets> held_;
  std::vector<InboundPath*> in_;
  std::vector<OutboundPath*> out_;
  std::vector<Command> backlog_;
  std::size_t backlog_peak_ = 0;
};

}  // namespace spigot::datapath
