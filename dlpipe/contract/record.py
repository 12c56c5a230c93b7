"""The record contract: raw Kafka value fields, reason codes and the tables ingest writes.

Producers, the ingest job, the tests and ``docs/data-contract.md`` all read these names
from here, so the contract cannot drift between them.
"""

from __future__ import annotations

from enum import StrEnum

# Canonical top-level fields of a raw record and their JSON kinds; "int" means a JSON
# integer, never a quoted number. The image object has fields of its own.
RECORD_FIELDS: dict[str, str] = {
    "schema_version": "int",
    "id": "string",
    "event_time": "string",
    "source": "string",
    "label": "string",
    "image": "object",
}
IMAGE_FIELDS: dict[str, str] = {
    "format": "string",
    "width": "int",
    "height": "int",
    "channels": "int",
    "data": "string",
}
CURRENT_SCHEMA_VERSION = 1


class Reason(StrEnum):
    """Why a record is in quarantine; checked in this order, the first that applies wins."""

    EMPTY_VALUE = "EMPTY_VALUE"
    NULL_KEY = "NULL_KEY"
    NOT_JSON = "NOT_JSON"
    UNKNOWN_SCHEMA_VERSION = "UNKNOWN_SCHEMA_VERSION"
    MISSING_FIELD = "MISSING_FIELD"
    EXTRA_FIELD = "EXTRA_FIELD"
    TYPE_MISMATCH = "TYPE_MISMATCH"
    KEY_ID_MISMATCH = "KEY_ID_MISMATCH"
    BAD_EVENT_TIME = "BAD_EVENT_TIME"
    # Ahead of the ingest clock: the Kafka timestamp is the producer's, so a record stamped
    # years ahead in both would otherwise pass BAD_EVENT_TIME and move the watermark for good.
    FUTURE_EVENT_TIME = "FUTURE_EVENT_TIME"
    UNKNOWN_LABEL = "UNKNOWN_LABEL"
    BAD_BASE64 = "BAD_BASE64"
    IMAGE_TOO_LARGE = "IMAGE_TOO_LARGE"
    UNSUPPORTED_FORMAT = "UNSUPPORTED_FORMAT"
    FORMAT_MISMATCH = "FORMAT_MISMATCH"
    CORRUPT_IMAGE = "CORRUPT_IMAGE"
    SIZE_MISMATCH = "SIZE_MISMATCH"
    LATE_EVENT = "LATE_EVENT"
    # Config filters add RULE_<NAME> reasons (see conf/pipeline.yaml ingest.rules.filters).


def rule_reason(name: str) -> str:
    return f"RULE_{name.upper()}"


# Spark DDL of what ingest writes; derived rule columns may add to the clean table.
CLEAN_COLUMNS = (
    "id STRING, event_time TIMESTAMP, event_date DATE, source STRING, label STRING, "
    "label_index INT, image_png BINARY, height INT, width INT, channels INT, "
    "orig_format STRING, orig_height INT, orig_width INT, orig_channels INT, "
    "schema_version INT, attributes MAP<STRING, STRING>, kafka_topic STRING, "
    "kafka_partition INT, kafka_offset BIGINT, kafka_timestamp TIMESTAMP, "
    "batch_id BIGINT, ingest_time TIMESTAMP"
)
QUARANTINE_COLUMNS = (
    "kafka_topic STRING, kafka_partition INT, kafka_offset BIGINT, kafka_timestamp TIMESTAMP, "
    "key STRING, raw_value BINARY, reason_code STRING, reason_detail STRING, id STRING, "
    "schema_version INT, batch_id BIGINT, ingest_time TIMESTAMP, ingest_date DATE"
)
BATCH_COLUMNS = (
    "app_id STRING, "
    "query_name STRING, batch_id BIGINT, rows_in BIGINT, clean BIGINT, quarantined BIGINT, "
    "duplicates BIGINT, reasons MAP<STRING, BIGINT>, max_event_time TIMESTAMP, "
    "watermark TIMESTAMP, started_at TIMESTAMP, seconds DOUBLE"
)


def raw_record_json_schema(version: str, renamed: dict[str, str], added: list[str]) -> dict:
    """JSON Schema of the raw record for one schema version (conf/schemas/ is generated from it)."""
    image = {
        "type": "object", "additionalProperties": False, "required": list(IMAGE_FIELDS),
        "properties": {
            "format": {"type": "string", "enum": ["PNG", "JPEG"]},
            "width": {"type": "integer", "minimum": 1},
            "height": {"type": "integer", "minimum": 1},
            "channels": {"type": "integer", "minimum": 1},
            "data": {"type": "string", "contentEncoding": "base64",
                     "description": "the encoded PNG or JPEG file"},
        },
    }
    canonical = {
        "schema_version": {"const": int(version)},
        "id": {"type": "string", "minLength": 1,
               "description": "unique record id; also the Kafka message key"},
        "event_time": {"type": "string", "format": "date-time",
                       "description": "ISO-8601 with a zone, e.g. 2026-11-22T03:00:00.000Z"},
        "source": {"type": "string", "description": "where the record comes from"},
        "label": {"type": "string", "description": "a class name from ingest.classes"},
        "image": image,
    }
    props = {renamed.get(f, f): canonical[f] for f in RECORD_FIELDS}
    props.update({name: {"type": "string"} for name in added})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://dlpipe.invalid/schemas/raw-record.v{version}.json",
        "title": f"dlpipe raw image record, schema version {version}",
        "description": "The value of a message on the raw Kafka topic (UTF-8 JSON); the key is the id.",
        "type": "object", "additionalProperties": False,
        "required": [renamed.get(f, f) for f in RECORD_FIELDS], "properties": props,
    }


TABLES = {"clean": CLEAN_COLUMNS, "quarantine": QUARANTINE_COLUMNS, "ingest_batches": BATCH_COLUMNS}
_JSON_TYPES = {
    "STRING": {"type": "string"}, "INT": {"type": "integer"}, "BIGINT": {"type": "integer"},
    "DOUBLE": {"type": "number"}, "BINARY": {"type": "string", "contentEncoding": "base64"},
    "TIMESTAMP": {"type": "string", "format": "date-time"}, "DATE": {"type": "string", "format": "date"},
    "MAP<STRING, STRING>": {"type": "object", "additionalProperties": {"type": "string"}},
    "MAP<STRING, BIGINT>": {"type": "object", "additionalProperties": {"type": "integer"}},
}


def table_json_schema(name: str) -> dict:
    """JSON Schema of one row of a table ingest writes (as JSON: binary is base64)."""
    columns = [c.strip().split(" ", 1) for c in _split_ddl(TABLES[name])]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://dlpipe.invalid/schemas/{name}-table.json",
        "title": f"dlpipe {name} table row (Delta)",
        "type": "object",
        "properties": {col: {**_JSON_TYPES[typ], "x-spark-type": typ} for col, typ in columns},
    }


def _split_ddl(ddl: str) -> list[str]:
    """Split a DDL column list on top-level commas (not those inside MAP<...>)."""
    out, depth, current = [], 0, ""
    for ch in ddl:
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "," and depth == 0:
            out.append(current)
            current = ""
        else:
            current += ch
    return [*out, current]
