"""S3 clients for MinIO (or any S3 service) built from the config, never from literals."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dlpipe.config import Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def s3_client(cfg: Config, *, max_pool_connections: int = 16) -> S3Client:
    import boto3
    from botocore.config import Config as BotoConfig

    key, secret = cfg.s3_credentials()
    return boto3.client(
        "s3",
        endpoint_url=cfg.s3_endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name=cfg.s3.region,
        config=BotoConfig(
            s3={"addressing_style": "path" if cfg.s3.path_style else "auto"},
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=max_pool_connections,
            connect_timeout=5,
            read_timeout=60,
        ),
    )


def split_uri(uri: str) -> tuple[str, str]:
    """``s3a://bucket/key/prefix`` (or ``s3://``) -> ``("bucket", "key/prefix")``."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in {"s3", "s3a"}:
        raise ValueError(f"not an s3:// or s3a:// URI: {uri!r}")
    bucket, _, key = rest.partition("/")
    return bucket, key
