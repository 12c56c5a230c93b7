"""The image (issue 19, stage 1), built without Docker (``scripts/image.sh``: a Debian base by
mmdebstrap, the Dockerfile by buildah) and run by podman on the host network against the test
stack: the CLI as its non-root user, a Spark job through ``spark-submit`` with only the
connector jars baked into the image, and ``dlpipe serve`` answering a prediction. Each
workload runs under its own MinIO identity, as its pod would."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import httpx
import pytest

from dlpipe.core.config import with_overrides
from dlpipe.core.process import free_ports
from dlpipe.localstack.identities import identity_env
from tests.conftest import ROOT
from tests.helpers import assert_exactly_once, isolated, isolated_sets, send, wait_for
from tests.integration.test_serve_faults import BODY, publish_probe

pytestmark = pytest.mark.integration

IMAGE_SH = ROOT / "scripts" / "image.sh"


@pytest.fixture(scope="module")
def image() -> str:
    name = subprocess.run([IMAGE_SH, "name"], capture_output=True, text=True, check=True).stdout.strip()
    exists = subprocess.run(["podman", "image", "exists", name], capture_output=True)
    if exists.returncode != 0:
        pytest.fail(f"the image {name} is not built\n  fix: make image  (scripts/image.sh build)",
                    pytrace=False)
    return name


def container_env(cfg, component: str) -> dict[str, str]:
    """What the chart gives a pod (endpoints, a writable state dir) and one identity's keys."""
    return {"DLPIPE__S3__ENDPOINT": cfg.s3_endpoint,
            "DLPIPE__KAFKA__BOOTSTRAP_SERVERS": cfg.kafka_bootstrap_servers,
            "DLPIPE__BUCKETS__MODELS": cfg.buckets.models,
            "DLPIPE__STACK__STATE_DIR": "/tmp/dlpipe", "DLPIPE__TRACKING__ENABLED": "false",
            "DLPIPE__MONITORING__ENABLED": "false", **identity_env(cfg, component)}


def podman_args(env: Mapping[str, str]) -> list[str]:
    # Names only on the command line: the values (keys among them) go through the environment.
    return [a for name in env for a in ("--env", name)]


def run_in_image(image: str, *command: str, env: Mapping[str, str] = {}, timeout: float = 300,
                 ) -> subprocess.CompletedProcess:
    return subprocess.run([IMAGE_SH, "run", *podman_args(env), image, *command],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout)


def test_the_image_runs_the_cli_as_its_non_root_user_with_the_jars_baked_in(image):
    out = run_in_image(image, "sh", "-c", "id -u && dlpipe --help && ls $SPARK_HOME/jars && java -version")
    assert out.returncode == 0, out.stderr
    uid, *rest = out.stdout.splitlines()
    assert uid == "10001"
    text = "\n".join(rest)
    assert "serve" in text and "ingest" in text
    for jar in ("delta-spark_", "spark-sql-kafka-0-10_", "hadoop-aws-"):
        assert jar in text, f"{jar}*.jar is not in the image's Spark jars"
    assert 'openjdk version "17' in out.stderr


def test_spark_submit_in_the_image_ingests_from_host_kafka_into_host_minio(image, cfg, tmp_path):
    """spark-submit --master local[2] of the job file the chart's SparkApplication names,
    under the ingest identity (which may write only the lake and its own checkpoint)."""
    run = uuid.uuid4().hex[:8]
    job_cfg = with_overrides(isolated(cfg, "image"),
                             {"ingest.checkpoint": f"{cfg.ingest.checkpoint}-image-{run}"})
    sent = send(job_cfg, tmp_path / "sent.jsonl", count=120, bad_fraction=0.05)
    out = run_in_image(
        image, "spark-submit", "--master", "local[2]", "--conf", "spark.ui.enabled=false",
        "local:///opt/dlpipe/spark_jobs/ingest/job.py", "--once", *isolated_sets(job_cfg),
        env=container_env(cfg, "ingest"), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert_exactly_once(job_cfg, sent)
    key = identity_env(cfg, "ingest")[cfg.s3.access_key_env]
    assert key not in out.stdout + out.stderr


@contextmanager
def serving_container(image: str, cfg, model: str) -> Iterator[str]:
    port, grpc_port = free_ports(2)
    name = f"dlpipe-serve-{uuid.uuid4().hex[:6]}"
    env = {**container_env(cfg, "serve"), "DLPIPE__SERVING__MODEL_DIR": "/tmp/models"}
    proc = subprocess.Popen(
        [IMAGE_SH, "run", "--name", name, *podman_args(env), image, "dlpipe", "serve",
         "--model", model, "--host", "127.0.0.1", "--port", str(port), "--grpc-port", str(grpc_port)],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"dlpipe serve in the image exited: {proc.stdout.read()[-3000:]}")
            try:
                return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 180, "dlpipe serve in the image to be ready")
        yield url
    finally:
        subprocess.run(["podman", "stop", "--time", "10", name], capture_output=True)
        proc.wait(timeout=60)


def test_dlpipe_serve_in_the_image_answers_a_prediction(image, cfg, tmp_path):
    model = f"probe-image-{uuid.uuid4().hex[:6]}"
    assert publish_probe(cfg, model, "image", tmp_path) == 1
    with serving_container(image, cfg, model) as url:
        answer = httpx.post(f"{url}/v1/models/{model}:predict", json=BODY, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"][0]["class_name"] == "image"
        status = httpx.get(f"{url}/v1/models/{model}").json()
        assert status["model_version_status"][0]["state"] == "AVAILABLE"


def test_a_build_that_fails_says_how_much_room_there_is_and_the_fix(image):
    """A build that died of a full disk left only buildah's own error and its working
    containers (10 GB). Now the script names the room where layers live and the fix; an
    argument buildah refuses fails the build at once, the way a full disk fails it later."""
    before = subprocess.run(["buildah", "containers", "-q"], capture_output=True, text=True).stdout
    failed = subprocess.run([IMAGE_SH, "build", "--no-such-buildah-flag"], capture_output=True,
                            text=True, cwd=ROOT, timeout=300)
    assert failed.returncode == 1, failed.stderr
    assert f"image: error: buildah could not build {image}" in failed.stderr, failed.stderr
    assert " GB free in " in failed.stderr and "fix: if it says 'no space left on device': " \
        "scripts/image.sh prune" in failed.stderr, failed.stderr
    after = subprocess.run(["buildah", "containers", "-q"], capture_output=True, text=True).stdout
    assert after == before, "a failed build left working containers"
