#!/usr/bin/env bash
# Installs what the Go, TypeScript and Java clients need, from their registries
# only: Go modules through the Go module proxy, npm packages from the npm
# registry (exactly package-lock.json), Maven artifacts from Maven Central.
# Go 1.26, Node 20, Java 17 and Maven 3.8 come with the machine; this script
# checks them and says what is missing instead of installing toolchains.
#
# Caches live in the usual places (~/go/pkg/mod, ~/.npm, ~/.m2) and make a
# second run fast, but nothing depends on them: a fresh machine downloads.
set -euo pipefail
cd "$(dirname "$0")/../.."

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "40-toolchains: '$1' not found on PATH ($2)" >&2; exit 1; }
}
need go "Go >= 1.26 is needed for the Go client"
need node "Node 20 is needed for the TypeScript client"
need npm "npm comes with Node"
need java "Java 17 is needed for the Java client"
need mvn "Maven 3.8 is needed for the Java client"

go_minor="$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
[ "$go_minor" -ge 26 ] || { echo "40-toolchains: $(go env GOVERSION) is too old; clients/go needs go1.26" >&2; exit 1; }
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || { echo "40-toolchains: Node $(node --version) is too old; need 20+" >&2; exit 1; }

echo "40-toolchains: $(go env GOVERSION), node $(node --version), $(java -version 2>&1 | head -n1), $(bash scripts/mvn.sh -v | head -n1)"

# Go: the client's dependencies and the pinned code generators (Go tools).
go -C clients/go mod download
go -C clients/go/tools mod download
go -C clients/go/tools build -o /dev/null google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc

# npm: exactly the lockfile; skipped while node_modules matches it.
lock_hash="$(sha256sum clients/typescript/package-lock.json | cut -d' ' -f1)"
stamp=clients/typescript/node_modules/.codemode-lock-hash
if [ "$(cat "$stamp" 2>/dev/null)" != "$lock_hash" ]; then
  npm ci --prefix clients/typescript --no-audit --no-fund --loglevel=error
  echo "$lock_hash" > "$stamp"
else
  echo "40-toolchains: clients/typescript/node_modules matches package-lock.json"
fi

# Maven: every plugin and dependency (protoc and protoc-gen-grpc-java included)
# is fetched by compiling once; scripts/checks/40-clients.sh then runs the tests
# on this build without recompiling.
bash scripts/mvn.sh -q -f clients/java/pom.xml -DskipTests test-compile
echo "40-toolchains: Go modules, npm packages and Maven artifacts are in place"
