"""The image's entrypoint against the Kubernetes contract of the Spark that pyspark ships
(issue 19: the image used to borrow apache/spark:4.0.0's entrypoint for pyspark 4.2.0)."""

from __future__ import annotations

import os
import re
import subprocess
import zipfile
from pathlib import Path

import pyspark
import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "docker" / "spark-entrypoint.sh"
# Variables the image or the entrypoint itself sets, not Spark's Kubernetes backend.
OURS = {"SPARK_HOME", "SPARK_CONF_DIR", "SPARK_CLASSPATH", "SPARK_EXTRA_CLASSPATH",
        "SPARK_DIST_CLASSPATH"}


def kubernetes_jar_strings(prefix: str) -> set[str]:
    """String constants of pyspark's spark-kubernetes jar classes under ``prefix``."""
    (jar,) = (Path(pyspark.__file__).parent / "jars").glob("spark-kubernetes_*.jar")
    with zipfile.ZipFile(jar) as z:
        blob = b"".join(z.read(n) for n in z.namelist() if n.startswith(prefix))
    return {s.decode() for s in re.findall(rb"[\w-]{3,}", blob)}


def test_every_variable_and_executor_flag_is_one_spark_sets_and_parses():
    script = ENTRYPOINT.read_text()
    used = set(re.findall(r"\$\{?(SPARK_[A-Z_]+)", script)) - OURS - {"SPARK_JAVA_OPT_"}
    constants = kubernetes_jar_strings("org/apache/spark/deploy/k8s/Constants")
    assert used and used <= constants, f"not set by pyspark's Kubernetes backend: {used - constants}"
    assert "SPARK_JAVA_OPT_" in constants
    flags = set(re.findall(r"^\s+(--[a-zA-Z-]+) \"", script.split("KubernetesExecutorBackend", 1)[1], re.M))
    parsed = kubernetes_jar_strings("org/apache/spark/scheduler/cluster/k8s/KubernetesExecutorBackend")
    assert {"--driver-url", "--executor-id", "--podName"} <= flags
    assert flags <= parsed, f"flags KubernetesExecutorBackend does not parse: {flags - parsed}"


def dry_run(*args: str, **env: str) -> list[str]:
    out = subprocess.run([str(ENTRYPOINT), *args], capture_output=True, text=True, timeout=30,
                         env={"PATH": os.environ["PATH"], "SPARK_HOME": "/opt/spark",
                              "JAVA_HOME": "/opt/java", "DLPIPE_ENTRYPOINT_DRY_RUN": "1", **env})
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_driver_executor_and_other_commands():
    assert dry_run("driver", "--properties-file", "/opt/spark/conf/spark.properties", "job.py",
                   SPARK_DRIVER_BIND_ADDRESS="10.0.0.5") == [
        "/opt/spark/bin/spark-submit", "--conf", "spark.driver.bindAddress=10.0.0.5",
        "--deploy-mode", "client", "--properties-file", "/opt/spark/conf/spark.properties", "job.py"]
    executor = dry_run("executor", SPARK_EXECUTOR_MEMORY="2g", SPARK_DRIVER_URL="spark://d:7078",
                       SPARK_EXECUTOR_ID="3", SPARK_EXECUTOR_CORES="1", SPARK_APPLICATION_ID="app-1",
                       SPARK_EXECUTOR_POD_IP="10.0.0.9", SPARK_EXECUTOR_POD_NAME="pod-3",
                       SPARK_RESOURCE_PROFILE_ID="0", SPARK_JAVA_OPT_10="-Dten",
                       SPARK_JAVA_OPT_2="-Dtwo with space", SPARK_JAVA_OPT_0="-Dzero")
    assert executor[:7] == ["/opt/java/bin/java", "-Dzero", "-Dtwo with space", "-Dten", "-Xms2g",
                            "-Xmx2g", "-cp"]
    assert executor[7] == "/opt/spark/conf:/opt/spark/jars/*"
    assert executor[8:] == [
        "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend",
        "--driver-url", "spark://d:7078", "--executor-id", "3", "--cores", "1", "--app-id", "app-1",
        "--hostname", "10.0.0.9", "--resourceProfileId", "0", "--podName", "pod-3"]
    assert dry_run("dlpipe", "serve", "--port", "8501") == ["dlpipe", "serve", "--port", "8501"]


def test_an_executor_without_spark_s_variables_fails_naming_one():
    out = subprocess.run([str(ENTRYPOINT), "executor"], capture_output=True, text=True, timeout=30,
                         env={"PATH": os.environ["PATH"], "SPARK_HOME": "/s", "JAVA_HOME": "/j"})
    assert out.returncode != 0 and "SPARK_EXECUTOR_MEMORY: set by Spark" in out.stderr


@pytest.mark.parametrize("line", ["FROM ${SPARK_IMAGE}", "apache/spark:", "/opt/decom.sh"])
def test_the_image_no_longer_borrows_another_spark_releases_entrypoint(line):
    assert line not in (ROOT / "Dockerfile").read_text()
