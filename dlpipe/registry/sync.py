"""Copy promoted model versions from the object store to a local folder, atomically.

The folder is exactly what ``tensorflow_model_server --model_base_path=<dest>/<model>``
watches: ``<dest>/<model>/<version>/saved_model.pb, variables/, ...``. A version is
downloaded into ``<dest>/<model>/.incoming-<version>-<id>/`` (a name TF Serving and
``dlpipe serve`` ignore because it is not a number), checked against the listing, and only
then renamed to ``<version>/``: a reader never sees half a model. The copy records the
store's listing (sizes and ETags) it came from and is used again only while the store still
lists exactly that, so a republished version number never serves an old copy. ``dlpipe
serve`` and the Kubernetes storage initializer (``dlpipe models sync``) both use it.
"""

from __future__ import annotations

import json
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
from dlpipe.registry.release import serving_version
from dlpipe.registry.store import MARKER, read_info

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

INCOMING = ".incoming-"
RECORD = ".dlpipe-sync.json"   # in a local copy: the store listing it was copied from


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
    """``s3://bucket/model/version/`` -> ``dest/model/version/``, unless a verified copy is there."""
    return fetch_version(client, bucket, model, version, dest, threads=threads)[0]


def fetch_version(client: S3Client, bucket: str, model: str, version: int, dest: Path, *,
                  threads: int = 8) -> tuple[Path, bool]:
    """The local copy of a version and whether it was (re)downloaded.

    A local copy is used only if the store's listing (every file's size and ETag) is the one
    recorded in the copy's ``.dlpipe-sync.json`` and its files have those sizes: a store that
    was wiped and published a different version 1 replaces the old copy of 1.
    """
    final = dest / model / str(version)
    if read_info(client, bucket, model, version) is None:
        raise ModelSyncError(
            f"s3://{bucket}/{model}/{version}/ is not a complete model version (no {MARKER})",
            fix="wait for its training to finish publishing, or pick a complete version "
                "(`dlpipe models list`)")
    prefix = f"{model}/{version}/"
    listing = {o["Key"][len(prefix):]: [o["Size"], o["ETag"].strip('"')]
               for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
               for o in page.get("Contents", []) if o["Key"] != prefix + RECORD}
    if "saved_model.pb" not in listing:
        raise ModelSyncError(f"s3://{bucket}/{prefix} has a marker but no saved_model.pb",
                             fix="the version is damaged: publish the model again")
    if final.is_dir() and _verified(final, listing):
        return final, False
    incoming = dest / model / f"{INCOMING}{version}-{uuid.uuid4().hex[:8]}"
    stale = incoming.with_name(incoming.name + "-stale")
    try:
        def fetch(name: str) -> None:
            target = incoming / name
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, prefix + name, str(target))
            if target.stat().st_size != listing[name][0]:
                raise ModelSyncError(f"s3://{bucket}/{prefix}{name}: got {target.stat().st_size} "
                                     f"bytes, the store lists {listing[name][0]}",
                                     fix="retry; the store may be busy")

        incoming.mkdir(parents=True)
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fetch, listing))
        (incoming / RECORD).write_text(json.dumps({"files": listing}, indent=1, sort_keys=True))
        if final.is_dir() and not _verified(final, listing):
            final.rename(stale)  # a stale copy: out of the way first (never half a model)
        try:
            incoming.rename(final)
        except OSError:
            if not _verified(final, listing):  # unless another process put the same copy first
                raise
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
        shutil.rmtree(stale, ignore_errors=True)
    return final, True


def _verified(local: Path, listing: dict[str, list]) -> bool:
    """Whether ``local`` was copied from exactly ``listing`` and still has every file."""
    try:
        recorded = json.loads((local / RECORD).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False  # no record (an older copy) or a damaged one
    return recorded == listing and all(
        (local / name).is_file() and (local / name).stat().st_size == size
        for name, (size, _) in listing.items())


def prune_versions(dest: Path, model: str, *, current: int, keep: int,
                   protect: Iterable[int] = ()) -> list[int]:
    """Remove local versions above ``current`` (a withdrawn promotion: TF Serving serves the
    highest number it finds) and all but the ``keep`` newest up to it; never ``protect``ed
    ones. Returns the removed versions."""
    local = local_versions(dest, model)
    kept = sorted((v for v in local if v <= current), reverse=True)[:max(keep, 1)]
    removed = [v for v in local if v not in kept and v not in set(protect) | {current}]
    for old in removed:
        shutil.rmtree(dest / model / str(old), ignore_errors=True)
    _remove_stale_incoming(dest / model)
    return removed


def sync_model(client: S3Client, bucket: str, model: str, dest: Path, *, keep: int = 2) -> SyncResult:
    """Make ``dest/model/`` hold the newest promoted version (plus up to ``keep - 1`` older)."""
    version = serving_version(client, bucket, model)
    if version is None:
        return SyncResult(model, None, False)
    _, downloaded = fetch_version(client, bucket, model, version, dest)
    removed = prune_versions(dest, model, current=version, keep=keep)
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
