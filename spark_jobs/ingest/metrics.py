"""Ingest's Prometheus metrics, from Spark's own progress reports and from the sink.

A ``StreamingQueryListener`` turns each micro-batch's progress into rates, the batch
duration and the Kafka lag (per topic: the newest offsets Kafka reported minus the offsets the
batch processed up to); the sink adds rows by outcome and quarantine reason, which Spark does
not know. ``dlpipe_ingest_last_progress_timestamp_seconds`` moves on every progress and idle
report, so an alert can tell "stalled" (it stops moving) from "nothing to do" (it moves).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

BATCH_SECONDS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


class IngestMetrics:
    def __init__(self, query: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.query = query
        r = self.registry = CollectorRegistry()
        q = ["query"]
        self.input_rate = Gauge("dlpipe_ingest_input_rows_per_second",
                                "Rows per second arriving from Kafka (last micro-batch)", q, registry=r)
        self.processed_rate = Gauge("dlpipe_ingest_processed_rows_per_second",
                                    "Rows per second processed (last micro-batch)", q, registry=r)
        self.batch_seconds = Histogram("dlpipe_ingest_batch_duration_seconds",
                                       "Micro-batch duration (trigger execution)", q,
                                       buckets=BATCH_SECONDS, registry=r)
        self.batches = Counter("dlpipe_ingest_batches", "Micro-batches completed", q, registry=r)
        self.rows = Counter("dlpipe_ingest_rows", "Rows by outcome: clean, quarantined, duplicate",
                            [*q, "outcome"], registry=r)
        self.quarantined = Counter("dlpipe_ingest_quarantined_rows", "Quarantined rows by reason",
                                   [*q, "reason"], registry=r)
        self.lag = Gauge("dlpipe_ingest_kafka_lag_records",
                         "Records in Kafka not yet processed (newest minus processed offsets)",
                         [*q, "topic"], registry=r)
        self.last_progress = Gauge("dlpipe_ingest_last_progress_timestamp_seconds",
                                   "When the query last reported progress or idleness", q, registry=r)
        self.last_progress.labels(query).set(time.time())

    # -- from Spark's progress ------------------------------------------------------------
    def on_progress(self, progress: Mapping[str, Any]) -> None:
        q = self.query
        self.input_rate.labels(q).set(float(progress.get("inputRowsPerSecond") or 0.0))
        self.processed_rate.labels(q).set(float(progress.get("processedRowsPerSecond") or 0.0))
        millis = (progress.get("durationMs") or {}).get("triggerExecution")
        if millis is not None:
            self.batch_seconds.labels(q).observe(millis / 1000)
        self.batches.labels(q).inc()
        for topic, lag in kafka_lag(progress.get("sources") or []).items():
            self.lag.labels(q, topic).set(lag)
        self.last_progress.labels(q).set(time.time())

    def on_idle(self) -> None:
        self.last_progress.labels(self.query).set(time.time())

    # -- from the sink ----------------------------------------------------------------------
    def on_batch(self, stats: Mapping[str, Any]) -> None:
        q = self.query
        for outcome, key in (("clean", "clean"), ("quarantined", "quarantined"),
                             ("duplicate", "duplicates")):
            self.rows.labels(q, outcome).inc(int(stats.get(key) or 0))
        for reason, n in (stats.get("reasons") or {}).items():
            self.quarantined.labels(q, str(reason)).inc(int(n))


def kafka_lag(sources: list[Mapping[str, Any]]) -> dict[str, int]:
    """Per topic: sum over partitions of latest minus end offset (Spark reports both as JSON
    text like ``{"topic": {"0": 42}}``); a source without them (not Kafka) is skipped."""
    lag: dict[str, int] = {}
    for source in sources:
        latest, end = _offsets(source.get("latestOffset")), _offsets(source.get("endOffset"))
        for topic, partitions in latest.items():
            done = end.get(topic, {})
            lag[topic] = lag.get(topic, 0) + sum(
                max(0, int(newest) - int(done.get(p, 0))) for p, newest in partitions.items())
    return lag


def _offsets(value: Any) -> dict[str, dict[str, int]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def make_listener(metrics: IngestMetrics) -> Any:
    """A StreamingQueryListener feeding ``metrics`` (pyspark imported only when called)."""
    from pyspark.sql.streaming import StreamingQueryListener

    class Listener(StreamingQueryListener):
        def onQueryStarted(self, event: Any) -> None:
            pass

        def onQueryProgress(self, event: Any) -> None:
            metrics.on_progress(json.loads(event.progress.json))

        def onQueryIdle(self, event: Any) -> None:
            metrics.on_idle()

        def onQueryTerminated(self, event: Any) -> None:
            pass

    return Listener()
