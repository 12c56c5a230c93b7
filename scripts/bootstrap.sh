#!/usr/bin/env bash
# Set up everything dlpipe needs on this machine, idempotently:
#   1. .venv with the exact Python deps of requirements.lock (uv, from its cache when warm),
#   2. Kafka, the Spark connector jars (Maven Central) and MinIO (go install) via `dlpipe install`.
# A second run checks stamps and markers and takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

DLPIPE_HOME=${DLPIPE_HOME:-$HOME/.cache/dlpipe}
UV_VERSION=0.13.9
VENV=.venv
STAMP=$VENV/.dlpipe-deps
# Installed packages are compiled to bytecode once: where PYTHONDONTWRITEBYTECODE is set (many
# CI images), Python otherwise compiles every module on every start (TensorFlow's import took
# 24 s instead of 8, and every CLI call, Spark Python worker and test paid its share).
export UV_COMPILE_BYTECODE=1

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bootstrap: error: %s\n  fix: %s\n' "$1" "$2" >&2; exit 1; }

# -- prerequisites that no package manager of ours can bring -------------------------
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      PYTHON=$candidate; break
    fi
  done
fi
[ -n "$PYTHON" ] || die "Python 3.11 is required (TensorFlow 2.21 + pyspark 4.2 are pinned for it)" \
  "apt-get install -y python3.11 python3.11-venv, or set PYTHON=/path/to/python3.11"
command -v java >/dev/null || die "java is required (Kafka, Spark)" "apt-get install -y openjdk-17-jre-headless"
command -v mvn >/dev/null || die "mvn is required (downloads Kafka and Spark jars from Maven Central)" \
  "apt-get install -y maven"
command -v go >/dev/null || die "go is required (builds MinIO from source)" \
  "install Go >= 1.24 (apt-get install -y golang-go on a recent Debian)"

# -- uv in its own small venv, so syncing the project venv never removes it ----------
UV=$DLPIPE_HOME/uv-$UV_VERSION/bin/uv
if [ ! -x "$UV" ]; then
  say "installing uv $UV_VERSION into $DLPIPE_HOME"
  "$PYTHON" -m venv "$DLPIPE_HOME/uv-$UV_VERSION"
  "$DLPIPE_HOME/uv-$UV_VERSION/bin/pip" install -q "uv==$UV_VERSION"
fi

# -- the project venv ---------------------------------------------------------------
want=$( (cat requirements.lock setup.cfg; echo "bytecode") | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/dlpipe" ]; then
  say "Python environment up to date ($VENV)"
else
  [ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$UV" venv --python "$PYTHON" "$VENV"; }
  say "installing pinned Python packages into $VENV (first time: ~2 GB, a few minutes)"
  "$UV" pip sync --python "$VENV/bin/python" requirements.lock
  "$UV" pip install --python "$VENV/bin/python" --no-deps -e .
  echo "$want" > "$STAMP"
fi

# -- Kafka, MinIO, Spark connector jars ----------------------------------------------
DLPIPE_HOME=$DLPIPE_HOME "$VENV/bin/dlpipe" install
DLPIPE_HOME=$DLPIPE_HOME scripts/install_deploy_tools.sh
