"""`dlpipe demo` as a user runs it (small counts): every stage, the summary and the report."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from dlpipe.core.s3 import s3_client

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_end_to_end_and_writes_its_report(cfg, test_env):
    started = set((cfg.stack.state_dir.parent / "reports").glob("demo-*.html"))
    proc = subprocess.run(
        [sys.executable, "-m", "dlpipe.cli.main", "demo", "--count", "400",
         "--set", "training.epochs=4", "--set", "training.min_test_accuracy=0.3",
         "--set", "training.min_test_records=20",
         "--set", "spark.master=local[2]"],
        cwd=ROOT, env=test_env, capture_output=True, text=True, timeout=1200)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    for stage in ("producing 400 digits", "ingesting", "exporting", "training", "serving",
                  "batch scoring", "writing the HTML report"):
        assert f"==> {stage}" in out, stage
    assert len(re.findall(r"POST http://127\.0\.0\.1:\d+/v1/models/digits-cnn:predict -> \d", out)) == 16
    for line in ("records produced:", "quarantined:", "duplicates (not written):", "dataset:",
                 "model:", "served version:", "throughput by stage:", "batch scoring (rows not scored yet)"):
        assert line in out, line
    reports = set((cfg.stack.state_dir.parent / "reports").glob("demo-*.html")) - started
    assert len(reports) == 1, out[-3000:]
    html = reports.pop().read_text()
    for alt in ("training curves", "confusion matrix", "sample predictions", "quarantine reasons"):
        assert f"alt='{alt}'" in html
    remote = re.search(r"s3://([^/]+)/(demo/\S+/report\.html)", out)
    assert remote, out[-2000:]
    body = s3_client(cfg).get_object(Bucket=remote.group(1), Key=remote.group(2))["Body"].read()
    assert body.decode() == html
