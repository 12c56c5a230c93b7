"""Independent readers used to check what dlpipe wrote (not dlpipe's own code paths), and
the per-test isolation of topics, tables and checkpoints on the shared test stack."""

from __future__ import annotations

import json
import time
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


def isolated_sets(cfg) -> list[str]:
    """``--set`` flags that point a ``dlpipe`` subprocess at an ``isolated`` config's topic,
    tables, checkpoint and query."""
    return [f"--set=kafka.topics.raw.name={cfg.kafka.topics['raw'].name}",
            f"--set=tables.clean={cfg.tables.clean}", f"--set=tables.quarantine={cfg.tables.quarantine}",
            f"--set=tables.ingest_batches={cfg.tables.ingest_batches}",
            f"--set=ingest.checkpoint={cfg.ingest.checkpoint}",
            f"--set=ingest.query_name={cfg.ingest.query_name}"]


def assert_exactly_once(cfg, sent: list[dict]) -> None:
    """The tables hold every record the producer logged exactly once: clean ids, quarantined
    Kafka offsets, and one accounting row per batch with rows_in = clean + quarantined +
    duplicates."""
    def rows(path: str, columns: list[str]) -> list[dict]:
        return read_delta_with_delta_rs(cfg, path).to_pyarrow_table(columns=columns).to_pylist()

    clean = [r["id"] for r in rows(cfg.tables.clean, ["id"])]
    assert len(clean) == len(set(clean)), "an id was written twice"
    assert set(clean) == {s["id"] for s in sent if s["expected"] == "clean"}, "an id was lost"
    coords = [(q["kafka_partition"], q["kafka_offset"])
              for q in rows(cfg.tables.quarantine, ["kafka_partition", "kafka_offset"])]
    assert len(coords) == len(set(coords)), "a message was quarantined twice"
    assert set(coords) == {(s["partition"], s["offset"]) for s in sent if s["expected"] == "quarantine"}
    batches = rows(cfg.tables.ingest_batches, ["batch_id", "rows_in", "clean", "quarantined",
                                               "duplicates"])
    assert len({b["batch_id"] for b in batches}) == len(batches), "a batch accounted twice"
    assert sum(b["rows_in"] for b in batches) == len(sent)
    assert all(b["rows_in"] == b["clean"] + b["quarantined"] + b["duplicates"] for b in batches)
    assert sum(b["clean"] for b in batches) == len(clean)


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


def wait_for(condition, timeout_s: float = 60.0, what: str = "the condition", every_s: float = 0.5,
             explain=None):
    """Poll ``condition`` until it returns something true, and return that; fail after
    ``timeout_s`` naming ``what``, and with what ``explain()`` says of the state (if given)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f"\n{explain()}" if explain is not None else ""
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}{detail}")
        time.sleep(every_s)
