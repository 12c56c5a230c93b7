"""The predict core both front ends share: lookup, checks, batching, errors and metrics."""

from __future__ import annotations

import asyncio
import base64
from types import SimpleNamespace

import numpy as np
import pytest

from dlpipe.core.config import ServingConfig
from dlpipe.serving.metrics import Metrics
from dlpipe.serving.predict import Predictor
from dlpipe.serving.protocol import RequestError
from dlpipe.serving.servable import Signature, TensorSpec

PIXELS = Signature("serving_pixels", {"pixels": TensorSpec("pixels", "float32", (None, 2))},
                   {"y": TensorSpec("y", "float32", (None,))})
DEFAULT = Signature("serving_default", {"x": TensorSpec("x", "float32", (None,))},
                    {"y": TensorSpec("y", "float32", (None,))})


class Batcher:
    def __init__(self, fail: BaseException | None) -> None:
        self.fail = fail

    async def submit(self, inputs, size, *, cost, deadline):
        if self.fail:
            raise self.fail
        return {"y": np.full(size, 7.0, np.float32)}


class Registry:
    """The part of ``ModelRegistry`` the predict core uses: one model, version 3 loaded."""

    def __init__(self, *, fail: BaseException | None = None, **limits) -> None:
        self.cfg = SimpleNamespace(serving=ServingConfig(**{
            "max_instances": 4, "max_image_bytes": 1000, "max_image_pixels": 100, **limits}))
        self.models = ["m"]
        self.metrics = Metrics()
        self.sampler = SimpleNamespace(offer=lambda *args: None)  # serving.sample_rate 0
        self.servable = SimpleNamespace(model="m", version=3,
                                        signatures={s.name: s for s in (PIXELS, DEFAULT)})
        self.fail = fail

    def get(self, model, version=None):
        if model not in self.models:
            raise RequestError(f"model {model!r} is not served here", status=404)
        return self.servable

    def batcher(self, servable, signature):
        return Batcher(self.fail)


def run(predictor: Predictor, model: str, parse) -> object:
    async def go():
        with predictor.counted(model):
            return await predictor.predict(model, None, parse, deadline=predictor.deadline())
    return asyncio.run(go())


def protos(**arrays):
    import tensorflow as tf

    return {k: tf.make_tensor_proto(v) for k, v in arrays.items()}


def count(registry: Registry, model: str, code: str, protocol: str = "rest") -> float:
    return registry.metrics.registry.get_sample_value(
        "dlpipe_serve_requests_total",
        {"model": model, "api": "predict", "protocol": protocol, "code": code}) or 0.0


def test_a_json_request_is_looked_up_checked_batched_and_counted():
    registry = Registry()
    predictor = Predictor(registry, protocol="rest")
    done = run(predictor, "m", predictor.json_body({"signature_name": "serving_pixels",
                                                    "instances": [[0.1, 0.2], [0.3, 0.4]]}))
    assert done.servable.version == 3 and done.request.signature == "serving_pixels"
    assert done.request.row_format and done.outputs["y"].tolist() == [7.0, 7.0]
    assert count(registry, "m", "200") == 1
    assert registry.metrics.registry.get_sample_value("dlpipe_serve_examples_total", {"model": "m"}) == 2


def test_typed_tensors_take_the_default_signature_and_the_same_checks():
    registry = Registry()
    predictor = Predictor(registry, protocol="grpc")
    done = run(predictor, "m", predictor.tensors("", protos(x=np.ones(3, np.float32))))
    assert done.request.signature == "serving_default" and not done.request.row_format
    with pytest.raises(RequestError, match="the limit is 4") as err:
        run(predictor, "m", predictor.tensors("", protos(x=np.ones(5, np.float32))))
    assert err.value.status == 413
    assert count(registry, "m", "200", "grpc") == 1 and count(registry, "m", "413", "grpc") == 1


def test_an_unknown_signature_is_refused_before_the_tensors_are_converted():
    class Untouchable(dict):
        def items(self):
            raise AssertionError("tensors read before the signature was known")

    predictor = Predictor(Registry(), protocol="grpc")
    with pytest.raises(RequestError, match="signature_name 'nope' not found") as err:
        run(predictor, "m", predictor.tensors("nope", Untouchable()))
    assert err.value.status == 400


def test_an_unknown_model_is_a_404_counted_under_one_label():
    registry = Registry()
    predictor = Predictor(registry, protocol="rest")
    for name in ("nope", "../etc"):
        with pytest.raises(RequestError) as err:
            run(predictor, name, predictor.json_body({"instances": [1.0]}))
        assert err.value.status == 404
    assert count(registry, "_unknown", "404") == 2


def test_an_input_tensorflow_refuses_is_a_400_with_only_the_first_line():
    import tensorflow as tf

    registry = Registry(fail=tf.errors.InvalidArgumentError(
        None, None, "Input is bad\n  graph detail nobody should see"))
    predictor = Predictor(registry, protocol="rest")
    with pytest.raises(RequestError) as err:
        run(predictor, "m", predictor.json_body({"instances": [1.0]}))
    assert err.value.status == 400
    assert str(err.value) == "the model could not process the input: Input is bad"
    assert count(registry, "m", "400") == 1


@pytest.mark.parametrize("fault", [ValueError("a bug in a signature"), MemoryError(),
                                   RuntimeError("NotFoundError: assets/vocab.txt")])
def test_a_fault_of_the_model_or_server_is_a_500(fault):
    registry = Registry(fail=fault)
    predictor = Predictor(registry, protocol="grpc")
    with pytest.raises(RequestError) as err:
        run(predictor, "m", predictor.json_body({"instances": [1.0]}))
    assert err.value.status == 500
    assert count(registry, "m", "500", "grpc") == 1


def test_an_unexpected_error_in_the_front_end_path_is_a_counted_500():
    registry = Registry()
    predictor = Predictor(registry, protocol="rest")
    with pytest.raises(RequestError) as err:
        run(predictor, "m", lambda servable: 1 / 0)
    assert err.value.status == 500 and "ZeroDivisionError" in str(err.value)
    assert count(registry, "m", "500") == 1


def test_images_are_checked_by_the_configured_limits():
    predictor = Predictor(Registry(), protocol="rest")
    image = {"b64": base64.b64encode(b"\0" * 2000).decode()}
    bytes_sig = Signature("serving_default", {"b": TensorSpec("b", "string", (None,))}, {})
    with pytest.raises(RequestError, match="the limit is 1,000") as err:
        predictor.json_body({"instances": [image]})(SimpleNamespace(
            signatures={"serving_default": bytes_sig}))
    assert err.value.status == 413


class AppRegistry(Registry):
    """Adds what the REST app's other routes and its lifespan use."""

    def states(self, model):
        self.get(model)
        return [SimpleNamespace(version=3, state="AVAILABLE", error="")]

    def ready(self):
        return {"m": 3}

    def close(self):
        pass


def test_the_rest_front_end_maps_the_core_to_http():
    from fastapi.testclient import TestClient

    from dlpipe.serving.app import create_app

    registry = AppRegistry()
    cfg = SimpleNamespace(serving=ServingConfig(max_body_bytes=200))
    with TestClient(create_app(cfg, registry=registry, poll=False)) as client:
        ok = client.post("/v1/models/m:predict", json={"inputs": [1.0, 2.0]})
        assert ok.status_code == 200 and ok.json() == {"outputs": [7.0, 7.0]}
        assert ok.headers["x-model-version"] == "3"
        cases = [("/v1/models/m:predict", b"{", 400, "malformed JSON"),
                 ("/v1/models/m:predict", b"[" + b"1," * 150 + b"1]", 413, "the limit is 200"),
                 ("/v1/models/x:predict", b"{}", 404, "not served"),
                 ("/v1/models/m:classify", b"{}", 400, "not supported")]
        for path, body, status, message in cases:
            r = client.post(path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == status and message in r.text, (path, r.text)
        assert client.get("/v1/models/m").json()["model_version_status"][0]["state"] == "AVAILABLE"
        assert client.get("/v1/models/x/metadata").status_code == 404
        assert client.get("/readyz").json() == {"ready": True, "models": {"m": 3}, "waiting_for": []}
        assert 'code="413"' in client.get("/metrics").text
    assert count(registry, "m", "400") == 1 and count(registry, "_unknown", "404") == 1
