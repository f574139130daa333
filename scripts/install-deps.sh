#!/usr/bin/env bash
# Installs what paystream needs to build and test, from Debian's packages (and pytest
# from PyPI if the python3 on PATH lacks it). Fast no-op when everything is present.
set -euo pipefail

PACKAGES=(
  g++ cmake ninja-build pkg-config
  libboost1.81-dev libboost-json1.81-dev
  libsqlite3-dev sqlite3 libssl-dev
  libfmt-dev libspdlog-dev libcli11-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev
  python3 curl
  prometheus prometheus-alertmanager
  librdkafka-dev libpq-dev libhiredis-dev
  postgresql-15 postgresql-client-15 redis-server redis-tools
  openjdk-17-jre-headless maven
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! python3 -c 'import pytest' 2>/dev/null; then
  echo "install-deps: installing pytest" >&2
  python3 -m pip install -q pytest 2>/dev/null \
    || python3 -m pip install -q --break-system-packages pytest
fi

# schemathesis (PyPI) checks the API against openapi/openapi.json (tests/e2e/test_schemathesis.py).
SCHEMATHESIS_VERSION=4.32.5
if [[ $(python3 -c 'import schemathesis; print(schemathesis.__version__)' 2>/dev/null) != "$SCHEMATHESIS_VERSION" ]]; then
  echo "install-deps: installing schemathesis $SCHEMATHESIS_VERSION" >&2
  python3 -m pip install -q "schemathesis==$SCHEMATHESIS_VERSION" 2>/dev/null \
    || python3 -m pip install -q --break-system-packages "schemathesis==$SCHEMATHESIS_VERSION"
fi

# --- the Helm chart's checks (tests/deploy/test_chart.py) ---------------------------------
# Versions: deploy/helm/versions.env. Go comes with the machine (it builds helm and holds
# KEDA's CRDs in its module cache); Debian's golang-go is installed only if `go` is missing.
# helm goes to build/tools/helm in the checkout (about 3-4 min to build on 2 cores, once).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../deploy/helm/versions.env
. "$ROOT/deploy/helm/versions.env"
if ! command -v go >/dev/null 2>&1; then
  echo "install-deps: installing golang-go" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends golang-go ca-certificates git
fi
GO=go
# helm's go.mod asks for Go >= 1.26. Go >= 1.21 fetches that toolchain itself (GOTOOLCHAIN);
# an older go (Debian 12's golang-go is 1.19) downloads it as the module golang.org/toolchain.
if ! go version | grep -Eq 'go1\.(2[1-9]|[3-9][0-9])'; then
  TC="golang.org/toolchain@v0.0.1-go1.26.0.linux-$(go env GOARCH)"
  GO="$(cd "${TMPDIR:-/tmp}" && GOFLAGS=-mod=mod go mod download -json "$TC" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')/bin/go"
fi
TOOLS="$ROOT/build/tools"
# (`go install` leaves helm's own version string short, "v3.22": read the module's version.
# Such a build also defaults to Kubernetes 1.20 without a cluster: pass --kube-version.)
if [ "$("$GO" version -m "$TOOLS/helm" 2>/dev/null | awk '$1=="mod"{print $3}')" != "$HELM_VERSION" ]; then
  echo "install-deps: building helm $HELM_VERSION into $TOOLS" >&2
  mkdir -p "$TOOLS"
  GOBIN="$TOOLS" GOFLAGS=-mod=mod nice -n 10 "$GO" install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
KEDA_DIR="$("$GO" env GOMODCACHE)/github.com/kedacore/keda/v2@$KEDA_VERSION"
if [ ! -f "$KEDA_DIR/config/crd/bases/keda.sh_scaledobjects.yaml" ]; then
  echo "install-deps: fetching KEDA $KEDA_VERSION (its CRDs) into the Go module cache" >&2
  (cd "${TMPDIR:-/tmp}" && GOFLAGS=-mod=mod "$GO" mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" >/dev/null)
fi
if ! python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('kubernetes-validate') != '$KUBERNETES_VALIDATE_VERSION')" 2>/dev/null \
   || ! python3 -c 'import jsonschema, yaml' 2>/dev/null; then
  echo "install-deps: installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION, jsonschema, PyYAML" >&2
  python3 -m pip install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" jsonschema PyYAML 2>/dev/null \
    || python3 -m pip install -q --break-system-packages "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" jsonschema PyYAML
fi
