"""Which model versions may have rows in a predictions table: marks kept inside its folder.

Asking the table itself whether a version has rows is a Spark job over its file list: 0.5 s
on each run, 10% of scoring 30k images, and most runs are a version's first (a new version
scores the whole table), which have nothing to skip. So a version's mark is written before
its first append and never removed: a version with no mark has no rows and its run skips
the anti-join without asking the table. A mark without rows (the append failed, rows were
deleted) only costs the anti-join, which finds what is missing. The marks are objects
under ``_dlpipe_scored/`` in the table's folder (Delta ignores folders starting with ``_``),
so deleting the table deletes them too.

Only a table that ``ensure_table`` created keeps marks (``_dlpipe_scored/kept``, written
at creation): a table from before marks, or one written by other tools, or on a local
path, answers ``None`` and is asked the slow way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dlpipe.core.config import Config
from dlpipe.core.s3 import object_exists, s3_client, split_uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

FOLDER = "_dlpipe_scored"
KEPT = "kept"


def _where(cfg: Config, table: str) -> tuple[S3Client, str, str] | None:
    if not table.startswith(("s3://", "s3a://")):
        return None
    bucket, key = split_uri(table)
    return s3_client(cfg), bucket, f"{key.rstrip('/')}/{FOLDER}"


def keep_marks(cfg: Config, table: str) -> None:
    """Called when the table is created: from now on its versions are marked."""
    if (where := _where(cfg, table)) is not None:
        client, bucket, folder = where
        client.put_object(Bucket=bucket, Key=f"{folder}/{KEPT}", Body=b"")


def may_have_rows(cfg: Config, table: str, *, model: str, version: int) -> bool | None:
    """False: the version has no rows. True: it may have. None: the table keeps no marks."""
    if (where := _where(cfg, table)) is None:
        return None
    client, bucket, folder = where
    if not object_exists(client, bucket, f"{folder}/{KEPT}"):
        return None
    return object_exists(client, bucket, f"{folder}/{model}/{version}")


def mark(cfg: Config, table: str, *, model: str, version: int) -> None:
    """Before the version's rows are appended (a mark without rows is harmless; rows without
    a mark would be scored again)."""
    if (where := _where(cfg, table)) is not None:
        client, bucket, folder = where
        client.put_object(Bucket=bucket, Key=f"{folder}/{model}/{version}", Body=b"")
