"""Cluster networking for the local Kubernetes (issue 19, stage 3): CoreDNS and kube-proxy,
both built from source by ``scripts/install_k8s.sh`` and run on the host beside the kubelet.

Spark on Kubernetes needs both. Its executors reach the driver by the name of the driver's
headless Service (``<app>-driver-svc.<namespace>.svc``): that is cluster DNS. Its driver, like
the Spark operator, finds the API server as the ``kubernetes`` Service's cluster IP from inside
a pod: that is kube-proxy's DNAT to the API server's advertised address.

CoreDNS answers on the node address, port 53, and kubelet's ``clusterDNS`` names that address
directly, so no Service or iptables rule sits in the DNS path. It watches the API server with a
token whose only rights are to list and watch what DNS answers from (``COREDNS_RBAC``); every
other name goes to the host's resolver. kube-proxy runs in iptables mode and is told not to
touch conntrack sysctls or route_localnet (this sandbox's kernel settings are not its to change);
``dlpipe k8s down`` removes its rules again (``kube-proxy --cleanup``).
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

from dlpipe.core.process import Service

COREDNS_USER = "dlpipe:coredns"
COREDNS_RBAC = {"apiVersion": "v1", "kind": "List", "items": [
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
     "metadata": {"name": "dlpipe:coredns"},
     "rules": [{"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                "verbs": ["list", "watch"]},
               {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                "verbs": ["list", "watch"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": {"name": "dlpipe:coredns"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "dlpipe:coredns"},
     "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": COREDNS_USER}]},
]}


def corefile(*, node_ip: str, ready_port: int, kubeconfig: Path, domain: str = "cluster.local") -> str:
    return f""".:53 {{
    bind {node_ip}
    errors
    ready 127.0.0.1:{ready_port}
    kubernetes {domain} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} dlpipe
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    forward . /etc/resolv.conf
    cache 30
    loop
}}
"""


def coredns_service(home: Path, binary: Path, *, node_ip: str, ready_port: int,
                    prepare: Callable[[], None]) -> Service:
    """CoreDNS on ``node_ip:53``; healthy once its Kubernetes watch has synced (``/ready``).
    ``prepare`` writes the Corefile and grants the RBAC (the API server is up by then)."""
    def healthy() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{ready_port}/ready", timeout=2) as r:
            return r.status == 200

    return Service(name="coredns", argv=[str(binary), "-conf", str(home / "Corefile")],
                   log=home / "coredns.log", pid_file=home / "coredns.pid", ports=[53, ready_port],
                   healthy=healthy, host=node_ip, prepare=prepare)


def kube_proxy_config(*, kubeconfig: Path, pod_cidr: str, node_name: str, healthz_port: int,
                      metrics_port: int) -> str:
    """KubeProxyConfiguration (JSON is YAML). Zero conntrack limits and timeouts mean "leave the
    kernel's as they are"; no localhost node ports, so no route_localnet."""
    return json.dumps({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)}, "hostnameOverride": node_name,
        "mode": "iptables", "clusterCIDR": pod_cidr,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}", "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "iptables": {"localhostNodePorts": False},
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s",
                      "udpTimeout": "0s", "udpStreamTimeout": "0s"},
    }, indent=2)


def kube_proxy_service(home: Path, binary: Path, *, healthz_port: int,
                       prepare: Callable[[], None]) -> Service:
    def healthy() -> bool:  # 200 once it has programmed the rules at least once
        with urllib.request.urlopen(f"http://127.0.0.1:{healthz_port}/healthz", timeout=2) as r:
            return r.status == 200

    return Service(name="kube-proxy", argv=[str(binary), f"--config={home / 'kube-proxy.json'}"],
                   log=home / "kube-proxy.log", pid_file=home / "kube-proxy.pid", ports=[healthz_port],
                   healthy=healthy, prepare=prepare)


def cleanup_rules(binary: Path) -> None:
    """Remove the iptables chains kube-proxy made (they outlive it)."""
    subprocess.run([str(binary), "--cleanup"], capture_output=True, timeout=60)
