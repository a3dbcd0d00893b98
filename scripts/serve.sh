#!/usr/bin/env bash
# Installs codemode into .venv (skipped when already up to date) and starts the
# service on the embedded default: process sandboxes, file storage under
# ~/.local/share/codemode, listening on 127.0.0.1:50051. Extra arguments go to
# `codemode serve` (for example --listen 127.0.0.1:6000 or --warm-pool-size 4;
# `.venv/bin/codemode serve --help` lists them all).
#
# Only the Python setup and the sandbox tools (bubblewrap) run here: Redis and
# Docker are optional backends that the embedded default does not need. The
# Python setup installs what serving needs, not the dev/bench extras (pytest,
# buf, Jupyter) that scripts/test-all.sh adds; the first run takes about a
# minute and shows pip's progress.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup/00-python.sh --serve >&2
bash scripts/setup/05-sandbox-tools.sh >&2
exec .venv/bin/codemode serve "$@"
