"""Ingest's Prometheus metrics from Spark progress reports and sink stats (no Spark needed)."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from spark_jobs.ingest.metrics import IngestMetrics, kafka_lag

PROGRESS = {
    "inputRowsPerSecond": 120.5, "processedRowsPerSecond": 300.0,
    "durationMs": {"triggerExecution": 2500},
    "sources": [{"description": "KafkaV2[Subscribe[raw]]",
                 "startOffset": '{"raw": {"0": 10, "1": 5}}',
                 "endOffset": '{"raw": {"0": 40, "1": 25}}',
                 "latestOffset": '{"raw": {"0": 100, "1": 25}}'}],
}


def test_kafka_lag_is_newest_minus_processed_offsets_per_topic():
    assert kafka_lag(PROGRESS["sources"]) == {"raw": 60}
    assert kafka_lag([{"description": "rate", "endOffset": "7"}]) == {}, "not Kafka: skipped"
    assert kafka_lag([{"latestOffset": {"t": {"0": 5}}, "endOffset": None}]) == {"t": 5}


def sample(metrics: IngestMetrics, name: str, **labels: str) -> float:
    text = generate_latest(metrics.registry).decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == {"query": "ingest-q", **labels}:
                return s.value
    raise AssertionError(f"no sample {name} {labels}")


def test_progress_and_batches_become_rates_lag_and_outcome_counters():
    m = IngestMetrics("ingest-q")
    m.on_progress(PROGRESS)
    m.on_batch({"clean": 90, "quarantined": 8, "duplicates": 2,
                "reasons": {"BAD_IMAGE": 5, "MISSING_LABEL": 3}})
    assert sample(m, "dlpipe_ingest_input_rows_per_second") == 120.5
    assert sample(m, "dlpipe_ingest_processed_rows_per_second") == 300.0
    assert sample(m, "dlpipe_ingest_kafka_lag_records", topic="raw") == 60
    assert sample(m, "dlpipe_ingest_batch_duration_seconds_sum") == 2.5
    assert sample(m, "dlpipe_ingest_rows_total", outcome="clean") == 90
    assert sample(m, "dlpipe_ingest_rows_total", outcome="duplicate") == 2
    assert sample(m, "dlpipe_ingest_quarantined_rows_total", reason="BAD_IMAGE") == 5
    assert sample(m, "dlpipe_ingest_batches_total") == 1
