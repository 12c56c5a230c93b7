"""Training throughput: 2 workers fed from MinIO against one process fed from memory.

1. Distributed: ``dlpipe train --workers 2`` (Spark barrier tasks, MultiWorkerMirroredStrategy,
   shards streamed from MinIO) on 32x32 colour synthetic data with the residual model;
   images/s is the median over epochs after the first (the first includes graph building).
   Baseline: the same model and global batch, one process, ``Model.fit`` on numpy arrays in
   memory, timed over the same epochs. Target: 0.8.
2. Input-bound check, one process: the real input pipeline as training runs it (MinIO ->
   shard cache -> parse -> decode in the warm-up epoch, kept decoded in memory within
   ``training.memory_cache_mb`` for the epochs timed) against ``take(k).cache().repeat()``
   of it, which costs nothing per step.
   Target: 0.95, i.e. the model, not the input, sets the pace.
"""

from __future__ import annotations

import statistics
import time
import uuid

from bench.data import synthetic_overrides, synthetic_table
from bench.harness import Context, Result

TARGET_DISTRIBUTED = 0.8
TARGET_INPUT = 0.95


def _in_memory(manifest, cache):
    import numpy as np

    from models.input import make_dataset

    xs, ys = [], []
    for images, labels in make_dataset(manifest, "train", cache=cache, batch_size=512, shuffle=False):
        xs.append(images.numpy())
        ys.append(labels.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def _epoch_seconds(model_fn, data, *, steps: int, epochs: int, batch: int) -> list[float]:
    """Seconds of each ``fit`` epoch after one warm-up epoch."""
    import tensorflow as tf

    class Timer(tf.keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    timer = Timer()
    model = model_fn()
    if isinstance(data, tuple):
        model.fit(data[0], data[1], batch_size=batch, epochs=epochs + 1, steps_per_epoch=steps,
                  callbacks=[timer], verbose=0, shuffle=True)
    else:
        model.fit(data, epochs=epochs + 1, steps_per_epoch=steps, callbacks=[timer], verbose=0)
    return timer.times[1:]


def run(ctx: Context) -> list[Result]:
    import tensorflow as tf

    from dlpipe.core.config import with_overrides
    from dlpipe.core.s3 import s3_client
    from dlpipe.core.session import get_spark
    from dlpipe.datasets.shard_cache import ShardCache
    from models.checkpoints import RunStore
    from models.cnn import build_model
    from models.input import make_dataset
    from spark_jobs.export import job as export_job
    from spark_jobs.train import job as train_job

    count = 6_000 if ctx.quick else 16_000
    epochs = 3 if ctx.quick else 4
    run_id = uuid.uuid4().hex[:8]
    cfg = with_overrides(ctx.cfg, {
        **synthetic_overrides(ctx.cfg.buckets.lake, f"train-{run_id}"),
        "export.shard_target_mb": 4, "training.architecture": "resnet", "training.epochs": epochs + 1,
        "training.batch_size": 128, "training.model_name": f"bench-resnet-{run_id}",
        "training.min_test_accuracy": 0.0, "export.reader.cache_dir": str(ctx.work_dir / "shards"),
    })
    spark = get_spark(cfg, app_name="dlpipe-bench-train", master="local[2]",
                      extra_conf={"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2"})
    synthetic_table(spark, cfg.tables.clean, count)
    manifest = export_job.export(spark, cfg, dataset=f"bench-train-{run_id}")
    batch = cfg.training.batch_size
    steps = manifest.counts["train"]["records"] // batch

    # -- 2 workers from MinIO ------------------------------------------------------------
    result = train_job.train(spark, cfg, workers=2, run_id=f"bench-{run_id}",
                             dataset=manifest.dataset)
    records = RunStore(s3_client(cfg),
                       cfg.buckets.checkpoints, result["run_id"]).metrics()
    distributed = statistics.median(r["images_per_s"] for r in records[1:])

    # -- one process: in-memory numpy, real input, cached input ------------------------------
    cache = ShardCache.from_config(cfg)
    x, y = _in_memory(manifest, cache)

    def model_fn():
        model = build_model("resnet", input_shape=(32, 32, 3), num_classes=len(manifest.classes))
        model.compile(optimizer=tf.keras.optimizers.Adam(cfg.training.learning_rate),
                      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"], steps_per_execution=cfg.training.steps_per_execution)
        return model

    def rate(times: list[float]) -> float:
        return steps * batch / statistics.median(times)

    memory = rate(_epoch_seconds(model_fn, (x, y), steps=steps, epochs=epochs, batch=batch))
    real_times: list[float] = []
    cached_times: list[float] = []
    for order in (("real", "cached"), ("cached", "real")):  # both orders: noise hits both alike
        for kind in order:
            if kind == "real":
                cold = ShardCache.from_config(cfg, cache_dir=ctx.work_dir / f"cold-{uuid.uuid4().hex}")
                data = make_dataset(manifest, "train", cache=cold, batch_size=batch, epochs=None,
                                    drop_remainder=True, shuffle=True,
                                    memory_cache_mb=cfg.training.memory_cache_mb)
                real_times += _epoch_seconds(model_fn, data, steps=steps, epochs=epochs, batch=batch)
            else:
                data = make_dataset(manifest, "train", cache=cache, batch_size=batch, epochs=None,
                                    drop_remainder=True, shuffle=True).take(20).cache().repeat()
                cached_times += _epoch_seconds(model_fn, data, steps=steps, epochs=epochs, batch=batch)
    real, cached = rate(real_times), rate(cached_times)
    notes = (f"{manifest.counts['train']['records']} train images 32x32x3, resnet, global batch {batch}, "
             f"{steps} steps/epoch, median of epochs after a warm-up epoch; decoded split kept in "
             f"memory up to training.memory_cache_mb={cfg.training.memory_cache_mb}")
    return [
        Result(benchmark="train", metric="images/s, 2 workers (Spark barrier tasks) from MinIO",
               unit="img/s", value=distributed, baseline_name="1 process, Keras fit on numpy in memory",
               baseline_value=memory, target_ratio=TARGET_DISTRIBUTED, notes=notes),
        Result(benchmark="train", metric="images/s, 1 process, real input pipeline from MinIO",
               unit="img/s", value=real, baseline_name="same, take(20).cache().repeat() input",
               baseline_value=cached, target_ratio=TARGET_INPUT, notes=notes),
    ]
