"""Prometheus metrics for the pipeline's processes.

Long-running processes (ingest, ``dlpipe serve``) expose ``/metrics`` and announce the
address in a Prometheus ``file_sd`` folder (``monitoring.targets_dir``) while they run, so a
stack-local Prometheus finds them without a config change. Batch jobs (export, train, score)
push their run figures once, when they end, over OTLP/HTTP to Prometheus's own OTLP receiver:
a scrape would miss a job that ends between two scrapes, and this needs no Pushgateway (its
releases are not reachable from here, and Prometheus >= 3 takes OTLP natively). Metric names
arrive as given (no unit, gauges): ``dlpipe_<job>_<figure>``, with the job's labels.

Both are best effort: a Prometheus that is down costs ``monitoring.timeout_s`` and a warning.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from dlpipe.core.config import Config

log = logging.getLogger(__name__)


def push_run_figures(cfg: Config, job: str, figures: Mapping[str, float],
                     labels: Mapping[str, str] | None = None) -> bool:
    """Push ``dlpipe_<job>_<name>`` gauges for one finished run; False if not delivered."""
    endpoint = cfg.otlp_metrics_endpoint
    if endpoint is None or not figures:
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult, MetricsData
        from opentelemetry.sdk.resources import Resource

        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader], resource=Resource.create(
            {"service.name": f"dlpipe-{job}", "service.instance.id": socket.gethostname(),
             "pipeline": cfg.pipeline.name}))
        meter = provider.get_meter("dlpipe")
        for name, value in figures.items():
            meter.create_gauge(f"dlpipe_{job}_{name}").set(float(value), dict(labels or {}))
        data: MetricsData = reader.get_metrics_data()
        provider.shutdown()
        exporter = OTLPMetricExporter(endpoint=endpoint, timeout=cfg.monitoring.timeout_s)
        result = exporter.export(data, timeout_millis=cfg.monitoring.timeout_s * 1000)
        exporter.shutdown()
        if result is not MetricExportResult.SUCCESS:
            raise ConnectionError(f"the OTLP receiver at {endpoint} did not take them")
    except Exception as exc:  # never fail a job for its metrics
        log.warning("metrics: could not push the %s run figures (%s: %s)", job,
                    type(exc).__name__, exc)
        return False
    return True


@contextmanager
def announced(cfg: Config, job: str, port: int, *, host: str = "127.0.0.1",
              labels: Mapping[str, str] | None = None) -> Iterator[Path | None]:
    """While the block runs, list ``host:port`` in the file_sd folder under ``job``."""
    folder = cfg.metrics_targets_dir
    if folder is None:
        yield None
        return
    path = folder / f"{job}-{socket.gethostname()}-{os.getpid()}.json"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        body = [{"targets": [f"{host}:{port}"],
                 "labels": {"job": f"dlpipe-{job}", "pipeline": cfg.pipeline.name, **(labels or {})}}]
        temporary = path.with_suffix(".tmp")  # file_sd reads *.json: never a half-written one
        temporary.write_text(json.dumps(body))
        temporary.replace(path)
    except OSError as exc:
        log.warning("metrics: could not announce %s in %s (%s)", job, folder, exc)
        yield None
        return
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def serve_metrics(registry: CollectorRegistry, *, host: str, port: int) -> tuple[Any, int]:
    """Start prometheus_client's /metrics server (port 0: a free one); returns it and the port."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server, server.server_port


def stop_metrics(server: Any) -> None:
    """Stop a :func:`serve_metrics` server without waiting for it.

    ``shutdown()`` waits for the serving loop's next poll, up to half a second: a third of a
    second at the end of every ``dlpipe ingest --once``. A thread waits instead; the port is
    free a moment later.
    """
    import threading

    def stop() -> None:
        server.shutdown()
        server.server_close()

    threading.Thread(target=stop, name="dlpipe-metrics-stop", daemon=True).start()
