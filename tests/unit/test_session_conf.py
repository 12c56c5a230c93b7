"""The session conf is a pure function: checked here without starting a JVM."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from dlpipe.core.config import load_config
from dlpipe.core.session import (
    CONF_PROVIDER,
    ENV_PROVIDER,
    REDACTION_REGEX,
    jars_from_env,
    s3_env,
    spark_conf,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cfg(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DLPIPE_S3_ACCESS_KEY", "AKIA-test-key")
    monkeypatch.setenv("DLPIPE_S3_SECRET_KEY", "test-secret-value")
    return load_config(ROOT / "conf" / "pipeline.yaml",
                       overrides={"stack.minio.port": 9123, "spark.conf.spark.sql.shuffle.partitions": "3"})


@pytest.fixture
def jars(tmp_path: Path) -> list[Path]:
    return [tmp_path / name for name in ("hadoop-aws-3.5.0.jar", "delta-spark_4.2_2.13-4.4.0.jar")]


def test_s3a_points_at_the_configured_minio(cfg, jars) -> None:
    conf = spark_conf(cfg, jars=jars)
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9123"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert conf["spark.hadoop.fs.s3a.committer.name"] == "magic"
    assert conf["spark.hadoop.mapreduce.outputcommitter.factory.scheme.s3a"].endswith("S3ACommitterFactory")


def test_delta_and_jars_are_configured(cfg, jars) -> None:
    conf = spark_conf(cfg, jars=jars)
    assert conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert conf["spark.sql.catalog.spark_catalog"] == "org.apache.spark.sql.delta.catalog.DeltaCatalog"
    assert sorted(Path(p).name for p in conf["spark.driver.extraClassPath"].split(os.pathsep)) == [
        "delta-spark_4.2_2.13-4.4.0.jar", "hadoop-aws-3.5.0.jar"]
    assert "spark.jars" not in conf  # local: on the classpath, never copied per session
    remote = spark_conf(cfg, jars=jars, master="spark://10.0.0.1:7077")
    assert sorted(Path(p).name for p in remote["spark.jars"].split(",")) == [
        "delta-spark_4.2_2.13-4.4.0.jar", "hadoop-aws-3.5.0.jar"]
    assert "spark.driver.extraClassPath" not in remote


def test_the_keys_are_not_in_the_conf_but_in_the_environment_s3a_reads(cfg, jars) -> None:
    """Issue 16: SparkConf reaches every executor that registers with the driver; S3A reads
    the keys from the JVM's environment instead (s3_env, given to the JVM at launch)."""
    conf = spark_conf(cfg, jars=jars)
    assert not [k for k, v in conf.items() if "AKIA-test-key" in v or "test-secret-value" in v]
    assert conf["spark.hadoop.fs.s3a.aws.credentials.provider"] == ENV_PROVIDER
    assert s3_env(cfg) == {"AWS_ACCESS_KEY_ID": "AKIA-test-key",
                           "AWS_SECRET_ACCESS_KEY": "test-secret-value"}


def test_keys_in_the_conf_only_when_asked_and_then_redacted(cfg, jars) -> None:
    conf = spark_conf(cfg, jars=jars, keys=True)
    secret_keys = [k for k, v in conf.items() if v in ("AKIA-test-key", "test-secret-value")]
    assert sorted(secret_keys) == ["spark.hadoop.fs.s3a.access.key", "spark.hadoop.fs.s3a.secret.key"]
    assert conf["spark.hadoop.fs.s3a.aws.credentials.provider"] == CONF_PROVIDER
    pattern = re.compile(REDACTION_REGEX)
    assert all(pattern.search(k) for k in secret_keys)
    assert conf["spark.redaction.regex"] == REDACTION_REGEX
    assert not pattern.search("spark.hadoop.fs.s3a.endpoint")


def test_config_and_caller_settings_win(cfg, jars) -> None:
    conf = spark_conf(cfg, jars=jars, master="local[2]", extra={"spark.ui.enabled": "false"})
    assert conf["spark.sql.shuffle.partitions"] == "3"
    assert conf["spark.ui.enabled"] == "false"
    assert conf["spark.master"] == "local[2]"
    assert conf["spark.driver.host"] == "127.0.0.1"


def test_remote_master_does_not_pin_the_driver_to_loopback(cfg, jars) -> None:
    conf = spark_conf(cfg, jars=jars, master="k8s://https://kubernetes.default.svc")
    assert "spark.driver.host" not in conf


def test_jars_come_from_the_environment_when_not_given(cfg) -> None:
    env = {"DLPIPE_SPARK_JARS": os.pathsep.join(["/j/a.jar", "/j/b.jar"])}
    assert jars_from_env(env) == ["/j/a.jar", "/j/b.jar"]
    assert jars_from_env({"DLPIPE_SPARK_JARS": "/j/a.jar,/j/b.jar"}) == ["/j/a.jar", "/j/b.jar"]
    assert jars_from_env({}) == []
    conf = spark_conf(cfg, jars=[], master="local[2]")
    assert "spark.jars" not in conf and "spark.driver.extraClassPath" not in conf  # spark-submit --jars
