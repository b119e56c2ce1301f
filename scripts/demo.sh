#!/usr/bin/env bash
# spigot's main job: installs dependencies, builds the Release tree, measures the ESP data path
# against the bare intel-ipsec-mb ceiling, then runs two gateways in network namespaces
# (configs in examples/) that negotiate IKEv2 and a CHILD SA, pings from one site to the other
# across the tunnel, and prints `spigot sas` and `spigot stats` from both. Cleans up after
# itself.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian's tools first (a python3 shim earlier in PATH costs 0.6 CPU-seconds per call here).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

bash scripts/install-deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_UNITY_BUILD=ON -DCMAKE_UNITY_BUILD_BATCH_SIZE=16 \
  -DSPIGOT_BENCH=ON >/dev/null
ninja -C build/release -j "${JOBS:-2}" spigot spigot_bench
SPIGOT=$PWD/build/release/spigot

echo "== ESP seal/open vs raw AES-GCM-128 (one core)"
bash bench/esp.sh build/release

echo
echo "== Two gateways in network namespaces"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del spigot-demo-a 2>/dev/null || true
  ip netns del spigot-demo-b 2>/dev/null || true
}
trap cleanup EXIT
cleanup
mkdir -p /run/spigot-demo
# The examples hold a PSK: spigot refuses a configuration others may read, and git keeps them
# at 0644, so the demo runs private copies.
for s in a b; do install -m 0600 examples/demo-$s.toml /run/spigot-demo/$s.toml; done
ip netns add spigot-demo-a
ip netns add spigot-demo-b
ip link add demo-a type veth peer name demo-b
ip link set demo-a netns spigot-demo-a
ip link set demo-b netns spigot-demo-b
ip -n spigot-demo-a addr add 192.0.2.1/24 dev demo-a
ip -n spigot-demo-b addr add 192.0.2.2/24 dev demo-b
for s in a b; do
  ip -n spigot-demo-$s link set lo up
  ip -n spigot-demo-$s link set demo-$s up
done
ip netns exec spigot-demo-b "$SPIGOT" run -c /run/spigot-demo/b.toml 2>/run/spigot-demo/b.log &
pids+=($!)
sleep 0.5
ip netns exec spigot-demo-a "$SPIGOT" run -c /run/spigot-demo/a.toml 2>/run/spigot-demo/a.log &
pids+=($!)
for _ in $(seq 50); do
  "$SPIGOT" sas --json --socket /run/spigot-demo/b.sock 2>/dev/null | grep -q INSTALLED && break
  sleep 0.1
done
echo "-- ping from site A (198.51.100.1) to site B (203.0.113.1) through the tunnel"
ip netns exec spigot-demo-a ping -c 5 -i 0.2 -I 198.51.100.1 203.0.113.1
for s in a b; do
  echo "-- gateway $s: spigot sas"
  "$SPIGOT" sas --socket /run/spigot-demo/$s.sock
  echo "-- gateway $s: spigot stats"
  "$SPIGOT" stats --socket /run/spigot-demo/$s.sock
done
echo "-- gateway a log"
cat /run/spigot-demo/a.log
