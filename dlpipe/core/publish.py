"""Publishing on the object store: stage the objects, copy them into place, write the marker last.

Readers open only what a marker names (a dataset's ``manifest.json``, a model version's
``dlpipe-model.json``, a training run's ``latest.json``), so the marker is the one small
final write, made after every object it vouches for is in place and checked. A publish that
is killed half-way leaves staging objects and unmarked keys that no reader opens.
Datasets, model versions and checkpoints all publish through these functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from dlpipe.core.errors import DlpipeError
from dlpipe.core.faults import fault_point
from dlpipe.core.s3 import delete_keys, list_keys

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def upload_files(client: S3Client, bucket: str, files: Mapping[str, Path], prefix: str, *,
                 threads: int = 8) -> None:
    """Local files -> ``prefix/<relative path>`` (the mapping's keys), in parallel."""
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda rel: client.upload_file(str(files[rel]), bucket, f"{prefix}/{rel}"),
                      files))


def write_marker(client: S3Client, bucket: str, key: str, body: str | bytes) -> None:
    """The one small JSON write that makes a publish visible."""
    client.put_object(Bucket=bucket, Key=key, Body=body.encode() if isinstance(body, str) else body,
                      ContentType="application/json")


def remove_prefix(client: S3Client, bucket: str, prefix: str) -> list[str]:
    """Delete every object under ``prefix`` (a staging area, an old checkpoint); returns the keys."""
    keys = list_keys(client, bucket, prefix)
    delete_keys(client, bucket, keys)
    return keys


def publish(client: S3Client, bucket: str, *, staging: str, final: str, paths: Iterable[str],
            marker: str, body: str | bytes, last: Iterable[str] = (),
            extras: Mapping[str, bytes] | None = None, threads: int = 8) -> None:
    """Copy ``staging/<path>`` to ``final/<path>`` for every path, check the copies, write
    ``extras`` under ``final``, then ``body`` to the ``marker`` key, and drop the staging copy.

    ``last`` names paths copied only after all the others (TF Serving loads a folder as soon
    as it holds ``saved_model.pb``). Copies are server-side; the check compares every final
    key's size with its staged one, so the marker never vouches for a missing object.
    """
    last = list(last)
    rest = [p for p in paths if p not in last]
    staged = _sizes(client, bucket, f"{staging}/")

    def copy(path: str) -> None:
        client.copy({"Bucket": bucket, "Key": f"{staging}/{path}"}, bucket, f"{final}/{path}")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(copy, rest))
    for path in last:
        copy(path)
    copied = _sizes(client, bucket, f"{final}/")
    for path in rest + last:
        want, got = staged.get(f"{staging}/{path}"), copied.get(f"{final}/{path}")
        if got is None or got != want:
            raise DlpipeError(f"s3://{bucket}/{final}/{path} has {got} bytes after the copy, its "
                              f"staged copy {want}; nothing was published",
                              fix="run it again; was another publish of the same prefix running?")
    fault_point("publish_copied")  # the fault tests' hook: killed with everything but the marker
    for name, data in (extras or {}).items():
        client.put_object(Bucket=bucket, Key=f"{final}/{name}", Body=data)
    write_marker(client, bucket, marker, body)
    remove_prefix(client, bucket, f"{staging}/")


def _sizes(client: S3Client, bucket: str, prefix: str) -> dict[str, int]:
    sizes = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        sizes.update((o["Key"], o["Size"]) for o in page.get("Contents", []))
    return sizes
