"""Staging and publishing a dataset version: the "write everything, then one small final
write" rule, through ``dlpipe.core.publish``.

Shards land under ``<dataset>/<version>/_staging/<export id>/``; publishing copies them to
their final keys server-side, then writes ``manifest.json`` (the single write that makes the
version visible), then removes the staging copy. A killed export leaves staging objects and
at worst unpublished final keys, both of which no reader opens and the next export removes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from dlpipe.core import publish as store
from dlpipe.core.s3 import delete_keys, list_keys
from dlpipe.datasets.manifest import MANIFEST, STAGING, Manifest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)


def remove_stale_staging(client: S3Client, bucket: str, prefix: str) -> int:
    """Delete what unfinished exports of this version left in staging (one export of a
    version runs at a time, so nothing in staging is still being written)."""
    stale = store.remove_prefix(client, bucket, f"{prefix}/{STAGING}/")
    if stale:
        runs = sorted({k.split("/")[3] for k in stale if k.count("/") >= 3})
        log.info("    removed %d object(s) left by unfinished export(s): %s", len(stale), ", ".join(runs))
    return len(stale)


def unpublish(client: S3Client, bucket: str, prefix: str) -> None:
    """Take a version out of readers' sight first (before any of its shards change)."""
    client.delete_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST}")


def publish(client: S3Client, manifest: Manifest, staging_prefix: str, *, threads: int = 8) -> None:
    """Unlike a model version, a dataset version can be exported again (``--overwrite``): the
    earlier export's shards that this one does not have are deleted before the copy."""
    bucket, prefix = manifest.bucket, manifest.prefix
    final = {manifest.key(s) for s in manifest.shards}
    leftovers = [k for k in list_keys(client, bucket, f"{prefix}/")
                 if k not in final and not k.startswith(f"{prefix}/{STAGING}/")
                 and k != f"{prefix}/{MANIFEST}"]
    if leftovers:
        delete_keys(client, bucket, leftovers)
    store.publish(client, bucket, staging=staging_prefix, final=prefix,
                  paths=[s.path for s in manifest.shards], marker=f"{prefix}/{MANIFEST}",
                  body=manifest.to_json(), threads=threads)
