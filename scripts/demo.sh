#!/usr/bin/env bash
# spigot's main job, as far as it exists today: installs dependencies, builds the Release tree,
# and runs the ESP data-path benchmark against the bare intel-ipsec-mb ceiling plus the SA
# database benchmark. (The two-gateway tunnel demo replaces this once the daemon exists.)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build/release -j "${JOBS:-2}" spigot spigot_bench

echo "== ESP seal/open vs raw AES-GCM-128 (one core)"
bash bench/esp.sh build/release
echo
echo "== SA database: 1,000,000 CHILD SAs"
build/release/spigot bench sad --sas 1000000
