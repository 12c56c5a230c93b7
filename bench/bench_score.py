"""Batch scoring: images/s of ``dlpipe score`` against a plain in-process loop.

A clean-table-shaped Delta table of synthetic 32x32 colour PNGs is scored by the residual
CNN (the model ``training.architecture: resnet`` trains) through ``spark_jobs.score``:
Delta read, anti-join with what is scored, ``predict_batch_udf`` on 2 local cores, Delta
append. One version scores the whole table several times, each into a predictions table of
its own (created before, as a long-lived pipeline's table is). The first run pays for starting
TensorFlow in Spark's Python workers and loading the model there (noted). The later rounds,
with both done (the workers keep the loaded version), are a long-lived session scoring each
new micro-batch or table version; the figure is their median. Baseline, in each round right
after it: the same SavedModel signature over the same encoded images as numpy batches of the
same size, in one process; its median. Target: at least 0.8.
"""

from __future__ import annotations

import statistics
import time
import uuid

from bench.data import synthetic_overrides, synthetic_table
from bench.harness import Context, Result
from bench.serving_model import publish_untrained

TARGET = 0.8  # issue 14 (0.7 before)


def run(ctx: Context) -> list[Result]:
    import numpy as np

    from dlpipe.core.config import with_overrides
    from dlpipe.core.session import get_spark
    from dlpipe.produce.sources import SYNTHETIC_CLASSES
    from models.scoring import load_predict_fn
    from spark_jobs.score import job as score_job

    count = 8_000 if ctx.quick else 30_000
    rounds = 1 if ctx.quick else 3
    run_id = uuid.uuid4().hex[:8]
    name = f"bench-score-{run_id}"
    cfg = with_overrides(ctx.cfg, {
        **synthetic_overrides(ctx.cfg.buckets.lake, f"score-{run_id}"),
        "serving.model_dir": str(ctx.work_dir / "models"),
    })
    version = publish_untrained(cfg, name, architecture="resnet", height=32, width=32, channels=3,
                                classes=list(SYNTHETIC_CLASSES))
    spark = get_spark(cfg, app_name="dlpipe-bench-score", master="local[2]",
                      extra_conf={"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2"})
    synthetic_table(spark, cfg.tables.clean, count)
    images = np.array([bytes(r["image_png"]) for r in spark.read.format("delta").load(
        cfg.tables.clean).select("image_png").collect()], dtype=object)
    batch = cfg.scoring.batch_size

    def dlpipe_score(attempt: str) -> float:
        table = f"s3a://{cfg.buckets.lake}/bench/score-{run_id}/predictions-{attempt}"
        score_job.ensure_table(spark, cfg, table)  # a long-lived pipeline's table is there already
        report = score_job.score(spark, with_overrides(cfg, {"tables.predictions": table}),
                                 model=name, version=version)
        assert report.scored == count, report
        return report.rate

    predict = load_predict_fn(cfg, model=name, version=version)
    predict(images[:batch])  # warm-up: tracing

    def in_process() -> float:
        started = time.perf_counter()
        for i in range(0, len(images), batch):
            predict(images[i:i + batch])
        return len(images) / (time.perf_counter() - started)

    cold = dlpipe_score("cold")
    # Each round: the whole table through dlpipe score, then the same images in process.
    pairs = [(dlpipe_score(str(i)), in_process()) for i in range(rounds)]
    value = statistics.median(p[0] for p in pairs)
    baseline = statistics.median(p[1] for p in pairs)
    notes = (f"{count} images 32x32x3, resnet (untrained weights), batch {batch}, local[2]; "
             f"median of {rounds} rounds, each into a predictions table of its own (dlpipe/in-process "
             f"img/s: {', '.join(f'{a:,.0f}/{b:,.0f}' for a, b in pairs)}); cold first run "
             f"{cold:,.0f} img/s (TensorFlow start in the Python workers and the model load)")
    return [Result(benchmark="score", metric="images/s, dlpipe score (Delta in, Delta out)", unit="img/s",
                   value=value, baseline_name="in-process loop, same signature, numpy batches",
                   baseline_value=baseline, target_ratio=TARGET, notes=notes)]
