"""The least-privilege policies of the local stack's identities (dlpipe.localstack.identities);
MinIO enforcing them is tests/integration/test_identities.py's."""

from __future__ import annotations

from dlpipe.core.config import load_config
from dlpipe.localstack.identities import grants, policy
from tests.conftest import ROOT


def resources(doc: dict, action: str) -> set[str]:
    return {r for s in doc["Statement"] if action in s["Action"] for r in s["Resource"]}


def test_serving_reads_models_only_and_scoring_writes_only_the_predictions_table():
    cfg = load_config(ROOT / "conf" / "pipeline.yaml")
    serve, score = policy(grants(cfg)["serve"]), policy(grants(cfg)["score"])
    assert resources(serve, "s3:GetObject") == {"arn:aws:s3:::dlpipe-models", "arn:aws:s3:::dlpipe-models/*"}
    assert resources(serve, "s3:PutObject") == set() and resources(serve, "s3:DeleteObject") == set()
    predictions = cfg.tables.predictions.split("://", 1)[1]
    assert resources(score, "s3:PutObject") == {f"arn:aws:s3:::{predictions}*", "arn:aws:s3:::dlpipe-lake"}
    assert set(grants(cfg)) == {"ingest", "export", "train", "retrain", "serve", "score"}
