"""``dlpipe stack up | down | status``: the local Kafka + MinIO (+ Spark cluster) stack."""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from dlpipe.core.config import CREDENTIALS_FILE, RUNTIME_FILE, Config, with_overrides
from dlpipe.core.process import Service, free_ports
from dlpipe.core.progress import step
from dlpipe.localstack.install import Installed, require_installed
from dlpipe.localstack.services import kafka_service, minio_service, spark_cluster_services

log = logging.getLogger(__name__)


@dataclass
class Stack:
    cfg: Config
    installed: Installed

    @classmethod
    def from_config(cls, cfg: Config) -> Stack:
        from dlpipe.localstack.install import locate

        return cls(cfg=cfg, installed=locate())

    # -- services ----------------------------------------------------------------------
    def core_services(self) -> list[Service]:
        services = [kafka_service(self.cfg, self.installed), minio_service(self.cfg, self.installed)]
        if self.cfg.stack.mlflow.enabled:
            from dlpipe.localstack.tracking import mlflow_service

            services.append(mlflow_service(self.cfg))
        if self.cfg.stack.prometheus.enabled:
            from dlpipe.localstack.monitoring import prometheus_service

            services.append(prometheus_service(self.cfg, self.installed))
        return services

    def cluster_services(self) -> list[Service]:
        return spark_cluster_services(self.cfg)

    def status(self) -> dict[str, str]:
        return {s.name: s.status() for s in [*self.core_services(), *self.cluster_services()]}

    def healthy(self, *, cluster: bool = False) -> bool:
        services = self.core_services() + (self.cluster_services() if cluster else [])
        return all(s.pid() is not None and s.is_healthy() for s in services)

    # -- transitions -------------------------------------------------------------------
    def up(self, *, cluster: bool = False, use_free_ports: bool = False) -> Stack:
        """Start what is not running, then create the configured buckets and topics.

        Returns the stack as it runs (with the ports it actually uses).
        """
        require_installed(self.installed)
        stack = self
        if use_free_ports and not any(s.pid() for s in self.core_services()):
            stack = Stack(with_overrides(self.cfg, _free_port_overrides(self.cfg)), self.installed)
        cfg = stack.cfg
        cfg.stack.state_dir.mkdir(parents=True, exist_ok=True)
        ensure_local_credentials(cfg)
        _write_runtime(cfg)
        timeout = cfg.stack.startup_timeout_s
        begun: list[Service] = []
        try:
            for svc in stack.core_services() + (stack.cluster_services() if cluster else []):
                with step(f"starting {svc.name}") as s:
                    started = svc.start(timeout)
                    s.detail(("started, pid " if started else "already running, pid ") + str(svc.pid()))
                if started:
                    begun.append(svc)
        except BaseException:
            # One service failed: stop the ones this call started, so no half stack is left
            # running on ports nobody will look up (what was already running stays).
            for svc in reversed(begun):
                svc.stop(cfg.stack.stop_timeout_s)
            raise
        with step("creating buckets and topics"):
            from dlpipe.localstack.provision import ensure_buckets, ensure_topics

            ensure_buckets(cfg)
            ensure_topics(cfg)
        with step("creating one MinIO identity per component (least privilege)"):
            from dlpipe.localstack.identities import ensure_identities

            ensure_identities(cfg)
        log.info(f"    S3 endpoint {cfg.s3_endpoint}; Kafka {cfg.kafka_bootstrap_servers}"
                 + (f"; Spark master spark://{cfg.stack.host}:{cfg.stack.spark_cluster.master_port}"
               if cluster else "")
                 + (f"; MLflow http://{cfg.stack.host}:{cfg.stack.mlflow.port}"
                    if cfg.stack.mlflow.enabled else "")
                 + (f"; Prometheus http://{cfg.stack.host}:{cfg.stack.prometheus.port}"
                    if cfg.stack.prometheus.enabled else ""))
        return stack

    def down(self) -> list[str]:
        """Stop every service of this state dir (cluster first); returns what was running."""
        stopped = []
        for svc in reversed(self.core_services() + self.cluster_services()):
            if svc.stop(self.cfg.stack.stop_timeout_s):
                stopped.append(svc.name)
        (self.cfg.stack.state_dir / RUNTIME_FILE).unlink(missing_ok=True)
        return stopped


def _free_port_overrides(cfg: Config) -> dict[str, int]:
    keys = [
        "stack.kafka.port", "stack.kafka.controller_port", "stack.minio.port",
        "stack.minio.console_port", "stack.spark_cluster.master_port",
        "stack.spark_cluster.master_ui_port", "stack.mlflow.port", "stack.prometheus.port",
    ]
    return dict(zip(keys, free_ports(len(keys), cfg.stack.host), strict=True))


def _write_runtime(cfg: Config) -> None:
    """Record the ports in use, so every later command on this state dir finds the stack."""
    s = cfg.stack
    runtime = {
        "kafka": {"port": s.kafka.port, "controller_port": s.kafka.controller_port},
        "minio": {"port": s.minio.port, "console_port": s.minio.console_port},
        "mlflow": {"port": s.mlflow.port},
        "prometheus": {"port": s.prometheus.port},
        "spark_cluster": {"master_port": s.spark_cluster.master_port,
                          "master_ui_port": s.spark_cluster.master_ui_port},
    }
    (s.state_dir / RUNTIME_FILE).write_text(json.dumps(runtime, indent=2) + "\n")


def ensure_local_credentials(cfg: Config) -> None:
    """Create a random MinIO root key pair (mode 0600) unless the environment provides one."""
    if os.environ.get(cfg.s3.access_key_env) and os.environ.get(cfg.s3.secret_key_env):
        return
    path = cfg.stack.state_dir / CREDENTIALS_FILE
    if path.is_file():
        return
    creds = {"access_key": f"dlpipe-{secrets.token_hex(6)}", "secret_key": secrets.token_urlsafe(30)}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(creds, fh)


@contextmanager
def running_stack(cfg: Config, *, cluster: bool = False, use_free_ports: bool = True) -> Iterator[Stack]:
    """The stack of ``cfg``'s state dir: reused if healthy, else started and stopped after."""
    existing = Stack.from_config(cfg)
    if existing.healthy(cluster=cluster):
        yield existing.up(cluster=cluster)  # re-provisions buckets and topics, starts nothing
        return
    started = existing.up(cluster=cluster, use_free_ports=use_free_ports)
    try:
        yield started
    finally:
        started.down()
