"""Pure steps of the export: split and shard assignment, shard planning. No I/O.

A record's split and shard depend on its id and a salt only (two slices of
``sha256("<salt>:<id>")``), never on partitioning, order or row count, so two exports of
one Delta version agree record for record, and ``split_of`` reproduces the assignment in
plain Python for anyone auditing a dataset.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from dlpipe.core.errors import ConfigError, DlpipeError
from dlpipe.datasets.manifest import SPLITS

_HEX_DIGITS = 15  # 60 bits per slice: exact in a BIGINT, and 15 of them fit a double well
SPLIT_METHOD = "sha256('<salt>:<id>'): hex[0:15] / 16**15 -> split by cumulative fraction; " \
               "hex[15:30] mod shards -> shard"


def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """Fractions per split in SPLITS order; they must be >= 0 and add up to 1."""
    unknown = sorted(set(fractions) - set(SPLITS))
    if unknown:
        raise ConfigError(f"export.split: unknown split {unknown[0]!r} (splits: {', '.join(SPLITS)})")
    out = {s: float(fractions.get(s, 0.0)) for s in SPLITS}
    if any(v < 0 for v in out.values()) or not math.isclose(sum(out.values()), 1.0, abs_tol=1e-9):
        raise ConfigError(f"export.split fractions must be >= 0 and add up to 1, got {out}")
    if out["train"] == 0:
        raise ConfigError("export.split.train must be above 0")
    return out


def _hash_hex(salt: str) -> Column:
    return F.sha2(F.concat(F.lit(f"{salt}:"), F.col("id")), 256)


def _slice(hex_col: Column, start: int) -> Column:
    return F.conv(F.substring(hex_col, start + 1, _HEX_DIGITS), 16, 10).cast("bigint")


def with_split(df: DataFrame, fractions: Mapping[str, float], *, salt: str) -> DataFrame:
    """Add ``split``: train, validation or test, fixed by the id's hash."""
    fractions = check_fractions(fractions)
    position = _slice(_hash_hex(salt), 0).cast("double") / float(16**_HEX_DIGITS)
    split, bound = None, 0.0
    for name in SPLITS[:-1]:
        bound += fractions[name]
        split = (F.when(position < bound, name) if split is None
                 else split.when(position < bound, name))
    return df.withColumn("split", split.otherwise(SPLITS[-1]))


def with_shard(df: DataFrame, shards: Mapping[str, int], *, salt: str) -> DataFrame:
    """Add ``shard`` (index within the split) and ``part`` (index over all shards)."""
    counts = F.create_map(*[x for s in SPLITS for x in (F.lit(s), F.lit(max(shards.get(s, 0), 1)))])
    offsets, first = {}, 0
    for s in SPLITS:
        offsets[s] = first
        first += shards.get(s, 0)
    offset = F.create_map(*[x for s in SPLITS for x in (F.lit(s), F.lit(offsets[s]))])
    shard = F.pmod(_slice(_hash_hex(salt), _HEX_DIGITS), counts[F.col("split")]).cast("int")
    return (df.withColumn("shard", shard)
            .withColumn("part", (offset[F.col("split")] + F.col("shard")).cast("int")))


def to_example_columns(df: DataFrame) -> DataFrame:
    """Clean-table columns -> the exported features (see dlpipe.datasets.tfrecord.FEATURES)."""
    return df.select(
        "id", F.col("label_index").cast("long").alias("label"), F.col("image_png").alias("image"),
        F.col("height").cast("long").alias("height"), F.col("width").cast("long").alias("width"),
        F.col("channels").cast("long").alias("channels"), "split",
        F.col("label").alias("label_name"),
    )


def split_of(record_id: str, fractions: Mapping[str, float], *, salt: str) -> str:
    """The split ``with_split`` gives ``record_id``, in plain Python."""
    fractions = check_fractions(fractions)
    digest = hashlib.sha256(f"{salt}:{record_id}".encode()).hexdigest()
    position = int(digest[:_HEX_DIGITS], 16) / 16**_HEX_DIGITS
    bound = 0.0
    for name in SPLITS[:-1]:
        bound += fractions[name]
        if position < bound:
            return name
    return SPLITS[-1]


def plan_shards(records: Mapping[str, int], estimated_bytes: Mapping[str, int], *,
                target_bytes: int, min_train_shards: int) -> dict[str, int]:
    """Shards per split: about ``target_bytes`` each, at least ``min_train_shards`` for
    train (one per training worker), never more shards than records."""
    if records.get("train", 0) < min_train_shards:
        raise DlpipeError(
            f"the train split has {records.get('train', 0)} record(s), fewer than the "
            f"{min_train_shards} training workers, so some worker would get no data",
            fix="ingest more data, lower training.workers, or raise export.split.train",
        )
    plan = {}
    for split in SPLITS:
        n = records.get(split, 0)
        wanted = math.ceil(estimated_bytes.get(split, 0) / target_bytes) if n else 0
        if split == "train":
            wanted = max(wanted, min_train_shards)
        plan[split] = min(max(wanted, 1 if n else 0), n)
    return plan


def kafka_offset_ranges(df: DataFrame) -> DataFrame:
    """Lineage of a table version: per Kafka partition, the first and last offset its rows
    came from and how many rows (a range can have gaps: duplicates and quarantined records)."""
    return (df.groupBy(F.col("kafka_partition").alias("partition"))
            .agg(F.min("kafka_offset").alias("first"), F.max("kafka_offset").alias("last"),
                 F.count("*").alias("rows"))
            .orderBy("partition"))
