"""``make bench`` hands the connector jars to its Spark sessions, as the CLI does (it did not
for a whole stop: every Spark benchmark stopped at "hadoop-aws is not on the classpath")."""

from __future__ import annotations

import os

import pytest

from dlpipe.core.session import JARS_ENV


class _Stop(Exception):
    pass


def test_the_benchmarks_get_the_connector_jars_before_the_stack_starts(monkeypatch):
    import bench.__main__ as bench_main

    seen: dict[str, str | None] = {}

    def stack_instead(cfg):  # the point where the benchmarks would start their sessions
        seen["jars"] = os.environ.get(JARS_ENV)
        raise _Stop

    monkeypatch.setenv(JARS_ENV, "placeholder")
    monkeypatch.delenv(JARS_ENV)  # restored (unset) after the test, whatever main sets
    monkeypatch.setattr(bench_main, "running_stack", stack_instead)
    with pytest.raises(_Stop):
        bench_main.main(["bench_ingest", "--quick"])
    assert seen["jars"], f"${JARS_ENV} is empty: run make setup (it installs the jars)"
    assert "hadoop-aws" in seen["jars"] and "delta-spark" in seen["jars"], seen["jars"]


def test_a_plain_make_bench_leaves_out_the_million_record_run_but_runs_it_when_named():
    import bench.__main__ as bench_main

    assert "bench_scale" not in bench_main.discover()
    assert {"bench_ingest", "bench_reader"} <= set(bench_main.discover())
    assert "bench_scale" in bench_main.discover(every=True)
    with pytest.raises(SystemExit):  # argparse's error for a name it does not know
        bench_main.main(["bench_nothing"])
