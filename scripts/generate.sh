#!/usr/bin/env bash
# Regenerates every checked-in artifact derived from protos/: the Python
# stubs (with .pyi and typed async stubs) used by the client, the server and
# the sandbox agent. CI runs this and fails when `git diff` shows a change,
# so generated code is never edited by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
BIN="$(dirname "$PY")"

out=clients/python/src
rm -rf "$out/codemode/v1" "$out/codemode/sandbox"
mkdir -p "$out"
protos=$(cd protos && find codemode -name '*.proto' | sort)
# protoc-gen-mypy_grpc must be on PATH for --mypy_grpc_out.
PATH="$BIN:$PATH" "$PY" -m grpc_tools.protoc -I protos \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  --mypy_grpc_out="$out" $protos
for d in codemode/v1 codemode/sandbox codemode/sandbox/v1; do
  printf '"""Generated from protos/%s by scripts/generate.sh; do not edit."""\n' "$d" > "$out/$d/__init__.py"
done
touch "$out/codemode/py.typed"
# The client modules derived from the above and from aio.py (sync.py, _reasons.py).
"$PY" scripts/generate_python_client.py
