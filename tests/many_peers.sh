#!/usr/bin/env bash
# Issue 11: several peers on one connection. One spigot responder (namespace b, connection
# "peer": remote_id "%any", local_ts 203.0.113.0/24, remote_ts 198.19.0.0/16) and three strongSwan
# initiators, each in its own namespace with its own identity (peerI.example) and inner address
# 198.19.I.1/32. All three establish to the same connection; then, all at the same time, each
# pings 203.0.113.1 from its inner address and sends a TCP stream of BYTES (every byte checked)
# to it. Every peer must get every reply: replies to a peer must leave through that peer's
# CHILD SA, not through one outbound policy for the whole connection. spigot must hold 3 IKE and
# 3 CHILD SAs (one per peer, narrowed to its /32) and count no selector_mismatch drop.
# Then peer 2 asks for a second CHILD SA from peer 1's address 198.19.1.1/32: spigot must refuse it
# (TS_UNACCEPTABLE, counted in policies.conflicts), and peer 1 must still get its replies.
# (A packet with a spoofed inner source is not tried: strongSwan's libipsec sends nothing its
# own CHILD SA's selectors do not cover, so the claim is made where strongSwan can make it.)
# usage: many_peers.sh SPIGOT_BINARY [BYTES]
set -euo pipefail
SPIGOT=$1 BYTES=${2:-8388608}
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16 PSK=many-peers-secret
PEERS=3 PINGS=10
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
command -v swanctl >/dev/null || fail "strongSwan is not installed (scripts/install-deps.sh installs it)"

netns_hub_setup "$PEERS"
spigot_config b "$IKE" "$ESP" "$PSK"
sed -i -e 's/^remote_addrs = .*/remote_addrs = "%any"/' -e 's/^remote_id = .*/remote_id = "%any"/' \
  -e 's|^remote_ts = .*|remote_ts = "198.19.0.0/16"|' "$WORK/b.toml"
spigot_start b
for i in $(seq "$PEERS"); do
  # Peer 2 also has a CHILD SA "claim" for peer 1's address, initiated only at the end.
  charon_hub_peer "$i" "$IKE" "$ESP" "$PSK" "$([ "$i" = 2 ] && echo 198.19.1.1/32 || true)"
  swan "p$i" --initiate --child net >"$WORK/initiate-p$i.out" 2>&1 ||
    { cat "$WORK/initiate-p$i.out"; fail "peer$i (charon) could not initiate"; }
done

# sa_check: spigot holds one ESTABLISHED IKE SA of connection "peer" per peer, each with one
# CHILD SA whose remote selector is that peer's inner /32. Prints what it found.
sa_check() {
  sctl b sas --json >"$WORK/sas.json" || return 1
  python3 - "$WORK/sas.json" "$PEERS" <<'PY'
import json, sys
ikes = json.load(open(sys.argv[1]))["ike_sas"]
peers = int(sys.argv[2])
est = [s for s in ikes if s["state"] == "ESTABLISHED"]
kids = [c for s in est for c in s["children"] if c["state"] == "INSTALLED"]
print(f"{len(est)} IKE SAs ESTABLISHED ({len(ikes)} in all), {len(kids)} CHILD SAs INSTALLED:",
      "; ".join("%s from %s remote_ts %s" % (s["name"], s["remote"], [c["remote_ts"] for c in s["children"]])
                for s in ikes))
want = sorted([f"198.19.{i}.1/32"] for i in range(1, peers + 1))
ok = (len(ikes) == peers and len(est) == peers and len(kids) == peers
      and all(s["name"] == "peer" and len(s["children"]) == 1 for s in est)
      and sorted(c["remote_ts"] for c in kids) == want)
sys.exit(0 if ok else 1)
PY
}
until_ok 15 sa_check || { sa_check || true; fail "spigot does not hold one IKE and one CHILD SA per peer"; }
log "ok: $(sa_check)"

# ------------------------------------------------ all peers' traffic at the same time
# Per peer I: a checked TCP stream to 203.0.113.1:520I (a server each on the responder side) and
# PINGS pings from 198.19.I.1 to 203.0.113.1. Bounded by `timeout`: a peer whose replies go
# elsewhere never completes its TCP handshake.
jobs_=()
for i in $(seq "$PEERS"); do
  ip netns exec "${NS}b" timeout 50 python3 "$HERE/stream.py" serve 203.0.113.1 "$((5200 + i))" "$BYTES" \
    >"$WORK/serve-p$i.out" 2>&1 &
  jobs_+=($!); PIDS+=($!)
done
for i in $(seq "$PEERS"); do listening "${NS}b" tcp 203.0.113.1 "$((5200 + i))"; done
for i in $(seq "$PEERS"); do
  ip netns exec "${NS}p$i" timeout 45 python3 "$HERE/stream.py" send 203.0.113.1 "$((5200 + i))" "$BYTES" \
    >"$WORK/send-p$i.out" 2>&1 &
  jobs_+=($!); PIDS+=($!)
  ip netns exec "${NS}p$i" ping -n -c "$PINGS" -i 0.2 -W 5 -I "198.19.$i.1" 203.0.113.1 \
    >"$WORK/ping-p$i.out" 2>&1 &
  jobs_+=($!); PIDS+=($!)
done
for j in "${jobs_[@]}"; do wait "$j" || true; done

# replies I: how many of PINGS echo replies peer I received.
replies() { sed -n 's/.* \([0-9]*\) received.*/\1/p' "$WORK/ping-p$1.out" | head -n1; }
failed=() details=()
for i in $(seq "$PEERS"); do
  got=$(replies "$i"); got=${got:-0}
  tcp=$(head -c 200 "$WORK/serve-p$i.out" | tr '\n' ' ')
  send=$(head -c 200 "$WORK/send-p$i.out" | tr '\n' ' ')
  if grep -q '^ok ' "$WORK/serve-p$i.out"; then tcp_ok=1; else tcp_ok=0; fi
  [ -n "$tcp" ] || tcp="no result (timed out)"
  [ -n "$send" ] || send="no result (timed out)"
  line="peer$i (198.19.$i.1): $got of $PINGS ping replies; TCP $BYTES bytes: receiver: $tcp| sender: $send"
  details+=("$line")
  if [ "$got" = "$PINGS" ] && [ "$tcp_ok" = 1 ]; then
    log "ok: $line"
  else
    log "BAD: $line"
    failed+=("peer$i")
  fi
done

sctl b stats --json >"$WORK/stats.json"
mismatch=$(field "$WORK/stats.json" packets_dropped.selector_mismatch)
log "spigot b: traffic $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["traffic"])' "$WORK/stats.json")," \
    "drops $(python3 -c 'import json,sys; print({k: v for k, v in json.load(open(sys.argv[1]))["packets_dropped"].items() if v})' "$WORK/stats.json")"
sctl b sas --json >"$WORK/sas.json"
python3 - "$WORK/sas.json" <<'PY'
import json, sys
for s in json.load(open(sys.argv[1]))["ike_sas"]:
    for c in s["children"]:
        print("  spigot CHILD SA %s_i %s_o from %s remote_ts %s: %s packets in"
              % (c["spi_in"], c["spi_out"], s["remote"], c["remote_ts"], c.get("packets")))
PY

if [ "${#failed[@]}" -gt 0 ]; then
  case "${#failed[@]}" in
    1) who=${failed[0]} ;;
    *) who="$(IFS=,; echo "${failed[*]:0:${#failed[@]}-1}" | sed 's/,/, /g') and ${failed[-1]}" ;;
  esac
  fail "$who did not get every reply with $PEERS peers on one connection at once (one outbound policy for the connection instead of one per CHILD SA?); spigot's selector_mismatch drops: $mismatch"
fi
log "ok: all $PEERS peers got all $PINGS ping replies and their $BYTES bytes of TCP through, at the same time"

[ "$mismatch" = 0 ] || fail "spigot counted $mismatch selector_mismatch drop(s) from peers sending from their own addresses"
until_ok 5 sa_check || { sa_check || true; fail "after the traffic spigot no longer holds one IKE and one CHILD SA per peer"; }
log "ok: still $(sa_check); selector_mismatch 0"

# ------------------------------------------------ peer 2 claims peer 1's address
# charon logs spigot's answer: "[ SA No TSi TSr ]" if it accepted, "[ N(TS_UNACCEPT) ]" if not.
before=$(wc -l <"$WORK/charon-p2.log")
swan p2 --initiate --child claim --timeout 15 >"$WORK/claim.out" 2>&1 || true
tail -n +"$((before + 1))" "$WORK/charon-p2.log" >"$WORK/claim-charon.out"
if grep -q "parsed CREATE_CHILD_SA response [0-9]* \[ SA " "$WORK/claim-charon.out"; then
  fail "spigot accepted a CHILD SA from peer2 for peer1's address 198.19.1.1/32 (its CREATE_CHILD_SA response carries an SA)"
fi
grep -q "TS_UNACCEPT" "$WORK/claim-charon.out" ||
  { cat "$WORK/claim.out" "$WORK/claim-charon.out"; fail "peer2's claim of 198.19.1.1/32 got no TS_UNACCEPTABLE from spigot"; }
sctl b stats --json >"$WORK/stats.json"
conflicts=$(field "$WORK/stats.json" policies.conflicts 2>/dev/null || echo "(none in stats)")
[ "$conflicts" = 1 ] || fail "spigot's policies.conflicts is $conflicts after peer2's claim, want 1"
sa_check >/dev/null || { sa_check || true; fail "peer2's refused claim changed spigot's SAs"; }
for i in 1 2; do
  ip netns exec "${NS}p$i" ping -n -c 5 -i 0.2 -W 3 -I "198.19.$i.1" 203.0.113.1 >"$WORK/ping-p$i.out" 2>&1 || true
  [ "$(replies "$i")" = 5 ] || { cat "$WORK/ping-p$i.out"; fail "after peer2's refused claim, peer$i did not get every reply"; }
done
sctl b stats --json >"$WORK/stats.json"
[ "$(field "$WORK/stats.json" packets_dropped.selector_mismatch)" = 0 ] || fail "selector_mismatch drops after the claim"
log "ok: peer2's CHILD SA for peer1's 198.19.1.1/32 refused (TS_UNACCEPTABLE, policies.conflicts 1); peers 1 and 2 still get their replies"
echo "PASS: $PEERS strongSwan peers on one spigot connection, each with its own CHILD SA and replies; no peer may claim another's address"
