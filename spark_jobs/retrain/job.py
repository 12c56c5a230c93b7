"""Scheduled retraining: export the clean table's latest version, then train on exactly it.

Run with spark-submit (connector jars from ``dlpipe jars``), e.g. as the Kubernetes
``ScheduledSparkApplication`` of the Helm chart::

    spark-submit --master local[2] --jars "$(dlpipe jars)" spark_jobs/retrain/job.py \
        --config conf/pipeline.yaml [--dataset NAME] [--workers N] [--epochs E]

One SparkSession runs both steps. The run id is ``retrain-<dataset>-v<delta version>``, so
a schedule firing again with no new data exports nothing new and trains nothing twice (an
existing version's manifest is kept; a finished run id is not trained again), and a run
killed mid-training resumes from its last checkpoint on the next firing.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dlpipe.core.args import add_config_args, config_from_args, run_main

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dlpipe retrain", description=__doc__.split("\n\n")[0])
    add_config_args(parser)
    parser.add_argument("--dataset", help="dataset name (default: export.dataset)")
    parser.add_argument("--workers", type=int, help="TensorFlow workers (default: training.workers)")
    parser.add_argument("--epochs", type=int, help="epochs (default: training.epochs)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, *, spark: SparkSession | None = None) -> int:
    from dlpipe.core.config import with_overrides
    from dlpipe.core.session import get_spark
    from spark_jobs.export import job as export_job
    from spark_jobs.train import job as train_job

    args = parse_args(argv)
    cfg = config_from_args(args)
    if args.epochs is not None:
        cfg = with_overrides(cfg, {"training.epochs": args.epochs})
    session = get_spark(cfg, app_name="dlpipe-retrain", spark=spark)
    manifest = export_job.export(session, cfg, dataset=args.dataset)
    workers = args.workers or cfg.training.workers
    model = train_job.train(session, cfg, workers=workers, dataset=manifest.dataset,
                            version=manifest.delta_version,
                            run_id=f"retrain-{manifest.dataset}-v{manifest.delta_version}")
    log.info(f"retrain: {manifest.uri} -> {model['model_uri']} (test accuracy "
             f"{model['test_accuracy']:.4f}, {'promoted' if model['promoted'] else 'not promoted'})")
    return 0


if __name__ == "__main__":
    run_main(main, prog="retrain")
