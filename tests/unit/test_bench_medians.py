"""bench.medians: the median of each figure over several runs' reports."""

from __future__ import annotations

import json

import pytest

from bench.medians import main, median_table


def _row(ratio: float, value: float, target: float | None = 0.9, metric: str = "img/s cold") -> dict:
    return {"benchmark": "reader", "metric": metric, "unit": "img/s", "value": value,
            "baseline_value": value / ratio, "ratio": ratio, "target_ratio": target}


def test_each_figure_is_the_median_of_its_runs_in_run_order():
    runs = [[_row(0.572, 18_222), _row(1.2, 30_000, None, "warm")],
            [_row(1.518, 27_974), _row(1.9, 35_000, None, "warm")],
            [_row(0.962, 29_000), _row(1.1, 36_000, None, "warm")]]
    table = median_table(runs).splitlines()
    assert table[2].startswith("| reader | img/s cold (img/s) | 0.572, 1.518, 0.962 | **0.962** | 27,974.0 |")
    assert table[2].endswith("| 0.90 | yes |")
    assert "| **1.200** | 35,000.0 |" in table[3] and table[3].endswith("| - | - |")


def test_a_baseline_that_moves_between_runs_is_named_and_a_steady_one_is_not():
    bimodal = [[_row(0.58, 18_300)], [_row(0.55, 18_300)], [_row(0.99, 18_300)]]
    table = median_table(bimodal)
    assert "Baselines that moved more than 1.3x" in table
    assert "- reader / img/s cold: baseline 18,484.8 to 33,272.7 (1.80x)" in table
    steady = median_table([[_row(0.9, 30_000)], [_row(0.95, 31_000)], [_row(0.92, 29_000)]])
    assert "Baselines that moved" not in steady


def test_a_median_under_its_target_is_flagged():
    table = median_table([[_row(0.5, 1)], [_row(0.6, 1)], [_row(0.95, 1)]])
    assert table.splitlines()[2].endswith("| 0.90 | **no** |")


def test_the_cli_reads_reports_and_names_a_file_that_is_not_one(tmp_path, capsys):
    good = tmp_path / "results-1.json"
    good.write_text(json.dumps({"results": [_row(0.9, 100)]}))
    assert main([str(good)]) == 0
    assert "Medians over 1 runs" in capsys.readouterr().out
    bad = tmp_path / "results-2.json"
    bad.write_text("{}")
    with pytest.raises(SystemExit):
        main([str(good), str(bad)])
    assert "is not a results file of python -m bench" in capsys.readouterr().err
