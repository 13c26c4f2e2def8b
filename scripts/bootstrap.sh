#!/usr/bin/env bash
# Install what ka-exporter's demo and tests need on a fresh Debian machine (run as root):
# Debian packages (keepalived, iproute2, nftables, tcpdump, dbus, prometheus, node_exporter, chromium
# for the page test, user-mode-linux kmod ipvsadm busybox for the LVS lab) and a virtualenv in .venv
# with the package and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

want=(keepalived iproute2 nftables tcpdump dbus prometheus prometheus-node-exporter openssl procps)
if [ "${1:-}" = "--test" ]; then
  want+=(chromium jsonnet)  # jsonnet: the monitoring mixin (tests/test_mixin.py)
  want+=(user-mode-linux kmod ipvsadm busybox)  # the LVS lab: a UML guest with the ip_vs modules
fi
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "bootstrap: need root to apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "bootstrap: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.ka-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[test]'
  touch "$stamp"
fi
