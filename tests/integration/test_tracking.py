"""MLflow tracking and registry (issue 18) against the stack's real MLflow server: what
training logs, the registry mirroring the store's version numbers, aliases that follow
releases, and training that carries on when the server is down."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from dlpipe.core.config import with_overrides
from dlpipe.core.process import free_ports
from dlpipe.core.s3 import s3_client
from dlpipe.registry.release import serving_version
from dlpipe.registry.store import publish_model
from dlpipe.registry.sync import download_version

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tracker(cfg):
    from mlflow.tracking import MlflowClient

    assert httpx.get(f"{cfg.tracking_uri}/health", timeout=10).status_code == 200, (
        "the stack's MLflow server does not answer")
    return MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)


def test_training_logs_metrics_lineage_and_registers_the_store_version(served_model, tracker, tmp_path):
    cfg = served_model
    name = cfg.training.model_name
    experiment = tracker.get_experiment_by_name(cfg.tracking.experiment)
    (run,) = tracker.search_runs([experiment.experiment_id], f"tags.`dlpipe.model_uri` LIKE '%/{name}/1/'")
    tags, params = run.data.tags, run.data.params
    assert params["epochs"] == "4" and params["model_name"] == name
    assert [m.step for m in tracker.get_metric_history(run.info.run_id, "epoch_accuracy")] == [0, 1, 2, 3]
    assert 0.0 <= run.data.metrics["test_accuracy"] <= 1.0
    manifest = json.loads(s3_client(cfg).get_object(
        Bucket=cfg.buckets.models, Key=f"{name}/1/dataset-manifest.json")["Body"].read())
    assert tags["dlpipe.export_id"] == manifest["export_id"]
    assert tags["dlpipe.delta_version"] == str(manifest["source"]["delta_version"])
    offsets = json.loads(tags["dlpipe.kafka_offsets"])
    assert sum(r["rows"] for r in offsets) == manifest["source"]["rows"], offsets
    assert tags["dlpipe.promoted"] == "true" and tags["dlpipe.served"] == "true"
    artifacts = {a.path for a in tracker.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/confusion_matrices.json", "evaluation/curves.png",
            "evaluation/decision.json"} <= artifacts
    local = Path(tracker.download_artifacts(run.info.run_id, "evaluation/confusion_matrices.json",
                                            str(tmp_path)))
    confusion = json.loads(local.read_text())["test"]
    assert sum(map(sum, confusion)) == manifest["counts"]["test"]["records"]
    (version,) = tracker.search_model_versions(f"name='{name}'")
    assert version.version == "1" and version.run_id == run.info.run_id
    assert version.source == f"s3://{cfg.buckets.models}/{name}/1/"
    assert tracker.get_model_version_by_alias(name, "champion").version == "1"


def test_the_registry_keeps_store_numbers_and_aliases_follow_releases(served_model, tracker,
                                                                      test_env, tmp_path):
    """Version 2 is published while MLflow knew nothing of it; promoting version 3 registers 2
    and 3 in order, and the champion alias moves with promote and rollback."""
    cfg = served_model
    client, bucket = s3_client(cfg), cfg.buckets.models
    source = download_version(client, bucket, cfg.training.model_name, 1, tmp_path / "src")
    name = f"tracked-{uuid.uuid4().hex[:6]}"
    for _ in range(3):
        publish_model(client, bucket, name, source, extras={}, info={"promoted": True})

    def models(*args: str) -> str:
        done = subprocess.run([str(Path(sys.executable).parent / "dlpipe"), "models", *args,
                               "--model", name], env=test_env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0 and "MLflow: could not" not in done.stderr, done.stderr
        return done.stdout

    models("promote", "1")
    models("promote", "3")
    assert [v.version for v in sorted(tracker.search_model_versions(f"name='{name}'"),
                                      key=lambda v: int(v.version))] == ["1", "2", "3"]
    assert tracker.get_model_version_by_alias(name, "champion").version == "3"
    models("rollback")
    assert tracker.get_model_version_by_alias(name, "champion").version == "1"
    assert serving_version(client, bucket, name) == 1


def test_training_carries_on_when_the_tracking_server_is_down(served_model, caplog):
    from spark_jobs.train import job as train_job

    (port,) = free_ports(1)
    cfg = with_overrides(served_model, {
        "tracking.uri": f"http://127.0.0.1:{port}", "training.epochs": 1,
        "training.max_train_accuracy_gap": 1.0,
        "training.model_name": f"untracked-{uuid.uuid4().hex[:6]}"})
    with caplog.at_level(logging.WARNING, logger="dlpipe.registry.tracking"):
        result = train_job.train(None, cfg, workers=1, run_id=f"untracked-{uuid.uuid4().hex[:6]}")
    assert result["version"] == 1 and result["served"], result
    assert serving_version(s3_client(cfg), cfg.buckets.models, cfg.training.model_name) == 1
    assert any("MLflow: could not log the training run" in r.getMessage() for r in caplog.records)
