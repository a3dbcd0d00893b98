#!/usr/bin/env bash
# Makes sure an nginx binary is available for the load-balancer tests (tests/lb/):
# they run nginx with grpc_pass in front of real codemode instances.
#
# Only installs the package: the tests start (and stop) their own nginx processes
# (`nginx -p TMPDIR -c TMPDIR/nginx.conf -g 'daemon off;'`) on free loopback ports,
# so the system nginx service must never be left running. Debian's postinst would
# start it; apt_install's temporary policy-rc.d denies all service starts, and a
# service that was running before is left alone.
#
# Debian's `nginx` package (bookworm: 1.22) has the HTTP/2 and gRPC proxy modules
# built in; nginx-light only adds the echo module on top of it, so plain nginx is
# the smaller install. Idempotent: an nginx already on PATH is kept.
set -euo pipefail

if command -v nginx >/dev/null 2>&1; then
  echo "15-nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //') already installed"
  exit 0
fi

. "$(dirname "$0")/../lib/apt-install.sh"
apt_install 15-nginx nginx
echo "15-nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //') installed"
