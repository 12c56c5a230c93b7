"""The chart against a real Kubernetes API server (issue 19, stage 2 without a node): etcd,
kube-apiserver, the controller manager and the scheduler built from source
(``scripts/install_k8s.sh``) and started by ``dlpipe k8s up`` on loopback. A namespace that
enforces the ``restricted`` Pod Security Standard takes the whole chart through the API
server's validation and the Spark operator's CRD schemas, the controller manager turns the
serving Deployment into pods that Pod Security admission lets in, and a pod without the
chart's hardening is refused: real admission, which kubeconform cannot give. ``make test-k8s`` runs this."""

from __future__ import annotations

import json
import subprocess

import pytest

from dlpipe.localstack.k8s import (
    KUBE_VERSION,
    SPARK_OPERATOR_VERSION,
    ControlPlane,
    spark_operator_source,
)
from tests.deploy.tools import CHART
from tests.helpers import wait_for
from tests.k8s.conftest import cluster, helm, kubectl, restricted_namespace

pytestmark = pytest.mark.k8s
NAMESPACE = "dlpipe"


@pytest.fixture(scope="module")
def plane(tmp_path_factory) -> ControlPlane:
    plane = cluster(tmp_path_factory.mktemp("k8s-state"))
    plane.up(node=False)
    yield plane
    plane.down()


def spark_operator_crds() -> list[str]:
    """The CRDs of the Spark operator built from source (scripts/install_k8s.sh spark-operator):
    v1beta2 as the chart writes it, with the core SecurityContext (seccompProfile) embedded."""
    found = sorted(str(p) for p in (spark_operator_source() / "config" / "crd" / "bases").glob(
        "sparkoperator.k8s.io_*sparkapplications.yaml"))
    if len(found) != 2:
        pytest.fail(f"the Spark operator {SPARK_OPERATOR_VERSION} source is not in "
                    f"{spark_operator_source()}\n  fix: scripts/install_k8s.sh spark-operator  (make k8s)",
                    pytrace=False)
    return found


def test_the_control_plane_is_the_pinned_release_on_loopback_only(plane):
    version = json.loads(kubectl(plane, "version", "-o", "json").stdout)["serverVersion"]
    assert version["gitVersion"] == KUBE_VERSION
    # The API server on the node address, which lives on lo: nothing beyond this machine.
    assert plane.server.startswith(f"https://{plane.node_ip}:")
    lo = subprocess.run(["ip", "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True).stdout
    assert f" {plane.node_ip}/" in lo, lo
    tokens = plane.home / "pki" / "tokens.csv"
    assert oct(tokens.stat().st_mode & 0o777) == "0o600"
    assert oct(plane.kubeconfig().stat().st_mode & 0o777) == "0o600"
    anonymous = subprocess.run(["curl", "-s", "--cacert", str(plane.ca), f"{plane.server}/api/v1/secrets"],
                               capture_output=True, text=True).stdout
    assert '"code": 403' in anonymous or '"code": 401' in anonymous, anonymous


def test_a_restricted_namespace_admits_the_chart_and_refuses_an_unhardened_pod(plane, tmp_path):
    for crd in spark_operator_crds():
        kubectl(plane, "apply", "--server-side", "-f", crd)
    restricted_namespace(plane, NAMESPACE)
    kubectl(plane, "create", "secret", "generic", "dlpipe-s3", "-n", NAMESPACE,
            "--from-literal=access-key=dlpipe-test", "--from-literal=secret-key=dlpipe-test-secret")
    helm(plane, tmp_path, "install", "dlpipe", str(CHART), "-n", NAMESPACE,
         "-f", str(CHART / "ci" / "default-values.yaml"), "--wait=false", timeout=300)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in json.loads(kubectl(
        plane, "get", "sparkapplications,scheduledsparkapplications,deployments,services,networkpolicies",
        "-n", NAMESPACE, "-o", "json").stdout)["items"]}
    assert ("SparkApplication", "dlpipe-ingest") in kinds, kinds
    assert sum(kind == "ScheduledSparkApplication" for kind, _ in kinds) == 3, kinds

    # The controller manager makes the serving pods; Pod Security admission lets them in.
    def serving_pods() -> list[dict]:
        items = json.loads(kubectl(plane, "get", "pods", "-n", NAMESPACE, "-o", "json").stdout)["items"]
        return [p for p in items if "serving" in p["metadata"]["name"]]

    pods = wait_for(serving_pods, 60, "the serving Deployment's pods")
    events = kubectl(plane, "get", "events", "-n", NAMESPACE, "-o", "json").stdout
    assert "violates PodSecurity" not in events, events[-3000:]
    assert pods[0]["spec"]["securityContext"]["runAsNonRoot"] is True

    # A pod without the chart's securityContext (root allowed, privilege escalation, all
    # capabilities, no seccomp profile) is refused by Pod Security admission itself.
    refused = kubectl(plane, "run", "unhardened", "-n", NAMESPACE, "--image=localhost/dlpipe:dev",
                      check=False)
    assert refused.returncode != 0, refused.stdout
    assert 'violates PodSecurity "restricted:latest"' in refused.stderr, refused.stderr
    for rule in ("allowPrivilegeEscalation != false", "runAsNonRoot != true", "seccompProfile"):
        assert rule in refused.stderr, rule


def test_the_spark_applications_keep_their_seccomp_profile(plane):
    """Runs after the install above (module order): what the API server stored. The operator
    v1beta2 CRDs of chart 1.1.26 pruned seccompProfile, so the operator's pods would have failed
    restricted admission; the v2 operator's CRDs keep it."""
    app = json.loads(kubectl(plane, "get", "sparkapplication", "dlpipe-ingest", "-n", NAMESPACE,
                             "-o", "json").stdout)
    for role in ("driver", "executor"):
        context = app["spec"][role]["securityContext"]
        assert context["runAsNonRoot"] is True and context["capabilities"] == {"drop": ["ALL"]}, context
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, context
        assert app["spec"][role]["podSecurityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
