"""Pure DataFrame steps of batch scoring: what still needs a score, the predictions rows, and
the MERGE condition that keeps one row per key.

No session, no paths: ``job.py`` reads the tables and writes the result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame
    from pyspark.sql.types import StructType

KEY = ("id", "model_name", "model_version")


def predictions_schema() -> StructType:
    from pyspark.sql.types import (
        ArrayType,
        FloatType,
        IntegerType,
        StringType,
        StructField,
        StructType,
        TimestampType,
    )

    return StructType([
        StructField("id", StringType(), False),
        StructField("model_name", StringType(), False),
        StructField("model_version", IntegerType(), False),
        StructField("predicted_class", StringType(), True),
        StructField("predicted_index", IntegerType(), True),
        StructField("probabilities", ArrayType(FloatType()), True),
        StructField("scored_at", TimestampType(), False),
    ])


def output_type() -> StructType:
    """What the model returns per row (the serving signature's outputs, renamed by Spark)."""
    from pyspark.sql.types import ArrayType, FloatType, IntegerType, StringType, StructField, StructType

    return StructType([
        StructField("probabilities", ArrayType(FloatType()), True),
        StructField("class_index", IntegerType(), True),
        StructField("class_name", StringType(), True),
    ])


def of_version(predictions: DataFrame, *, model: str, version: int) -> DataFrame:
    """The rows of the predictions table that this model version wrote."""
    from pyspark.sql import functions as F

    return predictions.where((F.col("model_name") == model) & (F.col("model_version") == version))


def unscored(rows: DataFrame, predictions: DataFrame | None, *, model: str, version: int) -> DataFrame:
    """Rows of the clean table with no prediction yet from this model version."""
    if predictions is None:
        return rows
    done = of_version(predictions, model=model, version=version)
    return rows.join(done.select("id"), on="id", how="left_anti")


def to_predictions(rows: DataFrame, scores: Column, *, model: str, version: int,
                   scored_at: Column) -> DataFrame:
    """``rows`` (with ``id``) and the model's output struct -> rows of the predictions table."""
    from pyspark.sql import functions as F

    scored = rows.select("id", scores.alias("p"))
    return scored.select(
        F.col("id"),
        F.lit(model).alias("model_name"),
        F.lit(version).cast("int").alias("model_version"),
        F.col("p.class_name").alias("predicted_class"),
        F.col("p.class_index").alias("predicted_index"),
        F.col("p.probabilities").alias("probabilities"),
        scored_at.alias("scored_at"),
    )


def merge_condition(*, model: str, target: str = "t", source: str = "s") -> Column:
    """The MERGE match of ``source`` rows into the ``target`` predictions table: equal keys,
    and the model name as a literal so Delta reads only that model's partition. Built from
    Columns, not SQL text, so a model name can never change the condition."""
    from functools import reduce

    from pyspark.sql import functions as F

    keys = [F.col(f"{target}.{k}") == F.col(f"{source}.{k}") for k in KEY]
    return reduce(lambda a, b: a & b, keys) & (F.col(f"{target}.model_name") == F.lit(model))
