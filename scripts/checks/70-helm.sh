#!/usr/bin/env bash
# The Helm chart in deploy/helm/codemode, offline: `helm lint --strict` with every values
# file, then scripts/checks/helm_check.py (renders, checks every manifest against the
# Kubernetes JSON schemas of kubernetes-validate, and runs the default rendering against a
# real redis-server and a real `codemode serve`).
#
# helm is a Go module: installed with `go install` when missing (the Go module proxy only;
# the binary stays in $(go env GOPATH)/bin, so a second run is instant). kubernetes-validate
# comes with the dev extra (scripts/setup/00-python.sh). A missing tool fails the check
# under CI=true (and locally), never skips it.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
HELM_VERSION=v3.22.0

helm_ok() { [ -x "$1" ] && "$1" version --short 2>/dev/null | grep -q "^${HELM_VERSION%.0}"; }

HELM="$(command -v helm || true)"
if [ -z "$HELM" ] || ! helm_ok "$HELM"; then
  command -v go >/dev/null 2>&1 || { echo "70-helm: helm is missing and Go is not on PATH to install it (scripts/setup/40-toolchains.sh checks Go)" >&2; exit 1; }
  HELM="$(go env GOPATH)/bin/helm"
  if ! helm_ok "$HELM"; then
    echo "70-helm: installing helm $HELM_VERSION with go install (about two minutes the first time)"
    go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  fi
fi
helm_ok "$HELM" || { echo "70-helm: $HELM is not helm $HELM_VERSION" >&2; exit 1; }
"$PY" -c 'import kubernetes_validate' 2>/dev/null || {
  echo "70-helm: kubernetes-validate is missing from $PY (run scripts/setup/00-python.sh: it is in the dev extra)" >&2; exit 1; }
echo "70-helm: $("$HELM" version --short), kubernetes-validate $("$PY" -c 'import kubernetes_validate; print(kubernetes_validate.__version__)' 2>/dev/null || echo '?')"

chart=deploy/helm/codemode
"$HELM" lint --strict "$chart" --kube-version 1.33.0
for values in "$chart"/ci/*-values.yaml; do
  "$HELM" lint --strict "$chart" --kube-version 1.33.0 -f "$values"
done

HELM="$HELM" exec "$PY" scripts/checks/helm_check.py
