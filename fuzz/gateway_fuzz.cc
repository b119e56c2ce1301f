// libFuzzer target: a gateway's dispatch of IKE datagrams from several peers, in process
// (test_tools/gateway_pair.h) with a fake clock. Gateway B (192.0.2.2) is a concentrator with a
// site-to-site connection to gateway A (192.0.2.1) and a road-warrior connection with an
// address pool, which gateway C (192.0.2.3) uses. The input is a sequence of events: datagrams
// into B from any of four addresses and any port, on 500 or 4500; real gateways' datagrams
// captured on the wire, altered and replayed (so the fuzzer reaches established IKE SAs by their
// real SPIs); time passing; A and C initiating, B rekeying and terminating. Every answer B gives
// goes on the in-memory wire, to A or C if it is theirs.
//
// Properties checked, beyond "no crash, no leak, no UB": make-before-break holds on every
// gateway (GatewayPair::CheckOutbound), and B's graceful stop finishes within its grace period.
//
// Input: records [op][len][data:len]:
//   op % 7 == 0  a datagram into B: data[0] bits 0-1 source (A, C, 192.0.2.4, 192.0.2.5),
//                bit 2 on B's NAT-T port, bit 3 from data[1..2] as source port (else 500/4500);
//                the rest is the datagram.
//            1  a captured datagram (data[0] picks one of the last 16 that reached B) again,
//               from its source, with (offset, value) pairs from data[1..] written into it.
//            2  data[0] gateway ticks (100 ms each) pass.
//            3  data[0] * 10 s pass at once, then one tick.
//            4  A initiates "site", C "home" (each only if it has no IKE SA).
//            5  B rekeys (data[0] bit 0: IKE, bit 1: on connection "rw") or terminates (bit 2).
//            6  B reloads its configuration (the same file: nothing may change).
// Runs with -entropic=0 (gateway_fuzz.options): with ~30,000 features per input, libFuzzer's
// entropic schedule spent more time updating feature frequencies than the target ran (80
// against 36 execs/s here).
#include <cstdio>
#include <cstdlib>
#include <deque>

#include <spdlog/spdlog.h>

#include "spigot/test_tools/gateway_pair.h"

using namespace spigot;
using test_tools::GatewayPair;

namespace {

void Require(bool cond, const char* what) {
  if (!cond) {
    std::fprintf(stderr, "gateway property broken: %s\n", what);
    std::abort();
  }
}

class Input {
 public:
  explicit Input(std::span<const std::uint8_t> in) : in_(in) {}
  bool empty() const { return pos_ >= in_.size(); }
  std::uint8_t Byte() { return empty() ? 0 : in_[pos_++]; }
  std::span<const std::uint8_t> Take(std::size_t n) {
    n = std::min(n, in_.size() - pos_);
    auto s = in_.subspan(pos_, n);
    pos_ += n;
    return s;
  }

 private:
  std::span<const std::uint8_t> in_;
  std::size_t pos_ = 0;
};

// Small SPI pools and queues: a million-slot pool per gateway per input would cost more than
// the input.
constexpr const char* kSmall = "max_spi = 256\nmax_queue = 64\n";

std::string SiteA() { return test_tools::SiteConfig(1, 2, kSmall, "child_rekey_time = \"10m\"\n"); }

std::string Concentrator() {
  return test_tools::SiteConfig(2, 1, std::string(kSmall) + "cookie_threshold = 4\n", "child_rekey_time = \"10m\"\n") +
         "\n[[pool]]\nname = \"rw\"\naddrs = \"198.18.0.0/29\"\n"
         "\n[[connection]]\nname = \"rw\"\nlocal_addrs = \"192.0.2.2\"\nremote_addrs = \"%any\"\n"
         "local_id = \"gw\"\nremote_id = \"%any\"\npsk = \"test secret\"\n"
         "local_ts = \"203.0.113.0/24\"\npools = \"rw\"\nunique = \"replace\"\n";
}

std::string RoadWarrior() {
  return "[global]\nlisten = \"192.0.2.3\"\n" + std::string(kSmall) +
         "\n[[connection]]\nname = \"home\"\nlocal_addrs = \"192.0.2.3\"\n"
         "remote_addrs = \"192.0.2.2\"\nlocal_id = \"rw\"\nremote_id = \"gw\"\n"
         "psk = \"test secret\"\nlocal_ts = \"0.0.0.0/0\"\nvips = \"0.0.0.0\"\n"
         "remote_ts = \"203.0.113.0/24\"\n";
}

const char* const kSources[] = {"192.0.2.1", "192.0.2.3", "192.0.2.4", "192.0.2.5"};

void CheckPair(GatewayPair& p) {
  for (const auto& v : p.violations) {
    if (v.rfind("Pump: still busy", 0) == 0) continue;  // a ping-pong the input set up
    std::fprintf(stderr, "%s\n", v.c_str());
    Require(false, "make-before-break");
  }
  p.violations.clear();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);  // the gateways' logs would cost more than the runs
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  GatewayPair p(SiteA(), Concentrator());
  Require(p.ok(), "the gateways did not start");
  test_tools::Node& c = p.AddNode("192.0.2.3", RoadWarrior());
  Require(p.ok(), "the road warrior did not start");
  const std::string b_address = "192.0.2.2";
  std::deque<test_tools::Datagram> captured;  // the last datagrams that reached B
  p.net.drop = [&](const test_tools::Datagram& d) {
    if (d.to.AddressString() == b_address) {
      captured.push_back(d);
      if (captured.size() > 16) captured.pop_front();
    }
    return false;
  };
  auto deliver = [&](const io::Endpoint& from, bool natt, std::span<const std::uint8_t> bytes) {
    p.b.gw->ReceiveIke(bytes, from, natt);
    p.b.gw->WorkQueue();
    p.Pump(2000);
  };

  Input in({data, size});
  while (!in.empty()) {
    const std::uint8_t op = in.Byte();
    Input d(in.Take(in.Byte()));
    std::string err;
    switch (op % 7) {
      case 0: {
        const std::uint8_t how = d.Byte();
        const bool natt = (how & 4) != 0;
        std::uint16_t port = natt ? 4500 : 500;
        if (how & 8) port = static_cast<std::uint16_t>(d.Byte() << 8 | d.Byte());
        const auto bytes = d.Take(SIZE_MAX);
        deliver(*io::Endpoint::Parse(kSources[how & 3], port), natt, bytes);
        break;
      }
      case 1: {
        if (captured.empty()) break;
        test_tools::Datagram dg = captured[d.Byte() % captured.size()];
        while (!d.empty() && !dg.bytes.empty()) {
          const std::uint8_t at = d.Byte();
          dg.bytes[at % dg.bytes.size()] = d.Byte();
        }
        deliver(dg.from, dg.natt, dg.bytes);
        break;
      }
      case 2: p.Advance(gateway::Gateway::kTickPeriod * d.Byte()); break;
      case 3:
        p.clock.Advance(std::chrono::seconds(10) * d.Byte());
        p.Advance(gateway::Gateway::kTickPeriod);
        break;
      case 4:
        // Only without an IKE SA: a second one for the same connection, which B then replaces
        // (unique), has B send on the new CHILD SA before A installed it, which CheckOutbound
        // reports (see the report of issue 16 item 5).
        if (p.a.gw->ike_sas().entries().empty()) p.a.gw->Initiate("site", &err);
        if (c.gw->ike_sas().entries().empty()) c.gw->Initiate("home", &err);
        p.Pump(2000);
        break;
      case 5: {
        const std::uint8_t how = d.Byte();
        const std::string conn = how & 2 ? "rw" : "site";
        if (how & 4) {
          p.b.gw->Terminate(conn);
        } else {
          p.b.gw->Rekey(conn, how & 1);
        }
        p.Pump(2000);
        break;
      }
      case 6: p.b.gw->Reload(p.b.gw->config()); p.Pump(2000); break;
    }
    CheckPair(p);
  }
  // A graceful stop: B deletes what it has; done when the SAs are gone or the grace is over.
  p.b.gw->Shutdown();
  for (int i = 0; i < 100 && !p.b.gw->finished(); ++i) p.Advance(gateway::Gateway::kTickPeriod);
  CheckPair(p);
  Require(p.b.gw->finished(), "B did not finish shutting down");
  return 0;
}
