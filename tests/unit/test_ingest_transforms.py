"""The ingest transforms on small frames (chispa), one bad kind at a time."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from chispa import assert_df_equality

from dlpipe.contract.record import Reason
from dlpipe.core.config import load_config
from dlpipe.produce.records import BAD_KINDS, bad_message, encode, encode_png, record, to_v2
from spark_jobs.ingest import transforms as T
from spark_jobs.ingest.images import ImageLimits, make_inspect_udf

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
KAFKA_DDL = ("key BINARY, value BINARY, topic STRING, partition INT, offset BIGINT, "
             "timestamp TIMESTAMP, timestampType INT")


@pytest.fixture(scope="module")
def ingest():
    return load_config(ROOT / "conf" / "pipeline.yaml", environ={}).ingest


@pytest.fixture(scope="module")
def inspect_udf(ingest):
    i = ingest.image
    return make_inspect_udf(ImageLimits(tuple(i.formats), i.max_pixels, i.max_bytes,
                                        i.target_width, i.target_height, i.target_channels))


def digit(i: int) -> dict:
    rng = np.random.default_rng(i)
    img = encode_png((rng.integers(0, 255, size=(8, 8))).astype("uint8"))
    return record(id=f"d-{i}", label=str(i % 10), image=img, source="Digits", event_time=NOW)


def kafka_rows(spark, messages):
    rows = [(k, v, "raw", 0, off, NOW.replace(tzinfo=None), 0) for off, (k, v) in enumerate(messages)]
    return spark.createDataFrame(rows, KAFKA_DDL)


def classified(spark, ingest, inspect_udf, messages):
    return T.classify(T.parse(kafka_rows(spark, messages), ingest), ingest, inspect_udf)


def test_valid_v1_and_v2_records_are_clean_with_canonical_fields(spark, ingest, inspect_udf):
    v1, v2 = digit(1), to_v2(digit(2), capture_device="cam-7")
    df = classified(spark, ingest, inspect_udf, [(b"d-1", encode(v1)), (b"d-2", encode(v2))])
    clean = T.clean_rows(df, ingest, batch_id=3).select(
        "id", "label", "label_index", "source", "schema_version", "attributes", "height", "width",
        "channels", "batch_id").orderBy("id")
    expected = spark.createDataFrame(
        [("d-1", "1", 1, "digits", 1, {}, 8, 8, 1, 3),
         ("d-2", "2", 2, "digits", 2, {"capture_device": "cam-7"}, 8, 8, 1, 3)],
        "id STRING, label STRING, label_index INT, source STRING, schema_version INT, "
        "attributes MAP<STRING,STRING>, height INT, width INT, channels INT, batch_id BIGINT")
    assert_df_equality(clean, expected, ignore_nullable=True)


def test_each_bad_kind_gets_its_own_reason_and_a_detail(spark, ingest, inspect_udf):
    kinds = sorted(k for k in BAD_KINDS if k != "late_event")
    msgs = [bad_message(k, digit(i), now=NOW, watermark_delay_s=ingest.watermark_delay_s)
            for i, k in enumerate(kinds)]
    good = [(f"d-{i}".encode(), encode(digit(i))) for i in range(100, 103)]
    df = classified(spark, ingest, inspect_udf, [(m.key, m.value) for m in msgs] + good).cache()
    rows = {r.kafka_offset: r for r in T.quarantine_rows(df, batch_id=0).collect()}
    got = {kinds[off]: row.reason_code for off, row in rows.items()}
    assert got == {m.kind: m.expected_reason for m in msgs}
    assert all(row.reason_detail for row in rows.values())
    assert sorted(r.id for r in T.clean_rows(df, ingest, 0).collect()) == ["d-100", "d-101", "d-102"]


def test_late_events_are_quarantined_against_the_watermark(spark, ingest, inspect_udf):
    msg = bad_message("late_event", digit(7), now=NOW, watermark_delay_s=ingest.watermark_delay_s)
    df = classified(spark, ingest, inspect_udf, [(msg.key, msg.value), (b"d-1", encode(digit(1)))])
    assert T.quarantine_rows(df, 0).count() == 0, "no watermark yet: nothing is late"
    late = T.mark_late(df, NOW - timedelta(seconds=ingest.watermark_delay_s))
    [row] = T.quarantine_rows(late, 0).collect()
    assert row.reason_code == Reason.LATE_EVENT
    assert "is before the watermark" in row.reason_detail


def test_duplicates_within_a_batch_and_across_batches(spark, ingest):
    ddl = "id STRING, kafka_partition INT, kafka_offset BIGINT"
    candidates = spark.createDataFrame(
        [("a", 0, 10), ("a", 0, 11), ("b", 1, 5), ("c", 1, 6)], ddl)
    existing = spark.createDataFrame([("b", 1, 2), ("c", 1, 6)], ddl)
    got = T.mark_duplicates(candidates, existing).select(
        "id", "kafka_offset", "is_duplicate", "already_written")
    expected = spark.createDataFrame(
        [("a", 10, False, False), ("a", 11, True, False), ("b", 5, True, False), ("c", 6, False, True)],
        "id STRING, kafka_offset BIGINT, is_duplicate BOOLEAN, already_written BOOLEAN")
    assert_df_equality(got, expected, ignore_nullable=True, ignore_row_order=True)


@pytest.mark.parametrize(("event_time", "reason"), [
    ("2026-11-20T17:29:35.136", Reason.BAD_EVENT_TIME),      # no zone: read in the session's
    ("2026-11-20 17:29:35", Reason.BAD_EVENT_TIME),
    ("2026-11-20T17:29:35.136Z", None),
    ("2026-11-20T19:29:35.136+02:00", None),
])
def test_an_event_time_without_a_zone_is_quarantined(spark, ingest, inspect_udf, event_time, reason):
    rec = {**digit(5), "event_time": event_time}
    df = classified(spark, ingest, inspect_udf, [(b"d-5", encode(rec))])
    quarantined = T.quarantine_rows(df, 0).collect()
    assert [r.reason_code for r in quarantined] == ([] if reason is None else [reason])
    if reason is not None:
        assert "has no time zone" in quarantined[0].reason_detail


def test_a_record_stamped_ahead_of_the_ingest_clock_cannot_move_the_watermark(spark, ingest,
                                                                            inspect_udf):
    """Producer and Kafka timestamp both two years ahead: FUTURE_EVENT_TIME, and the newest
    event time the watermark is taken from is still the honest record's."""
    ahead = NOW + timedelta(days=730)
    poisoned = {**digit(3), "id": "d-poison", "event_time": ahead.isoformat().replace("+00:00", "Z")}
    rows = [(b"d-poison", encode(poisoned), "raw", 0, 0, ahead.replace(tzinfo=None), 0),
            (b"d-1", encode(digit(1)), "raw", 0, 1, NOW.replace(tzinfo=None), 0)]
    df = T.classify(T.parse(spark.createDataFrame(rows, KAFKA_DDL), ingest), ingest, inspect_udf,
                    now=NOW + timedelta(seconds=ingest.max_future_skew_s - 60)).cache()
    [row] = T.quarantine_rows(df, 0).collect()
    assert (row.id, row.reason_code) == ("d-poison", Reason.FUTURE_EVENT_TIME)
    assert "ahead of the ingest clock" in row.reason_detail, row.reason_detail
    summary = T.batch_summary(df)
    assert summary.reasons == {None: 1, str(Reason.FUTURE_EVENT_TIME): 1}
    assert summary.newest == NOW.replace(tzinfo=None), "only accepted records move the watermark"
    within = T.classify(T.parse(spark.createDataFrame(rows[1:], KAFKA_DDL), ingest), ingest,
                        inspect_udf, now=NOW - timedelta(seconds=ingest.max_future_skew_s - 60))
    assert T.quarantine_rows(within, 0).count() == 0, "inside the allowed skew is clean"


def test_batch_summary_counts_reasons_and_bounds_clean_event_times(spark):
    rows = [("a", None, datetime(2026, 11, 20, 23, 0)), ("b", None, datetime(2026, 11, 22, 1, 0)),
            ("c", "NOT_JSON", datetime(2026, 11, 1, 0, 0)), ("d", "NOT_JSON", None)]
    df = spark.createDataFrame(rows, "id STRING, reason_code STRING, event_time TIMESTAMP")
    summary = T.batch_summary(df)
    assert summary.reasons == {None: 2, "NOT_JSON": 2}
    assert summary.newest == datetime(2026, 11, 22, 1, 0)
    assert summary.oldest_date == date(2026, 11, 20), "quarantined rows do not widen the range"
    none = T.batch_summary(df.where("reason_code IS NOT NULL"))
    assert (none.newest, none.oldest_date) == (None, None)


def test_the_horizon_prunes_partitions_and_still_finds_ids_inside_it(spark, tmp_path):
    days = [date(2026, 11, 1) + timedelta(days=i) for i in range(21)]
    table = spark.createDataFrame(
        [(f"id-{i}", 0, i, d) for i, d in enumerate(days)],
        "id STRING, kafka_partition INT, kafka_offset BIGINT, event_date DATE")
    table.write.partitionBy("event_date").parquet(str(tmp_path / "clean"))
    clean = spark.read.parquet(str(tmp_path / "clean"))
    since = date(2026, 11, 21) - timedelta(days=7)
    existing = T.within_horizon(clean, since).select("id", "kafka_partition", "kafka_offset")

    plan = existing._jdf.queryExecution().executedPlan().toString()
    pruning = [line for line in plan.splitlines() if "PartitionFilters" in line]
    assert pruning and "event_date" in pruning[0].split("PartitionFilters")[1].split("]")[0], plan
    scanned = existing._jdf.queryExecution().executedPlan().collectLeaves().head()
    existing.collect()
    assert scanned.metrics().apply("numFiles").value() == 8, "only the horizon's 8 partitions"

    ddl = "id STRING, kafka_partition INT, kafka_offset BIGINT"
    batch = spark.createDataFrame([("id-19", 1, 100), ("id-2", 1, 101), ("new", 1, 102)], ddl)
    got = {r.id: r.is_duplicate for r in T.mark_duplicates(batch, existing).collect()}
    assert got == {"id-19": True, "id-2": False, "new": False}, "id-2 is beyond the horizon"
    assert T.within_horizon(clean, None).count() == 21
