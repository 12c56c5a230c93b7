"""Bench inputs: a clean-table-shaped Delta table of synthetic 32x32 colour PNGs."""

from __future__ import annotations

from typing import Any


def synthetic_table(spark: Any, path: str, count: int) -> None:
    import pandas as pd

    from dlpipe.produce.sources import SYNTHETIC_CLASSES, synthetic

    rows = []
    for sample, _ in zip(synthetic(size=32), range(count), strict=False):
        rows.append({"id": f"syn-{sample.index:07d}", "label": sample.label,
                     "label_index": SYNTHETIC_CLASSES.index(sample.label),
                     "image_png": sample.image.data, "height": 32, "width": 32, "channels": 3})
    df = spark.createDataFrame(pd.DataFrame(rows), schema=(
        "id STRING, label STRING, label_index INT, image_png BINARY, height INT, width INT, channels INT"))
    df.repartition(4).write.format("delta").mode("overwrite").save(path)


def ingest_run_overrides(cfg: Any, run: str) -> dict[str, Any]:
    """A raw topic, tables, checkpoint and query of the run's own, on the synthetic shapes
    (``bench/<run>/...``): ingest benches never share state."""
    lake, ckpt = cfg.buckets.lake, cfg.buckets.checkpoints
    return {
        **synthetic_overrides(lake, run),
        "kafka.topics.raw.name": f"bench.raw.{run}",
        "tables.quarantine": f"s3a://{lake}/bench/{run}/quarantine",
        "tables.ingest_batches": f"s3a://{lake}/bench/{run}/batches",
        "ingest.checkpoint": f"s3a://{ckpt}/bench/{run}/ingest",
        "ingest.query_name": f"bench-{run}",
    }


def synthetic_overrides(lake: str, run_id: str) -> dict[str, Any]:
    from dlpipe.produce.sources import SYNTHETIC_CLASSES

    return {
        "tables.clean": f"s3a://{lake}/bench/{run_id}/clean",
        "ingest.classes": list(SYNTHETIC_CLASSES), "ingest.image.target_height": 32,
        "ingest.image.target_width": 32, "ingest.image.target_channels": 3,
    }
