#!/usr/bin/env bash
# iperf3 TCP for 10 s through (a) two spigots and (b) two strongSwan charons (kernel-libipsec),
# in the same topology (two network namespaces joined by a veth pair) and the same run; prints
# both rates and the ratio. Run as root.
# usage: bench/tunnel.sh [BUILD_DIR] [SECONDS]     (default build/release, 10)
# Environment: ESPS="aes128gcm16 aes256-sha256" runs spigot once per ESP proposal (default
# aes128gcm16) and prints each rate and its ratio to the first; SPIGOT_ONLY=1 skips strongSwan
# (which runs with the first proposal).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build/release}
SECONDS_=${2:-10}
SPIGOT=$(cd "$BUILD" && pwd)/spigot
HERE=$ROOT/tests
source "$ROOT/tests/lib.sh"
IKE=aes128gcm16-prfsha256-x25519
read -r -a ESP_LIST <<<"${ESPS:-aes128gcm16}"
ESP=${ESP_LIST[0]}

iperf() {  # iperf -> Mbit/s received, a -> b
  ip netns exec "${NS}b" iperf3 -s -1 -B 203.0.113.1 >/dev/null 2>&1 &
  local server=$!
  sleep 0.5
  ip netns exec "${NS}a" iperf3 -c 203.0.113.1 -B 198.51.100.1 -t "$SECONDS_" -J >"$WORK/iperf.json" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  python3 -c 'import json,sys; print("%.0f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e6))' "$WORK/iperf.json"
}
stop_all() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}

netns_setup
installed() { sctl a sas --json | grep -q INSTALLED; }
spigot_mbps=
for esp in "${ESP_LIST[@]}"; do
  spigot_config a "$IKE" "$esp"
  spigot_config b "$IKE" "$esp"
  spigot_start a
  spigot_start b
  sctl a initiate peer >/dev/null
  until_ok 10 installed || fail "spigot tunnel ($esp) did not come up"
  until_ok 10 ping_ok a || fail "spigot tunnel ($esp) does not pass traffic"
  mbps=$(iperf)
  echo "spigot    <-> spigot   : ${mbps} Mbit/s ($esp)"
  if [ -z "$spigot_mbps" ]; then
    spigot_mbps=$mbps
  else
    python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f'  {sys.argv[3]} / ${ESP}: {b / a:.0%}' if a > 0 else '')" "$spigot_mbps" "$mbps" "$esp"
  fi
  stop_all
  sleep 0.5
done
[ "${SPIGOT_ONLY:-0}" = 1 ] && exit 0

charon_start a "$IKE" "$ESP"
charon_start b "$IKE" "$ESP"
swan a --initiate --child net >/dev/null || fail "charon tunnel did not come up"
until_ok 10 ping_ok a || fail "charon tunnel does not pass traffic"
swan_mbps=$(iperf)
echo "strongSwan <-> strongSwan: ${swan_mbps} Mbit/s"
stop_all

python3 -c "import sys; s, w = float(sys.argv[1]), float(sys.argv[2]); print(f'ratio spigot/strongSwan: {s / w:.1f}x' if w > 0 else 'strongSwan passed nothing')" "$spigot_mbps" "$swan_mbps"
