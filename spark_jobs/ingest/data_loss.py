"""Offsets aged out of Kafka while ingest was down: found before the query starts, then
refused or recorded.

Spark's Kafka source with ``failOnDataLoss=true`` fails every start on such a gap, so a driver
under ``restartPolicy: Always`` crash-loops, and the only way out used to be deleting the
checkpoint, which writes quarantine and accounting rows again. Here the checkpoint's last
committed offsets are compared with each partition's earliest offset before the query starts.
``ingest.on_data_loss: fail`` (the default) stops with the gap and the command that accepts
it; ``record`` (or ``dlpipe ingest --accept-data-loss``, once) appends one ``DATA_LOSS`` row
per gap to the accounting table and lets only the catch-up that follows skip it. The
checkpoint stays, and with it exactly-once for everything Kafka still holds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from dlpipe.contract.record import BATCH_COLUMNS
from dlpipe.core.config import Config
from dlpipe.core.errors import DlpipeError
from spark_jobs.ingest.sink import accounting_app_id

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
DATA_LOSS = "DATA_LOSS"  # the accounting row's reason: records Kafka deleted before ingest read them


class DataLossError(DlpipeError):
    """Kafka no longer holds records the checkpoint has not read yet."""


@dataclass(frozen=True)
class Gap:
    """Offsets ``[first, end)`` of one partition: past the checkpoint, gone from Kafka."""
    topic: str
    partition: int
    first: int
    end: int

    @property
    def records(self) -> int:
        return self.end - self.first

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition} offsets {self.first}-{self.end - 1} ({self.records:,} records)"


@dataclass(frozen=True)
class Checkpoint:
    """What the query's checkpoint says: its id, last committed batch and that batch's end offsets."""
    query_id: str
    batch_id: int
    offsets: dict[int, int]


def find_gaps(topic: str, committed: Mapping[int, int], earliest: Mapping[int, int]) -> list[Gap]:
    """The partitions whose next offset to read is below the first one Kafka still holds."""
    return [Gap(topic, p, c, earliest[p]) for p, c in sorted(committed.items())
            if p in earliest and c < earliest[p]]


def parse_offset_log(text: str, topic: str) -> dict[int, int]:
    """The end offsets of ``topic`` in a Spark offset-log file (``v1``, batch metadata, then one
    JSON line per source: ``{"topic": {"0": 123}}``)."""
    for line in text.splitlines()[2:]:
        if line.strip().startswith("{") and topic in (offsets := json.loads(line)):
            return {int(p): int(o) for p, o in offsets[topic].items()}
    return {}


def read_checkpoint(client: S3Client, uri: str, topic: str) -> Checkpoint | None:
    """The checkpoint's last committed batch (None before the first commit)."""
    from dlpipe.core.s3 import child_names, numeric_names, split_uri

    bucket, key = split_uri(uri.rstrip("/"))
    committed = numeric_names(child_names(client, bucket, f"{key}/commits/"))
    if not committed:
        return None

    def text(name: str) -> str:
        return client.get_object(Bucket=bucket, Key=f"{key}/{name}")["Body"].read().decode()

    batch = committed[-1]
    return Checkpoint(json.loads(text("metadata"))["id"], batch,
                      parse_offset_log(text(f"offsets/{batch}"), topic))


def earliest_offsets(cfg: Config, topic: str) -> dict[int, int]:
    """Each partition's first offset Kafka still holds (its log start: retention moves it)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": cfg.kafka_bootstrap_servers, "group.id": "dlpipe-offsets",
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[0]
                for p in sorted(partitions)}
    finally:
        consumer.close()


def check_data_loss(spark: SparkSession, cfg: Config, *, accept: bool = False) -> list[Gap]:
    """The gaps before the checkpoint's next batch: raised (``on_data_loss: fail``, unless
    ``accept``), else recorded in the accounting table; empty when there are none."""
    from dlpipe.core.s3 import s3_client

    topic = cfg.kafka.topics["raw"].name
    checkpoint = read_checkpoint(s3_client(cfg), cfg.ingest.checkpoint, topic)
    if checkpoint is None:
        return []
    gaps = find_gaps(topic, checkpoint.offsets, earliest_offsets(cfg, topic))
    if not gaps:
        return []
    listed = "; ".join(map(str, gaps))
    if cfg.ingest.on_data_loss == "fail" and not accept:
        raise DataLossError(
            f"Kafka no longer holds records the ingest checkpoint {cfg.ingest.checkpoint} has not "
            f"read: {listed} (deleted by the topic's retention while ingest was down)",
            fix="record the loss and go on with what Kafka still holds, exactly once: "
                "dlpipe ingest --accept-data-loss (or set ingest.on_data_loss=record); "
                "docs/data-contract.md, \"Records aged out of Kafka\"")
    record_gaps(spark, cfg, gaps, checkpoint)
    log.warning(f"ingest: recorded data loss in {cfg.tables.ingest_batches}: {listed}")
    return gaps


def gap_rows(cfg: Config, gaps: list[Gap], checkpoint: Checkpoint, now: datetime) -> list[dict]:
    """One accounting row per gap, in the batch that skips it: nothing in or out, and in
    ``reasons`` the lost count with its partition and first offset (the map holds integers)."""
    return [{"app_id": accounting_app_id(cfg, checkpoint.query_id), "query_name": cfg.ingest.query_name,
             "batch_id": checkpoint.batch_id + 1, "rows_in": 0, "clean": 0, "quarantined": 0,
             "duplicates": 0, "reasons": {DATA_LOSS: g.records, f"{DATA_LOSS}_PARTITION": g.partition,
                                          f"{DATA_LOSS}_FIRST_OFFSET": g.first},
             "max_event_time": None, "watermark": None, "started_at": now, "seconds": 0.0}
            for g in gaps]


def record_gaps(spark: SparkSession, cfg: Config, gaps: list[Gap], checkpoint: Checkpoint) -> None:
    """Append the gaps' rows once: a driver that dies before the next batch commits finds the
    same gaps again, and Delta's idempotent write (its own app id, the next batch's id) skips them."""
    from dlpipe.core.delta_io import append_once

    rows = spark.createDataFrame(gap_rows(cfg, gaps, checkpoint, datetime.now(UTC)), BATCH_COLUMNS)
    writer = f"{accounting_app_id(cfg, checkpoint.query_id)}-data-loss"
    append_once(rows, cfg.tables.ingest_batches, app_id=writer, version=checkpoint.batch_id + 1)
