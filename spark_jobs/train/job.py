"""Train a CNN on an exported dataset with spark-tensorflow-distributor, resumable by run id.

Run with spark-submit (connector jars from ``dlpipe jars``)::

    spark-submit --master local[2] --jars "$(dlpipe jars)" spark_jobs/train/job.py \
        --config conf/pipeline.yaml --workers 2 [--run-id ID] [--dataset NAME] [--version N]

or as ``dlpipe train``. Each of ``--workers`` Spark barrier tasks runs one TensorFlow worker
(MultiWorkerMirroredStrategy); ``--workers 1`` trains in this process without Spark. Running
an existing run id again resumes from its last complete checkpoint on MinIO; a finished run
id prints its result and exits. The driver prints one line per epoch as the chief reports it.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dlpipe.core.args import add_config_args, config_from_args, run_main
from dlpipe.core.config import Config
from dlpipe.core.errors import DlpipeError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from dlpipe.datasets.manifest import Manifest
    from models.train import TrainSpec

log = logging.getLogger(__name__)


def make_spec(cfg: Config, manifest: Manifest, *, run_id: str, workers: int) -> TrainSpec:
    from models.train import TrainSpec

    t = cfg.training
    if workers < 1:
        raise DlpipeError("--workers must be at least 1")
    train_records = manifest.counts["train"]["records"]
    steps = train_records // t.batch_size
    if steps < 1:
        raise DlpipeError(f"the train split has {train_records} records, fewer than one global "
                          f"batch of {t.batch_size}", fix="lower training.batch_size")
    if len(manifest.shards_of("train")) < workers:
        raise DlpipeError(f"{manifest.uri} has {len(manifest.shards_of('train'))} train shards for "
                          f"{workers} workers",
                          fix=f"dlpipe export --overwrite --set training.workers={workers}")
    if t.batch_size % workers:
        raise DlpipeError(f"training.batch_size {t.batch_size} does not split evenly over {workers} workers")
    validation = manifest.counts["validation"]["records"]
    if 0 < validation < t.batch_size:
        log.warning(f"train: the validation split's {validation} records are fewer than one global batch "
                    f"of {t.batch_size}: no validation during training; the evaluation after training "
                    "covers every validation record")
    return TrainSpec(
        cfg=cfg, run_id=run_id, model_name=t.model_name, architecture=t.architecture,
        manifest_json=manifest.to_json(), workers=workers, epochs=t.epochs, global_batch=t.batch_size,
        learning_rate=t.learning_rate, steps_per_epoch=steps,
        validation_steps=manifest.counts["validation"]["records"] // t.batch_size,
        checkpoint_every_steps=t.checkpoint_every_steps, augment=t.augment,
        shuffle_buffer=t.shuffle_buffer, memory_cache_mb=t.memory_cache_mb, threads=t.threads,
        steps_per_execution=t.steps_per_execution,
        seed=t.seed, min_test_accuracy=t.min_test_accuracy,
        min_test_records=t.min_test_records, promotion_confidence=t.promotion_confidence,
        max_train_accuracy_gap=t.max_train_accuracy_gap, champion_margin=t.champion_margin,
        bn_recalibration_batches=t.bn_recalibration_batches,
    )


def _epoch_line(r: dict[str, Any], epochs: int) -> str:
    val = (f"  val_loss {r['val_loss']:.4f}  val_acc {r['val_accuracy']:.4f}"
           if "val_accuracy" in r else "")
    return (f"train: epoch {r['epoch'] + 1}/{epochs}  loss {r['loss']:.4f}  acc {r['accuracy']:.4f}"
            f"{val}  {r['images_per_s']:,.0f} img/s  step {r['step']}")


class _EpochReporter(threading.Thread):
    """Prints each epoch the chief records on the store, wherever the workers run."""

    def __init__(self, store: Any, epochs: int, already: int) -> None:
        super().__init__(daemon=True, name="epoch-reporter")
        self.store, self.epochs, self.printed = store, epochs, already
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(2.0):
            self.flush()

    def flush(self) -> None:
        try:
            records = self.store.metrics()
        except Exception:
            return
        for r in records[self.printed:]:
            log.info(_epoch_line(r, self.epochs))
        self.printed = max(self.printed, len(records))


def default_run_id(model_name: str) -> str:
    """The model, the start time and a random part: two runs started in the same second must
    not share a checkpoint folder (the second would resume the first)."""
    return f"{model_name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def pinned_manifest(client: Any, cfg: Config, store: Any, *, dataset: str | None,
                    version: int | None) -> Any:
    """The dataset a run trains on, pinned in its checkpoint folder at its first start: a
    resumed run keeps it (a newer export since does not change what it trains on) and refuses
    another one asked for, or one overwritten in place since (another export id)."""
    from dlpipe.datasets.manifest import open_manifest

    pinned = store.pinned_dataset()
    if pinned is None:
        manifest = open_manifest(client, cfg.buckets.datasets, dataset or cfg.export.dataset, version)
        store.pin_dataset({"dataset": manifest.dataset, "version": manifest.delta_version,
                           "export_id": manifest.export_id, "uri": manifest.uri})
        return manifest
    asked = (dataset or pinned["dataset"], pinned["version"] if version is None else version)
    if asked != (pinned["dataset"], pinned["version"]):
        raise DlpipeError(f"run {store.run_id} trains on {pinned['uri']} (pinned at its start); "
                          f"it cannot resume on {asked[0]} version {asked[1]}",
                          fix="drop --dataset/--version to resume it, or train under a new --run-id")
    manifest = open_manifest(client, cfg.buckets.datasets, pinned["dataset"], pinned["version"])
    if manifest.export_id != pinned["export_id"]:
        raise DlpipeError(f"{pinned['uri']} was exported again (--overwrite) since run "
                          f"{store.run_id} started on it: resuming would mix two datasets",
                          fix="train under a new --run-id")
    return manifest


def train(spark: SparkSession | None, cfg: Config, *, workers: int, run_id: str | None = None,
          dataset: str | None = None, version: int | None = None) -> dict[str, Any]:
    from dlpipe.core.s3 import s3_client
    from models.checkpoints import RunStore
    from models.train import train_worker

    client = s3_client(cfg)
    run_id = run_id or default_run_id(cfg.training.model_name)
    store = RunStore(client, cfg.buckets.checkpoints, run_id)
    finished = store.done()
    if finished is not None:
        log.info(f"train: run {run_id} already finished: version {finished['version']} "
                 f"({finished['model_uri']})")
        return finished
    latest = store.latest()
    if latest is not None:
        log.info(f"train: resuming run {run_id} from its checkpoint after epoch {latest['epoch'] + 1} "
                 f"(step {latest['step']})")
    manifest = pinned_manifest(client, cfg, store, dataset=dataset, version=version)
    spec = make_spec(cfg, manifest, run_id=run_id, workers=workers)
    log.info(f"train: run {run_id}: {spec.architecture} on {manifest.uri} (Delta v{manifest.delta_version}), "
             f"{workers} worker(s), {spec.epochs} epochs x {spec.steps_per_epoch} steps, global batch "
             f"{spec.global_batch}; checkpoints {store.uri}")
    reporter = _EpochReporter(store, spec.epochs, already=len(store.metrics()) if latest else 0)
    reporter.start()
    started = time.monotonic()
    try:
        if workers == 1:
            result = train_worker(spec)
        else:
            from spark_tensorflow_distributor import MirroredStrategyRunner

            if spark is None:
                raise DlpipeError("training with more than one worker needs a SparkSession")
            runner = MirroredStrategyRunner(num_slots=workers, local_mode=False,
                                            use_gpu=cfg.training.use_gpu, use_custom_strategy=True)
            result = runner.run(train_worker, spec=spec)
    finally:
        reporter.stop.set()
        reporter.flush()
    seconds = time.monotonic() - started
    log.info(f"train: {result['model_uri']} in {seconds:.0f}s; " + ", ".join(
             f"{split} acc {m['accuracy']:.4f}" for split, m in result["metrics"].items()))
    log.info(describe_decision(result))
    from dlpipe.registry.tracking import log_training

    log_training(cfg, client, result, epochs=store.metrics(), manifest=manifest)
    from dlpipe.core.telemetry import push_run_figures

    push_run_figures(cfg, "train", {
        "test_accuracy": result["test_accuracy"], "promoted": result["promoted"],
        "served": result.get("served", False), "version": result["version"], "seconds": seconds,
        "workers": workers, "last_success_timestamp_seconds": time.time()},
        labels={"model": cfg.training.model_name})
    check = result.get("export_check") or {}
    if check and not check["ok"]:
        raise DlpipeError(f"train: {check['reason']}; version {result['version']} was published but "
                          "not promoted",
                          fix="train longer (training.epochs) or with more data; raise "
                          "training.max_train_accuracy_gap only if the gap is expected")
    return result


def describe_decision(result: dict[str, Any]) -> str:
    """One line: promoted or not, and the evidence (records, accuracy, bound, bar)."""
    promotion = result.get("promotion")
    if promotion is None:  # a version trained before decisions were recorded
        return f"train: {'promoted' if result['promoted'] else 'not promoted'}"
    check = result.get("export_check") or {"ok": True}
    champion = result.get("champion") or {"ok": True, "reason": ""}
    if not promotion["promoted"]:
        why = promotion["reason"]
    elif not check["ok"]:
        why = check["reason"]
    elif not champion["ok"]:
        why = champion["reason"]
    else:
        why = "; ".join(r for r in (promotion["reason"], champion["reason"]) if r)
    served = ("" if not result["promoted"] or result.get("served", True)
              else " (another release came first: it is not served)")
    return f"train: {'promoted' if result['promoted'] else 'NOT promoted'}{served}: {why}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dlpipe train", description=__doc__.split("\n\n")[0])
    add_config_args(parser)
    parser.add_argument("--workers", type=int, default=None,
                        help="TensorFlow workers, one Spark barrier task each (default: training.workers)")
    parser.add_argument("--run-id", default=None,
                        help="name of the run; an existing one resumes (default: <model>-<UTC time>)")
    parser.add_argument("--dataset", default=None, help="dataset name (default: export.dataset)")
    parser.add_argument("--version", type=int, default=None,
                        help="dataset version, i.e. the Delta version exported (default: newest)")
    parser.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, *, spark: SparkSession | None = None) -> int:
    from dlpipe.core.config import with_overrides
    from dlpipe.core.session import get_spark

    args = parse_args(argv)
    cfg = config_from_args(args)
    if args.epochs is not None:
        cfg = with_overrides(cfg, {"training.epochs": args.epochs})
    workers = args.workers or cfg.training.workers
    session = None if workers == 1 else get_spark(cfg, app_name="dlpipe-train", spark=spark)
    train(session, cfg, workers=workers, run_id=args.run_id, dataset=args.dataset, version=args.version)
    return 0


if __name__ == "__main__":
    run_main(main, prog="train")
