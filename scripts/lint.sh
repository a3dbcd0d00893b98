#!/usr/bin/env bash
# Lint and type checks, run by scripts/test-all.sh (CI) and by developers:
#   ruff     the rule set in pyproject.toml [tool.ruff.lint] over every Python file
#            we write (generated code excluded);
#   mypy     --strict on the public Python client (clients/python, package codemode),
#            and the standard settings of pyproject.toml [tool.mypy] on server/ and
#            sandbox_agent/.
# Zero findings is the bar: any finding fails.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
rc=0
echo "lint: ruff check"
"$PY" -m ruff check . || rc=1
echo "lint: mypy --strict -p codemode (clients/python)"
# The client's own [tool.mypy] (generated stubs relaxed), not the server's settings.
MYPYPATH=clients/python/src "$PY" -m mypy --strict --config-file clients/python/pyproject.toml -p codemode || rc=1
echo "lint: mypy server sandbox_agent"
"$PY" -m mypy server sandbox_agent || rc=1
exit "$rc"
