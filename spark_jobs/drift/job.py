"""Drift: do live inputs and predictions still look like the served version's training data?

Run with spark-submit (connector jars from ``dlpipe jars``)::

    spark-submit --master local[2] --jars "$(dlpipe jars)" spark_jobs/drift/job.py \
        [--model NAME] [--fail-on-drift]

or as ``dlpipe drift``. First the requests ``dlpipe serve`` sampled (``serving.sample_rate``)
are landed from ``kafka.topics.samples`` into ``tables.served_samples`` (an availableNow
streaming query: exactly once, whatever was landed before is not read again). Then the last
``drift.window_hours`` of samples of the model are compared with ``drift.training_sample``
rows of the Delta version its served version was trained on: the grey-level mean and spread
of the images, and the predicted classes against the training labels, each as a population
stability index (``spark_jobs/drift/compare.py``). The verdict goes to an HTML report (local
and in the reports bucket) and to Prometheus (``dlpipe_drift_psi``, ``dlpipe_drift_flagged``),
where the alert ``DlpipeDriftDetected`` watches it.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from dlpipe.core.args import add_config_args, config_from_args, run_main
from dlpipe.core.config import Config
from dlpipe.core.errors import DlpipeError
from spark_jobs.drift.compare import DriftReport, compare

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def land_samples(spark: SparkSession, cfg: Config) -> int:
    """Append the samples not landed yet to ``tables.served_samples``; returns how many."""
    from dlpipe.core.kafka import require_topic
    from spark_jobs.drift.transforms import sample_rows

    require_topic(cfg, cfg.samples_topic)
    source = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", cfg.kafka_bootstrap_servers)
              .option("subscribe", cfg.samples_topic).option("startingOffsets", "earliest")
              .option("failOnDataLoss", "false").load())  # samples: a gap is no loss of record
    query = (sample_rows(source).writeStream.format("delta").outputMode("append")
             .option("checkpointLocation", cfg.drift.checkpoint).trigger(availableNow=True)
             .start(cfg.tables.served_samples))
    query.awaitTermination()
    if query.exception() is not None:
        raise RuntimeError(f"landing the request samples failed: {query.exception()}")
    return sum(int(p.get("numInputRows", 0)) for p in query.recentProgress)


def reference(spark: SparkSession, cfg: Config, info: dict[str, Any]) -> dict[str, list]:
    """Statistics of up to ``drift.training_sample`` rows of the served version's training data."""
    from pyspark.sql import functions as F

    from spark_jobs.drift.transforms import image_stats

    table = spark.read.format("delta").option("versionAsOf", int(info["delta_version"])) \
        .load(info["delta_table"])
    rows = table.count()
    fraction = min(1.0, 1.2 * cfg.drift.training_sample / max(rows, 1))
    picked = (table.sample(fraction=fraction, seed=0).limit(cfg.drift.training_sample)
              .select(image_stats(F.col("image_png")).alias("s"), F.col("label"))
              .select("s.mean", "s.std", "label").toPandas())
    return {c: picked[c].tolist() for c in ("mean", "std", "label")}


def live(spark: SparkSession, cfg: Config, model: str, now: datetime) -> dict[str, list]:
    from pyspark.sql import functions as F

    from dlpipe.core.delta_io import table_exists

    if not table_exists(spark, cfg.tables.served_samples):  # nothing sampled yet, ever
        return {"mean": [], "std": [], "label": []}
    since = now - timedelta(hours=cfg.drift.window_hours)
    rows = (spark.read.format("delta").load(cfg.tables.served_samples)
            .where((F.col("model") == model) & (F.col("served_at") >= F.lit(since.replace(tzinfo=None)))
                   & F.col("mean").isNotNull())
            .select("mean", "std", F.col("class_name").alias("label")).toPandas())
    return {c: rows[c].tolist() for c in ("mean", "std", "label")}


def drift(spark: SparkSession, cfg: Config, *, model: str | None = None) -> DriftReport:
    from dlpipe.core.s3 import s3_client
    from dlpipe.registry.release import served_version
    from dlpipe.registry.store import read_info

    model = model or cfg.training.model_name
    landed = land_samples(spark, cfg)
    log.info(f"drift: {landed:,} new request sample(s) landed in {cfg.tables.served_samples}")
    client = s3_client(cfg)
    served = served_version(client, cfg.buckets.models, model)
    if served is None:
        raise DlpipeError(f"model {model!r} has no served version to compare live data with",
                          fix=f"dlpipe train, or dlpipe models promote VERSION --model {model}")
    info = read_info(client, cfg.buckets.models, model, served.version) or {}
    if "delta_version" not in info:
        raise DlpipeError(f"{model} version {served.version} records no training data (no "
                          "delta_table/delta_version in its dlpipe-model.json)",
                          fix="serve a version trained by dlpipe train")
    current = live(spark, cfg, model, datetime.now(UTC))
    enough = len(current["label"]) >= cfg.drift.min_samples  # else no verdict: skip the training read
    training = reference(spark, cfg, info) if enough else {"mean": [], "std": [], "label": []}
    report = compare(model, served.version, training, current, bins=cfg.drift.bins,
                     threshold=cfg.drift.psi_threshold, min_samples=cfg.drift.min_samples)
    _publish(cfg, report)
    return report


def _publish(cfg: Config, report: DriftReport) -> None:
    """The verdict as an HTML report (local and in the reports bucket) and as metrics."""
    from dlpipe.core.s3 import s3_client
    from dlpipe.core.telemetry import push_run_figures
    from spark_jobs.drift.report import render

    html, stamp = render(report), time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    local = cfg.stack.state_dir.parent / "reports" / f"drift-{report.model}-{stamp}.html"
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text(html)
    key = f"drift/{report.model}/{stamp}.html"
    s3_client(cfg).put_object(Bucket=cfg.buckets.reports, Key=key, Body=html.encode(),
                              ContentType="text/html")
    log.info(f"drift: report {local} and s3://{cfg.buckets.reports}/{key}")
    figures: dict[str, float] = {"samples": report.samples, "flagged": float(bool(report.flagged)),
                                 "last_run_timestamp_seconds": time.time()}
    push_run_figures(cfg, "drift", figures, labels={"model": report.model})
    for feature, value in report.psi.items():
        push_run_figures(cfg, "drift", {"psi": value}, labels={"model": report.model,
                                                               "feature": feature})


def describe(report: DriftReport) -> str:
    if not report.psi:
        return (f"drift: {report.model}: no verdict: {report.reason} (sample requests with "
                "serving.sample_rate > 0 on dlpipe serve)")
    scores = ", ".join(f"{k} {v:.3f}" for k, v in report.psi.items())
    verdict = (f"DRIFT in {', '.join(report.flagged)}" if report.flagged else "no drift")
    return (f"drift: {report.model} v{report.version}: {verdict} (PSI {scores}; threshold "
            f"{report.threshold}; {report.samples:,} live samples vs {report.reference_rows:,} "
            "training rows)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dlpipe drift", description=__doc__.split("\n\n")[0])
    add_config_args(parser)
    parser.add_argument("--model", help="default: training.model_name")
    parser.add_argument("--fail-on-drift", action="store_true",
                        help="exit 3 when drift is flagged (for schedulers)")
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, *, spark: SparkSession | None = None) -> int:
    from dlpipe.core.session import get_spark

    args = parse_args(argv)
    cfg = config_from_args(args)
    session = get_spark(cfg, app_name="dlpipe-drift", spark=spark)
    report = drift(session, cfg, model=args.model)
    print(json.dumps(report.as_dict()) if args.json else describe(report))
    return 3 if args.fail_on_drift and report.flagged else 0


if __name__ == "__main__":
    run_main(main, prog="drift")
