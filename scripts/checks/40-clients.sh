#!/usr/bin/env bash
# The Go, TypeScript and Java clients: regenerate the checked-in Go/TS code and
# fail on any difference, build each client, then run the conformance suite
# (conformance/cases.json) in all four languages against one real server.
# Needs scripts/setup/40-toolchains.sh to have run (test-all.sh runs it first).
set -uo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
GENERATED=(clients/go/gen clients/typescript/src/gen)
failed=0
fail() { echo "40-clients: $*" >&2; failed=1; }

echo "--- regenerate Go and TypeScript code ---"
if bash scripts/generate-clients.sh; then
  changes="$(git status --porcelain --untracked-files=all -- "${GENERATED[@]}")"
  if [ -n "$changes" ]; then
    fail "generated client code differs from what is checked in (run 'bash scripts/generate-clients.sh' and commit):"
    echo "$changes"
  else
    echo "generated client code is up to date"
  fi
else
  fail "scripts/generate-clients.sh failed"
fi

echo "--- build Go client ---"
{ go -C clients/go vet ./... && go -C clients/go build ./...; } || fail "Go client does not build"
unformatted="$(cd clients/go && gofmt -l $(git ls-files '*.go' | grep -v '^gen/'))"
[ -z "$unformatted" ] || fail "gofmt would change: $unformatted"

echo "--- build TypeScript client ---"
npm --prefix clients/typescript run --silent build || fail "TypeScript client does not build (tsc)"

# The Java client is built and tested by the one Maven run inside run-all.sh.
# Over mTLS, so every client's TLS and client-certificate options are exercised:
# each runner runs every case as a token principal and as an mTLS principal
# (certificate, no token), plus the cross-tenant cases (conformance/README.md).
# Plaintext is covered by the README examples below.
echo "--- conformance (python, go, typescript, java; token and mTLS principals) against one mTLS server ---"
"$PY" conformance/with_server.py --mtls bash conformance/run-all.sh || fail "conformance suite failed"

echo "--- README examples (go, typescript, java) against a plaintext server ---"
"$PY" conformance/with_server.py "$PY" conformance/readme_examples.py || fail "a client README example does not work as written"

[ "$failed" = 0 ] && echo "40-clients: generated code fresh, clients build, conformance passes in every language"
exit "$failed"
