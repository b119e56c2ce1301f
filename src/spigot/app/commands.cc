#include "spigot/app/commands.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <iostream>

#include "spigot/app/daemon.h"
#include "spigot/config/config.h"
#include "spigot/control/control_client.h"
#include "spigot/io/systemd.h"

namespace spigot::app {
namespace {

void PrintSas(const nlohmann::json& r) {
  const auto& ikes = r.at("ike_sas");
  if (ikes.empty()) std::puts("no IKE SAs");
  for (const auto& s : ikes) {
    std::printf("%s: %s, %s %s...%s, IKE SPIs %s_i %s_r, %s\n", s.value("name", "").c_str(),
                s.value("state", "").c_str(), s.value("role", "").c_str(),
                s.value("local", "").c_str(), s.value("remote", "").c_str(),
                s.value("spi_i", "").c_str(), s.value("spi_r", "").c_str(),
                s.value("algorithms", "").c_str());
    for (const auto& c : s.at("children")) {
      std::printf("  CHILD %s, SPIs %s_i %s_o, %s\n    %s === %s\n", c.value("state", "").c_str(),
                  c.value("spi_in", "").c_str(), c.value("spi_out", "").c_str(),
                  c.value("algorithms", "").c_str(), c.at("local_ts").dump().c_str(),
                  c.at("remote_ts").dump().c_str());
    }
  }
}

void PrintLeases(const nlohmann::json& r) {
  for (const auto& p : r.value("pools", nlohmann::json::array())) {
    std::cout << "pool " << p.value("name", "?") << ": " << p.value("in_use", 0) << " of "
              << p.value("size", 0) << " in use, " << p.value("offline", 0) << " offline, "
              << p.value("exhausted", 0) << " refused (exhausted)\n";
    for (const auto& l : p.value("leases", nlohmann::json::array())) {
      std::cout << "  " << l.value("address", "?") << "  " << l.value("identity", "?") << "\n";
    }
  }
}

void PrintStats(const nlohmann::json& r) {
  for (const auto& [k, v] : r.items()) {
    if (k == "bounds" && v.is_object()) {
      // One line per bound: use of limit, and what it dropped (--json has each policy).
      std::printf("bounds (in use / limit, dropped or held):\n");
      for (const auto& [name, b] : v.items()) {
        const auto text = [&](const char* key) {
          return b.contains(key) && !b[key].is_null() ? b[key].dump() : std::string("-");
        };
        std::printf("  %-22s %s / %s, %s\n", name.c_str(), text("in_use").c_str(), text("limit").c_str(),
                    text("dropped").c_str());
      }
    } else if (v.is_object()) {
      std::printf("%s:\n", k.c_str());
      for (const auto& [k2, v2] : v.items()) std::printf("  %-22s %s\n", k2.c_str(), v2.dump().c_str());
    } else {
      std::printf("%-24s %s\n", k.c_str(), v.dump().c_str());
    }
  }
}

// syslog(3) priorities of spdlog's levels.
int SyslogPriority(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::critical: return 2;  // LOG_CRIT
    case spdlog::level::err: return 3;       // LOG_ERR
    case spdlog::level::warn: return 4;      // LOG_WARNING
    case spdlog::level::info: return 6;      // LOG_INFO
    default: return 7;                       // LOG_DEBUG
  }
}

// The pattern flag %* : the journal's "<N>" line prefix (sd-daemon(3)).
class JournalPriorityFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    const std::string prefix = io::JournalPrefix(SyslogPriority(msg.level));
    dest.append(prefix.data(), prefix.data() + prefix.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JournalPriorityFlag>();
  }
};

}  // namespace

int RunDaemon(const std::string& config_path) {
  const bool journal = io::StderrIsJournal();
  if (journal) {
    // The journal stamps each line itself; a multi-line message would lose its priority
    // after the first line, and spigot logs none.
    spdlog::set_default_logger(spdlog::stderr_logger_mt("spigot"));
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->add_flag<JournalPriorityFlag>('*').set_pattern("%*%v");
    spdlog::set_formatter(std::move(formatter));
  } else {
    spdlog::set_default_logger(spdlog::stderr_color_mt("spigot"));
    spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  }
  const config::LoadResult r = config::LoadFile(config_path);
  if (!r.ok) {
    std::fprintf(stderr, "%sspigot: %s\n", journal ? io::JournalPrefix(3).c_str() : "",
                 r.error.c_str());
    return 1;
  }
  return RunGateway(r.config, config_path);
}

int ControlCommand(const std::string& socket, const std::string& command, const std::string& name,
                   bool json, bool ike) {
  nlohmann::json req = {{"command", command}};
  if (ike) req["ike"] = true;
  if (!name.empty()) req["name"] = name;
  const control::RequestResult r = control::ControlClient::Request(socket, req);
  if (!r.ok) {
    std::fprintf(stderr, "spigot %s: %s\n", command.c_str(), r.error.c_str());
    return r.response.is_object() && r.response.contains("error") ? 1 : 2;
  }
  if (json) {
    std::cout << r.response.dump(2) << "\n";
  } else if (command == "sas") {
    PrintSas(r.response);
  } else if (command == "stats") {
    PrintStats(r.response);
  } else if (command == "leases") {
    PrintLeases(r.response);
  } else {
    std::cout << r.response.value("message", r.response.dump()) << "\n";
  }
  return 0;
}

namespace {

int DebugRequest(const std::string& socket, const char* what, const nlohmann::json& req) {
  const control::RequestResult r = control::ControlClient::Request(socket, req);
  if (!r.ok) {
    std::fprintf(stderr, "spigot debug %s: %s\n", what, r.error.c_str());
    return r.response.is_object() && r.response.contains("error") ? 1 : 2;
  }
  std::cout << r.response.value("message", r.response.dump()) << "\n";
  return 0;
}

}  // namespace

int CryptoFaultCommand(const std::string& socket, const std::string& action, long ms) {
  return DebugRequest(socket, "crypto-fault",
                      {{"command", "crypto-fault"}, {"action", action}, {"ms", ms}});
}

int DebugHangCommand(const std::string& socket, const std::string& thread, long seconds) {
  return DebugRequest(socket, "hang", {{"command", "hang"}, {"thread", thread}, {"seconds", seconds}});
}

}  // namespace spigot::app
