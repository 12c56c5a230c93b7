"""A job submitted with spark-submit to the loopback standalone cluster (master + 2 workers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dlpipe.localstack.install import locate
from dlpipe.localstack.services import spark_master_status

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_spark_submit_runs_a_job_on_the_standalone_cluster(cluster, test_env) -> None:
    cfg = cluster
    status = spark_master_status(cfg)
    assert status and len([w for w in status["workers"] if w["state"] == "ALIVE"]) == 2
    master = f"spark://{cfg.stack.host}:{cfg.stack.spark_cluster.master_port}"
    name = "dlpipe-cluster-test"
    jars = ",".join(str(p) for p in locate().spark_jar_paths())
    out = subprocess.run(
        [str(Path(sys.executable).parent / "spark-submit"), "--master", master, "--name", name,
         "--jars", jars, "--conf", "spark.executor.memory=1g", "--conf", "spark.cores.max=2",
         str(ROOT / "spark_jobs" / "smoke" / "job.py"), "--steps", "delta,kafka"],
        capture_output=True, text=True, env={**test_env, "PYSPARK_PYTHON": sys.executable},
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout[out.stdout.index("{"):])
    assert result["delta"]["latest_rows"] == 2000
    assert result["kafka"]["messages"] == 100
    key, secret = cfg.s3_credentials()
    assert secret not in out.stdout + out.stderr
    assert key not in out.stdout + out.stderr
    apps = spark_master_status(cfg)["completedapps"]
    ran = [a for a in apps if a["name"] == name]
    assert ran and ran[-1]["state"] == "FINISHED"
    assert ran[-1]["cores"] >= 1
