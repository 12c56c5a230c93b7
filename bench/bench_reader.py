"""Training input from MinIO against local disk, and the export against a plain write.

1. Reader: images/s of ``models.input.make_dataset`` (shards fetched from MinIO through the
   shard cache, then read, parsed, decoded and batched) against ``tf.data.TFRecordDataset``
   over the same shards already on local disk, with the same parse, decode and tf.data options
   (the autotuner off, as in make_dataset: with it on, either side ran at half speed in about
   one pass in three, which made single ratios meaningless). "cold" starts
   each pass with an empty cache, so every byte comes from MinIO during the pass; "warm"
   reads from the cache (epochs after the first). Target: cold >= 0.9 of local disk.
2. Reader against Ray Data (the peer users pick instead): the same train shards read from
   MinIO by ``ray.data.read_tfrecords`` and decoded by the same ``decode_images`` on each
   of its TF batches, in Ray's own virtualenv (``bench.peer_env``). Target: at least as fast as Ray.
3. Export: records/s of ``dlpipe export`` (split, shard, encode, upload, publish) against a
   plain Spark Parquet write of the same rows to MinIO.

Records are 32x32 RGB PNGs of the synthetic shapes (about 3 KB each, noise included).
"""

from __future__ import annotations

import shutil
import statistics
import time
import uuid
from pathlib import Path

from bench.data import synthetic_overrides, synthetic_table
from bench.harness import Context, Result, median_rate

TARGET = 0.9
PEER_TARGET = 1.0
BATCH = 256


def _ray_peer(cfg, manifest, train, records: int, *, repeats: int, dlpipe_rate: float) -> Result:
    """dlpipe's cold reader against Ray Data's pass over the same shards (its own venv)."""
    from bench.peer_env import PeerUnavailable, ray_reader_rates

    spec = {"endpoint": cfg.s3_endpoint, "region": cfg.s3.region, "records": records,
            "paths": [f"{manifest.bucket}/{manifest.key(s)}" for s in train], "batch": BATCH,
            "height": 32, "width": 32, "channels": 3, "repeats": repeats}
    metric, baseline = "images/s from MinIO, cold cache, vs Ray Data", "Ray Data read_tfrecords + same decode"
    try:
        rates = ray_reader_rates(spec, cfg.s3_credentials())
    except PeerUnavailable as exc:
        return Result(benchmark="reader vs ray", metric=metric, unit="img/s", value=dlpipe_rate,
                      baseline_name=baseline, baseline_value=0.0, notes=f"not measured: {exc}")
    return Result(benchmark="reader vs ray", metric=metric, unit="img/s", value=dlpipe_rate,
                  baseline_name=baseline, baseline_value=statistics.median(rates),
                  target_ratio=PEER_TARGET,
                  notes=f"{records} records; Ray {'/'.join(f'{r:,.0f}' for r in rates)} img/s "
                        "(iter_tf_batches, then the same decode per batch), median of "
                        f"{len(rates)} after a warm-up pass; Ray 2.60, same shards")


def run(ctx: Context) -> list[Result]:
    import tensorflow as tf

    from dlpipe.core.config import with_overrides
    from dlpipe.core.s3 import s3_client
    from dlpipe.core.session import get_spark
    from dlpipe.datasets.shard_cache import ShardCache
    from models.input import decode_parallelism, feature_spec, make_dataset, reader_options
    from models.preprocess import decode_images
    from spark_jobs.export import job as export_job

    count = 12_000 if ctx.quick else 60_000
    repeats = 3 if ctx.quick else 5
    run_id = uuid.uuid4().hex[:8]
    lake = ctx.cfg.buckets.lake
    cfg = with_overrides(ctx.cfg, {**synthetic_overrides(lake, f"reader-{run_id}"),
                                   "export.shard_target_mb": 8 if ctx.quick else 32})
    spark = get_spark(cfg, app_name="dlpipe-bench-reader", master="local[2]",
                      extra_conf={"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2"})
    synthetic_table(spark, cfg.tables.clean, count)

    # -- export vs plain parquet write (warm both once on the same table) ----------------
    rows = spark.read.format("delta").load(cfg.tables.clean)
    parquet = f"s3a://{lake}/bench/reader-{run_id}/parquet"
    rows.write.mode("overwrite").parquet(parquet)
    started = time.perf_counter()
    rows.repartition(4).write.mode("overwrite").parquet(parquet)
    parquet_s = time.perf_counter() - started
    export_job.export(spark, cfg, dataset=f"bench-warm-{run_id}")
    started = time.perf_counter()
    manifest = export_job.export(spark, cfg, dataset=f"bench-{run_id}")
    export_s = time.perf_counter() - started
    train = manifest.shards_of("train")
    records = sum(s.records for s in train)

    # -- reader ------------------------------------------------------------------------
    client = s3_client(cfg)
    local_dir = ctx.work_dir / "local-shards"
    local_dir.mkdir()
    local = []
    for shard in train:
        path = local_dir / shard.path.replace("/", "_")
        client.download_file(manifest.bucket, manifest.key(shard), str(path))
        local.append(str(path))
    spec = feature_spec(manifest)

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, spec)
        return decode_images(parsed["image"], height=32, width=32, channels=3), parsed["label"]

    def drain(ds) -> float:
        n = 0
        for _, labels in ds:
            n += int(labels.shape[0])
        assert n == records, (n, records)
        return n

    def local_pass() -> float:
        # tf.data's options and decode parallelism as make_dataset's (the autotuner off: with
        # it, about one pass in three ran the decode on one core; models/input.py)
        ds = (tf.data.TFRecordDataset(local, buffer_size=1 << 20, num_parallel_reads=4)
              .batch(BATCH).map(parse, num_parallel_calls=decode_parallelism())
              .with_options(reader_options()).prefetch(2))
        return drain(ds)

    cache_root = ctx.work_dir / "caches"

    def minio_pass(cache_dir: Path) -> float:
        cache = ShardCache.from_config(cfg, cache_dir=cache_dir)
        try:
            return drain(make_dataset(manifest, "train", cache=cache, batch_size=BATCH, shuffle=False))
        finally:
            cache.close()

    warm = cache_root / "warm"
    local_pass()
    minio_pass(warm)  # warm-up: graph building, and fills the warm cache
    local_rate, cold_rate, warm_rate = [], [], []
    for _ in range(repeats):  # interleaved, so machine noise hits all three alike
        local_rate.append(median_rate(local_pass, repeats=1))
        cold = cache_root / uuid.uuid4().hex  # empty: every byte comes from MinIO in the pass
        cold_rate.append(median_rate(lambda cold=cold: minio_pass(cold), repeats=1))
        shutil.rmtree(cold)  # after the timing: deleting the cache is the bench's, not the reader's
        warm_rate.append(median_rate(lambda: minio_pass(warm), repeats=1))
    shutil.rmtree(cache_root, ignore_errors=True)

    peer = _ray_peer(cfg, manifest, train, records, repeats=repeats, dlpipe_rate=statistics.median(cold_rate))
    size_mb = sum(s.bytes for s in train) / 2**20
    notes = (f"{records} train records in {len(train)} shards ({size_mb:.0f} MiB), batch {BATCH}, "
             f"{cfg.export.reader.download_threads} download threads; median of {repeats}")
    return [
        Result(benchmark="reader", metric="images/s from MinIO, cold cache", unit="img/s",
               value=statistics.median(cold_rate), baseline_name="TFRecordDataset on local disk",
               baseline_value=statistics.median(local_rate), target_ratio=TARGET, notes=notes),
        Result(benchmark="reader", metric="images/s from the shard cache (later epochs)",
               unit="img/s", value=statistics.median(warm_rate),
               baseline_name="TFRecordDataset on local disk",
               baseline_value=statistics.median(local_rate), notes=notes),
        peer,
        Result(benchmark="export", metric="records/s, Delta -> TFRecord shards on MinIO",
               unit="rec/s", value=manifest.source["rows"] / export_s,
               baseline_name="plain Parquet write of the same rows to MinIO",
               baseline_value=manifest.source["rows"] / parquet_s,
               notes=f"{manifest.source['rows']} records, {len(manifest.shards)} shards, local[2]"),
    ]
