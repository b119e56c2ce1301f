// The CLI side of the control socket (protocol in control_server.h): one request, one response.
#pragma once

#include <chrono>
#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>

namespace spigot::control {

struct ClientOptions {
  // For the whole exchange: connecting, sending, and the daemon composing its answer.
  std::chrono::milliseconds timeout{30'000};
  // A listing of a million SAs is a few hundred MB; anything past this is refused.
  std::size_t max_response_bytes = std::size_t{1} << 30;
};

struct RequestResult {
  bool ok = false;
  // The daemon's answer; also set when it answered with an "error".
  nlohmann::json response;
  // iff !ok: why, ready to print ("cannot connect to ...: ... — is `spigot run` running?", or
  // the daemon's "error" text).
  std::string error;
};

class ControlClient {
 public:
  static RequestResult Request(const std::string& socket_path, const nlohmann::json& request,
                               const ClientOptions& options = {});
};

}  // namespace spigot::control
