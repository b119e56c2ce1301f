#include <CLI/CLI.hpp>
#include <cstddef>
#include <string>

#include "spigot/app/bench_sad.h"
#include "spigot/app/commands.h"

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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"spigot: userspace IPsec gateway (IKEv2 + ESP)"};
  app.require_subcommand(1);
  Cli cli;
  AddBench(app, cli);
  AddDaemonCommands(app, cli);
  CLI11_PARSE(app, argc, argv);
  return cli.exit_code;
}
