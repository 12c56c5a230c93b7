"""The JSON Schemas in conf/schemas/ are the contract, and the producer's records obey them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from dlpipe.contract.record import raw_record_json_schema
from dlpipe.core.config import load_config
from dlpipe.produce.records import bad_message, encode_png, record, to_v2

ROOT = Path(__file__).resolve().parents[2]
CFG = load_config(ROOT / "conf" / "pipeline.yaml", environ={})
NOW = datetime(2026, 11, 22, tzinfo=UTC)


def schema(version: str) -> dict:
    return json.loads((ROOT / "conf" / "schemas" / f"raw-record.v{version}.schema.json").read_text())


@pytest.mark.parametrize("version", sorted(CFG.ingest.schema_versions))
def test_schema_files_are_generated_from_the_contract(version: str) -> None:
    spec = CFG.ingest.schema_versions[version]
    assert schema(version) == raw_record_json_schema(version, spec.renamed, spec.added), (
        "conf/schemas is stale: regenerate it from dlpipe.contract.record.raw_record_json_schema")


def test_valid_records_of_both_versions_validate() -> None:
    img = encode_png(np.zeros((8, 8), dtype=np.uint8))
    v1 = record(id="a", label="3", image=img, source="s", event_time=NOW)
    Draft202012Validator(schema("1")).validate(v1)
    Draft202012Validator(schema("2")).validate(to_v2(v1))


@pytest.mark.parametrize("kind", ["missing_field", "extra_field", "mistyped_field", "unknown_version"])
def test_structurally_bad_records_fail_the_schema(kind: str) -> None:
    img = encode_png(np.zeros((8, 8), dtype=np.uint8))
    msg = bad_message(kind, record(id="a", label="3", image=img, source="s", event_time=NOW),
                      now=NOW, watermark_delay_s=3600)
    assert not Draft202012Validator(schema("1")).is_valid(json.loads(msg.value))


@pytest.mark.parametrize("table", ["clean", "quarantine", "ingest_batches"])
def test_table_schema_files_are_generated_from_the_ddl(table: str) -> None:
    from dlpipe.contract.record import table_json_schema

    on_disk = json.loads((ROOT / "conf" / "schemas" / f"{table}-table.schema.json").read_text())
    assert on_disk == table_json_schema(table)
