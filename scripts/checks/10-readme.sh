#!/usr/bin/env bash
# Keeps README.md honest: every relative link points at something that exists,
# the two set-up commands and the CLI commands it shows are real, and .ci/run
# still runs exactly the README's test command.
set -euo pipefail
cd "$(dirname "$0")/../.."
failed=0
fail() { echo "README check: $*" >&2; failed=1; }

# Relative markdown links: ](path) or ](path#anchor), skipping URLs and anchors.
while IFS= read -r target; do
  path="${target%%#*}"
  [ -z "$path" ] && continue
  [ -e "$path" ] || fail "README.md links to '$target', which does not exist"
done < <(grep -oE '\]\([^)]+\)' README.md | sed -E 's/^\]\(//; s/\)$//' | grep -vE '^(https?:|mailto:|#)')

for command in "bash scripts/serve.sh" "bash scripts/test-all.sh" ".venv/bin/python bench/run.py"; do
  grep -qF "$command" README.md || fail "README.md no longer shows '$command'"
  script="${command##* }"
  [ -f "$script" ] || fail "'$command' names $script, which does not exist"
done
grep -qxF "bash scripts/test-all.sh" .ci/run || fail ".ci/run does not run 'bash scripts/test-all.sh'"

# Every `codemode COMMAND ACTION` the README shows (its tour of the shell included).
for sub in serve run "sessions create" "sessions list" "sessions reset" "sessions delete" \
           "skills create" "artifacts put" "deps add"; do
  # shellcheck disable=SC2086 # word splitting of "sessions list" is intended
  .venv/bin/codemode $sub --help >/dev/null 2>&1 || fail "README.md shows 'codemode $sub', which the CLI does not accept"
done

[ "$failed" = 0 ] && echo "README.md: links, commands and CLI usage check out"
exit "$failed"
