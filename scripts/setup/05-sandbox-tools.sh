#!/usr/bin/env bash
# Makes the tools process sandboxes are confined with available: bubblewrap (the
# namespaces), util-linux's unshare/nsenter/setpriv (present on Debian) and libseccomp
# (the syscall filter, loaded through ctypes), and uidmap's newuidmap/newgidmap (an
# unprivileged server maps its subordinate ids for its sandboxes). Without them the server refuses to
# start process sandboxes unless --insecure-process-sandbox is given.
#
# Idempotent. Installing needs root (or sudo); an unprivileged user without sudo gets
# the exact apt-get command to run instead.
set -euo pipefail

missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2' || missing+=(libseccomp2)
command -v newuidmap >/dev/null 2>&1 && command -v newgidmap >/dev/null 2>&1 || missing+=(uidmap)
for tool in unshare nsenter setpriv; do
  command -v "$tool" >/dev/null 2>&1 || { missing+=(util-linux); break; }
done

if [ "${#missing[@]}" = 0 ]; then
  echo "05-sandbox-tools: $(bwrap --version) and libseccomp present"
  exit 0
fi

. "$(dirname "$0")/../lib/apt-install.sh"
apt_install 05-sandbox-tools "${missing[@]}"
echo "05-sandbox-tools: $(bwrap --version) installed"
