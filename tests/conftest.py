"""Session fixtures: the real local stack (reused when healthy, else started on free ports).

The stack lives in its own state dir (``.dlpipe/test-stack``), so tests never touch the
demo's data. Nothing here skips: a missing install fails with the command that fixes it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dlpipe.core.config import Config, load_config
from dlpipe.core.process import free_ports
from dlpipe.localstack.install import missing
from dlpipe.localstack.stack import Stack, running_stack

ROOT = Path(__file__).resolve().parents[1]
TEST_STATE_DIR = Path(os.environ.get("DLPIPE_TEST_STATE_DIR", ROOT / ".dlpipe" / "test-stack"))


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    lacking = missing()
    if lacking:
        pytest.fail(
            "the local stack is not installed: " + "; ".join(lacking)
            + "\n  fix: make setup  (or: .venv/bin/dlpipe install)", pytrace=False,
        )
    cfg = load_config(ROOT / "conf" / "pipeline.yaml",
                      overrides={"stack.state_dir": str(TEST_STATE_DIR)})
    with running_stack(cfg, use_free_ports=True) as running:
        yield running


@pytest.fixture(scope="session")
def cfg(stack: Stack) -> Config:
    return stack.cfg


@pytest.fixture(scope="session")
def test_env(cfg: Config) -> dict[str, str]:
    """Environment for subprocesses (CLI, spark-submit) that must find the test stack."""
    return {**os.environ, "DLPIPE_STATE_DIR": str(cfg.stack.state_dir),
            "DLPIPE_CONFIG": str(ROOT / "conf" / "pipeline.yaml")}


@pytest.fixture(scope="session")
def spark(cfg: Config):
    """One local[2] session for the whole run (two slots: one per TF worker)."""
    from dlpipe.core.session import get_spark

    (ui_port,) = free_ports(1)
    session = get_spark(cfg, app_name="dlpipe-tests", master="local[2]", extra_conf={
        "spark.sql.shuffle.partitions": "2",
        "spark.ui.port": str(ui_port),
        "spark.ui.showConsoleProgress": "false",
    })
    yield session
    session.stop()
