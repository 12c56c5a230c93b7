"""The micro-batch writer: decode once, then at most one commit per table.

Per batch: one pass over the Kafka rows decodes every image into a cached frame and returns
the reason counts and the event-time range; de-duplication works on a narrow frame (ids and
Kafka coordinates) against the clean table's ids within ``ingest.dedupe_horizon_days``
(partition-pruned by ``event_date``, so its cost does not grow with the table); then
quarantine (if any), clean (if any) and accounting are appended from the cache, one Delta
commit each. Whether a table exists is asked of its log only until it does.

Every decision depends only on the batch's own rows and on what earlier batches wrote, so
a batch replayed after a crash decides exactly as its first attempt did; Delta's idempotent
writes then skip whatever that attempt already committed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from dlpipe.contract.record import BATCH_COLUMNS, Reason
from dlpipe.core.config import Config
from dlpipe.core.delta_io import append_once, read_if_exists, table_exists
from dlpipe.core.faults import fault_point
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
    on_batch: Callable[[dict[str, Any]], None] | None = None  # metrics (spark_jobs.ingest.metrics)

    def __post_init__(self) -> None:
        self._inspect = make_inspect_udf(image_limits(self.cfg))
        self._app_id: str | None = None
        self._known: set[str] = set()  # tables known to exist
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
            self._app_id = accounting_app_id(self.cfg, ids[0])
        return self._app_id

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        from pyspark.sql import functions as F

        spark = batch.sparkSession
        started, started_at = time.monotonic(), datetime.now(UTC)
        app_id = self.app_id()
        ingest, tables = self.cfg.ingest, self.cfg.tables
        phases: dict[str, float] = {}
        mark = time.monotonic()

        def lap(name: str) -> None:
            nonlocal mark
            now = time.monotonic()
            phases[name] = round(now - mark, 2)
            mark = now
            fault_point(f"after_{name}")  # the fault tests' hook (dlpipe.core.faults)

        # The one wide frame: every image is decoded once, here, and read from the cache after.
        classified = T.classify(T.parse(batch, ingest), ingest, self._inspect, now=started_at).persist()
        flags = None
        try:
            reasons, batch_newest, oldest_date = T.batch_summary(classified)
            lap("classify")
            newest = _max(self._newest_before(spark, app_id, batch_id), batch_newest)
            watermark = newest - timedelta(seconds=ingest.watermark_delay_s) if newest else None
            lap("watermark")
            marked = T.mark_late(classified, watermark)
            flags, duplicates, written = self._dedupe(spark, marked, reasons, oldest_date)
            candidates_n = reasons.pop(None, 0)
            lap("dedupe")

            if reasons or not self._exists(spark, tables.quarantine):
                # A batch with nothing to quarantine needs no commit (a replay has none either).
                self._append(T.quarantine_rows(marked, batch_id), tables.quarantine, app_id,
                             batch_id, ["ingest_date"])
            lap("write_quarantine")
            if written or not self._exists(spark, tables.clean):
                # Likewise for clean rows: an all-duplicate batch (a re-sent topic) must not
                # add a Delta version, or every downstream export would see "new" data.
                keep = F.broadcast(flags.where("NOT is_duplicate AND NOT already_written").select(
                    "kafka_partition", "kafka_offset")) if flags is not None else None
                rows = T.clean_rows(marked, ingest, batch_id)
                rows = rows.join(keep, ["kafka_partition", "kafka_offset"], "left_semi") \
                    if keep is not None else rows
                self._append(rows, tables.clean, app_id, batch_id, ["event_date"])
            lap("write_clean")
        finally:
            if flags is not None:
                flags.unpersist()
            classified.unpersist()

        stats = {
            "app_id": app_id, "batch_id": batch_id, "rows_in": candidates_n + sum(reasons.values()),
            "clean": candidates_n - duplicates, "quarantined": sum(reasons.values()),
            "duplicates": duplicates, "reasons": dict(sorted(reasons.items())),
            "max_event_time": newest, "watermark": watermark, "started_at": started_at,
            "seconds": round(time.monotonic() - started, 3),
        }
        row = spark.createDataFrame([{**stats, "query_name": ingest.query_name}], BATCH_COLUMNS)
        self._append(row, tables.ingest_batches, app_id, batch_id, [])
        self._last = (batch_id, newest)
        lap("write_accounting")
        self.batches.append(stats)
        if self.on_batch is not None:
            self.on_batch(stats)
        seconds = stats["seconds"]
        log.info(json.dumps({"event": "ingest_batch", **stats, "phase_seconds": phases,
                             "rows_per_s": round(stats["rows_in"] / seconds, 1) if seconds else None},
                            default=_json_default))

    def _dedupe(self, spark: SparkSession, marked: DataFrame, reasons: dict[str | None, int],
                oldest: date | None) -> tuple[DataFrame | None, int, int]:
        """Cached (id, coordinates, is_duplicate, already_written) of the clean candidates, the
        duplicate count and the rows to write; moves late rows in ``reasons`` to LATE_EVENT."""
        from pyspark.sql import functions as F

        if not reasons.get(None):
            return None, 0, 0
        # Narrow (ids and Kafka coordinates only): the wide rows never shuffle.
        candidates = marked.where(F.col("reason_code").isNull()).select(
            "id", F.col("partition").alias("kafka_partition"), F.col("offset").alias("kafka_offset"))
        flags = T.mark_duplicates(candidates, self._existing_ids(spark, oldest)).persist()
        n, duplicates, again = flags.agg(
            F.count("*"), F.count_if("is_duplicate"), F.count_if("already_written")).first()
        if reasons[None] > n:
            reasons[str(Reason.LATE_EVENT)] = reasons[None] - n
        reasons[None] = n
        return flags, duplicates, n - duplicates - again

    def _exists(self, spark: SparkSession, path: str) -> bool:
        """Whether a table exists; asked of its Delta log only until it does (tables stay)."""
        if path not in self._known and table_exists(spark, path):
            self._known.add(path)
        return path in self._known

    def _append(self, df: DataFrame, path: str, app_id: str, batch_id: int, parts: list[str]) -> None:
        append_once(df, path, app_id=app_id, version=batch_id, partition_by=parts)
        self._known.add(path)

    def _existing_ids(self, spark: SparkSession, oldest: date | None) -> DataFrame:
        """(id, kafka coordinates) of the clean table within the de-duplication horizon."""
        horizon = self.cfg.ingest.dedupe_horizon_days
        if not self._exists(spark, self.cfg.tables.clean):
            return spark.createDataFrame([], "id STRING, kafka_partition INT, kafka_offset BIGINT")
        table = spark.read.format("delta").load(self.cfg.tables.clean)
        since = None if horizon is None or oldest is None else oldest - timedelta(days=horizon)
        return T.within_horizon(table, since).select("id", "kafka_partition", "kafka_offset")

    def _newest_before(self, spark: SparkSession, app_id: str, batch_id: int) -> datetime | None:
        from pyspark.sql import functions as F

        if self._last is not None and self._last[0] == batch_id - 1:
            return self._last[1]
        done = read_if_exists(spark, self.cfg.tables.ingest_batches)
        if done is None:
            return None
        return done.where((F.col("app_id") == app_id) & (F.col("batch_id") < batch_id)).agg(
            F.max("max_event_time")).first()[0]


def accounting_app_id(cfg: Config, query_id: str) -> str:
    """The app id of the tables' idempotent writes: the query id lives in the checkpoint, so
    it is stable for the checkpoint and new for a new one."""
    return f"dlpipe-{cfg.ingest.query_name}-{query_id}"


def _max(*values: datetime | None) -> datetime | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _json_default(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)
