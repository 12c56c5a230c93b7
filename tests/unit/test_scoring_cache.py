"""The predict function factory Spark ships to its Python workers finds the worker's model
cache: a version is loaded once per process, not once per task.

Spark pickles a UDF with its own cloudpickle, which copies a closure's globals by value; a
factory that was a closure over the module's cache got an empty cache in every task and
loaded the model again each time (about a second per task). This round-trips the factory the
way Spark does."""

from __future__ import annotations

import pytest
from pyspark import cloudpickle

import models.scoring as scoring
from dlpipe.core.config import load_config


@pytest.fixture
def loads(monkeypatch):
    calls = []

    def load(cfg, *, model, version, threads=0):
        calls.append((model, version))
        return lambda images: {"model": model, "version": version}

    monkeypatch.setattr(scoring, "load_predict_fn", load)
    monkeypatch.setattr(scoring, "_LOADED", {})
    return calls


def _as_spark_ships_it(factory):
    return cloudpickle.loads(cloudpickle.dumps(factory))


def test_each_task_s_copy_of_the_factory_reuses_the_process_s_loaded_model(loads):
    cfg = load_config()
    first = _as_spark_ships_it(scoring.make_predict_fn(cfg, model="m", version=3, threads=1))()
    second = _as_spark_ships_it(scoring.make_predict_fn(cfg, model="m", version=3, threads=1))()
    assert loads == [("m", 3)]
    assert first is second


def test_at_most_two_versions_stay_loaded(loads):
    cfg = load_config()
    for version in (1, 2, 3, 1):
        _as_spark_ships_it(scoring.make_predict_fn(cfg, model="m", version=version, threads=1))()
    assert loads == [("m", 1), ("m", 2), ("m", 3), ("m", 1)]
    assert len(scoring._LOADED) == 2
