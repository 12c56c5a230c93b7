"""The scoring MERGE condition: one row per (id, model, version), whatever the model is named;
and which rows a version still has to score."""

from __future__ import annotations

from chispa import assert_df_equality

from spark_jobs.score.transforms import merge_condition, unscored

SCHEMA = "id STRING, model_name STRING, model_version INT"


def matches(spark, target, source, *, model: str) -> list[tuple]:
    t = spark.createDataFrame(target, SCHEMA).alias("t")
    s = spark.createDataFrame(source, SCHEMA).alias("s")
    joined = t.join(s, merge_condition(model=model)).select("s.id", "s.model_name", "s.model_version")
    return sorted(tuple(r) for r in joined.collect())


def test_rows_match_on_the_whole_key_of_the_scored_model(spark):
    target = [("a", "m", 1), ("b", "m", 1), ("a", "m", 2), ("a", "other", 1)]
    source = [("a", "m", 1), ("b", "m", 2), ("c", "m", 1)]
    assert matches(spark, target, source, model="m") == [("a", "m", 1)]


def test_a_model_name_is_a_value_never_sql(spark):
    target = [("a", "m", 1), ("a", "x' OR '1'='1", 1)]
    source = [("a", "m", 1), ("a", "x' OR '1'='1", 1)]
    assert matches(spark, target, source, model="x' OR '1'='1") == [("a", "x' OR '1'='1", 1)]
    assert matches(spark, target, source, model="nope") == []


def test_a_version_scores_the_rows_it_has_not_scored_whatever_other_versions_did(spark):
    rows = spark.createDataFrame([("a", 1), ("b", 2), ("c", 3)], "id STRING, n INT")
    predictions = spark.createDataFrame(
        [("a", "m", 2), ("b", "m", 1), ("c", "other", 2), ("c", "m", 3)], SCHEMA)
    left = unscored(rows, predictions, model="m", version=2)
    assert_df_equality(left, spark.createDataFrame([("b", 2), ("c", 3)], "id STRING, n INT"),
                       ignore_row_order=True)
    assert unscored(rows, None, model="m", version=2) is rows, "a first run: no anti-join at all"
