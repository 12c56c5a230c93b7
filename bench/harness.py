"""What every benchmark shares: its result type, the running stack, timing and reports.

A figure alone says little on a shared 2-core machine, so every result is a ratio against
a baseline measured in the same run, and both are repeated (median of ``repeats``).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from dlpipe.core.config import Config


@dataclass(frozen=True)
class Result:
    benchmark: str
    metric: str
    unit: str
    value: float
    baseline_name: str
    baseline_value: float
    target_ratio: float | None = None
    notes: str = ""

    @property
    def ratio(self) -> float:
        return self.value / self.baseline_value if self.baseline_value else float("nan")

    @property
    def meets_target(self) -> bool | None:
        return None if self.target_ratio is None else self.ratio >= self.target_ratio

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "ratio": round(self.ratio, 4), "meets_target": self.meets_target}


@dataclass(frozen=True)
class Context:
    cfg: Config
    work_dir: Path
    quick: bool


def median_rate(work: Callable[[], float], *, repeats: int) -> float:
    """Median of ``units / seconds`` over ``repeats`` runs; ``work`` returns the units done."""
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        units = work()
        rates.append(units / (time.perf_counter() - started))
    return statistics.median(rates)


def target_cells(ratio: float, target: float | None) -> tuple[str, str]:
    """The report's ``target`` and ``ok`` cells for a ratio against its bar (none: ``-``)."""
    if target is None:
        return "-", "-"
    return f"{target:.2f}", "yes" if ratio >= target else "**no**"


def write_reports(results: list[Result], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    meta = {"when": stamp, "machine": platform.node(), "python": platform.python_version()}
    json_path = out_dir / f"results-{stamp}.json"
    json_path.write_text(json.dumps({**meta, "results": [r.as_dict() for r in results]}, indent=2))
    lines = [
        "| benchmark | metric | value | baseline | baseline value | ratio | target | ok |",
        "|---|---|---:|---|---:|---:|---:|:---:|",
    ]
    for r in results:
        target, ok = target_cells(r.ratio, r.target_ratio)
        lines.append(
            f"| {r.benchmark} | {r.metric} ({r.unit}) | {r.value:,.1f} | {r.baseline_name} | "
            f"{r.baseline_value:,.1f} | {r.ratio:.3f} | {target} | {ok} |"
        )
    md_path = out_dir / "results.md"
    md_path.write_text(f"# Benchmark results ({stamp})\n\n" + "\n".join(lines) + "\n")
    return json_path, md_path
