"""S3 clients for MinIO (or any S3 service) built from the config, never from literals."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from dlpipe.core.config import Config
from dlpipe.core.errors import DlpipeError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def s3_client(cfg: Config, *, max_pool_connections: int = 16,
              keys: tuple[str, str] | None = None) -> S3Client:
    """A client of ``cfg``'s store with its credentials, or with ``keys`` (another identity)."""
    import boto3
    from botocore.config import Config as BotoConfig

    key, secret = keys or cfg.s3_credentials()
    return boto3.client(
        "s3",
        endpoint_url=cfg.s3_endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name=cfg.s3.region,
        config=BotoConfig(
            s3={"addressing_style": "path" if cfg.s3.path_style else "auto"},
            retries={"max_attempts": cfg.s3.max_attempts, "mode": "standard"},
            max_pool_connections=max_pool_connections,
            connect_timeout=5,
            read_timeout=60,
        ),
    )


_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_name(what: str, name: str) -> str:
    """A dataset or model name: it becomes one segment of object keys, so only letters,
    digits, '.', '_' and '-' are allowed."""
    from dlpipe.core.errors import DlpipeError

    if not _SEGMENT.match(name):
        raise DlpipeError(f"{what} name {name!r} may use letters, digits, '.', '_' and '-' only",
                          fix=f"pick another {what} name")
    return name


def is_version(name: str) -> bool:
    """Versions (datasets', models') are key segments and folder names of ASCII digits only:
    anything else beside them (``_staging``, ``.incoming-...``) is in-flight work."""
    return name.isascii() and name.isdigit()


def numeric_names(names: Iterable[str]) -> list[int]:
    """The version numbers among ``names`` (S3 key segments or local folder names), sorted."""
    return sorted({int(n) for n in names if is_version(n)})


def child_names(client: S3Client, bucket: str, prefix: str) -> list[str]:
    """The last segment of every "folder" and object directly under ``prefix``."""
    names = []
    for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, Delimiter="/"):
        names.extend(p["Prefix"].rstrip("/").rsplit("/", 1)[-1] for p in page.get("CommonPrefixes", []))
        names.extend(o["Key"].rsplit("/", 1)[-1] for o in page.get("Contents", []))
    return names


def split_uri(uri: str) -> tuple[str, str]:
    """``s3a://bucket/key/prefix`` (or ``s3://``) -> ``("bucket", "key/prefix")``."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in {"s3", "s3a"}:
        raise ValueError(f"not an s3:// or s3a:// URI: {uri!r}")
    bucket, _, key = rest.partition("/")
    return bucket, key


def list_keys(client: S3Client, bucket: str, prefix: str) -> list[str]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


def delete_keys(client: S3Client, bucket: str, keys: Iterable[str]) -> int:
    """Delete in batches of 1,000 (the S3 limit); a key S3 refuses to delete is an error."""
    keys = list(keys)
    for start in range(0, len(keys), 1000):
        chunk = [{"Key": k} for k in keys[start:start + 1000]]
        response = client.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
        if response.get("Errors"):
            first = response["Errors"][0]
            raise RuntimeError(f"could not delete s3://{bucket}/{first['Key']}: {first['Message']}")
    return len(keys)


# -- conditional writes (If-None-Match / If-Match): leases, version reservations, pins ---------
REFUSED = ("PreconditionFailed", "412")            # the condition does not hold
CONFLICT = ("ConditionalRequestConflict", "409")   # two conditional writes of a key overlapped
NOT_FOUND = ("NoSuchKey", "NotFound", "404")       # the key is not there (HEAD has no error body)


def error_code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ClientError; None for anything else."""
    response = getattr(exc, "response", None) or {}
    return response.get("Error", {}).get("Code")


def object_exists(client: S3Client, bucket: str, key: str) -> bool:
    """Whether ``key`` is there: only a 404 says no; a store that fails raises (never "missing")."""
    try:
        client.head_object(Bucket=bucket, Key=key)
    except client.exceptions.ClientError as exc:
        if error_code(exc) in NOT_FOUND:
            return False
        raise
    return True


def require_conditional_writes(client: S3Client, bucket: str, key: str, *, why: str) -> None:
    """Check, on an object just created with If-None-Match, that a second such create fails:
    a store that ignores the condition cannot give what ``why`` names."""
    try:
        client.put_object(Bucket=bucket, Key=key, Body=b"", IfNoneMatch="*")
    except client.exceptions.ClientError as exc:
        if error_code(exc) in REFUSED:
            return
        raise
    raise DlpipeError(f"the object store at s3://{bucket} ignores If-None-Match: {why}",
                      fix="use a store with conditional writes (MinIO, AWS S3, GCS's S3 API)")
