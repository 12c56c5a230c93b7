"""``dlpipe notebook``: the Databricks-format notebooks in JupyterLab, on the local stack.

The notebooks in ``notebooks/`` are Databricks source files (``# Databricks notebook source``,
cells split by ``# COMMAND ----------``, markdown as ``# MAGIC`` lines): Databricks imports
them as they are and Python runs them as they are. jupytext knows no Databricks format (its
light and percent formats would show the markers as code), so Jupyter gets a converted copy:
``.dlpipe/notebooks/<name>.ipynb``, rewritten whenever the source is newer, and
``dlpipe notebook --to-py FILE.ipynb`` writes an edited copy back as Databricks source.

The kernel (``dlpipe (Spark)``) starts with ``spark`` ready, as on Databricks: a Spark
Connect session on the stack's Connect server, or with ``--classic`` a local one. On Connect,
the jobs that need a SparkContext go to one job runner shared by every kernel.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from dlpipe.core.config import Config

HEADER = "# Databricks notebook source"
SEPARATOR = "# COMMAND ----------"
MAGIC = "# MAGIC"
KERNEL = "dlpipe"
ROOT = Path(__file__).resolve().parents[2]


def parse_databricks(text: str) -> list[tuple[str, str]]:
    """(``code`` or ``markdown``, source) per cell of a Databricks source file."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != HEADER:
        raise ValueError(f"not a Databricks notebook: the first line must be {HEADER!r}")
    cells, current = [], []
    for line in [*lines[1:], SEPARATOR]:
        if line.strip() != SEPARATOR:
            current.append(line)
            continue
        source = "\n".join(current).strip("\n")
        current = []
        if not source:
            continue
        body = source.splitlines()
        if body[0].strip() == f"{MAGIC} %md" and all(b.startswith(MAGIC) for b in body):
            markdown = [b[len(MAGIC) + 1:] if b.startswith(MAGIC + " ") else "" for b in body[1:]]
            cells.append(("markdown", "\n".join(markdown)))
        else:
            cells.append(("code", source))
    return cells


def to_ipynb(text: str, *, kernel: str = KERNEL) -> Any:
    """A Databricks source file as an nbformat v4 notebook."""
    import nbformat

    make = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell}
    nb = nbformat.v4.new_notebook(cells=[make[kind](source) for kind, source in parse_databricks(text)])
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": "dlpipe (Spark)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def to_databricks(nb: Any) -> str:
    """An nbformat notebook as Databricks source (outputs dropped, as Databricks does)."""
    parts = []
    for cell in nb.cells:
        source = cell.source.strip("\n")
        if cell.cell_type == "markdown":
            lines = [f"{MAGIC} {line}".rstrip() for line in source.splitlines()]
            source = "\n".join([f"{MAGIC} %md", *lines])
        elif cell.cell_type != "code" or not source:
            continue
        parts.append(source)
    return HEADER + "\n" + f"\n\n{SEPARATOR}\n\n".join(parts) + "\n"


def convert_all(src: Path, dest: Path) -> list[Path]:
    """``src/*.py`` -> ``dest/*.ipynb`` where the source is newer; returns what was written."""
    import nbformat

    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for py in sorted(src.glob("*.py")):
        out = dest / f"{py.stem}.ipynb"
        if out.exists() and out.stat().st_mtime >= py.stat().st_mtime:
            continue
        nbformat.write(to_ipynb(py.read_text()), out)
        written.append(out)
    return written


def write_kernel(cfg: Config, jupyter_dir: Path, env: dict[str, str]) -> Path:
    """A kernel spec whose kernels start with ``spark`` (``dlpipe.cli.notebook.session``)."""
    spec = jupyter_dir / "kernels" / KERNEL / "kernel.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.exec_lines=from dlpipe.cli.notebook import session as _dlpipe_session",
                 "--IPKernelApp.exec_lines=spark = _dlpipe_session()"],
        "display_name": "dlpipe (Spark)", "language": "python", "env": env,
    }, indent=1))
    return spec


def lab(cfg: Config, *, connect: bool, port: int, extra: list[str]) -> int:
    """Start the stack (and its Connect server), convert the notebooks, run JupyterLab."""
    from dlpipe.cli.main import provide_jars, start_connect
    from dlpipe.cli.notebook_jobs import SOCKET_ENV, runner_env, start_runner
    from dlpipe.core.session import JARS_ENV
    from dlpipe.localstack.stack import Stack

    stack = Stack.from_config(cfg).up()
    provide_jars()
    env = {"DLPIPE_STATE_DIR": str(stack.cfg.stack.state_dir),
           "DLPIPE_CONFIG": str(stack.cfg.source.resolve()), JARS_ENV: os.environ.get(JARS_ENV, "")}
    runner = None
    if connect:
        env["SPARK_REMOTE"] = start_connect(stack)
        sock = stack.cfg.stack.state_dir / "notebook-jobs.sock"
        runner = start_runner(sock, env=runner_env(), log=stack.cfg.stack.state_dir / "notebook-jobs.log")
        env[SOCKET_ENV] = str(sock)
    work = stack.cfg.stack.state_dir.parent / "notebooks"
    for path in convert_all(ROOT / "notebooks", work):
        print(f"converted {path}")
    jupyter_dir = stack.cfg.stack.state_dir / "jupyter"
    write_kernel(stack.cfg, jupyter_dir, env)
    paths = [str(jupyter_dir), *filter(None, [os.environ.get("JUPYTER_PATH")])]
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--ip={stack.cfg.stack.host}",
           f"--port={port}", f"--ServerApp.root_dir={work}", *extra]
    if os.geteuid() == 0:  # containers and CI machines; Jupyter refuses root otherwise
        cmd.append("--allow-root")
    print(f"JupyterLab on http://{stack.cfg.stack.host}:{port}/ (kernel 'dlpipe (Spark)', "
          f"{'Spark Connect ' + env['SPARK_REMOTE'] if connect else 'a local Spark session per kernel'}); "
          "Ctrl-C stops it")
    try:
        return subprocess.call(cmd, env={**os.environ, "JUPYTER_PATH": os.pathsep.join(paths)})
    except KeyboardInterrupt:
        return 130
    finally:
        if runner is not None:
            runner.terminate()


def to_py(notebooks: list[Path], dest: Path) -> int:
    import nbformat

    for path in notebooks:
        out = dest / f"{path.stem}.py"
        out.write_text(to_databricks(nbformat.read(path, as_version=4)))
        print(f"wrote {out}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--classic", action="store_true",
                        help="kernels start their own local Spark session instead of Spark Connect")
    parser.add_argument("--port", type=int, default=8888, help="JupyterLab's port (default 8888)")
    parser.add_argument("--to-py", nargs="+", type=Path, metavar="IPYNB", default=None,
                        help="write these notebooks back to notebooks/ as Databricks source, then exit")
    parser.add_argument("--lab-arg", action="append", default=[], metavar="ARG",
                        help="pass ARG on to `jupyter lab` (repeatable)")


def run(cfg: Config, args: argparse.Namespace) -> int:
    if args.to_py:
        return to_py(args.to_py, ROOT / "notebooks")
    return lab(cfg, connect=not args.classic, port=args.port, extra=args.lab_arg)
