"""The drift verdict as a small self-contained HTML page."""

from __future__ import annotations

import html

from spark_jobs.drift.compare import DriftReport


def render(report: DriftReport) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td>"
        f"<td style='color:{'#b00' if v > report.threshold else '#070'}'>"
        f"{'drift' if v > report.threshold else 'stable'}</td></tr>" for k, v in report.psi.items())
    verdict = (report.reason if not report.psi else
               f"drift in {', '.join(report.flagged)}" if report.flagged else "no drift")
    return f"""<!doctype html><meta charset="utf-8"><title>dlpipe drift: {html.escape(report.model)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 12px;border-bottom:1px solid #ddd}}</style>
<h1>Drift of {html.escape(report.model)} version {report.version}</h1>
<p><b>{html.escape(verdict)}</b>: {report.samples:,} live samples against {report.reference_rows:,}
rows of the training data; population stability index above {report.threshold} is drift.</p>
<table><tr><th>statistic</th><th>PSI</th><th></th></tr>{rows}</table>
"""
