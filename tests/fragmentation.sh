#!/usr/bin/env bash
# IKE fragmentation (RFC 7383) against strongSwan 5.9.8 (kernel-libipsec): both ends with a small
# fragment_size, so that IKE_AUTH (PSK) goes out as Encrypted Fragment payloads in both
# directions, in both roles. charon's log must show it sent and reassembled fragments, spigot's
# counters that it fragmented and reassembled, and pings must pass through the tunnel.
# usage: fragmentation.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16
FRAG=${FRAG_SIZE:-200}  # IP datagram octets: an IKE_AUTH with PSK is ~250-450
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
command -v swanctl >/dev/null || fail "strongSwan is not installed (scripts/install-deps.sh installs it)"

netns_setup
spigot_config a "$IKE" "$ESP"
sed -i "s/^\[global\]\$/[global]\nfragment_size = $FRAG/" "$WORK/a.toml"
echo 'fragmentation = "yes"' >>"$WORK/a.toml"  # the connection's table is the last one
spigot_start a

# charon on side b: spigot_config's mirror (lib.sh charon_start) plus fragmentation.
dir="$WORK/charon-b"
mkdir -p "$dir/run"
cat >"$dir/strongswan.conf" <<CONF
charon {
  load = random nonce aes sha1 sha2 hmac gcm chapoly curve25519 openssl kdf pem pkcs1 x509 pubkey socket-default vici kernel-libipsec kernel-netlink updown
  install_routes = yes
  fragment_size = $FRAG
  filelog { stderr { default = 1 ike = 2 } }
  plugins { kernel-libipsec { allow_peer_ts = yes } }
}
CONF
cat >"$dir/swanctl.conf" <<CONF
connections {
  gw {
    local_addrs = 192.0.2.2
    remote_addrs = 192.0.2.1
    proposals = $IKE
    fragmentation = yes
    local {
      auth = psk
      id = gw-b
    }
    remote {
      auth = psk
      id = gw-a
    }
    children {
      net {
        local_ts = 203.0.113.0/24
        remote_ts = 198.51.100.0/24
        esp_proposals = $ESP
      }
    }
  }
}
secrets {
  ike-1 {
    id-1 = gw-a
    id-2 = gw-b
    secret = interop-secret
  }
}
CONF
charon_launch b

frag() {  # frag KEY: spigot's ike.fragments.KEY
  sctl a stats --json >"$WORK/stats.json" && field "$WORK/stats.json" "ike.fragments.$1"
}
charon_count() { grep -cE "$1" "$WORK/charon-b.log" || true; }
none() {
  sctl a sas --json >"$WORK/s.json" && swan b --list-sas >"$WORK/c.txt" &&
    python3 "$HERE/agree.py" none "$WORK/s.json" "$WORK/c.txt"
}
# check_round N WHO: after N handshakes, both sides sent and reassembled fragmented IKE_AUTHs.
check_round() {
  local n=$1 who=$2
  [ "$(frag messages_fragmented)" -ge "$n" ] || fail "$who: spigot fragmented $(frag messages_fragmented) messages, want >= $n"
  [ "$(frag reassembled)" -ge "$n" ] || fail "$who: spigot reassembled $(frag reassembled) messages, want >= $n"
  local sent got
  sent=$(charon_count 'generating IKE_AUTH (request|response) 1 \[ EF\(1/')
  got=$(charon_count 'reassembled fragmented IKE message')
  [ "$sent" -ge "$n" ] || fail "$who: charon's log shows $sent fragmented IKE_AUTH messages sent, want >= $n"
  [ "$got" -ge "$n" ] || fail "$who: charon's log shows $got reassembled messages, want >= $n"
  for k in bad_icv malformed not_negotiated too_many too_large; do
    [ "$(frag "dropped.$k")" = 0 ] || fail "$who: spigot dropped fragments as $k"
  done
  log "ok: $who: IKE_AUTH fragmented both ways (spigot sent $(frag sent) fragments, received $(frag received); charon reassembled $got)"
}

log "round 1: charon initiates, fragment_size $FRAG on both sides"
swan b --initiate --child net >/dev/null || fail "charon could not initiate"
check_round 1 "charon -> spigot"
until_ok 10 ping_ok b || fail "no traffic b -> a"
ping_ok a || fail "no traffic a -> b"
log "ok: pings both ways"
sctl a terminate peer >/dev/null
until_ok 10 none || fail "terminate: SAs remain"

log "round 2: spigot initiates"
sctl a initiate peer >/dev/null
until_ok 10 ping_ok a || fail "no traffic a -> b"
ping_ok b || fail "no traffic b -> a"
check_round 2 "spigot -> charon"
log "ok: pings both ways"
echo "PASS: IKE fragmentation with strongSwan, both roles"
