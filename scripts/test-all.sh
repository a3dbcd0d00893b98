#!/usr/bin/env bash
# Installs everything and runs the whole test suite: the one command CI runs
# (through .ci/run) and the README tells developers to run.
#
# Order: every scripts/setup/*.sh (lexical; a failure stops the run, since
# nothing after it could be trusted), then the proto checks, the
# regenerate-and-diff check, pytest over tests/, and every scripts/checks/*.sh.
# Checks keep going after a failure so one run reports every problem; the
# summary at the end lists each step and the script exits non-zero if any
# step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
PY="$ROOT/.venv/bin/python"
BUF="$ROOT/.venv/bin/buf"
# The per-test timeout lives in one place, pyproject.toml ([tool.pytest.ini_options]).
PYTEST_RUN_TIMEOUT="${PYTEST_RUN_TIMEOUT:-2700}"  # whole pytest run, seconds
CHECK_TIMEOUT="${CHECK_TIMEOUT:-1800}"            # each scripts/checks/*.sh, seconds
# The caps keep a hung step from eating CI's 90 minutes silently: the step
# fails, the summary still prints.
# Directories produced by scripts/generate.sh; any change there after
# regenerating means checked-in code is stale or was edited by hand.
GENERATED_DIRS=(clients/python/src/codemode/v1
  clients/python/src/codemode/sync.py clients/python/src/codemode/_reasons.py gen/python/codemode_protos)

LOG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/codemode-test-all.XXXXXX")"
trap 'rm -rf "$LOG_DIR"' EXIT

declare -a STEP_NAMES=() STEP_RESULTS=() STEP_SECONDS=()
FAILED=0
PYTEST_SUMMARY=""

# Each step's banner carries the time it starts, so a slow step shows in a live log.
banner() { printf '\n=== %s  [%s] ===\n' "$*" "$(date -u +%H:%M:%SZ)"; }

# record NAME RC SECONDS
record() {
  STEP_NAMES+=("$1"); STEP_SECONDS+=("$3")
  if [ "$2" = 0 ]; then STEP_RESULTS+=("ok"); else STEP_RESULTS+=("FAILED (exit $2)"); FAILED=1; fi
}

# step NAME COMMAND...: runs the command, records its result, never exits.
step() {
  local name="$1"; shift
  banner "$name"
  local start=$SECONDS rc=0
  "$@" || rc=$?
  record "$name" "$rc" $((SECONDS - start))
  return "$rc"
}

# count WORD: the number before WORD in pytest's closing line (0 if absent).
count() { grep -oE "[0-9]+ $1\b" <<<"$PYTEST_SUMMARY" | head -n1 | cut -d' ' -f1 | grep . || echo 0; }

summary() {
  banner "summary"
  local i
  for i in "${!STEP_NAMES[@]}"; do
    printf '  %-44s %-16s %5ss\n' "${STEP_NAMES[$i]}" "${STEP_RESULTS[$i]}" "${STEP_SECONDS[$i]}"
  done
  if [ "$FAILED" = 0 ]; then echo "test-all: all steps passed"; else echo "test-all: FAILED (see the steps above)"; fi
  if [ -n "$PYTEST_SUMMARY" ]; then
    # pytest's own closing line, then the same counts in the plain
    # "N passed, N failed, N skipped" form (errors count as failures).
    printf 'pytest summary: %s\n' "$PYTEST_SUMMARY"
    printf 'pytest: %d passed, %d failed, %d skipped\n' "$(count passed)" \
      "$(( $(count failed) + $(count error) + $(count errors) ))" "$(count skipped)"
  fi
}

# --- 1. setup -------------------------------------------------------------
for script in scripts/setup/*.sh; do
  if ! step "setup $(basename "$script")" bash "$script"; then
    echo "test-all: setup step $script failed; not running the checks" >&2
    summary
    exit 1
  fi
done

# --- 2. proto checks ------------------------------------------------------
step "buf format" "$BUF" format -d --exit-code
step "buf lint" "$BUF" lint
step "buf breaking (vs protos/baseline)" "$BUF" breaking protos --against protos/baseline/image.binpb

# --- 3. generated code is up to date --------------------------------------
# Fingerprint the whole work tree as well as the named directories, so a
# generator that writes somewhere new is caught too.
tree_fingerprint() {
  { git status --porcelain=v1 --untracked-files=all; git diff --binary HEAD;
    git ls-files --others --exclude-standard -z | xargs -0 -r sha256sum; } | sha256sum
}
check_generated() {
  local before after changes
  before="$(tree_fingerprint)"
  PYTHON="$PY" bash scripts/generate.sh || return 1
  after="$(tree_fingerprint)"
  changes="$(git status --porcelain --untracked-files=all -- "${GENERATED_DIRS[@]}")"
  if [ -n "$changes" ]; then
    echo "generated code differs from what is checked in (run 'bash scripts/generate.sh' and commit):"
    echo "$changes"
    git --no-pager diff --stat -- "${GENERATED_DIRS[@]}"
    return 1
  fi
  if [ "$before" != "$after" ]; then
    echo "scripts/generate.sh changed files outside ${GENERATED_DIRS[*]}:"
    git status --porcelain --untracked-files=all
    return 1
  fi
  echo "generated code is up to date"
}
step "generated code up to date" check_generated

step "lint (ruff, mypy)" bash scripts/lint.sh

# --- 4. pytest --------------------------------------------------------------
run_pytest() {
  local rc=0
  timeout --kill-after=30 "$PYTEST_RUN_TIMEOUT" \
    "$PY" -m pytest tests -p no:cacheprovider -ra --durations=25 \
    2>&1 | tee "$LOG_DIR/pytest.log" || rc=$?
  PYTEST_SUMMARY="$(grep -E '^=+ .*( in [0-9.]+s).* =+$' "$LOG_DIR/pytest.log" | tail -n 1 | sed -E 's/^=+ //; s/ =+$//')"
  if [ "$rc" = 5 ]; then
    echo "test-all: pytest collected no tests (exit 5); that is a failure" >&2
  elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "test-all: pytest did not finish within ${PYTEST_RUN_TIMEOUT}s and was stopped" >&2
  fi
  return "$rc"
}
step "pytest tests/" run_pytest

# --- 5. extra checks added by each component ------------------------------
shopt -s nullglob
for script in scripts/checks/*.sh; do
  step "check $(basename "$script")" timeout --kill-after=30 "$CHECK_TIMEOUT" bash "$script"
done
shopt -u nullglob

summary
exit "$FAILED"
