"""Spark on the local Kubernetes (issue 19, stage 3): ``spark-submit --master k8s://...
--deploy-mode cluster`` with dlpipe's image runs ``ingest --once``, ``export`` and a 2-worker
``train`` in driver and executor pods, under the chart's Spark service account (its Role,
nothing more) and the chart's restricted securityContext
(``helm/dlpipe/files/spark-pod-template.yaml``), in a namespace that enforces the
``restricted`` Pod Security Standard. The executors find the driver through CoreDNS, the
driver finds the API server through kube-proxy, and both reach Kafka and MinIO on the host at
the node address, where a stack of their own listens (the test stack listens on 127.0.0.1,
which a pod cannot reach). Each job runs as its own MinIO identity; the keys go from a Secret
to the pods' environment and never into the Spark conf."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from dlpipe.core.config import Config, with_overrides
from dlpipe.core.s3 import s3_client
from dlpipe.datasets.manifest import open_manifest
from dlpipe.localstack.identities import identity_env
from dlpipe.localstack.k8s import KUBE_VERSION, ControlPlane
from models.checkpoints import RunStore
from tests.conftest import ROOT
from tests.deploy.tools import CHART
from tests.helpers import assert_exactly_once, isolated, isolated_sets, send
from tests.k8s.conftest import IMAGE, component_secrets, helm, kubectl, restricted_namespace

pytestmark = [pytest.mark.k8s, pytest.mark.spark_on_k8s]  # make test-k8s, not make test
NAMESPACE = "spark-jobs"
RELEASE = "dlpipe"
SERVICE_ACCOUNT = f"{RELEASE}-spark"  # the chart's default: <fullname>-spark
POD_TEMPLATE = CHART / "files" / "spark-pod-template.yaml"
SPARK_SUBMIT = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "spark-submit"


@pytest.fixture(scope="module")
def namespace(node: ControlPlane, pod_stack: Config, tmp_path_factory) -> str:
    """A restricted namespace with the chart's Spark service account and Role, and a Secret
    with each job's MinIO identity."""
    restricted_namespace(node, NAMESPACE)
    rbac = helm(node, tmp_path_factory.mktemp("helm"), "template", RELEASE, str(CHART), "-n", NAMESPACE,
                "-f", str(CHART / "ci" / "default-values.yaml"), "--kube-version", KUBE_VERSION,
                "--show-only", "templates/spark/rbac.yaml")
    node.kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=rbac)
    component_secrets(node, pod_stack, NAMESPACE, ("ingest", "export", "train"))
    return NAMESPACE


def submit_args(node: ControlPlane, cfg: Config, name: str, *, secret: str, executors: int = 1,
                conf: dict[str, str] | None = None) -> list[str]:
    """spark-submit's flags for one dlpipe job in cluster mode (docs/deploy.md shows the same)."""
    env = {"DLPIPE__S3__ENDPOINT": cfg.s3_endpoint,
           "DLPIPE__KAFKA__BOOTSTRAP_SERVERS": cfg.kafka_bootstrap_servers,
           "DLPIPE__STACK__STATE_DIR": "/tmp/dlpipe", "DLPIPE__TRACKING__ENABLED": "false",
           "DLPIPE__MONITORING__ENABLED": "false", "HOME": "/tmp"}
    keys = {cfg.s3.access_key_env: "access-key", "AWS_ACCESS_KEY_ID": "access-key",
            cfg.s3.secret_key_env: "secret-key", "AWS_SECRET_ACCESS_KEY": "secret-key"}
    conf = {
        "spark.kubernetes.namespace": NAMESPACE,
        "spark.kubernetes.container.image": IMAGE,
        "spark.kubernetes.container.image.pullPolicy": "Never",
        "spark.kubernetes.authenticate.driver.serviceAccountName": SERVICE_ACCOUNT,
        "spark.kubernetes.driver.podTemplateFile": str(POD_TEMPLATE),
        "spark.kubernetes.executor.podTemplateFile": str(POD_TEMPLATE),
        "spark.kubernetes.driver.podTemplateContainerName": "spark",
        "spark.kubernetes.executor.podTemplateContainerName": "spark",
        "spark.kubernetes.driver.pod.name": name,
        "spark.kubernetes.executor.podNamePrefix": name,
        "spark.kubernetes.submission.waitAppCompletion": "true",
        # Two cores on this machine: small CPU requests so the driver and executors all fit.
        "spark.kubernetes.driver.request.cores": "0.25",
        "spark.kubernetes.executor.request.cores": "0.25",
        "spark.driver.memory": "1g", "spark.executor.memory": "1g",
        "spark.executor.instances": str(executors), "spark.ui.enabled": "false",
        "spark.kubernetes.driver.deleteOnTermination": "false",
        **{f"spark.kubernetes.driverEnv.{k}": v for k, v in env.items()},
        **{f"spark.executorEnv.{k}": v for k, v in env.items()},
        **{f"spark.kubernetes.{role}.secretKeyRef.{k}": f"{secret}:{key}"
           for role in ("driver", "executor") for k, key in keys.items()},
        **(conf or {}),
    }
    return [str(SPARK_SUBMIT), "--master", f"k8s://{node.server}", "--deploy-mode", "cluster",
            "--name", name, *(a for k, v in conf.items() for a in ("--conf", f"{k}={v}"))]


def spark_submit(node: ControlPlane, args: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    import pyspark

    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env={
        **os.environ, "KUBECONFIG": str(node.kubeconfig()),
        "SPARK_HOME": str(Path(pyspark.__file__).parent)})


def pod(node: ControlPlane, name: str) -> dict:
    return json.loads(kubectl(node, "get", "pod", name, "-n", NAMESPACE, "-o", "json").stdout)


def registered_executors(node: ControlPlane, driver_log: str) -> dict[str, str]:
    """Executor id -> pod address, of the executors that registered with the driver."""
    found = dict((n, ip) for ip, n in re.findall(
        r"Registered executor .*\((\d+\.\d+\.\d+\.\d+):\d+\) with ID (\d+)", driver_log))
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(node.pod_cidr) for ip in found.values())
    return found


def run_job(node: ControlPlane, cfg: Config, name: str, component: str, job: str, *args: str,
            executors: int = 1, conf: dict[str, str] | None = None) -> str:
    """spark-submit one job as ``component``; returns the driver's log, asserting it succeeded."""
    submit = submit_args(node, cfg, name, secret=f"dlpipe-s3-{component}", executors=executors, conf=conf)
    out = spark_submit(node, [*submit, f"local:///opt/dlpipe/spark_jobs/{job}/job.py", *args])
    logs = kubectl(node, "logs", name, "-n", NAMESPACE, check=False).stdout
    assert out.returncode == 0, f"spark-submit failed:\n{out.stderr[-3000:]}\ndriver log:\n{logs[-5000:]}"
    driver = pod(node, name)
    assert driver["status"]["phase"] == "Succeeded", logs[-5000:]
    # The S3 keys came from the Secret: not in the pod spec, spark-submit's output or the log.
    key = identity_env(cfg, component)[cfg.s3.access_key_env]
    assert key not in json.dumps(driver) + out.stdout + out.stderr + logs
    return logs


@pytest.fixture(scope="module")
def ingested(node, pod_stack, namespace, tmp_path_factory) -> Config:
    # The ingest identity may write only under its own checkpoint prefix.
    job_cfg = with_overrides(isolated(pod_stack, "k8s"), {
        "ingest.checkpoint": f"{pod_stack.ingest.checkpoint}-k8s-{uuid.uuid4().hex[:8]}",
        "export.dataset": f"k8s-{uuid.uuid4().hex[:6]}"})
    sent = send(job_cfg, tmp_path_factory.mktemp("k8s") / "sent.jsonl", count=150, bad_fraction=0.05)
    logs = run_job(node, pod_stack, "ingest-once", "ingest", "ingest", "--once", *isolated_sets(job_cfg))
    return job_cfg, sent, logs


def test_ingest_once_in_cluster_mode_is_exactly_once_in_restricted_pods(node, pod_stack, ingested):
    job_cfg, sent, logs = ingested
    assert_exactly_once(job_cfg, sent)
    # The driver ran under the chart's service account and securityContext, and an executor
    # pod registered with it through the driver Service's DNS name (CoreDNS).
    driver = pod(node, "ingest-once")
    assert driver["spec"]["serviceAccountName"] == SERVICE_ACCOUNT
    assert driver["spec"]["securityContext"]["runAsNonRoot"] is True
    container = driver["spec"]["containers"][0]["securityContext"]
    assert container["readOnlyRootFilesystem"] is True and container["capabilities"] == {"drop": ["ALL"]}
    assert len(registered_executors(node, logs)) == 1, logs[-5000:]


@pytest.fixture(scope="module")
def exported(node, pod_stack, ingested):
    job_cfg, _, _ = ingested
    run_job(node, pod_stack, "export", "export", "export", f"--dataset={job_cfg.export.dataset}",
            f"--set=tables.clean={job_cfg.tables.clean}")
    return open_manifest(s3_client(pod_stack), pod_stack.buckets.datasets, job_cfg.export.dataset)


def test_export_in_cluster_mode_publishes_the_pinned_version(ingested, exported):
    job_cfg, sent, _ = ingested
    assert exported.source["table"] == job_cfg.tables.clean
    assert sum(c["records"] for c in exported.counts.values()) == exported.source["rows"] \
        == sum(s["expected"] == "clean" for s in sent)
    assert exported.shards


def test_train_with_two_workers_in_cluster_mode_publishes_a_model(node, pod_stack, ingested, exported):
    """Two barrier tasks, one per executor pod, train one model (MultiWorkerMirroredStrategy
    between the pods) and publish it."""
    job_cfg, _, _ = ingested
    run_id = f"k8s-{uuid.uuid4().hex[:6]}"
    model = f"k8s-{uuid.uuid4().hex[:6]}"
    logs = run_job(node, pod_stack, "train", "train", "train", "--workers=2", "--epochs=1",
                   f"--run-id={run_id}", f"--dataset={job_cfg.export.dataset}",
                   f"--version={exported.prefix.rsplit('/', 1)[1]}", f"--set=training.model_name={model}",
                   executors=2, conf={"spark.executor.memoryOverhead": "2g",
                                      "spark.task.cpus": "1", "spark.executor.cores": "1"})
    assert "train: epoch 1/1" in logs, logs[-5000:]
    assert len(set(registered_executors(node, logs).values())) == 2, logs[-5000:]  # two pods, one worker each
    done = RunStore(s3_client(pod_stack), pod_stack.buckets.checkpoints, run_id).done()
    assert done is not None and done["version"] >= 1, logs[-5000:]
