#!/usr/bin/env bash
# Installs Docker Compose v2 (the `docker compose` CLI plugin, released as module
# github.com/docker/compose/v5) on a machine without Docker's apt repository or
# GitHub downloads: built from the Go module proxy with the machine's Go.
# Debian bookworm packages only Compose v1 (docker-compose 1.29, Python) and no
# docker-compose-plugin / docker-compose-v2.
#
# Idempotent: exits at once when `docker compose version` answers. The built
# binary is kept in $CODEMODE_CACHE_DIR (default /var/cache/codemode), so a
# reinstall takes no build; the first build takes about 3 minutes on 2 cores.
# `go install …/cmd@version` cannot be used: compose's go.mod has exclude
# directives, which `go install pkg@version` refuses, so the module is
# downloaded and built as the main module (where its excludes apply).
#
# Environment: COMPOSE_VERSION (default v5.6.0, the newest that builds with Go
# 1.26), CODEMODE_COMPOSE_PLUGIN_DIR (default /usr/local/lib/docker/cli-plugins,
# searched by Debian's docker CLI and by Docker's own).
set -euo pipefail
VERSION="${COMPOSE_VERSION:-v5.6.0}"
MODULE=github.com/docker/compose/v5
PLUGIN_DIR="${CODEMODE_COMPOSE_PLUGIN_DIR:-/usr/local/lib/docker/cli-plugins}"
CACHE_DIR="${CODEMODE_CACHE_DIR:-/var/cache/codemode}"
CACHED="$CACHE_DIR/docker-compose-$VERSION"

log() { printf '[install-compose] %s\n' "$*" >&2; }

if docker compose version >/dev/null 2>&1; then
  log "$(docker compose version)"
  exit 0
fi

if [ ! -x "$CACHED" ]; then
  if ! command -v go >/dev/null 2>&1; then
    log "Docker Compose v2 is missing and there is no Go toolchain to build it with"
    exit 1
  fi
  log "building docker compose $VERSION from the Go module proxy (about 3 minutes)"
  dir="$(GOFLAGS=-mod=mod go mod download -json "$MODULE@$VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [ -d "$dir" ] || { log "go mod download gave no module directory"; exit 1; }
  mkdir -p "$CACHE_DIR"
  tmp="$CACHED.$$"
  build_log="$(mktemp /tmp/codemode-compose-build.XXXXXX.log)"
  if ! (cd "$dir" && GOFLAGS=-mod=readonly go build -trimpath \
      -ldflags "-s -w -X $MODULE/internal.Version=$VERSION" -o "$tmp" ./cmd) >"$build_log" 2>&1; then
    log "go build failed; its last lines:"
    grep -v '^go: downloading' "$build_log" | tail -n 30 >&2
    rm -f "$build_log" "$tmp"
    exit 1
  fi
  rm -f "$build_log"
  mv "$tmp" "$CACHED"
fi
mkdir -p "$PLUGIN_DIR"
install -m 0755 "$CACHED" "$PLUGIN_DIR/docker-compose"
log "installed $PLUGIN_DIR/docker-compose: $(docker compose version)"
