#!/usr/bin/env bash
# A real Prometheus (Debian's package) scrapes a real codemode server's --metrics-listen
# endpoint and its rates are queried through the Prometheus HTTP API on loopback
# (scripts/checks/prometheus_check.py says what is checked). The same Prometheus loads the
# alert rules of deploy/prometheus/codemode-rules.yaml and the check makes two of them fire;
# `promtool check rules` and `promtool test rules` (promtool comes with the same Debian
# package) run on the file as shipped. Fails loudly on any mismatch.
#
# Installs `prometheus` when missing, like scripts/setup/10-redis.sh installs redis-server:
# only the binary is used; a temporary policy-rc.d keeps Debian's postinst from starting
# a system service, and the check runs its own instance in a temp dir.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"

if ! command -v prometheus >/dev/null 2>&1; then
  . scripts/lib/apt-install.sh
  apt_install 50-prometheus prometheus
fi
echo "50-prometheus: $(prometheus --version 2>&1 | head -n1)"

exec "$PY" scripts/checks/prometheus_check.py
