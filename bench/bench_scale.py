"""One million records through the whole pipeline: does anything grow with the table?

``python -m bench bench_scale`` (not part of a plain ``make bench``: it takes about half an
hour; ``--quick`` runs 20,000 records as a smoke test). On the bench stack, in one Spark
session (``local[2]``):

1. produce: synthetic 32x32 colour PNG records, 1% bad (every bad kind in turn), 1% re-sent
   duplicates, in ten equal chunks. The images cycle through a pool of 4,096 (ids do not),
   so producing measures the producer, not numpy drawing shapes.
2. ingest: ``spark_jobs.ingest.job.run --once`` over the whole topic, ``N/20`` records per
   micro-batch, after a warm-up ingest of 500 records (its own topic and tables) in the same
   session, as ``bench_ingest`` does. Throughput over the first and the last tenth of the
   records; per-batch time of the first two and the last two full batches after batch 0
   (which creates the tables), so near an empty table and at ~N rows; the peak RSS of the driver JVM and
   of the Python workers up to the first tenth and up to the end.
3. maintain: ``dlpipe maintain`` (OPTIMIZE + VACUUM) on the run's tables; live files of the
   clean table before and after.
4. export: the pinned table version to TFRecord shards, against a plain Parquet write of the
   same rows; the same for a 10% table, for the rate at N/10.
5. reader: one cold-cache pass of ``models.input.make_dataset`` over each train split.
6. score: ``dlpipe score`` of a N/10-row table with the residual CNN (untrained weights;
   includes starting TensorFlow in the workers).

It ends with exact accounting, read with delta-rs (not Spark): clean + quarantined +
duplicates = produced, each clean id once; then it deletes the run's objects and topic.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from bench.harness import Context, Result
from bench.rss import RssSampler

log = logging.getLogger(__name__)

POOL = 4096
THROUGHPUT_TARGET = 0.85   # records/s over the last tenth / over the first tenth
BATCH_TIME_TARGET = 1 / 1.2  # per-batch time at the start / at ~N rows
RSS_TARGET = 1 / 1.25      # peak RSS up to N/10 / peak RSS up to N
EXPORT_TARGET = 0.8        # export / plain Parquet write, at N
MB = 2**20


def _samples(start: int = 0):
    from dlpipe.produce.sources import Sample, synthetic

    pool = list(itertools.islice(synthetic(size=32), POOL))
    for i in itertools.count(start):
        s = pool[i % POOL]
        yield Sample(i, s.label, s.image)


def _config(ctx: Context, run: str, per_batch: int):
    from bench.data import ingest_run_overrides
    from dlpipe.core.config import with_overrides
    from dlpipe.localstack.provision import ensure_topics

    cfg = with_overrides(ctx.cfg, {
        **ingest_run_overrides(ctx.cfg, f"scale-{run}"),
        "tables.predictions": f"s3a://{ctx.cfg.buckets.lake}/bench/scale-{run}/predictions",
        "ingest.max_offsets_per_trigger": per_batch,
        "serving.model_dir": str(ctx.work_dir / "models"),
    })
    ensure_topics(cfg)
    return cfg


def produce_all(cfg, count: int) -> tuple[dict[str, int], list[float]]:
    """Sends ``count`` records in ten chunks; (sends by kind, records/s of each chunk)."""
    from dlpipe.produce.producer import plan_messages, produce
    from dlpipe.produce.records import BAD_KINDS

    samples, by_kind, rates = _samples(), {}, []
    chunk = count // 10
    for i in range(10):
        n = chunk if i < 9 else count - 9 * chunk
        msgs = plan_messages(samples, count=n, prefix="scale", source="synthetic-32",
                             now=datetime.now(UTC), bad_fraction=0.01, bad_kinds=list(BAD_KINDS),
                             duplicate_fraction=0.01, schema_version=1, seed=i,
                             watermark_delay_s=cfg.ingest.watermark_delay_s)
        report = produce(cfg, msgs, count=n, rate=0, log_path=None)
        rates.append(n / report.seconds)
        for kind, k in report.by_kind.items():
            by_kind[kind] = by_kind.get(kind, 0) + k
    return by_kind, rates


def _window(batches: list[dict[str, Any]], first: bool, rows: int) -> list[dict[str, Any]]:
    """The batches that hold the first (or last) ``rows`` records."""
    ordered = batches if first else list(reversed(batches))
    picked, seen = [], 0
    for b in ordered:
        picked.append(b)
        seen += b["rows_in"]
        if seen >= rows:
            break
    return picked if first else list(reversed(picked))


def _span(window: list[dict[str, Any]]) -> tuple[float, float]:
    """Wall-clock (start, end) of a run of batches, as epoch seconds."""
    start = window[0]["started_at"].timestamp()
    return start, window[-1]["started_at"].timestamp() + window[-1]["seconds"]


def full_batches(batches: list[dict[str, Any]], per_batch: int) -> list[dict[str, Any]]:
    """Batches after the first (it creates the tables) that hold a whole trigger's records."""
    return [b for b in batches[1:] if b["rows_in"] >= 0.9 * per_batch]


def ingest_all(spark, cfg, count: int) -> dict[str, Any]:
    from spark_jobs.ingest import job

    with RssSampler() as rss:
        offset = time.time() - time.monotonic()  # sampler times are monotonic
        started = time.perf_counter()
        batches = job.run(spark, cfg, once=True)
        seconds = time.perf_counter() - started
    tenth = count // 10
    head, tail = _window(batches, True, tenth), _window(batches, False, tenth)
    (h0, h1), (t0, t1) = _span(head), _span(tail)
    rss_head = rss.peak(until=h1 - offset)
    rss_all = rss.peak()
    full = full_batches(batches, cfg.ingest.max_offsets_per_trigger)
    return {
        "batches": batches, "seconds": seconds,
        "rate_head": sum(b["rows_in"] for b in head) / (h1 - h0),
        "rate_tail": sum(b["rows_in"] for b in tail) / (t1 - t0),
        "batch_s_start": sum(b["seconds"] for b in full[:2]) / len(full[:2]),
        "batch_s_end": sum(b["seconds"] for b in full[-2:]) / len(full[-2:]),
        "rss_head": rss_head, "rss_all": rss_all,
    }


def _files(cfg, path: str) -> int:
    from tests.helpers import read_delta_with_delta_rs

    return len(read_delta_with_delta_rs(cfg, path).file_uris())


def export_pair(spark, cfg, dataset: str) -> dict[str, Any]:
    """Export of the table's latest version, against a plain Parquet write of the same rows."""
    from spark_jobs.export import job as export_job

    rows = spark.read.format("delta").load(cfg.tables.clean)
    parquet = cfg.tables.clean.rstrip("/") + "-parquet"
    started = time.perf_counter()
    rows.write.mode("overwrite").parquet(parquet)
    parquet_s = time.perf_counter() - started
    started = time.perf_counter()
    manifest = export_job.export(spark, cfg, dataset=dataset)
    export_s = time.perf_counter() - started
    n = manifest.source["rows"]
    return {"manifest": manifest, "rows": n, "export_rate": n / export_s,
            "parquet_rate": n / parquet_s}


def reader_pass(cfg, manifest, cache_dir) -> float:
    from dlpipe.datasets.shard_cache import ShardCache
    from models.input import make_dataset

    cache = ShardCache.from_config(cfg, cache_dir=cache_dir)
    try:
        started, n = time.perf_counter(), 0
        for _, labels in make_dataset(manifest, "train", cache=cache, batch_size=256, shuffle=False):
            n += int(labels.shape[0])
        assert n == manifest.counts["train"]["records"], (n, manifest.counts["train"])
        return n / (time.perf_counter() - started)
    finally:
        cache.close()
        shutil.rmtree(cache_dir, ignore_errors=True)


def check_accounting(cfg, produced: int, by_kind: dict[str, int]) -> dict[str, int]:
    """clean + quarantined + duplicates = produced, each clean id once (read with delta-rs)."""
    from tests.helpers import read_delta_with_delta_rs

    def table(path: str, columns: list[str]):
        return read_delta_with_delta_rs(cfg, path).to_pyarrow_table(columns=columns)

    ids = table(cfg.tables.clean, ["id"]).column("id")
    quarantined = table(cfg.tables.quarantine, ["kafka_offset"]).num_rows
    duplicates = sum(table(cfg.tables.ingest_batches, ["duplicates"]).column("duplicates").to_pylist())
    unique = len(set(ids.to_pylist()))
    counts = {"clean": len(ids), "quarantined": quarantined, "duplicates": duplicates,
              "produced": produced, "valid sent": by_kind.get("valid", 0),
              "duplicates sent": by_kind.get("duplicate", 0)}
    if unique != len(ids) or len(ids) + quarantined + duplicates != produced:
        raise AssertionError(f"accounting does not add up ({unique} distinct clean ids): {counts}")
    return counts


def cleanup(cfg, run: str) -> None:
    """Deletes the run's objects (tables, checkpoint, datasets, model) and its topic."""
    from bench.cleanup import drop_prefixes

    drop_prefixes(cfg, [(cfg.buckets.lake, f"bench/scale-{run}/"),
                        (cfg.buckets.checkpoints, f"bench/scale-{run}/"),
                        (cfg.buckets.datasets, f"bench-scale-{run}"),
                        (cfg.buckets.models, f"bench-scale-{run}/")],
                  [cfg.kafka.topics["raw"].name])


def run(ctx: Context) -> list[Result]:
    from bench.serving_model import publish_untrained
    from dlpipe.core.config import with_overrides
    from dlpipe.core.session import get_spark
    from dlpipe.produce.sources import SYNTHETIC_CLASSES
    from spark_jobs.ingest import job
    from spark_jobs.maintain.job import maintain
    from spark_jobs.score import job as score_job

    count = 20_000 if ctx.quick else 1_000_000
    tenth = count // 10
    run_id = uuid.uuid4().hex[:8]
    wall = time.perf_counter()
    cfg = _config(ctx, run_id, per_batch=count // 20)
    warm = _config(ctx, f"{run_id}-warm", per_batch=500)
    spark = get_spark(cfg, app_name="dlpipe-bench-scale", master="local[2]",
                      extra_conf={"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2"})
    try:
        produce_all(warm, 500)
        job.run(spark, warm, once=True)
        by_kind, produce_rates = produce_all(cfg, count)
        ing = ingest_all(spark, cfg, count)
        files_before = _files(cfg, cfg.tables.clean)
        started = time.perf_counter()
        maintain(spark, cfg)
        maintain_s = time.perf_counter() - started
        files_after = _files(cfg, cfg.tables.clean)
        accounting = check_accounting(cfg, count, by_kind)

        full = export_pair(spark, cfg, f"bench-scale-{run_id}")
        small_cfg = with_overrides(cfg, {"tables.clean": f"s3a://{cfg.buckets.lake}/bench/scale-{run_id}/tenth"})
        (spark.read.format("delta").load(cfg.tables.clean).limit(tenth)
         .write.format("delta").save(small_cfg.tables.clean))
        small = export_pair(spark, small_cfg, f"bench-scale-{run_id}-tenth")
        read_small = reader_pass(cfg, small["manifest"], ctx.work_dir / "cache-tenth")
        read_full = reader_pass(cfg, full["manifest"], ctx.work_dir / "cache-full")

        name = f"bench-scale-{run_id}"
        version = publish_untrained(cfg, name, architecture="resnet", height=32, width=32,
                                    channels=3, classes=list(SYNTHETIC_CLASSES))
        scored = score_job.score(spark, small_cfg, model=name, version=version)
        assert scored.scored == tenth, scored
        wall_s = time.perf_counter() - wall
    finally:
        for c, r in ((cfg, run_id), (warm, f"{run_id}-warm")):
            try:
                cleanup(c, r)
            except Exception as exc:  # the figures matter more than the cleanup
                log.warning(f"bench_scale: cleanup of run {r} failed: {exc}")
    return results(count, by_kind, produce_rates, ing, files_before, files_after, maintain_s,
                   accounting, full, small, read_small, read_full, scored.rate, wall_s)


def results(count, by_kind, produce_rates, ing, files_before, files_after, maintain_s,
            accounting, full, small, read_small, read_full, score_rate, wall_s) -> list[Result]:
    n, tenth = f"{count:,}", f"{count // 10:,}"
    (jvm_h, py_h), (jvm_a, py_a) = ing["rss_head"], ing["rss_all"]
    batches = ing["batches"]
    common = f"{n} records, local[2], {len(batches)} micro-batches"

    def info(metric: str, value: float, unit: str, notes: str) -> Result:
        return Result(benchmark="scale", metric=metric, unit=unit, value=value, baseline_name="-",
                      baseline_value=0.0, notes=notes)

    return [
        info("produce records/s, first tenth", produce_rates[0], "rec/s",
             f"then {produce_rates[-1]:,.0f} rec/s for the last tenth; sent {by_kind}"),
        Result(benchmark="scale ingest throughput", metric=f"records/s over the last {tenth} vs the first",
               unit="rec/s", value=ing["rate_tail"], baseline_name=f"first {tenth} records",
               baseline_value=ing["rate_head"], target_ratio=THROUGHPUT_TARGET,
               notes=f"{common}; whole ingest {count / ing['seconds']:,.0f} rec/s in {ing['seconds']:.0f} s"),
        Result(benchmark="scale ingest batch time", metric="seconds per full batch: first two / last two",
               unit="s", value=ing["batch_s_start"], baseline_name="last two (table ~N rows)",
               baseline_value=ing["batch_s_end"], target_ratio=BATCH_TIME_TARGET,
               notes=f"{common}; per-batch seconds {[b['seconds'] for b in batches]}"),
        Result(benchmark="scale driver RSS", metric=f"peak JVM RSS up to {tenth} vs up to {n}", unit="MiB",
               value=jvm_h / MB, baseline_name=f"peak up to {n}", baseline_value=jvm_a / MB,
               target_ratio=RSS_TARGET, notes="driver JVM (local mode: also the executor)"),
        Result(benchmark="scale worker RSS", metric=f"peak Python workers RSS up to {tenth} vs up to {n}",
               unit="MiB", value=py_h / MB, baseline_name=f"peak up to {n}", baseline_value=py_a / MB,
               target_ratio=RSS_TARGET, notes="sum over pyspark.daemon and its workers"),
        info("clean table live files before -> after maintain", files_before, "files",
             f"after: {files_after}; maintain took {maintain_s:.0f} s"),
        Result(benchmark="scale export", metric=f"records/s at {n}, Delta -> TFRecord on MinIO",
               unit="rec/s", value=full["export_rate"], baseline_name="plain Parquet write, same rows",
               baseline_value=full["parquet_rate"], target_ratio=EXPORT_TARGET,
               notes=f"{full['rows']:,} rows, {len(full['manifest'].shards)} shards"),
        Result(benchmark="scale export (tenth)", metric=f"records/s at {tenth}", unit="rec/s",
               value=small["export_rate"], baseline_name="plain Parquet write, same rows",
               baseline_value=small["parquet_rate"], notes=f"{small['rows']:,} rows"),
        info(f"reader images/s, cold cache, train split of {n}", read_full, "img/s",
             f"train split of {tenth}: {read_small:,.0f} img/s"),
        info(f"score images/s, {tenth} rows", score_rate, "img/s",
             "resnet, untrained weights; includes TensorFlow's start in the workers"),
        info("accounting (delta-rs): clean + quarantined + duplicates = produced", count, "records",
             str(accounting)),
        info("wall time of the run", wall_s, "s", common),
    ]
