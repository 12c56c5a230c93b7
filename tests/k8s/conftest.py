"""What the Kubernetes tests share: a cluster config on free ports in a given state dir."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from dlpipe.core.config import Config, load_config
from dlpipe.core.errors import ServiceError
from dlpipe.core.process import free_ports
from dlpipe.localstack.identities import identity_env
from dlpipe.localstack.k8s import KUBE_VERSION, ControlPlane, missing_binaries
from dlpipe.localstack.stack import Stack, running_stack
from tests.conftest import ROOT
from tests.helpers import wait_for

IMAGE = "localhost/dlpipe:dev"
# Kept between runs, so the node's containerd keeps the loaded image (minutes to load anew);
# the cluster itself (etcd) starts empty every module.
STATE_DIR = ROOT / ".dlpipe" / "test-k8s"
PORTS = ("api_port", "etcd_port", "etcd_peer_port", "controller_manager_port", "scheduler_port",
         "kubelet_port", "kubelet_healthz_port", "kube_proxy_healthz_port", "kube_proxy_metrics_port",
         "dns_ready_port")


def cluster(state_dir: Path) -> ControlPlane:
    """The cluster of ``state_dir`` on free ports; fails naming the fix if it is not built."""
    if lacking := missing_binaries():
        pytest.fail(f"Kubernetes {KUBE_VERSION} is not built ({', '.join(lacking)})\n"
                    "  fix: make k8s  (scripts/install_k8s.sh)", pytrace=False)
    return ControlPlane.of(load_config(ROOT / "conf" / "pipeline.yaml", overrides={
        "stack.state_dir": str(state_dir),
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
        yield plane
    finally:
        plane.down()


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


def restricted_namespace(node: ControlPlane, name: str) -> None:
    """A namespace that enforces the ``restricted`` Pod Security Standard, once the controller
    manager has given it its default service account."""
    node.kubectl("create", "namespace", name)
    node.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted",
                 "pod-security.kubernetes.io/enforce-version=latest")
    wait_for(lambda: _has_default_account(node, name), 60, f"namespace {name}'s default service account")


def _has_default_account(node: ControlPlane, namespace: str) -> bool:
    try:
        node.kubectl("get", "serviceaccount", "default", "-n", namespace)
        return True
    except ServiceError:
        return False


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
