#!/usr/bin/env bash
# The Prometheus endpoint (global.metrics_listen) scraped by a real Prometheus (Debian's
# `prometheus`): two spigots in namespaces, a tunnel up, ESP with an unknown SPI sent to b; then
# Prometheus' HTTP API (/api/v1/query) must return b's SA gauge and the unknown_spi drop counter
# with the values `spigot stats` has. `promtool check metrics` passes on the exposition,
# `promtool check rules` / `test rules` on examples/prometheus/, and every query of
# examples/grafana/spigot.json runs. Last, bad clients (1,000 connections at once, slow
# clients holding connections, huge headers) hammer the endpoint while a new negotiation runs:
# it must still complete, and the endpoint must count the refusals and serve again after.
# usage: metrics_prometheus.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16
source "$HERE/lib.sh"
for tool in prometheus promtool; do
  command -v $tool >/dev/null || fail "$tool is not installed (scripts/install-deps.sh)"
done

METRICS=192.0.2.2:9187
PROM=127.0.0.1:9090  # Prometheus' own API, inside namespace b

netns_setup
spigot_config a "$IKE" "$ESP"
spigot_config b "$IKE" "$ESP"
sed -i "s/^\[global\]$/&\nmetrics_listen = \"$METRICS\"/" "$WORK/b.toml"
spigot_start a
spigot_start b

# in_b CMD...: CMD inside namespace b (where spigot b, its endpoint and Prometheus are).
in_b() { ip netns exec "${NS}b" "$@"; }
scrape() { in_b curl -sS --max-time 5 "http://$METRICS/metrics"; }
until_ok 10 scrape || fail "no answer on http://$METRICS/metrics"

# Prometheus: a fresh storage dir, scraping b every second.
mkdir -p "$WORK/prom"
cat >"$WORK/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $ROOT/examples/prometheus/spigot.rules.yml
scrape_configs:
  - job_name: spigot
    static_configs:
      - targets: ["$METRICS"]
YML
in_b prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prom" \
  --web.listen-address="$PROM" >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)

# query PROMQL: the value of the single series it returns ("" if none).
query() {
  in_b python3 - "$PROM" "$1" <<'PY'
import json, sys, urllib.parse, urllib.request
url = "http://%s/api/v1/query?%s" % (sys.argv[1], urllib.parse.urlencode({"query": sys.argv[2]}))
r = json.load(urllib.request.urlopen(url, timeout=5))
assert r["status"] == "success", r
res = r["data"]["result"]
print(res[0]["value"][1] if len(res) == 1 else "")
PY
}
bstat() {  # bstat PYTHON_EXPR over b's `spigot stats --json` as s
  sctl b stats --json | python3 -c "import json,sys; s=json.load(sys.stdin); print($1)"
}

sctl a initiate peer >/dev/null
established() { [ "$(bstat 's["active_sas"]')" = 1 ]; }
until_ok 10 established || fail "the tunnel did not come up"
log "ok: tunnel up"

# ESP-in-UDP to b with an SPI b never gave out: dropped and counted as unknown_spi.
ip netns exec "${NS}a" python3 - <<'PY'
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for seq in range(1, 6):
    s.sendto(struct.pack("!II", 0xDEAD5EED, seq) + bytes(48), ("192.0.2.2", 4500))
PY
want_drops=5
drops_counted() { [ "$(bstat 's["packets_dropped"]["unknown_spi"]')" = "$want_drops" ]; }
until_ok 10 drops_counted || fail "spigot b counted $(bstat 's["packets_dropped"]["unknown_spi"]') unknown_spi drops, not $want_drops"

# Prometheus has scraped the same figures.
prom_sas() { [ "$(query 'spigot_child_sas{job="spigot"}')" = 1 ]; }
prom_drops() { [ "$(query 'spigot_packets_dropped_total{job="spigot",reason="unknown_spi"}')" = "$want_drops" ]; }
until_ok 30 prom_sas || fail "Prometheus: spigot_child_sas is '$(query 'spigot_child_sas{job="spigot"}')', not 1"
until_ok 10 prom_drops ||
  fail "Prometheus: unknown_spi drops are '$(query 'spigot_packets_dropped_total{reason="unknown_spi"}')', not $want_drops"
[ "$(query 'up{job="spigot"}')" = 1 ] || fail "Prometheus: the spigot target is not up"
[ "$(query 'spigot_ike_sas{state="established"}')" = 1 ] || fail "Prometheus: spigot_ike_sas{state=\"established\"} is not 1"
[ "$(query 'spigot_connection_child_sas{connection="peer"}')" = 1 ] || fail "Prometheus: per-connection CHILD SAs are not 1"
[ "$(query 'spigot_ike_negotiation_seconds_count')" = 1 ] || fail "Prometheus: one negotiation should be in the latency histogram"
log "ok: Prometheus reads spigot_child_sas 1 and spigot_packets_dropped_total{reason=\"unknown_spi\"} $want_drops"

# The exposition passes promtool's linter; the shipped rules load and their unit tests pass.
scrape >"$WORK/metrics.txt"
promtool check metrics <"$WORK/metrics.txt" >"$WORK/promtool-metrics.log" 2>&1 ||
  { cat "$WORK/promtool-metrics.log"; fail "promtool check metrics found problems"; }
promtool check rules "$ROOT/examples/prometheus/spigot.rules.yml" >/dev/null || fail "promtool check rules failed"
(cd "$ROOT/examples/prometheus" && promtool test rules spigot.rules.test.yml >/dev/null) || fail "promtool test rules failed"
log "ok: promtool check metrics, check rules, test rules"

# Every metric the rules and the dashboard name is one spigot exports (src/spigot/control/
# metrics.cc), and every dashboard query is valid PromQL against this Prometheus.
for name in $(grep -ohE 'spigot_[a-z_]+' "$ROOT/examples/prometheus/spigot.rules.yml" "$ROOT/examples/grafana/spigot.json" | sort -u); do
  base=$(sed -E 's/_(bucket|sum|count)$//' <<<"$name")
  grep -q "\"$base\"" "$ROOT/src/spigot/control/metrics.cc" || fail "$name (rules or dashboard) is not a metric spigot exports"
done
python3 -c 'import json,sys; [print(t["expr"].replace("$instance", ".*")) for p in json.load(open(sys.argv[1]))["panels"] for t in p["targets"]]' \
  "$ROOT/examples/grafana/spigot.json" >"$WORK/dashboard.queries"
in_b python3 - "$PROM" "$WORK/dashboard.queries" <<'PY' || fail "a dashboard query does not run"
import json, sys, urllib.error, urllib.parse, urllib.request
for q in open(sys.argv[2]).read().splitlines():
    url = "http://%s/api/v1/query?%s" % (sys.argv[1], urllib.parse.urlencode({"query": q}))
    try:
        r = json.load(urllib.request.urlopen(url, timeout=5))
    except urllib.error.HTTPError as e:
        sys.exit("dashboard query %r: %s" % (q, e.read().decode()))
    if r["status"] != "success":
        sys.exit("dashboard query %r: %s" % (q, r))
PY
log "ok: $(wc -l <"$WORK/dashboard.queries") dashboard queries run"

# Bad clients from namespace a while a new negotiation runs: 1,000 connections at once and 20
# slow clients trickling a request (held past the 3 s deadline), then 20 requests with a
# megabyte of headers each.
ip netns exec "${NS}a" python3 - "$METRICS" >"$WORK/abuse.log" 2>&1 <<'PY' &
import resource, socket, sys, threading, time
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
host, port = sys.argv[1].split(":")
addr = (host, int(port))
held = []
def flood():
    for _ in range(1000):
        try:
            s = socket.create_connection(addr, timeout=2)
            held.append(s)
        except OSError as e:
            print("connect:", e)
def slow():
    socks = []
    for _ in range(20):
        try:
            socks.append(socket.create_connection(addr, timeout=2))
        except OSError:
            pass
    for i in range(8):
        for s in socks:
            try:
                s.send(b"G" if i == 0 else b"E")
            except OSError:
                pass
        time.sleep(0.5)
def huge():
    for _ in range(20):
        try:
            s = socket.create_connection(addr, timeout=2)
            s.sendall(b"GET /metrics HTTP/1.1\r\n" + b"X-Big: " + b"z" * (1 << 20) + b"\r\n\r\n")
            s.close()
        except OSError:
            pass
start = time.time()
ts = [threading.Thread(target=f) for f in (flood, slow)]
for t in ts: t.start()
for t in ts: t.join()
print("flood and slow clients done after %.1f s, %d connections held" % (time.time() - start, len(held)))
time.sleep(3.5)  # the connections the server took are cut at their deadline
huge()
PY
abuse=$!
PIDS+=($abuse)
sleep 0.5
sctl a terminate peer >/dev/null
gone() { [ "$(bstat 's["ike_sas"]')" = 0 ]; }
until_ok 10 gone || fail "the tunnel was not deleted"
start=$(date +%s.%N)
sctl a initiate peer >/dev/null
until_ok 10 established || fail "a negotiation started during the endpoint's abuse did not complete within 10 s"
took=$(python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$start" "$(date +%s.%N)")
log "ok: negotiation during the abuse completed in ${took} s"
wait "$abuse" || true
refused=$(scrape | awk '$1 == "spigot_metrics_connections_refused_total" {print $2}')
bad=$(scrape | awk '$1 == "spigot_metrics_bad_requests_total" {print $2}')
timeouts=$(scrape | awk '$1 == "spigot_metrics_timeouts_total" {print $2}')
cat "$WORK/abuse.log"
[ "${refused:-0}" -gt 0 ] || fail "1,000 connections at once: none refused (the bound did not hold)"
[ "${bad:-0}" -gt 0 ] || fail "huge headers were not answered as bad requests"
[ "${timeouts:-0}" -gt 0 ] || fail "slow clients were not cut at the deadline"
until_ok 10 scrape || fail "the endpoint does not serve after the abuse"
log "ok: endpoint refused $refused connections, answered $bad bad requests, cut $timeouts slow clients, serves again"
echo "PASS: Prometheus scrapes spigot; promtool passes; bad clients do not stall negotiations"
