"""Copy promoted model versions from the object store to a local folder, atomically.

The folder is exactly what ``tensorflow_model_server --model_base_path=<dest>/<model>``
watches: ``<dest>/<model>/<version>/saved_model.pb, variables/, ...``. A version is
downloaded into ``<dest>/<model>/.incoming-<version>-<id>/`` (a name TF Serving and
``dlpipe serve`` ignore because it is not a number), checked against the listing, and only
then renamed to ``<version>/``: a reader never sees half a model. ``dlpipe serve`` and the
Kubernetes storage initializer (``dlpipe models sync``) both use it.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dlpipe.core.errors import DlpipeError
from dlpipe.core.s3 import numeric_names
from dlpipe.registry.store import MARKER, read_info, serving_version

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

INCOMING = ".incoming-"


class ModelSyncError(DlpipeError):
    pass


@dataclass(frozen=True)
class SyncResult:
    model: str
    version: int | None          # the promoted version now present locally (None: none yet)
    downloaded: bool
    removed: tuple[int, ...] = ()


def local_versions(dest: Path, model: str) -> list[int]:
    """Complete local versions (numeric folder names), oldest first."""
    root = dest / model
    if not root.is_dir():
        return []
    return numeric_names(p.name for p in root.iterdir() if p.is_dir())


def download_version(client: S3Client, bucket: str, model: str, version: int, dest: Path, *,
                     threads: int = 8) -> Path:
    """``s3://bucket/model/version/`` -> ``dest/model/version/``; a no-op when already there."""
    final = dest / model / str(version)
    if final.is_dir():
        return final
    info = read_info(client, bucket, model, version)
    if info is None:
        raise ModelSyncError(
            f"s3://{bucket}/{model}/{version}/ is not a complete model version (no {MARKER})",
            fix="wait for its training to finish publishing, or pick a complete version "
                "(`dlpipe models list`)")
    prefix = f"{model}/{version}/"
    objects = [(o["Key"], o["Size"]) for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix) for o in page.get("Contents", [])]
    if not any(key == prefix + "saved_model.pb" for key, _ in objects):
        raise ModelSyncError(f"s3://{bucket}/{prefix} has a marker but no saved_model.pb",
                             fix="the version is damaged: publish the model again")
    incoming = dest / model / f"{INCOMING}{version}-{uuid.uuid4().hex[:8]}"
    try:
        def fetch(item: tuple[str, int]) -> None:
            key, size = item
            target = incoming / key[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(target))
            if target.stat().st_size != size:
                raise ModelSyncError(f"s3://{bucket}/{key}: got {target.stat().st_size} bytes, "
                                     f"the store lists {size}", fix="retry; the store may be busy")

        incoming.mkdir(parents=True)
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fetch, objects))
        try:
            incoming.rename(final)
        except OSError:
            if not final.is_dir():  # another process renamed the same version first: fine
                raise
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
    return final


def sync_model(client: S3Client, bucket: str, model: str, dest: Path, *, keep: int = 2) -> SyncResult:
    """Make ``dest/model/`` hold the newest promoted version (plus up to ``keep - 1`` older)."""
    version = serving_version(client, bucket, model)
    if version is None:
        return SyncResult(model, None, False)
    downloaded = not (dest / model / str(version)).is_dir()
    download_version(client, bucket, model, version, dest)
    removed = []
    for old in local_versions(dest, model):
        newer = [v for v in local_versions(dest, model) if v > old]
        if old > version or len(newer) >= keep:
            # Above the promoted one (it was withdrawn) or too old: TF Serving serves the
            # highest number it finds, so nothing unpromoted may stay.
            shutil.rmtree(dest / model / str(old), ignore_errors=True)
            removed.append(old)
    _remove_stale_incoming(dest / model)
    return SyncResult(model, version, downloaded, tuple(removed))


def _remove_stale_incoming(root: Path, older_than_s: float = 3600) -> None:
    """Folders a killed sync left behind (an hour is far longer than any download)."""
    now = time.time()
    for p in root.glob(f"{INCOMING}*"):
        if now - p.stat().st_mtime > older_than_s:
            shutil.rmtree(p, ignore_errors=True)


def sync_models(client: S3Client, bucket: str, models: Iterable[str], dest: Path, *,
                keep: int = 2) -> list[SyncResult]:
    return [sync_model(client, bucket, m, dest, keep=keep) for m in models]
