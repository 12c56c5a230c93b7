"""Spark with its real connectors against the real stack: Delta/s3a, Kafka, committer, TF."""

from __future__ import annotations

import json
import urllib.request
import uuid

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


def test_s3_credentials_are_redacted_in_the_spark_ui(spark, cfg) -> None:
    key, secret = cfg.s3_credentials()
    ui = spark.sparkContext.uiWebUrl
    assert ui, "the test session runs with its UI on"
    api = ui.rstrip("/") + "/api/v1/applications"
    with urllib.request.urlopen(api, timeout=10) as resp:
        app_id = json.load(resp)[0]["id"]
    with urllib.request.urlopen(f"{api}/{app_id}/environment", timeout=10) as resp:
        body = resp.read().decode()
    assert "fs.s3a.secret.key" in body and "fs.s3a.access.key" in body
    assert secret not in body
    assert key not in body


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
