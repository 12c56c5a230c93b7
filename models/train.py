"""What each Spark barrier task runs: one TensorFlow worker of a multi-worker training run.

``train_worker`` is handed to spark-tensorflow-distributor's ``MirroredStrategyRunner``
(``use_custom_strategy=True``), which sets ``TF_CONFIG`` for each task; with one worker it
runs in the calling process. Every worker reads its own shards from the store, restores the
run's latest checkpoint if there is one, and trains under ``MultiWorkerMirroredStrategy``;
the chief mirrors checkpoints, metrics and TensorBoard files to the store each epoch and,
at the end, evaluates, exports and publishes the model. TensorFlow is imported here, on the
workers, never on the driver.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dlpipe.core.config import Config


@dataclass(frozen=True)
class TrainSpec:
    """Everything a worker needs, pickled to the barrier tasks (no credentials in it)."""

    cfg: Config
    run_id: str
    model_name: str
    architecture: str
    manifest_json: str
    workers: int
    epochs: int
    global_batch: int
    learning_rate: float
    steps_per_epoch: int
    validation_steps: int
    checkpoint_every_steps: int = 0
    augment: bool = False
    shuffle_buffer: int = 10_000
    memory_cache_mb: int = 0
    threads: int = 0
    steps_per_execution: int = 1
    seed: int = 0
    min_test_accuracy: float = 0.0
    min_test_records: int = 0
    promotion_confidence: float = 0.95
    max_train_accuracy_gap: float = 0.05
    champion_margin: float = 0.0
    bn_recalibration_batches: int = 100


def _tf_config() -> dict[str, Any]:
    """The cluster and task the runner set for this worker; empty for a single worker."""
    return json.loads(os.environ.get("TF_CONFIG", "{}"))


def _task_index() -> int:
    return int(_tf_config().get("task", {}).get("index", 0))


def workers_on_this_host() -> int:
    """TensorFlow workers of this run that share this worker's host (from ``TF_CONFIG``)."""
    tf_config = _tf_config()
    workers = tf_config.get("cluster", {}).get("worker", [])
    if not workers:
        return 1
    mine = workers[int(tf_config.get("task", {}).get("index", 0))].rsplit(":", 1)[0]
    return sum(1 for w in workers if w.rsplit(":", 1)[0] == mine)


def steps_per_execution(configured: int, checkpoint_every_steps: int) -> int:
    """Training steps per call into the compiled step function (fewer host round trips, and
    fewer cross-worker syncs of them; +7% images/s for 2 workers at 4). Step checkpoints must
    still fall on a call's end, so with them it is the largest divisor both share."""
    return math.gcd(configured, checkpoint_every_steps) if checkpoint_every_steps else configured


def worker_threads(configured: int) -> int:
    """TensorFlow's intra- and inter-op threads for this worker: ``training.threads`` when set,
    else this host's usable cores split evenly among the run's workers on it (two workers on
    two cores each starting two busy threads lost ~9% to contention)."""
    from dlpipe.core.cpus import available_cpus, share_of

    return configured or share_of(available_cpus(), workers_on_this_host())


def train_worker(spec: TrainSpec) -> dict[str, Any]:
    """Train in a fresh child process and return its result.

    Spark reuses Python workers, and TensorFlow configures collective ops once per process:
    a second run in a reused worker fails with "Collective ops are already configured". A
    spawned child (which inherits ``TF_CONFIG``) also takes TensorFlow's memory and gRPC
    server away with it when training ends. If the child dies, this raises; if this worker
    dies (Spark kills a failed barrier task's Python worker alone), the child dies with it.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from dlpipe.core.process import die_with_parent

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        return pool.submit(_train, spec).result()


def _train(spec: TrainSpec) -> dict[str, Any]:
    import tensorflow as tf

    from dlpipe.core.s3 import s3_client
    from dlpipe.datasets.manifest import Manifest
    from dlpipe.datasets.shard_cache import ShardCache
    from models.checkpoints import RunStore
    from models.cnn import build_model
    from models.input import make_dataset

    keras = tf.keras
    threads = worker_threads(spec.threads)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    keras.utils.set_random_seed(spec.seed)
    strategy = (tf.distribute.MultiWorkerMirroredStrategy() if spec.workers > 1
                else tf.distribute.get_strategy())
    index = _task_index()
    chief = index == 0
    cfg = spec.cfg
    client = s3_client(cfg)
    store = RunStore(client, cfg.buckets.checkpoints, spec.run_id)
    manifest = Manifest.from_json(spec.manifest_json, where="the run's dataset manifest")
    image = manifest.image
    shape = (image["height"], image["width"], image["channels"])
    scratch = Path(tempfile.mkdtemp(prefix=f"dlpipe-train-{spec.run_id}-w{index}-"))
    backup = scratch / "backup"
    resumed = store.download_latest(backup / "chief")
    cache = ShardCache.from_config(cfg)

    def dataset_fn(split: str, *, training: bool):
        def build(ctx: Any) -> Any:
            return make_dataset(
                manifest, split, cache=cache, batch_size=ctx.get_per_replica_batch_size(spec.global_batch),
                worker=ctx.input_pipeline_id, workers=ctx.num_input_pipelines, epochs=None,
                shuffle=training, shuffle_buffer=spec.shuffle_buffer, seed=spec.seed,
                augment=training and spec.augment, drop_remainder=True, record_sharding=not training,
                prefetch_shards=cfg.export.reader.prefetch_shards, memory_cache_mb=spec.memory_cache_mb)
        return strategy.distribute_datasets_from_function(build)

    with strategy.scope():
        model = build_model(spec.architecture, input_shape=shape, num_classes=len(manifest.classes))
        model.compile(optimizer=keras.optimizers.Adam(spec.learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"],
                      steps_per_execution=steps_per_execution(spec.steps_per_execution,
                                                              spec.checkpoint_every_steps))
    callbacks = [keras.callbacks.BackupAndRestore(
        str(backup), save_freq=spec.checkpoint_every_steps or "epoch", delete_checkpoint=False)]
    if chief:
        callbacks += [_mirror_callback(store, backup / "chief", scratch / "tensorboard", spec, resumed),
                      keras.callbacks.TensorBoard(str(scratch / "tensorboard"), write_graph=False,
                                                  profile_batch=0)]
    validation = dataset_fn("validation", training=False) if spec.validation_steps else None
    history = model.fit(
        dataset_fn("train", training=True), epochs=spec.epochs, steps_per_epoch=spec.steps_per_epoch,
        validation_data=validation, validation_steps=spec.validation_steps or None,
        callbacks=callbacks, verbose=0)
    weights = model.get_weights()  # on every worker: reading synced state may be collective
    total_steps = int(model.optimizer.iterations.numpy())
    if not chief:
        shutil.rmtree(scratch, ignore_errors=True)
        return {"worker": index}
    trained = history.history.get("accuracy") or [r["accuracy"] for r in store.metrics()[-1:]] or [None]
    result = _evaluate_and_publish(spec, manifest, cache, weights, shape, scratch, total_steps, resumed,
                                   last_epoch_accuracy=trained[-1])
    store.mark_done(result)
    shutil.rmtree(scratch, ignore_errors=True)
    return result


def _evaluate_and_publish(spec: TrainSpec, manifest: Any, cache: Any, weights: list, shape: tuple,
                          scratch: Path, total_steps: int, resumed: dict | None, *,
                          last_epoch_accuracy: float | None) -> dict[str, Any]:
    import tensorflow as tf

    from dlpipe.core.s3 import s3_client
    from dlpipe.registry.store import publish_model
    from models.batchnorm import recalibrate
    from models.champion import challenge, release, test_split_accuracy
    from models.cnn import build_model
    from models.evaluation import check_export, decide_promotion
    from models.input import make_dataset
    from models.serving import save_serving_model

    with tf.distribute.get_strategy().scope():
        plain = build_model(spec.architecture, input_shape=shape, num_classes=len(manifest.classes))
    plain.set_weights(weights)
    recalibrated = recalibrate(plain, (images for images, _ in make_dataset(
        manifest, "train", cache=cache, batch_size=spec.global_batch, shuffle=True, seed=spec.seed)),
        max_batches=spec.bn_recalibration_batches)
    metrics = _evaluate(plain, manifest, cache)
    promotion = decide_promotion(metrics, bar=spec.min_test_accuracy, min_records=spec.min_test_records,
                                 confidence=spec.promotion_confidence)
    export_check = check_export(metrics.get("train", {}).get("accuracy", 0.0), last_epoch_accuracy,
                                tolerance=spec.max_train_accuracy_gap)
    client, bucket = s3_client(spec.cfg), spec.cfg.buckets.models
    champion, served = challenge(client, bucket, spec.model_name, manifest=manifest, cache=cache,
                                 challenger_accuracy=promotion.accuracy, records=promotion.records,
                                 margin=spec.champion_margin, scratch=scratch,
                                 challenger_on=lambda other: test_split_accuracy(
                                     lambda x: tf.argmax(plain(x, training=False), axis=-1), other, cache))
    promoted = promotion.promoted and export_check.ok and champion.ok
    test_accuracy = promotion.accuracy
    saved = save_serving_model(plain, scratch / "saved_model", height=shape[0], width=shape[1],
                               channels=shape[2], classes=list(manifest.classes))
    config = {k: v for k, v in asdict(spec).items() if k not in ("cfg", "manifest_json")}
    info = {"run_id": spec.run_id, "promoted": promoted, "test_accuracy": test_accuracy,
            "min_test_accuracy": spec.min_test_accuracy, "total_steps": total_steps,
            "promotion": promotion.as_dict(), "export_check": export_check.as_dict(),
            "champion": champion.as_dict(), "batchnorm_recalibration_batches": recalibrated,
            "dataset": manifest.uri, "delta_version": manifest.delta_version,
            "delta_table": manifest.source["table"], "classes": list(manifest.classes),
            "image": manifest.image, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    version = publish_model(client, bucket, spec.model_name, saved, extras={
        "metrics.json": json.dumps({**metrics, "classes": list(manifest.classes),
                                    "promotion": promotion.as_dict(),
                                    "export_check": export_check.as_dict()}, indent=1).encode(),
        "dataset-manifest.json": spec.manifest_json.encode(),
        "training-config.json": json.dumps(config, indent=1).encode(),
    }, info=info)
    released = promoted and release(client, bucket, spec.model_name, version, champion=served,
                                    check=champion)
    summary = {k: {m: v for m, v in d.items() if m != "confusion_matrix"} for k, d in metrics.items()}
    return {**info, "version": version, "served": released, "metrics": summary,
            "resumed_from_epoch": None if resumed is None else resumed["epoch"],
            "model_uri": f"s3://{spec.cfg.buckets.models}/{spec.model_name}/{version}/"}


def _evaluate(model: Any, manifest: Any, cache: Any) -> dict[str, Any]:
    """Loss, accuracy and confusion matrix of every non-empty split, every record counted
    (the last partial batch included), in inference mode."""
    import numpy as np
    import tensorflow as tf

    from models.input import make_dataset

    metrics: dict[str, Any] = {}
    for split in ("train", "validation", "test"):
        if not manifest.shards_of(split) or manifest.counts[split]["records"] == 0:
            continue
        labels, predictions, losses = [], [], []
        for images, y in make_dataset(manifest, split, cache=cache, batch_size=256, shuffle=False):
            logits = model(images, training=False)
            loss = tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
            losses.append(loss.numpy())
            labels.append(y.numpy())
            predictions.append(np.argmax(logits.numpy(), axis=-1))
        y_true, y_pred = np.concatenate(labels), np.concatenate(predictions)
        confusion = np.zeros((len(manifest.classes),) * 2, dtype=int)
        np.add.at(confusion, (y_true, y_pred), 1)
        metrics[split] = {"records": len(y_true), "loss": float(np.concatenate(losses).mean()),
                          "accuracy": float((y_true == y_pred).mean()),
                          "confusion_matrix": confusion.tolist()}
    return metrics


def _mirror_callback(store: Any, chief_dir: Path, tb_dir: Path, spec: TrainSpec,
                     resumed: dict | None) -> Any:
    """Chief only: after each backup, mirror checkpoint, metrics and TensorBoard to the store."""
    import tensorflow as tf

    class Mirror(tf.keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.records = store.metrics()
            if resumed is not None:  # drop epochs the restored checkpoint does not contain
                self.records = [r for r in self.records if r["epoch"] <= resumed["epoch"]]
            self.resumed_epoch = None if resumed is None else resumed["epoch"]
            self.seen: dict[str, float] = {}
            self.epoch, self.started = 0, time.monotonic()

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.epoch, self.started, self.validating = epoch, time.monotonic(), 0.0

        def on_test_begin(self, logs: dict | None = None) -> None:
            self.validation_started = time.monotonic()

        def on_test_end(self, logs: dict | None = None) -> None:
            self.validating += time.monotonic() - self.validation_started

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            seconds = time.monotonic() - self.started
            training = max(seconds - self.validating, 1e-9)
            step = int(self.model.optimizer.iterations.numpy())
            self._upload(epoch=epoch, step=step)
            self.records.append({
                "epoch": epoch, "step": step, "seconds": round(seconds, 3),
                "train_seconds": round(training, 3),
                "images_per_s": round(spec.steps_per_epoch * spec.global_batch / training, 1),
                "resumed_from_epoch": self.resumed_epoch,
                **{k: float(v) for k, v in (logs or {}).items()}})
            store.write_metrics(self.records)
            store.upload_tree(tb_dir, "tensorboard", seen=self.seen)

        def _upload(self, *, epoch: int, step: int) -> None:
            if chief_dir.is_dir():
                store.upload_checkpoint(chief_dir, epoch=epoch, step=step)

    class MirrorEverySteps(Mirror):
        """Adds a batch hook only when asked: any batch hook makes Keras sync every step."""

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            every = spec.checkpoint_every_steps
            if (batch + 1) % every == 0 and (batch + 1) < spec.steps_per_epoch:
                self._upload(epoch=self.epoch - 1, step=int(self.model.optimizer.iterations.numpy()))

    return MirrorEverySteps() if spec.checkpoint_every_steps else Mirror()
