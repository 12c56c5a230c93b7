"""The demo report renders every plot into one self-contained HTML file."""

from __future__ import annotations

import io

from dlpipe.cli.report import ReportData, Sample, render


def test_report_embeds_every_plot_and_escapes_text():
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8, 8), 200).save(buffer, format="PNG")
    data = ReportData(
        title="demo <1>", summary={"records produced": "1,797", "model": "s3://m/1/"},
        stages=[("ingest", 1797, 12.5, "records"), ("empty", 0, 0.0, "rows")],
        epochs=[{"epoch": 0, "loss": 2.0, "accuracy": 0.3, "val_loss": 1.5, "val_accuracy": 0.5},
                {"epoch": 1, "loss": 1.0, "accuracy": 0.7, "val_loss": 0.9, "val_accuracy": 0.8}],
        confusion=[[5, 1], [0, 4]], classes=["0", "1"], quarantine={"BAD_IMAGE": 3, "BAD_JSON": 1},
        samples=[Sample(buffer.getvalue(), "1", "1", 0.9), Sample(buffer.getvalue(), "0", "1", 0.6)])
    html = render(data)
    assert html.startswith("<!doctype html>") and "demo &lt;1&gt;" in html
    assert html.count("data:image/png;base64,") == 4
    for alt in ("training curves", "confusion matrix", "sample predictions", "quarantine reasons"):
        assert f"alt='{alt}'" in html
    assert "144 records/s" in html  # 1797 / 12.5
    empty = render(ReportData("t", {}, [], [], [], [], {}))
    assert "data:image/png" not in empty
