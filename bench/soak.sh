#!/usr/bin/env bash
# Soak (issue 16 item 4): N road warriors on one spigot concentrator for DURATION seconds, with
# CHILD rekeys every CHILD_REKEY (less up to 10 % jitter) and IKE rekeys every IKE_REKEY, and
# traffic on every tunnel the whole time:
#   - spigot b is the concentrator: connection "storm" (any identity with the PSK, a virtual IP
#     each from 198.18.0.0/20, local_ts 203.0.113.128/25) rekeys the CHILD and IKE SAs itself,
#     limited to MAX_REKEYS per second; connection "peer" is a site-to-site sample tunnel to
#     spigot a;
#   - `spigot loadgen --vips --traffic` in namespace a keeps the N road warriors up for the
#     whole run, each pinging 203.0.113.129 (on b's loopback) from its virtual IP every PING_MS
#     through its own CHILD SA: every echo must come back;
#   - the sample tunnel carries paced UDP streams with sequence numbers both ways (stream.py,
#     RATE datagrams/s): every datagram must arrive.
# Every SAMPLE seconds the sampler records spigot b's RSS, open file descriptors, SPIs in use,
# CHILD SAs (active_sas), SPIs minus SAs, negotiation queue depth, half-open IKE SAs, IKE SAs,
# rekeys started/completed, CHILD failures, and IKE SAs replaced since the last sample (SPI
# pairs not seen in the last sample: the IKE rekeys, once the logins are done). After WARMUP
# seconds, each of RSS, fds, SPIs in use, SPIs minus SAs and queue depth must not trend upward:
# the run fails if, for one of them, both the least-squares slope over the window times the window's length and the mean of the last
# third minus the mean of the first third exceed its tolerance (RSS: max(4 MiB, 5 %); fds: 2;
# SPIs and SPIs minus SAs: 1 % of N + 4; queue depth: 5 % of N + 4). It also fails if any echo
# or stream datagram was lost, a CHILD negotiation failed, or the tunnel count fell.
# Results go to OUT (default build/soak-YYYYmmdd-HHMMSS): samples.csv, summary.json and
# soak.svg (one panel per metric, the warm-up shaded).
# Not in CI. Run as root.
# usage: bench/soak.sh [BUILD_DIR] [DURATION_SECONDS]
#        defaults: build/release 3600; N=1000 CHILD_REKEY=15s IKE_REKEY=3m MAX_REKEYS=400
#        PING_MS=1000 RATE=100 SAMPLE=60 WARMUP=300 LOGIN_RATE=200 OUT=... in the environment
# Addresses: documentation ranges and 198.18.0.0/15 only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build/release}
DURATION=${2:-3600}
N=${N:-1000} CHILD_REKEY=${CHILD_REKEY:-15s} IKE_REKEY=${IKE_REKEY:-3m} MAX_REKEYS=${MAX_REKEYS:-400}
PING_MS=${PING_MS:-1000} RATE=${RATE:-100} SAMPLE=${SAMPLE:-60} WARMUP=${WARMUP:-300}
LOGIN_RATE=${LOGIN_RATE:-200}
OUT=${OUT:-$ROOT/build/soak-$(date +%Y%m%d-%H%M%S)}
SPIGOT=$(cd "$BUILD" && pwd)/spigot
HERE=$ROOT/tests
source "$ROOT/tests/lib.sh"
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16 PSK=soak-secret TARGET=203.0.113.129
[ "$WARMUP" -lt "$DURATION" ] || fail "WARMUP ($WARMUP s) must be shorter than the run ($DURATION s)"
mkdir -p "$OUT"

netns_setup
ip -n "${NS}b" addr add "$TARGET/32" dev lo
lifetimes="child_rekey_time = \"$CHILD_REKEY\"\nike_rekey_time = \"$IKE_REKEY\"\n"
spigot_config a "$IKE" "$ESP" "$PSK"
printf "$lifetimes" >>"$WORK/a.toml"
spigot_config b "$IKE" "$ESP" "$PSK"
sed -i "s/^cookie_threshold = .*/cookie_threshold = $((N * 4))\nmax_rekeys_per_second = $MAX_REKEYS/" "$WORK/b.toml"
printf "$lifetimes" >>"$WORK/b.toml"
cat >>"$WORK/b.toml" <<TOML

[[connection]]
name = "storm"
local_addrs = "192.0.2.2"
remote_addrs = "192.0.2.1"
remote_id = "%any"
local_id = "gw-b"
psk = "$PSK"
ike_proposals = "$IKE"
esp_proposals = "$ESP"
local_ts = "203.0.113.128/25"
pools = "rw"
TOML
printf "$lifetimes" >>"$WORK/b.toml"
printf '\n[[pool]]\nname = "rw"\naddrs = "198.18.0.0/20"\n' >>"$WORK/b.toml"
cp "$WORK/a.toml" "$WORK/b.toml" "$OUT/"
spigot_start a
spigot_start b
B_PID=$(ip netns pids "${NS}b" | while read -r p; do
  [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$SPIGOT" ] && echo "$p"; done | head -n 1)
[ -n "$B_PID" ] || fail "cannot find spigot b's process"
sctl a initiate peer >/dev/null
installed() { sctl a sas --json | grep -q INSTALLED; }
until_ok 10 installed || fail "the sample tunnel did not come up"
until_ok 10 ping_ok a || fail "the sample tunnel does not pass traffic"

# The road warriors: logged in at LOGIN_RATE/s, held for the whole run, pinging all along.
login_s=$(( N / LOGIN_RATE + 1 ))
hold=$(( DURATION + 10 ))
pings=$(( (DURATION - login_s) * 1000 / PING_MS ))
[ "$pings" -ge 1 ] && [ "$pings" -le 65535 ] || fail "PING_MS=$PING_MS gives $pings echoes per peer (1 to 65535)"
log "soak: $N road warriors for ${DURATION}s (CHILD rekey $CHILD_REKEY, IKE rekey $IKE_REKEY," \
    "<= $MAX_REKEYS rekeys/s), $pings echoes each every ${PING_MS} ms, sample tunnel $RATE datagrams/s" \
    "each way; sampling every ${SAMPLE}s, warm-up ${WARMUP}s; results in $OUT"
ip netns exec "${NS}a" "$SPIGOT" loadgen --target 192.0.2.2 --psk "$PSK" --ike-sas "$N" \
  --rate "$LOGIN_RATE" --duration "${hold}s" --ike "$IKE" --esp "$ESP" --vips --traffic \
  --packets "$pings" --traffic-interval "$PING_MS" --traffic-dst "$TARGET" \
  --remote-ts 203.0.113.128/25 --id-prefix soak --json >"$OUT/loadgen.json" 2>"$WORK/loadgen.log" &
lg=$!
PIDS+=($lg)

# The sample tunnel's streams, both ways, for the whole run.
count=$(( RATE * DURATION ))
for dir in ab ba; do
  from=${dir:0:1} to=${dir:1:1}
  ip netns exec "${NS}$to" python3 "$HERE/stream.py" udp-recv "$(inner_host "$to")" 7000 "$count" $((DURATION + 60)) \
    >"$WORK/recv-$dir.log" 2>&1 &
  eval "recv_$dir=\$!"
done
for to in a b; do listening "${NS}$to" udp "$(inner_host "$to")" 7000; done
for dir in ab ba; do
  from=${dir:0:1} to=${dir:1:1}
  ip netns exec "${NS}$from" python3 "$HERE/stream.py" udp-send "$(inner_host "$to")" 7000 "$count" "$RATE" &
  eval "send_$dir=\$!"
done

# The sampler: one CSV row every SAMPLE seconds until the end of the run.
python3 - "$SPIGOT" "$WORK/b.sock" "$B_PID" "$DURATION" "$SAMPLE" "$OUT/samples.csv" <<'PY' &
import csv, json, os, subprocess, sys, time
spigot, sock, pid, duration, every, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
def ctl(*args):
    return json.loads(subprocess.run([spigot, *args, "--json", "--socket", sock], capture_output=True, text=True, check=True).stdout)
def rss_mib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
cols = ["t", "rss_mib", "fds", "spi_in_use", "active_sas", "spi_minus_sas", "queue_depth", "half_open",
        "ike_sas", "rekeys_started", "rekeys_completed", "child_failures", "ike_replaced"]
start, prev = time.monotonic(), None
with open(out, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(cols)
    while True:
        t = time.monotonic() - start
        s, sas = ctl("stats"), ctl("sas")
        # An IKE rekey (2.18) gives the IKE SA new SPIs both ways: pairs not there last time.
        ike = {(x["spi_i"], x["spi_r"]) for x in sas["ike_sas"] if x["name"] == "storm"}
        replaced = 0 if prev is None else len(ike - prev)
        prev = ike
        row = [round(t, 1), round(rss_mib(), 2), len(os.listdir(f"/proc/{pid}/fd")), s["spi_in_use"], s["active_sas"],
               s["spi_in_use"] - s["active_sas"], s["queue_depth"], s["half_open_ike_sas"], s["ike_sas"],
               s["rekeys"]["started"], s["rekeys"]["completed"], s["ike"]["child_failures"], replaced]
        w.writerow(row)
        f.flush()
        print("sample " + " ".join(f"{c}={v}" for c, v in zip(cols, row)), flush=True)
        if t >= duration:
            break
        time.sleep(max(0.0, min(every, duration - (time.monotonic() - start))))
PY
sampler=$!
wait "$sampler" || fail "the sampler failed"
sctl b stats --json >"$OUT/end-stats.json"
sctl b sas --json >"$WORK/end-sas.json"
for dir in ab ba; do eval "wait \$send_$dir" || true; done
lost=0
for dir in ab ba; do
  eval "wait \$recv_$dir" || lost=1
  log "stream $dir: $(cat "$WORK/recv-$dir.log")"
  cp "$WORK/recv-$dir.log" "$OUT/"
done
wait "$lg" || true  # its exit code is in the report, judged below
cp "$WORK/loadgen.log" "$OUT/" 2>/dev/null || true

python3 - "$OUT" "$N" "$WARMUP" "$lost" <<'PY'
import csv, json, sys
out, n, warmup, lost = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(open(f"{out}/samples.csv"))]
lg = json.load(open(f"{out}/loadgen.json"))
tr = lg.get("traffic", {})
after = [r for r in rows if r["t"] >= warmup]
tol = {
    "rss_mib": lambda m: max(4.0, 0.05 * m),
    "fds": lambda m: 2.0,
    "spi_in_use": lambda m: 0.01 * n + 4,
    "spi_minus_sas": lambda m: 0.01 * n + 4,
    "queue_depth": lambda m: 0.05 * n + 4,
}
def slope(xs, ys):
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return 0.0 if sxx == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
problems, trends = [], {}
if len(after) < 3:
    problems.append(f"only {len(after)} samples after the warm-up: too short to judge a trend")
else:
    xs = [r["t"] for r in after]
    span = xs[-1] - xs[0]
    k = max(1, len(after) // 3)
    for m, f in tol.items():
        ys = [r[m] for r in after]
        mean = sum(ys) / len(ys)
        rise = slope(xs, ys) * span
        thirds = sum(ys[-k:]) / k - sum(ys[:k]) / k
        t = f(mean)
        trends[m] = {"min": min(ys), "max": max(ys), "mean": round(mean, 2), "fit_rise": round(rise, 2),
                     "last_minus_first_third": round(thirds, 2), "tolerance": round(t, 2)}
        if rise > t and thirds > t:
            problems.append(f"{m} trends upward after the warm-up: +{rise:.1f} over {span:.0f} s by the fit, "
                            f"last third {thirds:+.1f} against the first (tolerance {t:.1f})")
last = rows[-1]
if lost:
    problems.append("a stream through the sample tunnel lost datagrams (see recv-*.log)")
if lg.get("established") != n or lg.get("failed", 0) != 0:
    problems.append(f"road warriors: {lg.get('established')} established, {lg.get('failed')} failed of {n}")
if tr.get("received") != tr.get("sent"):
    problems.append(f"echoes: {tr.get('received')} replies to {tr.get('sent')} requests")
if last["child_failures"] != 0:
    problems.append(f"{last['child_failures']:.0f} CHILD SA negotiations failed")
if min(r["active_sas"] for r in after or rows) < n + 1:
    problems.append(f"CHILD SAs fell to {min(r['active_sas'] for r in after or rows):.0f} (want {n + 1}: one per road warrior and the sample tunnel)")
summary = {
    "samples": len(rows), "duration_s": last["t"], "warmup_s": warmup, "road_warriors": n,
    "established": lg.get("established"), "failed": lg.get("failed"),
    "echoes_sent": tr.get("sent"), "echoes_received": tr.get("received"),
    "child_rekeys_started": last["rekeys_started"], "child_rekeys_completed": last["rekeys_completed"],
    "ike_sas_replaced_seen": sum(r["ike_replaced"] for r in rows), "child_failures": last["child_failures"],
    "trends": trends, "problems": problems,
}
json.dump(summary, open(f"{out}/summary.json", "w"), indent=2)

# soak.svg: one panel per metric, time in minutes, the warm-up shaded.
metrics = [("rss_mib", "RSS (MiB)"), ("fds", "open file descriptors"), ("spi_in_use", "SPIs in use"),
           ("active_sas", "CHILD SAs"), ("spi_minus_sas", "SPIs minus SAs"), ("queue_depth", "negotiation queue depth"),
           ("ike_replaced", "IKE SAs replaced per sample"), ("rekeys_started", "CHILD rekeys started (total)")]
W, H, L, PAD = 420, 150, 60, 30
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{(len(metrics) + 1) // 2 * H + 40}" '
       'font-family="sans-serif" font-size="11">',
       f'<text x="10" y="20" font-size="14">spigot soak: {n} road warriors, {last["t"] / 60:.0f} min, '
       f'{"FAIL" if problems else "flat"}</text>']
tmax = max(r["t"] for r in rows) or 1
for i, (m, title) in enumerate(metrics):
    ox, oy = (i % 2) * W, 40 + (i // 2) * H
    ys = [r[m] for r in rows]
    lo, hi = min(0.0, min(ys)), max(ys) * 1.1 or 1
    px = lambda t: ox + L + (W - L - 10) * t / tmax
    py = lambda v: oy + H - PAD - (H - PAD - 20) * (v - lo) / (hi - lo)
    svg.append(f'<rect x="{px(0):.1f}" y="{oy + 20}" width="{px(min(warmup, tmax)) - px(0):.1f}" height="{H - PAD - 20}" fill="#eee"/>')
    svg.append(f'<text x="{ox + L}" y="{oy + 14}">{title}</text>')
    svg.append(f'<line x1="{ox + L}" y1="{py(lo):.1f}" x2="{ox + W - 10}" y2="{py(lo):.1f}" stroke="#888"/>')
    svg.append(f'<line x1="{ox + L}" y1="{oy + 20}" x2="{ox + L}" y2="{py(lo):.1f}" stroke="#888"/>')
    for v in (lo, hi):
        svg.append(f'<text x="{ox + L - 4}" y="{py(v) + 4:.1f}" text-anchor="end">{v:.4g}</text>')
    svg.append(f'<text x="{ox + W - 10}" y="{oy + H - 12}" text-anchor="end">{tmax / 60:.0f} min</text>')
    pts = " ".join(f"{px(r['t']):.1f},{py(r[m]):.1f}" for r in rows)
    svg.append(f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{pts}"/>')
svg.append("</svg>")
open(f"{out}/soak.svg", "w").write("\n".join(svg))

print(f"soak: {n} road warriors for {last['t']:.0f} s ({len(rows)} samples, warm-up {warmup:.0f} s)")
print(f"  established {lg.get('established')}/{n}, failed {lg.get('failed')}; echoes {tr.get('received')}/{tr.get('sent')}")
print(f"  CHILD rekeys started {last['rekeys_started']:.0f}, completed {last['rekeys_completed']:.0f}; "
      f"IKE SAs replaced (seen) {summary['ike_sas_replaced_seen']:.0f}; CHILD failures {last['child_failures']:.0f}")
for m, t in trends.items():
    print(f"  {m:<14} min {t['min']:<9g} max {t['max']:<9g} mean {t['mean']:<9g} fit rise {t['fit_rise']:+g}, "
          f"last-first third {t['last_minus_first_third']:+g} (tolerance {t['tolerance']:g})")
print(f"  results: {out}/samples.csv, summary.json, soak.svg")
for p in problems:
    print("FAIL: " + p)
sys.exit(1 if problems else 0)
PY
