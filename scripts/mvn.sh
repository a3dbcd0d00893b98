#!/usr/bin/env bash
# Runs Maven for scripts and CI logs: batch mode, no colour, and no terminal escapes.
#
# Debian's Maven 3.8 writes ESC[0m resets even with -B -Dstyle.color=never (and
# TERM=dumb or jansi properties do not stop it), so they end up raw in CI logs. Its
# output (stderr merged into stdout) is filtered line by line; Maven's own exit
# status is kept.
set -uo pipefail
mvn -B -Dstyle.color=never "$@" 2>&1 | sed -u 's/\x1b\[[0-9;]*[A-Za-z]//g'
exit "${PIPESTATUS[0]}"
