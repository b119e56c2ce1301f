#!/usr/bin/env bash
# `spigot loadgen --vips --traffic` (issue 11, item 5): a crowd of road warriors. Side b is a
# spigot concentrator with [[pool]] 198.18.0.0/20 on one %any connection (pools, local_ts
# 203.0.113.0/24, 203.0.113.1 on b's loopback); from side a, N loadgen initiators (default
# 1000, at RATE/s) each ask for a virtual IP (CFG_REQUEST) and send PACKETS ICMP echo requests
# from it to 203.0.113.1, each sealed with its own CHILD SA (ESP in UDP to port 4500); b's
# kernel answers through the pool route into spigot's TUN, back over that peer's CHILD SA.
# Meanwhile a CHILD rekey storm runs: b rekeys every CHILD SA every REKEY (2 s, 1,000 peers:
# ~500 rekeys a second once all are up) while each peer's PACKETS echoes (one every 50 ms: 2 s
# of traffic) cross it, so most peers' echoes straddle at least one make-before-break.
#  - while they are up, `spigot leases --json` on b shows N leases in use;
#  - every initiator is established with no failure, all N addresses are distinct and inside
#    the pool, and every peer gets all PACKETS replies (100 %);
#  - b's rekeys all complete (no CHILD SA failure) and there are at least N/2 of them;
#  - after the loadgen's DELETEs the leases are offline again (in_use 0).
# Addresses: documentation ranges and 198.18.0.0/15 only.
# usage: loadgen_roadwarriors.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16 PSK=roadwarriors-secret
N=${N:-1000} RATE=${RATE:-125} PACKETS=${PACKETS:-40} REKEY=${REKEY:-2s}
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
T0=$(date +%s)

# wait_for WANT TIMEOUT_S CMD...: until CMD prints WANT; prints the last answer on timeout.
wait_for() {
  local want=$1 deadline=$(( $(date +%s) + $2 )) got; shift 2
  while :; do
    got=$("$@" 2>/dev/null || true)
    [ "$got" = "$want" ] && return 0
    [ "$(date +%s)" -lt "$deadline" ] || { echo "last: '$got'"; return 1; }
    sleep 0.3
  done
}
json_field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$1"; }
leases_in_use() {
  sctl b leases --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pools"][0]["in_use"])'
}

netns_setup
cat >"$WORK/b.toml" <<TOML
[global]
control_socket = "$WORK/b.sock"
listen = "192.0.2.2"

[[pool]]
name = "rw"
addrs = "198.18.0.0/20"

[[connection]]
name = "rw"
local_addrs = "192.0.2.2"
remote_addrs = "%any"
local_id = "gw-b"
remote_id = "%any"
psk = "$PSK"
ike_proposals = "$IKE"
esp_proposals = "$ESP"
local_ts = "203.0.113.0/24"
pools = "rw"
child_rekey_time = "$REKEY"
TOML
spigot_start b

# Long enough to read the leases while every SA is up; the run lasts at least until each peer
# has its replies (or gave up on them).
DURATION=$(( N / RATE + 6 ))
ip netns exec "${NS}a" "$SPIGOT" loadgen --target 192.0.2.2 --psk "$PSK" --ike-sas "$N" \
  --rate "$RATE" --duration "$DURATION" --ike "$IKE" --esp "$ESP" --vips --traffic \
  --packets "$PACKETS" --traffic-dst 203.0.113.1 --json \
  >"$WORK/rw.json" 2>"$WORK/loadgen.log" &
LG=$!
PIDS+=("$LG")
wait_for "$N" $(( DURATION + 5 )) leases_in_use || fail "spigot leases: not $N in use while the peers are up"
sctl b leases --json >"$WORK/leases.json"
log "ok: spigot leases --json: $N in use"
lg_status=0
wait "$LG" || lg_status=$?
# Where b's kernel drops what spigot does not read in time: the TUN device's tx queue.
tun_drops=$(ip -n "${NS}b" -s -j link show | python3 -c 'import json,sys
print(", ".join("%s tx_dropped %d" % (l["ifname"], l["stats64"]["tx"]["dropped"]) for l in json.load(sys.stdin) if l["ifname"] != "lo"))')
log "b's links: $tun_drops"
[ "$lg_status" = 0 ] || { cat "$WORK/rw.json"; fail "loadgen exited non-zero"; }
r="$WORK/rw.json"
[ -s "$r" ] || fail "no report"
[ "$(json_field "$r" '["established"]')" = "$N" ] || { cat "$r"; fail "not all $N established"; }
[ "$(json_field "$r" '["failed"]')" = 0 ] || { cat "$r"; fail "failures"; }
[ "$(json_field "$r" '["vips"]["assigned"]')" = "$N" ] || { cat "$r"; fail "not $N virtual IPs"; }
[ "$(json_field "$r" '["vips"]["distinct"]')" = "$N" ] || { cat "$r"; fail "virtual IPs not distinct"; }
[ "$(json_field "$r" '["traffic"]["peers_all_replies"]')" = "$N" ] || { cat "$r"; fail "not every peer got all its replies"; }
want=$(( N * PACKETS ))
[ "$(json_field "$r" '["traffic"]["sent"]')" = "$want" ] || { cat "$r"; fail "not $want echo requests sent"; }
[ "$(json_field "$r" '["traffic"]["received"]')" = "$want" ] || { cat "$r"; fail "not $want echo replies"; }
log "ok: $N road warriors, $N distinct virtual IPs, $(json_field "$r" '["establish_rate_per_second"]') /s" \
    "(p99 $(json_field "$r" '["latency_ms"]["p99"]') ms), $want of $want echo replies"
# While they were up: one lease per peer of the crowd, N distinct addresses in the pool.
python3 - "$WORK/leases.json" "$N" <<'PY' || fail "leases do not match the crowd"
import ipaddress, json, sys
pool = json.load(open(sys.argv[1]))["pools"][0]
n = int(sys.argv[2])
assert pool["in_use"] == n, pool["in_use"]
addrs = {l["address"] for l in pool["leases"]}
ids = {l["identity"] for l in pool["leases"]}
net = ipaddress.ip_network("198.18.0.0/20")
assert len(addrs) == n and all(ipaddress.ip_address(a) in net for a in addrs), (len(addrs), n)
assert all("loadgen-" in i for i in ids) and len(ids) == n, len(ids)
PY
sctl b stats --json >"$WORK/stats.json"
rekeys=$(field "$WORK/stats.json" rekeys.completed)
child_failures=$(field "$WORK/stats.json" ike.child_failures)
[ "$child_failures" = 0 ] || fail "$child_failures CHILD SA negotiations failed during the rekey storm"
[ "$rekeys" -ge $(( N / 2 )) ] || fail "only $rekeys CHILD rekeys completed on b (want at least $(( N / 2 )))"
log "ok: rekey storm: b completed $rekeys CHILD rekeys (every $REKEY) while the echoes ran, no failure"
wait_for 0 10 leases_in_use || fail "leases still in use after the loadgen's DELETEs"
log "ok: leases offline after the DELETEs"
echo "PASS: $N road warriors got distinct virtual IPs and every echo reply through $rekeys rekeys ($(( $(date +%s) - T0 )) s)"
