"""Colour photos with the photos profile, as a new user runs them: one name for the pipeline,
a residual CNN on 2 workers, an export that scores what training said, a promotion decided on
its confidence bound, and `dlpipe serve` answering as the exported model does."""

from __future__ import annotations

import base64
import itertools
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from dlpipe.core.config import load_config
from dlpipe.core.process import free_ports
from dlpipe.core.s3 import s3_client
from dlpipe.localstack.provision import ensure_topics
from dlpipe.produce import producer
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
    """An ImageFolder of colour images sent by `dlpipe produce --source folder` with the photos
    profile and a pipeline name of this module's own: the profile and the name are the only
    pipeline settings (the classes are learned from the folder; 32 px instead of 64 and fewer
    epochs only for speed)."""
    name = f"photos-{uuid.uuid4().hex[:6]}"
    folder = tmp_path_factory.mktemp("photos")
    for sample in itertools.islice(synthetic(size=32, classes=tuple(CLASSES)), COUNT):
        (folder / sample.label).mkdir(exist_ok=True)
        (folder / sample.label / f"{sample.index:04d}.png").write_bytes(sample.image.data)
    settings = {
        "stack.state_dir": str(cfg.stack.state_dir), "pipeline.profile": "photos", "pipeline.name": name,
        "ingest.image.target_height": 32, "ingest.image.target_width": 32,
        "training.epochs": 8, "training.min_test_records": 20, "training.min_test_accuracy": 0.6,
        "serving.model_dir": str(tmp_path_factory.mktemp("photo-models")),
    }
    flags = [f"--set={key}={value}" for key, value in settings.items()]
    photos_cfg = load_config(ROOT / "conf" / "pipeline.yaml", overrides=settings)
    assert photos_cfg.tables.clean.endswith(f"/{name}/clean")
    assert photos_cfg.training.architecture == "resnet"
    ensure_topics(photos_cfg)
    assert producer.main(["--source", "folder", "--folder", str(folder), "--count", str(COUNT),
                          "--bad-fraction", "0.03", "--duplicate-fraction", "0.02", "--seed", "1",
                          "--bad-kinds", "truncated_image,size_mismatch,unknown_label", *flags]) == 0
    photos_cfg = load_config(ROOT / "conf" / "pipeline.yaml", overrides=settings)  # as ingest's would
    assert photos_cfg.ingest.classes == sorted(CLASSES)
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
