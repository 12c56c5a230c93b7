"""Refuse at start a config the existing clean table cannot take, instead of crash-looping.

A new ``rules.derived`` column makes every Delta append fail (the table has no such column),
so a continuous driver under ``restartPolicy: Always`` restarts forever; a new target image
size would be appended silently and mix sizes in one table, which export and training read as
one fixed shape. Both are caught before the query starts, with the fix in the message.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from dlpipe.contract.record import CLEAN_COLUMNS
from dlpipe.core.config import IngestConfig
from dlpipe.core.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def expected_columns(ingest: IngestConfig) -> list[str]:
    base = re.findall(r"(?:^|,)\s*(\w+)\s", CLEAN_COLUMNS)  # names, not MAP<STRING, STRING>
    return base + [name for name in ingest.rules.derived if name not in base]


def mismatches(ingest: IngestConfig, table_columns: list[str],
               table_size: tuple[int, int, int] | None) -> list[str]:
    """What the config would write that the table cannot hold (empty: they agree)."""
    problems = []
    new = [c for c in expected_columns(ingest) if c not in table_columns]
    if new:
        problems.append(f"the config adds column(s) {', '.join(new)} (ingest.rules.derived) that the "
                        "table does not have: every append would fail")
    want = (ingest.image.target_height, ingest.image.target_width, ingest.image.target_channels)
    if table_size is not None and tuple(table_size) != want:
        problems.append("the table holds {}x{}x{} images and ingest.image.target_* is now {}x{}x{}:"
                        " one table must hold one size".format(*table_size, *want))
    return problems


def check_clean_table(spark: SparkSession, ingest: IngestConfig, path: str) -> None:
    """Raise ConfigError when the clean table at ``path`` cannot take this config's rows."""
    from dlpipe.core.delta_io import read_if_exists

    table = read_if_exists(spark, path)
    if table is None:
        return
    first = table.select("height", "width", "channels").limit(1).collect()
    size = (first[0]["height"], first[0]["width"], first[0]["channels"]) if first else None
    problems = mismatches(ingest, table.columns, size)
    if problems:
        raise ConfigError(
            f"the clean table {path} does not match the config: " + "; ".join(problems),
            fix="write to a new table (tables.clean, or another pipeline.name), or change the "
                "config back; docs/data-contract.md, \"Changing the clean table\", says how to "
                "migrate a table")
