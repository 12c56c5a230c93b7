#!/usr/bin/env bash
# dlpipe's image without a Docker engine (issue 19, stage 1): a Debian bookworm base made from
# Debian's own packages by mmdebstrap, then the project's Dockerfile built on it by buildah, and
# run by podman. The public build (`docker build .`) starts from the python slim image instead;
# the Dockerfile is the same, only its PYTHON_IMAGE build argument differs. Docker format, not
# OCI: the OCI config has no SHELL, and the Dockerfile's RUN lines rely on its pipefail.
#
#   scripts/image.sh build [buildah build args]   base + image, idempotent (stamped by content)
#   scripts/image.sh run [podman run args] IMAGE-CMD...   run the image on the host network
#   scripts/image.sh oci DIR                      write both images as OCI archives into DIR
#   scripts/image.sh operator                     the Spark operator's image: dlpipe's (its Spark,
#                                                 Java and tini) plus the operator binary that
#                                                 scripts/install_k8s.sh builds from source
#   scripts/image.sh name                         print the image's name
#   scripts/image.sh prune                        drop old builds' layers (and the layer cache)
#
# First build on 2 cores: about 40 s for the base, several minutes for the image (the Python
# deps come from the host's uv cache, the connector jars from Maven Central). A second build
# with nothing changed compares two fingerprints and takes about a second; a change to dlpipe/
# rebuilds from the layer that copies it (about 75 s: the venv and jars stay cached).
set -euo pipefail
cd "$(dirname "$0")/.."

DLPIPE_HOME=${DLPIPE_HOME:-$HOME/.cache/dlpipe}
IMAGE=${DLPIPE_IMAGE:-localhost/dlpipe:dev}
BASE=localhost/dlpipe-base:bookworm
OPERATOR_IMAGE=localhost/dlpipe-spark-operator:v2.5.2  # dlpipe.localstack.k8s.SPARK_OPERATOR_IMAGE
SUITE=bookworm
MIRROR=${DLPIPE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# What the Dockerfile expects of PYTHON_IMAGE (python3.11 and pip) and what its runtime stage
# installs anyway (a JRE, tini, procps), so that stage's apt-get has nothing left to fetch.
BASE_PACKAGES=python3.11,python3-pip,ca-certificates,openjdk-17-jre-headless,tini,procps
# CA certificates the host trusts beyond Debian's (a TLS-inspecting proxy's, as on this machine):
# the local base trusts them too, or pip, uv and Maven in the build cannot reach their registries.
EXTRA_CA_DIR=${DLPIPE_IMAGE_EXTRA_CA_DIR:-/usr/local/share/ca-certificates}
UV_VERSION=0.13.9
UV=$DLPIPE_HOME/uv-$UV_VERSION/bin/uv
LABEL=io.dlpipe.fingerprint

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'image: error: %s\n  fix: %s\n' "$1" "$2" >&2; exit 1; }

# The OCI runtime and limits this kind of machine needs: crun refuses cgroup v1 hybrid mode and
# the sandbox may not raise RLIMIT_NOFILE/NPROC past its own hard limits (podman's defaults do).
RUNTIME_ARGS=(--runtime runc)
run_limits() {
  local nofile nproc
  nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
  [ "$nofile" = unlimited ] && nofile=1048576
  [ "$nproc" = unlimited ] && nproc=32768
  [ "$nproc" -gt 32768 ] && nproc=32768
  printf '%s\n' --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc"
}

need_tools() {
  local missing=()
  for tool in mmdebstrap buildah podman runc; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]} from Debian's packages"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      mmdebstrap buildah podman runc uidmap fuse-overlayfs >/dev/null \
      || die "apt-get install of ${missing[*]} failed" "run: apt-get update && apt-get install -y mmdebstrap buildah podman runc"
  else
    die "missing ${missing[*]} (the image is built without Docker)" \
      "apt-get install -y mmdebstrap buildah podman runc (as root)"
  fi
}

label_of() {
  buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null || true
}

build_base() {
  local want tar ctr cas=() hooks=()
  [ -d "$EXTRA_CA_DIR" ] && mapfile -t cas < <(find "$EXTRA_CA_DIR" -name '*.crt' -type f | sort)
  if [ ${#cas[@]} -gt 0 ]; then
    hooks=(--customize-hook='mkdir -p "$1/usr/local/share/ca-certificates"'
           --customize-hook="copy-in ${cas[*]} /usr/local/share/ca-certificates"
           --customize-hook='chroot "$1" update-ca-certificates')  # Java's keystore too
  fi
  want=$( (printf '%s %s %s\n' "$SUITE" "$BASE_PACKAGES" "$(mmdebstrap --version)"
           if [ ${#cas[@]} -gt 0 ]; then cat "${cas[@]}"; fi) | sha256sum | cut -c1-16)
  if [ "$(label_of "$BASE")" = "$want" ]; then say "base image up to date ($BASE)"; return; fi
  say "making the base image $BASE from Debian $SUITE packages (mmdebstrap, about a minute)"
  mkdir -p "$DLPIPE_HOME/image"
  tar=$DLPIPE_HOME/image/base-$SUITE.tar
  mmdebstrap --quiet --format=tar --variant=minbase --include="$BASE_PACKAGES" --aptopt='Acquire::Retries "3"' \
    "${hooks[@]}" "$SUITE" "$tar.part" "$MIRROR" || die "mmdebstrap could not make the base" "check that $MIRROR is reachable"
  mv "$tar.part" "$tar"
  ctr=$(buildah from scratch)
  buildah add --quiet "$ctr" "$tar" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd /bin/bash --label "$LABEL=$want" \
    --label org.opencontainers.image.description="Debian $SUITE with $BASE_PACKAGES (mmdebstrap)" "$ctr"
  buildah commit --quiet --rm "$ctr" "$BASE" >/dev/null
  rm -f "$tar"
}

# Everything the build context holds (.dockerignore) and the Dockerfile, by content.
context_fingerprint() {
  { sha256sum Dockerfile .dockerignore requirements.lock setup.cfg pyproject.toml README.md
    find dlpipe models spark_jobs conf docker -type f -not -path '*/__pycache__/*' -not -name '*.pyc' \
      -print0 | sort -z | xargs -0 sha256sum
    label_of "$BASE"; printf '%s\n' "$@"
  } | sha256sum | cut -c1-16
}

build_image() {
  local want uv_cache=()
  need_tools
  build_base
  want=$(context_fingerprint "$@")
  if [ "$(label_of "$IMAGE")" = "$want" ]; then say "image up to date ($IMAGE)"; return; fi
  # The host's uv cache holds the wheels of requirements.lock once `make setup` ran.
  if [ -x "$UV" ]; then
    local dir; dir=$("$UV" cache dir)
    mkdir -p "$dir"
    uv_cache=(--volume "$dir:/root/.cache/uv" --build-arg UV_NO_CACHE=0)
  fi
  say "building $IMAGE with buildah on $BASE (first time: several minutes)"
  # --force-rm: a failed build (a full disk) left its working containers behind, 10 GB of
  # them here, which made the next attempt fail the same way.
  if ! buildah build --quiet --format docker --layers --force-rm "${RUNTIME_ARGS[@]}" --network host \
    --build-arg PYTHON_IMAGE="$BASE" "${uv_cache[@]}" --label "$LABEL=$want" \
    --tag "$IMAGE" "$@" . >/dev/null; then
    local root free
    root=$(buildah info --format '{{.store.GraphRoot}}' 2>/dev/null || echo /var/lib/containers)
    free=$(df -Pk "$root" | awk 'NR == 2 { printf "%.1f", $4 / 1048576 }')
    die "buildah could not build $IMAGE (the error is above; ${free} GB free in $root, a build without cached layers needs about 12 GB)" \
      "if it says 'no space left on device': scripts/image.sh prune (old builds' layers), then build again"
  fi
  say "built $IMAGE"
}

# The operator's controller runs spark-submit for every SparkApplication, so its image needs a
# Spark, a JRE and SPARK_HOME: dlpipe's image has all three (the operator's own Dockerfile starts
# from apache/spark, which cannot be pulled here). One layer on top: the binary, run under tini.
build_operator() {
  local bin want ctr
  bin=$(scripts/install_k8s.sh --print)/spark-operator
  [ -x "$bin" ] || die "the Spark operator is not built" "scripts/install_k8s.sh spark-operator  (make k8s)"
  [ -n "$(label_of "$IMAGE")" ] || die "no $IMAGE to build the operator's image on" "scripts/image.sh build"
  want=$( (sha256sum "$bin"; label_of "$IMAGE") | sha256sum | cut -c1-16)
  if [ "$(label_of "$OPERATOR_IMAGE")" = "$want" ]; then say "operator image up to date ($OPERATOR_IMAGE)"; return; fi
  ctr=$(buildah from --quiet "$IMAGE")
  buildah copy --quiet --chmod 0755 "$ctr" "$bin" /usr/bin/spark-operator >/dev/null
  buildah config --entrypoint '["/usr/bin/tini", "-s", "--", "/usr/bin/spark-operator"]' --cmd '[]' \
    --user 10001:10001 --label "$LABEL=$want" "$ctr"
  buildah commit --quiet --rm "$ctr" "$OPERATOR_IMAGE" >/dev/null
  say "built $OPERATOR_IMAGE"
}

case "${1:-build}" in
  build) shift || true; build_image "$@" ;;
  run)
    shift
    command -v podman >/dev/null || die "podman is not installed" "scripts/image.sh build (installs it)"
    mapfile -t limits < <(run_limits)
    exec podman "${RUNTIME_ARGS[@]}" --cgroup-manager cgroupfs run --rm --network host --no-healthcheck \
      "${limits[@]}" "$@"
    ;;
  oci)
    dir=${2:?usage: scripts/image.sh oci DIR}
    mkdir -p "$dir"
    buildah push --quiet "$BASE" "oci-archive:$dir/dlpipe-base.oci.tar:$BASE"
    buildah push --quiet "$IMAGE" "oci-archive:$dir/dlpipe.oci.tar:$IMAGE"
    ;;
  operator) need_tools; build_operator ;;
  name) echo "$IMAGE" ;;
  # Each build with --layers keeps its intermediate images: a day of code changes filled 39 GB
  # here. Pruning keeps the tagged images; the next build starts without a cache.
  prune) buildah rmi --prune >/dev/null && say "removed untagged images; $(buildah images -q | wc -l) left" ;;
  -h|--help|help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" ;;
  *) die "unknown command: $1" "scripts/image.sh build | run | oci DIR | operator | name | prune" ;;
esac
