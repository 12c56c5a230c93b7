"""Progress lines reach stderr from every entry point, as text or as JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import logging, sys
from dlpipe.core import logs
logs.setup(sys.argv[1])
logging.getLogger(__name__).info("from the script run as __main__")
logging.getLogger("spark_jobs.export.job").info("from a job module")
logging.getLogger("py4j").info("not ours")
"""


def _run(fmt: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, fmt], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stderr.splitlines()


def test_a_job_run_as_a_script_logs_its_progress():
    assert _run("text") == ["from the script run as __main__", "from a job module"]


def test_json_lines_for_log_collectors():
    lines = [json.loads(line) for line in _run("json")]
    assert [(r["logger"], r["message"], r["level"]) for r in lines] == [
        ("__main__", "from the script run as __main__", "info"),
        ("spark_jobs.export.job", "from a job module", "info")]
    assert all(r["time"].endswith("+00:00") for r in lines)
