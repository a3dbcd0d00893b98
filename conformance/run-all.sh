#!/usr/bin/env bash
# Runs every client's conformance runner against the server named by
# CODEMODE_CONFORMANCE_TARGET and the rest (start one with conformance/with_server.py).
# Each runner runs every case as the token principal and, when the server has a
# client CA (--mtls), again as the mTLS principal (conformance/README.md).
# Every language runs even after a failure, so one run shows which clients
# disagree; the exit status is non-zero if any runner failed.
#
#   .venv/bin/python conformance/with_server.py [--mtls] bash conformance/run-all.sh [python go typescript java readme]
#
# "readme" runs each client README's example, which connects in plaintext: give it a
# server started without --mtls.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${CODEMODE_CONFORMANCE_TARGET:?start this through conformance/with_server.py}"
PY="${PYTHON:-.venv/bin/python}"
languages=("$@")
[ "${#languages[@]}" -gt 0 ] || languages=(python go typescript java)

run_python() { "$PY" -m pytest tests/conformance -p no:cacheprovider -q; }
run_go() { go -C clients/go test -count=1 -v .; }
run_typescript() { npm --prefix clients/typescript test; }
run_readme() { "$PY" conformance/readme_examples.py; }  # each client README's example, as written
run_java() { bash scripts/mvn.sh -q -f clients/java/pom.xml test && cat clients/java/target/surefire-reports/*.txt; }

passed=0 failed=0 failures=""
for language in "${languages[@]}"; do
  printf '\n--- conformance: %s ---\n' "$language"
  if "run_$language"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1)); failures="$failures $language"
  fi
done
echo
[ "$failed" = 0 ] || echo "conformance failed in:$failures"
echo "conformance runs: $passed passed, $failed failed"
[ "$failed" = 0 ]
