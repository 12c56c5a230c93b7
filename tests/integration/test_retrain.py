"""The scheduled retraining job: export then train on exactly that export, once per version."""

from __future__ import annotations

import uuid

import pytest

from dlpipe.core.s3 import s3_client
from dlpipe.registry.store import complete_versions
from spark_jobs.retrain import job as retrain

pytestmark = pytest.mark.integration


def test_retrain_trains_on_the_export_it_made_and_not_twice(spark, ingested, exported, capsys):
    name = f"retrain-{uuid.uuid4().hex[:6]}"
    argv = ["--workers", "1", "--epochs", "1", "--dataset", exported.dataset,
            "--set", f"training.model_name={name}", "--set", "training.min_test_accuracy=0",
            "--set", f"tables.clean={ingested.tables.clean}",
            "--set", f"stack.state_dir={ingested.stack.state_dir}"]
    assert retrain.main(argv, spark=spark) == 0
    assert retrain.main(argv, spark=spark) == 0
    versions = complete_versions(s3_client(ingested), ingested.buckets.models, name)
    assert [v["version"] for v in versions] == [1]
    assert versions[0]["delta_version"] == exported.delta_version
    assert versions[0]["run_id"] == f"retrain-{exported.dataset}-v{exported.delta_version}"
    assert f"s3://{ingested.buckets.models}/{name}/1/" in capsys.readouterr().err
