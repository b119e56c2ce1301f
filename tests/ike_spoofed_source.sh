#!/usr/bin/env bash
# A spoofed IKE datagram does not redirect an IKE SA (RFC 7296 2.23: only an authentic, new
# message may move it). Two spigots with a tunnel; from a third address (192.0.2.3, on side b's
# link, where no IKE daemon listens) come datagrams carrying the IKE SA's SPIs: a forged
# INFORMATIONAL request (garbage where the encrypted payload goes) and an IKE_SA_INIT-looking
# one. Side a drops and counts them, and its next exchange (an IKE rekey) still goes to b.
# usage: ike_spoofed_source.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16

netns_setup
ip -n "${NS}b" addr add 192.0.2.3/24 dev "${NS}vb"
spigot_config a "$IKE" "$ESP"
spigot_config b "$IKE" "$ESP"
spigot_start a
spigot_start b
agree() {
  sctl a sas --json >"$WORK/a.json" && sctl b sas --json >"$WORK/b.json" &&
    python3 "$HERE/agree.py" spigot-vs-spigot "$WORK/a.json" "$WORK/b.json"
}
sctl a initiate peer >/dev/null
until_ok 10 agree || fail "the tunnel did not come up"
read -r spi_i spi_r <<<"$(sctl a sas --json | python3 -c 'import json,sys; s=json.load(sys.stdin)["ike_sas"][0]; print(s["spi_i"], s["spi_r"])')"
invalid_before=$(sctl a stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["ike"]["invalid"])')

# b is the responder: its messages to a carry the I flag clear. Message ID 1, 2, ...: the next
# requests b could send, each with 64 bytes of garbage as the "encrypted" payload.
ip netns exec "${NS}b" python3 - "$spi_i" "$spi_r" <<'PY'
import os, socket, struct, sys
spi_i, spi_r = (bytes.fromhex(x) for x in sys.argv[1:3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("192.0.2.3", 500))
for mid in range(0, 8):
    body = struct.pack("!BBH", 0, 0, 4 + 64) + os.urandom(64)  # an SK payload of junk
    hdr = spi_i + spi_r + struct.pack("!BBBBII", 46, 0x20, 37, 0x00, mid, 28 + len(body))
    s.sendto(hdr + body, ("192.0.2.1", 500))
    # An unencrypted IKE_SA_INIT "request" with the established SPIs.
    s.sendto(spi_i + spi_r + struct.pack("!BBBBII", 0, 0x20, 34, 0x00, 0, 28), ("192.0.2.1", 500))
PY
until_ok 5 python3 -c "import json,subprocess,sys
s=json.loads(subprocess.check_output(['$SPIGOT','stats','--json','--socket','$WORK/a.sock']))
sys.exit(0 if s['ike']['invalid'] > $invalid_before else 1)" || fail "side a did not count the spoofed datagrams"
[ "$(sctl a sas --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["ike_sas"][0]["remote"])')" = "192.0.2.2:500" ] ||
  fail "the spoofed datagrams moved the IKE SA: $(sctl a sas --json | grep remote)"
log "ok: spoofed datagrams from 192.0.2.3 dropped and counted, the IKE SA stays with 192.0.2.2"

sctl a rekey peer --ike >/dev/null
until_ok 10 agree || fail "the IKE rekey after the spoofed datagrams failed"
[ "$(sctl a sas --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["ike_sas"][0]["spi_i"])')" != "$spi_i" ] ||
  fail "the IKE SA was not rekeyed"
ping_ok a || fail "no traffic after the rekey"
echo "PASS: a spoofed IKE source does not move the IKE SA"
