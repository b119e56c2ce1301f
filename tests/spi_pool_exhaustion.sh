#!/usr/bin/env bash
# SPI pool exhaustion (issue 5, scenario 1): a responder with max_spi = 1000 (5 % rekey
# reserve: 950 for new CHILD SAs) and 1,500 tunnels requested. No more than the non-reserved
# share is established, the rest are refused with TEMPORARY_FAILURE and counted in failed_sas;
# the established tunnels keep completing CHILD rekeys (which use the reserve) throughout; a
# reload raising max_spi lets the rest in, without a restart.
# usage: spi_pool_exhaustion.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16 PSK=pool-secret
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"

netns_setup
spigot_config b "$IKE" "$ESP" "$PSK"
sed -i -e 's/^remote_id = .*/remote_id = "%any"/' -e '/^remote_ts = /d' "$WORK/b.toml"
sed -i 's/^cookie_threshold = .*/&\nmax_spi = 1000/' "$WORK/b.toml"
# Road warriors (loadgen --vips): each its own address from the pool. Peers claiming the same
# inner addresses would be refused with TS_UNACCEPTABLE (one destination, one SA).
cat >>"$WORK/b.toml" <<TOML
pools = "rw"

[[pool]]
name = "rw"
addrs = "198.18.0.0/20"
TOML
spigot_start b

# 1,500 initiators at 500/s, kept up for 12 s with CHILD rekeys every 4 s.
ip netns exec "${NS}a" "$SPIGOT" loadgen --target 192.0.2.2 --psk "$PSK" --ike-sas 1500 --rate 500 --vips \
  --duration 12 --child-rekey-time 4s --ike "$IKE" --esp "$ESP" --json >"$WORK/first.json" 2>"$WORK/lg1.log" &
lg=$!
sleep 6
sctl b stats --json >"$WORK/full.json"
sctl b doctor --json >"$WORK/doctor.json"
wait "$lg" || true
established=$(field "$WORK/first.json" established)
refused=$(python3 -c 'import json,sys; f=json.load(open(sys.argv[1]))["failures"]; print(sum(v for k, v in f.items() if "TEMPORARY_FAILURE" in k))' "$WORK/first.json")
rekeys=$(field "$WORK/first.json" rekeys_completed)
failed_sas=$(field "$WORK/full.json" failed_sas)
log "max_spi 1000: $established established, $refused refused with TEMPORARY_FAILURE, $rekeys CHILD rekeys completed; responder failed_sas $failed_sas, spi_in_use $(field "$WORK/full.json" spi_in_use)"
[ "$established" -le 950 ] || fail "more than the non-reserved 950 were established"
[ "$established" -ge 900 ] || fail "only $established of the 950 available were established"
[ $((established + refused)) = 1500 ] || { cat "$WORK/first.json"; fail "every initiator must be established or refused with TEMPORARY_FAILURE"; }
[ "$failed_sas" -ge "$refused" ] || fail "refusals not counted in failed_sas"
[ "$rekeys" -ge "$established" ] || fail "established tunnels did not keep rekeying with the pool full ($rekeys rekeys)"

python3 - "$WORK/doctor.json" <<'PY' || fail "doctor did not diagnose the full pool: $(cat "$WORK/doctor.json")"
import json, sys
f = [x for x in json.load(open(sys.argv[1]))["findings"] if x["cause"] == "spi_pool_exhausted"]
assert f and "max_spi" in f[0]["fix"], f
print("doctor:", f[0]["evidence"], "->", f[0]["fix"])
PY
log "ok: spigot doctor diagnosed spi_pool_exhausted live"

# Raise max_spi with a reload: the rest get in.
sed -i 's/^max_spi = 1000/max_spi = 4096/' "$WORK/b.toml"
sctl b reload >/dev/null
ip netns exec "${NS}a" "$SPIGOT" loadgen --target 192.0.2.2 --psk "$PSK" --ike-sas "$refused" --rate 500 --vips \
  --ike "$IKE" --esp "$ESP" --id-prefix second --json >"$WORK/second.json" 2>"$WORK/lg2.log" || true
[ "$(field "$WORK/second.json" established)" = "$refused" ] || { cat "$WORK/second.json"; fail "after raising max_spi the refused tunnels still cannot get in"; }
log "ok: after reload (max_spi 4096) the $refused refused tunnels were established"
echo "PASS: SPI pool exhaustion handled: refusals counted, rekeys kept working, reload admits the rest"
