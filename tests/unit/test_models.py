"""Models, preprocessing, the serving export and the training plan, without services."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dlpipe.core.config import load_config, with_overrides
from dlpipe.core.errors import ConfigError, DlpipeError
from dlpipe.datasets.manifest import Manifest, Shard, shard_path
from spark_jobs.train.job import _epoch_line, make_spec


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def test_architectures_build_and_unknown_ones_are_named():
    from models.cnn import build_model

    small = build_model("small", input_shape=(8, 8, 1), num_classes=10)
    resnet = build_model("resnet", input_shape=(32, 32, 3), num_classes=8)
    assert small.output_shape == (None, 10) and resnet.output_shape == (None, 8)
    assert type(small).__module__.startswith("tf_keras"), "tf-keras, not Keras 3"
    with pytest.raises(ConfigError, match=r"training\.architecture must be one of small, resnet"):
        build_model("vgg", input_shape=(8, 8, 1), num_classes=2)


def test_decode_scales_and_resizes_only_when_asked():
    import tensorflow as tf

    from models.preprocess import decode_images

    exact = np.arange(64, dtype=np.uint8).reshape(8, 8)
    batch = tf.constant([png(exact), png(np.full((16, 16), 255, np.uint8))])
    out = decode_images(batch, height=8, width=8, channels=1).numpy()
    np.testing.assert_array_equal(out[0, ..., 0], exact.astype("float32") / 255.0)
    np.testing.assert_allclose(out[1], 1.0)
    with pytest.raises(tf.errors.InvalidArgumentError):
        decode_images(batch, height=8, width=8, channels=1, resize=False)


def test_serving_signatures_agree_on_the_same_images(tmp_path):
    import tensorflow as tf

    from models.cnn import build_model
    from models.serving import save_serving_model

    model = build_model("small", input_shape=(8, 8, 1), num_classes=3)
    path = save_serving_model(model, tmp_path / "m", height=8, width=8, channels=1,
                              classes=["a", "b", "c"])
    loaded = tf.saved_model.load(str(path))
    assert {"serving_default", "serving_bytes", "serving_pixels"} <= set(loaded.signatures)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (8, 8), dtype=np.uint8) for _ in range(4)]
    by_bytes = loaded.signatures["serving_bytes"](image_bytes=tf.constant([png(i) for i in images]))
    pixels = tf.constant(np.stack(images)[..., None] / 255.0, tf.float32)
    by_pixels = loaded.signatures["serving_pixels"](pixels=pixels)
    np.testing.assert_allclose(by_bytes["probabilities"], by_pixels["probabilities"], atol=1e-6)
    names = [n.decode() for n in by_bytes["class_name"].numpy()]
    assert names == [["a", "b", "c"][i] for i in by_bytes["class_index"].numpy()]


def manifest(train_shards: int, train_records: int) -> Manifest:
    shards = [Shard("train", shard_path("train", i, train_shards), 1, 1, "0", {})
              for i in range(train_shards)]
    return Manifest(
        dataset="d", bucket="b", prefix="d/1", export_id="x", created_at="t",
        source={"table": "t", "delta_version": 1, "delta_timestamp": "t", "rows": train_records},
        split={}, classes=["0", "1"], image={"height": 8, "width": 8, "channels": 1}, features={},
        counts={"train": {"records": train_records}, "validation": {"records": 100},
                "test": {"records": 0}}, shards=shards)


def test_training_plan_and_its_errors():
    cfg = with_overrides(load_config(environ={}), {"training.batch_size": 64})
    spec = make_spec(cfg, manifest(2, 1000), run_id="r", workers=2)
    assert (spec.steps_per_epoch, spec.validation_steps, spec.global_batch) == (15, 1, 64)
    with pytest.raises(DlpipeError, match="1 train shards for 2 workers"):
        make_spec(cfg, manifest(1, 1000), run_id="r", workers=2)
    with pytest.raises(DlpipeError, match="fewer than one global batch of 64"):
        make_spec(cfg, manifest(2, 10), run_id="r", workers=2)
    with pytest.raises(DlpipeError, match="does not split evenly over 3 workers"):
        make_spec(cfg, manifest(3, 1000), run_id="r", workers=3)


def test_epoch_line_says_loss_accuracy_and_throughput():
    line = _epoch_line({"epoch": 2, "loss": 0.5, "accuracy": 0.9, "val_loss": 0.4, "val_accuracy": 0.95,
                        "images_per_s": 1234.5, "step": 60}, 10)
    assert line == ("train: epoch 3/10  loss 0.5000  acc 0.9000  val_loss 0.4000  val_acc 0.9500"
                    "  1,234 img/s  step 60")
