"""Shard planning's inputs: exact counts per split and class, sizes estimated from a sample."""

from __future__ import annotations

from collections import Counter

import pytest

from dlpipe.core.errors import DlpipeError
from spark_jobs.export.job import _RECORD_OVERHEAD, split_stats

CLASSES = ["circle", "square"]


def frame(spark, n: int, *, image_bytes: int = 1000, bad_label: bool = False):
    rows = [(f"id-{i:05d}", ("train", "validation", "test")[i % 3], i % 2,
             CLASSES[(i + bad_label) % 2], b"x" * image_bytes) for i in range(n)]
    return spark.createDataFrame(rows, "id STRING, split STRING, label INT, label_name STRING, image BINARY")


def test_counts_are_exact_and_bytes_are_counts_times_the_sampled_record_size(spark):
    by_class, size = split_stats(frame(spark, 300), CLASSES)
    assert by_class["train"] == Counter({"circle": 50, "square": 50})
    assert sum(sum(c.values()) for c in by_class.values()) == 300
    assert size == {s: 100 * (1000 + len("id-00000") + _RECORD_OVERHEAD) for s in by_class}


def test_an_empty_table_plans_nothing(spark):
    by_class, size = split_stats(frame(spark, 0), CLASSES)
    assert all(not c for c in by_class.values()) and not any(size.values())


def test_a_label_whose_index_disagrees_with_the_class_map_is_named(spark):
    with pytest.raises(DlpipeError, match="has index"):
        split_stats(frame(spark, 10, bad_label=True), CLASSES)
