"""The micro-batch writer: decode once, then at most one commit per table.

Per batch: one pass over the Kafka rows decodes every image into a cached frame and returns
the reason counts and the event-time range; de-duplication works on a narrow frame (ids and
Kafka coordinates) against the clean table's ids within ``ingest.dedupe_horizon_days``
(partition-pruned by ``event_date``, so its cost does not grow with the table); then
quarantine (if any), clean (if any) and accounting are appended from the cache at once, one
Delta commit each, in threads of the driver (dlpipe.core.parallel). Whether a table exists
is asked of its log only until it does.

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
from dlpipe.core.parallel import run_together
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
class _BatchRun:
    """One micro-batch's identity, clock and step times (for its log line)."""

    spark: SparkSession
    batch_id: int
    app_id: str
    started: float = field(default_factory=time.monotonic)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    phases: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._mark = self.started

    def lap(self, name: str) -> None:
        """The seconds since the last lap, as step ``name``; then its fault point."""
        now = time.monotonic()
        self.phases[name] = round(now - self._mark, 2)
        self._mark = now
        fault_point(f"after_{name}")  # the fault tests' hook (dlpipe.core.faults)

    @staticmethod
    def committed(name: str) -> None:
        """After a commit landed, in its own thread: its fault point."""
        fault_point(f"after_{name}")


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
        run = _BatchRun(batch.sparkSession, batch_id, self.app_id())
        ingest = self.cfg.ingest
        # The one wide frame: every image is decoded once, here, and read from the cache after.
        classified = T.classify(T.parse(batch, ingest), ingest, self._inspect,
                                now=run.started_at).persist()
        try:
            summary = T.batch_summary(classified)
            run.lap("classify")
            newest = _max(self._newest_before(run.spark, run.app_id, batch_id), summary.newest)
            watermark = newest - timedelta(seconds=ingest.watermark_delay_s) if newest else None
            run.lap("watermark")
            marked = T.mark_late(classified, watermark)
            stats = self._dedupe_and_commit(run, marked, summary, newest, watermark)
            run.lap("writes")
        finally:
            classified.unpersist()

        self._last = (batch_id, newest)
        # The batch's whole time, commits included, for the log, metrics and benches.
        stats["seconds"] = seconds = round(time.monotonic() - run.started, 3)
        self.batches.append(stats)
        if self.on_batch is not None:
            self.on_batch(stats)
        log.info(json.dumps({"event": "ingest_batch", **stats, "phase_seconds": run.phases,
                             "rows_per_s": round(stats["rows_in"] / seconds, 1) if seconds else None},
                            default=_json_default))

    def _dedupe_and_commit(self, run: _BatchRun, marked: DataFrame, summary: T.BatchSummary,
                           newest: datetime | None, watermark: datetime | None) -> dict[str, Any]:
        """De-duplicate the clean candidates, then commit quarantine, clean and accounting
        rows together; returns the batch's accounting figures.

        The three commits go to three tables and depend on nothing but the rows decided
        here, so they run at once (dlpipe.core.parallel): the quarantine commit and the
        one-row accounting append ride in the clean write's shadow instead of after it. Each
        is idempotent by (app id, batch id), so a crash between any two leaves what a replay
        completes (tests/integration/test_ingest.py).
        """
        from pyspark.sql import functions as F

        ingest, tables, batch_id, app_id = self.cfg.ingest, self.cfg.tables, run.batch_id, run.app_id
        reasons = dict(summary.reasons)
        flags, duplicates, written = self._dedupe(run.spark, marked, reasons, summary.oldest_date)
        try:
            candidates_n = reasons.pop(None, 0)
            run.lap("dedupe")
            commits: dict[str, Callable[[], None]] = {}
            if reasons or not self._exists(run.spark, tables.quarantine):
                # A batch with nothing to quarantine needs no commit (a replay has none either).
                commits["write_quarantine"] = lambda: self._append(
                    T.quarantine_rows(marked, batch_id), tables.quarantine, app_id, batch_id,
                    ["ingest_date"])
            if written or not self._exists(run.spark, tables.clean):
                # Likewise for clean rows: an all-duplicate batch (a re-sent topic) must not
                # add a Delta version, or every downstream export would see "new" data.
                rows = T.clean_rows(marked, ingest, batch_id)
                if flags is not None:
                    keep = flags.where("NOT is_duplicate AND NOT already_written").select(
                        "kafka_partition", "kafka_offset")
                    rows = rows.join(F.broadcast(keep), ["kafka_partition", "kafka_offset"],
                                     "left_semi")
                commits["write_clean"] = lambda: self._append(rows, tables.clean, app_id,
                                                              batch_id, ["event_date"])
            stats = {
                "app_id": app_id, "batch_id": batch_id,
                "rows_in": candidates_n + sum(reasons.values()),
                "clean": candidates_n - duplicates, "quarantined": sum(reasons.values()),
                "duplicates": duplicates, "reasons": dict(sorted(reasons.items())),
                "max_event_time": newest, "watermark": watermark, "started_at": run.started_at,
                # In the table: up to the commits, which run together with this row's own.
                "seconds": round(time.monotonic() - run.started, 3),
            }
            row = run.spark.createDataFrame([{**stats, "query_name": ingest.query_name}],
                                            BATCH_COLUMNS)
            commits["write_accounting"] = lambda: self._append(row, tables.ingest_batches, app_id,
                                                               batch_id, [])
            run.phases.update(run_together(commits, after=run.committed))
            return stats
        finally:
            if flags is not None:
                flags.unpersist()

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
