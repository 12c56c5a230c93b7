"""Spark with its real connectors against the real stack: Delta/s3a, Kafka, committer, TF."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

from spark_jobs.smoke.job import check_delta, check_kafka, check_training
from tests.helpers import read_delta_with_delta_rs

pytestmark = pytest.mark.integration


def test_delta_on_s3a_is_a_valid_delta_table_for_delta_rs(spark, cfg) -> None:
    result = check_delta(spark, cfg, rows=500)
    table = read_delta_with_delta_rs(cfg, result["path"])
    assert table.version() == 1
    assert table.to_pyarrow_table().num_rows == 1000
    v0 = read_delta_with_delta_rs(cfg, result["path"], version=0).to_pyarrow_table()
    assert sorted(v0.column("id").to_pylist()) == list(range(500))


def test_kafka_sink_and_source_through_spark(spark, cfg) -> None:
    assert check_kafka(spark, cfg, messages=50)["messages"] == 50


def test_records_from_a_plain_kafka_producer_reach_spark(spark, cfg) -> None:
    from confluent_kafka import Producer

    topic = cfg.kafka.topics["smoke"].name
    run = uuid.uuid4().hex
    producer = Producer({"bootstrap.servers": cfg.kafka_bootstrap_servers, "acks": "all",
                         "enable.idempotence": True})
    for i in range(20):
        producer.produce(topic, key=f"{run}-{i}", value=json.dumps({"i": i}))
    assert producer.flush(30) == 0
    rows = (spark.read.format("kafka").option("kafka.bootstrap.servers", cfg.kafka_bootstrap_servers)
            .option("subscribe", topic).option("startingOffsets", "earliest").load()
            .selectExpr("cast(key AS string) k", "cast(value AS string) v")
            .where(f"k LIKE '{run}-%'").collect())
    assert sorted(json.loads(r.v)["i"] for r in rows) == list(range(20))


def test_plain_file_output_is_committed_by_the_magic_committer(spark, cfg) -> None:
    from dlpipe.core.s3 import s3_client

    prefix = f"_smoke/json/{uuid.uuid4().hex}"
    spark.range(10).write.json(f"s3a://{cfg.buckets.lake}/{prefix}")
    success = s3_client(cfg).get_object(Bucket=cfg.buckets.lake, Key=f"{prefix}/_SUCCESS")
    manifest = json.loads(success["Body"].read())
    assert manifest["committer"] == "magic"
    assert spark.read.json(f"s3a://{cfg.buckets.lake}/{prefix}").count() == 10


def test_s3_keys_are_not_in_the_spark_conf_nor_the_ui(spark, cfg) -> None:
    """Issue 16: S3A reads the keys from the JVM's environment; SparkConf (which an executor
    that registers with the driver receives) and the UI's environment page never hold them.
    The other tests of this file read and write s3a with them. (Task broadcasts of the Hadoop
    conf still carry them, as they did: an untrusted network needs spark.authenticate.)"""
    key, secret = cfg.s3_credentials()
    conf = dict(spark.sparkContext.getConf().getAll())
    assert not [k for k, v in conf.items() if key in v or secret in v]
    assert conf["spark.hadoop.fs.s3a.aws.credentials.provider"].endswith(
        "EnvironmentVariableCredentialsProvider")
    ui = spark.sparkContext.uiWebUrl
    assert ui, "the test session runs with its UI on"
    api = ui.rstrip("/") + "/api/v1/applications"
    with urllib.request.urlopen(api, timeout=10) as resp:
        app_id = json.load(resp)[0]["id"]
    with urllib.request.urlopen(f"{api}/{app_id}/environment", timeout=10) as resp:
        body = resp.read().decode()
    assert "fs.s3a.aws.credentials.provider" in body
    assert secret not in body and key not in body
    # Spark copies AWS_* from the JVM's environment into its Hadoop conf (not SparkConf):
    # shown there, redacted
    hadoop = dict(json.loads(body)["hadoopProperties"])
    assert all(hadoop.get(k, "*********(redacted)") == "*********(redacted)"
               for k in ("fs.s3a.access.key", "fs.s3a.secret.key")), hadoop
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(os.environ), \
        "the keys went to the JVM at its launch only, not into this process for good"


def test_a_job_writes_s3a_with_the_secret_in_no_log_and_no_event_log(cfg, test_env, tmp_path) -> None:
    """Issue 16, the sentinel: the store's real secret (what MinIO checks) is absent from a
    CLI job's whole output and from its Spark event log, while the job writes Delta on s3a."""
    key, secret = cfg.s3_credentials()
    events = tmp_path / "events"
    events.mkdir()
    env = {k: v for k, v in test_env.items() if not k.startswith("AWS_")}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dlpipe"), "smoke", "--steps", "delta",
         "--set=spark.conf.spark.eventLog.enabled='true'",
         "--set=spark.conf.spark.eventLog.compress='false'",
         f"--set=spark.conf.spark.eventLog.dir=file://{events}"],
        env=env, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    logs = [p for p in events.rglob("*") if p.is_file()]
    assert logs, "the event log was written"
    text = "".join(p.read_text(errors="replace") for p in logs)
    assert "SparkListenerEnvironmentUpdate" in text and "fs.s3a.endpoint" in text
    for found in (out, text):
        assert secret not in found and key not in found


def test_spark_tensorflow_distributor_trains_on_two_workers(spark) -> None:
    result = check_training(spark, workers=2)
    assert result["workers"] == 2
    assert result["replicas_in_sync"] == 2
    assert result["keras_module"] == "tf_keras"
    assert result["final_accuracy"] > 0.8


def test_jobs_reuse_an_existing_session_as_in_a_notebook(spark, cfg) -> None:
    from dlpipe.core.session import get_spark

    assert get_spark(cfg) is spark
    assert get_spark(cfg, spark=spark) is spark
    hconf = spark.sparkContext._jsc.hadoopConfiguration()
    assert hconf.get("fs.s3a.endpoint") == cfg.s3_endpoint
