"""Split and shard assignment on small frames: deterministic, reproducible in plain Python."""

from __future__ import annotations

from collections import Counter

import pytest
from chispa import assert_df_equality

from dlpipe.core.errors import ConfigError, DlpipeError
from spark_jobs.export.transforms import (
    check_fractions,
    kafka_offset_ranges,
    plan_shards,
    split_of,
    with_shard,
    with_split,
)

FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def ids_frame(spark, n: int):
    return spark.createDataFrame([(f"digits-{i:06d}",) for i in range(n)], "id STRING")


def test_split_is_the_documented_hash_of_salt_and_id(spark):
    df = with_split(ids_frame(spark, 2000), FRACTIONS, salt="s1")
    expected = spark.createDataFrame(
        [(f"digits-{i:06d}", split_of(f"digits-{i:06d}", FRACTIONS, salt="s1")) for i in range(2000)],
        "id STRING, split STRING")
    assert_df_equality(df, expected, ignore_row_order=True, ignore_nullable=True)
    counts = Counter(r["split"] for r in df.collect())
    assert 1500 < counts["train"] < 1700 and counts["validation"] > 120 and counts["test"] > 120


def test_split_ignores_partitioning_and_row_order(spark):
    base = ids_frame(spark, 500)
    one = with_split(base.coalesce(1), FRACTIONS, salt="s1")
    many = with_split(base.repartition(7).orderBy("id", ascending=False), FRACTIONS, salt="s1")
    assert_df_equality(one, many, ignore_row_order=True)


def test_another_salt_reshuffles(spark):
    a = {r["id"]: r["split"] for r in with_split(ids_frame(spark, 500), FRACTIONS, salt="a").collect()}
    b = {r["id"]: r["split"] for r in with_split(ids_frame(spark, 500), FRACTIONS, salt="b").collect()}
    assert sum(a[k] != b[k] for k in a) > 50


def test_shards_cover_each_split_and_parts_are_global(spark):
    plan = {"train": 3, "validation": 1, "test": 2}
    df = with_shard(with_split(ids_frame(spark, 3000), FRACTIONS, salt="s"), plan, salt="s")
    rows = df.collect()
    seen = {(r["split"], r["shard"], r["part"]) for r in rows}
    assert seen == {("train", 0, 0), ("train", 1, 1), ("train", 2, 2), ("validation", 0, 3),
                    ("test", 0, 4), ("test", 1, 5)}
    per_train_shard = Counter(r["shard"] for r in rows if r["split"] == "train")
    assert min(per_train_shard.values()) > 0.8 * max(per_train_shard.values())


def test_kafka_offset_ranges_give_each_partitions_first_and_last_offset(spark):
    rows = [("a", 0, 5), ("b", 0, 9), ("c", 1, 3), ("d", 0, 7)]
    df = spark.createDataFrame(rows, "id STRING, kafka_partition INT, kafka_offset BIGINT")
    expected = spark.createDataFrame([(0, 5, 9, 3), (1, 3, 3, 1)],
                                     "partition INT, first BIGINT, last BIGINT, rows BIGINT")
    assert_df_equality(kafka_offset_ranges(df), expected, ignore_nullable=True)


@pytest.mark.parametrize(("fractions", "message"), [
    ({"train": 0.8, "val": 0.2}, "unknown split 'val'"),
    ({"train": 0.8, "test": 0.1}, "add up to 1"),
    ({"train": 1.2, "test": -0.2}, ">= 0"),
    ({"validation": 0.5, "test": 0.5}, "train must be above 0"),
])
def test_bad_fractions_are_named(fractions, message):
    with pytest.raises(ConfigError, match=message):
        check_fractions(fractions)


def test_plan_sizes_shards_and_keeps_one_train_shard_per_worker():
    mb = 2**20
    plan = plan_shards({"train": 10_000, "validation": 1_000, "test": 0},
                       {"train": 950 * mb, "validation": 20 * mb, "test": 0},
                       target_bytes=100 * mb, min_train_shards=2)
    assert plan == {"train": 10, "validation": 1, "test": 0}
    tiny = plan_shards({"train": 3, "validation": 1, "test": 1}, {"train": 10},
                       target_bytes=100 * mb, min_train_shards=2)
    assert tiny == {"train": 2, "validation": 1, "test": 1}
    with pytest.raises(DlpipeError, match="fewer than the 4 training workers"):
        plan_shards({"train": 3}, {"train": 10}, target_bytes=mb, min_train_shards=4)
