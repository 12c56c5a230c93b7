"""``dlpipe export`` on a warm Spark Connect server against a cold ``spark-submit``.

The same command a user types, timed from the shell's point of view (process start to exit),
on the same clean table, each run a full export (``--overwrite``):

* warm: ``SPARK_REMOTE=sc://... dlpipe export``: a Python client attaching to the stack's
  Connect server (``dlpipe stack up --connect``), whose JVM, jars and Python workers are up;
* cold: ``spark-submit --master local[2] --jars "$(dlpipe jars)" spark_jobs/export/job.py``:
  a new driver JVM with the connector jars each time.

The server is warmed by one untimed export; the two kinds then alternate (median of 3 each).
Reported as exports per minute, so the ratio is the warm server's speed-up.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.harness import Context, Result

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.5


def _timed(argv: list[str], env: dict[str, str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "ab") as out:
        code = subprocess.call(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} ... exited with {code}; see {log}")
    return seconds


@contextmanager
def connect_mode_undone() -> Iterator[None]:
    """PySpark marks the whole process as Spark Connect (``SPARK_CONNECT_MODE_ENABLED``) once a
    remote session is made; undone after it, or every later benchmark's classic session fails
    with CONNECT_URL_NOT_SET (``make bench`` runs this one first)."""
    from dlpipe.core.process import scoped_environ

    with scoped_environ(restore=("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE", "SPARK_LOCAL_REMOTE")):
        yield


def run(ctx: Context) -> list[Result]:
    from bench.data import synthetic_overrides, synthetic_table
    from dlpipe.core.process import free_ports
    from dlpipe.core.session import get_spark
    from dlpipe.localstack.install import locate
    from dlpipe.localstack.services import connect_url, spark_connect_service

    cfg, repeats = ctx.cfg, 3
    count = 500 if ctx.quick else 2000
    installed = locate()
    server = spark_connect_service(cfg, installed)
    started_here = not (server.pid() is not None and server.is_healthy())
    if started_here:
        server = spark_connect_service(cfg, installed, port=free_ports(1)[0])
        server.start(cfg.stack.startup_timeout_s * 3)
    url = connect_url(cfg)
    run_id = f"connect-{uuid.uuid4().hex[:8]}"
    overrides = {**synthetic_overrides(cfg.buckets.lake, run_id), "export.dataset": f"bench-{run_id}"}
    try:
        with connect_mode_undone():
            client = get_spark(cfg, remote=url)
            try:
                synthetic_table(client, overrides["tables.clean"], count)
            finally:
                client.stop()  # release the session while the server is up
        sets = [f"--set={key}={value}" for key, value in overrides.items()]
        base = {k: v for k, v in os.environ.items()
                if k not in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "SPARK_LOCAL_REMOTE")}
        base["DLPIPE_STATE_DIR"] = str(cfg.stack.state_dir)
        warm_cmd = ([sys.executable, "-m", "dlpipe.cli.main", "export", "--overwrite", *sets],
                    {**base, "SPARK_REMOTE": url})
        venv_bin = str(Path(sys.executable).parent)  # as after `source .venv/bin/activate`
        jars = ",".join(str(p) for p in installed.spark_jar_paths())
        cold_cmd = ([f"{venv_bin}/spark-submit", "--master", "local[2]", "--jars", jars,
                     "spark_jobs/export/job.py", "--overwrite", *sets],
                    {**base, "PATH": venv_bin + os.pathsep + base.get("PATH", "")})
        log = cfg.stack.state_dir / "bench-connect.log"
        _timed(*warm_cmd, log)  # the server's first export: JIT, Python workers, s3a clients
        warm, cold = [], []
        for _ in range(repeats):
            cold.append(_timed(*cold_cmd, log))
            warm.append(_timed(*warm_cmd, log))
    finally:
        if started_here:
            server.stop(cfg.stack.stop_timeout_s)
    warm_s, cold_s = statistics.median(warm), statistics.median(cold)
    return [Result(
        benchmark="connect", metric="`dlpipe export` on a warm Spark Connect server", unit="exports/min",
        value=60 / warm_s, baseline_name="cold `spark-submit --master local[2]` of the export job",
        baseline_value=60 / cold_s, target_ratio=TARGET,
        notes=f"{count} synthetic 32x32 PNG rows, full export (--overwrite) each run; wall time "
              f"median of {repeats}: warm {warm_s:.1f}s, cold {cold_s:.1f}s "
              f"(warm {', '.join(f'{s:.1f}' for s in warm)}; cold {', '.join(f'{s:.1f}' for s in cold)})",
    )]
