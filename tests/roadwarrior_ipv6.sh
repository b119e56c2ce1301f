#!/usr/bin/env bash
# Issue 11: IPv6 virtual IPs. One spigot responder (namespace b, 192.0.2.2; inner 203.0.113.1
# and 2001:db8:b::1) with two pools, "rw" 198.18.2.0/28 and "rw6" 2001:db8:cafe::/112, on one
# connection (pools = "rw, rw6", local_ts 203.0.113.0/24 and 2001:db8:b::/64); two strongSwan
# 5.9.8 road warriors (kernel-libipsec) on IPv4 outer addresses, with no inner address of
# their own:
#   peer1 asks for an IPv6 address only (vips = ::), CHILD SA to 2001:db8:b::/64;
#   peer2 asks for both (vips = 0.0.0.0, ::), CHILD SA to both of spigot's networks.
#  - each gets addresses of the right pools, on its own side (charon installs them), distinct;
#    `spigot leases --json` lists identity -> address in each pool (rw 1, rw6 2);
#  - spigot's CHILD SAs are narrowed to the leases (remote_ts = the /128 and /32);
#  - ping6 from each IPv6 virtual IP to 2001:db8:b::1 and back, ping from peer2's IPv4 one,
#    every reply;
#  - peer1 terminates its IKE SA: its lease goes offline (rw6 in use 1), peer2 keeps passing
#    traffic.
# Addresses: documentation ranges and 198.18.0.0/15 only (the hub helper's 198.19.I.1 on the
# peers' lo are removed).
# usage: roadwarrior_ipv6.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16 PSK=roadwarrior-ipv6-secret PINGS=4
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
command -v swanctl >/dev/null || fail "strongSwan is not installed (scripts/install-deps.sh installs it)"
T0=$(date +%s)

netns_hub_setup 2
for i in 1 2; do ip -n "${NS}p$i" addr del "198.19.$i.1/32" dev lo; done
ip -n "${NS}b" addr add 2001:db8:b::1/128 dev lo nodad

cat >"$WORK/b.toml" <<TOML
[global]
control_socket = "$WORK/b.sock"
listen = "192.0.2.2"

[[pool]]
name = "rw"
addrs = "198.18.2.0/28"

[[pool]]
name = "rw6"
addrs = "2001:db8:cafe::/112"

[[connection]]
name = "rw"
local_addrs = "192.0.2.2"
remote_addrs = "%any"
local_id = "gw-b"
remote_id = "%any"
psk = "$PSK"
ike_proposals = "$IKE"
esp_proposals = "$ESP"
local_ts = "203.0.113.0/24, 2001:db8:b::/64"
pools = "rw, rw6"
TOML
spigot_start b

charon_rw_peer_config 1 "$IKE" "$ESP" "$PSK" "::" "2001:db8:b::/64"
charon_rw_peer_config 2 "$IKE" "$ESP" "$PSK" "0.0.0.0, ::" "203.0.113.0/24, 2001:db8:b::/64"
charon_launch p1
charon_launch p2
for i in 1 2; do
  swan "p$i" --initiate --child net --timeout 30 >"$WORK/initiate-p$i.out" 2>&1 ||
    { cat "$WORK/initiate-p$i.out"; fail "peer$i could not bring up its CHILD SA"; }
done

# The leases, as spigot lists them: "pool identity address" lines.
sctl b leases --json >"$WORK/leases.json"
python3 - "$WORK/leases.json" >"$WORK/leases.txt" <<'PY'
import json, sys
for p in json.load(open(sys.argv[1]))["pools"]:
    for l in p["leases"]:
        if l.get("online", True):
            print(p["name"], l["identity"], l["address"].split("/")[0])
PY
lease() { awk -v p="$1" -v id="$2" '$1 == p && $2 == id { print $3 }' "$WORK/leases.txt"; }
V6_1=$(lease rw6 peer1.example) V6_2=$(lease rw6 peer2.example) V4_2=$(lease rw peer2.example)
log "leases: $(tr '\n' ';' <"$WORK/leases.txt")"
[ "$(wc -l <"$WORK/leases.txt")" = 3 ] || fail "want 3 leases (peer1: rw6; peer2: rw and rw6)"
[ -z "$(lease rw peer1.example)" ] || fail "peer1 asked for IPv6 only but holds an IPv4 lease"
python3 - "$V6_1" "$V6_2" "$V4_2" <<'PY' || fail "leases outside their pools or not distinct"
import ipaddress, sys
a, b, c = (ipaddress.ip_address(x) for x in sys.argv[1:])
six = ipaddress.ip_network("2001:db8:cafe::/112")
assert a in six and b in six and a != b, (a, b)
assert c in ipaddress.ip_network("198.18.2.0/28"), c
PY
for pair in "1 $V6_1" "2 $V6_2" "2 $V4_2"; do
  read -r i addr <<<"$pair"
  until_ok 5 sh -c "ip -n '${NS}p$i' addr | grep -q ' $addr/'" ||
    fail "charon of peer$i did not install its virtual IP $addr"
done
log "ok: peer1 got $V6_1 (IPv6 only), peer2 got $V4_2 and $V6_2, installed on their sides"

# spigot's CHILD SAs are narrowed to the leases.
sctl b sas --json >"$WORK/sas.json"
python3 - "$WORK/sas.json" "$V6_1" "$V6_2" "$V4_2" <<'PY' || fail "spigot's CHILD SAs are not narrowed to the leases"
import ipaddress, json, sys
v6_1, v6_2, v4_2 = sys.argv[2:]
got = sorted(sorted(str(ipaddress.ip_network(t)) for t in c["remote_ts"])
             for s in json.load(open(sys.argv[1]))["ike_sas"] for c in s["children"])
want = sorted([[v6_1 + "/128"], sorted([v4_2 + "/32", v6_2 + "/128"])])
print("CHILD SA remote_ts:", got)
assert got == want, want
PY

replies() { sed -n 's/.* \([0-9]*\) received.*/\1/p' "$1" | head -n1; }
# ping_both I FROM TO: peer I pings TO from FROM and b pings FROM from TO; all replies.
ping_both() {
  local i=$1 from=$2 to=$3
  ip netns exec "${NS}p$i" ping -n -c "$PINGS" -i 0.2 -W 3 -I "$from" "$to" >"$WORK/out.txt" 2>&1 || true
  ip netns exec "${NS}b" ping -n -c "$PINGS" -i 0.2 -W 3 -I "$to" "$from" >"$WORK/back.txt" 2>&1 || true
  [ "$(replies "$WORK/out.txt")" = "$PINGS" ] && [ "$(replies "$WORK/back.txt")" = "$PINGS" ] ||
    { cat "$WORK/out.txt" "$WORK/back.txt"; sctl b stats --json | head -c 2000; fail "peer$i: ping $from <-> $to lost replies"; }
  log "ok: peer$i $from <-> $to: $PINGS of $PINGS replies both ways"
}
ping_both 1 "$V6_1" 2001:db8:b::1
ping_both 2 "$V6_2" 2001:db8:b::1
ping_both 2 "$V4_2" 203.0.113.1

# peer1 leaves: its lease goes offline, peer2 keeps going.
swan p1 --terminate --ike gw --timeout 10 >/dev/null 2>&1 || fail "peer1 could not terminate"
in_use() { sctl b leases --json | python3 -c 'import json,sys; print(" ".join("%s=%s" % (p["name"], p["in_use"]) for p in json.load(sys.stdin)["pools"]))'; }
in_use_is() { [ "$(in_use)" = "$1" ]; }
until_ok 5 in_use_is "rw=1 rw6=1" || fail "after peer1 left, leases in use are $(in_use), want rw=1 rw6=1"
ping_both 2 "$V6_2" 2001:db8:b::1
log "ok: peer1's lease went offline with its IKE SA; peer2 still passes IPv6 traffic"
echo "PASS: IPv6 virtual IPs from a spigot pool: distinct, narrowed, traffic both ways ($(( $(date +%s) - T0 )) s)"
