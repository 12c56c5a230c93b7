from __future__ import annotations

import json
from pathlib import Path

from bench.harness import Result, median_rate, write_reports


def test_ratio_target_and_reports(tmp_path: Path) -> None:
    fast = Result("b", "throughput", "img/s", value=90.0, baseline_name="base",
                  baseline_value=100.0, target_ratio=0.9)
    slow = Result("b", "latency", "req/s", value=40.0, baseline_name="base", baseline_value=100.0,
                  target_ratio=0.5)
    assert fast.meets_target is True and slow.meets_target is False
    json_path, md_path = write_reports([fast, slow], tmp_path)
    data = json.loads(json_path.read_text())
    assert [r["ratio"] for r in data["results"]] == [0.9, 0.4]
    assert "| 0.400 | 0.50 | **no** |" in md_path.read_text()


def test_median_rate_counts_units_per_second() -> None:
    assert median_rate(lambda: 0.0, repeats=3) == 0.0
    assert median_rate(lambda: 1e6, repeats=3) > 0
