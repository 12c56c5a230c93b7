"""Staging and publishing on the object store: the "write everything, then one small final
write" rule for datasets.

Shards land under ``<dataset>/<version>/_staging/<export id>/``; publishing copies them to
their final keys server-side, then writes ``manifest.json`` (the single write that makes the
version visible), then removes the staging copy. A killed export leaves staging objects and
at worst unpublished final keys, both of which no reader opens and the next export removes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from dlpipe.core.progress import say
from dlpipe.core.s3 import delete_keys, list_keys
from dlpipe.datasets.manifest import MANIFEST, STAGING, Manifest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def remove_stale_staging(client: S3Client, bucket: str, prefix: str) -> int:
    """Delete what unfinished exports of this version left in staging."""
    stale = list_keys(client, bucket, f"{prefix}/{STAGING}/")
    if stale:
        runs = sorted({k.split("/")[3] for k in stale if k.count("/") >= 3})
        say(f"    removing {len(stale)} object(s) left by unfinished export(s): {', '.join(runs)}")
        delete_keys(client, bucket, stale)
    return len(stale)


def unpublish(client: S3Client, bucket: str, prefix: str) -> None:
    """Take a version out of readers' sight first (before any of its shards change)."""
    client.delete_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST}")


def publish(client: S3Client, manifest: Manifest, staging_prefix: str, *, threads: int = 8) -> None:
    bucket, prefix = manifest.bucket, manifest.prefix
    final = {manifest.key(s) for s in manifest.shards}
    leftovers = [k for k in list_keys(client, bucket, f"{prefix}/")
                 if k not in final and not k.startswith(f"{prefix}/{STAGING}/")
                 and k != f"{prefix}/{MANIFEST}"]
    if leftovers:  # shards of an earlier export of this version that this one does not have
        delete_keys(client, bucket, leftovers)

    def copy(path: str) -> None:
        client.copy({"Bucket": bucket, "Key": f"{staging_prefix}/{path}"}, bucket, f"{prefix}/{path}")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(copy, [s.path for s in manifest.shards]))
    client.put_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST}", Body=manifest.to_json().encode(),
                      ContentType="application/json")
    delete_keys(client, bucket, list_keys(client, bucket, f"{staging_prefix}/"))
