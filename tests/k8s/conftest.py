"""What the Kubernetes tests share: a cluster config on free ports in a given state dir."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dlpipe.core.config import Config, load_config
from dlpipe.core.process import free_ports
from dlpipe.localstack.identities import identity_env
from dlpipe.localstack.install import tools_home
from dlpipe.localstack.k8s import KUBE_VERSION, ControlPlane, bin_dir, missing_binaries
from dlpipe.localstack.stack import Stack, running_stack
from tests.conftest import ROOT
from tests.deploy.tools import tool
from tests.helpers import wait_for

IMAGE = "localhost/dlpipe:dev"
# The cluster itself (etcd) starts empty every module.
STATE_DIR = ROOT / ".dlpipe" / "test-k8s"
# The node's images outlive the runs and the clones (a few minutes and ~10 GB to load anew),
# as buildah's storage they come from does; one test node uses them at a time.
IMAGE_STORE = tools_home() / "k8s" / "test-node-images"
PORTS = ("api_port", "etcd_port", "etcd_peer_port", "controller_manager_port", "scheduler_port",
         "kubelet_port", "kubelet_healthz_port", "kube_proxy_healthz_port", "kube_proxy_metrics_port",
         "dns_ready_port")


def cluster(state_dir: Path) -> ControlPlane:
    """The cluster of ``state_dir`` on free ports; fails naming the fix if it is not built."""
    if lacking := missing_binaries():
        pytest.fail(f"Kubernetes {KUBE_VERSION} is not built ({', '.join(lacking)})\n"
                    "  fix: make k8s  (scripts/install_k8s.sh)", pytrace=False)
    return ControlPlane.of(load_config(ROOT / "conf" / "pipeline.yaml", overrides={
        "stack.state_dir": str(state_dir), "stack.k8s.image_store": str(IMAGE_STORE),
        **{f"stack.k8s.{key}": port for key, port in zip(PORTS, free_ports(len(PORTS)), strict=True)}}))


@pytest.fixture(scope="module")
def node() -> Iterator[ControlPlane]:
    """The cluster with its node and dlpipe's image (``make image``) loaded, in ``STATE_DIR``."""
    plane = cluster(STATE_DIR)
    plane.down()  # whatever a killed run left running
    shutil.rmtree(plane.home / "etcd", ignore_errors=True)
    try:
        plane.up(node=True)
        plane.load(IMAGE)
        wait_for(lambda: node_condition(plane, "Ready"), 120, "the node to be Ready",
                 explain=lambda: report(plane))
        yield plane
    finally:
        plane.down()


def nodes(plane: ControlPlane) -> list[dict]:
    """The cluster's nodes (none when the API server does not answer)."""
    listed = kubectl(plane, "get", "nodes", "-o", "json", check=False).stdout
    return json.loads(listed or '{"items": []}')["items"]


def node_condition(plane: ControlPlane, kind: str) -> bool:
    return any(c["type"] == kind and c["status"] == "True"
               for n in nodes(plane) for c in n["status"].get("conditions", []))


def report(plane: ControlPlane, namespace: str | None = None) -> str:
    """What a timed-out wait shows: the node's conditions that are not as they should be (a
    DiskPressure taint leaves every pod Pending), the pods, and the latest events, and the
    node's free disk."""
    lines = []
    for n in nodes(plane):
        for c in n["status"].get("conditions", []):
            if (c["type"] == "Ready") != (c["status"] == "True"):
                lines.append(f"node {c['type']}={c['status']}: {c.get('message', '')}")
        lines += [f"node taint {t['key']}:{t['effect']}" for t in n["spec"].get("taints", [])]
    scope = ("-n", namespace) if namespace else ("-A",)
    lines.append(kubectl(plane, "get", "pods", *scope, "-o", "wide", check=False).stdout.strip())
    events = kubectl(plane, "get", "events", *scope, "--sort-by=.lastTimestamp", check=False).stdout
    lines += events.strip().splitlines()[-25:]
    free = shutil.disk_usage(plane.image_store if plane.image_store.exists() else plane.home).free
    lines.append(f"free disk where the node's images are: {free / 2**30:.1f} GiB")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def pod_stack_overrides() -> dict[str, str]:
    """Config keys a test module's stack differs in (a module overrides this fixture)."""
    return {}


@pytest.fixture(scope="module")
def pod_stack(node: ControlPlane, pod_stack_overrides: dict[str, str]) -> Iterator[Config]:
    """Kafka and MinIO (and their identities) on the node address, where pods reach them (the
    test stack listens on 127.0.0.1, which a pod cannot reach); empty for each module."""
    state_dir = ROOT / ".dlpipe" / "test-k8s-stack"
    cfg = load_config(ROOT / "conf" / "pipeline.yaml", overrides={
        "stack.state_dir": str(state_dir), "stack.host": node.node_ip, **pod_stack_overrides})
    Stack.from_config(cfg).down()  # whatever a killed run left
    shutil.rmtree(state_dir, ignore_errors=True)
    with running_stack(cfg, use_free_ports=True) as stack:
        yield stack.cfg


def kubectl(plane: ControlPlane, *args: str, check: bool = True, stdin: str | None = None
            ) -> subprocess.CompletedProcess[str]:
    """kubectl as the admin; with ``check``, a failure fails the test with kubectl's error."""
    proc = subprocess.run([str(bin_dir() / "kubectl"), f"--kubeconfig={plane.kubeconfig()}", *args],
                          capture_output=True, text=True, timeout=120, input=stdin)
    assert not check or proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr[-3000:]}"
    return proc


def helm(plane: ControlPlane, home: Path, *args: str, timeout: float = 600) -> str:
    """helm against ``plane``, its cache and config under ``home``; its output."""
    done = subprocess.run([str(tool("helm")), *args, "--kubeconfig", str(plane.kubeconfig())],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HELM_CACHE_HOME": str(home / "c"),
                               "HELM_CONFIG_HOME": str(home / "h")})
    assert done.returncode == 0, f"helm {' '.join(args[:3])}: {done.stderr[-4000:]}"
    return done.stdout


def restricted_namespace(node: ControlPlane, name: str) -> None:
    """A namespace that enforces the ``restricted`` Pod Security Standard, once the controller
    manager has given it its default service account."""
    kubectl(node, "create", "namespace", name)
    kubectl(node, "label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=latest")
    account = ("get", "serviceaccount", "default", "-n", name)
    wait_for(lambda: kubectl(node, *account, check=False).returncode == 0, 60,
             f"namespace {name}'s default service account")


def component_secrets(node: ControlPlane, cfg: Config, namespace: str, components: tuple[str, ...]) -> None:
    """A Secret ``dlpipe-s3-<component>`` with each component's MinIO identity (least
    privilege, as the chart's ``s3.componentSecrets``); the keys go on stdin, never argv."""
    for component in components:
        keys = identity_env(cfg, component)
        node.kubectl("apply", "-f", "-", stdin=json.dumps({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": f"dlpipe-s3-{component}", "namespace": namespace},
            "stringData": {"access-key": keys[cfg.s3.access_key_env],
                           "secret-key": keys[cfg.s3.secret_key_env]}}))
