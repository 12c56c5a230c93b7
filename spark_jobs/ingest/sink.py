"""The micro-batch writer: classify once, then quarantine, clean and accounting, each once.

Every decision depends only on the batch's own rows and on what earlier batches wrote, so
a batch replayed after a crash decides exactly as its first attempt did; Delta's idempotent
writes then skip whatever that attempt already committed.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from dlpipe.contract.record import BATCH_COLUMNS
from dlpipe.core.config import Config
from dlpipe.core.delta_io import append_once, read_if_exists, table_exists
from spark_jobs.ingest import transforms as T
from spark_jobs.ingest.images import ImageLimits, make_inspect_udf

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


def image_limits(cfg: Config) -> ImageLimits:
    i = cfg.ingest.image
    return ImageLimits(tuple(f.upper() for f in i.formats), i.max_pixels, i.max_bytes,
                       i.target_width, i.target_height, i.target_channels)


@dataclass
class IngestSink:
    cfg: Config
    # The session that starts the query: foreachBatch hands each batch a cloned session
    # whose query manager does not list it.
    owner: SparkSession
    batches: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._inspect = make_inspect_udf(image_limits(self.cfg))
        self._app_id: str | None = None
        # (batch id, newest event time up to and including it) of the last batch written
        # here; after a restart the accounting table answers instead.
        self._last: tuple[int, datetime | None] | None = None

    def app_id(self) -> str:
        """Stable for the checkpoint (the query's id lives there), new for a new checkpoint."""
        if self._app_id is None:
            name = self.cfg.ingest.query_name
            ids = [q.id for q in self.owner.streams.active if q.name == name]
            if not ids:
                raise RuntimeError(f"no active streaming query named {name!r}")
            self._app_id = f"dlpipe-{name}-{ids[0]}"
        return self._app_id

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        from pyspark.sql import functions as F

        spark = batch.sparkSession
        started = time.monotonic()
        started_at = datetime.now(UTC)
        app_id = self.app_id()
        ingest, tables = self.cfg.ingest, self.cfg.tables

        phases: dict[str, float] = {}
        mark = time.monotonic()

        def lap(name: str) -> None:
            nonlocal mark
            now = time.monotonic()
            phases[name] = round(now - mark, 2)
            mark = now

        classified = T.classify(T.parse(batch, ingest), ingest, self._inspect).persist()
        try:
            batch_newest = classified.where(F.col("reason_code").isNull()).agg(
                F.max("event_time")).first()[0]
            lap("classify")
            newest = _max(self._newest_before(spark, app_id, batch_id), batch_newest)
            lap("watermark")
            watermark = newest - timedelta(seconds=ingest.watermark_delay_s) if newest else None
            marked = T.mark_late(classified, watermark)
            reasons = {r["reason_code"]: r["count"] for r in
                       marked.groupBy("reason_code").count().collect()}
            rows_in = sum(reasons.values())
            candidates = reasons.pop(None, 0)
            lap("count")

            existing = read_if_exists(spark, tables.clean)
            if existing is None:
                existing = spark.createDataFrame([], "id STRING, kafka_partition INT, kafka_offset BIGINT")
            clean = T.mark_duplicates(T.clean_rows(marked, ingest, batch_id),
                                      existing.select("id", "kafka_partition", "kafka_offset")).persist()
            duplicates = clean.where("is_duplicate").count()
            lap("dedupe")

            if reasons or not table_exists(spark, tables.quarantine):
                # A batch with nothing to quarantine needs no commit (a replay has none either).
                append_once(T.quarantine_rows(marked, batch_id), tables.quarantine, app_id=app_id,
                            version=batch_id, partition_by=["ingest_date"])
            lap("write_quarantine")
            if candidates > duplicates or not table_exists(spark, tables.clean):
                # Likewise for clean rows: an all-duplicate batch (a re-sent topic) must not
                # add a Delta version, or every downstream export would see "new" data.
                append_once(clean.where("NOT is_duplicate AND NOT already_written")
                            .drop("is_duplicate", "already_written"),
                            tables.clean, app_id=app_id, version=batch_id, partition_by=["event_date"])
            lap("write_clean")
            clean.unpersist()
        finally:
            classified.unpersist()

        seconds = time.monotonic() - started
        stats = {
            "app_id": app_id, "batch_id": batch_id, "rows_in": rows_in,
            "clean": candidates - duplicates, "quarantined": sum(reasons.values()),
            "duplicates": duplicates, "reasons": dict(sorted(reasons.items())),
            "max_event_time": newest, "watermark": watermark, "started_at": started_at,
            "seconds": round(seconds, 3),
        }
        row = spark.createDataFrame([{**stats, "query_name": ingest.query_name}],
                                    BATCH_COLUMNS)
        append_once(row, tables.ingest_batches, app_id=app_id, version=batch_id)
        self._last = (batch_id, newest)
        lap("write_accounting")
        self.batches.append(stats)
        log.info(json.dumps({"event": "ingest_batch", **stats, "phase_seconds": phases,
                        "rows_per_s": round(rows_in / seconds, 1) if seconds else None},
                       default=_json_default))

    def _newest_before(self, spark: SparkSession, app_id: str, batch_id: int) -> datetime | None:
        from pyspark.sql import functions as F

        if self._last is not None and self._last[0] == batch_id - 1:
            return self._last[1]
        done = read_if_exists(spark, self.cfg.tables.ingest_batches)
        if done is None:
            return None
        return done.where((F.col("app_id") == app_id) & (F.col("batch_id") < batch_id)).agg(
            F.max("max_event_time")).first()[0]


def _max(*values: datetime | None) -> datetime | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _json_default(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)
