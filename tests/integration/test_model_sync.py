"""`dlpipe models sync`: the storage initializer that feeds TensorFlow Serving from MinIO."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from dlpipe.core.s3 import s3_client
from dlpipe.registry.store import publish_model
from dlpipe.registry.sync import download_version

pytestmark = pytest.mark.integration


def test_sync_follows_promotions_in_tf_serving_layout(served_model, test_env, tmp_path):
    import tensorflow as tf

    cfg = served_model
    client, bucket = s3_client(cfg), cfg.buckets.models
    source = download_version(client, bucket, cfg.training.model_name, 1, tmp_path / "src")
    name = f"sync-{uuid.uuid4().hex[:6]}"
    dest = tmp_path / "models"

    def publish(promoted: bool) -> int:
        return publish_model(client, bucket, name, source, extras={}, info={"promoted": promoted})

    def sync(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dlpipe.cli.main", "models", "sync", "--dest",
                               str(dest), "--model", name, *extra], env=test_env,
                              capture_output=True, text=True, timeout=300)

    def local() -> list[str]:
        return sorted(p.name for p in (dest / name).iterdir()) if (dest / name).exists() else []

    assert "no promoted version yet" in sync().stderr and local() == []
    assert publish(True) == 1
    assert sync().returncode == 0 and local() == ["1"]
    assert (dest / name / "1" / "saved_model.pb").is_file()
    assert (dest / name / "1" / "variables" / "variables.index").is_file()
    loaded = tf.saved_model.load(str(dest / name / "1"))  # what tensorflow_model_server loads
    assert {"serving_default", "serving_pixels"} <= set(loaded.signatures)
    assert publish(False) == 2
    assert sync().returncode == 0 and local() == ["1"]   # unpromoted: never copied
    assert publish(True) == 3 and publish(True) == 4
    assert sync("--keep", "2").returncode == 0 and local() == ["1", "4"]  # newest promoted only
    assert publish(True) == 5
    assert sync("--keep", "2").returncode == 0 and local() == ["4", "5"]  # oldest dropped

    listing = subprocess.run([sys.executable, "-m", "dlpipe.cli.main", "models", "list", "--model", name,
                              "--json"], env=test_env, capture_output=True, text=True, timeout=120)
    listed = json.loads(listing.stdout)[name]
    versions = listed["versions"]
    assert listed["served"] == 5
    assert [(v["version"], v["promoted"]) for v in versions] == [(1, True), (2, False), (3, True),
                                                                 (4, True), (5, True)]
