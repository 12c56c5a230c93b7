"""``python -m bench.medians results-*.json``: the median of each figure over several runs.

A single run of a pair on a shared 2-core machine can land on either side of its bar (stop 32:
one run's local-disk reader baseline was 1.7x the other two), so the figures an issue asks for
are reported as the median of three full ``make bench`` runs. This reads the runs' JSON reports
and prints one Markdown table: every run's ratio in order, the median ratio, and the medians of
the value and the baseline, each figure matched by (benchmark, metric). Under it, the figures
whose baseline moved more than ``BASELINE_SPREAD`` between runs: their ratios measure the
baseline's mood as much as dlpipe (stop 33 reported the cold reader met on such a baseline).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.harness import target_cells

BASELINE_SPREAD = 1.3  # largest over smallest baseline of a figure across runs


def median_table(runs: Sequence[list[dict]]) -> str:
    """Markdown: one row per (benchmark, metric) of the first run, over the runs that have it."""
    lines = ["| benchmark | metric | ratios (per run) | median ratio | median value | median baseline "
             "| target | ok |", "|---|---|---|---:|---:|---:|---:|:---:|"]
    for first in runs[0]:
        key = (first["benchmark"], first["metric"])
        rows = [r for run in runs for r in run if (r["benchmark"], r["metric"]) == key]
        ratio = statistics.median(r["ratio"] for r in rows)
        target, ok = target_cells(ratio, first.get("target_ratio"))
        ratios = ", ".join(f"{r['ratio']:.3f}" for r in rows)
        lines.append(
            f"| {key[0]} | {key[1]} ({first['unit']}) | {ratios} "
            f"| **{ratio:.3f}** | {statistics.median(r['value'] for r in rows):,.1f} "
            f"| {statistics.median(r['baseline_value'] for r in rows):,.1f} "
            f"| {target} | {ok} |")
    return "\n".join(lines) + "\n" + moving_baselines(runs)


def moving_baselines(runs: Sequence[list[dict]]) -> str:
    """A warning naming each figure whose baseline moved more than ``BASELINE_SPREAD``."""
    moved = []
    for first in runs[0]:
        key = (first["benchmark"], first["metric"])
        baselines = [r["baseline_value"] for run in runs for r in run
                     if (r["benchmark"], r["metric"]) == key and r["baseline_value"] > 0]
        if len(baselines) > 1 and max(baselines) > BASELINE_SPREAD * min(baselines):
            moved.append(f"- {key[0]} / {key[1]}: baseline {min(baselines):,.1f} to "
                         f"{max(baselines):,.1f} ({max(baselines) / min(baselines):.2f}x)")
    if not moved:
        return ""
    return (f"\nBaselines that moved more than {BASELINE_SPREAD}x between runs (look at the runs, "
            "not only the median ratio):\n" + "\n".join(moved) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.medians", description=__doc__.split("\n")[0])
    parser.add_argument("reports", nargs="+", type=Path,
                        help="results-*.json files that python -m bench wrote (bench/results/)")
    args = parser.parse_args(argv)
    runs = []
    for path in args.reports:
        try:
            runs.append(json.loads(path.read_text())["results"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            parser.error(f"{path} is not a results file of python -m bench ({exc})")
    sys.stdout.write(f"Medians over {len(runs)} runs\n\n" + median_table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
