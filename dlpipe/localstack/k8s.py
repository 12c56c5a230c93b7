"""A Kubernetes control plane on loopback, from binaries built from source
(``scripts/install_k8s.sh``): etcd, kube-apiserver, kube-controller-manager and kube-scheduler,
started and stopped like the local stack (``dlpipe k8s up | down | status``; issue 19, stage 2).

Without a node it still gives what no static check does: real admission. The chart installed
into a namespace that enforces the ``restricted`` Pod Security Standard goes through the API
server's validation, the CRDs' schemas and, once the controller manager makes a Deployment's
pods, Pod Security admission of each pod.

Everything lives in ``<state_dir>/k8s``: a self-signed serving certificate (also the CA the
kubeconfigs trust), the service-account signing key, static bearer tokens for the admin and the
two controllers (the file is 0600), and one kubeconfig each. Nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dlpipe.core.config import Config
from dlpipe.core.errors import MissingToolError
from dlpipe.core.process import Service
from dlpipe.localstack.certs import self_signed, signing_key
from dlpipe.localstack.install import tools_home

KUBE_VERSION = "v1.34.4"  # scripts/install_k8s.sh builds this one
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
SERVICE_CIDR, SERVICE_IP = "10.0.0.0/24", "10.0.0.1"
API_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local")


def bin_dir(home: Path | None = None) -> Path:
    return (home or tools_home()) / "k8s" / KUBE_VERSION / "bin"


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

    @classmethod
    def of(cls, cfg: Config) -> ControlPlane:
        k = cfg.stack.k8s
        return cls(cfg.stack.state_dir / "k8s", cfg.stack.host, k.etcd_port, k.etcd_peer_port,
                   k.api_port, k.controller_manager_port, k.scheduler_port)

    @property
    def server(self) -> str:
        return f"https://{self.host}:{self.api_port}"

    @property
    def ca(self) -> Path:
        return self.home / "pki" / "apiserver.crt"

    def kubeconfig(self, who: str = "admin") -> Path:
        return self.home / f"{who}.kubeconfig"

    def prepare(self) -> None:
        """Certificates, keys, tokens and kubeconfigs, made once and kept."""
        pki = self.home / "pki"
        if not self.ca.is_file():
            self_signed(pki, "apiserver", ips=(self.host, SERVICE_IP), names=API_NAMES, days=365)
        if not (pki / "service-account.key").is_file():
            signing_key(pki / "service-account.key", pki / "service-account.pub")
        tokens = pki / "tokens.json"
        if not tokens.is_file():
            made = {who: secrets.token_urlsafe(32) for who in ("admin", "controller-manager", "scheduler")}
            _private_write(tokens, json.dumps(made))
        made = json.loads(tokens.read_text())
        users = {"admin": ("dlpipe-admin", "system:masters"),
                 "controller-manager": ("system:kube-controller-manager", ""),
                 "scheduler": ("system:kube-scheduler", "")}
        _private_write(pki / "tokens.csv", "".join(
            f'{made[who]},{user},{user},"{group}"\n' for who, (user, group) in users.items()))
        for who in users:
            _private_write(self.kubeconfig(who), _kubeconfig(self.server, self.ca, made[who], who))

    def services(self) -> list[Service]:
        b, pki, host = require_binaries(), self.home / "pki", self.host
        context = ssl.create_default_context(cafile=str(self.ca)) if self.ca.is_file() else None

        def https_ok(port: int, path: str = "/readyz") -> bool:
            ctx = context or ssl.create_default_context(cafile=str(self.ca))
            with urllib.request.urlopen(f"https://{host}:{port}{path}", timeout=2, context=ctx) as r:
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
                f"--bind-address={host}", f"--advertise-address={host}", f"--secure-port={self.api_port}",
                f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--token-auth-file={pki / 'tokens.csv'}", "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'service-account.pub'}",
                f"--service-account-signing-key-file={pki / 'service-account.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}", "--allow-privileged=false",
                f"--cert-dir={self.home / 'apiserver'}"],
            log=self.home / "kube-apiserver.log", pid_file=self.home / "kube-apiserver.pid",
            ports=[self.api_port], healthy=lambda: https_ok(self.api_port), host=host)
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
        return [etcd, apiserver, controller_manager, scheduler]

    def up(self, timeout_s: float = 120) -> list[str]:
        """Start what is not running (etcd first); returns what this call started."""
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        self.prepare()
        return [s.name for s in self.services() if s.start(timeout_s)]

    def down(self, timeout_s: float = 20) -> list[str]:
        return [s.name for s in reversed(self.services()) if s.stop(timeout_s)]

    def status(self) -> dict[str, str]:
        return {s.name: s.status() for s in self.services()}


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
