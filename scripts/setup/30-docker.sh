#!/usr/bin/env bash
# Makes a Docker engine and the codemode sandbox image available on a machine
# that has no container registry (CI and the developers' machines): Debian's
# docker.io, a base image made with mmdebstrap + `docker import`, and Python
# packages installed in the image from wheels downloaded on the host.
#
# Idempotent; run as root. Every step is skipped when its result exists.
# Environment knobs:
#   CODEMODE_BASE_IMAGE     base image to build from (default codemode-base:bookworm,
#                           made here; users with a registry can pass python:3.11-slim)
#   CODEMODE_SANDBOX_IMAGE  tag of the sandbox image (default codemode-sandbox:dev); the
#                           image is also tagged <repository>:<project version> (pyproject.toml),
#                           the tag the server image of the same version uses
#   CODEMODE_CACHE_DIR      where the debootstrap tarball is cached (default /var/cache/codemode)
#   CODEMODE_REBUILD=1      rebuild the sandbox image even when it exists
# With --check it changes nothing and exits 0 when the engine answers and the
# sandbox image matches the sources, 3 when the image is missing or stale,
# 4 when no engine answers (tests/docker uses it to find a stale image).
set -euo pipefail
export LC_ALL=C  # source_hash sorts paths; keep the order locale-independent
cd "$(dirname "$0")/../.."
ROOT="$PWD"

BASE_IMAGE="${CODEMODE_BASE_IMAGE:-codemode-base:bookworm}"
SANDBOX_IMAGE="${CODEMODE_SANDBOX_IMAGE:-codemode-sandbox:dev}"
PROJECT_VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/pyproject.toml" | head -n1)"
SANDBOX_REPO="$SANDBOX_IMAGE"
case "${SANDBOX_IMAGE##*/}" in *:*) SANDBOX_REPO="${SANDBOX_IMAGE%:*}" ;; esac  # a tag, not a registry port
VERSIONED_SANDBOX_IMAGE="$SANDBOX_REPO:${PROJECT_VERSION:-dev}"
CACHE_DIR="${CODEMODE_CACHE_DIR:-/var/cache/codemode}"
DOCKERD_LOG="${CODEMODE_DOCKERD_LOG:-/var/log/codemode-dockerd.log}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"

log() { printf '[30-docker] %s\n' "$*" >&2; }

engine_answers() { docker info >/dev/null 2>&1; }

apt_install() {
  # `apt-get update` only once per run, and only when something is missing.
  if [ -z "${_APT_UPDATED:-}" ]; then
    apt-get update -qq
    _APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_engine() {
  if engine_answers; then
    log "docker engine answers"
    return
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    log "installing docker.io from Debian"
    apt_install docker.io
  fi
  for _ in $(seq 1 120); do
    # (Re)start whenever no dockerd runs: one that was dying when we looked (killed
    # with the previous session) is gone a moment later and must be replaced.
    if ! pgrep -x dockerd >/dev/null 2>&1; then
      log "starting dockerd (log: $DOCKERD_LOG)"
      # setsid: the daemon must outlive this script and the CI step that ran it.
      setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
      sleep 1
    fi
    engine_answers && { log "docker engine is up"; return; }
    sleep 1
  done
  log "dockerd did not answer within 120 s; last log lines:"
  tail -n 30 "$DOCKERD_LOG" >&2 || true
  exit 1
}

ensure_base_image() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "base image $BASE_IMAGE present"
    return
  fi
  if [ "$BASE_IMAGE" != "codemode-base:bookworm" ]; then
    log "base image $BASE_IMAGE is missing and only codemode-base:bookworm can be made here"
    exit 1
  fi
  local tarball="$CACHE_DIR/codemode-base-bookworm.tar"
  # The cache saves about a minute per run, but the script never depends on it:
  # a missing or unreadable tarball is simply made again.
  if [ ! -f "$tarball" ] || ! tar -tf "$tarball" >/dev/null 2>&1; then
    rm -rf "$tarball"
    command -v mmdebstrap >/dev/null 2>&1 || apt_install mmdebstrap
    mkdir -p "$CACHE_DIR"
    log "making a minimal bookworm with mmdebstrap (about a minute)"
    local tmp="$CACHE_DIR/.codemode-base-bookworm.$$.tar"
    rm -rf "$tmp"
    mmdebstrap --quiet --format=tar --variant=apt \
      --include=python3,python3-venv,ca-certificates \
      bookworm "$tmp"
    mv "$tmp" "$tarball"
  fi
  log "importing $tarball as $BASE_IMAGE"
  docker import "$tarball" "$BASE_IMAGE" >/dev/null
}

build_wheelhouse() {
  # Wheels only (no sdists, so nothing is compiled or executed at image build),
  # for the image's interpreter: bookworm's python3 is 3.11 on glibc 2.36, the
  # host's architecture.
  local wheelhouse="$1"
  mkdir -p "$wheelhouse"
  log "downloading agent wheels into the build context"
  local arch
  arch="$(uname -m)"
  "$PY" -m pip download --quiet --only-binary=:all: \
    --python-version 3.11 --implementation cp --platform "manylinux2014_$arch" \
    --platform "manylinux_2_17_$arch" --platform "manylinux_2_28_$arch" --platform any \
    -r "$ROOT/docker/requirements-agent.txt" -d "$wheelhouse"
  log "building the codemode-protos wheel (the agent's generated stubs)"
  # From a copy: setuptools leaves build/ and egg-info next to the sources.
  local src
  src="$(mktemp -d /tmp/codemode-protos-src.XXXXXX)"
  tar -C "$ROOT/gen/python" --exclude=build --exclude='*.egg-info' --exclude=__pycache__ -cf - . \
    | tar -C "$src" -xf -
  "$PY" -m pip wheel --quiet --no-deps --no-build-isolation "$src" -w "$wheelhouse"
  rm -rf "$src"
}

# BuildKit, so no "legacy builder is deprecated" warning: through buildx when the
# docker CLI on PATH has it; else through the CLI of Debian's docker.io (20.10),
# which drives the engine's built-in BuildKit with DOCKER_BUILDKIT=1 and needs no
# plugin. Debian 12 packages no buildx, and a newer CLI without it refuses
# DOCKER_BUILDKIT=1, so only a host with neither falls back to the legacy builder.
docker_build() {
  if docker buildx version >/dev/null 2>&1; then
    DOCKER_BUILDKIT=1 docker build "$@"
  elif [ -x /usr/bin/docker ] && /usr/bin/docker version --format '{{.Client.Version}}' 2>/dev/null | grep -q '^20\.'; then
    DOCKER_BUILDKIT=1 /usr/bin/docker build "$@"
  else
    log "no BuildKit client here (no buildx plugin, no Debian docker.io CLI): using the legacy builder"
    DOCKER_BUILDKIT=0 docker build "$@"
  fi
}

build_sandbox_image() {
  if [ -z "${CODEMODE_REBUILD:-}" ] && image_is_current; then
    log "sandbox image $SANDBOX_IMAGE is up to date"
    docker tag "$SANDBOX_IMAGE" "$VERSIONED_SANDBOX_IMAGE"
    return
  fi
  # A dedicated build context: only the agent, the wheels and the Dockerfile,
  # never the repository (no server code, no venv, no secrets can leak in).
  local ctx
  ctx="$(mktemp -d /tmp/codemode-docker-ctx.XXXXXX)"
  trap 'rm -rf "$ctx"' RETURN
  cp "$ROOT/docker/Dockerfile" "$ROOT/docker/requirements-agent.txt" "$ctx/"
  mkdir -p "$ctx/app"
  tar -C "$ROOT" --exclude=__pycache__ --exclude='*.pyc' -cf - sandbox_agent | tar -C "$ctx/app" -xf -
  build_wheelhouse "$ctx/wheelhouse"
  log "building $SANDBOX_IMAGE from $BASE_IMAGE"
  docker_build --quiet -t "$SANDBOX_IMAGE" -t "$VERSIONED_SANDBOX_IMAGE" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" \
    --label dev.codemode.source-hash="$(source_hash)" \
    "$ctx" >/dev/null
  # The legacy builder keeps the build stage as an untagged image (BuildKit does
  # not), and the previous sandbox image loses its tag; prune only those
  # (dangling + our labels).
  docker image prune -f --filter label=dev.codemode.build-stage=true >/dev/null || true
  docker image prune -f --filter label=dev.codemode.image=sandbox >/dev/null || true
  log "built $SANDBOX_IMAGE"
}

source_hash() {
  # Rebuild when the agent, the Dockerfile, the pinned wheels or the stubs change.
  (cd "$ROOT" && find sandbox_agent gen/python docker/Dockerfile docker/requirements-agent.txt \
      -type f ! -name '*.pyc' ! -path '*/__pycache__/*' ! -path '*.egg-info/*' -print0 | sort -z | xargs -0 sha256sum) \
    | sha256sum | cut -c1-16
}

image_is_current() {
  docker image inspect "$SANDBOX_IMAGE" >/dev/null 2>&1 \
    && [ "$(docker image inspect -f '{{ index .Config.Labels "dev.codemode.source-hash" }}' "$SANDBOX_IMAGE")" = "$(source_hash)" ]
}

if [ "${1:-}" = "--check" ]; then
  engine_answers || exit 4
  image_is_current || exit 3
  exit 0
fi

ensure_engine
ensure_base_image
build_sandbox_image
