"""The local Prometheus: scrapes what announces itself, takes pushed OTLP, evaluates alerts.

Built from its Go module (``dlpipe install``). Its config, written at each start, scrapes
every target listed in the file_sd folder (``monitoring.targets_dir``: ingest and
``dlpipe serve`` add themselves while they run, ``dlpipe.core.telemetry``) plus MLflow and
itself, enables the OTLP receiver that batch jobs push their run figures to, and loads the
alert rules of ``conf/prometheus/alerts.yml``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from dlpipe.core.config import Config
from dlpipe.core.process import Service
from dlpipe.localstack.install import Installed
from dlpipe.localstack.services import _http_ok, private_dir


def rules_file(cfg: Config) -> Path:
    """The alert rules next to the pipeline config (``conf/prometheus/alerts.yml``)."""
    return Path(cfg.source).resolve().parent / "prometheus" / "alerts.yml"


def prometheus_config(cfg: Config) -> dict:
    interval = f"{cfg.stack.prometheus.scrape_interval_s:g}s"
    targets = cfg.metrics_targets_dir
    scrape = [{"job_name": "prometheus", "static_configs": [
        {"targets": [f"{cfg.stack.host}:{cfg.stack.prometheus.port}"]}]}]
    if targets is not None:
        scrape.append({"job_name": "dlpipe", "file_sd_configs": [
            {"files": [str(targets / "*.json")], "refresh_interval": interval}],
            "honor_labels": True})
    rules = rules_file(cfg)
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval,
                   "external_labels": {"pipeline": cfg.pipeline.name}},
        "rule_files": [str(rules)] if rules.is_file() else [],
        "scrape_configs": scrape,
        "otlp": {"promote_resource_attributes": ["pipeline"]},
    }


def prometheus_service(cfg: Config, installed: Installed) -> Service:
    home = cfg.stack.state_dir / "prometheus"
    host, port = cfg.stack.host, cfg.stack.prometheus.port

    def healthy() -> bool:
        return _http_ok(f"http://{host}:{port}/-/ready") is not None

    def prepare() -> None:
        private_dir(home / "data")
        if cfg.metrics_targets_dir is not None:
            cfg.metrics_targets_dir.mkdir(parents=True, exist_ok=True)
        (home / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config(cfg), sort_keys=False))

    return Service(
        name="prometheus",
        argv=[str(installed.prometheus_bin), f"--config.file={home / 'prometheus.yml'}",
              f"--storage.tsdb.path={home / 'data'}", f"--web.listen-address={host}:{port}",
              "--web.enable-otlp-receiver", "--web.enable-lifecycle",
              "--storage.tsdb.retention.time=15d", "--log.level=warn"],
        log=home / "prometheus.log", pid_file=home / "prometheus.pid", ports=[port],
        healthy=healthy, host=host, prepare=prepare,
    )
