# Shared helpers for the namespace tests. Source it; call `netns_setup` first. Everything a
# test starts is stopped and every namespace deleted on exit, pass or fail.
#
# Topology (documentation addresses only, RFC 5737):
#   ${NS}a  192.0.2.1/24 (veth)  inner 198.51.100.1   <-->  ${NS}b  192.0.2.2/24  inner 203.0.113.1
set -euo pipefail
# Debian's tools first (python3, iproute2, strongSwan): the tests are written for Debian's
# packages, and a PATH that puts something else first costs dearly. A pyenv shim in front of
# python3 took 0.6 CPU-seconds per call here (a bash script that execs pyenv, which execs
# more), and the tests call python3 thousands of times: ike_spoofed_source took 7.9 CPU-s in
# 8.8 s through the shim and 2.3 CPU-s in 3.9 s without it.
PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
# Files the tests write (configurations, PSK and key files) are for root alone: spigot refuses
# secrets that others may read (config/run_as.h).
umask 077

SPIGOT=${SPIGOT:?set SPIGOT to the spigot binary}
WORK=$(mktemp -d /tmp/spigot-test.XXXXXX)
NS="sp$$"
PIDS=()

log() { echo "[$(date +%H:%M:%S)] $*"; }
# What the gateways counted: drops by reason (the kernel's too: packets_dropped.kernel_*, and
# per UDP socket in udp_sockets), rekeys, IKE, traffic.
print_gateway_counters() {
  local side
  for side in a b; do
    [ -S "$WORK/$side.sock" ] || continue
    echo "---- spigot $side stats" >&2
    timeout 5 "$SPIGOT" stats --json --socket "$WORK/$side.sock" 2>/dev/null |
      python3 -c 'import json,sys; s=json.load(sys.stdin); print(json.dumps({k: s[k] for k in ("packets_dropped", "udp_sockets", "rekeys", "ike", "traffic", "datapath") if k in s}))' >&2 || true
  done
}
fail() {
  echo "FAIL: $*" >&2
  print_gateway_counters
  # What the kernels dropped on the way: UDP receive/send buffers, and each device's queues.
  for side in a b; do
    ip netns list 2>/dev/null | grep -q "^${NS}$side\b" || continue
    echo "---- kernel drops in ${NS}$side" >&2
    ip netns exec "${NS}$side" nstat -azs 2>/dev/null | grep -E 'Udp6?(RcvbufErrors|SndbufErrors|InErrors|NoPorts) ' | awk '$2 > 0' >&2 || true
    ip netns exec "${NS}$side" ip -j -s link 2>/dev/null | python3 -c 'import json,sys
for l in json.load(sys.stdin):
    st = l.get("stats64", {})
    print(l["ifname"], "qlen", l.get("txqlen"), *(d + " " + str(st[d]["packets"]) + " dropped " + str(st[d]["dropped"]) for d in ("rx", "tx") if d in st))' >&2 || true
  done
  # The logs last: a truncated report keeps the figures above.
  for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "---- $f" >&2; tail -n 40 "$f" >&2; }; done
  exit 1
}

cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  ip netns del "${NS}a" 2>/dev/null || true
  ip netns del "${NS}b" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
# A command that fails outside a condition ends the test under `set -e`; say which, since its own
# output may have gone to /dev/null.
trap 'echo "FAIL: \"$BASH_COMMAND\" exited $? (line $LINENO of $0)" >&2; print_gateway_counters' ERR
trap "exit 1" TERM INT  # so that a killed test (timeout) still cleans up

netns_setup() {
  ip netns add "${NS}a"
  ip netns add "${NS}b"
  ip link add "${NS}va" type veth peer name "${NS}vb"
  ip link set "${NS}va" netns "${NS}a"
  ip link set "${NS}vb" netns "${NS}b"
  ip -n "${NS}a" addr add 192.0.2.1/24 dev "${NS}va"
  ip -n "${NS}b" addr add 192.0.2.2/24 dev "${NS}vb"
  for s in a b; do
    ip -n "${NS}$s" link set lo up
    ip -n "${NS}$s" link set "${NS}v$s" up
  done
  ip -n "${NS}a" addr add 198.51.100.1/32 dev lo
  ip -n "${NS}b" addr add 203.0.113.1/32 dev lo
  ip -n "${NS}a" addr add 2001:db8:a::1/128 dev lo nodad
  ip -n "${NS}b" addr add 2001:db8:b::1/128 dev lo nodad
}

# Inner (tunnelled) networks and host addresses: INNER=4 (default) or INNER=6.
inner_nets() {  # inner_nets SIDE -> "local_ts remote_ts"
  if [ "${INNER:-4}" = 6 ]; then
    [ "$1" = a ] && echo "2001:db8:a::/64 2001:db8:b::/64" || echo "2001:db8:b::/64 2001:db8:a::/64"
  else
    [ "$1" = a ] && echo "198.51.100.0/24 203.0.113.0/24" || echo "203.0.113.0/24 198.51.100.0/24"
  fi
}
inner_host() {  # inner_host SIDE -> the host address inside SIDE's network
  if [ "${INNER:-4}" = 6 ]; then
    [ "$1" = a ] && echo 2001:db8:a::1 || echo 2001:db8:b::1
  else
    [ "$1" = a ] && echo 198.51.100.1 || echo 203.0.113.1
  fi
}

# spigot_config SIDE IKE ESP [PSK]: writes $WORK/SIDE.toml for side a or b.
spigot_config() {
  local side=$1 ike=$2 esp=$3 psk=${4:-interop-secret}
  local me=192.0.2.1 peer=192.0.2.2 lid=gw-a rid=gw-b lts rts
  if [ "$side" = b ]; then
    me=192.0.2.2 peer=192.0.2.1 lid=gw-b rid=gw-a
  fi
  read -r lts rts <<<"$(inner_nets "$side")"
  cat >"$WORK/$side.toml" <<TOML
[global]
control_socket = "$WORK/$side.sock"
listen = "$me"
cookie_threshold = ${COOKIE_THRESHOLD:-1000}
${DATAPATH_THREADS:+datapath_threads = $DATAPATH_THREADS}

[[connection]]
name = "peer"
local_addrs = "$me"
remote_addrs = "$peer"
local_id = "$lid"
remote_id = "$rid"
psk = "$psk"
ike_proposals = "$ike"
esp_proposals = "$esp"
local_ts = "$lts"
remote_ts = "$rts"
TOML
}

# spigot_cert_auth SIDE CHAIN KEY CA LOCAL_ID REMOTE_ID: turns the connection spigot_config wrote
# for SIDE from the PSK to certificates both ways: LOCAL_ID proven with the chain file CHAIN (end
# entity first) and KEY, peers proving REMOTE_ID (a DN, wildcards allowed) with a certificate
# under the CA file CA. unique = "no": one identity may hold many IKE SAs (as every initiator of
# `spigot loadgen --cert` does).
spigot_cert_auth() {
  local side=$1 chain=$2 keyf=$3 ca=$4 lid=$5 rid=$6
  sed -i -e '/^psk = /d' -e "s/^local_id = .*/local_id = \"$lid\"/" -e "s/^remote_id = .*/remote_id = \"$rid\"/" "$WORK/$side.toml"
  cat >>"$WORK/$side.toml" <<TOML
local_auth = "pubkey"
remote_auth = "pubkey"
local_cert = "$chain"
local_key = "$keyf"
ca_certs = "$ca"
unique = "no"
TOML
}

# spigot_start SIDE: runs spigot in namespace SIDE with $WORK/SIDE.toml.
spigot_start() {
  local side=$1
  ip netns exec "${NS}$side" "$SPIGOT" run -c "$WORK/$side.toml" >"$WORK/spigot-$side.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 50); do [ -S "$WORK/$side.sock" ] && return 0; sleep 0.1; done
  fail "spigot on side $side did not start"
}

sctl() {  # sctl SIDE ARGS...: a spigot control command against side SIDE
  local side=$1; shift
  "$SPIGOT" "$@" --socket "$WORK/$side.sock"
}

# charon_start SIDE IKE ESP [PSK]: strongSwan 5.9.8 with kernel-libipsec in namespace SIDE,
# configured as the mirror of spigot_config on the other side.
charon_start() {
  local side=$1 ike=$2 esp=$3 psk=${4:-interop-secret}
  local dir="$WORK/charon-$side"
  local me=192.0.2.2 peer=192.0.2.1 lid=gw-b rid=gw-a lts rts
  if [ "$side" = a ]; then
    me=192.0.2.1 peer=192.0.2.2 lid=gw-a rid=gw-b
  fi
  read -r lts rts <<<"$(inner_nets "$side")"
  mkdir -p "$dir/run"
  cat >"$dir/strongswan.conf" <<CONF
charon {
  load = random nonce aes sha1 sha2 hmac gcm chapoly curve25519 openssl kdf pem pkcs1 x509 pubkey socket-default vici kernel-libipsec kernel-netlink updown
  install_routes = yes
  filelog { stderr { default = 1 ike = 2 } }
  plugins { kernel-libipsec { allow_peer_ts = yes } }
}
CONF
  cat >"$dir/swanctl.conf" <<CONF
connections {
  gw {
    local_addrs = $me
    remote_addrs = $peer
    proposals = $ike
    local {
      auth = psk
      id = $lid
    }
    remote {
      auth = psk
      id = $rid
    }
    children {
      net {
        local_ts = $lts
        remote_ts = $rts
        esp_proposals = $esp
      }
    }
  }
}
secrets {
  ike-1 {
    id-1 = gw-a
    id-2 = gw-b
    secret = $psk
  }
}
CONF
  charon_launch "$side"
}

# charon_launch SIDE: runs charon in namespace SIDE with $WORK/charon-SIDE/{strongswan,swanctl}.conf
# (its own /run, so several charons can coexist) and loads the swanctl configuration.
charon_launch() {
  local side=$1 dir="$WORK/charon-$1"
  rm -f "$dir/run/charon.vici"  # a charon started here before: or we would wait on its socket
  ip netns exec "${NS}$side" unshare -m sh -c \
    "mount --bind '$dir/run' /run; STRONGSWAN_CONF='$dir/strongswan.conf' exec /usr/lib/ipsec/charon" \
    >"$WORK/charon-$side.log" 2>&1 &
  PIDS+=($!)
  until_ok 10 test -S "$dir/run/charon.vici" || fail "charon did not start"
  swan "$side" --load-all --file "$dir/swanctl.conf" >/dev/null 2>&1 || fail "swanctl --load-all failed"
}

# charon_any_responder SIDE IKE ESP PSK [THREADS] [POOL] [REMOTE_ADDRS]: strongSwan 5.9.8 (kernel-libipsec) in
# namespace SIDE (b) as the responder for many initiators from side a: any identity with the PSK
# (a secret without ids is a wildcard), tuned for many IKE SAs from one address —
# block_threshold (half-open SAs per peer IP, default 5) would otherwise drop IKE_SA_INITs.
# THREADS: charon's worker threads (default 16, its own default). POOL (a CIDR): virtual IPs
# from the attr pool, CHILD SAs for them; else every CHILD SA is for 198.51.100.0/24.
# REMOTE_ADDRS: where the initiators may be (default 192.0.2.1; %any for ones that move).
charon_any_responder() {
  local side=$1 ike=$2 esp=$3 psk=$4 threads=${5:-16} pool=${6:-} remote_addrs=${7:-192.0.2.1}
  local dir="$WORK/charon-$side" remote_ts="remote_ts = 198.51.100.0/24" pools=""
  if [ -n "$pool" ]; then  # virtual IPs from the attr pool; the CHILD SAs are for them
    remote_ts="" pools="pools { rw { addrs = $pool } }"
  fi
  charon_responder_conf "$dir" "$threads"
  cat >"$dir/swanctl.conf" <<CONF
connections {
  lg {
    local_addrs = 192.0.2.2
    remote_addrs = $remote_addrs
    proposals = $ike
    $([ -n "$pool" ] && echo "pools = rw")
    local {
      auth = psk
      id = gw-b
    }
    remote {
      auth = psk
      id = %any
    }
    children {
      net {
        local_ts = 203.0.113.0/24
        $remote_ts
        esp_proposals = $esp
      }
    }
  }
}
$pools
secrets {
  ike-any {
    secret = $psk
  }
}
CONF
  charon_launch "$side"
}

# charon_responder_conf DIR THREADS [certs]: the strongswan.conf of charon_any_responder and
# charon_cert_responder: THREADS worker threads, block_threshold raised, a big IKE SA table;
# with "certs", also the pkcs8, constraints and revocation plugins (as interop_certs.sh; no CRL
# or OCSP is fetched: the test certificates name no distribution point, OCSP is off).
charon_responder_conf() {
  local dir=$1 threads=$2 plugins="pkcs1 x509 pubkey" extra=""
  if [ "${3:-}" = certs ]; then
    plugins="pkcs1 pkcs8 x509 pubkey constraints revocation"
    extra=" revocation { enable_ocsp = no }"
  fi
  mkdir -p "$dir/run"
  cat >"$dir/strongswan.conf" <<CONF
charon {
  load = random nonce aes sha1 sha2 hmac gcm chapoly curve25519 openssl kdf pem $plugins socket-default vici kernel-libipsec kernel-netlink attr updown
  install_routes = no
  threads = $threads
  block_threshold = 1000000
  ikesa_table_size = 65536
  ikesa_table_segments = 16
  filelog { stderr { default = 1 } }
  plugins { kernel-libipsec { allow_peer_ts = yes }$extra }
}
CONF
}

# charon_cert_responder SIDE IKE ESP CHAIN KEY CA LOCAL_ID REMOTE_ID [THREADS]: as
# charon_any_responder, but certificates both ways: charon (side b) proves LOCAL_ID with the
# certificate chain file CHAIN (end entity first; it sends each in a CERT payload) and KEY, and
# takes initiators proving REMOTE_ID (a DN, wildcards allowed) with a certificate under the CA
# file CA. unique = never: every initiator of `spigot loadgen --cert` is the same identity.
charon_cert_responder() {
  local side=$1 ike=$2 esp=$3 chain=$4 keyf=$5 ca=$6 lid=$7 rid=$8 threads=${9:-16}
  local dir="$WORK/charon-$side"
  charon_responder_conf "$dir" "$threads" certs
  # swanctl loads x509/ (own certificates), x509ca/ (CAs, intermediates) and private/ (keys)
  # beside swanctl.conf: the chain file is split, the end entity into x509/.
  rm -rf "$dir/x509" "$dir/x509ca" "$dir/private"
  mkdir -p "$dir/x509" "$dir/x509ca" "$dir/private"
  awk -v d="$dir" '/BEGIN CERTIFICATE/ { n++ } { print > (n == 1 ? d "/x509/local.pem" : d "/x509ca/chain-" n ".pem") }' "$chain"
  cp "$ca" "$dir/x509ca/ca.pem"
  cp "$keyf" "$dir/private/local.key"
  cat >"$dir/swanctl.conf" <<CONF
connections {
  lg {
    local_addrs = 192.0.2.2
    remote_addrs = 192.0.2.1
    proposals = $ike
    unique = never
    local {
      auth = pubkey
      certs = $dir/x509/local.pem
      id = "$lid"
    }
    remote {
      auth = pubkey
      id = "$rid"
      cacerts = $dir/x509ca/ca.pem
    }
    children {
      net {
        local_ts = 203.0.113.0/24
        remote_ts = 198.51.100.0/24
        esp_proposals = $esp
      }
    }
  }
}
CONF
  charon_launch "$side"
}

# pki_key NAME TYPE SIZE / pki_self_ca NAME DN / pki_issue NAME ISSUER DN [pki --issue options]:
# certificates made with strongSwan's `pki` in $PKI_DIR (default $WORK/pki): the key
# $PKI_DIR/NAME.key (TYPE rsa or ecdsa, SIZE bits), a self-signed CA $PKI_DIR/NAME.pem from it (60
# days), or NAME.pem for NAME.key issued by ISSUER.pem/ISSUER.key (30 days; e.g. --san gw-b
# --flag serverAuth, --ca). pki's own messages (its TPM plugin complains when there is no TPM)
# go to $WORK/pki.log.
pki_run() {
  command -v pki >/dev/null || fail "strongSwan's pki is not installed (scripts/install-deps.sh installs strongswan-pki)"
  command pki "$@" 2>>"$WORK/pki.log"
}
pki_dir() { local d=${PKI_DIR:-$WORK/pki}; mkdir -p "$d"; echo "$d"; }
pki_key() {
  local d; d=$(pki_dir)
  pki_run --gen --type "$2" --size "$3" --outform pem >"$d/$1.key"
}
pki_self_ca() {
  local d; d=$(pki_dir)
  pki_run --self --ca --lifetime 60 --in "$d/$1.key" --dn "$2" --outform pem >"$d/$1.pem"
}
pki_issue() {
  local name=$1 issuer=$2 dn=$3 d; shift 3
  d=$(pki_dir)
  pki_run --pub --in "$d/$name.key" | pki_run --issue --cacert "$d/$issuer.pem" --cakey "$d/$issuer.key" \
    --dn "$dn" --lifetime 30 --outform pem "$@" >"$d/$name.pem"
}

swan() {  # swan SIDE COMMAND ARGS...: swanctl against the charon in namespace SIDE
  local side=$1 cmd=$2; shift 2
  ip netns exec "${NS}$side" swanctl "$cmd" "$@" --uri "unix://$WORK/charon-$side/run/charon.vici"
}

# field FILE KEY.PATH: one value of a JSON file (e.g. field stats.json rekeys.started).
field() { python3 -c "import json,sys; v=json.load(open(sys.argv[1]))
for k in sys.argv[2].split('.'): v=v[k]
print(v)" "$1" "$2"; }

# until_ok TIMEOUT_S CMD...: retries CMD until it succeeds or the time is up.
until_ok() {
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# listening NS udp|tcp ADDR PORT: wait (up to 10 s) until a socket in namespace NS listens on
# ADDR:PORT, so that a stream's first datagrams do not reach a receiver not yet bound (counted
# by the kernel as UdpNoPorts and reported by the receiver as lost).
listening() {
  local ns=$1 proto=$2 addr=$3 port=$4 flag shown
  flag=$([ "$proto" = tcp ] && echo -Hltn || echo -Hlun)
  shown="$addr:$port"
  case $addr in *:*) shown="[$addr]:$port" ;; esac  # ss writes IPv6 addresses in brackets
  until_ok 10 sh -c "ip netns exec '$ns' ss $flag 'sport = :$port' | grep -qF '$shown'" ||
    fail "nothing listens on $proto $addr:$port in $ns"
}

# cookies_checked SIDE: with COOKIE_THRESHOLD=0, side SIDE must have demanded cookies.
cookies_checked() {
  [ "${COOKIE_THRESHOLD:-1000}" = 0 ] || return 0
  local n
  n=$(sctl "$1" stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["ike"]["cookies_sent"])')
  [ "$n" -gt 0 ] || fail "cookie_threshold = 0 but side $1 sent no COOKIE"
  log "ok: side $1 demanded $n cookie(s) and the initiator followed them"
}

# ping_ok FROM_SIDE: a few pings from FROM_SIDE's inner host to the other side's.
ping_ok() {
  local from=$1 to; to=$([ "$1" = a ] && echo b || echo a)
  ip netns exec "${NS}$from" ping -c 3 -i 0.2 -W 2 -I "$(inner_host "$from")" "$(inner_host "$to")" >"$WORK/ping.log" 2>&1 ||
    { cat "$WORK/ping.log"; return 1; }
}

# transfer_ok FROM_SIDE BYTES: a TCP stream through the tunnel, every byte checked.
transfer_ok() {
  local from=$1 bytes=$2 to; to=$([ "$1" = a ] && echo b || echo a)
  ip netns exec "${NS}$to" python3 "$HERE/stream.py" serve "$(inner_host "$to")" 5201 "$bytes" >"$WORK/serve.log" 2>&1 &
  local server=$!
  listening "${NS}$to" tcp "$(inner_host "$to")" 5201
  ip netns exec "${NS}$from" python3 "$HERE/stream.py" send "$(inner_host "$to")" 5201 "$bytes" >"$WORK/send.log" 2>&1 || true
  wait "$server" || { cat "$WORK/serve.log" "$WORK/send.log"; return 1; }
  log "$(cat "$WORK/send.log"); receiver: $(cat "$WORK/serve.log" | cut -c1-20)..."
}

# netns_hub_setup N: a hub-and-spoke topology for one responder and N initiators (instead of
# netns_setup). The responder's namespace is ${NS}b (192.0.2.2/24 on a bridge, inner
# 203.0.113.1 as in netns_setup); peer i (1..N) has namespace ${NS}pI with 192.0.2.(10+I)/24 on a
# veth into that bridge and its inner address 198.19.I.1/32 on lo (RFC 2544 benchmarking addresses; they exist only
# inside the peers' namespaces). The peers' namespaces are deleted on exit as well.
HUB_PEERS=0
netns_hub_setup() {
  local n=$1 i
  HUB_PEERS=$n
  trap 'cleanup; netns_hub_cleanup' EXIT
  ip netns add "${NS}b"
  ip -n "${NS}b" link set lo up
  ip -n "${NS}b" addr add 203.0.113.1/32 dev lo
  ip -n "${NS}b" link add "${NS}br" type bridge
  ip -n "${NS}b" addr add 192.0.2.2/24 dev "${NS}br"
  ip -n "${NS}b" link set "${NS}br" up
  for i in $(seq "$n"); do
    ip netns add "${NS}p$i"
    ip link add "${NS}p$i" type veth peer name "${NS}h$i"
    ip link set "${NS}p$i" netns "${NS}p$i"
    ip link set "${NS}h$i" netns "${NS}b"
    ip -n "${NS}b" link set "${NS}h$i" master "${NS}br"
    ip -n "${NS}b" link set "${NS}h$i" up
    ip -n "${NS}p$i" link set lo up
    ip -n "${NS}p$i" addr add "192.0.2.$((10 + i))/24" dev "${NS}p$i"
    ip -n "${NS}p$i" link set "${NS}p$i" up
    ip -n "${NS}p$i" addr add "198.19.$i.1/32" dev lo
  done
}
netns_hub_cleanup() {
  local i
  for i in $(seq "$HUB_PEERS"); do ip netns del "${NS}p$i" 2>/dev/null || true; done
}

# charon_hub_peer I IKE ESP PSK [CLAIM_TS]: strongSwan 5.9.8 (kernel-libipsec) in peer I's
# namespace of netns_hub_setup, an initiator with identity peerI.example towards spigot (gw-b) at
# 192.0.2.2: CHILD SA "net" from its inner 198.19.I.1/32 to 203.0.113.0/24. With CLAIM_TS, also a
# CHILD SA "claim" from CLAIM_TS (e.g. another peer's address) to 203.0.113.0/24. charon_launch
# loads it; `swan pI --initiate --child net` brings it up (nothing starts on its own).
charon_hub_peer() {
  local i=$1 ike=$2 esp=$3 psk=$4 claim=${5:-}
  local side="p$i" dir="$WORK/charon-p$i" claim_child=""
  [ -z "$claim" ] || claim_child="
      claim {
        local_ts = $claim
        remote_ts = 203.0.113.0/24
        esp_proposals = $esp
      }"
  mkdir -p "$dir/run"
  cat >"$dir/strongswan.conf" <<CONF
charon {
  load = random nonce aes sha1 sha2 hmac gcm chapoly curve25519 openssl kdf pem pkcs1 x509 pubkey socket-default vici kernel-libipsec kernel-netlink updown
  install_routes = yes
  filelog { stderr { default = 1 ike = 2 } }
  plugins { kernel-libipsec { allow_peer_ts = yes } }
}
CONF
  cat >"$dir/swanctl.conf" <<CONF
connections {
  gw {
    local_addrs = 192.0.2.$((10 + i))
    remote_addrs = 192.0.2.2
    proposals = $ike
    local {
      auth = psk
      id = peer$i.example
    }
    remote {
      auth = psk
      id = gw-b
    }
    children {
      net {
        local_ts = 198.19.$i.1/32
        remote_ts = 203.0.113.0/24
        esp_proposals = $esp
      }$claim_child
    }
  }
}
secrets {
  ike-1 {
    id-1 = peer$i.example
    id-2 = gw-b
    secret = $psk
  }
}
CONF
  charon_launch "$side"
}

# charon_eap_responder SIDE IKE ESP CERT KEY POOL USER PASSWORD ROUTES [THREADS]: strongSwan 5.9.8
# (kernel-libipsec) in namespace SIDE (b) at 192.0.2.2 as an EAP-MSCHAPv2 server for initiators
# from 192.0.2.1: it proves itself as gw-b.example with the certificate CERT and its KEY, asks
# for the EAP identity (eap_id %any) and takes USER (any user if empty) with PASSWORD, hands out addresses from the
# attr pool POOL (a CIDR), CHILD SA "net" from 203.0.113.0/24. ROUTES: install_routes (yes for
# traffic, no for storms); THREADS: charon's worker threads (default 16), with the storm tuning
# of charon_responder_conf. RADIUS ("ADDRESS PORT SECRET", optional): no local users; every
# login goes to that RADIUS server through charon's eap-radius plugin (remote auth = eap-radius,
# SOCKETS sockets, default THREADS: as many RADIUS requests in flight as worker threads).
charon_eap_responder() {
  local side=$1 ike=$2 esp=$3 cert=$4 keyf=$5 pool=$6 user=$7 pw=$8 routes=$9 threads=${10:-16} radius=${11:-}
  local dir="$WORK/charon-$side" plugins="eap-identity eap-mschapv2" remote_auth=eap-mschapv2 radius_conf=""
  if [ -n "$radius" ]; then
    local r_addr r_port r_secret
    read -r r_addr r_port r_secret <<<"$radius"
    plugins="eap-identity eap-radius" remote_auth=eap-radius
    radius_conf="eap-radius { server = $r_addr
      port = $r_port
      secret = \"$r_secret\"
      sockets = $threads
      retransmit_tries = 4
      retransmit_timeout = 2.0
      retransmit_base = 1.0 }"
  fi
  mkdir -p "$dir/run" "$dir/private"
  cp "$keyf" "$dir/private/"
  cat >"$dir/strongswan.conf" <<CONF
charon {
  load = random nonce aes sha1 sha2 hmac gcm chapoly curve25519 openssl kdf pem pkcs1 pkcs8 x509 pubkey constraints $plugins socket-default vici kernel-libipsec kernel-netlink attr updown
  install_routes = $routes
  threads = $threads
  block_threshold = 1000000
  ikesa_table_size = 65536
  ikesa_table_segments = 16
  filelog { stderr { default = 1 } }
  plugins { kernel-libipsec { allow_peer_ts = yes }
    $radius_conf }
}
CONF
  cat >"$dir/swanctl.conf" <<CONF
connections {
  rw {
    local_addrs = 192.0.2.2
    remote_addrs = 192.0.2.1
    proposals = $ike
    pools = rw
    local {
      auth = pubkey
      certs = $cert
      id = gw-b.example
    }
    remote {
      auth = $remote_auth
      eap_id = %any
    }
    children {
      net {
        local_ts = 203.0.113.0/24
        esp_proposals = $esp
      }
    }
  }
}
pools {
  rw {
    addrs = $pool
  }
}
secrets {
  eap-user {
    $([ -n "$user" ] && echo "id = $user")
    secret = "$pw"
  }
}
CONF
  charon_launch "$side"
}

# charon_rw_gw_cert_peer I IKE ESP CA LOCAL_BLOCK [SECRETS] [CHARON_OPTIONS] [PLUGINS]: a strongSwan
# 5.9.8 road warrior (kernel-libipsec) in peer I's namespace of netns_hub_setup, started:
# 192.0.2.(10+I), vips 0.0.0.0, CHILD SA "net" to 203.0.113.0/24, checking spigot's gateway
# certificate (gw-b.example) against the CA file CA. LOCAL_BLOCK is the swanctl `local { }` body
# (how the peer proves itself), SECRETS the `secrets { }` body, CHARON_OPTIONS lines for the
# charon section (e.g. "rsa_pss = yes"), PLUGINS more plugins to load (e.g. "eap-mschapv2").
charon_rw_gw_cert_peer() {
  local i=$1 ike=$2 esp=$3 ca=$4 local_block=$5 secrets=${6:-} options=${7:-} plugins=${8:-}
  local dir="$WORK/charon-p$i"
  mkdir -p "$dir/run" "$dir/private"
  cat >"$dir/strongswan.conf" <<CONF
charon {
  load = random nonce aes sha1 sha2 hmac gcm chapoly curve25519 openssl kdf pem pkcs1 pkcs8 x509 pubkey constraints revocation $plugins socket-default vici kernel-libipsec kernel-netlink updown
  install_routes = yes
  $options
  filelog { stderr { default = 1 ike = 2 cfg = 2 } }
  plugins { kernel-libipsec { allow_peer_ts = yes } revocation { enable_ocsp = no } }
}
CONF
  cat >"$dir/swanctl.conf" <<CONF
connections {
  gw {
    local_addrs = 192.0.2.$((10 + i))
    remote_addrs = 192.0.2.2
    proposals = $ike
    vips = 0.0.0.0
    local {
      $local_block
    }
    remote {
      auth = pubkey
      id = gw-b.example
      cacerts = $ca
    }
    children {
      net {
        remote_ts = 203.0.113.0/24
        esp_proposals = $esp
      }
    }
  }
}
secrets {
  $secrets
}
CONF
  charon_launch "p$i"
}

# charon_rw_peer_config I IKE ESP PSK [VIPS] [REMOTE_TS]: the configuration (not started) of a
# strongSwan 5.9.8 road warrior (kernel-libipsec) in peer I's namespace of netns_hub_setup:
# identity peerI.example at 192.0.2.(10+I), asking spigot (gw-b, 192.0.2.2) for virtual IPs VIPS
# (default 0.0.0.0; "::" or "0.0.0.0, ::" for IPv6), CHILD SA "net" from them (local_ts dynamic)
# to REMOTE_TS (default 203.0.113.0/24). Start it with charon_launch pI, or several at once.
charon_rw_peer_config() {
  local i=$1 ike=$2 esp=$3 psk=$4 vips=${5:-0.0.0.0} rts=${6:-203.0.113.0/24}
  local dir="$WORK/charon-p$i"
  mkdir -p "$dir/run"
  cat >"$dir/strongswan.conf" <<CONF
charon {
  load = random nonce aes sha1 sha2 hmac gcm chapoly curve25519 openssl kdf pem pkcs1 x509 pubkey socket-default vici kernel-libipsec kernel-netlink updown
  install_routes = yes
  filelog { stderr { default = 1 ike = 2 } }
  plugins { kernel-libipsec { allow_peer_ts = yes } }
}
CONF
  cat >"$dir/swanctl.conf" <<CONF
connections {
  gw {
    local_addrs = 192.0.2.$((10 + i))
    remote_addrs = 192.0.2.2
    proposals = $ike
    vips = $vips
    local {
      auth = psk
      id = peer$i.example
    }
    remote {
      auth = psk
      id = gw-b
    }
    children {
      net {
        remote_ts = $rts
        esp_proposals = $esp
      }
    }
  }
}
secrets {
  ike-1 {
    id-1 = peer$i.example
    id-2 = gw-b
    secret = $psk
  }
}
CONF
}

# radius_start NAME NS ADDR PORT SECRET CLIENT USERS: FreeRADIUS 3 (Debian's freeradius) in
# namespace NS, answering Access-Requests from CLIENT (an address) with SECRET on ADDR:PORT, with
# EAP-MSCHAPv2 against USERS (the text of a `files` users file: name Cleartext-Password := "...",
# then reply items such as Framed-IP-Address and Class). A minimal configuration of its own in
# $WORK/radius-NAME (no TLS, no SQL, nothing from /etc); its log is $WORK/radius-NAME.log and
# radius-NAME.out. The pid is in RADIUS_PID[NAME]; radius_stop NAME kills it.
declare -A RADIUS_PID=()
radius_start() {
  local name=$1 ns=$2 addr=$3 port=$4 secret=$5 client=$6 users=$7
  local d="$WORK/radius-$name"
  command -v freeradius >/dev/null || fail "FreeRADIUS is not installed (scripts/install-deps.sh installs freeradius)"
  mkdir -p "$d/run"
  printf '%s\n' "$users" >"$d/users"
  cat >"$d/radiusd.conf" <<CONF
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
raddbdir = $d
confdir = $d
modconfdir = $d
logdir = $d
run_dir = $d/run
db_dir = $d
libdir = /usr/lib/freeradius
pidfile = $d/run/radiusd.pid
name = radiusd
max_request_time = 30
cleanup_delay = 2
max_requests = 65536
hostname_lookups = no
log {
  destination = files
  file = $WORK/radius-$name.log
  auth = yes
}
security {
  allow_core_dumps = no
  max_attributes = 200
  reject_delay = 0
  status_server = yes
}
thread pool {
  start_servers = 4
  max_servers = 16
  min_spare_servers = 2
  max_spare_servers = 8
  max_requests_per_server = 0
}
client gateway {
  ipaddr = $client
  secret = "$secret"
  require_message_authenticator = yes
}
modules {
  files {
    filename = $d/users
  }
  mschap {
  }
  eap {
    default_eap_type = mschapv2
    timer_expire = 60
    max_sessions = 65536
    mschapv2 {
    }
  }
}
server default {
  listen {
    type = auth
    ipaddr = $addr
    port = $port
  }
  authorize {
    eap {
      ok = return
    }
    files
  }
  authenticate {
    eap
    Auth-Type MS-CHAP {
      mschap
    }
  }
  post-auth {
    Post-Auth-Type REJECT {
      eap
    }
  }
}
CONF
  freeradius -XC -d "$d" -n radiusd >"$WORK/radius-$name.check" 2>&1 ||
    { tail -n 20 "$WORK/radius-$name.check"; fail "FreeRADIUS $name: configuration refused"; }
  ip netns exec "$ns" freeradius -f -d "$d" -n radiusd >"$WORK/radius-$name.out" 2>&1 &
  RADIUS_PID[$name]=$!
  PIDS+=($!)
  until_ok 10 sh -c "ip netns exec '$ns' ss -uln | grep -q '$addr:$port '" ||
    fail "FreeRADIUS $name does not listen on $addr:$port"
}
radius_stop() {
  kill -TERM "${RADIUS_PID[$1]}" 2>/dev/null || true
  wait "${RADIUS_PID[$1]}" 2>/dev/null || true
}
