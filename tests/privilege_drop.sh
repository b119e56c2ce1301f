#!/usr/bin/env bash
# Issue 15, item 3: least privilege.
#  1. Secrets others may read are refused at start, naming the file, key and mode: a PSK file
#     of mode 0644, a configuration of mode 0644; an unknown global.user is refused too.
#  2. spigot (namespace a, a road warrior with vips = "0.0.0.0" and a psk_file) runs with
#     global.user = a test user made here (useradd --system, removed at exit) and
#     socket_group = a test group: after startup /proc/PID/status shows that user's uid and gid
#     in every field, CapEff = CapPrm = CapBnd = CAP_NET_ADMIN alone, no_new_privs; its other
#     threads have no capabilities at all.
#  3. The tunnel still comes up against a root spigot responder with an address pool, and
#     passes traffic: the virtual IP and its route are put on the TUN after the drop (netlink,
#     CAP_NET_ADMIN); `terminate` by root takes them away again.
#  4. The control socket is the user's, group socket_group, mode 0660. A member of the group
#     gets `stats` but is refused `reload` and `terminate` with a clear message (logged); a
#     non-member cannot connect at all, and with the file's mode widened is refused `stats` by
#     the daemon (SO_PEERCRED). Root's `reload` works: the daemon's group may read the 0640
#     configuration and PSK file.
# usage: privilege_drop.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16 PSK=privilege-drop-secret
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"

# Users and groups of this run (names of at most 32 bytes, unique per test process).
DAEMON_USER="spd$$" READ_GROUP="spr$$" MEMBER="spm$$" OUTSIDER="spo$$"
users_cleanup() {
  for u in "$DAEMON_USER" "$MEMBER" "$OUTSIDER"; do userdel "$u" 2>/dev/null || true; done
  groupdel "$READ_GROUP" 2>/dev/null || true
}
trap 'cleanup; users_cleanup' EXIT
useradd --system --no-create-home --user-group --shell /usr/sbin/nologin "$DAEMON_USER"
groupadd --system "$READ_GROUP"
useradd --system --no-create-home --user-group --shell /usr/sbin/nologin -G "$READ_GROUP" "$MEMBER"
useradd --system --no-create-home --user-group --shell /usr/sbin/nologin "$OUTSIDER"
as() { local u=$1; shift; runuser -u "$u" -- "$@"; }  # as USER CMD...: CMD as USER

netns_setup
ip -n "${NS}a" addr del 198.51.100.1/32 dev lo
# The test users reach the socket (and the daemon its files) through $WORK.
chmod 0711 "$WORK"

cat >"$WORK/b.toml" <<TOML
[global]
control_socket = "$WORK/b.sock"
listen = "192.0.2.2"
user = "root"

[[pool]]
name = "rw"
addrs = "198.18.1.0/28"

[[connection]]
name = "rw"
local_addrs = "192.0.2.2"
remote_addrs = "%any"
local_id = "gw-b"
remote_id = "rw.example"
psk = "$PSK"
ike_proposals = "$IKE"
esp_proposals = "$ESP"
local_ts = "203.0.113.0/24"
pools = "rw"
TOML

a_config() {  # a_config [GLOBAL_LINES]: side a's configuration, PSK from $WORK/a.key
  cat >"$WORK/a.toml" <<TOML
[global]
control_socket = "$WORK/a.sock"
listen = "192.0.2.1"
tun_name = "sppd$$"
${1:-}

[[connection]]
name = "home"
local_addrs = "192.0.2.1"
remote_addrs = "192.0.2.2"
local_id = "rw.example"
remote_id = "gw-b"
psk_file = "$WORK/a.key"
ike_proposals = "$IKE"
esp_proposals = "$ESP"
local_ts = "0.0.0.0/0"
vips = "0.0.0.0"
remote_ts = "203.0.113.0/24"
TOML
}
printf '%s\n' "$PSK" >"$WORK/a.key"

# ---- 1. refused at start
refused() {  # refused WHAT EXPECTED_TEXT: spigot must exit non-zero saying EXPECTED_TEXT
  local out rc=0
  out=$(timeout 10 ip netns exec "${NS}a" "$SPIGOT" run -c "$WORK/a.toml" 2>&1) || rc=$?
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "$1: spigot started (exit $rc): $out"
  grep -qF -- "$2" <<<"$out" || fail "$1: expected \"$2\" in: $out"
  log "ok: $1 refused: $out"
}
a_config "user = \"$DAEMON_USER\""
chmod 0644 "$WORK/a.key"
refused "a PSK file of mode 0644" \
  "$WORK/a.toml: connection[0].psk_file: \"$WORK/a.key\": mode 0644 lets others read it"
chmod 0600 "$WORK/a.key"
chmod 0644 "$WORK/a.toml"
refused "a configuration of mode 0644" "$WORK/a.toml: mode 0644 lets others read it"
chmod 0600 "$WORK/a.toml"
a_config "user = \"nosuch$$\""
refused "an unknown global.user" "$WORK/a.toml: global.user: no such user \"nosuch$$\""

# ---- 2. the drop
a_config "user = \"$DAEMON_USER\"
socket_group = \"$READ_GROUP\""
# The daemon's group may read its secrets: a reload reads them again after the drop.
chgrp "$DAEMON_USER" "$WORK/a.toml" "$WORK/a.key"
chmod 0640 "$WORK/a.toml" "$WORK/a.key"
uid=$(id -u "$DAEMON_USER") gid=$(id -g "$DAEMON_USER")

spigot_start b
spigot_start a
pid=${PIDS[-1]}
until_ok 10 grep -q "running as user $DAEMON_USER" "$WORK/spigot-a.log" ||
  fail "side a did not say it switched to $DAEMON_USER"
status() { awk -v k="$2:" '$1 == k { $1 = ""; sub(/^ /, ""); print }' "$1"; }  # status FILE KEY: its fields, space-separated
st=/proc/$pid/status
[ "$(status "$st" Uid)" = "$uid $uid $uid $uid" ] || fail "Uid: $(status "$st" Uid), want $uid"
[ "$(status "$st" Gid)" = "$gid $gid $gid $gid" ] || fail "Gid: $(status "$st" Gid), want $gid"
net_admin=0000000000001000  # 1 << CAP_NET_ADMIN (12)
for f in CapEff CapPrm CapBnd; do
  [ "$(status "$st" $f)" = $net_admin ] || fail "$f: $(status "$st" $f), want $net_admin (CAP_NET_ADMIN alone)"
done
for f in CapInh CapAmb; do [ "$(status "$st" $f)" = 0000000000000000 ] || fail "$f: $(status "$st" $f)"; done
[ "$(status "$st" NoNewPrivs)" = 1 ] || fail "NoNewPrivs: $(status "$st" NoNewPrivs)"
groups_a=$(status "$st" Groups)
[ "$groups_a" = "$gid" ] || [ -z "$groups_a" ] || fail "supplementary groups: $groups_a, want only $gid"
threads=0
for t in /proc/"$pid"/task/*; do
  [ "$t" = "/proc/$pid/task/$pid" ] && continue
  threads=$((threads + 1))
  [ "$(status "$t/status" Uid)" = "$uid $uid $uid $uid" ] || fail "thread $t: Uid $(status "$t/status" Uid)"
  [ "$(status "$t/status" CapEff)" = 0000000000000000 ] || fail "thread $t: CapEff $(status "$t/status" CapEff)"
  [ "$(status "$t/status" CapPrm)" = 0000000000000000 ] || fail "thread $t: CapPrm $(status "$t/status" CapPrm)"
  [ "$(status "$t/status" CapBnd)" = $net_admin ] || fail "thread $t: CapBnd $(status "$t/status" CapBnd)"
done
[ "$threads" -ge 2 ] || fail "expected data-path and worker threads, found $threads"
log "ok: uid $uid gid $gid, CapEff/CapPrm/CapBnd $net_admin, NoNewPrivs 1; $threads other thread(s) without capabilities"

# ---- 3. the tunnel, with its virtual IP and route made after the drop
sctl a initiate home >/dev/null
vip() { ip -n "${NS}a" -4 -o addr show dev "sppd$$" | awk '{print $4}' | grep '^198\.18\.1\.'; }
until_ok 10 vip || fail "no virtual IP on side a's TUN"
ip -n "${NS}a" route show 203.0.113.0/24 | grep -q "sppd$$" || fail "no route to 203.0.113.0/24 into the TUN"
ip netns exec "${NS}a" ping -c 3 -i 0.2 -W 2 203.0.113.1 >"$WORK/ping.log" 2>&1 ||
  { cat "$WORK/ping.log"; fail "no traffic through the tunnel"; }
log "ok: tunnel up with virtual IP $(vip), traffic passes"

# ---- 4. the control socket
read -r owner group mode <<<"$(stat -c '%U %G %a' "$WORK/a.sock")"
[ "$owner $group $mode" = "$DAEMON_USER $READ_GROUP 660" ] ||
  fail "socket is $owner:$group mode $mode, want $DAEMON_USER:$READ_GROUP 660"
as "$MEMBER" "$SPIGOT" stats --json --socket "$WORK/a.sock" >"$WORK/member-stats.json" ||
  fail "a socket_group member was refused stats"
[ "$(field "$WORK/member-stats.json" active_sas)" -ge 1 ] || fail "member's stats: no active SA"
member_uid=$(id -u "$MEMBER")
for cmd in reload "terminate home"; do
  out=$(as "$MEMBER" "$SPIGOT" $cmd --socket "$WORK/a.sock" 2>&1) && fail "member ran '$cmd': $out"
  grep -qF "permission denied: '${cmd%% *}' changes the gateway and is for root and the daemon's user \"$DAEMON_USER\" only; uid $member_uid" <<<"$out" ||
    fail "member's '$cmd' refused unclearly: $out"
  grep -q "control socket: refused '${cmd%% *}' from uid $member_uid" "$WORK/spigot-a.log" ||
    fail "refused '$cmd' not logged"
done
log "ok: member: stats answered; reload and terminate refused: $out"
out=$(as "$OUTSIDER" "$SPIGOT" stats --socket "$WORK/a.sock" 2>&1) && fail "outsider ran stats: $out"
grep -q "Permission denied" <<<"$out" || fail "outsider refused unclearly: $out"
log "ok: outsider cannot connect: $out"
chmod 0666 "$WORK/a.sock"
out=$(as "$OUTSIDER" "$SPIGOT" stats --socket "$WORK/a.sock" 2>&1) && fail "outsider ran stats on a 0666 socket: $out"
grep -qF "permission denied: uid $(id -u "$OUTSIDER")" <<<"$out" || fail "outsider refused unclearly: $out"
log "ok: outsider refused by the daemon on a 0666 socket: $out"
chmod 0660 "$WORK/a.sock"

sctl a reload >"$WORK/reload.out" 2>&1 || { cat "$WORK/reload.out"; fail "root's reload failed"; }
sctl a stats --json >"$WORK/a-stats.json"
[ "$(field "$WORK/a-stats.json" active_sas)" -ge 1 ] || fail "the SA went away"
sctl a terminate home >/dev/null
until_ok 10 sh -c "! ip -n ${NS}a -4 -o addr show dev sppd$$ | grep -q 198.18.1." ||
  fail "terminate left the virtual IP on the TUN"
log "ok: root: reload and terminate (virtual IP removed after the drop)"
