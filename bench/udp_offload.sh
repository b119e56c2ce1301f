#!/usr/bin/env bash
# udp_offload.sh SECONDS SPIGOT_BIN MODE...: veth baseline, then spigot with each MODE; iperf3 one
# TCP stream and UDP with 1400-byte inner packets (-l 1372), a -> b. MODEs:
#   on       global.udp_offload and global.tun_offload true (the defaults)
#   off      both false: one packet per system call entry, as before issue 14
#   udp-off  udp_offload false, tun_offload true
#   tun-off  udp_offload true, tun_offload false
#   tN       the defaults with global.datapath_threads = N (issue 14 item 4: t1 vs t2)
# ROUNDS=N (default 1) repeats veth and every mode N times, interleaved, so that a busy machine
# spreads its noise over all of them; TCP_ONLY=1 skips the UDP case. STREAMS="1 8" (default 1)
# runs the TCP case once per count of parallel streams (iperf3 -P).
set -euo pipefail
SECONDS_=$1; export SPIGOT=$2; shift 2
MODES=("$@")
ROUNDS=${ROUNDS:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/tests/lib.sh"
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16
STREAMS=${STREAMS:-1}
run_iperf() {  # run_iperf DST SRC [udp|tcp] [PARALLEL]
  ip netns exec "${NS}b" iperf3 -s -1 -B "$1" >/dev/null 2>&1 &
  local server=$!
  sleep 0.5
  local extra=()
  [ "${3:-}" = udp ] && extra=(-u -b 0 -l 1372)
  [ "${4:-1}" = 1 ] || extra+=(-P "$4")
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
for round in $(seq "$ROUNDS"); do
echo "== round $round"
for p in $STREAMS; do echo "veth TCP x$p: $(run_iperf 192.0.2.2 192.0.2.1 tcp "$p")"; done
[ "${TCP_ONLY:-0}" = 1 ] || echo "veth UDP1400: $(run_iperf 192.0.2.2 192.0.2.1 udp)"
for mode in "${MODES[@]}"; do
  bin=offload-$mode
  spigot_config a "$IKE" "$ESP"; spigot_config b "$IKE" "$ESP"
  case "$mode" in
    on) ;;
    off) sed -i '/^\[global\]/a udp_offload = false\ntun_offload = false' "$WORK/a.toml" "$WORK/b.toml" ;;
    udp-off) sed -i '/^\[global\]/a udp_offload = false' "$WORK/a.toml" "$WORK/b.toml" ;;
    tun-off) sed -i '/^\[global\]/a tun_offload = false' "$WORK/a.toml" "$WORK/b.toml" ;;
    t[0-9]*) sed -i "/^\[global\]/a datapath_threads = ${mode#t}" "$WORK/a.toml" "$WORK/b.toml" ;;
    *) fail "unknown mode $mode" ;;
  esac
  spigot_start a; spigot_start b
  sctl a initiate peer >/dev/null
  installed() { sctl a sas --json | grep -q INSTALLED; }
  until_ok 10 installed || fail "spigot tunnel did not come up"
  until_ok 10 ping_ok a || fail "spigot tunnel does not pass traffic"
  for p in $STREAMS; do echo "$bin TCP x$p: $(run_iperf 203.0.113.1 198.51.100.1 tcp "$p")"; done
  [ "${TCP_ONLY:-0}" = 1 ] || echo "$bin UDP1400: $(run_iperf 203.0.113.1 198.51.100.1 udp)"
  for s in a b; do sctl $s stats --json | python3 -c '
import json,sys
t=json.load(sys.stdin)["traffic"]
u={k:v for k,v in t.get("udp_offload",{}).items() if v}
o={k:v for k,v in t.get("tun_offload",{}).items() if v and k in ("super_segments","segments_split","coalesced_writes","coalesced_segments","bad_vnet_hdr","bad_csum_passed","fallbacks")}
print("  '$s' udp_offload", u, "tun_offload", o)'; done
  for s in a b; do sctl $s stats --json | python3 -c '
import json,sys
d=json.load(sys.stdin).get("datapath",{})
print("  '$s' datapath threads", [(t["tx"], t["rx"]) for t in d.get("threads",[])], "(tx, rx); handed over", d.get("handed_over"))'; done
  stop_all
  sleep 0.5
done
done
