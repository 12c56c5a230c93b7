"""`dlpipe serve` as a real process on the real model store: the TF Serving REST contract
(every bad input included), gRPC, metrics, and a hot reload under load with no failed request."""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from dlpipe.core.config import with_overrides
from dlpipe.core.process import free_ports
from dlpipe.core.s3 import s3_client
from dlpipe.registry.release import promote
from dlpipe.registry.store import publish_model
from dlpipe.registry.sync import download_version
from dlpipe.serving.launch import running_server
from tests.helpers import read_delta_with_delta_rs

pytestmark = pytest.mark.integration
LIMITS = {"serving.max_body_bytes": 200_000, "serving.max_instances": 16,
          "serving.max_image_bytes": 20_000, "serving.max_image_pixels": 10_000,
          "serving.max_request_pixels": 30_000}


def png(size: tuple[int, int] = (8, 8), value: int = 128) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", size, value).save(buffer, format="PNG")
    return buffer.getvalue()


def noisy_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8), dtype=np.uint8)).save(
        buffer, format="PNG")
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A valid PNG declaring ``width`` x ``height`` in a few dozen bytes (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


@pytest.fixture(scope="module")
def server(served_model, tmp_path_factory):
    cfg = with_overrides(served_model, {
        **LIMITS, "serving.model_dir": str(tmp_path_factory.mktemp("served-models"))})
    (grpc_port,) = free_ports(1)
    name = cfg.training.model_name
    with running_server(cfg, models=[name], grpc_port=grpc_port, extra=["--poll-interval", "1"],
                        log=cfg.serving.model_dir.parent / "serve.log") as running:
        yield {"url": running.url, "grpc": running.grpc, "cfg": cfg, "name": name,
               "model_dir": cfg.serving.model_dir, "proc": running.process}


@pytest.fixture(scope="module")
def samples(served_model):
    """Real clean images and labels (PNG bytes as the clean table stores them)."""
    table = read_delta_with_delta_rs(served_model, served_model.tables.clean).to_pyarrow_table()
    rows = table.select(["id", "image_png", "label"]).to_pylist()[:12]
    return [(r["image_png"], r["label"]) for r in rows]


@pytest.fixture(scope="module")
def in_process(server):
    import tensorflow as tf

    path = download_version(s3_client(server["cfg"]), server["cfg"].buckets.models, server["name"],
                            1, server["model_dir"])
    return tf.saved_model.load(str(path))


def test_status_metadata_and_readiness(server):
    url, name = server["url"], server["name"]
    status = httpx.get(f"{url}/v1/models/{name}").json()
    assert status == {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                                "status": {"error_code": "OK", "error_message": ""}}]}
    assert httpx.get(f"{url}/v1/models/{name}/versions/1").status_code == 200
    meta = httpx.get(f"{url}/v1/models/{name}/metadata").json()
    assert meta["model_spec"] == {"name": name, "signature_name": "", "version": "1"}
    sigs = meta["metadata"]["signature_def"]["signature_def"]
    assert set(sigs) >= {"serving_default", "serving_bytes", "serving_pixels"}
    assert sigs["serving_default"]["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert sigs["serving_pixels"]["inputs"]["pixels"]["tensor_shape"]["dim"][1:] == [
        {"size": "8", "name": ""}, {"size": "8", "name": ""}, {"size": "1", "name": ""}]
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{url}/readyz").json()["models"] == {name: 1}


def test_row_and_columnar_predictions_equal_in_process_signature(server, samples, in_process):
    import tensorflow as tf

    url, name = server["url"], server["name"]
    images = [image for image, _ in samples]
    rows = httpx.post(f"{url}/v1/models/{name}:predict",
                      json={"instances": [b64(i) for i in images]}).json()["predictions"]
    named = httpx.post(f"{url}/v1/models/{name}/versions/1:predict",
                       json={"instances": [{"image_bytes": b64(i)} for i in images]}).json()
    columns = httpx.post(f"{url}/v1/models/{name}:predict", json={
        "signature_name": "serving_bytes", "inputs": {"image_bytes": [b64(i) for i in images]}}).json()
    expected = in_process.signatures["serving_default"](image_bytes=tf.constant(images))
    want = expected["probabilities"].numpy()
    np.testing.assert_allclose([r["probabilities"] for r in rows], want, rtol=1e-5, atol=1e-6)
    assert [r["class_name"] for r in rows] == [c.decode() for c in expected["class_name"].numpy()]
    assert named["predictions"] == rows
    np.testing.assert_allclose(columns["outputs"]["probabilities"], want, rtol=1e-5, atol=1e-6)
    assert columns["outputs"]["class_index"] == expected["class_index"].numpy().tolist()
    correct = sum(r["class_name"] == label for r, (_, label) in zip(rows, samples, strict=True))
    assert correct >= 0.8 * len(samples)


def test_pixels_signature(server, samples, in_process):
    import tensorflow as tf

    from models.preprocess import decode_images

    pixels = decode_images(tf.constant([samples[0][0]]), height=8, width=8, channels=1).numpy()
    answer = httpx.post(f"{server['url']}/v1/models/{server['name']}:predict", json={
        "signature_name": "serving_pixels", "instances": pixels.tolist()}).json()
    want = in_process.signatures["serving_pixels"](pixels=tf.constant(pixels))["probabilities"]
    np.testing.assert_allclose(answer["predictions"][0]["probabilities"], want.numpy()[0], rtol=1e-5)


BAD = {
    "malformed JSON": (b'{"instances": [1,', 400, "malformed JSON"),
    "not an object": (b"[1, 2]", 400, "must be a JSON object"),
    "no instances or inputs": (b'{"signature_name": "serving_default"}', 400, "exactly one of"),
    "both formats": (json.dumps({"instances": [], "inputs": []}).encode(), 400, "exactly one of"),
    "unknown field": (b'{"instances": [], "extra": 1}', 400, "unknown request field"),
    "empty batch": (b'{"instances": []}', 400, "no examples"),
    "unknown signature": (b'{"signature_name": "nope", "instances": [1]}', 400, "signature_name"),
    "bad base64": (b'{"instances": [{"b64": "not base64!"}]}', 400, "bad base64"),
    "b64 not a string": (b'{"instances": [{"b64": 12}]}', 400, "bytes must be given"),
    "undecodable image": (json.dumps({"instances": [b64(b"\x00" * 64)]}).encode(), 400,
                          "not a PNG or JPEG"),
    "damaged PNG": (json.dumps({"instances": [b64(png()[:30])]}).encode(), 400, "image"),
    "truncated PNG data": (json.dumps({"instances": [b64(noisy_png()[:-20])]}).encode(), 400,
                           "could not process the input"),
    "oversized image bytes": (json.dumps({"instances": [b64(os.urandom(30_000))]}).encode(), 413,
                              "the limit is 20,000"),
    "oversized image pixels": (json.dumps({"instances": [b64(png((200, 200)))]}).encode(), 413,
                               "200x200 pixels"),
    "past Pillow's own bomb limit": (json.dumps({"instances": [b64(png_header(20_000, 20_000))]}
                                                ).encode(), 413, "20000x20000 pixels"),
    "request pixel budget": (json.dumps({"instances": [b64(png((90, 90)))] * 4}).encode(), 413,
                             "image_bytes[3]: the request's images have over 30,000 pixels"),
    "too many instances": (json.dumps({"instances": [b64(png())] * 17}).encode(), 413,
                           "the limit is 16"),
    "wrong shape": (json.dumps({"signature_name": "serving_pixels",
                                "instances": [[[0.5]] * 8]}).encode(), 400, "has shape"),
    "wrong dtype": (json.dumps({"signature_name": "serving_pixels",
                                "instances": [[[["x"]] * 8] * 8]}).encode(), 400, "DT_FLOAT"),
    "NaN pixels": (b'{"signature_name": "serving_pixels", "inputs": ' + json.dumps(
        [[[[0.1]] * 8] * 8]).encode().replace(b"0.1", b"NaN", 1) + b"}", 400, "malformed JSON"),
    "body too large": (json.dumps({"instances": [b64(png())] * 4, "pad": "x" * 250_000}).encode(),
                       413, "limit"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gets_a_clear_4xx_json_error(server, case):
    body, status, message = BAD[case]
    r = httpx.post(f"{server['url']}/v1/models/{server['name']}:predict", content=body,
                   headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert message in r.json()["error"], r.json()


@pytest.mark.parametrize("path, status", [
    ("/v1/models/nope:predict", 404),
    ("/v1/models/{name}/versions/7:predict", 404),
    ("/v1/models/{name}/versions/x:predict", 400),
    ("/v1/models/..%2F..%2Fetc%2Fpasswd:predict", 404),
    ("/v1/models/{name}/versions/..%2F1:predict", 404),
    ("/v1/models/{name}:classify", 400),
])
def test_unknown_model_version_or_method(server, path, status):
    r = httpx.post(server["url"] + path.format(name=server["name"]), json={"instances": [b64(png())]})
    assert r.status_code == status, r.text
    assert "error" in r.json()
    assert httpx.get(server["url"] + "/v1/models/nope").status_code == 404


def test_server_survives_bad_input_and_counts_it_in_metrics(server):
    text = httpx.get(f"{server['url']}/metrics").text
    name = server["name"]
    assert f'dlpipe_serve_model_version{{model="{name}"}} 1.0' in text
    assert f'dlpipe_serve_requests_total{{api="predict",code="400",model="{name}",protocol="rest"}}' in text
    assert f'dlpipe_serve_requests_total{{api="predict",code="200",model="{name}",protocol="rest"}}' in text
    assert "dlpipe_serve_request_seconds_bucket" in text
    assert server["proc"].poll() is None
    assert httpx.get(f"{server['url']}/readyz").status_code == 200


def test_grpc_prediction_service_matches_rest(server, samples):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import (
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    images = [image for image, _ in samples[:5]]
    with grpc.insecure_channel(server["grpc"]) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = server["name"]
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(images))
        response = stub.Predict(request, timeout=30)
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec=request.model_spec), timeout=30)
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([b"not an image"]))
        with pytest.raises(grpc.RpcError) as bad:
            stub.Predict(request, timeout=30)
    rest = httpx.post(f"{server['url']}/v1/models/{server['name']}:predict",
                      json={"inputs": [b64(i) for i in images]}).json()["outputs"]
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["probabilities"]),
                               rest["probabilities"], rtol=1e-5)
    assert response.model_spec.version.value == 1
    assert [s.version for s in status.model_version_status] == [1]
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a PNG or JPEG" in bad.value.details()


def _memory_kb(pid: int) -> dict[str, int]:
    fields = (line.split(":") for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {k: int(v.split()[0]) for k, v in fields if k in ("VmRSS", "VmHWM")}


def _tensor(dims: list[int], dtype: str = "DT_FLOAT", **fields):
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d)
                                                   for d in dims])
    return tensor_pb2.TensorProto(dtype=types_pb2.DataType.Value(dtype), tensor_shape=shape, **fields)


def test_grpc_tensor_bombs_are_refused_by_their_declared_shape(server):
    """A few dozen bytes declaring a huge shape: refused before TensorFlow expands it, so the
    server's peak RSS does not move; sizes over a limit are RESOURCE_EXHAUSTED, content that
    does not match its shape INVALID_ARGUMENT; image limits hold over gRPC too."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    pixels = ("serving_pixels", "pixels")
    cases = [
        (pixels, _tensor([256, 10**9], float_val=[0.5]), "RESOURCE_EXHAUSTED", "examples"),
        (pixels, _tensor([16, 1024, 1024, 1], float_val=[0.5]), "RESOURCE_EXHAUSTED", "elements"),
        (pixels, _tensor([8, 8, 8, 1], tensor_content=b"\0" * 12), "INVALID_ARGUMENT",
         "tensor_content has 12 bytes"),
        (pixels, _tensor([2, 8, 8, 1], float_val=[0.5] * 200), "INVALID_ARGUMENT", "200 values"),
        (pixels, _tensor([2, 64, 64, 1], float_val=[0.5]), "INVALID_ARGUMENT", "has shape"),
        (("", "image_bytes"), _tensor([10**9], "DT_STRING", string_val=[png()]),
         "RESOURCE_EXHAUSTED", "examples"),
        (("", "image_bytes"), _tensor([1], "DT_STRING", string_val=[png_header(20_000, 20_000)]),
         "RESOURCE_EXHAUSTED", "20000x20000 pixels"),
        (("", "image_bytes"), _tensor([4], "DT_STRING", string_val=[png((90, 90))]),
         "RESOURCE_EXHAUSTED", "over 30,000 pixels"),
    ]
    pid = server["proc"].pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # peak RSS (VmHWM) := current RSS
    before = _memory_kb(pid)
    with grpc.insecure_channel(server["grpc"]) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for (signature, key), tensor, code, message in cases:
            request = predict_pb2.PredictRequest()
            request.model_spec.name, request.model_spec.signature_name = server["name"], signature
            request.inputs[key].CopyFrom(tensor)
            with pytest.raises(grpc.RpcError) as err:
                stub.Predict(request, timeout=20)
            assert (err.value.code().name, message in err.value.details()) == (code, True), \
                err.value.details()
    after = _memory_kb(pid)
    assert after["VmHWM"] - before["VmRSS"] < 100_000, (before, after)  # KiB: under 100 MB
    assert server["proc"].poll() is None


def _republish(server, tmp_path: Path, *, promoted: bool) -> int:
    cfg = server["cfg"]
    local, client = server["model_dir"] / server["name"] / "1", s3_client(cfg)
    version = publish_model(client, cfg.buckets.models, server["name"], local, extras={},
                            info={"promoted": promoted, "image": {"height": 8, "width": 8, "channels": 1}})
    if promoted:  # what training does after its checks: move the release pointer
        promote(client, cfg.buckets.models, server["name"], version, reason="test")
    return version


def test_hot_reload_under_load_fails_no_request(server, samples, tmp_path):
    """Requests run without pause while a new version is promoted: every one succeeds, the
    server moves to the new version without a restart, and an unpromoted or incomplete
    newer version is never served."""
    url, name = server["url"], server["name"]
    body = {"instances": [b64(samples[0][0])]}
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                r = client.post(f"{url}/v1/models/{name}:predict", json=body)
                seen.append((r.status_code, r.headers.get("x-model-version", "")))

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        time.sleep(1)
        assert _republish(server, tmp_path, promoted=True) == 2
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any(v == "2" for _, v in seen[-20:]):
            time.sleep(0.5)
        # an unpromoted version 3 and a half-uploaded version 4 must not be picked up
        assert _republish(server, tmp_path, promoted=False) == 3
        cfg = server["cfg"]
        s3_client(cfg).put_object(Bucket=cfg.buckets.models, Key=f"{name}/4/saved_model.pb", Body=b"x")
        time.sleep(4)
    finally:
        stop.set()
        for w in workers:
            w.join()
    codes = {code for code, _ in seen}
    versions = [v for _, v in seen]
    assert codes == {200}, [s for s in seen if s[0] != 200][:5]
    assert len(seen) > 50
    assert versions[0] == "1" and versions[-1] == "2"
    assert versions.index("2") > 0 and "1" not in versions[versions.index("2") + 50:]
    assert set(versions) == {"1", "2"}
    status = httpx.get(f"{url}/v1/models/{name}").json()["model_version_status"]
    assert [s["version"] for s in status] == ["2"]
    assert sorted(p.name for p in (server["model_dir"] / name).iterdir()) == ["1", "2"]
