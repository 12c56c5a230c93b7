"""Limits before work (issue 16): image headers, a pixel budget per request, gRPC tensors by
their declared shape, a bounded batching queue with deadlines, and admission per protocol."""

from __future__ import annotations

import asyncio
import struct
import threading
import time
import zlib
from types import SimpleNamespace

import numpy as np
import pytest

from dlpipe.core.config import ServingConfig
from dlpipe.serving.batching import Batcher, DeadlineExceeded, Overloaded
from dlpipe.serving.images import image_checker
from dlpipe.serving.metrics import Metrics
from dlpipe.serving.predict import PixelBudget, Predictor
from dlpipe.serving.protocol import RequestError
from dlpipe.serving.servable import TensorSpec
from dlpipe.serving.tensors import check_tensor_proto


def png_header(width: int, height: int) -> bytes:
    """A valid PNG declaring ``width`` x ``height``: a few dozen bytes whatever the size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def refused(call, *args, **kwargs) -> RequestError:
    with pytest.raises(RequestError) as err:
        call(*args, **kwargs)
    return err.value


# -- images -----------------------------------------------------------------------------
def test_an_image_past_pillows_own_bomb_limit_is_too_large_not_unreadable():
    import io

    from PIL import Image

    check = image_checker(max_bytes=10_000, max_pixels=4_194_304)
    data = png_header(20_000, 20_000)
    with pytest.raises(Image.DecompressionBombError):  # what made it a 400 before
        Image.open(io.BytesIO(data))
    err = refused(check, data, "image_bytes[3]")
    assert err.status == 413 and "20000x20000 pixels" in str(err) and "image_bytes[3]" in str(err)
    assert check(png_header(2048, 2048), "x") == 2048 * 2048


def test_only_the_configured_formats_are_opened():
    import io

    from PIL import Image

    jpeg = io.BytesIO()
    Image.new("L", (8, 8)).save(jpeg, format="JPEG")
    png_only = image_checker(max_bytes=10_000, max_pixels=100, formats=("PNG",))
    assert png_only(png_header(8, 8), "x") == 64
    assert "not a PNG image" in str(refused(png_only, jpeg.getvalue(), "x"))
    assert image_checker(max_bytes=10_000, max_pixels=100)(jpeg.getvalue(), "x") == 64


def test_the_pixels_of_one_request_are_budgeted_from_the_headers():
    budget = PixelBudget(image_checker(max_bytes=10_000, max_pixels=2048 * 2048), 3 * 2048 * 2048)
    for i in range(3):
        budget(png_header(2048, 2048), f"image_bytes[{i}]")
    err = refused(budget, png_header(2048, 2048), "image_bytes[3]")
    assert err.status == 413 and "image_bytes[3]" in str(err) and "12,582,912 pixels" in str(err)


# -- gRPC tensors -----------------------------------------------------------------------
LIMITS = {"max_instances": 256, "max_elements": 1_000_000, "max_bytes": 4_000_000}
PIXELS = TensorSpec("pixels", "float32", (None, 8, 8, 1))
BYTES = TensorSpec("image_bytes", "string", (None,))


def proto(dims, dtype="DT_FLOAT", **fields):
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d)
                                                   for d in dims])
    return tensor_pb2.TensorProto(dtype=types_pb2.DataType.Value(dtype), tensor_shape=shape, **fields)


@pytest.mark.parametrize("dims, fields, spec, status, message", [
    ([256, 10**9], {"float_val": [0.0]}, PIXELS, 413, "256,000,000,000 elements"),
    ([10**6, 8, 8, 1], {"float_val": [0.0]}, PIXELS, 413, "1,000,000 examples"),
    ([200, 8, 8, 100], {}, None, 413, "elements"),
    ([1, 2**62, 2**62], {}, None, 413, "elements"),
    ([10**9], {"string_val": [b"x"]}, BYTES, 413, "examples"),
    ([2, 8, 8, 1], {"tensor_content": b"\0" * 12}, PIXELS, 400, "tensor_content has 12 bytes"),
    ([2, 8, 8, 1], {"float_val": [0.0] * 129}, PIXELS, 400, "129 values"),
    ([2, 8, 8], {"float_val": [0.0]}, PIXELS, 400, "has shape [2, 8, 8]"),
    ([2, 4, 8, 1], {"float_val": [0.0]}, PIXELS, 400, "has shape"),
    ([2, -8, 8, 1], {}, PIXELS, 400, "negative dimension"),
])
def test_a_tensor_is_refused_by_its_declared_shape_before_it_exists(dims, fields, spec, status, message):
    err = refused(check_tensor_proto, proto(dims, **fields), "pixels", spec, **LIMITS)
    assert (err.status, message in str(err)) == (status, True), str(err)


def test_bytes_limit_by_dtype_size_and_dtype_must_match_the_signature():
    double = proto([1, 8, 8, 1], "DT_DOUBLE")
    assert refused(check_tensor_proto, double, "pixels", PIXELS, **LIMITS).status == 400
    assert refused(check_tensor_proto, double, "pixels", None, **{**LIMITS, "max_bytes": 511}).status == 413
    check_tensor_proto(proto([2, 8, 8, 1], tensor_content=b"\0" * 512), "pixels", PIXELS, **LIMITS)
    check_tensor_proto(proto([3], "DT_STRING", string_val=[b"a"]), "image_bytes", BYTES, **LIMITS)


# -- batching ---------------------------------------------------------------------------
class SlowModel:
    """Records what runs; each call waits for ``release``."""

    def __init__(self) -> None:
        self.calls: list[list[float]] = []
        self.release = threading.Event()

    def __call__(self, inputs):
        self.release.wait(5)
        self.calls.append(inputs["x"].tolist())
        return {"y": inputs["x"] * 2}


def test_a_full_queue_sheds_and_expired_or_cancelled_work_is_dropped():
    model = SlowModel()

    async def go():
        batcher = Batcher(model, max_size=8, max_queued=4)
        one = lambda v: {"x": np.array([v], np.float32)}  # noqa: E731
        first = asyncio.ensure_future(batcher.submit(one(1), 1))  # runs, blocks the thread
        await asyncio.sleep(0.05)
        late = asyncio.ensure_future(batcher.submit(one(2), 1, deadline=time.monotonic() + 0.1))
        gone = asyncio.ensure_future(batcher.submit(one(3), 1))
        kept = asyncio.ensure_future(batcher.submit({"x": np.array([4, 4], np.float32)}, 2))
        await asyncio.sleep(0.01)
        assert batcher.queued == 4
        with pytest.raises(Overloaded, match="the limit is 4"):
            await batcher.submit(one(5), 1)
        gone.cancel()
        with pytest.raises(DeadlineExceeded):
            await late
        model.release.set()
        assert (await first)["y"].tolist() == [2.0]
        assert (await kept)["y"].tolist() == [8.0, 8.0]
        batcher.close()

    asyncio.run(go())
    assert model.calls == [[1.0], [4.0, 4.0]]  # 2 (deadline) and 3 (cancelled) never ran


def test_a_batch_holds_at_most_one_requests_worth_of_pixels():
    model = SlowModel()
    model.release.set()

    async def go():
        batcher = Batcher(model, max_size=64, max_cost=100)
        blocker = asyncio.ensure_future(batcher.submit({"x": np.zeros(1, np.float32)}, 1))
        parts = [batcher.submit({"x": np.full(1, i, np.float32)}, 1, cost=60) for i in (1, 2, 3)]
        await asyncio.gather(blocker, *parts)
        batcher.close()

    asyncio.run(go())
    assert model.calls == [[0.0, 1.0], [2.0], [3.0]]  # 60 + 60 pixels would be over 100


# -- admission --------------------------------------------------------------------------
def test_requests_over_the_concurrency_limit_get_429():
    registry = SimpleNamespace(cfg=SimpleNamespace(serving=ServingConfig(max_concurrent_requests=2)),
                               models=["m"], metrics=Metrics())
    predictor = Predictor(registry, protocol="rest")
    with predictor.counted("m"), predictor.counted("m"):
        err = refused(lambda: predictor.counted("m").__enter__())
        assert err.status == 429 and "the limit is 2" in str(err)
    with predictor.counted("m"):
        assert predictor.in_flight == 1
    assert registry.metrics.registry.get_sample_value(
        "dlpipe_serve_requests_total", {"model": "m", "api": "predict", "protocol": "rest",
                                        "code": "429"}) == 1


def test_the_deadline_is_the_sooner_of_the_servers_and_the_clients():
    registry = SimpleNamespace(cfg=SimpleNamespace(serving=ServingConfig(request_timeout_s=5)),
                               models=["m"], metrics=Metrics())
    predictor = Predictor(registry, protocol="grpc")
    now = time.monotonic()
    assert 4.9 < predictor.deadline() - now < 5.5
    assert 0.9 < predictor.deadline(1.0) - now < 1.5
    assert 4.9 < predictor.deadline(60.0) - now < 5.5
