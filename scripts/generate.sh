#!/usr/bin/env bash
# Regenerates every checked-in artifact derived from protos/ for Python. CI runs
# this and fails when `git diff` shows a change, so generated code is never
# edited by hand. Two outputs from one protoc run:
#
# * clients/python/src/codemode/v1: the public API only, shipped by the
#   codemode-client distribution (the internal agent API is not a client's);
# * gen/python/codemode_protos: every proto (public and the internal
#   codemode.sandbox.v1), the server's and the agent's own generated package
#   (distribution codemode-protos), so they never import the client's. Its
#   imports are rewritten from `codemode.` to `codemode_protos.`, as
#   temporalio/sdk-python rewrites its generated `temporal.api` imports. Both
#   register the same descriptors (same file names, same bytes), so a process
#   that imports both gets one set of message classes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
BIN="$(dirname "$PY")"

client=clients/python/src
internal=gen/python
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
protos=$(cd protos && find codemode -name '*.proto' | sort)
# protoc-gen-mypy_grpc must be on PATH for --mypy_grpc_out.
PATH="$BIN:$PATH" "$PY" -m grpc_tools.protoc -I protos \
  --python_out="$tmp" --pyi_out="$tmp" --grpc_python_out="$tmp" \
  --mypy_grpc_out="$tmp" $protos

docstring() { printf '"""Generated from protos/%s by scripts/generate.sh; do not edit."""\n' "$1" > "$2/__init__.py"; }

rm -rf "$client/codemode/v1" "$client/codemode/sandbox"
cp -r "$tmp/codemode/v1" "$client/codemode/v1"
docstring codemode/v1 "$client/codemode/v1"
touch "$client/codemode/py.typed"

rm -rf "$internal/codemode_protos/v1" "$internal/codemode_protos/sandbox"
mkdir -p "$internal/codemode_protos/sandbox"
cp -r "$tmp/codemode/v1" "$internal/codemode_protos/v1"
cp -r "$tmp/codemode/sandbox/v1" "$internal/codemode_protos/sandbox/v1"
docstring codemode "$internal/codemode_protos"
docstring codemode/v1 "$internal/codemode_protos/v1"
docstring codemode/sandbox "$internal/codemode_protos/sandbox"
docstring codemode/sandbox/v1 "$internal/codemode_protos/sandbox/v1"
touch "$internal/codemode_protos/py.typed"
# Rewrite module paths only: import lines, the module-name argument of the
# descriptor builder, and (in .pyi stubs, which hold no serialized descriptors)
# qualified type names. gRPC method paths and descriptor bytes keep `codemode.`.
find "$internal/codemode_protos" -name '*.py' -print0 | xargs -0 sed -i -E \
  -e 's/^(from|import) codemode\.(v1|sandbox)\b/\1 codemode_protos.\2/' \
  -e "s/'codemode\.((sandbox\.)?v1\.[a-z_]+_pb2)'/'codemode_protos.\1'/"
find "$internal/codemode_protos" -name '*.pyi' -print0 | xargs -0 sed -i -E \
  -e 's/\bcodemode\.(v1|sandbox)\b/codemode_protos.\1/g'

"$PY" scripts/generate_python_client.py
