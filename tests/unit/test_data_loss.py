"""Finding the records aged out of Kafka past the ingest checkpoint (spark_jobs.ingest.data_loss)."""

from __future__ import annotations

from datetime import UTC, datetime

from dlpipe.core.config import load_config
from spark_jobs.ingest.data_loss import DATA_LOSS, Checkpoint, Gap, find_gaps, gap_rows, parse_offset_log


def test_a_gap_is_a_partition_whose_next_offset_kafka_no_longer_holds():
    gaps = find_gaps("raw", committed={0: 50, 1: 70, 2: 5}, earliest={0: 60, 1: 70, 2: 0, 3: 9})
    assert gaps == [Gap("raw", 0, 50, 60)]
    assert gaps[0].records == 10 and str(gaps[0]) == "raw/0 offsets 50-59 (10 records)"
    assert find_gaps("raw", committed={}, earliest={0: 99}) == []  # a new partition is no gap


def test_the_offset_log_of_a_batch_gives_the_topics_end_offsets():
    text = 'v1\n{"batchWatermarkMs":0,"batchTimestampMs":1,"conf":{}}\n{"raw":{"1":7,"0":12}}'
    assert parse_offset_log(text, "raw") == {0: 12, 1: 7}
    assert parse_offset_log(text, "other") == {}


def test_each_gap_is_one_accounting_row_in_the_batch_that_skips_it():
    cfg = load_config(environ={})
    checkpoint = Checkpoint("q-1", 4, {0: 50})
    (row,) = gap_rows(cfg, [Gap("raw", 0, 50, 60)], checkpoint, datetime(2026, 1, 1, tzinfo=UTC))
    assert row["batch_id"] == 5 and row["app_id"] == f"dlpipe-{cfg.ingest.query_name}-q-1"
    assert (row["rows_in"], row["clean"], row["quarantined"], row["duplicates"]) == (0, 0, 0, 0)
    assert row["reasons"] == {DATA_LOSS: 10, f"{DATA_LOSS}_PARTITION": 0, f"{DATA_LOSS}_FIRST_OFFSET": 50}
