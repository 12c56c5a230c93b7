"""The notebooks are Databricks source files that are also plain Python, and convert to Jupyter
and back without loss; notebook parameters come from widgets, the environment or defaults."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dlpipe.cli.jupyter import HEADER, MAGIC, SEPARATOR, parse_databricks, to_databricks, to_ipynb
from dlpipe.cli.notebook import read_params
from dlpipe.core.errors import DlpipeError

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
EXPECTED = ["00_quickstart", "01_ingest_and_quality", "02_dataset", "03_train", "04_serve_and_score",
            "05_end_to_end"]


def test_every_issue_notebook_is_there() -> None:
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_databricks_source_format(path: Path) -> None:
    text = path.read_text()
    lines = text.splitlines()
    assert lines[0] == HEADER
    markers = [i for i, line in enumerate(lines) if "COMMAND --" in line]
    assert len(markers) >= 4
    for i in markers:  # exactly Databricks' marker, alone between blank lines
        assert lines[i] == SEPARATOR and lines[i - 1] == "" and lines[i + 1] == "", (path.name, i + 1)
    cells = parse_databricks(text)
    assert cells[0] == ("markdown", cells[0][1]) and cells[0][1].startswith("# ")
    assert {kind for kind, _ in cells} == {"code", "markdown"}
    for kind, source in cells:
        if kind == "code":  # a MAGIC line outside a %md cell would be a silent comment in Python
            assert MAGIC not in source, (path.name, source[:80])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_parses_as_python_and_calls_the_package(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    defined = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert not defined, f"{path.name} defines {defined}: logic belongs in the package"
    calls = [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert "start" in calls
    last = parse_databricks(path.read_text())[-1]
    assert last[0] == "code" and "assert " in last[1], f"{path.name}: the last cell must assert"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_jupyter_round_trip(path: Path) -> None:
    text = path.read_text()
    nb = to_ipynb(text)
    assert nb.metadata["kernelspec"]["name"] == "dlpipe"
    assert [c.cell_type for c in nb.cells] == [kind for kind, _ in parse_databricks(text)]
    assert to_databricks(nb) == text


def test_markdown_cells_convert_both_ways() -> None:
    text = f"{HEADER}\n# MAGIC %md\n# MAGIC # Title\n# MAGIC\n# MAGIC text\n\n{SEPARATOR}\n\nx = 1\n"
    assert parse_databricks(text) == [("markdown", "# Title\n\ntext"), ("code", "x = 1")]
    assert to_databricks(to_ipynb(text)) == text
    with pytest.raises(ValueError, match="Databricks notebook source"):
        parse_databricks("x = 1\n")


class _Widgets:
    def __init__(self, values: dict[str, str]) -> None:
        self.values, self.made = values, {}

    def text(self, name: str, default: str) -> None:
        self.made[name] = default

    def get(self, name: str) -> str:
        return self.values.get(name, self.made[name])


class _DbUtils:
    def __init__(self, values: dict[str, str]) -> None:
        self.widgets = _Widgets(values)


def test_params_from_widgets_env_or_defaults() -> None:
    defaults = {"count": 500, "fraction": 0.05, "classic": False, "name": "digits"}
    env = {"DLPIPE_NB_COUNT": "40", "DLPIPE_NB_CLASSIC": "true"}
    assert read_params(defaults, environ=env) == {"count": 40, "fraction": 0.05, "classic": True,
                                                  "name": "digits"}
    assert read_params(defaults, environ={}) == defaults
    dbutils = _DbUtils({"fraction": "0.5"})
    assert read_params(defaults, dbutils=dbutils, environ=env) == {**defaults, "fraction": 0.5}
    assert dbutils.widgets.made == {"count": "500", "fraction": "0.05", "classic": "False", "name": "digits"}
    with pytest.raises(DlpipeError, match="DLPIPE_NB_COUNT"):
        read_params(defaults, environ={"DLPIPE_NB_COUNT": "many"})
