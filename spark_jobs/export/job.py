"""Export a pinned version of the clean Delta table as TFRecord shards with a manifest.

Run with spark-submit (connector jars from ``dlpipe jars``)::

    spark-submit --master local[2] --jars "$(dlpipe jars)" spark_jobs/export/job.py \
        --config conf/pipeline.yaml [--version N] [--dataset NAME] [--overwrite]

or as ``dlpipe export``. Without ``--version`` the table's latest version is exported and
recorded in the manifest. A version that already has a manifest is left as it is unless
``--overwrite`` is given. One export of a dataset version runs at a time: a second fails at
start naming the first (a lease next to the version folder, ``dlpipe/core/lease.py``).
"""

from __future__ import annotations

import argparse
import logging
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dlpipe.core.args import add_config_args, config_from_args, run_main
from dlpipe.core.config import Config
from dlpipe.core.errors import DlpipeError
from dlpipe.core.progress import step
from dlpipe.datasets.manifest import (
    SPLITS,
    STAGING,
    Manifest,
    Shard,
    dataset_prefix,
    read_manifest,
    shard_path,
)
from dlpipe.datasets.tfrecord import FEATURES

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

# Framing (16 bytes) and protobuf keys/lengths per record, for sizing shards up front.
_RECORD_OVERHEAD = 96
_SIZE_SAMPLE = 2000  # records whose mean size sizes the shards


def table_version(spark: SparkSession, path: str, version: int | None) -> tuple[int, str]:
    """The Delta version to export (latest when None) and its commit time.

    SQL rather than ``DeltaTable``: on a Spark Connect session Delta's Python API needs a
    server plugin that is not published for Spark 4.2 (docs/notebooks.md)."""
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    try:
        history = spark.sql(f"DESCRIBE HISTORY delta.`{path.replace('`', '``')}`")
    except AnalysisException as exc:
        raise DlpipeError(f"no Delta table at {path}", fix="run `dlpipe ingest --once` first") from exc
    if version is None:
        row = history.orderBy(F.col("version").desc()).select("version", "timestamp").first()
    else:
        row = history.where(F.col("version") == version).select("version", "timestamp").first()
        if row is None:
            span = history.agg(F.min("version"), F.max("version")).first()
            raise DlpipeError(f"{path} has no version {version} (it has {span[0]}..{span[1]}, "
                              "minus any removed by VACUUM or log cleanup)")
    return int(row["version"]), row["timestamp"].replace(tzinfo=UTC).isoformat()


def split_stats(df: DataFrame, classes: list[str]) -> tuple[dict[str, Counter], dict[str, int]]:
    """Records per split and class (exact, one narrow pass: ids and labels, no image bytes),
    and estimated shard bytes per split: the counts times the mean record size of a sample.

    The estimate only sizes the shards; summing every image's length read every image byte
    of the table, a fifth of a 1M-record export (bench_scale)."""
    from pyspark.sql import functions as F

    rows = df.groupBy("split", "label", "label_name").agg(F.count("*").alias("n")).collect()
    # A plain limit scans only as many files as it needs (ingest fixes the image size, so
    # any rows are a fair sample).
    sample = [r[0] for r in df.select(F.length("image") + F.length("id") + _RECORD_OVERHEAD)
              .limit(_SIZE_SAMPLE).collect()]
    mean = sum(sample) / len(sample) if sample else 0
    by_class: dict[str, Counter] = {s: Counter() for s in SPLITS}
    size: dict[str, int] = Counter()
    for r in rows:
        index, name = r["label"], r["label_name"]
        if not (0 <= index < len(classes)) or classes[index] != name:
            raise DlpipeError(
                f"label {name!r} has index {index} in the table, but ingest.classes "
                f"says {classes.index(name) if name in classes else 'it is unknown'}",
                fix="export with the ingest.classes the table was written with",
            )
        by_class[r["split"]][name] += r["n"]
        size[r["split"]] += int(r["n"] * mean)
    return by_class, dict(size)


def export(spark: SparkSession, cfg: Config, *, version: int | None = None,
           dataset: str | None = None, overwrite: bool = False) -> Manifest:
    """Export the table's given (or latest) version; a published one is kept unless
    ``overwrite``. One export of a dataset version at a time (a lease, dlpipe.core.lease)."""
    from dlpipe.core.lease import path_lease
    from dlpipe.core.s3 import check_name, s3_client
    from spark_jobs.export.transforms import check_fractions

    started = time.monotonic()
    name = check_name("dataset", dataset or cfg.export.dataset)
    check_fractions(cfg.export.split)  # a config mistake is named before anything runs
    table = cfg.tables.clean
    bucket = cfg.buckets.datasets
    client = s3_client(cfg)
    version, committed = table_version(spark, table, version)
    prefix = dataset_prefix(name, version)
    export_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    # One export of a dataset version at a time: the other would remove this one's staged
    # shards (remove_stale_staging) or unpublish what it just published.
    with path_lease(cfg, f"s3a://{bucket}/{prefix}", owner=f"export {export_id}",
                    ttl_s=cfg.s3.lease_ttl_s):
        existing = read_manifest(client, bucket, prefix)  # read under the lease
        if existing is not None and not overwrite:
            log.info(f"export: {existing.uri} is already published (Delta version {version}); "
                     "pass --overwrite to write it again")
            return existing
        return _export_version(spark, cfg, name=name, version=version, committed=committed,
                               export_id=export_id, existing=existing, started=started)


def _export_version(spark: SparkSession, cfg: Config, *, name: str, version: int, committed: Any,
                    export_id: str, existing: Manifest | None, started: float) -> Manifest:
    """Write the shards of one table version to staging, check them, publish (lease held)."""
    from dlpipe.core.s3 import s3_client
    from spark_jobs.export import publish
    from spark_jobs.export.shards import INPUT_COLUMNS, OUTPUT_DDL, ShardTarget, make_shard_writer
    from spark_jobs.export.transforms import (
        SPLIT_METHOD,
        check_fractions,
        kafka_offset_ranges,
        plan_shards,
        to_example_columns,
        with_shard,
        with_split,
    )

    fractions = check_fractions(cfg.export.split)
    table, bucket, client = cfg.tables.clean, cfg.buckets.datasets, s3_client(cfg)
    prefix = dataset_prefix(name, version)
    staging = f"{prefix}/{STAGING}/{export_id}"
    log.info(f"export: {table}@v{version} -> s3://{bucket}/{prefix}/ (export {export_id})")
    publish.remove_stale_staging(client, bucket, prefix)
    if existing is not None:
        publish.unpublish(client, bucket, prefix)

    df = spark.read.format("delta").option("versionAsOf", version).load(table)
    rows = to_example_columns(with_split(df, fractions, salt=cfg.export.split_salt))
    with step("counting records per split and class"):
        by_class, size = split_stats(rows, cfg.ingest.classes)
    records = {s: sum(by_class[s].values()) for s in SPLITS}
    offsets = ([r.asDict() for r in kafka_offset_ranges(df).collect()]
               if "kafka_offset" in df.columns else [])
    plan = plan_shards(records, size, target_bytes=int(cfg.export.shard_target_mb * 2**20),
                       min_train_shards=cfg.training.workers)
    targets, part = {}, 0
    for split in SPLITS:
        for index in range(plan[split]):
            targets[part] = ShardTarget(split, shard_path(split, index, plan[split]))
            part += 1
    log.info("    " + ", ".join(f"{s}: {records[s]:,} records in {plan[s]} shard(s)" for s in SPLITS))

    with step(f"writing {len(targets)} shard(s) to staging"):
        sharded = with_shard(rows, plan, salt=cfg.export.split_salt)
        writer = make_shard_writer(cfg, bucket=bucket, staging_prefix=staging, targets=targets)
        written = (sharded.repartition(len(targets), "part").sortWithinPartitions("part", "id")
                   .select(*INPUT_COLUMNS).mapInArrow(writer, OUTPUT_DDL).collect())
    shards = _check_written(written, targets, by_class, records, client, bucket, staging)

    manifest = Manifest(
        dataset=name, bucket=bucket, prefix=prefix, export_id=export_id,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        source={"table": table, "delta_version": version, "delta_timestamp": committed,
                "rows": sum(records.values()), "kafka_offsets": offsets},
        split={"method": SPLIT_METHOD, "salt": cfg.export.split_salt, "fractions": fractions},
        classes=list(cfg.ingest.classes),
        image={"format": "PNG", "height": cfg.ingest.image.target_height,
               "width": cfg.ingest.image.target_width,
               "channels": cfg.ingest.image.target_channels},
        features=feature_spec(),
        counts={s: {"records": records[s], "by_class": dict(sorted(by_class[s].items()))}
                for s in SPLITS},
        shards=shards,
    )
    with step("publishing (copy from staging, then manifest.json)"):
        publish.publish(client, manifest, staging)
    seconds = time.monotonic() - started
    print(summary(manifest, seconds))
    from dlpipe.core.telemetry import push_run_figures

    push_run_figures(cfg, "export", {
        "records": sum(records.values()), "shards": len(shards), "seconds": seconds,
        "delta_version": version, "last_success_timestamp_seconds": time.time()},
        labels={"dataset": name})
    return manifest


def _check_written(written: list[Any], targets: dict, by_class: dict[str, Counter],
                   records: dict[str, int], client: Any, bucket: str, staging: str) -> list[Shard]:
    """Every planned shard accounted for and the counts equal to the table's, or no publish."""
    got = {r["part"]: r for r in written}
    if len(got) != len(written):
        raise DlpipeError("a shard was written twice; was the export run twice concurrently?")
    shards = []
    for part, target in targets.items():
        r = got.get(part)
        if r is None:  # no record hashed into it (tiny splits): an empty, valid shard
            client.put_object(Bucket=bucket, Key=f"{staging}/{target.path}", Body=b"")
            shards.append(Shard(target.split, target.path, 0, 0, "00000000", {}))
            continue
        shards.append(Shard(target.split, target.path, r["records"], r["bytes"], r["crc32c"],
                            dict(sorted(dict(r["by_class"]).items()))))
    for split in SPLITS:
        wrote: Counter[str] = Counter()
        for s in shards:
            if s.split == split:
                wrote.update(s.by_class)
        if wrote != by_class[split] or sum(wrote.values()) != records[split]:
            raise DlpipeError(f"the {split} shards hold {dict(wrote)} records per class, but the "
                              f"table has {dict(by_class[split])}; nothing was published")
    return shards


def feature_spec() -> dict[str, dict[str, Any]]:
    spec = {name: {"dtype": dtype, "shape": [], "description": text}
            for name, (dtype, text) in FEATURES.items()}
    spec["image"]["encoding"] = "png"
    return spec


def summary(manifest: Manifest, seconds: float) -> str:
    total = sum(s.records for s in manifest.shards)
    size = sum(s.bytes for s in manifest.shards)
    lines = [f"export: {manifest.uri}",
             f"  source      {manifest.source['table']} @ version {manifest.delta_version}",
             f"  {total:,} records, {len(manifest.shards)} shard(s), {size / 2**20:,.1f} MiB "
             f"in {seconds:.1f}s ({total / seconds:,.0f} records/s)"]
    for split in SPLITS:
        shards = manifest.shards_of(split)
        lines.append(f"  {split:11s} {manifest.counts[split]['records']:>9,} records  "
                     f"{len(shards)} shard(s)")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dlpipe export", description=__doc__.split("\n\n")[0])
    add_config_args(parser)
    parser.add_argument("--version", type=int, default=None,
                        help="Delta version of the clean table (default: the latest)")
    parser.add_argument("--dataset", default=None,
                        help="dataset name, the folder in the datasets bucket (default: export.dataset)")
    parser.add_argument("--overwrite", action="store_true",
                        help="export again even if this version already has a manifest")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, *, spark: SparkSession | None = None) -> int:
    from dlpipe.core.session import get_spark

    args = parse_args(argv)
    cfg = config_from_args(args)
    session = get_spark(cfg, app_name="dlpipe-export", spark=spark)
    export(session, cfg, version=args.version, dataset=args.dataset, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    run_main(main, prog="export")
