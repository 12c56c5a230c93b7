"""Prometheus metrics of one server, in its own registry (no process-global state)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Metrics:
    registry: Any = field(init=False)

    def __post_init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "dlpipe_serve_requests", "Requests answered, by model, API, protocol and status code",
            ["model", "api", "protocol", "code"], registry=self.registry)
        self.latency = Histogram(
            "dlpipe_serve_request_seconds", "Time to answer a request, by model and API",
            ["model", "api", "protocol"], registry=self.registry,
            buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.examples = Counter(
            "dlpipe_serve_examples", "Examples predicted", ["model"], registry=self.registry)
        self.batch_size = Histogram(
            "dlpipe_serve_batch_examples", "Examples per TensorFlow call (server-side batching)",
            registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.loaded_version = Gauge(
            "dlpipe_serve_model_version", "The model version being served (0: none yet)",
            ["model"], registry=self.registry)
        self.released_at = Gauge(
            "dlpipe_serve_model_released_timestamp_seconds",
            "When the served version was released (promoted, rolled back) or published",
            ["model"], registry=self.registry)
        self.samples = Counter(
            "dlpipe_serve_samples", "Predicted examples sampled for drift, by outcome (sent, dropped)",
            ["model", "outcome"], registry=self.registry)
        self.loads = Counter(
            "dlpipe_serve_model_loads", "Model version loads, by outcome",
            ["model", "outcome"], registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
