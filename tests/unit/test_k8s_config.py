"""What ``dlpipe k8s up`` writes before it starts anything: the cluster DNS and kube-proxy
configs (issue 19, stage 3) and the API server certificate for the node address."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest

from dlpipe.core.config import load_config
from dlpipe.localstack import k8s_network, k8s_node
from dlpipe.localstack.k8s import SERVICE_IP, ControlPlane
from tests.conftest import ROOT


def plane(tmp_path, **changes) -> ControlPlane:
    cfg = load_config(ROOT / "conf" / "pipeline.yaml", overrides={"stack.state_dir": str(tmp_path)})
    return replace(ControlPlane.of(cfg), **changes)


def cert_ips(path) -> set[str]:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}


def test_coredns_answers_on_the_node_address_and_reports_ready_on_loopback(tmp_path):
    text = k8s_network.corefile(node_ip="10.98.0.7", ready_port=18181, kubeconfig=tmp_path / "dns.kubeconfig")
    assert "bind 10.98.0.7" in text and "ready 127.0.0.1:18181" in text
    assert f"kubeconfig {tmp_path / 'dns.kubeconfig'} dlpipe" in text
    assert "forward . /etc/resolv.conf" in text  # other names: the host's resolver
    rules = k8s_network.COREDNS_RBAC["items"][0]["rules"]
    assert {verb for rule in rules for verb in rule["verbs"]} == {"list", "watch"}  # read only


def test_kube_proxy_leaves_the_kernels_settings_alone(tmp_path):
    conf = json.loads(k8s_network.kube_proxy_config(
        kubeconfig=tmp_path / "kp", pod_cidr="10.88.0.0/24", node_name="n", healthz_port=1, metrics_port=2))
    assert conf["mode"] == "iptables" and conf["clusterCIDR"] == "10.88.0.0/24"
    assert conf["conntrack"]["maxPerCore"] == 0 and conf["conntrack"]["tcpEstablishedTimeout"] == "0s"
    assert conf["iptables"]["localhostNodePorts"] is False  # no route_localnet sysctl
    assert conf["healthzBindAddress"].startswith("127.0.0.1:")


def test_pods_resolve_through_the_cluster_dns_on_the_node_address(tmp_path):
    conf = json.loads(k8s_node.kubelet_config(tmp_path, node_ip="10.98.0.7", port=1, healthz_port=2,
                                              client_ca=tmp_path / "ca", pod_cidr="10.88.0.0/24",
                                              cluster_dns="10.98.0.7"))
    assert conf["clusterDNS"] == ["10.98.0.7"] and conf["clusterDomain"] == "cluster.local"


def test_the_api_server_certificate_follows_the_node_address(tmp_path):
    first = plane(tmp_path, node_ip="10.98.0.7")
    first.prepare()
    assert {"127.0.0.1", "10.98.0.7", SERVICE_IP} <= cert_ips(first.ca)
    assert first.server == f"https://10.98.0.7:{first.api_port}"
    tokens = json.loads((first.home / "pki" / "tokens.json").read_text())
    assert {"coredns", "kube-proxy"} <= set(tokens)
    first.prepare()  # unchanged: kept
    assert json.loads((first.home / "pki" / "tokens.json").read_text()) == tokens

    moved = replace(first, node_ip="10.98.0.8")
    moved.prepare()  # remade for the new address, with everything it signed
    assert "10.98.0.8" in cert_ips(moved.ca) and "10.98.0.7" not in cert_ips(moved.ca)
    assert json.loads(moved.kubeconfig().read_text())["clusters"][0]["cluster"]["server"] == moved.server


def test_the_nodes_images_live_where_the_config_says_and_disk_pressure_is_absolute(tmp_path):
    own = plane(tmp_path)
    assert own.image_store == tmp_path / "k8s" / "node" / "containerd"  # per state dir by default
    cfg = load_config(ROOT / "conf" / "pipeline.yaml", overrides={
        "stack.state_dir": str(tmp_path), "stack.k8s.image_store": str(tmp_path / "shared")})
    shared = ControlPlane.of(cfg)
    toml = k8s_node.containerd_config(shared.node_home, "pause:1", shared.image_store)
    assert f'root = "{tmp_path / "shared" / "root"}"' in toml  # content and snapshots: shared
    assert f'state = "{shared.node_home / "containerd" / "state"}"' in toml  # sockets, tasks: the node's
    conf = json.loads(k8s_node.kubelet_config(tmp_path, node_ip="10.98.0.7", port=1, healthz_port=2,
                                              client_ca=tmp_path / "ca", pod_cidr="10.88.0.0/24",
                                              cluster_dns="10.98.0.7"))
    # 2% of a 252 GB disk left the node tainted (every pod Pending) with 5 GB free
    assert all(not v.endswith("%") for v in conf["evictionHard"].values())


def test_a_failed_image_load_names_both_sides_without_a_traceback(tmp_path, monkeypatch):
    from dlpipe.core.errors import ServiceError

    # containerd's client as it answers when nothing listens on the socket; on PATH first so
    # the test runs where `make k8s` has not installed containerd yet (make test-unit).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ctr").write_text("#!/bin/sh\ncat >/dev/null\n"
                                 "echo 'ctr: failed to dial: connection refused' >&2\nexit 1\n")
    (bin_dir / "ctr").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    try:  # no containerd on this socket, and a producer that fails on its own
        k8s_node.import_stream(tmp_path, ["sh", "-c", "echo no such image >&2; exit 3"], what="img:1")
    except ServiceError as exc:
        text = str(exc)
    else:
        raise AssertionError("the load should have failed")
    assert "could not load img:1" in text and "containerd:" in text
    assert "sh (exit 3): no such image" in text


def test_a_missing_containerd_client_names_the_install_not_a_filenotfounderror(tmp_path, monkeypatch):
    from dlpipe.core.errors import MissingToolError

    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there: no ctr, no containerd
    with pytest.raises(MissingToolError, match=r"(?s)needs .*ctr.*apt-get install -y containerd"):
        k8s_node.import_stream(tmp_path, ["true"], what="img:1")
