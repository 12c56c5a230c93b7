# syntax=docker/dockerfile:1.7
# One image for every dlpipe workload on Kubernetes: the Spark drivers and executors the Spark
# operator starts (ingest, export + training, scoring), the storage initializer and
# `dlpipe serve`. It holds Python 3.11 with the exact deps of requirements.lock, Spark (pyspark)
# and every connector jar (Kafka, s3a, Delta) baked in: nothing is downloaded at run time.
#
#   docker build -t ghcr.io/dlpipe/dlpipe:0.1.0 .
#   docker build -t ghcr.io/dlpipe/dlpipe:0.1.0-gpu --build-arg TF_VARIANT=gpu .   # CUDA TensorFlow
#   make image    # without Docker: buildah on a Debian base made by mmdebstrap (scripts/build_image.sh)
#
# PYTHON_IMAGE is any bookworm image with Python 3.11 (python3.11 on PATH, pip): the public
# python slim image, or the base scripts/build_image.sh makes from Debian's own packages.
#
# Spark on Kubernetes starts pods with the arguments `driver ...` / `executor ...`;
# docker/spark-entrypoint.sh turns them into the commands of pyspark 4.2.0's own Kubernetes
# backend (checked against its jar by tests/deploy/test_entrypoint.py; borrowing another Spark
# release's entrypoint would tie the image to that release's contract). Any other command runs
# as given (`dlpipe serve ...`).

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# -- deps: the venv and the connector jars -------------------------------------------------
FROM ${PYTHON_IMAGE} AS deps
ARG TF_VARIANT=cpu
ARG UV_VERSION=0.13.9
# UV_NO_CACHE=0 with a uv cache mounted at /root/.cache/uv (scripts/build_image.sh) reuses the
# wheels the host already has; the default keeps no cache in the layer.
ARG UV_NO_CACHE=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Java and Maven only resolve the connector jars here (dlpipe.localstack.install, the same code as
# `dlpipe install`); neither Maven nor the JDK reaches the final image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jdk-headless maven \
 && rm -rf /var/lib/apt/lists/*
# --break-system-packages: Debian's own python3.11 refuses pip installs otherwise (PEP 668);
# uv only lives in this build stage.
RUN python3.11 -m pip install --no-cache-dir --break-system-packages "uv==${UV_VERSION}"
# UV_SYSTEM_CERTS: uv trusts the system's CA store, as pip and Maven do (a base that adds a
# proxy's CA, like scripts/image.sh's, then works for all three).
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy \
    UV_SYSTEM_CERTS=1
WORKDIR /src
COPY requirements.lock setup.cfg pyproject.toml README.md ./
RUN uv venv --python "$(command -v python3.11)" /opt/venv \
 && uv pip sync --python /opt/venv/bin/python requirements.lock
# The GPU build swaps the CPU TensorFlow wheel for the CUDA one (same version, same API).
RUN if [ "$TF_VARIANT" = "gpu" ]; then \
      uv pip uninstall --python /opt/venv/bin/python tensorflow-cpu \
      && uv pip install --python /opt/venv/bin/python "tensorflow[and-cuda]==2.21.0"; \
    fi
# The connector jars go into Spark's own jars folder, so every spark-submit in the image (the
# Spark operator's included) has them on its classpath without --jars. They depend only on the
# installer and its pins, copied alone: a change elsewhere in dlpipe/ resolves nothing again.
COPY dlpipe/__init__.py dlpipe/
COPY dlpipe/core/__init__.py dlpipe/core/errors.py dlpipe/core/progress.py dlpipe/core/
COPY dlpipe/localstack/__init__.py dlpipe/localstack/install.py dlpipe/localstack/maven.py \
     dlpipe/localstack/versions.py dlpipe/localstack/
RUN DLPIPE_HOME=/opt/dlpipe/tools PYTHONPATH=/src python -c \
    "from dlpipe.localstack.install import install_spark_jars, locate; install_spark_jars(locate())" \
 && cp /opt/dlpipe/tools/spark-jars*/*.jar /opt/venv/lib/python3.11/site-packages/pyspark/jars/ \
 && rm -rf /root/.m2
# -- build: the project itself, in a tree of its own (the venv's layout) that the runtime stage
# lays over the venv; the venv comes from `deps`, which a code change leaves as it was, so the
# runtime stage's copy of it stays cached (buildah keys COPY --from on the stage's image).
FROM deps AS build
COPY dlpipe/ dlpipe/
COPY models/ models/
COPY spark_jobs/ spark_jobs/
RUN uv pip install --python /opt/venv/bin/python --no-deps --target /opt/project/site-packages . \
 && mkdir -p /opt/project/venv/lib/python3.11 /opt/project/venv/bin \
 && mv /opt/project/site-packages/bin/* /opt/project/venv/bin/ \
 && rmdir /opt/project/site-packages/bin \
 && mv /opt/project/site-packages /opt/project/venv/lib/python3.11/

# -- runtime --------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG TARGETARCH=amd64
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
LABEL org.opencontainers.image.title="dlpipe" \
      org.opencontainers.image.description="Kafka -> Spark -> Delta -> TFRecord -> TensorFlow -> serving" \
      org.opencontainers.image.licenses="Apache-2.0"
# A JRE for Spark, tini as PID 1 (Spark's entrypoint uses it), procps for Spark's scripts.
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini procps \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 dlpipe \
 && useradd --uid 10001 --gid 10001 --home-dir /home/dlpipe --create-home --shell /usr/sbin/nologin dlpipe
COPY --from=deps /opt/venv /opt/venv
COPY --from=deps /opt/dlpipe/tools /opt/dlpipe/tools
COPY --from=build /opt/project/venv/ /opt/venv/
COPY --chmod=0755 docker/spark-entrypoint.sh /opt/entrypoint.sh
COPY conf/ /opt/dlpipe/conf/
COPY spark_jobs/ /opt/dlpipe/spark_jobs/
# Spark's GPU discovery script (spark.executor.resource.gpu.discoveryScript): the GPUs the
# container sees, as {"name": "gpu", "addresses": [...]}. The single quotes are deliberate:
# the script's own variables expand when Spark runs it, not at build time.
# hadolint ignore=SC2016
RUN mkdir -p /opt/dlpipe/bin \
 && printf '%s\n' '#!/usr/bin/env bash' 'set -euo pipefail' \
      'ADDRS=$(nvidia-smi --query-gpu=index --format=csv,noheader | paste -sd, - | sed "s/,/\",\"/g")' \
      'echo "{\"name\": \"gpu\", \"addresses\": [\"$ADDRS\"]}"' > /opt/dlpipe/bin/get-gpus-resources.sh \
 && chmod 0755 /opt/dlpipe/bin/get-gpus-resources.sh
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-${TARGETARCH} \
    SPARK_HOME=/opt/venv/lib/python3.11/site-packages/pyspark \
    PATH=/opt/venv/bin:/opt/venv/lib/python3.11/site-packages/pyspark/bin:$PATH \
    PYSPARK_PYTHON=/opt/venv/bin/python \
    PYSPARK_DRIVER_PYTHON=/opt/venv/bin/python \
    DLPIPE_HOME=/opt/dlpipe/tools \
    HADOOP_USER_NAME=dlpipe \
    DLPIPE_CONFIG=/opt/dlpipe/conf/pipeline.yaml \
    TF_USE_LEGACY_KERAS=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /opt/dlpipe
USER 10001:10001
# The server's liveness endpoint; Spark pods and the storage initializer are checked by
# Kubernetes and the Spark operator instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8501/healthz', timeout=4).status != 200)"]
EXPOSE 8500 8501
ENTRYPOINT ["/opt/entrypoint.sh"]
CMD ["dlpipe", "--help"]
