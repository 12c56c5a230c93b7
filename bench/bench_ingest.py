"""Ingest throughput (records/s) for 32x32 PNG records against a plain Kafka -> Delta copy.

Both read the same topic from the start with availableNow and write Delta on MinIO in the
same Spark session; both are warmed up on a small topic first, so neither pays the JVM's
first-use costs. Target: the full cleaning job reaches 0.7 of the plain copy.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from bench.harness import Context, Result

TARGET = 0.7


def _topic_cfg(ctx: Context, tag: str):
    from bench.data import ingest_run_overrides
    from dlpipe.core.config import with_overrides
    from dlpipe.localstack.provision import ensure_topics

    run = f"{tag}-{uuid.uuid4().hex[:8]}"
    cfg = with_overrides(ctx.cfg, {
        **ingest_run_overrides(ctx.cfg, run),
        "ingest.max_offsets_per_trigger": 20000,
    })
    ensure_topics(cfg)
    return cfg, run


def _fill(cfg, count: int) -> None:
    from dlpipe.produce.producer import plan_messages, produce
    from dlpipe.produce.sources import synthetic

    msgs = plan_messages(synthetic(size=32), count=count, prefix="syn", source="synthetic-32",
                         now=datetime.now(UTC), bad_fraction=0.0, bad_kinds=[],
                         duplicate_fraction=0.0, schema_version=1,
                         watermark_delay_s=cfg.ingest.watermark_delay_s)
    produce(cfg, msgs, count=count, rate=0, log_path=None)


def plain_copy(spark, cfg, run: str) -> float:
    """Kafka -> Delta with no parsing or checks; returns seconds."""
    started = time.perf_counter()
    query = (spark.readStream.format("kafka")
             .option("kafka.bootstrap.servers", cfg.kafka_bootstrap_servers)
             .option("subscribe", cfg.kafka.topics["raw"].name).option("startingOffsets", "earliest")
             .option("maxOffsetsPerTrigger", "20000").load()
             .writeStream.format("delta").trigger(availableNow=True)
             .option("checkpointLocation", f"s3a://{cfg.buckets.checkpoints}/bench/{run}/copy")
             .start(f"s3a://{cfg.buckets.lake}/bench/{run}/copy"))
    query.awaitTermination()
    return time.perf_counter() - started


def full_ingest(spark, cfg) -> float:
    from spark_jobs.ingest import job

    started = time.perf_counter()
    batches = job.run(spark, cfg, once=True)
    assert sum(b["clean"] for b in batches) > 0
    return time.perf_counter() - started


def run(ctx: Context) -> list[Result]:
    from dlpipe.core.session import get_spark

    count = 5_000 if ctx.quick else 20_000
    spark = get_spark(ctx.cfg, app_name="dlpipe-bench-ingest", master="local[2]",
                      extra_conf={"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2"})
    warm, warm_run = _topic_cfg(ctx, "warm")
    _fill(warm, 500)
    plain_copy(spark, warm, warm_run)
    full_ingest(spark, warm)

    cfg, run_id = _topic_cfg(ctx, "measure")
    _fill(cfg, count)
    copy_s = plain_copy(spark, cfg, run_id)
    ingest_s = full_ingest(spark, cfg)
    return [Result(
        benchmark="ingest", metric="records/s, 32x32 PNG, validate+normalize+dedupe", unit="rec/s",
        value=count / ingest_s, baseline_name="plain Kafka -> Delta copy", baseline_value=count / copy_s,
        target_ratio=TARGET, notes=f"{count} records, local[2], availableNow, 20k per trigger",
    )]
