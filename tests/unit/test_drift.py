"""dlpipe drift's verdict (PSI) and its sample rows, on small data."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from spark_jobs.drift.compare import categorical_psi, compare, numeric_psi, psi


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift():
    assert psi([0.5, 0.5], [0.5, 0.5]) == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    reference = rng.normal(0.3, 0.05, 5000)
    assert numeric_psi(reference, rng.normal(0.3, 0.05, 500), bins=10) < 0.1
    assert numeric_psi(reference, rng.normal(0.4, 0.05, 500), bins=10) > 1.0
    assert numeric_psi(reference, 1.0 - rng.normal(0.3, 0.05, 500), bins=10) > 5.0, "inverted"
    assert categorical_psi(["a", "b"] * 50, ["a", "b"] * 20) == pytest.approx(0.0)
    assert categorical_psi(["a", "b"] * 50, ["a"] * 40) > 1.0
    assert categorical_psi(["a", "b"] * 50, ["c"] * 40) > 1.0, "a class never trained on"


def test_too_few_live_samples_give_no_verdict():
    ref = {"mean": [0.1] * 50, "std": [0.2] * 50, "label": ["a"] * 50}
    live = {"mean": [0.9] * 5, "std": [0.2] * 5, "label": ["a"] * 5}
    report = compare("m", 1, ref, live, bins=10, threshold=0.2, min_samples=10)
    assert report.psi == {} and not report.flagged and "fewer than drift.min_samples 10" in report.reason
    shifted = compare("m", 1, ref, {k: v * 4 for k, v in live.items()}, bins=10, threshold=0.2,
                      min_samples=10)
    assert shifted.flagged == ["image_mean"], shifted


def png(value: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def test_image_statistics_are_grey_level_mean_spread_and_size():
    from dlpipe.contract.images import image_statistics

    mean, std, width, height = image_statistics(png(51))
    assert mean == pytest.approx(0.2, abs=1e-6) and std == pytest.approx(0, abs=1e-6)
    assert (width, height) == (8, 8)
    assert image_statistics(b"not an image") is None


def test_sample_messages_become_rows(spark):
    """The statistics UDF on these rows runs in test_monitoring's drift test (a pandas UDF
    costs a Python worker start, too slow for this tier)."""
    from spark_jobs.drift.transforms import parse_samples

    message = {"model": "m", "version": 2, "signature": "serving_default",
               "served_at": "2026-11-23T10:00:00Z", "class_index": 3, "class_name": "3",
               "probability": 0.9, "image_b64": base64.b64encode(png(51)).decode()}
    frame = spark.createDataFrame([(json.dumps(message).encode(), 0, 0), (b"{", 0, 1)],
                                  "value BINARY, partition INT, offset LONG")
    (row,) = parse_samples(frame).collect()
    assert (row["model"], row["version"], row["class_name"], row["kafka_offset"]) == ("m", 2, "3", 0)
    assert row["image"] == png(51) and row["served_at"] is not None
