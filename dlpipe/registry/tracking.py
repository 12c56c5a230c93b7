"""MLflow tracking and registry for trained versions, kept beside (never instead of) the store.

After a training run the driver logs one MLflow run: the training parameters, every epoch's
metrics (step = epoch), the evaluation of each split, the confusion matrices and the
accuracy curves as artifacts, and the lineage as tags (dataset manifest, Delta table and
version, export id, Kafka offset ranges). Each published store version is registered under
the same number: versions missing from the registry (published while MLflow was down) are
registered first, in order, so MLflow's counter and the store's never drift apart. Releases
set the aliases ``champion`` (the served version) and ``challenger`` (the newest trained).

MLflow is optional (``tracking.enabled``; ``tracking.uri: databricks`` on Databricks). Any
failure to reach it is a warning: the model store stays the source of truth for serving.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dlpipe.core.config import Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)


def _client(cfg: Config) -> Any:
    uri = cfg.tracking_uri
    if uri is None:
        return None
    # Read by MLflow at each request: a server that is down costs seconds, not minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(cfg.tracking.timeout_s)))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def best_effort(what: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a tracking failure is logged as a warning and returns None."""
    try:
        return fn()
    except Exception as exc:  # MLflow raises many kinds (HTTP, REST, connection, import)
        log.warning("MLflow: could not %s (%s: %s); the model store is unaffected",
                    what, type(exc).__name__, str(exc).splitlines()[0][:300] if str(exc) else "")
        return None


def log_training(cfg: Config, client: S3Client, result: dict[str, Any], *,
                 epochs: Sequence[dict[str, Any]], manifest: Any) -> str | None:
    """Log a finished training run and register its version; returns the MLflow run id."""
    tracker = _client(cfg)
    if tracker is None:
        return None
    return best_effort("log the training run", lambda: _log(tracker, cfg, client, result, epochs,
                                                            manifest))


def _log(tracker: Any, cfg: Config, client: S3Client, result: dict[str, Any],
         epochs: Sequence[dict[str, Any]], manifest: Any) -> str:
    from mlflow.entities import Metric, Param, RunTag

    experiment = tracker.get_experiment_by_name(cfg.tracking.experiment)
    experiment_id = (experiment.experiment_id if experiment is not None
                     else tracker.create_experiment(cfg.tracking.experiment))
    name, version = cfg.training.model_name, int(result["version"])
    run = tracker.create_run(experiment_id, run_name=result["run_id"], tags=_lineage(result, manifest))
    run_id, now = run.info.run_id, int(time.time() * 1000)
    params = [Param(k, str(v)[:6000]) for k, v in sorted(cfg.training.model_dump().items())]
    metrics = [Metric(f"epoch_{k}", float(v), now, int(r["epoch"])) for r in epochs
               for k, v in r.items() if k not in ("epoch", "step") and isinstance(v, int | float)]
    for split, m in result["metrics"].items():
        metrics += [Metric(f"{split}_{k}", float(v), now, 0) for k, v in m.items()
                    if isinstance(v, int | float)]
    tracker.log_batch(run_id, metrics=metrics, params=params, tags=[
        RunTag("dlpipe.promoted", str(result["promoted"]).lower()),
        RunTag("dlpipe.served", str(result.get("served", False)).lower())])
    stored = json.loads(client.get_object(Bucket=cfg.buckets.models,
                                          Key=f"{name}/{version}/metrics.json")["Body"].read())
    tracker.log_dict(run_id, {s: m["confusion_matrix"] for s, m in stored.items()
                              if isinstance(m, dict) and "confusion_matrix" in m},
                     "evaluation/confusion_matrices.json")
    tracker.log_dict(run_id, {"promotion": result.get("promotion"), "champion": result.get("champion"),
                              "export_check": result.get("export_check")}, "evaluation/decision.json")
    tracker.log_dict(run_id, json.loads(manifest.to_json()), "lineage/dataset-manifest.json")
    if epochs:
        tracker.log_figure(run_id, _curves(epochs), "evaluation/curves.png")
    tracker.set_terminated(run_id)
    register(tracker, cfg, client, name, version, run_id=run_id)
    if result.get("served"):
        set_aliases(tracker, name, champion=version, challenger=version)
    else:
        set_aliases(tracker, name, challenger=version)
    log.info("MLflow: run %s in experiment %r, registered %s version %s", run_id,
             cfg.tracking.experiment, name, version)
    return run_id


def _lineage(result: dict[str, Any], manifest: Any) -> dict[str, str]:
    source = manifest.source
    tags = {"dlpipe.run_id": result["run_id"], "dlpipe.version": str(result["version"]),
            "dlpipe.model_uri": result["model_uri"], "dlpipe.dataset": manifest.uri,
            "dlpipe.export_id": str(manifest.export_id), "dlpipe.delta_table": str(source["table"]),
            "dlpipe.delta_version": str(source["delta_version"])}
    if source.get("kafka_offsets"):
        tags["dlpipe.kafka_offsets"] = json.dumps(source["kafka_offsets"])[:5000]
    return tags


def _curves(epochs: Sequence[dict[str, Any]]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 3))
    for axis, metric in zip(figure.subplots(1, 2), ("loss", "accuracy"), strict=True):
        for key in (metric, f"val_{metric}"):
            points = [(r["epoch"] + 1, r[key]) for r in epochs if key in r]
            if points:
                axis.plot(*zip(*points, strict=True), marker="o", label=key)
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.legend()
    return figure


def register(tracker: Any, cfg: Config, client: S3Client, name: str, version: int, *,
             run_id: str | None) -> None:
    """Register store versions up to ``version`` that the registry lacks, in order."""
    from mlflow.exceptions import MlflowException

    from dlpipe.registry.store import complete_versions

    try:
        tracker.get_registered_model(name)
    except MlflowException:
        tracker.create_registered_model(name, description="dlpipe model: versions mirror "
                                        f"s3://{cfg.buckets.models}/{name}/")
    latest = max((int(v.version) for v in tracker.search_model_versions(f"name='{name}'")), default=0)
    if latest >= version:
        return
    infos = {i["version"]: i for i in complete_versions(client, cfg.buckets.models, name)}
    for number in range(latest + 1, version + 1):
        info = infos.get(number, {})
        made = tracker.create_model_version(
            name, source=f"s3://{cfg.buckets.models}/{name}/{number}/",
            run_id=run_id if number == version else None,
            tags={"dlpipe.version": str(number), "dlpipe.run_id": str(info.get("run_id")),
                  "dlpipe.promoted": str(bool(info.get("promoted"))).lower()})
        if int(made.version) != number:
            log.warning("MLflow registered %s version %s for store version %s (the registry has "
                        "versions the store does not)", name, made.version, number)


def set_aliases(tracker: Any, name: str, *, champion: int | None = None,
                challenger: int | None = None) -> None:
    for alias, number in (("champion", champion), ("challenger", challenger)):
        if number is not None:
            tracker.set_registered_model_alias(name, alias, str(number))


def follow_release(cfg: Config, client: S3Client, name: str, version: int) -> None:
    """After ``dlpipe models promote`` / ``rollback``: move the ``champion`` alias."""
    tracker = _client(cfg)
    if tracker is None:
        return

    def move() -> None:
        register(tracker, cfg, client, name, version, run_id=None)
        set_aliases(tracker, name, champion=version)
    best_effort("move the champion alias", move)
