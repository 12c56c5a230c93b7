"""A Kubernetes control plane on loopback, from binaries built from source
(``scripts/install_k8s.sh``): etcd, kube-apiserver, kube-controller-manager and kube-scheduler,
started and stopped like the local stack (``dlpipe k8s up | down | status``; issue 19, stage 2),
with CoreDNS and, on the node, kube-proxy (``k8s_network``; stage 3).

Without a node it still gives what no static check does: real admission. The chart installed
into a namespace that enforces the ``restricted`` Pod Security Standard goes through the API
server's validation, the CRDs' schemas and, once the controller manager makes a Deployment's
pods, Pod Security admission of each pod.

Everything lives in ``<state_dir>/k8s``: a self-signed serving certificate (also the CA the
kubeconfigs trust), the service-account signing key, static bearer tokens for the admin, the
controllers, the node, CoreDNS and kube-proxy (the file is 0600), and one kubeconfig each.
etcd and the controllers listen on 127.0.0.1; the API server and CoreDNS on the node address
(``stack.k8s.node_ip``, a second address on ``lo``), because pods reach them there and the
``kubernetes`` Service may not point at a loopback address. Nothing listens beyond ``lo``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dlpipe.core.config import Config
from dlpipe.core.errors import MissingToolError, ServiceError
from dlpipe.core.process import Service
from dlpipe.localstack import k8s_network, k8s_node
from dlpipe.localstack.certs import issue, self_signed, signing_key
from dlpipe.localstack.install import tools_home

KUBE_VERSION = "v1.34.4"  # scripts/install_k8s.sh builds this one
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
            "kube-proxy", "coredns")
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"  # scripts/install_k8s.sh's PAUSE_IMAGE
SPARK_OPERATOR_VERSION = "v2.5.2"  # scripts/install_k8s.sh's SPARK_OPERATOR_VERSION
# scripts/image.sh operator builds it
SPARK_OPERATOR_IMAGE = f"localhost/dlpipe-spark-operator:{SPARK_OPERATOR_VERSION}"
SERVICE_CIDR, SERVICE_IP = "10.0.0.0/24", "10.0.0.1"
API_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local")


def bin_dir(home: Path | None = None) -> Path:
    return (home or tools_home()) / "k8s" / KUBE_VERSION / "bin"


def spark_operator_source(home: Path | None = None) -> Path:
    """The Spark operator's source tree (its chart and CRDs), kept by scripts/install_k8s.sh."""
    return bin_dir(home).parent / "spark-operator"


def missing_binaries(home: Path | None = None) -> list[str]:
    return [name for name in (*BINARIES, "kubectl") if not (bin_dir(home) / name).is_file()]


def require_binaries() -> Path:
    if lacking := missing_binaries():
        raise MissingToolError(f"Kubernetes {KUBE_VERSION} is not built: {', '.join(lacking)} missing "
                               f"in {bin_dir()}",
                               fix="scripts/install_k8s.sh  (builds them from the Go module proxy; "
                                   "about 9 minutes for kube-apiserver on 2 cores)")
    return bin_dir()


@dataclass(frozen=True)
class ControlPlane:
    """Where one state dir's control plane keeps its files, and its ports."""
    home: Path
    host: str
    etcd_port: int
    etcd_peer_port: int
    api_port: int
    controller_manager_port: int
    scheduler_port: int
    node_ip: str
    pod_cidr: str
    kubelet_port: int
    kubelet_healthz_port: int
    kube_proxy_healthz_port: int
    kube_proxy_metrics_port: int
    dns_ready_port: int
    image_store: Path

    @classmethod
    def of(cls, cfg: Config) -> ControlPlane:
        k = cfg.stack.k8s
        home = cfg.stack.state_dir / "k8s"
        store = k.image_store.expanduser() if k.image_store else home / "node" / "containerd"
        return cls(home, cfg.stack.host, k.etcd_port, k.etcd_peer_port,
                   k.api_port, k.controller_manager_port, k.scheduler_port, k.node_ip, k.pod_cidr,
                   k.kubelet_port, k.kubelet_healthz_port, k.kube_proxy_healthz_port,
                   k.kube_proxy_metrics_port, k.dns_ready_port, store)

    @property
    def node_home(self) -> Path:
        return self.home / "node"

    @property
    def server(self) -> str:
        return f"https://{self.node_ip}:{self.api_port}"

    @property
    def ca(self) -> Path:
        return self.home / "pki" / "apiserver.crt"

    def kubeconfig(self, who: str = "admin") -> Path:
        return self.home / f"{who}.kubeconfig"

    def prepare(self) -> None:
        """Certificates, keys, tokens and kubeconfigs, made once and kept."""
        pki = self.home / "pki"
        ips = (self.host, self.node_ip, SERVICE_IP)
        sans = pki / "apiserver.sans"
        if self.ca.is_file() and (not sans.is_file() or sans.read_text() != " ".join(ips)):
            shutil.rmtree(pki)  # made for other addresses: everything it signed goes with it
            shutil.rmtree(self.node_home / "pki", ignore_errors=True)
        if not self.ca.is_file():
            self_signed(pki, "apiserver", ips=ips, names=API_NAMES, days=365)
            sans.write_text(" ".join(ips))
        if not (pki / "service-account.key").is_file():
            signing_key(pki / "service-account.key", pki / "service-account.pub")
        if not (pki / "apiserver-kubelet-client.crt").is_file():  # logs and exec through kubelet
            issue(self.ca, pki / "apiserver.key", pki, "apiserver-kubelet-client",
                  common_name="kube-apiserver-kubelet-client", organization="system:masters")
        tokens = pki / "tokens.json"
        users = {"admin": ("dlpipe-admin", "system:masters"),
                 "controller-manager": ("system:kube-controller-manager", ""),
                 "scheduler": ("system:kube-scheduler", ""),
                 "node": (f"system:node:{k8s_node.NODE_NAME}", "system:nodes"),
                 "coredns": (k8s_network.COREDNS_USER, ""),
                 "kube-proxy": ("system:kube-proxy", "")}  # bound to system:node-proxier by default
        made = json.loads(tokens.read_text()) if tokens.is_file() else {}
        if set(made) != set(users):
            made = {who: made.get(who) or secrets.token_urlsafe(32) for who in users}
            _private_write(tokens, json.dumps(made))
        _private_write(pki / "tokens.csv", "".join(
            f'{made[who]},{user},{user},"{group}"\n' for who, (user, group) in users.items()))
        for who in users:
            _private_write(self.kubeconfig(who), _kubeconfig(self.server, self.ca, made[who], who))

    def services(self) -> list[Service]:
        b, pki, host = require_binaries(), self.home / "pki", self.host
        def api_ready() -> bool:
            ctx = ssl.create_default_context(cafile=str(self.ca))  # made by prepare() before start
            with urllib.request.urlopen(f"{self.server}/readyz", timeout=2, context=ctx) as r:
                return r.status == 200

        def insecure_ok(port: int) -> bool:  # the controllers' self-signed serving certs
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            with urllib.request.urlopen(f"https://{host}:{port}/healthz", timeout=2, context=ctx) as r:
                return r.status == 200

        def etcd_ok() -> bool:
            with urllib.request.urlopen(f"http://{host}:{self.etcd_port}/health", timeout=2) as r:
                return json.loads(r.read()).get("health") == "true"

        etcd = Service(
            name="etcd", argv=[
                str(b / "etcd"), "--name", "dlpipe", "--data-dir", str(self.home / "etcd"),
                "--listen-client-urls", f"http://{host}:{self.etcd_port}",
                "--advertise-client-urls", f"http://{host}:{self.etcd_port}",
                "--listen-peer-urls", f"http://{host}:{self.etcd_peer_port}",
                "--initial-advertise-peer-urls", f"http://{host}:{self.etcd_peer_port}",
                "--initial-cluster", f"dlpipe=http://{host}:{self.etcd_peer_port}",
                "--log-level", "warn"],
            log=self.home / "etcd.log", pid_file=self.home / "etcd.pid",
            ports=[self.etcd_port, self.etcd_peer_port], healthy=etcd_ok, host=host)
        apiserver = Service(
            name="kube-apiserver", argv=[
                str(b / "kube-apiserver"), f"--etcd-servers=http://{host}:{self.etcd_port}",
                f"--bind-address={self.node_ip}", f"--advertise-address={self.node_ip}",
                f"--secure-port={self.api_port}",
                f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--token-auth-file={pki / 'tokens.csv'}", "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'service-account.pub'}",
                f"--service-account-signing-key-file={pki / 'service-account.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}", "--allow-privileged=false",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                f"--kubelet-certificate-authority={self.ca}", "--kubelet-preferred-address-types=InternalIP",
                f"--cert-dir={self.home / 'apiserver'}"],
            log=self.home / "kube-apiserver.log", pid_file=self.home / "kube-apiserver.pid",
            ports=[self.api_port], healthy=api_ready, host=self.node_ip)
        def controller(name: str, who: str, port: int, *flags: str) -> Service:
            """A controller that reaches the API server as ``who`` and serves /healthz."""
            kubeconfig = self.kubeconfig(who)
            return Service(
                name=name, argv=[
                    str(b / name), f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
                    f"--authorization-kubeconfig={kubeconfig}", f"--bind-address={host}",
                    f"--secure-port={port}", f"--cert-dir={self.home / who}", "--leader-elect=false", *flags],
                log=self.home / f"{name}.log", pid_file=self.home / f"{name}.pid", ports=[port],
                healthy=lambda: insecure_ok(port), host=host)

        controller_manager = controller(
            "kube-controller-manager", "controller-manager", self.controller_manager_port,
            f"--service-account-private-key-file={pki / 'service-account.key'}", f"--root-ca-file={self.ca}",
            "--use-service-account-credentials=true", f"--service-cluster-ip-range={SERVICE_CIDR}")
        scheduler = controller("kube-scheduler", "scheduler", self.scheduler_port)

        def prepare_coredns() -> None:
            (self.home / "Corefile").write_text(k8s_network.corefile(
                node_ip=self.node_ip, ready_port=self.dns_ready_port, kubeconfig=self.kubeconfig("coredns")))
            self.kubectl("apply", "-f", "-", stdin=json.dumps(k8s_network.COREDNS_RBAC))

        coredns = k8s_network.coredns_service(self.home, b / "coredns", node_ip=self.node_ip,
                                              ready_port=self.dns_ready_port, prepare=prepare_coredns)
        return [etcd, apiserver, controller_manager, scheduler, coredns]

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        """kubectl as the admin; a failure names the command and kubectl's error."""
        done = subprocess.run([str(bin_dir() / "kubectl"), f"--kubeconfig={self.kubeconfig()}", *args],
                              capture_output=True, text=True, input=stdin, timeout=120)
        if done.returncode != 0:
            raise ServiceError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()[-500:]}",
                               fix=f"see {self.home / 'kube-apiserver.log'}")
        return done.stdout

    def node_services(self) -> list[Service]:
        node, b = self.node_home, bin_dir()

        def prepare_kubelet() -> None:
            pki = node / "pki"
            if not (pki / "kubelet.crt").is_file():
                issue(self.ca, self.home / "pki" / "apiserver.key", pki, "kubelet",
                      common_name=f"system:node:{k8s_node.NODE_NAME}", ips=(self.node_ip,))
            (node / "kubelet.json").write_text(k8s_node.kubelet_config(
                node, node_ip=self.node_ip, port=self.kubelet_port, healthz_port=self.kubelet_healthz_port,
                client_ca=self.ca, pod_cidr=self.pod_cidr, cluster_dns=self.node_ip))

        def prepare_kube_proxy() -> None:
            (node / "kube-proxy.json").write_text(k8s_network.kube_proxy_config(
                kubeconfig=self.kubeconfig("kube-proxy"), pod_cidr=self.pod_cidr,
                node_name=k8s_node.NODE_NAME, healthz_port=self.kube_proxy_healthz_port,
                metrics_port=self.kube_proxy_metrics_port))

        return [k8s_node.containerd_service(node),
                k8s_node.kubelet_service(node, b / "kubelet", self.kubeconfig("node"), node_ip=self.node_ip,
                                         healthz_port=self.kubelet_healthz_port, prepare=prepare_kubelet),
                k8s_network.kube_proxy_service(node, b / "kube-proxy", prepare=prepare_kube_proxy,
                                               healthz_port=self.kube_proxy_healthz_port)]

    def up(self, *, node: bool = True, timeout_s: float = 120) -> list[str]:
        """Start what is not running (etcd first, the node last); returns what this call
        started. With ``node``, the pause image is imported into containerd too."""
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        k8s_node.ensure_address(self.node_ip)  # the API server and CoreDNS listen there
        self.prepare()
        started = [s.name for s in self.services() if s.start(timeout_s)]
        if node:
            k8s_node.require_node_tools()
            (self.node_home / "cni").mkdir(parents=True, exist_ok=True)
            (self.node_home / "cni" / "10-dlpipe.conflist").write_text(k8s_node.cni_config(self.pod_cidr))
            (self.node_home / "containerd.toml").write_text(
                k8s_node.containerd_config(self.node_home, PAUSE_IMAGE, self.image_store))
            containerd, kubelet, kube_proxy = self.node_services()
            started += ["containerd"] if containerd.start(timeout_s) else []
            if PAUSE_IMAGE not in k8s_node.image_ids(self.node_home):
                k8s_node.import_archive(self.node_home, bin_dir().parent / "images" / "pause.oci.tar")
            started += ["kubelet"] if kubelet.start(timeout_s) else []
            started += ["kube-proxy"] if kube_proxy.start(timeout_s) else []
        return started

    def down(self, timeout_s: float = 20) -> list[str]:
        containerd, kubelet, kube_proxy = self.node_services()
        stopped = ["kube-proxy"] if kube_proxy.stop(timeout_s) else []
        if stopped:
            k8s_network.cleanup_rules(bin_dir() / "kube-proxy")
        stopped += ["kubelet"] if kubelet.stop(timeout_s) else []
        if containerd.pid() is not None:
            k8s_node.stop_pods(self.node_home)
        stopped += ["containerd"] if containerd.stop(timeout_s) else []
        return stopped + [s.name for s in reversed(self.services()) if s.stop(timeout_s)]

    def status(self) -> dict[str, str]:
        return {s.name: s.status() for s in (*self.services(), *self.node_services())}

    def load(self, image: str) -> None:
        """Copy ``image`` from the local containers storage (buildah's) into the node's
        containerd, unless the same image is there already (its ID is kept beside the store).

        A Docker archive streamed from ``buildah push`` into ``ctr images import -``: an OCI
        archive cannot stream (buildah lays it out in a temporary folder first), and the file
        in between doubled the disk a 5 GB image needed and took a third of the time."""
        image_id = subprocess.run(
            ["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}", image],
            capture_output=True, text=True)
        if image_id.returncode != 0:
            raise MissingToolError(f"no image {image} in the local containers storage",
                                   fix="make image  (scripts/image.sh build)")
        stamp = self.image_store / "stamps" / (image.replace("/", "_").replace(":", "_") + ".id")
        if stamp.is_file() and stamp.read_text() == image_id.stdout.strip() and \
                image in k8s_node.image_ids(self.node_home):
            return
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)
        k8s_node.import_stream(self.node_home, ["buildah", "push", "--quiet", image,
                                                f"docker-archive:/dev/stdout:{image}"], what=image)
        stamp.write_text(image_id.stdout.strip())
        k8s_node.prune_replaced_images(self.node_home)  # the store holds one build per tag


def _private_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _kubeconfig(server: str, ca: Path, token: str, who: str) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "dlpipe",
        "clusters": [{"name": "dlpipe", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": who, "user": {"token": token}}],
        "contexts": [{"name": "dlpipe", "context": {"cluster": "dlpipe", "user": who}}],
    }, indent=2)
