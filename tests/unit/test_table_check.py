"""The clean-table check of ingest (issue 17): a config the table cannot take is refused."""

from __future__ import annotations

from pathlib import Path

from dlpipe.core.config import load_config, with_overrides
from spark_jobs.ingest.table_check import expected_columns, mismatches

ROOT = Path(__file__).resolve().parents[2]


def ingest(overrides: dict | None = None):
    cfg = load_config(ROOT / "conf" / "pipeline.yaml", environ={})
    return with_overrides(cfg, overrides or {}).ingest


def test_the_table_written_by_this_config_matches_it():
    i = ingest()
    assert expected_columns(i)[:3] == ["id", "event_time", "event_date"]
    assert "attributes" in expected_columns(i) and len(expected_columns(i)) == 22
    size = (i.image.target_height, i.image.target_width, i.image.target_channels)
    assert mismatches(i, expected_columns(i), size) == []
    assert mismatches(i, expected_columns(i), None) == [], "an empty table takes any size"


def test_a_new_derived_column_and_a_new_image_size_are_named():
    old = ingest()
    new = ingest({"ingest.rules.derived": {"source": "lower(source)", "camera": "'x'"},
                  "ingest.image.target_height": 32, "ingest.image.target_width": 32})
    problems = mismatches(new, expected_columns(old), (8, 8, 1))
    assert len(problems) == 2, problems
    assert "adds column(s) camera" in problems[0]
    assert "holds 8x8x1 images and ingest.image.target_* is now 32x32x1" in problems[1]
