#!/usr/bin/env bash
# Makes sure a redis-server binary is available for the Redis storage tests.
#
# Only installs the package: tests start (and stop) their own redis-server
# instances on free loopback ports, so no system service may be left running.
# Debian's postinst would start one; a temporary policy-rc.d that denies all
# service starts prevents that.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
  echo "10-redis: $(redis-server --version | cut -d' ' -f1-3) already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "10-redis: redis-server is missing and installing it needs root (apt-get install redis-server)" >&2
    exit 1
  fi
fi

policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# Installed by codemode scripts/setup/10-redis.sh while apt runs.\nexit 101\n' \
    | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
  made_policy=1
fi
cleanup() { if [ "$made_policy" = 1 ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT

echo "10-redis: installing redis-server from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
redis-server --version
