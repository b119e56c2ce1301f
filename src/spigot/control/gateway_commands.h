// The operator commands a running gateway answers on its control socket (DESIGN.md, the CLI
// and machine-readable output contracts): the request's JSON in, the answer's JSON out. The
// gateway keeps the state; this file only reads it and formats it.
#pragma once

#include <nlohmann/json.hpp>

#include "spigot/gateway/gateway.h"

namespace spigot::control {

// {"command": "stats" | "sas" | "reload" | "initiate" | "terminate" | "rekey" | "crypto-fault",
//  ...} -> the answer; {"error": "..."} for anything the gateway refuses, including a request
// whose fields have the wrong types (CheckRequestFields). Never throws on a request.
nlohmann::json HandleCommand(gateway::Gateway& gw, const nlohmann::json& request);

// The fields commands read have their types: "command", "name", "action" and "thread" strings,
// "ike" a boolean, "ms" and "seconds" integers (each optional). Empty if so; else the error to
// answer with, naming the field. (nlohmann's value() throws on a type mismatch, and a float
// converted to an int may not even fit it.)
std::string CheckRequestFields(const nlohmann::json& request);

// `spigot stats --json`: the counters (the contract's fields, then more).
nlohmann::json StatsJson(gateway::Gateway& gw);
// Its "bounds" object (bounds::kBounds, each with limit, in_use, dropped and policy).
nlohmann::json BoundsJson(gateway::Gateway& gw);
// `spigot sas --json`: IKE SAs with their CHILD SAs.
nlohmann::json SasJson(const gateway::Gateway& gw);

}  // namespace spigot::control
