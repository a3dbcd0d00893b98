#!/usr/bin/env bash
# Brings up the one-host deployment (deploy/compose/compose.yaml: two servers,
# Redis with AOF, nginx, Docker sandboxes on the host's engine) under a project
# name of its own, exercises it through nginx on 127.0.0.1 only
# (scripts/checks/compose_check.py says what is checked) and tears it down,
# leaving no container, network, volume or sandbox behind.
#
# Builds what is missing first: the images (scripts/build-server-image.sh, a
# no-op while they match the sources; nginx and Redis through compose's build
# cache) and Docker Compose v2 (deploy/compose/install-compose.sh, a 3-minute
# Go build the first time on a machine). Under CI=true anything missing fails
# the check; elsewhere a missing Compose/Go only skips it, saying so.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
START=$SECONDS

log() { printf '60-compose: %s\n' "$*" >&2; }

bash scripts/build-server-image.sh
if ! bash deploy/compose/install-compose.sh; then
  if [ "${CI:-}" = true ]; then
    log "FAILED: Docker Compose v2 is missing and could not be installed"
    exit 1
  fi
  log "SKIPPED: no Docker Compose v2 (deploy/compose/install-compose.sh could not build it)"
  exit 0
fi

VERSION="$(bash scripts/build-server-image.sh --version)"
PROJECT="codemode-check-$$"
# Short: the servers' unix socket paths live under it (sun_path is 108 bytes).
WORK="$(mktemp -d /tmp/cm-compose.XXXXXX)"
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export CODEMODE_VERSION="$VERSION" CODEMODE_PORT="$PORT" CODEMODE_BIND=127.0.0.1 \
  CODEMODE_SECRETS_DIR="$WORK/secrets" CODEMODE_DATA_ROOT="$WORK/data" \
  CODEMODE_HEALTHCHECK_INTERVAL=2s
COMPOSE=(docker compose --progress quiet -p "$PROJECT" -f "$ROOT/deploy/compose/compose.yaml")
# The sandbox containers' label: a hash of each server's data dir (server/providers/docker_config.py).
instance_label() { printf '%s' "$CODEMODE_DATA_ROOT/$1" | sha256sum | cut -c1-16; }
LABEL_1="$(instance_label server-1)"
LABEL_2="$(instance_label server-2)"

leftovers() {
  {
    docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"
    docker ps -aq --filter "label=dev.codemode.server-instance=$LABEL_1"
    docker ps -aq --filter "label=dev.codemode.server-instance=$LABEL_2"
    docker network ls -q --filter "label=com.docker.compose.project=$PROJECT"
    docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT"
    # Each sandbox's host directory (credentials, socket dir), removed by its server.
    find "$CODEMODE_DATA_ROOT" -mindepth 3 -maxdepth 3 -path '*/docker/*' -regextype posix-extended \
      -regex '.*/[0-9a-f]{12}(-deps)?' 2>/dev/null
  } | sort -u
}

teardown() {
  local rc=$? left
  trap - EXIT
  if [ "$rc" != 0 ]; then
    log "logs of the failed run (last lines per service):"
    "${COMPOSE[@]}" logs --no-color --tail 40 >&2 || true
  fi
  "${COMPOSE[@]}" down --volumes --remove-orphans --timeout 30 >/dev/null 2>&1 || true
  left="$(leftovers)"
  if [ -n "$left" ]; then
    # The servers remove their sandboxes when stopped; anything here is a bug.
    log "FAILED: left behind after 'down': $(echo $left)"
    docker rm -f $(docker ps -aq --filter "label=dev.codemode.server-instance=$LABEL_1") \
      $(docker ps -aq --filter "label=dev.codemode.server-instance=$LABEL_2") >/dev/null 2>&1 || true
    docker network rm $(docker network ls -q --filter "label=com.docker.compose.project=$PROJECT") >/dev/null 2>&1 || true
    docker volume rm $(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT") >/dev/null 2>&1 || true
    rc=1
  fi
  rm -rf "$WORK"
  log "$([ "$rc" = 0 ] && echo passed || echo FAILED) in $((SECONDS - START)) s"
  exit "$rc"
}
trap teardown EXIT

"${COMPOSE[@]}" build redis nginx
bash deploy/compose/init-secrets.sh "$CODEMODE_SECRETS_DIR"
log "starting project $PROJECT (nginx on 127.0.0.1:$PORT)"
up_start=$SECONDS
"${COMPOSE[@]}" up --detach --wait --wait-timeout 150
log "stack healthy after $((SECONDS - up_start)) s"

"$PY" scripts/checks/compose_check.py --target "127.0.0.1:$PORT" \
  --token-file "$CODEMODE_SECRETS_DIR/operator.token" \
  --instance "server-1=$LABEL_1" --instance "server-2=$LABEL_2" \
  --compose "$("$PY" -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "${COMPOSE[@]}")"
