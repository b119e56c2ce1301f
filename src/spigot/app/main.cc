#include <CLI/CLI.hpp>
#include <cstddef>
#include <cstdio>
#include <string>

#include "spigot/app/bench_ike.h"
#include "spigot/app/bench_sad.h"
#include "spigot/app/commands.h"
#include "spigot/app/loadgen.h"
#include "spigot/app/ops_commands.h"

namespace {

// Each subcommand stores its options here; its callback runs after parsing and sets exit_code.
struct Cli {
  int exit_code = 0;
  std::string config = "/etc/spigot/spigot.toml";
  std::string socket = "/run/spigot/spigot.sock";
  std::string name;
  bool json = false;
  bool ike = false;
  struct {
    std::size_t sas = 1'000'000;
    bool json = false;
  } bench_sad;
  struct {
    double seconds = 2;
    std::size_t pairs = 2000;
    bool json = false;
  } bench_ike;
  spigot::app::DoctorOptions doctor;
  spigot::app::PlanOptions plan;
  spigot::app::LoadgenOptions loadgen;
  struct {
    std::string action;
    long ms = 0;
  } fault;
  struct {
    std::string thread;
    long seconds = 0;
  } hang;
};

// `spigot bench <subsystem>`: microbenchmarks of the libraries, without a running gateway.
void AddBench(CLI::App& app, Cli& cli) {
  CLI::App* bench = app.add_subcommand("bench", "Measure spigot's subsystems");
  bench->require_subcommand(1);

  CLI::App* sad = bench->add_subcommand("sad", "SA database: install rate, memory per SA, lookups");
  sad->add_option("--sas", cli.bench_sad.sas, "CHILD SAs to install")->capture_default_str();
  sad->add_flag("--json", cli.bench_sad.json, "Print one JSON object");
  sad->callback(
      [&cli] { cli.exit_code = spigot::app::RunBenchSad(cli.bench_sad.sas, cli.bench_sad.json); });

  CLI::App* ike = bench->add_subcommand("ike", "IKE handshakes per second on one thread");
  ike->add_option("--seconds", cli.bench_ike.seconds, "How long to measure")->capture_default_str();
  ike->add_option("--pairs", cli.bench_ike.pairs,
                  "Established pairs kept afterwards to estimate memory per IKE SA (0: skip)")
      ->capture_default_str();
  ike->add_flag("--json", cli.bench_ike.json, "Print one JSON object");
  ike->callback([&cli] {
    cli.exit_code =
        spigot::app::RunBenchIke(cli.bench_ike.seconds, cli.bench_ike.pairs, cli.bench_ike.json);
  });
}

// `spigot doctor` and `spigot plan`: the operator tools (DESIGN.md, the three failure causes).
void AddOpsCommands(CLI::App& app, Cli& cli) {
  CLI::App* doctor =
      app.add_subcommand("doctor", "Diagnose the three failure causes, with the fix");
  cli.doctor.socket = cli.socket;
  doctor->add_option("--socket", cli.doctor.socket, "Control socket of the daemon")
      ->capture_default_str();
  doctor->add_option("--snapshot", cli.doctor.snapshot,
                     "Read the counters from this file (`spigot stats --json` output, plus an "
                     "optional \"config\" object) instead of the daemon");
  doctor->add_flag("--json", cli.doctor.json, "Print JSON");
  doctor->callback([&cli] { cli.exit_code = spigot::app::RunDoctor(cli.doctor); });

  spigot::app::PlanOptions& p = cli.plan;
  CLI::App* plan = app.add_subcommand("plan",
                                      "Capacity plan: negotiation rate, queue load, "
                                      "overflow probability, memory, recommended limits");
  plan->add_option("--tunnels", p.tunnels, "Tunnels (one IKE SA and one CHILD SA each)")
      ->required();
  plan->add_option("--ike-lifetime", p.ike_lifetime, "IKE SA lifetime (ike_rekey_time)")
      ->capture_default_str();
  plan->add_option("--child-lifetime", p.child_lifetime, "CHILD SA lifetime (child_rekey_time)")
      ->capture_default_str();
  plan->add_option("--storm", p.storm, "Login storm: N tunnels within T, e.g. 2000/1s");
  plan->add_option(
      "--capacity", p.capacity,
      "Negotiations per second, all workers (default: measured by `spigot bench ike`)");
  plan->add_option("--workers", p.workers, "Negotiation workers (default: the number of cores)");
  plan->add_option("--max-queue", p.max_queue, "Negotiation queue depth")->capture_default_str();
  plan->add_option("--jitter", p.jitter, "Rekey jitter (fraction of the lifetime)")
      ->capture_default_str();
  plan->add_flag("--json", p.json, "Print JSON");
  plan->add_option("--svg", p.svg, "Write a chart of the queue over a simulated day");
  plan->callback([&cli] { cli.exit_code = spigot::app::RunPlan(cli.plan); });
}

// `spigot run` and the commands that talk to the daemon (DESIGN.md, the CLI contract).
void AddDaemonCommands(CLI::App& app, Cli& cli) {
  CLI::App* run = app.add_subcommand("run", "Run the gateway in the foreground");
  run->add_option("-c,--config", cli.config, "Configuration file (TOML)")->required();
  run->callback([&cli] { cli.exit_code = spigot::app::RunDaemon(cli.config); });

  struct Cmd {
    const char* name;
    const char* help;
    bool takes_name;
    bool takes_json;
    bool takes_ike = false;
  };
  static constexpr Cmd kCommands[] = {
      {"initiate", "Bring a connection up", true, false},
      {"terminate", "Bring a connection down (DELETE its IKE SAs)", true, false},
      {"rekey", "Rekey a connection's CHILD SAs (or with --ike its IKE SA)", true, false, true},
      {"sas", "List IKE and CHILD SAs", false, true},
      {"stats", "Show the gateway's counters", false, true},
      {"leases", "List virtual IP pools and their leases", false, true},
      {"reload", "Re-read the configuration without a restart", false, false},
  };
  for (const Cmd& c : kCommands) {
    CLI::App* sub = app.add_subcommand(c.name, c.help);
    sub->add_option("--socket", cli.socket, "Control socket of the daemon")->capture_default_str();
    if (c.takes_name) sub->add_option("name", cli.name, "Connection name")->required();
    if (c.takes_json) sub->add_flag("--json", cli.json, "Print JSON");
    if (c.takes_ike) sub->add_flag("--ike", cli.ike, "Rekey the IKE SA instead");
    const std::string command = c.name;
    sub->callback([&cli, command] {
      cli.exit_code = spigot::app::ControlCommand(cli.socket, command, cli.name, cli.json, cli.ike);
    });
  }
}

// `spigot debug ...`: test hooks of a running daemon.
void AddDebug(CLI::App& app, Cli& cli) {
  CLI::App* debug = app.add_subcommand("debug", "Test hooks of a running daemon");
  debug->require_subcommand(1);
  CLI::App* fault = debug->add_subcommand(
      "crypto-fault", "Drive the test-only fault crypto engine (crypto_engine = \"fault\")");
  fault->add_option("--socket", cli.socket, "Control socket of the daemon")->capture_default_str();
  fault->add_option("action", cli.fault.action, "stall | slow | fail | resume")
      ->required()
      ->check(CLI::IsMember({"stall", "slow", "fail", "resume"}));
  fault->add_option("ms", cli.fault.ms, "slow: delay per job in milliseconds");
  fault->callback([&cli] {
    if (cli.fault.action == "slow" && cli.fault.ms <= 0) {
      std::fprintf(stderr, "spigot debug crypto-fault slow: needs MS, e.g. `slow 20`\n");
      cli.exit_code = 1;
      return;
    }
    cli.exit_code = spigot::app::CryptoFaultCommand(cli.socket, cli.fault.action, cli.fault.ms);
  });
  CLI::App* hang = debug->add_subcommand(
      "hang", "Stop a data-path thread for a while (tests the systemd watchdog: no WATCHDOG=1 "
              "while it hangs)");
  hang->add_option("--socket", cli.socket, "Control socket of the daemon")->capture_default_str();
  hang->add_option("thread", cli.hang.thread, "Data-path thread: 0 to datapath_threads - 1")
      ->required()
      ->check(CLI::Range(0, 255));
  hang->add_option("seconds", cli.hang.seconds, "How long (1 to 600)")
      ->required()
      ->check(CLI::Range(1, 600));
  hang->callback([&cli] {
    cli.exit_code = spigot::app::DebugHangCommand(cli.socket, cli.hang.thread, cli.hang.seconds);
  });
}

// `spigot loadgen`: many IKE initiators against one responder, for load tests.
void AddLoadgen(CLI::App& app, Cli& cli) {
  spigot::app::LoadgenOptions& o = cli.loadgen;
  CLI::App* lg = app.add_subcommand("loadgen", "Act as many IKE initiators against a responder");
  lg->add_option("--target", o.target, "Responder address (IKE on UDP 500, NAT-T on 4500)")->required();
  lg->add_option("--psk", o.psk, "Pre-shared key (needed unless --cert and --ca authenticate both sides)");
  lg->add_option("--cert", o.cert,
                 "Log in with this certificate (PEM: end entity, then intermediates, sent in CERT "
                 "payloads). Every initiator uses it under one identity (--id), so the responder must "
                 "allow duplicates (spigot unique = \"no\", strongSwan unique = never)");
  lg->add_option("--key", o.key, "The private key of --cert (PEM or DER, unencrypted)");
  lg->add_option("--ca", o.ca, "Check the responder's certificate against these CA(s) (PEM); "
                               "without it the responder proves the PSK");
  lg->add_option("--id", o.id, "With --cert: the identity all initiators use, one the certificate "
                               "holds (default: its subject DN)");
  lg->add_option("--eap-id", o.eap_id, "Log in with EAP-MSCHAPv2 as this user; %d in it is the "
                                       "initiator's number (user%d: user1, user2, ...); the responder "
                                       "proves itself by --ca or --psk");
  lg->add_option("--eap-secret", o.eap_secret, "The password of --eap-id");
  lg->add_option("--ike-sas", o.ike_sas, "Initiators, each with one IKE SA and one CHILD SA")->required();
  lg->add_option("--rate", o.rate, "New initiators started per second")->capture_default_str();
  lg->add_option("--child-rekey-time", o.child_rekey_time, "Rekey each CHILD SA this often (less jitter)");
  lg->add_option("--duration", o.duration, "Keep the SAs up until this long after the start")
      ->capture_default_str();
  lg->add_flag("--json", o.json, "Print the report as one JSON object");
  lg->add_option("--ike", o.ike_proposals, "IKE proposals")->capture_default_str();
  lg->add_option("--esp", o.esp_proposals, "ESP proposals")->capture_default_str();
  lg->add_option("--local-ts", o.local_ts, "Our traffic selectors (default: everything)");
  lg->add_option("--remote-ts", o.remote_ts, "The responder's traffic selectors (default: everything)");
  lg->add_option("--id-prefix", o.id_prefix, "PSK logins: identities are FQDNs PREFIX-1 ... PREFIX-N")
      ->capture_default_str();
  lg->add_option("--source", o.source, "Our address (default: the route's to the target)");
  lg->add_option("--threads", o.threads, "Worker threads (default: one per core)");
  lg->add_flag("--vips", o.vips, "Each initiator asks for an IPv4 virtual IP (CFG_REQUEST)");
  lg->add_flag("--traffic", o.traffic, "With --vips: each sends ICMP echo requests through its CHILD SA");
  lg->add_option("--packets", o.packets, "Echo requests per initiator with --traffic")->capture_default_str();
  lg->add_option("--traffic-interval", o.traffic_interval_ms,
                 "Milliseconds between one initiator's echo requests with --traffic")
      ->capture_default_str();
  lg->add_option("--traffic-dst", o.traffic_dst, "IPv4 address on the responder's side to ping (--traffic)");
  lg->add_option("--move-to", o.move_to,
                 "Once all are up, every initiator moves to this address of ours (MOBIKE UPDATE_SA_ADDRESSES)");
  lg->add_option("--move-after", o.move_after_ms, "Milliseconds after all are up before --move-to")
      ->capture_default_str();
  lg->callback([&cli] { cli.exit_code = spigot::app::RunLoadgen(cli.loadgen); });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"spigot: userspace IPsec gateway (IKEv2 + ESP)"};
  app.require_subcommand(1);
  Cli cli;
  AddBench(app, cli);
  AddDaemonCommands(app, cli);
  AddOpsCommands(app, cli);
  AddLoadgen(app, cli);
  AddDebug(app, cli);
  CLI11_PARSE(app, argc, argv);
  return cli.exit_code;
}
