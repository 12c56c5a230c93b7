"""Independent readers used to check what dlpipe wrote (not dlpipe's own code paths), and
the per-test isolation of topics, tables and checkpoints on the shared test stack."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

from dlpipe.core.config import Config, with_overrides
from dlpipe.localstack.provision import ensure_topics
from dlpipe.produce.producer import plan_messages, produce
from dlpipe.produce.records import BAD_KINDS
from dlpipe.produce.sources import digits


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


def isolated(cfg, tag: str):
    """The test stack's config with a topic, tables and checkpoint of this test's own."""
    run = f"{tag}-{uuid.uuid4().hex[:8]}"
    lake, ckpt = cfg.buckets.lake, cfg.buckets.checkpoints
    out = with_overrides(cfg, {
        "kafka.topics.raw.name": f"test.raw.{run}",
        "tables.clean": f"s3a://{lake}/test/{run}/clean",
        "tables.quarantine": f"s3a://{lake}/test/{run}/quarantine",
        "tables.ingest_batches": f"s3a://{lake}/test/{run}/batches",
        "ingest.checkpoint": f"s3a://{ckpt}/test/{run}",
        "ingest.query_name": f"ingest-{run}",
    })
    ensure_topics(out)
    return out


def send(cfg, log: Path, *, count: int, bad_fraction: float = 0.0, duplicate_fraction: float = 0.0,
         start: int = 0, rate: float = 0.0) -> list[dict]:
    msgs = plan_messages(
        digits(start=start), count=count, prefix="digits", source="sklearn-digits",
        now=datetime.now(UTC), bad_fraction=bad_fraction, bad_kinds=list(BAD_KINDS),
        duplicate_fraction=duplicate_fraction, schema_version=1,
        watermark_delay_s=cfg.ingest.watermark_delay_s, seed=start,
    )
    produce(cfg, msgs, count=count, rate=rate, log_path=log)
    return [json.loads(line) for line in log.read_text().splitlines()]
