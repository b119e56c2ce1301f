// libFuzzer target: a responder's handling of a first message (anything that arrives on UDP 500
// with a fresh SPIi). Must never crash, must answer at most once, and a retransmission of a
// request it accepted must get the byte-identical cached response (RFC 7296 2.1).
#include <cstdio>
#include <cstdlib>

#include "spigot/test_tools/ike_loopback.h"

using namespace spigot;

namespace {

void Check(bool cond, const char* what) {
  if (!cond) {
    std::fprintf(stderr, "responder property broken: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const auto conn = ike::TestConnection(
      false, "aes128gcm16-prfsha256-x25519,aes256-sha256-ecp256,chacha20poly1305-prfsha512-x25519",
      "aes128gcm16,aes256-sha256,chacha20poly1305");
  ike::LoopbackHost host, sink;
  host.peer = &sink;
  sink.peer = &host;
  ike::IkeCounters counters;
  ike::Address local, remote;
  local.ip[0] = 192, local.ip[2] = 2, local.ip[3] = 2, local.port = 500;
  remote.ip[0] = 192, remote.ip[2] = 2, remote.ip[3] = 1, remote.port = 500;
  ike::Header h;
  const std::span<const std::uint8_t> msg(data, size);
  const std::uint64_t spi_i = ike::ParseHeader(msg, h) ? h.spi_i : 1;
  std::unique_ptr<ike::IkeSa> sa = std::make_unique<ike::IkeSa>(
      host, counters, ike::IkeSa::Role::kResponder, conn, local, remote, spi_i, 0x5EED5EED5EED5EEDull);
  host.current = &sa;
  const ike::TimePoint now = ike::TimePoint{} + std::chrono::hours(1);
  sa->Receive(msg, now);
  Check(sink.inbox.size() <= 1, "more than one answer to one request");
  if (sa->state() == ike::IkeSa::State::kInitAnswered) {
    Check(sink.inbox.size() == 1, "accepted without answering");
    const ike::Bytes first = sink.inbox.front();
    sink.inbox.clear();
    sa->Receive(msg, now);
    Check(sink.inbox.size() == 1 && sink.inbox.front() == first, "retransmission not answered from cache");
    ike::Message parsed;
    Check(ike::ParseMessage(first, parsed).error == ike::ParseError::kOk, "our answer does not parse");
  }
  sa->Tick(now + std::chrono::seconds(31));  // the half-open timeout must clean up
  Check(sa->state() == ike::IkeSa::State::kDead || sa->state() == ike::IkeSa::State::kNew,
        "half-open SA survived its timeout");
  return 0;
}
