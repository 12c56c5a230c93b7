"""Independent readers used to check what dlpipe wrote (not dlpipe's own code paths)."""

from __future__ import annotations

from dlpipe.config import Config


def delta_rs_storage_options(cfg: Config) -> dict[str, str]:
    key, secret = cfg.s3_credentials()
    return {
        "AWS_ENDPOINT_URL": cfg.s3_endpoint,
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_REGION": cfg.s3.region,
        "AWS_ALLOW_HTTP": "true",
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
    }


def read_delta_with_delta_rs(cfg: Config, s3a_path: str, version: int | None = None):
    """Read a Delta table with delta-rs (Rust), not Spark: proves the table is valid Delta."""
    from deltalake import DeltaTable

    table = DeltaTable(s3a_path.replace("s3a://", "s3://", 1),
                       storage_options=delta_rs_storage_options(cfg), version=version)
    return table
