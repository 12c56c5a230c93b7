"""Property-based tests of what ingest does with hostile input (hypothesis): random and
mutated JSON, base64 and image bytes never raise out of a batch, every record gets exactly
one outcome, and the same input always gets the same outcome."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlpipe.contract.record import Reason
from dlpipe.core.config import load_config
from dlpipe.produce.records import encode_png, record
from spark_jobs.ingest import transforms as T
from spark_jobs.ingest.images import ImageLimits, inspect_one, make_inspect_udf

ROOT = Path(__file__).resolve().parents[2]
INGEST = load_config(ROOT / "conf" / "pipeline.yaml", environ={}).ingest
LIMITS = ImageLimits(tuple(INGEST.image.formats), INGEST.image.max_pixels, INGEST.image.max_bytes,
                     INGEST.image.target_width, INGEST.image.target_height,
                     INGEST.image.target_channels)
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
REASONS = {str(r) for r in Reason}


def _png(seed: int) -> bytes:
    return encode_png(np.random.default_rng(seed).integers(0, 255, (8, 8)).astype("uint8")).data


def _jpeg(seed: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (8, 8)).astype("uint8")).save(
        out, format="JPEG")
    return out.getvalue()


@st.composite
def mutated_image(draw) -> bytes:
    """A real PNG or JPEG, then truncated, bit-flipped, re-headed or padded."""
    data = bytearray(draw(st.sampled_from([_png, _jpeg]))(draw(st.integers(0, 5))))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "magic", "huge", "pad"]))
        if kind == "truncate" and len(data) > 1:
            del data[draw(st.integers(1, len(data) - 1)):]
        elif kind == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "magic":
            data[:4] = draw(st.binary(min_size=4, max_size=4))
        elif kind == "huge" and data[:4] == b"\x89PNG" and len(data) >= 24:
            data[16:24] = draw(st.binary(min_size=8, max_size=8))  # IHDR width and height
        elif kind == "pad":
            data += draw(st.binary(max_size=64))
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image=mutated_image(), declared=st.sampled_from(["PNG", "JPEG", "png", "", "GIF"]),
       width=st.integers(-1, 10**6), height=st.integers(-1, 10**6), channels=st.integers(-1, 5),
       raw_b64=st.one_of(st.none(), st.text(max_size=40)))
def test_the_image_inspector_never_raises_and_always_decides_the_same(
        image, declared, width, height, channels, raw_b64):
    data = raw_b64 if raw_b64 is not None else base64.b64encode(image).decode()
    first = inspect_one(data, declared, width, height, channels, LIMITS)
    assert first == inspect_one(data, declared, width, height, channels, LIMITS)
    assert first["reason"] is None or first["reason"] in REASONS
    assert (first["reason"] is None) == (first.get("png") is not None)


@st.composite
def hostile_value(draw) -> bytes:
    """A Kafka value: a valid record, then fields removed, retyped or replaced, or raw bytes."""
    seed = draw(st.integers(0, 50))
    rec = record(id=f"f-{seed}", label=str(seed % 10), source="fuzz", event_time=NOW,
                 image=encode_png(np.random.default_rng(seed).integers(0, 255, (8, 8)).astype("uint8")))
    kind = draw(st.sampled_from(["valid", "drop", "retype", "image", "bytes", "json"]))
    if kind == "drop":
        rec.pop(draw(st.sampled_from(sorted(rec))))
    elif kind == "retype":
        rec[draw(st.sampled_from(sorted(rec)))] = draw(st.one_of(
            st.integers(), st.floats(allow_nan=False), st.text(max_size=8), st.none(), st.booleans()))
    elif kind == "image":
        rec["image"]["data"] = base64.b64encode(draw(mutated_image())).decode()
    elif kind == "bytes":
        return draw(st.binary(max_size=200))
    elif kind == "json":
        return json.dumps(draw(st.recursive(st.none() | st.integers() | st.text(max_size=5),
                                            lambda c: st.lists(c, max_size=3)
                                            | st.dictionaries(st.text(max_size=5), c, max_size=3)))
                          ).encode()
    return json.dumps(rec).encode()


@pytest.fixture(scope="module")
def inspect_udf():
    return make_inspect_udf(LIMITS)


@settings(max_examples=2, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
# Few Spark jobs of many hostile values: a job costs seconds (Python workers, Arrow), a value
# costs nothing, and one bad value fails a batch as well as ten would. (Hypothesis tries the
# simplest batch first, so the second example is the random one.)
@given(values=st.lists(hostile_value(), min_size=30, max_size=80))
def test_a_batch_of_hostile_records_gives_each_exactly_one_outcome(spark, inspect_udf, values):
    rows = [(f"f-{i}".encode(), v, "raw", 0, i, NOW.replace(tzinfo=None), 0) for i, v in enumerate(values)]
    ddl = ("key BINARY, value BINARY, topic STRING, partition INT, offset BIGINT, "
           "timestamp TIMESTAMP, timestampType INT")

    def outcomes() -> dict[int, str]:
        """Quarantined and clean rows of one run, in one Spark job (jobs cost seconds here)."""
        from pyspark.sql import functions as F

        # Cached as the sink caches it: both branches read one classification (one UDF pass).
        df = T.classify(T.parse(spark.createDataFrame(rows, ddl), INGEST), INGEST, inspect_udf).cache()
        got = (T.quarantine_rows(df, 0).select("kafka_offset", F.col("reason_code").alias("outcome"))
               .unionByName(T.clean_rows(df, INGEST, 0).select(
                   "kafka_offset", F.lit("CLEAN").alias("outcome"))).collect())
        df.unpersist()
        offsets = [r.kafka_offset for r in got]
        assert len(offsets) == len(set(offsets)), "a record is both clean and quarantined, or twice"
        return {r.kafka_offset: r.outcome for r in got}

    first = outcomes()
    assert sorted(first) == list(range(len(values))), "every record gets an outcome"
    assert set(first.values()) <= REASONS | {"CLEAN"}
    assert first == outcomes(), "the same input always gets the same outcome"
