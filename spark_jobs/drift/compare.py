"""The drift verdict: population stability index of live samples against the training data.

Plain numpy, no Spark: the inputs are a few thousand numbers per statistic. PSI over quantile
bins of the reference (so each bin holds about the same share of training data) and over
classes; 0.1 is a small shift, 0.2 the usual alarm. A bin empty on one side counts as a small
share (``EPSILON``) rather than an infinite log ratio.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

EPSILON = 1e-4


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    e = np.clip(np.asarray(expected, dtype=float), EPSILON, None)
    a = np.clip(np.asarray(actual, dtype=float), EPSILON, None)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def numeric_psi(reference: Sequence[float], live: Sequence[float], *, bins: int) -> float:
    """PSI of ``live`` against ``reference`` over the reference's quantile bins."""
    ref = np.asarray(reference, dtype=float)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    share = lambda values: np.bincount(np.searchsorted(edges, values, side="left"),  # noqa: E731
                                       minlength=len(edges) + 1) / max(len(values), 1)
    return psi(share(ref), share(np.asarray(live, dtype=float)))


def categorical_psi(reference: Sequence[str], live: Sequence[str]) -> float:
    ref, cur = Counter(reference), Counter(live)
    names = sorted(set(ref) | set(cur))
    return psi([ref[n] / max(len(reference), 1) for n in names],
               [cur[n] / max(len(live), 1) for n in names])


@dataclass(frozen=True)
class DriftReport:
    model: str
    version: int | None
    samples: int
    reference_rows: int
    threshold: float
    psi: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    @property
    def flagged(self) -> list[str]:
        return [k for k, v in self.psi.items() if v > self.threshold]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "flagged": self.flagged}


def compare(model: str, version: int | None, reference: dict[str, Sequence], live: dict[str, Sequence],
            *, bins: int, threshold: float, min_samples: int) -> DriftReport:
    """``reference``/``live``: columns ``mean``, ``std`` and ``label`` (live: predicted class)."""
    n, m = len(live["label"]), len(reference["label"])
    if n < min_samples:
        return DriftReport(model, version, n, m, threshold,
                           reason=f"{n} live samples, fewer than drift.min_samples {min_samples}")
    scores = {"image_mean": numeric_psi(reference["mean"], live["mean"], bins=bins),
              "image_std": numeric_psi(reference["std"], live["std"], bins=bins),
              "predicted_class": categorical_psi(reference["label"], live["label"])}
    return DriftReport(model, version, n, m, threshold, {k: round(v, 4) for k, v in scores.items()})
