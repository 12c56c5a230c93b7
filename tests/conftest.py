"""Session fixtures, in two tiers.

* No services: ``spark`` is a bare ``local[1]`` session without the connector jars, enough
  for chispa tests of pure transforms (``make test-unit``, stack down).
* The real local stack (tests marked ``integration``): Kafka + MinIO reused when healthy,
  else started on free ports in their own state dir (``.dlpipe/test-stack``), and ``spark``
  becomes the stack's ``local[2]`` session with the jars and s3a. When a run collects any
  integration test, every test gets that one session (a JVM holds one SparkContext).

Nothing here skips: a missing install fails with the command that fixes it.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dlpipe.core.config import Config, load_config
from dlpipe.core.process import free_ports
from dlpipe.core.session import JARS_ENV
from dlpipe.localstack.install import locate, missing
from dlpipe.localstack.stack import Stack, running_stack

ROOT = Path(__file__).resolve().parents[1]
TEST_STATE_DIR = Path(os.environ.get("DLPIPE_TEST_STATE_DIR", ROOT / ".dlpipe" / "test-stack"))
NEEDS_STACK = pytest.StashKey[bool]()


SPARK_TEST = re.compile(r"^def test_\w+\([^)]*\bspark\b", re.M)


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``make test-unit`` runs on two xdist workers: every test module that takes a Spark
    session goes to one worker (one JVM in the run) while the other takes TensorFlow, checkov
    and the pure Python tests; other modules go whole to whichever worker is free.

    xdist's own ``--dist loadgroup`` would say this with a mark, but it does not group on
    pytest 9 (pytest-dev/pytest-xdist#1386), so the grouping is by module, read from source.
    """
    from xdist.scheduler import LoadScopeScheduling

    spark_modules = {str(p.relative_to(config.rootpath)) for p in (ROOT / "tests").rglob("test_*.py")
                     if SPARK_TEST.search(p.read_text())}

    class SparkOnOneWorker(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "spark" if module in spark_modules else module

    return SparkOnOneWorker(config, log)


@pytest.hookimpl(trylast=True)  # after `-m` deselected: `make test-unit` must start no stack
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    config.stash[NEEDS_STACK] = any(item.get_closest_marker("integration") for item in items)


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    if not request.config.stash.get(NEEDS_STACK, False):  # the unit tier runs with no service
        pytest.fail("a test without the `integration` mark asked for the local stack", pytrace=False)
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
def jars() -> list[str]:
    """The connector jars of the local install (what ``dlpipe jars`` prints)."""
    return [str(p) for p in locate().spark_jar_paths()]


@pytest.fixture(scope="session")
def test_env(cfg: Config, jars: list[str]) -> dict[str, str]:
    """Environment for subprocesses (CLI, spark-submit) that must find the test stack."""
    return {**os.environ, "DLPIPE_STATE_DIR": str(cfg.stack.state_dir),
            "DLPIPE_CONFIG": str(ROOT / "conf" / "pipeline.yaml"),
            JARS_ENV: os.pathsep.join(jars)}


@pytest.fixture(scope="session")
def stack_spark(cfg: Config, jars: list[str]):
    """One local[2] session on the stack for the whole run (two slots: one per TF worker)."""
    from dlpipe.core.session import get_spark

    (ui_port,) = free_ports(1)
    session = get_spark(cfg, app_name="dlpipe-tests", master="local[2]", jars=jars, extra_conf={
        "spark.sql.shuffle.partitions": "2",
        "spark.ui.port": str(ui_port),
        "spark.ui.showConsoleProgress": "false",
    })
    yield session
    session.stop()


@pytest.fixture(scope="session")
def bare_spark():
    """A local[1] session with no jars, no S3 and no UI: pure transforms only."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers need this venv's pyarrow
    session = (SparkSession.builder.master("local[1]").appName("dlpipe-unit")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "1")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .getOrCreate())
    yield session
    session.stop()


@pytest.fixture(scope="session")
def spark(request: pytest.FixtureRequest):
    """The stack's session when the run has integration tests, else the bare one."""
    needs_stack = request.config.stash.get(NEEDS_STACK, False)
    return request.getfixturevalue("stack_spark" if needs_stack else "bare_spark")
