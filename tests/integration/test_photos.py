"""Colour photos with the photos profile, as a new user runs them: one name for the pipeline,
a residual CNN on 2 workers, an export that scores what training said, a promotion decided on
its confidence bound, and `dlpipe serve` answering as the exported model does."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest

from dlpipe.core.config import load_config
from dlpipe.core.process import free_ports
from dlpipe.core.s3 import s3_client
from dlpipe.localstack.provision import ensure_topics
from dlpipe.produce.producer import plan_messages, produce
from dlpipe.produce.sources import synthetic
from dlpipe.registry.sync import download_version
from dlpipe.serving.launch import running_server
from spark_jobs.export import job as export_job
from spark_jobs.ingest import job as ingest_job
from spark_jobs.train import job as train_job
from tests.helpers import read_delta_with_delta_rs

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["circle", "square"]  # two classes, as in the photo trial that found the defects
COUNT = 360


@pytest.fixture(scope="module")
def photos(cfg, tmp_path_factory):
    """The test stack with the photos profile and a pipeline name of this module's own: the
    profile and the name are the only pipeline settings (plus the classes and, for speed,
    32 px instead of 64)."""
    name = f"photos-{uuid.uuid4().hex[:6]}"
    photos_cfg = load_config(ROOT / "conf" / "pipeline.yaml", overrides={
        "stack.state_dir": str(cfg.stack.state_dir), "pipeline.profile": "photos",
        "pipeline.name": name, "ingest.classes": CLASSES,
        "ingest.image.target_height": 32, "ingest.image.target_width": 32,
        "training.epochs": 8, "training.min_test_records": 20, "training.min_test_accuracy": 0.6,
        "serving.model_dir": str(tmp_path_factory.mktemp("photo-models")),
    })
    assert photos_cfg.tables.clean.endswith(f"/{name}/clean")
    assert photos_cfg.training.architecture == "resnet"
    ensure_topics(photos_cfg)
    msgs = plan_messages(
        synthetic(size=32, classes=tuple(CLASSES)), count=COUNT, prefix="photo",
        source="synthetic-32", now=datetime.now(UTC), bad_fraction=0.03,
        bad_kinds=["truncated_image", "size_mismatch", "unknown_label"], duplicate_fraction=0.02,
        schema_version=1, watermark_delay_s=photos_cfg.ingest.watermark_delay_s, seed=1)
    produce(photos_cfg, msgs, count=COUNT, rate=0, log_path=tmp_path_factory.mktemp("p") / "sent.jsonl")
    return photos_cfg


@pytest.fixture(scope="module")
def trained(spark, photos):
    ingest_job.run(spark, photos, once=True)
    manifest = export_job.export(spark, photos)
    result = train_job.train(spark, photos, workers=2, run_id=f"photos-{uuid.uuid4().hex[:6]}")
    return manifest, result


def test_the_export_scores_what_training_said_and_the_decision_shows_its_bound(photos, trained):
    manifest, result = trained
    check, promotion = result["export_check"], result["promotion"]
    assert check["ok"], check
    assert check["trained_accuracy"] - check["exported_accuracy"] <= photos.training.max_train_accuracy_gap
    assert result["batchnorm_recalibration_batches"] > 0
    assert promotion["records"] == manifest.counts["test"]["records"] >= 20
    assert promotion["lower_bound"] < promotion["accuracy"]
    assert promotion["promoted"] == (promotion["lower_bound"] >= 0.6) == result["promoted"], promotion
    assert result["promoted"], f"a 2-class shape model should clear a 0.6 bound: {promotion}"


def test_served_predictions_match_the_exported_model(photos, trained):
    import tensorflow as tf

    _, result = trained
    name = photos.training.model_name
    rows = read_delta_with_delta_rs(photos, photos.tables.clean).to_pyarrow_table().select(
        ["image_png", "label"]).to_pylist()[:16]
    images = [r["image_png"] for r in rows]
    path = download_version(s3_client(photos), photos.buckets.models, name, result["version"],
                            photos.serving.model_dir / "in-process")
    expected = tf.saved_model.load(str(path)).signatures["serving_default"](image_bytes=tf.constant(images))
    (grpc_port,) = free_ports(1)
    with running_server(photos, models=[name], grpc_port=grpc_port,
                        log=photos.serving.model_dir / "serve.log") as server:
        answer = httpx.post(f"{server.url}/v1/models/{name}:predict", timeout=60, json={
            "instances": [{"b64": base64.b64encode(i).decode()} for i in images]}).json()
    got = answer["predictions"]
    np.testing.assert_allclose([p["probabilities"] for p in got], expected["probabilities"].numpy(),
                               rtol=1e-5, atol=1e-6)
    assert [p["class_name"] for p in got] == [c.decode() for c in expected["class_name"].numpy()]
    assert sum(p["class_name"] == r["label"] for p, r in zip(got, rows, strict=True)) >= 0.75 * len(rows)
