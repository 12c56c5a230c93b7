"""Fixtures shared by the integration modules: an ingested and exported digits dataset, and
the loopback standalone Spark cluster."""

from __future__ import annotations

import uuid

import pytest

from dlpipe.core.config import with_overrides
from spark_jobs.export import job as export_job
from spark_jobs.ingest import job as ingest_job
from tests.helpers import isolated, send


@pytest.fixture(scope="session")
def ingested(spark, cfg, tmp_path_factory):
    """About 1,500 clean digits in their own Delta table, ingested in two runs (two versions)."""
    cfg = isolated(cfg, "export")
    log = tmp_path_factory.mktemp("export") / "sent.jsonl"
    send(cfg, log, count=1200, bad_fraction=0.02, duplicate_fraction=0.01)
    ingest_job.run(spark, cfg, once=True)
    send(cfg, log.with_name("more.jsonl"), count=400, start=1200)
    ingest_job.run(spark, cfg, once=True)
    return with_overrides(cfg, {"export.dataset": f"test-{uuid.uuid4().hex[:8]}"})


@pytest.fixture(scope="session")
def exported(spark, ingested):
    return export_job.export(spark, ingested)


@pytest.fixture(scope="module")
def cluster(stack):
    """The stack's standalone master and 2 workers, stopped afterwards if this started them."""
    services = stack.cluster_services()
    already = all(s.pid() is not None and s.is_healthy() for s in services)
    stack.up(cluster=True)
    yield stack.cfg
    if not already:
        for svc in reversed(services):
            svc.stop(stack.cfg.stack.stop_timeout_s)


@pytest.fixture(scope="session")
def served_model(ingested, exported):
    """A model trained in-process (1 worker, few epochs) on the exported digits and promoted:
    what the serving and scoring tests serve. Its config is returned."""
    from spark_jobs.train import job as train_job

    cfg = with_overrides(ingested, {"training.epochs": 4, "training.min_test_accuracy": 0.0,
                                    "training.model_name": f"serve-{uuid.uuid4().hex[:6]}"})
    cfg = with_overrides(cfg, {"serving.models": [cfg.training.model_name]})
    result = train_job.train(None, cfg, workers=1, run_id=f"serve-{uuid.uuid4().hex[:6]}")
    assert result["version"] == 1 and result["promoted"], result
    return cfg
