"""The chart on the local Kubernetes with the Spark operator built from source (issue 19,
stage 4): the operator's own chart (``helm`` from its source tree) runs its controller and
webhook in dlpipe's operator image (``scripts/image.sh operator``); dlpipe's chart, installed in
a namespace that enforces the ``restricted`` Pod Security Standard, has the operator submit the
streaming ingest ``SparkApplication``, whose driver and executor pods the webhook hardens and
Pod Security admission lets in, and which ingests what the producer sends exactly once; and the
serving Deployment (the ``dlpipe serve`` backend: no ``tensorflow/serving`` image can be pulled
here) becomes Ready and answers a prediction through its Service's cluster IP; and the retrain
and score ``ScheduledSparkApplication``s each run once. ``make test`` runs the serving test only
(``spark_on_k8s`` marks the minutes-long ones for ``make test-k8s``)."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
import yaml

from dlpipe.core.config import Config
from dlpipe.core.errors import ServiceError
from dlpipe.core.s3 import s3_client
from dlpipe.localstack.k8s import SPARK_OPERATOR_IMAGE, ControlPlane, spark_operator_source
from dlpipe.registry.release import promote
from dlpipe.registry.store import complete_versions
from tests.deploy.tools import CHART
from tests.helpers import assert_exactly_once, read_delta_with_delta_rs, send, wait_for
from tests.integration.test_serve_faults import BODY, publish_probe
from tests.k8s.conftest import IMAGE, component_secrets, helm, kubectl, report, restricted_namespace

pytestmark = pytest.mark.k8s
NAMESPACE, OPERATOR_NAMESPACE = "apps", "spark-operator"
# The chart's own layout (helm/dlpipe/templates/_helpers.tpl), so the identities' grants fit it.
CHART_LAYOUT = {"ingest.checkpoint": "s3a://dlpipe-checkpoints/ingest/raw-images",
                "tables.clean": "s3a://dlpipe-lake/tables/clean_images",
                "tables.quarantine": "s3a://dlpipe-lake/tables/quarantine",
                "tables.ingest_batches": "s3a://dlpipe-lake/tables/ingest_batches",
                "tables.predictions": "s3a://dlpipe-lake/tables/predictions"}


@pytest.fixture(scope="module")
def pod_stack_overrides() -> dict[str, str]:
    return CHART_LAYOUT


def available(node: ControlPlane, namespace: str, deployment: str) -> bool:
    got = json.loads(node.kubectl("get", "deployment", deployment, "-n", namespace, "-o", "json"))
    conditions = got["status"].get("conditions", [])
    return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)


@pytest.fixture(scope="module")
def operator(node: ControlPlane, tmp_path_factory) -> str:
    """The Spark operator's chart, from its source, watching NAMESPACE (made here: the
    operator's chart puts objects of its own into the namespaces it watches)."""
    restricted_namespace(node, NAMESPACE)
    node.load(SPARK_OPERATOR_IMAGE)
    source = spark_operator_source()
    for crd in sorted((source / "config" / "crd" / "bases").glob("*.yaml")):
        node.kubectl("apply", "--server-side", "-f", str(crd))
    registry, _, rest = SPARK_OPERATOR_IMAGE.partition("/")
    repository, _, tag = rest.partition(":")
    helm(node, tmp_path_factory.mktemp("helm"), "install", "spark-operator",
         str(source / "charts" / "spark-operator-chart"), "-n", OPERATOR_NAMESPACE, "--create-namespace",
         "--skip-crds", "--set", f"image.registry={registry}", "--set", f"image.repository={repository}",
         "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
         "--set", f"spark.jobNamespaces={{{NAMESPACE}}}", "--set", "spark.serviceAccount.create=false",
         "--set", "spark.rbac.create=false", "--set", "prometheus.metrics.enable=false",
         "--set", "controller.uiService.enable=false")
    for deployment in ("spark-operator-controller", "spark-operator-webhook"):
        wait_for(lambda d=deployment: available(node, OPERATOR_NAMESPACE, d), 300, f"{deployment} available",
                 explain=lambda: report(node))
    return OPERATOR_NAMESPACE


@pytest.fixture(scope="module")
def release(node: ControlPlane, pod_stack: Config, operator: str, tmp_path_factory) -> dict:
    """dlpipe's chart in the restricted namespace, pointed at the node-address stack."""
    component_secrets(node, pod_stack, NAMESPACE, ("ingest", "retrain", "score", "serve"))
    model = f"probe-k8s-{uuid.uuid4().hex[:6]}"
    tmp = tmp_path_factory.mktemp("release")
    assert publish_probe(pod_stack, model, "k8s", tmp) == 1
    repository, _, tag = IMAGE.partition(":")
    small = {"cores": 1, "coreRequest": "250m", "coreLimit": "1", "memory": "1g"}
    values = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "s3": {"endpoint": pod_stack.s3_endpoint, "existingSecret": "dlpipe-s3-ingest",
               "componentSecrets": {"ingest": "dlpipe-s3-ingest", "retrain": "dlpipe-s3-retrain",
                                    "score": "dlpipe-s3-score", "serving": "dlpipe-s3-serve"}},
        "kafka": {"bootstrapServers": pod_stack.kafka_bootstrap_servers,
                  "rawTopic": pod_stack.kafka.topics["raw"].name},
        "model": {"name": model},
        "ingest": {"driver": small, "executor": {**small, "instances": 1}},
        # Every minute, but suspended until the scheduled test lets them run once.
        "retrain": {"schedule": "*/1 * * * *", "suspend": True, "workers": 2, "args": ["--epochs", "1"],
                    "driver": small, "executor": {**small, "memoryOverhead": "2g"}},
        "score": {"schedule": "*/1 * * * *", "suspend": True, "driver": small,
                  "executor": {**small, "instances": 1, "memoryOverhead": "2g"}},
        "maintain": {"enabled": False},
        "serving": {"replicaCount": 1, "tfServing": {"enabled": False},
                    "dlpipeServer": {"resources": {"requests": {"cpu": "100m", "memory": "512Mi"},
                                                   "limits": {"cpu": "1", "memory": "2Gi"}}}},
    }
    (tmp / "values.yaml").write_text(yaml.safe_dump(values))
    # The API server reaches the operator's webhook through its Service, which works only once
    # kube-proxy has programmed it; a call before that leaves the node (on the CI machine, into
    # its TLS proxy: "x509: certificate is valid for pypi.org, ..."). A server-side dry run of
    # the rendered chart goes through the same webhooks, so install once it passes.
    rendered = helm(node, tmp, "template", "dlpipe", str(CHART), "-n", NAMESPACE, "--validate",
                    "-f", str(tmp / "values.yaml"))
    def dry_run():
        return kubectl(node, "apply", "--dry-run=server", "-n", NAMESPACE, "-f", "-",
                       stdin=rendered, check=False)

    wait_for(lambda: dry_run().returncode == 0,
             120, "the Spark operator's webhook to answer a server-side dry run of the chart",
             every_s=2, explain=lambda: dry_run().stderr[-2000:])
    helm(node, tmp, "install", "dlpipe", str(CHART), "-n", NAMESPACE, "-f", str(tmp / "values.yaml"))
    return {"model": model, "values": values}


def app_state(node: ControlPlane, name: str) -> str:
    app = json.loads(node.kubectl("get", "sparkapplication", name, "-n", NAMESPACE, "-o", "json"))
    return app.get("status", {}).get("applicationState", {}).get("state", "")


@pytest.mark.spark_on_k8s  # minutes: make test-k8s runs it, make test does not
def test_the_operator_runs_the_charts_streaming_ingest_exactly_once(node, pod_stack, release, tmp_path):
    def running() -> bool:
        state = app_state(node, "dlpipe-ingest")
        assert state not in ("FAILED", "SUBMISSION_FAILED"), node.kubectl(
            "get", "sparkapplication", "dlpipe-ingest", "-n", NAMESPACE, "-o", "yaml")
        return state == "RUNNING"

    wait_for(running, 300, "the ingest SparkApplication to be RUNNING",
                 explain=lambda: report(node))
    sent = send(pod_stack, tmp_path / "sent.jsonl", count=120, bad_fraction=0.05)

    last: list[BaseException] = []

    def ingested() -> bool:
        try:
            assert_exactly_once(pod_stack, sent)
            return True
        except Exception as exc:  # no table yet, or not every batch written yet
            last[:] = [exc]
            return False

    wait_for(ingested, 300, f"the streaming ingest to hold every record exactly once ({last})", every_s=5)
    driver = json.loads(node.kubectl("get", "pod", "dlpipe-ingest-driver", "-n", NAMESPACE, "-o", "json"))
    context = driver["spec"]["containers"][0]["securityContext"]
    assert context["runAsNonRoot"] is True and context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert driver["spec"]["serviceAccountName"] == "dlpipe-spark"


def test_the_serving_deployment_answers_through_its_service(node, release):
    wait_for(lambda: available(node, NAMESPACE, "dlpipe-serving"), 300, "the serving Deployment",
                 explain=lambda: report(node))
    service = json.loads(node.kubectl("get", "service", "dlpipe-serving", "-n", NAMESPACE, "-o", "json"))
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] in ("http", "rest"))
    url = f"http://{service['spec']['clusterIP']}:{port}/v1/models/{release['model']}:predict"
    answer = httpx.post(url, json=BODY, timeout=60)  # the cluster IP, through kube-proxy
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["class_name"] == "k8s"


@pytest.mark.spark_on_k8s
def test_the_scheduled_retrain_then_score_each_run_once(node, pod_stack, release):
    """Runs after the ingest above (module order). Retrain first: it exports the clean table and
    trains on it with two workers in two executor pods, publishing a version that scoring can
    use (the probe model serving answers with has no bytes signature); then the score run writes
    a prediction for every clean record."""
    client, bucket, model = s3_client(pod_stack), pod_stack.buckets.models, release["model"]
    retrain = run_once(node, "dlpipe-retrain")
    assert_completed(node, retrain)
    versions = [info["version"] for info in complete_versions(client, bucket, model)]
    assert versions == [1, 2], versions  # the probe, then the retrained model
    # One epoch on a hundred images may miss the training checks: promote it as an operator would
    # (`dlpipe models promote 2 --force`), so scoring uses it.
    promote(client, bucket, model, 2, reason="k8s test: score the retrained version", force=True)
    score = run_once(node, "dlpipe-score")
    assert_completed(node, score)
    clean = read_delta_with_delta_rs(pod_stack, CHART_LAYOUT["tables.clean"]).to_pyarrow_table(columns=["id"])
    predictions = read_delta_with_delta_rs(pod_stack, CHART_LAYOUT["tables.predictions"]).to_pyarrow_table()
    assert clean.num_rows > 0
    assert sorted(predictions.column("id").to_pylist()) == sorted(clean.column("id").to_pylist())


def state(app: dict) -> str:
    return app.get("status", {}).get("applicationState", {}).get("state", "")


def run_once(node: ControlPlane, scheduled: str) -> dict:
    """Let ``scheduled`` run (every minute) until one run has finished, then suspend it again;
    that run."""
    def finished() -> dict | None:
        apps = json.loads(node.kubectl("get", "sparkapplications", "-n", NAMESPACE, "-o", "json"))["items"]
        done = [a for a in apps if state(a) in ("COMPLETED", "FAILED", "SUBMISSION_FAILED") and any(
            o["kind"] == "ScheduledSparkApplication" and o["name"] == scheduled
            for o in a["metadata"].get("ownerReferences", []))]
        return done[0] if done else None

    def suspend(value: bool) -> None:
        node.kubectl("patch", "scheduledsparkapplication", scheduled, "-n", NAMESPACE, "--type=merge",
                     "-p", json.dumps({"spec": {"suspend": value}}))

    suspend(False)
    try:
        return wait_for(finished, 900, f"a run of {scheduled} to finish", every_s=5,
                 explain=lambda: report(node))
    finally:
        suspend(True)


def assert_completed(node: ControlPlane, run: dict) -> None:
    assert state(run) == "COMPLETED", f"{run['status']}\n{_driver_log(node, run['metadata']['name'])}"


def _driver_log(node: ControlPlane, app: str) -> str:
    """The driver's log without Spark's INFO lines and JVM stack frames: what failed."""
    try:
        log = node.kubectl("logs", f"{app}-driver", "-n", NAMESPACE)
    except ServiceError as exc:  # the driver pod may be gone already
        return f"(no driver log: {exc})"
    kept = [line for line in log.splitlines() if " INFO " not in line and not line.startswith("\tat ")]
    return "\n".join(kept[-80:])
