#include <CLI/CLI.hpp>

int main(int argc, char** argv) {
  CLI::App app{"spigot: userspace IPsec gateway (IKEv2 + ESP)"};
  app.require_subcommand(1);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
