"""Smoke check of the stack through Spark: Delta on s3a, Kafka via spark-sql-kafka, TF training.

Run with spark-submit (the connector jars come from ``dlpipe jars``)::

    spark-submit --master local[2] --jars "$(dlpipe jars)" spark_jobs/smoke/job.py \
        --config conf/pipeline.yaml --steps delta,kafka,train

or as ``dlpipe smoke``. Each step writes and reads back real data and fails loudly when the
result differs from what it wrote.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dlpipe.core.args import add_config_args, config_from_args, run_main
from dlpipe.core.config import Config
from dlpipe.core.progress import step

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

STEPS = ("delta", "kafka", "train")


def check_delta(spark: SparkSession, cfg: Config, *, rows: int = 1000) -> dict[str, Any]:
    """Write a Delta table to s3a twice (overwrite, append) and read both versions back."""
    path = f"s3a://{cfg.buckets.lake}/_smoke/delta/{uuid.uuid4().hex}"
    df = spark.range(rows).selectExpr("id", "id % 10 AS label", "cast(id AS string) AS name")
    df.write.format("delta").mode("overwrite").save(path)
    df.write.format("delta").mode("append").save(path)
    latest = spark.read.format("delta").load(path)
    first = spark.read.format("delta").option("versionAsOf", 0).load(path)
    got = {"latest_rows": latest.count(), "v0_rows": first.count(),
           "label_sum": latest.agg({"label": "sum"}).first()[0]}
    want = {"latest_rows": 2 * rows, "v0_rows": rows,
            "label_sum": 2 * sum(i % 10 for i in range(rows))}
    if got != want:
        raise AssertionError(f"Delta round trip on {path}: got {got}, want {want}")
    return {"path": path, **got}


def check_kafka(spark: SparkSession, cfg: Config, *, messages: int = 100) -> dict[str, Any]:
    """Produce through Spark's Kafka sink and read the same messages back with its source."""
    from dlpipe.core.kafka import require_topic

    topic = cfg.kafka.topics["smoke"].name
    require_topic(cfg, topic)
    run = uuid.uuid4().hex
    servers = cfg.kafka_bootstrap_servers
    (spark.range(messages)
     .selectExpr(f"concat('{run}-', id) AS key", "cast(id * 7 AS string) AS value")
     .write.format("kafka").option("kafka.bootstrap.servers", servers).option("topic", topic)
     .save())
    back = (spark.read.format("kafka").option("kafka.bootstrap.servers", servers)
            .option("subscribe", topic).option("startingOffsets", "earliest").load()
            .selectExpr("cast(key AS string) AS key", "cast(value AS string) AS value")
            .where(f"key LIKE '{run}-%'"))
    got = {r.key: int(r.value) for r in back.collect()}
    want = {f"{run}-{i}": i * 7 for i in range(messages)}
    if got != want:
        raise AssertionError(f"Kafka round trip on {topic}: {len(got)} of {messages} came back")
    return {"topic": topic, "messages": len(got)}


def check_training(spark: SparkSession, *, workers: int = 2) -> dict[str, Any]:
    """Train the tiny model with spark-tensorflow-distributor on ``workers`` barrier tasks."""
    from spark_tensorflow_distributor import MirroredStrategyRunner

    from models.tiny import train_tiny

    runner = MirroredStrategyRunner(
        num_slots=workers, local_mode=False, use_gpu=False, use_custom_strategy=True
    )
    result = runner.run(train_tiny)
    if result["workers"] != workers or result["keras_module"] != "tf_keras":
        raise AssertionError(f"distributed training did not run as asked: {result}")
    return result


def run(spark: SparkSession, cfg: Config, steps: Sequence[str]) -> dict[str, Any]:
    checks = {
        "delta": lambda: check_delta(spark, cfg),
        "kafka": lambda: check_kafka(spark, cfg),
        "train": lambda: check_training(spark),
    }
    results: dict[str, Any] = {}
    for name in steps:
        with step(f"smoke: {name}"):
            started = time.monotonic()
            results[name] = {**checks[name](), "seconds": round(time.monotonic() - started, 1)}
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_args(parser)
    parser.add_argument("--steps", default=",".join(STEPS),
                        help="comma-separated subset of " + ",".join(STEPS))
    args = parser.parse_args(argv)
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(args.steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    return args


def main(argv: Sequence[str] | None = None, *, spark: SparkSession | None = None) -> int:
    from dlpipe.core.session import get_spark

    args = parse_args(argv)
    cfg = config_from_args(args)
    # Barrier tasks need one slot per TF worker; local[*] on a 2-core machine has two.
    session = get_spark(cfg, app_name="dlpipe-smoke", spark=spark)
    print(json.dumps(run(session, cfg, args.steps), indent=2))
    return 0


if __name__ == "__main__":
    run_main(main, prog="smoke")
