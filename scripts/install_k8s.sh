#!/usr/bin/env bash
# Kubernetes from source for a single-node cluster on this machine (issue 19, stage 2): etcd and
# the Kubernetes binaries built with `go build` from the Go module proxy, pinned and cached under
# $DLPIPE_HOME/k8s/<version>/bin, each with a stamp. Nothing comes from GitHub releases or a
# container registry (neither is reachable here).
#
#   scripts/install_k8s.sh                 build what is missing (etcd, kube-apiserver, kubectl,
#                                          kube-controller-manager, kube-scheduler, kubelet,
#                                          kube-proxy, CoreDNS, and the pod sandbox image from
#                                          build/pause, as an OCI archive), and the Spark
#                                          operator from its git repository
#   scripts/install_k8s.sh NAME...         only these
#   scripts/install_k8s.sh --print         print the bin folder and exit
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces the k8s.io staging modules with
# folders of its own repository. A wrapper module requires it and replaces each staging module
# with its published v0.<minor>.<patch> instead; the version is stamped with -ldflags, or the
# binaries report v0.0.0-master. First build on 2 cores: kube-apiserver about 9 minutes, each
# further binary a few minutes (the package cache is shared); a second run reads the stamps.
set -euo pipefail
cd "$(dirname "$0")/.."

DLPIPE_HOME=${DLPIPE_HOME:-$HOME/.cache/dlpipe}
KUBE_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
COREDNS_VERSION=v1.13.1  # the cluster DNS (Spark's executors find the driver by its service name)
# The Kubeflow Spark operator, built from its source: the Go module proxy refuses the module,
# so its git repository is cloned (GitHub, or a mirror of it: DLPIPE_SPARK_OPERATOR_GIT, else
# the tool library's mirror when this machine has one), and the tag is checked against its commit.
SPARK_OPERATOR_VERSION=v2.5.2
SPARK_OPERATOR_COMMIT=43afb8bbd32463037d8fb6e414e252c69081882b
SPARK_OPERATOR_MIRROR=/work/.mirror/kubeflow+spark-operator/repo
ROOT=$DLPIPE_HOME/k8s/$KUBE_VERSION
BIN=$ROOT/bin
SRC=$ROOT/src
PAUSE_VERSION=3.10.1  # what kubelet v1.34 expects (kubeadm's PauseVersion)
PAUSE_IMAGE=registry.k8s.io/pause:$PAUSE_VERSION
ALL=(etcd kube-apiserver kubectl kube-controller-manager kube-scheduler kubelet kube-proxy coredns pause
     spark-operator)

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'install_k8s: error: %s\n  fix: %s\n' "$1" "$2" >&2; exit 1; }

if [ "${1:-}" = "--print" ]; then echo "$BIN"; exit 0; fi
command -v go >/dev/null || die "go is required to build Kubernetes from source" "install Go >= 1.24"

# A field of `go mod download -json` for k8s.io/kubernetes (GoMod: its go.mod; Dir: its source).
kube_module() {
  go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | python3 -c \
    "import json, sys; print(json.load(sys.stdin)['$1'])"
}

# The staging modules k8s.io/kubernetes replaces, read from its own go.mod.
staging_modules() {
  local mod
  mod=$(kube_module GoMod)
  sed -n 's/^\s*\(k8s\.io\/[a-z0-9-]*\) => \.\/staging.*/\1/p' "$mod"
}

# Wrapper modules, one each, so that etcd's, Kubernetes' and CoreDNS' dependency versions never mix.
wrapper_modules() {
  [ -f "$SRC/.ready-$KUBE_VERSION-$ETCD_VERSION-$COREDNS_VERSION" ] && return
  say "preparing the wrapper modules in $SRC"
  rm -rf "$SRC"; mkdir -p "$SRC/kube" "$SRC/etcd" "$SRC/coredns"
  local minor=${KUBE_VERSION#v1.}
  {
    printf 'module dlpipe.local/kube\n\ngo 1.24.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$KUBE_VERSION"
    staging_modules | while read -r m; do printf '\t%s => %s v0.%s\n' "$m" "$m" "$minor"; done
    printf ')\n'
  } > "$SRC/kube/go.mod"
  printf 'module dlpipe.local/etcd\n\ngo 1.24.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" \
    > "$SRC/etcd/go.mod"
  # etcd's own main.go is this one call; its repository's root module is not on the proxy.
  cat > "$SRC/etcd/main.go" <<'EOF'
// Command etcd: etcd's server, as the root of its repository builds it.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  # CoreDNS is a plain module; a wrapper of its own keeps its dependencies apart from the others.
  printf 'module dlpipe.local/coredns\n\ngo 1.24.0\n\nrequire github.com/coredns/coredns %s\n' \
    "$COREDNS_VERSION" > "$SRC/coredns/go.mod"
  touch "$SRC/.ready-$KUBE_VERSION-$ETCD_VERSION-$COREDNS_VERSION"
}

build() {
  local name=$1 pkg dir ldflags stamp=$BIN/.$1.stamp want="$KUBE_VERSION $ETCD_VERSION"
  [ "$name" = coredns ] && want=$COREDNS_VERSION
  if [ -x "$BIN/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    say "$name up to date ($BIN/$name)"; return
  fi
  case "$name" in
    coredns) pkg=github.com/coredns/coredns dir=$SRC/coredns ldflags="" ;;
    etcd) pkg=. dir=$SRC/etcd
          ldflags="-X go.etcd.io/etcd/api/v3/version.GitSHA=dlpipe" ;;
    *)    pkg=k8s.io/kubernetes/cmd/$name dir=$SRC/kube
          local major=1 minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
          ldflags="-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION"
          ldflags+=" -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor"
          ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
          ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
          ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=$major -X k8s.io/client-go/pkg/version.gitMinor=$minor" ;;
  esac
  local version=$KUBE_VERSION
  case "$name" in etcd) version=$ETCD_VERSION ;; coredns) version=$COREDNS_VERSION ;; esac
  say "building $name $version (first time: minutes on 2 cores)"
  mkdir -p "$BIN"
  local started=$SECONDS
  (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w $ldflags" \
     -o "$BIN/$name.part" "$pkg") || die "go build of $name failed" "see the error above; rerun scripts/install_k8s.sh $name"
  mv "$BIN/$name.part" "$BIN/$name"
  echo "$want" > "$stamp"
  say "built $name in $((SECONDS - started)) s"
}

# The pod sandbox ("pause") image: build/pause/linux/pause.c of the same release, compiled
# static as its Makefile does, in an image of its own (buildah, from scratch) saved as an OCI
# archive for containerd to import under the name kubelet expects.
build_pause() {
  local archive=$ROOT/images/pause.oci.tar stamp=$BIN/.pause.stamp src ctr
  if [ -f "$archive" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$PAUSE_VERSION" ]; then
    say "pause image up to date ($archive)"; return
  fi
  command -v gcc >/dev/null || die "gcc is needed for the pause binary" "apt-get install -y gcc libc6-dev"
  command -v buildah >/dev/null || die "buildah is needed for the pause image" "make image  (installs it)"
  src=$(kube_module Dir)/build/pause/linux/pause.c
  mkdir -p "$BIN" "$ROOT/images"
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-dlpipe" -o "$BIN/pause" "$src"
  ctr=$(buildah from scratch)
  buildah copy --quiet "$ctr" "$BIN/pause" /pause >/dev/null
  buildah config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
  buildah commit --quiet --rm "$ctr" "$PAUSE_IMAGE" >/dev/null
  rm -f "$archive"
  buildah push --quiet "$PAUSE_IMAGE" "oci-archive:$archive:$PAUSE_IMAGE"
  echo "$PAUSE_VERSION" > "$stamp"
  say "built the pause image $PAUSE_IMAGE ($archive)"
}

# The Spark operator's controller and webhook (one binary, cmd/operator), with its chart and CRDs
# kept beside it in $ROOT/spark-operator (scripts/image.sh operator puts the binary in an image).
build_spark_operator() {
  local stamp=$BIN/.spark-operator.stamp src=$ROOT/spark-operator origin started=$SECONDS
  if [ -x "$BIN/spark-operator" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$SPARK_OPERATOR_COMMIT" ]; then
    say "spark-operator up to date ($BIN/spark-operator)"; return
  fi
  origin=${DLPIPE_SPARK_OPERATOR_GIT:-https://github.com/kubeflow/spark-operator.git}
  [ -z "${DLPIPE_SPARK_OPERATOR_GIT:-}" ] && [ -d "$SPARK_OPERATOR_MIRROR" ] && origin=$SPARK_OPERATOR_MIRROR
  say "building spark-operator $SPARK_OPERATOR_VERSION from $origin (first time: about 4 minutes on 2 cores)"
  rm -rf "$src"
  git clone -q "$origin" "$src" \
    || die "cannot clone the Spark operator from $origin" \
           "set DLPIPE_SPARK_OPERATOR_GIT to a reachable clone of github.com/kubeflow/spark-operator"
  git -C "$src" -c advice.detachedHead=false checkout -q "$SPARK_OPERATOR_VERSION"
  [ "$(git -C "$src" rev-parse HEAD)" = "$SPARK_OPERATOR_COMMIT" ] \
    || die "$origin's tag $SPARK_OPERATOR_VERSION is not commit $SPARK_OPERATOR_COMMIT" "use an unaltered clone"
  mkdir -p "$BIN"
  (cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w \
     -X k8s.io/component-base/version.gitVersion=$SPARK_OPERATOR_VERSION \
     -X k8s.io/component-base/version.gitCommit=$SPARK_OPERATOR_COMMIT \
     -X k8s.io/component-base/version.gitTreeState=clean" -o "$BIN/spark-operator.part" ./cmd/operator) \
    || die "go build of the Spark operator failed" "see the error above; rerun scripts/install_k8s.sh spark-operator"
  mv "$BIN/spark-operator.part" "$BIN/spark-operator"
  echo "$SPARK_OPERATOR_COMMIT" > "$stamp"
  say "built spark-operator in $((SECONDS - started)) s"
}

# The node's runtime comes from Debian: containerd 1.6, runc, the CNI plugins, iptables.
node_packages() {
  command -v containerd >/dev/null && command -v runc >/dev/null && [ -x /usr/lib/cni/bridge ] && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing containerd, runc, the CNI plugins and iptables from Debian's packages"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends containerd runc \
      containernetworking-plugins iptables conntrack iproute2 >/dev/null \
      || die "apt-get install of the node's packages failed" "apt-get update, then rerun"
  else
    die "the node needs containerd, runc and the CNI plugins" \
      "apt-get install -y containerd runc containernetworking-plugins iptables conntrack (as root)"
  fi
}

wrapper_modules
[ $# -eq 0 ] && node_packages
for name in "${@:-${ALL[@]}}"; do
  case " ${ALL[*]} " in *" $name "*) ;; *) die "unknown piece $name" "one of: ${ALL[*]}" ;; esac
  case "$name" in
    pause) build_pause ;;
    spark-operator) build_spark_operator ;;
    *) build "$name" ;;
  esac
done
