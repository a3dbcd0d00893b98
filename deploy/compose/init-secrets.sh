#!/usr/bin/env bash
# Creates the secrets directory of the one-host deployment (deploy/compose):
#
#   api/principals.json   the API's principals: one operator, `operator`
#   api/server.crt, .key  the servers' TLS key pair (names server-1, server-2,
#                         codemode-server, localhost, 127.0.0.1), signed by ca.crt
#                         api/ is mounted read-only into both servers (a directory,
#                         so edits to principals.json reach them: reloaded on change)
#   ca.crt, ca.key        the internal CA; nginx gets ca.crt to verify the servers
#   cluster/ca.crt, .key  the servers' shared CA (--ca-cert/--ca-key): their
#                         instance-to-instance mTLS (the shared session registry)
#                         and their sandbox agents; cluster/ is mounted read-only
#                         into both servers, nowhere else
#   operator.token        that operator's bearer token, for you (never mounted)
#   redis.conf            `requirepass` for Redis (mounted into Redis only)
#   server.env            CODEMODE_REDIS_URL with that password (read by compose)
#
# The directory is root-owned 0700, so no other host user can read any of it;
# inside the containers only the processes that need a file see it.
# Idempotent: existing files are kept (delete one to make it again; the TLS pair
# is made again when either half is missing). More principals:
#   docker run --rm --user 0 --network none -v DIR/api:/secrets codemode-server:VERSION \
#     tokens create --principals-file /secrets/principals.json --role tenant --tenant acme
# (prints the new token once; docs/security.md).
#
#   init-secrets.sh DIR   (default: $CODEMODE_SECRETS_DIR, else /etc/codemode/compose)
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR="${1:-${CODEMODE_SECRETS_DIR:-/etc/codemode/compose}}"
VERSION="${CODEMODE_VERSION:-$(bash scripts/build-server-image.sh --version)}"
IMAGE="${CODEMODE_SERVER_REPO:-codemode-server}:$VERSION"

log() { printf '[init-secrets] %s\n' "$*" >&2; }
random_hex() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

umask 077
mkdir -p "$DIR"
chmod 0700 "$DIR"
DIR="$(cd "$DIR" && pwd)"

mkdir -p "$DIR/api"
if [ ! -s "$DIR/api/principals.json" ]; then
  log "creating $DIR/api/principals.json with the operator principal 'operator'"
  docker run --rm --user 0 --network none -v "$DIR/api:/secrets" "$IMAGE" \
    tokens create --principals-file /secrets/principals.json --role operator --id operator \
    --description "deploy/compose operator" > "$DIR/operator.token.$$"
  mv "$DIR/operator.token.$$" "$DIR/operator.token"
  chmod 0600 "$DIR/operator.token"
fi
if [ ! -s "$DIR/redis.conf" ] || [ ! -s "$DIR/server.env" ]; then
  log "creating the Redis password ($DIR/redis.conf, $DIR/server.env)"
  password="$(random_hex)"
  printf '# Made by deploy/compose/init-secrets.sh\nrequirepass %s\n' "$password" > "$DIR/redis.conf"
  printf 'CODEMODE_REDIS_URL=redis://:%s@redis:6379/0\n' "$password" > "$DIR/server.env"
  # Redis runs as its own unprivileged uid; the 0700 directory keeps host users out.
  chmod 0444 "$DIR/redis.conf"
  chmod 0600 "$DIR/server.env"
fi
if [ ! -s "$DIR/ca.crt" ] || [ ! -s "$DIR/ca.key" ]; then
  command -v openssl >/dev/null 2>&1 || { log "openssl is needed to make the TLS certificates"; exit 1; }
  log "creating the internal CA ($DIR/ca.crt)"
  rm -f "$DIR/api/server.crt" "$DIR/api/server.key"
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 -days 3650 \
    -subj "/CN=codemode compose internal CA" -keyout "$DIR/ca.key" -out "$DIR/ca.crt" 2>/dev/null
  chmod 0400 "$DIR/ca.key"
  chmod 0444 "$DIR/ca.crt"
fi
mkdir -p "$DIR/cluster"
if [ ! -s "$DIR/cluster/ca.crt" ] || [ ! -s "$DIR/cluster/ca.key" ]; then
  command -v openssl >/dev/null 2>&1 || { log "openssl is needed to make the cluster CA"; exit 1; }
  # An EC P-256 key (what the server loads), and a subject key identifier that
  # is the SHA-1 of the key, like the leaf certificates the servers issue from it.
  log "creating the servers' shared CA ($DIR/cluster/ca.crt)"
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 -days 3650 \
    -subj "/CN=codemode compose cluster CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -addext "subjectKeyIdentifier=hash" \
    -keyout "$DIR/cluster/ca.key" -out "$DIR/cluster/ca.crt" 2>/dev/null
  chmod 0400 "$DIR/cluster/ca.key"
  chmod 0444 "$DIR/cluster/ca.crt"
fi
if [ ! -s "$DIR/api/server.crt" ] || [ ! -s "$DIR/api/server.key" ]; then
  log "creating the servers' TLS key pair ($DIR/api/server.crt)"
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 \
    -subj "/CN=codemode-server" -keyout "$DIR/api/server.key" -out "$DIR/api/server.csr" 2>/dev/null
  openssl x509 -req -in "$DIR/api/server.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" -CAcreateserial \
    -sha256 -days 825 -out "$DIR/api/server.crt" -extfile <(printf '%s\n' \
      "subjectAltName=DNS:codemode-server,DNS:server-1,DNS:server-2,DNS:localhost,IP:127.0.0.1" \
      "extendedKeyUsage=serverAuth" "keyUsage=critical,digitalSignature") 2>/dev/null
  rm -f "$DIR/api/server.csr" "$DIR/ca.srl"
  chmod 0400 "$DIR/api/server.key"
  chmod 0444 "$DIR/api/server.crt"
fi
log "secrets in $DIR (operator token: $DIR/operator.token)"
