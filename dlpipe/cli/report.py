"""The demo's HTML report: one self-contained file a person would rather look at than read.

Plots are rendered with matplotlib (Agg, no display) into PNGs embedded as data URIs, so the
file can be opened from disk, mailed, or served from the object store as it is.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sample:
    image_png: bytes
    label: str
    predicted: str
    confidence: float


@dataclass(frozen=True)
class ReportData:
    title: str
    summary: Mapping[str, Any]                     # heading -> value, shown as a table
    stages: Sequence[tuple[str, int, float, str]]  # stage, items, seconds, unit
    epochs: Sequence[Mapping[str, Any]]            # metrics.jsonl records of the training run
    confusion: Sequence[Sequence[int]]             # test split, rows = true class
    classes: Sequence[str]
    quarantine: Mapping[str, int]                  # reason code -> records
    samples: Sequence[Sample] = field(default_factory=list)


def _figure_uri(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def training_curves(epochs: Sequence[Mapping[str, Any]]) -> str:
    import matplotlib.pyplot as plt

    fig, (loss, acc) = plt.subplots(1, 2, figsize=(9, 3.2))
    x = [e["epoch"] + 1 for e in epochs]
    for ax, metric in ((loss, "loss"), (acc, "accuracy")):
        for prefix, style in (("", "-o"), ("val_", "--s")):
            values = [e.get(prefix + metric) for e in epochs]
            if any(v is not None for v in values):
                ax.plot(x, values, style, ms=3, label="validation" if prefix else "train")
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    return _figure_uri(fig)


def confusion_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> str:
    import matplotlib.pyplot as plt
    import numpy as np

    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(m):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                    color="white" if v > m.max() / 2 else "black")
    accuracy = m.trace() / max(m.sum(), 1)
    ax.set_title(f"test split: {m.sum()} images, accuracy {accuracy:.1%}")
    return _figure_uri(fig)


def sample_grid(samples: Sequence[Sample]) -> str:
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    cols = min(len(samples), 8)
    rows = -(-len(samples) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.55 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, s in zip(axes.flat, samples, strict=False):
        image = np.asarray(Image.open(io.BytesIO(s.image_png)))
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
        ok = s.predicted == s.label
        ax.set_title(f"{s.predicted} ({s.confidence:.0%})\ntrue {s.label}", fontsize=8,
                     color="green" if ok else "red")
    return _figure_uri(fig)


def quarantine_bars(reasons: Mapping[str, int]) -> str:
    import matplotlib.pyplot as plt

    items = sorted(reasons.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(items) + 0.8))
    ax.barh([k for k, _ in items], [v for _, v in items], color="#c0504d")
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {v}", va="center", fontsize=8)
    ax.set_xlabel("records quarantined")
    ax.grid(axis="x", alpha=0.3)
    return _figure_uri(fig)


def render(data: ReportData) -> str:
    import matplotlib

    matplotlib.use("Agg")
    esc = html.escape
    summary = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>"
                      for k, v in data.summary.items())
    stages = "".join(
        f"<tr><td>{esc(name)}</td><td>{items:,}</td><td>{seconds:.1f} s</td>"
        f"<td>{items / seconds if seconds else 0:,.0f} {esc(unit)}/s</td></tr>"
        for name, items, seconds, unit in data.stages)
    parts = [f"<h1>{esc(data.title)}</h1>", f"<table>{summary}</table>",
             "<h2>Throughput by stage</h2><table><tr><th>stage</th><th>items</th><th>time</th>"
             f"<th>rate</th></tr>{stages}</table>"]
    if data.epochs:
        parts.append(f"<h2>Training</h2><img alt='training curves' src='{training_curves(data.epochs)}'>")
    if data.confusion:
        parts.append("<h2>Confusion matrix</h2>"
                     f"<img alt='confusion matrix' src='{confusion_matrix(data.confusion, data.classes)}'>")
    if data.samples:
        parts.append("<h2>Predictions from the REST API</h2>"
                     f"<img alt='sample predictions' src='{sample_grid(data.samples)}'>")
    if data.quarantine:
        parts.append("<h2>Quarantined records by reason</h2>"
                     f"<img alt='quarantine reasons' src='{quarantine_bars(data.quarantine)}'>")
    style = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}"
             "table{border-collapse:collapse;margin:.5rem 0 1.5rem}"
             "td,th{border-bottom:1px solid #ddd;padding:.25rem .8rem;text-align:left}"
             "img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(data.title)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
