"""Pure Spark transforms of ``dlpipe drift``: sample messages -> rows, image statistics."""

from __future__ import annotations

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf

SAMPLE_SCHEMA = ("model STRING, version INT, signature STRING, served_at STRING, "
                 "class_index INT, class_name STRING, probability DOUBLE, image_b64 STRING")
STATS_TYPE = "struct<mean:double,std:double,width:int,height:int>"


def image_stats(image: Column) -> Column:
    """Grey-level mean, std, width and height of encoded images (``dlpipe.contract.images``),
    null for an image that does not decode."""
    @pandas_udf(STATS_TYPE)
    def stats(images: pd.Series) -> pd.DataFrame:
        from dlpipe.contract.images import image_statistics

        rows = [image_statistics(b) if b is not None else None for b in images]
        return pd.DataFrame([r if r is not None else (None, None, None, None) for r in rows],
                            columns=["mean", "std", "width", "height"])

    return stats(image)


def parse_samples(messages: DataFrame) -> DataFrame:
    """Kafka messages of the samples topic -> one row per sample (not JSON: skipped)."""
    parsed = messages.select(
        F.from_json(F.col("value").cast("string"), SAMPLE_SCHEMA).alias("s"),
        F.col("partition").alias("kafka_partition"), F.col("offset").alias("kafka_offset"))
    rows = parsed.select(
        "s.model", "s.version", "s.signature",
        F.to_timestamp("s.served_at").alias("served_at"), "s.class_index", "s.class_name",
        "s.probability", F.unbase64("s.image_b64").alias("image"), "kafka_partition", "kafka_offset")
    return rows.where(F.col("model").isNotNull())


def sample_rows(messages: DataFrame) -> DataFrame:
    """``parse_samples`` with each image's statistics as columns ``mean, std, width, height``."""
    return (parse_samples(messages).withColumn("stats", image_stats(F.col("image")))
            .select("*", "stats.*").drop("stats"))
