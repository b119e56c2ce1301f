#!/usr/bin/env bash
# Installs every Debian package spigot needs to build, test, fuzz and benchmark. Idempotent:
# does nothing when all are present. Run as root on Debian 12.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libipsec-mb-dev libssl-dev libtomlplusplus-dev libcli11-dev nlohmann-json3-dev libspdlog-dev
  libgtest-dev googletest libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev llvm
  python3 iproute2 iputils-ping procps iperf3
  # strongSwan 5.9.8, the interoperability peer (../shared/notes/strongswan-peer.md)
  strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins
  libstrongswan-extra-plugins
  # strongSwan's eap-mschapv2 plugin: the EAP road warriors of tests/roadwarrior_eap.sh
  libcharon-extauth-plugins
  # FreeRADIUS 3: the RADIUS servers of tests/roadwarrior_eap_radius.sh and bench/storm.sh
  freeradius
  # strongSwan's pki and OpenSSL's CLI: the certificates of the certificate tests
  strongswan-pki openssl
  # cpp-httplib: HTTP parsing and answers of the Prometheus endpoint (global.metrics_listen,
  # control/metrics_server.h)
  libcpp-httplib-dev
  # Prometheus and promtool: tests/metrics_prometheus.sh scrapes a spigot with a real server
  # and checks the exposition and examples/prometheus/spigot.rules.yml
  prometheus
  # nftables: tests/ike_rekey_collision.sh holds a gateway's IKE datagrams to cross two rekeys
  nftables
  # conntrack: tests/nat_rebinding.sh flushes a NAT's mappings (the NAT "reboots")
  conntrack
  # SQLite 3: the virtual IP lease database (global.lease_db, gateway/lease_store.h)
  libsqlite3-dev
  # libsystemd: sd_notify(3) readiness, STATUS= and the watchdog under systemd (io/systemd.h);
  # systemd-analyze (package systemd) checks the unit in tests
  libsystemd-dev systemd
  # man-db: tests/manpage.sh renders spigot(8) with `man --warnings`
  man-db
  # libcap: the daemon gives up root keeping only CAP_NET_ADMIN (global.user, io/privileges.h)
  libcap-dev
  # wireguard-go and wireguard-tools: bench/tunnel.sh measures spigot beside Debian's userspace
  # WireGuard in the same run (issue 14)
  wireguard-go wireguard-tools
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
