#include <CLI/CLI.hpp>
#include <cstddef>

#include "spigot/app/bench_sad.h"

namespace {

// Each subcommand stores its options here; its callback runs after parsing and sets exit_code.
struct Cli {
  int exit_code = 0;
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"spigot: userspace IPsec gateway (IKEv2 + ESP)"};
  app.require_subcommand(1);
  Cli cli;
  AddBench(app, cli);
  CLI11_PARSE(app, argc, argv);
  return cli.exit_code;
}
