"""Delta writes that a replayed micro-batch turns into no-ops (Delta's idempotent writes).

Delta records (txnAppId, txnVersion) in the table's log with the commit; a later write with
the same app id and a version not above the recorded one is skipped. With the streaming
batch id as the version, each table receives each micro-batch exactly once, even when the
batch is re-run after a crash between two tables' commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def append_once(
    df: DataFrame, path: str, *, app_id: str, version: int, partition_by: Sequence[str] = ()
) -> None:
    writer = (df.write.format("delta").mode("append")
              .option("txnAppId", app_id).option("txnVersion", str(version)))
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path)


def table_exists(spark: SparkSession, path: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path)


def read_if_exists(spark: SparkSession, path: str) -> DataFrame | None:
    return spark.read.format("delta").load(path) if table_exists(spark, path) else None
