#!/usr/bin/env bash
# Issue 11, item 2, initiator side: spigot as a road warrior asking for a virtual IP.
# spigot (namespace a, 192.0.2.1, no inner address of its own: 198.51.100.1 is taken off lo)
# initiates connection "home" with vips = "0.0.0.0", local_ts 0.0.0.0/0, remote_ts
# 203.0.113.0/24 to a strongSwan 5.9.8 responder (namespace b, kernel-libipsec, inner
# 203.0.113.1 on lo) with the address pool 198.18.1.0/28 (pools { rw { addrs = ... } },
# connections.x.pools = rw, remote_ts dynamic).
#  1. spigot gets an address of 198.18.1.0/28 (its log, and the same address as a /32 on its
#     TUN), and 203.0.113.0/24 is routed into the TUN with it as the preferred source.
#  2. A plain ping from namespace a (no -I) to 203.0.113.1 gets its replies: it leaves from the
#     virtual IP, into the CHILD SA; and 203.0.113.1 pings the virtual IP back.
#  3. IKE rekeys (spigot's, then charon's) keep the address and the traffic.
#  4. `spigot terminate home` takes the address off the TUN and the route away.
# usage: roadwarrior_initiator.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16 PSK=roadwarrior-initiator-secret
TUN=spvip0
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
command -v swanctl >/dev/null || fail "strongSwan is not installed (scripts/install-deps.sh installs it)"

netns_setup
ip -n "${NS}a" addr del 198.51.100.1/32 dev lo

cat >"$WORK/a.toml" <<TOML
[global]
control_socket = "$WORK/a.sock"
listen = "192.0.2.1"
tun_name = "$TUN"

[[connection]]
name = "home"
local_addrs = "192.0.2.1"
remote_addrs = "192.0.2.2"
local_id = "rw.example"
remote_id = "gw-b"
psk = "$PSK"
ike_proposals = "$IKE"
esp_proposals = "$ESP"
local_ts = "0.0.0.0/0"
vips = "0.0.0.0"
remote_ts = "203.0.113.0/24"
TOML

dir="$WORK/charon-b"
mkdir -p "$dir/run"
cat >"$dir/strongswan.conf" <<CONF
charon {
  load = random nonce aes sha1 sha2 hmac gcm chapoly curve25519 openssl kdf pem pkcs1 x509 pubkey socket-default vici kernel-libipsec kernel-netlink attr updown
  install_routes = yes
  filelog { stderr { default = 1 ike = 2 } }
  plugins { kernel-libipsec { allow_peer_ts = yes } }
}
CONF
cat >"$dir/swanctl.conf" <<CONF
connections {
  rw {
    local_addrs = 192.0.2.2
    remote_addrs = 192.0.2.1
    proposals = $IKE
    pools = rw
    local {
      auth = psk
      id = gw-b
    }
    remote {
      auth = psk
      id = rw.example
    }
    children {
      net {
        local_ts = 203.0.113.0/24
        esp_proposals = $ESP
      }
    }
  }
}
pools {
  rw {
    addrs = 198.18.1.0/28
  }
}
secrets {
  ike-1 {
    id-1 = rw.example
    id-2 = gw-b
    secret = $PSK
  }
}
CONF

spigot_start a
charon_launch b

sctl a initiate home >/dev/null || fail "spigot could not initiate"
assigned() { grep -o 'home: virtual IP [0-9.]*/32 assigned' "$WORK/spigot-a.log" | tail -n 1 | awk '{print $4}'; }
has_vip() { [ -n "$(assigned)" ]; }
until_ok 15 has_vip || fail "spigot was assigned no virtual IP"
VIP=$(assigned)
VIP_HOST=${VIP%/32}
python3 -c 'import ipaddress,sys; sys.exit(ipaddress.ip_address(sys.argv[1]) not in ipaddress.ip_network("198.18.1.0/28"))' "$VIP_HOST" ||
  fail "virtual IP $VIP is not from charon's pool 198.18.1.0/28"
on_tun() { ip -n "${NS}a" -4 addr show dev "$TUN" | grep -q "inet $VIP "; }
until_ok 5 on_tun || fail "$VIP is not on $TUN: $(ip -n "${NS}a" addr show dev "$TUN")"
route=$(ip -n "${NS}a" route show 203.0.113.0/24)
echo "$route" | grep -q "dev $TUN" && echo "$route" | grep -q "src $VIP_HOST" ||
  fail "203.0.113.0/24 is not routed into $TUN from $VIP_HOST: '$route'"
n_addrs=$(ip -n "${NS}a" -4 -o addr show dev "$TUN" | wc -l)
[ "$n_addrs" = 1 ] || fail "$TUN has $n_addrs IPv4 addresses, want only $VIP: $(ip -n "${NS}a" -4 -o addr show dev "$TUN")"
swan b --list-sas >"$WORK/charon-sas.txt" 2>&1 || true
grep -q "$VIP_HOST" "$WORK/charon-sas.txt" || fail "charon's SA is not for $VIP_HOST: $(cat "$WORK/charon-sas.txt")"
log "ok: spigot got $VIP from charon's pool, on $TUN, route '$route'"

# Traffic both ways. A ping from namespace a names no source: the route picks the virtual IP,
# the only source charon's CHILD SA (VIP/32 <-> 203.0.113.0/24) accepts.
ping_from_a() { ip netns exec "${NS}a" ping -c 3 -i 0.2 -W 2 203.0.113.1 >"$WORK/ping-a.log" 2>&1; }
ping_from_b() { ip netns exec "${NS}b" ping -c 3 -i 0.2 -W 2 -I 203.0.113.1 "$VIP_HOST" >"$WORK/ping-b.log" 2>&1; }
until_ok 10 ping_from_a || fail "no replies to spigot's ping of 203.0.113.1: $(cat "$WORK/ping-a.log")"
until_ok 10 ping_from_b || fail "no replies to 203.0.113.1's ping of $VIP_HOST: $(cat "$WORK/ping-b.log")"
log "ok: ping from spigot's namespace (source $VIP_HOST) to 203.0.113.1 and back"

# IKE rekeys, spigot's and then charon's (after which spigot's IKE SA is the rekey's
# responder): the address stays, and so does the traffic.
rekeys_at_least() { [ "$(grep -c "home: IKE SA .* rekeyed to" "$WORK/spigot-a.log")" -ge "$1" ]; }
sctl a rekey home --ike >/dev/null || fail "spigot could not rekey the IKE SA"
until_ok 10 rekeys_at_least 1 || fail "the IKE SA was not rekeyed by spigot"
swan b --rekey --ike rw >/dev/null || fail "charon could not rekey the IKE SA"
until_ok 10 rekeys_at_least 2 || fail "the IKE SA was not rekeyed by charon"
sleep 1
on_tun || fail "$VIP left $TUN with an IKE rekey"
! grep -q "virtual IP .* released" "$WORK/spigot-a.log" || fail "an IKE rekey released the virtual IP"
until_ok 10 ping_from_a || fail "no replies after the IKE rekeys: $(cat "$WORK/ping-a.log")"
log "ok: IKE rekeys from both sides keep $VIP and the traffic"

# Terminated: the address and the route go.
sctl a terminate home >/dev/null || fail "spigot terminate failed"
gone() { ! on_tun && [ -z "$(ip -n "${NS}a" route show 203.0.113.0/24)" ]; }
until_ok 10 gone || fail "after terminate: $(ip -n "${NS}a" addr show dev "$TUN"); route '$(ip -n "${NS}a" route show 203.0.113.0/24)'"
log "ok: terminate took $VIP off $TUN and the route away"
echo "PASS: spigot as a road warrior gets a virtual IP from strongSwan, uses it, and gives it back"
