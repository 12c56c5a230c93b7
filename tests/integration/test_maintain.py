"""Table upkeep on the real stack: OPTIMIZE + VACUUM shrink the files, keep every row and
keep a published dataset's Delta version readable (checked with delta-rs, not Spark)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from dlpipe.core.config import with_overrides
from dlpipe.core.s3 import list_keys, s3_client, split_uri
from dlpipe.datasets.manifest import Manifest, dataset_prefix
from spark_jobs.maintain import job
from tests.helpers import isolated, read_delta_with_delta_rs

pytestmark = pytest.mark.integration


def appends(spark, path: str, *, times: int, rows: int = 5) -> None:
    for i in range(times):
        spark.createDataFrame([(f"id-{i}-{j}", i) for j in range(rows)], "id STRING, round INT") \
            .repartition(2).write.format("delta").mode("append").save(path)


def data_files(cfg, path: str) -> list[str]:
    bucket, prefix = split_uri(path)
    return [k for k in list_keys(s3_client(cfg), bucket, prefix + "/")
            if k.endswith(".parquet") and "/_delta_log/" not in k]


def publish(cfg, *, dataset: str, table: str, version: int, created: datetime) -> None:
    """A manifest as an export writes it (only the fields maintain reads matter here)."""
    prefix = dataset_prefix(dataset, version)
    manifest = Manifest(
        dataset=dataset, bucket=cfg.buckets.datasets, prefix=prefix, export_id="test",
        created_at=created.isoformat(timespec="seconds"),
        source={"table": table, "delta_version": version, "delta_timestamp": created.isoformat(),
                "rows": 0},
        split={}, classes=[], image={}, features={}, counts={}, shards=[])
    s3_client(cfg).put_object(Bucket=cfg.buckets.datasets, Key=f"{prefix}/manifest.json",
                              Body=manifest.to_json().encode())


@pytest.fixture
def mcfg(cfg):
    base = isolated(cfg, "maint")
    run = base.tables.clean.rsplit("/", 2)[-2]
    bucket = f"test-maint-{uuid.uuid4().hex[:8]}"
    s3_client(cfg).create_bucket(Bucket=bucket)
    return with_overrides(base, {
        "tables.predictions": f"s3a://{cfg.buckets.lake}/test/{run}/predictions",
        "buckets.datasets": bucket, "maintain.vacuum_retention_hours": 0,
        "maintain.keep_dataset_days": 30,
    })


def test_compaction_and_vacuum_keep_rows_and_a_kept_dataset_version(spark, mcfg):
    t = mcfg.tables
    appends(spark, t.clean, times=6)
    appends(spark, t.quarantine, times=4)
    publish(mcfg, dataset="kept", table=t.clean, version=2, created=datetime.now(UTC))
    # Older than the keep window: it protects nothing.
    publish(mcfg, dataset="old", table=t.quarantine, version=1,
            created=datetime.now(UTC) - timedelta(days=31))
    before = {p: len(data_files(mcfg, p)) for p in (t.clean, t.quarantine)}
    assert before == {t.clean: 12, t.quarantine: 8}

    reports = {r["table"]: r for r in job.maintain(spark, mcfg)}
    assert set(reports) == {t.clean, t.quarantine}, "absent tables (predictions, batches) skipped"
    assert reports[t.clean]["files_before"] == 12 and reports[t.clean]["files_after"] < 12
    assert reports[t.quarantine]["files_after"] < 8
    assert reports[t.clean]["retention_hours"] >= 1, "stretched back to the kept version"
    assert reports[t.quarantine]["retention_hours"] == 0

    # Every row is still there (read by delta-rs).
    assert read_delta_with_delta_rs(mcfg, t.clean).to_pyarrow_table().num_rows == 30
    assert read_delta_with_delta_rs(mcfg, t.quarantine).to_pyarrow_table().num_rows == 20
    # The kept dataset's version still reads, so it can be re-exported...
    kept = read_delta_with_delta_rs(mcfg, t.clean, version=2).to_pyarrow_table()
    assert sorted(set(kept.column("round").to_pylist())) == [0, 1, 2]
    assert len(data_files(mcfg, t.clean)) > reports[t.clean]["files_after"], "its files stayed"
    # ...while the unprotected table lost its old small files: only the compacted ones remain.
    assert len(data_files(mcfg, t.quarantine)) == reports[t.quarantine]["files_after"]
    with pytest.raises(Exception):  # noqa: B017 - delta-rs: a data file of version 1 is gone
        read_delta_with_delta_rs(mcfg, t.quarantine, version=1).to_pyarrow_table()


def test_retention_reaches_back_to_the_oldest_file_a_kept_version_needs():
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    assert job.retention_hours(168, None, now) == 168
    assert job.retention_hours(168, now - timedelta(days=3), now) == 168
    assert job.retention_hours(168, now - timedelta(days=10, minutes=1), now) == 10 * 24 + 2
    assert job.parse_args(["--set", "maintain.keep_dataset_days=3"]).overrides == [
        "maintain.keep_dataset_days=3"]


def test_compaction_writes_files_no_bigger_than_the_configured_target(spark, mcfg):
    """``maintain.target_file_mb`` bounds OPTIMIZE's output files (Delta's default, 1 GB, ran
    a 2 GB local driver out of heap on a 1M-image partition in bench_scale)."""
    import os

    from pyspark.sql import functions as F

    path = mcfg.tables.clean
    for i in range(4):  # 8 files of ~0.6 MB of incompressible bytes
        spark.createDataFrame([(f"id-{i}-{j}", os.urandom(200_000)) for j in range(6)],
                              "id STRING, blob BINARY").repartition(2).write.format("delta") \
            .mode("append").save(path)
    cfg = with_overrides(mcfg, {"maintain.target_file_mb": 1})
    report = job.maintain(spark, cfg)[0]
    assert report["files_before"] == 8
    assert 2 <= report["files_after"] < 8, report  # pairs at most: 2 x 0.6 MB > 1 MB
    sizes = read_delta_with_delta_rs(cfg, path).get_add_actions(flatten=True).column("size_bytes")
    assert max(sizes.to_pylist()) < 1.5 * 2**20, sizes
    assert spark.read.format("delta").load(path).agg(F.count("*")).first()[0] == 24
    assert spark.conf.get(job.MAX_FILE_SIZE, None) is None, "the session's setting is restored"
