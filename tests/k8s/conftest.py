"""What the Kubernetes tests share: a cluster config on free ports in a given state dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlpipe.core.config import load_config
from dlpipe.core.process import free_ports
from dlpipe.localstack.k8s import KUBE_VERSION, ControlPlane, missing_binaries
from tests.conftest import ROOT

PORTS = ("api_port", "etcd_port", "etcd_peer_port", "controller_manager_port", "scheduler_port",
         "kubelet_port", "kubelet_healthz_port")


def cluster(state_dir: Path) -> ControlPlane:
    """The cluster of ``state_dir`` on free ports; fails naming the fix if it is not built."""
    if lacking := missing_binaries():
        pytest.fail(f"Kubernetes {KUBE_VERSION} is not built ({', '.join(lacking)})\n"
                    "  fix: make k8s  (scripts/install_k8s.sh)", pytrace=False)
    return ControlPlane.of(load_config(ROOT / "conf" / "pipeline.yaml", overrides={
        "stack.state_dir": str(state_dir),
        **{f"stack.k8s.{key}": port for key, port in zip(PORTS, free_ports(len(PORTS)), strict=True)}}))
