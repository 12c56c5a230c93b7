"""``dlpipe demo``: what a new user runs first, on the local stack, end to end so far.

stack up -> produce the scikit-learn digits with bad records of every kind and some
duplicates -> ingest them into clean and quarantine Delta tables on MinIO -> export the
clean table's latest version as TFRecord shards with a manifest -> train the CNN on 2
workers (Spark barrier tasks) and export a versioned SavedModel -> summary. Later stages
(serve, score) join as they are built. Running it again sends the same ids again,
which ingest then counts as duplicates: nothing is written twice, and an already exported
version is not exported again, nor is a model trained twice on it (the run id names it).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from dlpipe.config import Config
from dlpipe.progress import say, step


def run(cfg: Config, *, cluster: bool = False, count: int = 1797) -> int:
    from dlpipe.install import install_all
    from dlpipe.produce import plan_messages, produce
    from dlpipe.records import BAD_KINDS
    from dlpipe.session import get_spark
    from dlpipe.sources import digits
    from dlpipe.stack.stack import Stack
    from spark_jobs.export import job as export_job
    from spark_jobs.ingest import job
    from spark_jobs.train import job as train_job

    started = time.monotonic()
    install_all()
    cfg = Stack.from_config(cfg).up(cluster=cluster).cfg
    log = cfg.stack.state_dir / "demo-produced.jsonl"
    with step(f"producing {count} digits (5% bad records of {len(BAD_KINDS)} kinds, 2% duplicates)"):
        messages = plan_messages(
            digits(), count=count, prefix="digits", source="sklearn-digits", now=datetime.now(UTC),
            bad_fraction=0.05, bad_kinds=list(BAD_KINDS), duplicate_fraction=0.02,
            schema_version=1, watermark_delay_s=cfg.ingest.watermark_delay_s,
        )
        report = produce(cfg, messages, count=count, rate=0, log_path=log)
    with step("starting Spark"):
        spark = get_spark(cfg, app_name="dlpipe-demo", master="cluster" if cluster else None)
    with step("ingesting Kafka -> clean + quarantine Delta tables on MinIO"):
        job.run(spark, cfg, once=True)
    with step("exporting the clean table -> TFRecord shards + manifest on MinIO"):
        manifest = export_job.export(spark, cfg)
    with step(f"training {cfg.training.architecture} CNN on {cfg.training.workers} workers"):
        model = train_job.train(spark, cfg, workers=cfg.training.workers,
                                run_id=f"demo-{manifest.dataset}-v{manifest.delta_version}")
    say(f"\nproduced {report.sent:,} messages ({dict(report.by_kind)}); log: {log}")
    say(f"clean table:      {cfg.tables.clean}")
    say(f"quarantine table: {cfg.tables.quarantine}")
    say(f"training dataset: {manifest.uri} (Delta version {manifest.delta_version})")
    say(f"model:            {model['model_uri']} (test accuracy {model['test_accuracy']:.4f}, "
        f"{'promoted' if model['promoted'] else 'not promoted'})")
    say(f"demo finished in {time.monotonic() - started:.0f}s; the stack keeps running "
        "(`dlpipe stack status`, `dlpipe stack down`). `dlpipe smoke` checks Spark, Delta, "
        "Kafka and 2-worker TensorFlow training on it.")
    return 0
