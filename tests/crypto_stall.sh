#!/usr/bin/env bash
# Failure cause 3: the crypto engine stops completing jobs mid-stream.
# usage: [ESP=PROPOSAL] crypto_stall.sh SPIGOT_BINARY MODE
#   MODE fault: side a runs crypto_engine = "fault" (async with a fault switch), side b inline.
#     Paced UDP streams with sequence numbers both ways (a seals one, opens the other); mid-stream
#     `spigot debug crypto-fault stall`. The watchdog must take the stalled jobs back and redo
#     them inline: longest delay of a packet sent around the stall < 100 ms, nothing lost, nothing
#     duplicated, nothing reordered beyond the replay window; stats say stalled, stalls >= 1,
#     fallbacks >= 1; the log says so. Then `resume`: a probe brings the engine back to "ok".
#   MODE async: both sides crypto_engine = "async"; the streams pass both ways, no stall.
set -euo pipefail
SPIGOT=$1 MODE=$2
# ESP=aes256-sha256 (the _cbc tests): CBC + HMAC, which side b (no engine) seals and opens in
# multi-buffer batches and the engines on side a run in batches too.
IKE=aes128gcm16-prfsha256-x25519 ESP=${ESP:-aes128gcm16}
# fault: 8 s of stream, so that the stall lands mid-stream even when noticing that the stream
# flows takes seconds (CI once stalled the engine after a 4 s stream had ended: "0 packets sent
# in [T-50ms, T+0.5s]").
COUNT=${COUNT:-$([ "$MODE" = fault ] && echo 8000 || echo 4000)} RATE=${RATE:-1000}
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"

netns_setup
spigot_config a "$IKE" "$ESP"
spigot_config b "$IKE" "$ESP"
if [ "$MODE" = fault ]; then
  sed -i '/^\[global\]/a crypto_engine = "fault"\ncrypto_stall_timeout = 50' "$WORK/a.toml"
else
  sed -i '/^\[global\]/a crypto_engine = "async"' "$WORK/a.toml" "$WORK/b.toml"
fi
spigot_start a
spigot_start b
sctl a initiate peer >/dev/null
installed() { sctl a sas --json | grep -q INSTALLED; }
until_ok 10 installed || fail "no CHILD SA"
until_ok 10 ping_ok a || fail "tunnel does not pass traffic"

engine() {  # engine SIDE FIELD: a field of the stats' crypto_engine object
  sctl "$1" stats --json | python3 -c "import json,sys; print(json.load(sys.stdin)['crypto_engine']['$2'])"
}

if [ "$MODE" = fault ]; then
  # The fault engine's control is refused by a daemon that does not run it.
  if out=$(sctl b debug crypto-fault stall 2>&1); then fail "side b (inline) accepted crypto-fault: $out"; fi
  echo "$out" | grep -q 'needs crypto_engine = "fault"' || fail "unclear refusal: $out"
  log "ok: inline side refuses crypto-fault: $out"
fi

# The receivers stop at COUNT datagrams; the margin is for senders slow to start on a loaded
# machine (seconds, seen), not for loss.
secs=$(( COUNT / RATE + 20 ))
for dir in ab ba; do
  from=${dir:0:1} to=${dir:1:1}
  ip netns exec "${NS}$to" python3 "$HERE/stream.py" udp-recv-timed "$(inner_host "$to")" 7000 "$COUNT" "$secs" "$WORK/arrivals-$dir.json" >"$WORK/recv-$dir.log" 2>&1 &
  eval "receiver_$dir=$!"
done
for to in a b; do listening "${NS}$to" udp "$(inner_host "$to")" 7000; done
for dir in ab ba; do
  from=${dir:0:1} to=${dir:1:1}
  ip netns exec "${NS}$from" python3 "$HERE/stream.py" udp-send "$(inner_host "$to")" 7000 "$COUNT" "$RATE" &
  eval "sender_$dir=$!"
done
stall_at=0
if [ "$MODE" = fault ]; then
  # Mid-stream: once side a has sealed half a second's worth of the stream. A fixed sleep after
  # starting the senders missed it on a loaded machine, where a sender's python took over 2 s to
  # start: the stall came before the first datagram ("0 packets sent in [T-50ms, T+0.5s]").
  tx() { sctl a stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["traffic"]["tx_packets"])'; }
  tx_before=$(tx)
  flowing() { [ "$(tx)" -ge $(( tx_before + RATE / 2 )) ]; }
  until_ok 30 flowing || fail "stream a -> b did not start: tx_packets $(tx), was $tx_before"
  stall_at=$(date +%s.%N)
  sctl a debug crypto-fault stall >/dev/null || fail "crypto-fault stall refused"
fi
wait "$sender_ab" "$sender_ba"
for dir in ab ba; do
  r=receiver_$dir
  wait "${!r}" || fail "stream $dir lost packets: $(cat "$WORK/recv-$dir.log")"
done

if [ "$MODE" = fault ]; then
  for dir in ab ba; do
    out=$(python3 "$HERE/arrivals.py" "$WORK/arrivals-$dir.json" "$stall_at" 0.5 100 1024) ||
      fail "stream $dir around the stall: $out"
    log "ok: $dir: $(cat "$WORK/recv-$dir.log"); $out"
  done
  state=$(engine a state) stalls=$(engine a stalls) fallbacks=$(engine a fallbacks)
  [ "$state" = stalled ] || fail "engine state $state after the stall, want stalled"
  [ "$stalls" -ge 1 ] || fail "stalls = $stalls"
  [ "$fallbacks" -ge 1 ] || fail "fallbacks = $fallbacks"
  grep -q "crypto engine fault stalled" "$WORK/spigot-a.log" || fail "the log does not say the engine stalled"
  log "ok: stats: $(sctl a stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["crypto_engine"])')"
  [ "$(sctl a stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["packets_dropped"]["replay"])')" = 0 ] ||
    fail "side a dropped packets as replays"
  [ "$(sctl b stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["packets_dropped"]["replay"])')" = 0 ] ||
    fail "side b dropped packets as replays"

  sctl a debug crypto-fault resume >/dev/null || fail "crypto-fault resume refused"
  back() { [ "$(engine a state)" = ok ]; }
  until_ok 5 back || fail "the engine did not come back after resume: $(engine a state)"
  grep -q "crypto engine fault back in service" "$WORK/spigot-a.log" || fail "the log does not say the engine came back"
  completed_before=$(engine a completed)
  until_ok 10 ping_ok a || fail "no traffic after the engine came back"
  [ "$(engine a completed)" -gt "$completed_before" ] || fail "traffic after recovery did not go through the engine"
  grep "crypto engine" "$WORK/spigot-a.log" | sed 's/^/  log: /'
  echo "PASS: crypto engine stall mid-stream: no loss, delay < 100 ms, fallback and recovery"
else
  for side in a b; do
    [ "$(engine $side name)" = async ] || fail "side $side engine $(engine $side name)"
    [ "$(engine $side completed)" -ge $(( COUNT * 2 )) ] || fail "side $side engine completed only $(engine $side completed) jobs"
    [ "$(engine $side stalls)" = 0 ] || fail "side $side stalled"
  done
  for dir in ab ba; do log "ok: $dir: $(cat "$WORK/recv-$dir.log")"; done
  echo "PASS: async crypto engine both ways, nothing lost"
fi
