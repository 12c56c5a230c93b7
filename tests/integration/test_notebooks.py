"""Every notebook in ``notebooks/``, top to bottom, in a Jupyter kernel on a Spark Connect session.

The notebooks run in order against the test stack with a topic, tables, dataset and model of
this run (environment overrides) and small data (``DLPIPE_NB_*`` parameters), so a later
notebook finds what an earlier one made; each makes what it lacks, so any one also runs alone.
The jobs Spark Connect cannot run go to one shared job runner (``dlpipe.cli.notebook_jobs``).
Their last cells assert (counts add up, accuracy above a bar, figures shown); a failing cell
fails the test with the cell's source and traceback, and the executed notebook is kept.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from dlpipe.cli.jupyter import to_ipynb
from dlpipe.cli.notebook_jobs import SOCKET_ENV, runner_env, start_runner
from dlpipe.core.process import free_ports
from dlpipe.localstack.services import connect_url, spark_connect_service
from dlpipe.localstack.stack import Stack
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
PARAMS = {"DLPIPE_NB_COUNT": "700", "DLPIPE_NB_EPOCHS": "3", "DLPIPE_NB_BATCH_SIZE": "16",
          "DLPIPE_NB_WORKERS": "2", "DLPIPE_NB_MIN_ACCURACY": "0.3", "DLPIPE_NB_ROWS": "600",
          "DLPIPE_NB_LR_EPOCHS": "40"}
# The end-to-end notebook reuses what 01-04 made (export, training run, predictions are found
# done); it sends nothing new, so its ingest finds no new offsets instead of re-reading 700
# duplicates (a micro-batch costs a minute on this 2-core machine). Alone it sends `count`.
PER_NOTEBOOK = {"05_end_to_end": {"DLPIPE_NB_COUNT": "0"}}


@pytest.fixture(scope="module")
def spark_remote(stack: Stack):
    """The test stack's Spark Connect server: reused when healthy, else started on a free port
    and stopped afterwards."""
    service = spark_connect_service(stack.cfg, stack.installed)
    started = not (service.pid() is not None and service.is_healthy())
    if started:
        service = spark_connect_service(stack.cfg, stack.installed, port=free_ports(1)[0])
        service.start(stack.cfg.stack.startup_timeout_s * 3)
    yield connect_url(stack.cfg)
    if started:
        service.stop(stack.cfg.stack.stop_timeout_s)


@pytest.fixture(scope="module")
def job_socket(test_env: dict[str, str], tmp_path_factory):
    """One job runner for every notebook of the run: their ingest, training and scoring share
    a warm local Spark application, as in `dlpipe notebook`."""
    folder = tmp_path_factory.mktemp("jobs")
    path = folder / "jobs.sock"
    runner = start_runner(path, env=runner_env(test_env), log=folder / "runner.log")
    yield path
    runner.terminate()
    runner.wait(60)


@pytest.fixture(scope="module")
def notebook_env(test_env: dict[str, str], cfg, spark_remote: str, job_socket: Path) -> dict[str, str]:
    run = f"nb-{uuid.uuid4().hex[:8]}"
    lake, ckpt = cfg.buckets.lake, cfg.buckets.checkpoints
    isolation = {
        "KAFKA__TOPICS__RAW__NAME": f"test.raw.{run}",
        "TABLES__CLEAN": f"s3a://{lake}/test/{run}/clean",
        "TABLES__QUARANTINE": f"s3a://{lake}/test/{run}/quarantine",
        "TABLES__INGEST_BATCHES": f"s3a://{lake}/test/{run}/batches",
        "TABLES__PREDICTIONS": f"s3a://{lake}/test/{run}/predictions",
        "INGEST__CHECKPOINT": f"s3a://{ckpt}/test/{run}",
        "INGEST__QUERY_NAME": f"ingest-{run}",
        "EXPORT__DATASET": run,
        "TRAINING__MODEL_NAME": run,
    }
    return {**test_env, **PARAMS, "SPARK_REMOTE": spark_remote, SOCKET_ENV: str(job_socket),
            **{f"DLPIPE__{key}": value for key, value in isolation.items()}}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, notebook_env: dict[str, str], tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = to_ipynb(path.read_text(), kernel="python3")
    client = NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}})
    executed = tmp_path / f"{path.stem}.ipynb"
    try:
        client.execute(env={**notebook_env, **PER_NOTEBOOK.get(path.stem, {})})
    except CellExecutionError as exc:
        nbformat.write(nb, executed)
        pytest.fail(f"{path.name}: a cell failed (executed notebook: {executed})\n{exc}", pytrace=False)
    nbformat.write(nb, executed)
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name} showed no figure"
    assert " OK" in "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout")
