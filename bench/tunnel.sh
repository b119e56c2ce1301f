#!/usr/bin/env bash
# Tunnel throughput side by side, in one run and one topology (two network namespaces joined by
# a veth pair, inner hosts 198.51.100.1 and 203.0.113.1 on lo), a -> b (issue 14):
#   veth        no tunnel: the inner networks routed over the veth (the ceiling here)
#   spigot      two spigots, AES-128-GCM
#   spigot-cbc  two spigots, AES-256-CBC + HMAC-SHA-256 (what native Windows and Apple clients use)
#   wireguard   two wireguard-go (Debian's build) with wireguard-tools, ChaCha20-Poly1305
#   strongswan  two strongSwan 5.9.8 charons with kernel-libipsec, AES-128-GCM
# Cases, SECONDS each: tcp1 (one iperf3 TCP stream), tcp8 (8 parallel streams), udp1400 and
# udp64 (1400- and 64-byte IP packets as fast as bench/tools/udp_spray sends them with
# sendmmsg; packets/s counted at the far end), udp64gso (64-byte packets sent 64 at a time as
# UDP GSO super-datagrams and taken in with UDP_GRO at the far end: the sender's and sink's
# system calls stop bounding the rate; the tunnel still seals and opens every packet). Each result: Mbit/s, kpps, % of veth in the same
# run, and the daemons' CPU seconds per GB moved (user + system time of the tunnel processes,
# from /proc/PID/stat), so that a rate is not bought with more cores.
# Then TUNNELS (default 1000) spigot <-> spigot CHILD SAs, one per address pair
# 198.18.0.k <-> 198.19.0.k (one connection each), with 1400-byte traffic spread round-robin
# over all of them, against the same traffic over one tunnel covering all the pairs.
#
# usage: bench/tunnel.sh [BUILD_DIR (build/release)] [SECONDS (10)]
# Environment: SYSTEMS (default "veth spigot spigot-cbc wireguard strongswan"; empty: none), CASES (default
# "tcp1 tcp8 udp1400 udp64 udp64gso"), TUNNELS (default 1000; 0 skips that case). Run as root.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$ROOT/build/release}" && pwd)
SECONDS_=${2:-10}
SPIGOT=$BUILD/spigot
SPRAY=$BUILD/udp_spray
HERE=$ROOT/tests
source "$ROOT/tests/lib.sh"
read -r -a SYSTEMS <<<"${SYSTEMS-veth spigot spigot-cbc wireguard strongswan}"
read -r -a CASES <<<"${CASES-tcp1 tcp8 udp1400 udp64 udp64gso}"
TUNNELS=${TUNNELS:-1000}
IKE=aes128gcm16-prfsha256-x25519
[ -x "$SPRAY" ] || { echo "no $SPRAY (built with SPIGOT_BENCH=ON)" >&2; exit 2; }
RESULTS=$WORK/results.txt
: >"$RESULTS"

stop_all() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
cpu_ticks() {  # cpu_ticks PID... -> user + system clock ticks of those processes (all threads)
  local total=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    total=$(( total + $(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$p/stat") ))
  done
  echo "$total"
}
TUNNEL_PIDS=()

# run_case CASE -> "MBPS KPPS BYTES": a -> b through whatever routes the inner networks now.
run_case() {
  case $1 in
    tcp1 | tcp8)
      local streams=1
      [ "$1" = tcp8 ] && streams=8
      ip netns exec "${NS}b" iperf3 -s -1 -B 203.0.113.1 >/dev/null 2>&1 &
      local server=$!
      listening "${NS}b" tcp 203.0.113.1 5201
      ip netns exec "${NS}a" iperf3 -c 203.0.113.1 -B 198.51.100.1 -t "$SECONDS_" -P "$streams" -J \
        >"$WORK/iperf.json" 2>/dev/null || true
      wait "$server" 2>/dev/null || true
      python3 -c 'import json,sys
e=json.load(open(sys.argv[1]))["end"]["sum_received"]
print("%.0f %.1f %d" % (e["bits_per_second"] / 1e6, e["bits_per_second"] / 8 / 1448 / 1e3, e["bytes"]))' "$WORK/iperf.json"
      ;;
    udp1400 | udp64)
      local payload=1372
      [ "$1" = udp64 ] && payload=36
      spray 198.51.100.1 203.0.113.1 1 "$payload"
      ;;
    udp64gso) SPRAY_GSO=1 spray 198.51.100.1 203.0.113.1 1 36 ;;
  esac
}
# spray SRC_BASE DST_BASE PAIRS PAYLOAD -> "MBPS KPPS BYTES" (IP packets: payload + 28);
# SPRAY_GSO=1: sent as UDP GSO super-datagrams, taken in with UDP_GRO
# Each run on a port of its own, and the sink counts only datagrams of this run's size: a tunnel
# still draining the last case's backlog (strongSwan's kernel-libipsec queues seconds of it)
# must not count here.
SPRAY_PORT=5300
spray() {
  SPRAY_PORT=$(( SPRAY_PORT + 1 ))
  local gso=() gro=()
  [ -n "${SPRAY_GSO:-}" ] && gso=(--gso) gro=(--gro)
  ip netns exec "${NS}b" "$SPRAY" sink "${gro[@]}" "$SPRAY_PORT" $(( SECONDS_ + 3 )) "$4" >"$WORK/sink.txt" 2>&1 &
  local sink=$!
  listening "${NS}b" udp 0.0.0.0 "$SPRAY_PORT"
  ip netns exec "${NS}a" "$SPRAY" send "${gso[@]}" "$1" "$2" "$3" "$SPRAY_PORT" "$4" "$SECONDS_" >"$WORK/spray.txt" 2>&1 || true
  wait "$sink" || true
  python3 -c 'import re,sys
t=open(sys.argv[1]).read(); n,b,s=re.search(r"received (\d+) datagrams, (\d+) bytes in ([0-9.]+) s", t).groups()
n,b,s=int(n),int(b),max(float(s),1e-9); ip=b+28*n
print("%.0f %.1f %d" % (ip*8/s/1e6, n/s/1e3, ip))' "$WORK/sink.txt"
}

# measure SYSTEM: every case, with the CPU of TUNNEL_PIDS.
measure() {
  local system=$1 c line mbps kpps bytes t0 t1 hz
  hz=$(getconf CLK_TCK)
  for c in "${CASES[@]}"; do
    t0=$(cpu_ticks "${TUNNEL_PIDS[@]}")
    line=$(run_case "$c")
    t1=$(cpu_ticks "${TUNNEL_PIDS[@]}")
    read -r mbps kpps bytes <<<"$line"
    echo "$system $c $mbps $kpps $bytes $(( t1 - t0 )) $hz" >>"$RESULTS"
    printf '%-11s %-8s %7s Mbit/s %8s kpps\n' "$system" "$c" "$mbps" "$kpps"
  done
}

netns_setup
up_spigot() {  # up_spigot ESP
  spigot_config a "$IKE" "$1"
  spigot_config b "$IKE" "$1"
  spigot_start a
  spigot_start b
  TUNNEL_PIDS=("${PIDS[@]}")
  sctl a initiate peer >/dev/null
  until_ok 10 ping_ok a || fail "spigot tunnel ($1) does not pass traffic"
}
up_wireguard() {
  command -v wireguard-go >/dev/null && command -v wg >/dev/null ||
    fail "wireguard-go and wireguard-tools are not installed (scripts/install-deps.sh installs them)"
  local s other me peer lnet rnet
  for s in a b; do
    umask 077; wg genkey >"$WORK/wg-$s.key"; wg pubkey <"$WORK/wg-$s.key" >"$WORK/wg-$s.pub"
    # Foreground, so that its CPU time is this process's; named per side (their UAPI sockets
    # share /var/run/wireguard).
    ip netns exec "${NS}$s" wireguard-go -f "${NS}w$s" >"$WORK/wireguard-$s.log" 2>&1 &
    PIDS+=($!)
  done
  TUNNEL_PIDS=("${PIDS[@]}")
  for s in a b; do
    until_ok 5 test -S "/var/run/wireguard/${NS}w$s.sock" || fail "wireguard-go $s did not start"
  done
  for s in a b; do
    if [ "$s" = a ]; then other=b me=192.0.2.1 peer=192.0.2.2 lnet=198.51.100.1 rnet=203.0.113.0/24
    else other=a me=192.0.2.2 peer=192.0.2.1 lnet=203.0.113.1 rnet=198.51.100.0/24; fi
    ip netns exec "${NS}$s" wg set "${NS}w$s" private-key "$WORK/wg-$s.key" listen-port 51820 \
      peer "$(cat "$WORK/wg-$other.pub")" allowed-ips "$rnet" endpoint "$peer:51820"
    ip -n "${NS}$s" link set "${NS}w$s" up
    ip -n "${NS}$s" route add "$rnet" dev "${NS}w$s" src "$lnet"
  done
  until_ok 10 ping_ok a || fail "wireguard tunnel does not pass traffic"
}
up_strongswan() {
  charon_start a "$IKE" aes128gcm16
  charon_start b "$IKE" aes128gcm16
  TUNNEL_PIDS=("${PIDS[@]}")
  swan a --initiate --child net >/dev/null || fail "charon tunnel did not come up"
  until_ok 10 ping_ok a || fail "charon tunnel does not pass traffic"
}
for system in "${SYSTEMS[@]}"; do
  case $system in
    veth)
      ip -n "${NS}a" route add 203.0.113.0/24 via 192.0.2.2 src 198.51.100.1
      ip -n "${NS}b" route add 198.51.100.0/24 via 192.0.2.1 src 203.0.113.1
      TUNNEL_PIDS=()
      measure veth
      ip -n "${NS}a" route del 203.0.113.0/24
      ip -n "${NS}b" route del 198.51.100.0/24
      ;;
    spigot) up_spigot aes128gcm16; measure spigot ;;
    spigot-cbc) up_spigot aes256-sha256; measure spigot-cbc ;;
    wireguard) up_wireguard; measure wireguard ;;
    strongswan) up_strongswan; measure strongswan ;;
    *) fail "unknown system $system" ;;
  esac
  stop_all
  sleep 0.5
done

# TUNNELS CHILD SAs against one: the same spray over TUNNELS address pairs.
if [ "$TUNNELS" -gt 0 ]; then
  [ "$TUNNELS" -le 1000 ] || fail "TUNNELS at most 1000 (198.18.0.1 + k, 198.19.0.1 + k)"
  pair() {  # pair K SIDE -> the address of pair K (0-based) on SIDE
    local n=$(( $1 + 1 ))
    echo "$([ "$2" = a ] && echo 198.18 || echo 198.19).$(( n / 256 )).$(( n % 256 ))"
  }
  for s in a b; do
    for k in $(seq 0 $(( TUNNELS - 1 ))); do echo "addr add $(pair "$k" "$s")/32 dev lo"; done >"$WORK/addrs-$s"
    ip -n "${NS}$s" -batch "$WORK/addrs-$s"
  done
  many_conf() {  # many_conf SIDE COUNT: COUNT connections (1: one covering every pair)
    local side=$1 count=$2 me=192.0.2.1 peer=192.0.2.2 mine=a theirs=b k
    [ "$side" = b ] && me=192.0.2.2 peer=192.0.2.1 mine=b theirs=a
    {
      printf '[global]\ncontrol_socket = "%s"\nlisten = "%s"\nmax_queue = 4096\n' "$WORK/$side.sock" "$me"
      for k in $(seq 0 $(( count - 1 ))); do
        local lts rts
        if [ "$count" = 1 ]; then
          lts=$([ "$side" = a ] && echo 198.18.0.0/16 || echo 198.19.0.0/16)
          rts=$([ "$side" = a ] && echo 198.19.0.0/16 || echo 198.18.0.0/16)
        else
          lts=$(pair "$k" "$side")/32 rts=$(pair "$k" "$theirs")/32
        fi
        printf '\n[[connection]]\nname = "t%d"\nlocal_addrs = "%s"\nremote_addrs = "%s"\n' "$k" "$me" "$peer"
        printf 'local_id = "%s-%d"\nremote_id = "%s-%d"\npsk = "many-secret"\n' "$mine" "$k" "$theirs" "$k"
        printf 'ike_proposals = "%s"\nesp_proposals = "aes128gcm16"\nlocal_ts = "%s"\nremote_ts = "%s"\n' "$IKE" "$lts" "$rts"
        if [ "$side" = a ]; then printf 'start_action = "start"\n'; fi
      done
    } >"$WORK/$side.toml"
  }
  children_up() {  # children_up COUNT: spigot a has COUNT CHILD SAs installed
    [ "$(sctl a sas --json | python3 -c 'import json,sys
print(sum(c["state"] == "INSTALLED" for s in json.load(sys.stdin)["ike_sas"] for c in s["children"]))')" = "$1" ]
  }
  for count in 1 "$TUNNELS"; do
    many_conf a "$count"
    many_conf b "$count"
    spigot_start b
    spigot_start a
    TUNNEL_PIDS=("${PIDS[@]}")
    until_ok 120 children_up "$count" || fail "$count tunnels did not come up"
    t0=$(cpu_ticks "${TUNNEL_PIDS[@]}")
    read -r mbps kpps bytes <<<"$(spray "$(pair 0 a)" "$(pair 0 b)" "$TUNNELS" 1372)"
    t1=$(cpu_ticks "${TUNNEL_PIDS[@]}")
    echo "spigot-${count}-tunnels udp1400x$TUNNELS $mbps $kpps $bytes $(( t1 - t0 )) $(getconf CLK_TCK)" >>"$RESULTS"
    printf '%-11s %-8s %7s Mbit/s %8s kpps (%s pairs of addresses)\n' "spigot" "$count tunnel(s)" "$mbps" "$kpps" "$TUNNELS"
    stop_all
    sleep 0.5
  done
fi

echo
echo "== summary ($(uptime | sed 's/.*load average/load average/'))"
python3 - "$RESULTS" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
veth = {r[1]: float(r[2]) for r in rows if r[0] == "veth"}
print(f"{'system':<22} {'case':<14} {'Mbit/s':>8} {'kpps':>8} {'% veth':>7} {'CPU s/GB':>9}")
for system, case, mbps, kpps, nbytes, ticks, hz in rows:
    mbps, nbytes, ticks, hz = float(mbps), int(nbytes), int(ticks), int(hz)
    pct = f"{mbps / veth[case]:.0%}" if veth.get(case) else "-"
    cpu = f"{ticks / hz / (nbytes / 1e9):.1f}" if nbytes and system != "veth" else "-"
    print(f"{system:<22} {case:<14} {mbps:>8.0f} {float(kpps):>8.1f} {pct:>7} {cpu:>9}")
by = {(r[0], r[1]): float(r[2]) for r in rows}
def ratio(a, b, what):
    if by.get(a) and by.get(b):
        print(f"{what}: {by[a] / by[b]:.2f}")
for c in ("tcp1", "tcp8", "udp1400", "udp64", "udp64gso"):
    ratio(("spigot", c), ("wireguard", c), f"spigot / wireguard-go, {c}")
    ratio(("spigot", c), ("strongswan", c), f"spigot / strongSwan, {c}")
    ratio(("spigot-cbc", c), ("spigot", c), f"spigot AES-CBC+HMAC / AES-GCM, {c}")
many = [r for r in rows if r[0].startswith("spigot-") and r[0].endswith("-tunnels")]
if len(many) == 2:
    one, lots = sorted(many, key=lambda r: int(r[0].split("-")[1]))
    print(f"{lots[0].split('-')[1]} tunnels / 1 tunnel (same traffic): {float(lots[2]) / float(one[2]):.0%}")
PY
