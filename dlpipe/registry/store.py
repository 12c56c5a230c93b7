"""Versioned models on the object store, in the TensorFlow Serving layout.

::

    s3://<models bucket>/<model>/<version>/saved_model.pb, variables/, assets/   (TF Serving)
    s3://<models bucket>/<model>/<version>/metrics.json, dataset-manifest.json,
                                           training-config.json
    s3://<models bucket>/<model>/<version>/dlpipe-model.json     (written last: complete)
    s3://<models bucket>/<model>/_versions/<version>             (version reservations)
    s3://<models bucket>/<model>/_staging/<version>-<id>/...     (uploads in flight)

A version number is reserved with a conditional PUT (If-None-Match), so two trainings never
get the same one. Files are uploaded to staging, copied into the version folder with
``saved_model.pb`` last, then ``dlpipe-model.json`` marks the version complete and says
whether training promoted it. Which version is served is a separate pointer
(:mod:`dlpipe.registry.release`).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlpipe.core.errors import DlpipeError
from dlpipe.core.publish import publish, upload_files
from dlpipe.core.s3 import (
    CONFLICT,
    REFUSED,
    child_names,
    error_code,
    numeric_names,
    require_conditional_writes,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MARKER = "dlpipe-model.json"


def _versions_in(client: S3Client, bucket: str, prefix: str) -> list[int]:
    return numeric_names(child_names(client, bucket, prefix))


def read_info(client: S3Client, bucket: str, model: str, version: int) -> dict[str, Any] | None:
    """The version's ``dlpipe-model.json``, or None while it is incomplete."""
    key = f"{model}/{version}/{MARKER}"
    try:
        return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    except client.exceptions.NoSuchKey:
        return None


def complete_versions(client: S3Client, bucket: str, model: str) -> list[dict[str, Any]]:
    """Info of every complete version, oldest first."""
    infos = (read_info(client, bucket, model, v) for v in _versions_in(client, bucket, f"{model}/"))
    return [i for i in infos if i is not None]


def reserve_version(client: S3Client, bucket: str, model: str) -> int:
    """The next free version number, taken with a conditional PUT (If-None-Match): of two
    concurrent reservations one gets the number and the other the next. A 409 (S3's answer
    when two conditional writes of one key overlap) is retried; a store that ignores
    If-None-Match is refused, as it would hand one number to two trainings."""
    taken = set(_versions_in(client, bucket, f"{model}/")) | set(
        _versions_in(client, bucket, f"{model}/_versions/"))
    version = max(taken, default=0) + 1
    for attempt in range(100):
        key = f"{model}/_versions/{version}"
        try:
            client.put_object(Bucket=bucket, Key=key, Body=b"", IfNoneMatch="*")
        except client.exceptions.ClientError as exc:
            if error_code(exc) in CONFLICT:
                time.sleep(0.05 * (attempt + 1))  # the other writer finishes; ask again
                continue
            if error_code(exc) not in REFUSED:
                raise
            version += 1
            continue
        require_conditional_writes(client, bucket, key,
                                   why="two trainings could publish the same model version")
        return version
    raise DlpipeError(f"could not reserve a version of model {model!r} in s3://{bucket}")


def publish_model(client: S3Client, bucket: str, model: str, saved_model_dir: Path, *,
                  extras: dict[str, bytes], info: dict[str, Any]) -> int:
    """Upload a SavedModel folder and its extras as the next version; returns the version."""
    version = reserve_version(client, bucket, model)
    staging = f"{model}/_staging/{version}-{uuid.uuid4().hex[:8]}"
    files = {p.relative_to(saved_model_dir).as_posix(): p
             for p in sorted(Path(saved_model_dir).rglob("*")) if p.is_file()}
    upload_files(client, bucket, files, staging)
    marker = {**info, "version": version, "model": model,
              "uri": f"s3://{bucket}/{model}/{version}/"}
    # saved_model.pb last: TF Serving treats a folder with it as a loadable version.
    publish(client, bucket, staging=staging, final=f"{model}/{version}", paths=files,
            last=["saved_model.pb"], extras=extras, marker=f"{model}/{version}/{MARKER}",
            body=json.dumps(marker, indent=1))
    return version
