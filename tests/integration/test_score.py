"""`dlpipe score` on the real stack: predictions equal the model's in-process answers for the
same rows, and scoring again adds nothing."""

from __future__ import annotations

import numpy as np
import pytest

from dlpipe.core.config import with_overrides
from dlpipe.core.s3 import s3_client
from dlpipe.registry.sync import download_version
from spark_jobs.score import job as score_job
from spark_jobs.score import marks
from tests.helpers import read_delta_with_delta_rs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def scored(spark, served_model):
    return score_job.score(spark, served_model)


def _predictions(cfg) -> list[dict]:
    return read_delta_with_delta_rs(cfg, cfg.tables.predictions).to_pyarrow_table().to_pylist()


def test_every_clean_row_scored_once_equal_to_in_process_predictions(scored, served_model, tmp_path):
    import tensorflow as tf

    cfg = served_model
    clean = {r["id"]: r for r in read_delta_with_delta_rs(cfg, cfg.tables.clean).to_pyarrow_table().select(
        ["id", "image_png", "label"]).to_pylist()}
    rows = [r for r in _predictions(cfg) if r["model_name"] == cfg.training.model_name]
    assert scored.scored == len(clean) == scored.total
    assert sorted(r["id"] for r in rows) == sorted(clean)
    assert {r["model_version"] for r in rows} == {scored.version}

    path = download_version(s3_client(cfg), cfg.buckets.models, cfg.training.model_name, scored.version,
                            tmp_path)
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    sample = sorted(rows, key=lambda r: r["id"])[:300]
    expected = signature(image_bytes=tf.constant([clean[r["id"]]["image_png"] for r in sample]))
    np.testing.assert_allclose([r["probabilities"] for r in sample],
                               expected["probabilities"].numpy(), rtol=1e-5, atol=1e-6)
    assert [r["predicted_class"] for r in sample] == [c.decode() for c in expected["class_name"].numpy()]
    assert [r["predicted_index"] for r in sample] == expected["class_index"].numpy().tolist()
    accuracy = np.mean([r["predicted_class"] == clean[r["id"]]["label"] for r in rows])
    assert accuracy > 0.8
    assert all(r["scored_at"] is not None for r in rows)


def test_scoring_again_adds_nothing_and_all_replaces_without_duplicates(scored, spark, served_model):
    cfg = served_model
    again = score_job.score(spark, cfg)
    assert again.scored == 0 and again.total == scored.total
    everything = score_job.score(spark, cfg, rescore=True)
    assert everything.scored == scored.total and everything.total == scored.total
    rows = [r for r in _predictions(cfg) if r["model_name"] == cfg.training.model_name]
    keys = [(r["id"], r["model_version"]) for r in rows]
    assert len(keys) == len(set(keys)) == scored.total


def test_scoring_after_rows_were_lost_scores_exactly_those_rows(scored, spark, served_model):
    """The anti-join path: this version has rows in the table, so only the missing ids score.
    (A version with no rows skips the anti-join; the first scoring above took that path.)"""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    cfg = served_model
    table, model = cfg.tables.predictions, cfg.training.model_name
    assert score_job._scored_by(spark, cfg, table, model=model, version=scored.version) is not None
    assert score_job._scored_by(spark, cfg, table, model=model, version=scored.version + 1) is None
    ids = sorted(r["id"] for r in _predictions(cfg) if r["model_name"] == model)
    lost = ids[::3]
    DeltaTable.forPath(spark, table).delete(F.col("id").isin(lost))
    again = score_job.score(spark, cfg)
    assert again.scored == len(lost) and again.total == scored.total
    keys = [r["id"] for r in _predictions(cfg) if r["model_name"] == model]
    assert sorted(keys) == ids


def test_unknown_model_or_version_is_a_clear_error(spark, served_model):
    from dlpipe.core.errors import DlpipeError

    with pytest.raises(DlpipeError, match="no promoted version"):
        score_job.score(spark, served_model, model="no-such-model")
    with pytest.raises(DlpipeError, match="no complete version 99"):
        score_job.score(spark, served_model, version=99)
    with pytest.raises(DlpipeError, match=r"(?s)there is no clean table to score at .*fix: dlpipe ingest"):
        score_job.score(spark, with_overrides(served_model, {
            "tables.clean": f"s3a://{served_model.buckets.lake}/test/no-such-table"}))


def test_a_model_without_the_bytes_signature_is_named_not_a_keyerror(cfg, tmp_path):
    """Found on Kubernetes: scoring a version that `dlpipe train` did not export (no
    serving_bytes signature) failed in the executors with a bare KeyError."""
    import uuid

    from dlpipe.core.errors import DlpipeError
    from models.scoring import load_predict_fn
    from tests.integration.test_serve_faults import publish_probe

    model = f"probe-score-{uuid.uuid4().hex[:6]}"
    version = publish_probe(cfg, model, "score", tmp_path)
    with pytest.raises(DlpipeError, match=r"has no 'serving_bytes' signature \(it has serving_default\)"):
        load_predict_fn(with_overrides(cfg, {"serving.model_dir": str(tmp_path / "models")}),
                        model=model, version=version, threads=1)


def test_arrow_batch_rows_from_config_scores_every_row_and_leaves_the_session_as_it_was(
        scored, spark, served_model):
    """Arrow batches of 5 rows (each predict call gets at most 5 of its 256): every row is still
    scored once, and the session's own Arrow batch size is back afterwards."""
    key = score_job.ARROW_BATCH_ROWS
    before = spark.conf.get(key, None)
    cfg = with_overrides(served_model, {"scoring.arrow_batch_rows": 5})
    again = score_job.score(spark, cfg, rescore=True)
    assert again.scored == again.total == scored.total
    assert spark.conf.get(key, None) == before


def test_a_new_table_marks_its_versions_and_one_without_marks_is_asked_by_spark(
        scored, spark, served_model):
    """A version's mark answers "no rows yet" without a Spark job; a table from before marks
    (no ``_dlpipe_scored/kept``) is asked the table itself, never taken for empty."""
    import uuid

    from dlpipe.core.s3 import split_uri

    table = f"s3a://{served_model.buckets.lake}/test-marks-{uuid.uuid4().hex[:8]}/predictions"
    cfg = with_overrides(served_model, {"tables.predictions": table})
    model, version = cfg.training.model_name, scored.version
    assert marks.may_have_rows(cfg, table, model=model, version=version) is None, "no table yet"
    first = score_job.score(spark, cfg)
    assert first.scored == first.total == scored.total
    assert marks.may_have_rows(cfg, table, model=model, version=version) is True
    assert marks.may_have_rows(cfg, table, model=model, version=version + 1) is False
    bucket, key = split_uri(table)
    s3_client(cfg).delete_object(Bucket=bucket, Key=f"{key}/{marks.FOLDER}/{marks.KEPT}")
    assert marks.may_have_rows(cfg, table, model=model, version=version + 1) is None
    assert score_job._scored_by(spark, cfg, table, model=model, version=version) is not None
    assert score_job._scored_by(spark, cfg, table, model=model, version=version + 1) is None
    assert score_job.score(spark, cfg).scored == 0, "nothing scored twice"
