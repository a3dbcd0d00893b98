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

. "$(dirname "$0")/../lib/apt-install.sh"
apt_install 10-redis redis-server
redis-server --version
