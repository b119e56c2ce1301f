#!/usr/bin/env bash
# bench_gso.sh SECONDS SPIGOT_BIN MODE...: veth baseline, then spigot with each MODE (on: global.udp_offload
# = true, off: false); iperf3 one TCP stream and UDP with 1400-byte inner packets (-l 1372), a -> b.
set -euo pipefail
SECONDS_=$1; export SPIGOT=$2; shift 2
MODES=("$@")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/tests/lib.sh"
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16
run_iperf() {  # run_iperf DST SRC [udp]
  ip netns exec "${NS}b" iperf3 -s -1 -B "$1" >/dev/null 2>&1 &
  local server=$!
  sleep 0.5
  local extra=()
  [ "${3:-}" = udp ] && extra=(-u -b 0 -l 1372)
  ip netns exec "${NS}a" iperf3 -c "$1" -B "$2" -t "$SECONDS_" "${extra[@]}" -J >"$WORK/iperf.json" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  python3 - "$WORK/iperf.json" <<'PY'
import json,sys
e=json.load(open(sys.argv[1]))["end"]
if "sum_received" in e: print("%.0f Mbit/s" % (e["sum_received"]["bits_per_second"]/1e6))
else:
  s=e["sum"]; print("%.0f Mbit/s sent, %.1f%% lost -> %.0f Mbit/s, %.0f kpps" % (s["bits_per_second"]/1e6, s["lost_percent"], s["bits_per_second"]/1e6*(1-s["lost_percent"]/100), s["packets"]*(1-s["lost_percent"]/100)/s["seconds"]/1e3))
PY
}
stop_all() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
netns_setup
echo "veth TCP: $(run_iperf 192.0.2.2 192.0.2.1)"
echo "veth UDP1400: $(run_iperf 192.0.2.2 192.0.2.1 udp)"
for mode in "${MODES[@]}"; do
  bin=offload-$mode
  spigot_config a "$IKE" "$ESP"; spigot_config b "$IKE" "$ESP"
  if [ "$mode" = off ]; then sed -i '/^\[global\]/a udp_offload = false' "$WORK/a.toml" "$WORK/b.toml"; fi
  spigot_start a; spigot_start b
  sctl a initiate peer >/dev/null
  installed() { sctl a sas --json | grep -q INSTALLED; }
  until_ok 10 installed || fail "spigot tunnel did not come up"
  until_ok 10 ping_ok a || fail "spigot tunnel does not pass traffic"
  echo "$bin TCP: $(run_iperf 203.0.113.1 198.51.100.1)"
  echo "$bin UDP1400: $(run_iperf 203.0.113.1 198.51.100.1 udp)"
  for s in a b; do sctl $s stats --json | python3 -c 'import json,sys; t=json.load(sys.stdin); print("  '$s'", t["traffic"].get("udp_offload"), {k:v for k,v in t["packets_dropped"].items() if v})'; done
  stop_all
  sleep 0.5
done
