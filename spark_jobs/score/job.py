"""Batch scoring: the clean Delta table -> the predictions Delta table, with one model version.

Run with spark-submit (connector jars from ``dlpipe jars``)::

    spark-submit --master local[2] --jars "$(dlpipe jars)" spark_jobs/score/job.py \
        --config conf/pipeline.yaml [--model NAME] [--version V] [--all]

or as ``dlpipe score``. Without ``--version`` the model's serving version (newest promoted)
scores. By default only rows this version has not scored yet are scored (an anti-join with
the table, then an append); ``--all`` scores every row again and replaces their predictions
(a Delta MERGE on the key). Either way the table holds at most one row per (id, model,
version), so a re-run adds nothing twice. One scoring runs at a time per predictions table:
a second ``dlpipe score`` fails at start naming the first (a lease next to the table,
``dlpipe/core/lease.py``).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dlpipe.core.args import add_config_args, config_from_args, run_main
from dlpipe.core.config import Config
from dlpipe.core.delta_io import table_exists
from dlpipe.core.errors import DlpipeError
from dlpipe.core.progress import step
from dlpipe.core.session import session_conf
from spark_jobs.score import marks
from spark_jobs.score.transforms import (
    merge_condition,
    of_version,
    output_type,
    predictions_schema,
    to_predictions,
    unscored,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

ARROW_BATCH_ROWS = "spark.sql.execution.arrow.maxRecordsPerBatch"


@dataclass(frozen=True)
class ScoreReport:
    model: str
    version: int
    table: str
    scored: int           # rows inserted or replaced by this run
    total: int            # rows of this version in the table afterwards
    seconds: float

    @property
    def rate(self) -> float:
        return self.scored / self.seconds if self.seconds else 0.0


def resolve_version(cfg: Config, model: str, version: int | None) -> int:
    from dlpipe.core.s3 import check_name, s3_client
    from dlpipe.registry.release import serving_version
    from dlpipe.registry.store import read_info

    check_name("model", model)
    client = s3_client(cfg)
    if version is None:
        version = serving_version(client, cfg.buckets.models, model)
        if version is None:
            raise DlpipeError(f"model {model!r} has no promoted version in s3://{cfg.buckets.models}/",
                              fix="train one (`dlpipe train`), or pass --version N to score an "
                                  "unpromoted one (`dlpipe models list`)")
    elif read_info(client, cfg.buckets.models, model, version) is None:
        raise DlpipeError(f"model {model!r} has no complete version {version}",
                          fix="see `dlpipe models list` for the versions there are")
    return version


def ensure_table(spark: SparkSession, cfg: Config, path: str) -> None:
    """Create the predictions table on first use, keeping marks of the versions it holds
    (``marks``). ``createIfNotExists`` resolves and checks the whole definition even when the
    table is there, so an existing table is only looked up."""
    from delta.tables import DeltaTable

    if table_exists(spark, path):
        return
    (DeltaTable.createIfNotExists(spark).location(path)
     .addColumns(predictions_schema()).partitionedBy("model_name").execute())
    marks.keep_marks(cfg, path)


def score(spark: SparkSession, cfg: Config, *, model: str | None = None, version: int | None = None,
          rescore: bool = False) -> ScoreReport:
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import functions as F

    from models.scoring import make_predict_fn

    model = model or cfg.scoring.model or cfg.training.model_name
    version = resolve_version(cfg, model, version)
    table = cfg.tables.predictions
    started = time.monotonic()
    if not table_exists(spark, cfg.tables.clean):
        raise DlpipeError(f"there is no clean table to score at {cfg.tables.clean}",
                          fix="dlpipe ingest --once (or set tables.clean to the table to score)")
    ensure_table(spark, cfg, table)
    rows = spark.read.format("delta").load(cfg.tables.clean).select("id", F.col("image_png").alias("image"))
    if not rescore and (done := _scored_by(spark, cfg, table, model=model, version=version)) is not None:
        rows = unscored(rows, done, model=model, version=version)
    udf = predict_batch_udf(
        make_predict_fn(cfg, model=model, version=version, threads=cfg.scoring.tf_threads),
        return_type=output_type(), batch_size=cfg.scoring.batch_size)
    predictions = to_predictions(rows, udf("image"), model=model, version=version,
                                 scored_at=F.current_timestamp())
    what = " (every row again)" if rescore else " (rows not scored yet)"
    with step(f"scoring the clean table with {model} version {version}{what}"), \
            session_conf(spark, ARROW_BATCH_ROWS, str(cfg.scoring.arrow_batch_rows)):
        marks.mark(cfg, table, model=model, version=version)  # before any row of it is written
        scored = (_replace(spark, predictions, table, model) if rescore
                  else _append(predictions, table))
    seconds = time.monotonic() - started
    total = of_version(spark.read.format("delta").load(table), model=model, version=version).count()
    return ScoreReport(model, version, table, scored, total, seconds)


def _scored_by(spark: SparkSession, cfg: Config, table: str, *, model: str, version: int
               ) -> DataFrame | None:
    """This version's rows of the predictions table, or None when it has none yet.

    A version's first run (the usual one: a new version scores the whole table) then skips the
    anti-join. The version's mark (``marks``) answers in 0.012 s, without the 0.49 s Spark job
    (30k rows: the run took 4.96 s against 5.31 s, medians of 4 warm runs). A table without marks is
    asked with one ``limit(1)`` over the model's partition (Delta's file statistics on
    ``model_version`` skip other versions' files).
    """
    hint = marks.may_have_rows(cfg, table, model=model, version=version)
    if hint is False:
        return None
    done = of_version(spark.read.format("delta").load(table), model=model, version=version)
    return done if hint else (None if done.isEmpty() else done)


def _append(predictions: DataFrame, table: str) -> int:
    """New rows only (``unscored`` left out what this version scored): a plain append, one
    pass with no join against the table. The lease keeps a second scoring out, so nothing
    can score the same rows between the anti-join and this commit. Rows written: counted in
    the same pass (an Observation; an empty append leaves no commit to ask)."""
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    written = Observation("scored")
    predictions.observe(written, F.count(F.lit(1)).alias("rows")).write.format("delta") \
        .mode("append").save(table)
    return int(written.get["rows"])


def _replace(spark: SparkSession, predictions: DataFrame, table: str, model: str) -> int:
    """Every row again (``--all``): a MERGE on the key replaces this version's earlier rows."""
    from delta.tables import DeltaTable

    target = DeltaTable.forPath(spark, table)
    merge = target.alias("t").merge(predictions.alias("s"), merge_condition(model=model))
    metrics = merge.whenMatchedUpdateAll().whenNotMatchedInsertAll().execute().collect()[0]
    return metrics["num_inserted_rows"] + metrics["num_updated_rows"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dlpipe score", description=__doc__.split("\n")[0])
    add_config_args(parser)
    parser.add_argument("--model", help="model name (default: scoring.model, else training.model_name)")
    parser.add_argument("--version", type=int, help="model version (default: the serving version)")
    parser.add_argument("--all", action="store_true", dest="rescore",
                        help="score every row again, replacing this version's predictions")
    return parser.parse_args(argv)


def run(spark: SparkSession | None, cfg: Config, *, model: str | None = None, version: int | None = None,
        rescore: bool = False) -> ScoreReport:
    """What ``dlpipe score`` does once it has a config: score under the predictions table's
    lease, log the outcome and push the run figures (a batch job has no /metrics to scrape)."""
    from dlpipe.core.lease import path_lease
    from dlpipe.core.session import get_spark
    from dlpipe.core.telemetry import push_run_figures

    # One scoring at a time per predictions table, taken before the session so a second run
    # fails in a second: concurrent MERGEs conflict, and on S3 Delta's single-driver log
    # store can lose one of two commits.
    with path_lease(cfg, cfg.tables.predictions, owner=f"score {model or 'default'}",
                    ttl_s=cfg.s3.lease_ttl_s):
        session = get_spark(cfg, app_name="dlpipe-score", spark=spark)
        report = score(session, cfg, model=model, version=version, rescore=rescore)
    log.info(f"{report.scored:,} rows scored in {report.seconds:.1f}s ({report.rate:,.0f} rows/s); "
             f"{report.total:,} predictions of {report.model} v{report.version} in {report.table}")
    push_run_figures(cfg, "score", {
        "rows": report.scored, "seconds": report.seconds, "rows_per_second": report.rate,
        "model_version": report.version, "last_success_timestamp_seconds": time.time()},
        labels={"model": report.model})
    return report


def main(argv: Sequence[str] | None = None, *, spark: SparkSession | None = None) -> int:
    args = parse_args(argv)
    run(spark, config_from_args(args), model=args.model, version=args.version, rescore=args.rescore)
    return 0


if __name__ == "__main__":
    run_main(main, prog="score")
