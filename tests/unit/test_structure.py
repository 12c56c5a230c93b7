"""The code's shape, checked: import layers, nothing heavy at import, small modules."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("dlpipe", "spark_jobs", "models")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_the_layers_hold() -> None:
    out = subprocess.run([str(LINT_IMPORTS)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_wrong_way_import_breaks_the_layers(tmp_path: Path) -> None:
    """The contract can fail: core importing a job is reported, naming both modules."""
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    errors = tmp_path / "dlpipe" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nimport spark_jobs.ingest.job  # noqa\n")
    out = subprocess.run([str(LINT_IMPORTS)], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode != 0
    assert "BROKEN" in out.stdout and "dlpipe.core.errors -> spark_jobs.ingest.job" in out.stdout


def test_importing_every_module_starts_no_session_and_no_tensorflow() -> None:
    names = [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
             for p in modules()]
    code = "\n".join(f"import {n}" for n in names) + (
        "\nimport sys\nheavy = [m for m in ('tensorflow', 'tf_keras', 'PIL.Image') if m in sys.modules]"
        "\nif 'pyspark' in sys.modules:"
        "\n    from pyspark import SparkContext"
        "\n    heavy += ['a SparkContext'] if SparkContext._active_spark_context else []"
        "\nprint(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"imported at module import: {out.stdout.strip()}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_stay_small(path: Path) -> None:
    lines = path.read_text().splitlines()
    assert len(lines) <= MAX_MODULE_LINES, f"{path.name} has {len(lines)} lines"
    tree = ast.parse("\n".join(lines))
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


def test_the_charts_alert_rules_are_the_local_stacks():
    """helm/dlpipe/files/alerts.yml is a copy (a chart cannot read outside its folder)."""
    assert (ROOT / "helm/dlpipe/files/alerts.yml").read_text() == \
        (ROOT / "conf/prometheus/alerts.yml").read_text(), "cp conf/prometheus/alerts.yml helm/dlpipe/files/"
