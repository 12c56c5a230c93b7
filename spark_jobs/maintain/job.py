"""Table upkeep: compact (Delta OPTIMIZE) and VACUUM every table dlpipe writes.

Run with spark-submit (connector jars from ``dlpipe jars``)::

    spark-submit --master local[2] --jars "$(dlpipe jars)" spark_jobs/maintain/job.py \
        --config conf/pipeline.yaml

or as ``dlpipe maintain``. The tables are ``tables.clean``, ``quarantine``,
``ingest_batches`` and ``predictions`` (those that exist). Safe while ingest runs: OPTIMIZE
only rewrites files (a concurrent append never conflicts with it) and VACUUM deletes only
files unreferenced for longer than ``maintain.vacuum_retention_hours`` (default 168, Delta's
own safety floor; a shorter one is allowed, with a warning, only for tables no job writes).
VACUUM is LITE by default (``maintain.vacuum_mode``): the files come from the Delta log, not
from listing the table on S3, which cost about a minute even for a tiny table.

A published dataset's Delta version stays re-exportable (time travel) while the dataset is
younger than ``maintain.keep_dataset_days``: the clean table's retention is stretched back to
the oldest file such a version reads, so VACUUM keeps every file of it. Time travel also needs
the version's log entry, which Delta keeps for ``delta.logRetentionDuration`` (30 days by
default): a ``keep_dataset_days`` above that needs the table property raised too.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from dlpipe.core.args import add_config_args, config_from_args, run_main
from dlpipe.core.config import Config
from dlpipe.core.progress import step
from dlpipe.core.session import session_conf

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from dlpipe.datasets.manifest import Manifest

log = logging.getLogger(__name__)

DELTA_SAFE_HOURS = 168  # Delta refuses a shorter VACUUM retention unless told otherwise
CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
MAX_FILE_SIZE = "spark.databricks.delta.optimize.maxFileSize"  # OPTIMIZE's bin size, bytes


def kept_manifests(cfg: Config, now: datetime) -> list[Manifest]:
    """Published manifests (of any dataset in the datasets bucket) inside the keep window."""
    from dlpipe.core.s3 import child_names, s3_client
    from dlpipe.datasets.manifest import dataset_prefix, published_versions, read_manifest

    client, bucket = s3_client(cfg), cfg.buckets.datasets
    since = now - timedelta(days=cfg.maintain.keep_dataset_days)
    kept = []
    for dataset in child_names(client, bucket, ""):
        for version in published_versions(client, bucket, dataset):
            manifest = read_manifest(client, bucket, dataset_prefix(dataset, version))
            if manifest is not None and datetime.fromisoformat(manifest.created_at) >= since:
                kept.append(manifest)
    return kept


def oldest_needed(spark: SparkSession, path: str, kept: Sequence[Manifest]) -> datetime | None:
    """The oldest write time of a file that a kept dataset's version of ``path`` reads.

    VACUUM deletes a file once nothing newer than the retention references it: a tombstone
    younger than the retention keeps it, and after the tombstone expires
    (``delta.deletedFileRetentionDuration``) only its write time does. A retention reaching
    back to the oldest file of version V therefore keeps all of V.
    """
    from pyspark.errors import PySparkException
    from pyspark.sql import functions as F

    versions = sorted({m.delta_version for m in kept
                       if str(m.source.get("table", "")).rstrip("/") == path.rstrip("/")})
    oldest = None
    for version in versions:
        try:
            seconds = (spark.read.format("delta").option("versionAsOf", version).load(path)
                       .agg(F.min("_metadata.file_modification_time").cast("long")).first()[0])
        except PySparkException as exc:
            log.warning(f"    {path} version {version} is no longer readable ({exc}); "
                        "its dataset cannot be re-exported")
            continue
        if seconds is not None:
            found = datetime.fromtimestamp(seconds, UTC)
            oldest = found if oldest is None else min(oldest, found)
    return oldest


def retention_hours(configured: int, oldest: datetime | None, now: datetime) -> int:
    """``configured``, stretched back to ``oldest`` (plus an hour of margin)."""
    if oldest is None:
        return configured
    return max(configured, math.ceil((now - oldest).total_seconds() / 3600) + 1)


def maintain_table(spark: SparkSession, path: str, hours: int, mode: str,
                   target_file_mb: int) -> dict[str, Any]:
    """OPTIMIZE (into files of up to ``target_file_mb``) then VACUUM one table; returns the
    live file counts before and after."""
    from delta.tables import DeltaTable

    table = DeltaTable.forPath(spark, path)
    before = table.detail().first()["numFiles"]
    with step(f"compacting {path} (files up to {target_file_mb} MB)"), \
            session_conf(spark, MAX_FILE_SIZE, str(target_file_mb << 20)):
        metrics = table.optimize().executeCompaction().first()["metrics"]
    with step(f"vacuuming {path} (retaining {hours} h, {mode})"):
        vacuum(spark, table, path, hours, mode)
    after = DeltaTable.forPath(spark, path).detail().first()["numFiles"]
    return {"table": path, "files_before": before, "files_after": after,
            "files_removed": metrics["numFilesRemoved"], "files_added": metrics["numFilesAdded"],
            "retention_hours": hours}


def vacuum(spark: SparkSession, table: Any, path: str, hours: int, mode: str) -> None:
    """VACUUM LITE takes the files to delete from the Delta log: seconds where FULL lists
    the whole table folder through S3A (45-60 s for a table of a dozen files on the local
    MinIO, growing with the table). LITE cannot run once the log no longer reaches back to
    the last VACUUM; Delta then says so and FULL runs instead."""
    quoted = path.replace("`", "``")
    if mode == "lite":
        try:
            spark.sql(f"VACUUM delta.`{quoted}` RETAIN {int(hours)} HOURS LITE").collect()
            return
        except Exception as exc:  # pyspark's AnalysisException / Py4JJavaError
            if "LITE" not in str(exc):
                raise
            log.warning(f"    {path}: VACUUM LITE cannot run ({str(exc).splitlines()[0][:200]}); "
                        "running VACUUM FULL")
    table.vacuum(float(hours))  # FULL


def maintain(spark: SparkSession, cfg: Config, *, now: datetime | None = None) -> list[dict[str, Any]]:
    from delta.tables import DeltaTable

    now = now or datetime.now(UTC)
    m = cfg.maintain
    short = m.vacuum_retention_hours < DELTA_SAFE_HOURS
    if short:
        # An explicit choice in config (tests, a stopped pipeline): a VACUUM this short can
        # delete files a running writer has not committed yet.
        log.warning(f"maintain.vacuum_retention_hours={m.vacuum_retention_hours} is below "
                    f"{DELTA_SAFE_HOURS}: safe only while no job writes these tables")
    kept = kept_manifests(cfg, now)
    t = cfg.tables
    reports = []
    with session_conf(spark, CHECK, "false") if short else contextlib.nullcontext():
        for path in (t.clean, t.quarantine, t.ingest_batches, t.predictions):
            if not DeltaTable.isDeltaTable(spark, path):
                log.info(f"    {path}: no table yet, skipped")
                continue
            hours = retention_hours(m.vacuum_retention_hours, oldest_needed(spark, path, kept), now)
            report = maintain_table(spark, path, hours, m.vacuum_mode, m.target_file_mb)
            log.info(f"    {path}: {report['files_before']} -> {report['files_after']} live files, "
                     f"retention {hours} h")
            reports.append(report)
    return reports


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dlpipe maintain", description=__doc__.split("\n")[0])
    add_config_args(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, *, spark: SparkSession | None = None) -> int:
    from dlpipe.core.session import get_spark

    args = parse_args(argv)
    cfg = config_from_args(args)
    session = get_spark(cfg, app_name="dlpipe-maintain", spark=spark)
    maintain(session, cfg)
    return 0


if __name__ == "__main__":
    run_main(main, prog="maintain")
