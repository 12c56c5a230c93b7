"""The node (issue 19, stage 2): containerd from Debian with runc and the CNI bridge, and a
kubelet built from source, registered with the control plane of ``dlpipe k8s up``. dlpipe's
image (``make image``) is loaded into the node's containerd and runs as a pod in a namespace
that enforces the ``restricted`` Pod Security Standard; its logs come back through the API
server, which reaches the kubelet over TLS with a client certificate the kubelet checks."""

from __future__ import annotations

import ipaddress
import json

import pytest

from tests.helpers import wait_for
from tests.k8s.conftest import IMAGE, kubectl, report, restricted_namespace

pytestmark = pytest.mark.k8s
POD = {
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "dlpipe-help", "namespace": "jobs"},
    "spec": {
        "restartPolicy": "Never", "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "dlpipe", "image": IMAGE, "imagePullPolicy": "Never",
            "command": ["sh", "-c", "id -u && dlpipe --help"],
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}},
        }],
    },
}


def test_the_node_registers_and_runs_dlpipes_image_as_a_restricted_pod(node):
    restricted_namespace(node, "jobs")
    kubectl(node, "apply", "-f", "-", stdin=json.dumps(POD))

    def finished() -> dict | None:
        pod = json.loads(kubectl(node, "get", "pod", "dlpipe-help", "-n", "jobs", "-o", "json").stdout)
        return pod if pod["status"].get("phase") in ("Succeeded", "Failed") else None

    pod = wait_for(finished, 180, "the pod to finish", explain=lambda: report(node, "jobs"))
    logs = kubectl(node, "logs", "dlpipe-help", "-n", "jobs").stdout
    assert pod["status"]["phase"] == "Succeeded", (pod["status"], logs)
    assert logs.splitlines()[0] == "10001" and "serve" in logs, logs
    assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(node.pod_cidr)
