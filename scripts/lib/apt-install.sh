#!/usr/bin/env bash
# apt_install TAG PACKAGE...: installs Debian packages for a setup or check script, as
# root or through sudo (an unprivileged user without sudo gets the exact command to run
# instead, and the calling script fails). A temporary policy-rc.d keeps apt from
# starting the packages' services (redis-server, prometheus): the scripts and tests
# start their own, on loopback, when they need them.
#
# Sourced, not run: `. "$(dirname "$0")/../lib/apt-install.sh"; apt_install 10-redis redis-server`.

apt_install() {
  local tag="$1"
  shift
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo="sudo"
    else
      echo "$tag: missing $*; as root run: apt-get install -y $*" >&2
      return 1
    fi
  fi
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# Installed by codemode scripts/lib/apt-install.sh while apt runs.\nexit 101\n' \
      | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    made_policy=1
  fi
  echo "$tag: installing $* from Debian's packages"
  local status=0
  {
    $sudo apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  } || status=$?
  if [ "$made_policy" = 1 ]; then $sudo rm -f "$policy"; fi
  return "$status"
}
