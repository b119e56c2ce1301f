// `spigot bench sad`: installs N CHILD SAs in an SaDatabase and measures the install rate, the
// resident memory per CHILD SA and the inbound lookup rate.
#pragma once

#include <cstddef>

namespace spigot::app {

// Prints {"sas", "rss_bytes_per_sa", "install_per_second", "lookups_per_second"} as one JSON
// object with `json`, a human-readable line otherwise. Returns the process exit code.
int RunBenchSad(std::size_t sas, bool json);

}  // namespace spigot::app
