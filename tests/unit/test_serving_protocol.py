"""TF Serving's JSON formats as pure functions: parsing, validation and answers."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from dlpipe.serving.images import image_checker
from dlpipe.serving.protocol import RequestError, check_arrays, format_predict, parse_predict
from dlpipe.serving.servable import Signature, TensorSpec

BYTES = Signature("serving_default", {"image_bytes": TensorSpec("image_bytes", "string", (None,))},
                  {"class_index": TensorSpec("class_index", "int32", (None,))})
PIXELS = Signature("serving_pixels", {"pixels": TensorSpec("pixels", "float32", (None, 2, 2, 1))},
                   {"probabilities": TensorSpec("probabilities", "float32", (None, 3))})
TWO = Signature("two", {"a": TensorSpec("a", "float32", (None,)), "b": TensorSpec("b", "int64", (None,))},
                {"y": TensorSpec("y", "float32", (None,))})
SIGS = {s.name: s for s in (BYTES, PIXELS, TWO)}


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def parse(body, **kw):
    return parse_predict(body, SIGS, max_instances=kw.pop("max_instances", 8), **kw)


def test_row_format_single_input_values_named_rows_and_b64():
    plain = parse({"instances": [b64(b"ab"), b64(b"cd")]})
    named = parse({"instances": [{"image_bytes": b64(b"ab")}, {"image_bytes": b64(b"cd")}]})
    assert plain.signature == "serving_default" and plain.row_format and plain.batch_size == 2
    assert list(plain.inputs["image_bytes"]) == [b"ab", b"cd"] == list(named.inputs["image_bytes"])


def test_columnar_format_and_multiple_inputs():
    col = parse({"signature_name": "two", "inputs": {"a": [1.5, 2], "b": [3, 4]}})
    rows = parse({"signature_name": "two", "instances": [{"a": 1.5, "b": 3}, {"a": 2, "b": 4}]})
    assert not col.row_format and rows.row_format
    for p in (col, rows):
        assert p.inputs["a"].dtype == np.float32 and p.inputs["b"].dtype == np.int64
        assert p.inputs["a"].tolist() == [1.5, 2.0] and p.inputs["b"].tolist() == [3, 4]
    bare = parse({"inputs": [b64(b"x")]})
    assert list(bare.inputs["image_bytes"]) == [b"x"]


@pytest.mark.parametrize("body, status, message", [
    ([], 400, "JSON object"),
    ({"instances": [1], "inputs": [1]}, 400, "exactly one"),
    ({}, 400, "exactly one"),
    ({"instances": {}}, 400, "must be a list"),
    ({"instances": []}, 400, "no examples"),
    ({"instances": [b64(b"x")], "foo": 1}, 400, "unknown request field"),
    ({"signature_name": "x", "instances": [1]}, 400, "not found"),
    ({"instances": [{"b64": "%%%"}]}, 400, "bad base64"),
    ({"instances": [{"b64": "YQ==", "x": 1}]}, 400, "bytes must be given"),
    ({"instances": [3]}, 400, "expected a string"),
    ({"instances": [b64(b"x")] * 9}, 413, "the limit is 8"),
    ({"signature_name": "serving_pixels", "instances": [[[[0.0]] * 2] * 3]}, 400, "has shape [1, 3, 2, 1]"),
    ({"signature_name": "serving_pixels", "instances": [[[["a"]] * 2] * 2]}, 400, "DT_FLOAT"),
    ({"signature_name": "serving_pixels", "instances": [[[[float("inf")]] * 2] * 2]}, 400, "NaN or infinite"),
    ({"signature_name": "two", "inputs": {"a": [1.0]}}, 400, "takes ['a', 'b']"),
    ({"signature_name": "two", "inputs": {"a": [1.0], "b": [1, 2]}}, 400, "different batch sizes"),
    ({"signature_name": "two", "instances": [{"a": 1.0}]}, 400, "takes ['a', 'b']"),
])
def test_bad_requests_name_what_is_wrong(body, status, message):
    with pytest.raises(RequestError) as err:
        parse(body)
    assert err.value.status == status
    assert message in str(err.value)


def test_format_row_and_columnar_answers():
    outputs = {"class_index": np.array([1, 2], np.int32),
               "class_name": np.array([b"one", b"\xff"], dtype=object),
               "probabilities": np.array([[0.1, 0.9], [0.8, 0.2]], np.float32)}
    rows = format_predict(outputs, row_format=True)["predictions"]
    assert rows[0]["class_index"] == 1 and rows[0]["class_name"] == "one"
    assert rows[1]["class_name"] == {"b64": base64.b64encode(b"\xff").decode()}
    assert format_predict(outputs, row_format=False)["outputs"]["class_index"] == [1, 2]
    single = {"y": np.array([1.0, 2.0])}
    assert format_predict(single, row_format=True) == {"predictions": [1.0, 2.0]}
    assert format_predict(single, row_format=False) == {"outputs": [1.0, 2.0]}


def test_image_checks_run_before_tensorflow(tmp_path):
    import io

    from PIL import Image

    def png(size):
        buffer = io.BytesIO()
        Image.new("L", size).save(buffer, format="PNG")
        return buffer.getvalue()

    check = image_checker(max_bytes=5000, max_pixels=400)
    check(png((20, 20)), "x[0]")
    cases = [(png((21, 20)), 413, "21x20 pixels"), (b"GIF89a" + b"\0" * 20, 400, "not a PNG"),
             (b"\0" * 6000, 413, "6,000 bytes"), (png((8, 8))[:20], 400, "damaged")]
    for data, status, message in cases:
        with pytest.raises(RequestError) as err:
            parse({"instances": [b64(data)]}, check_bytes=check)
        assert err.value.status == status and message in str(err.value)
        assert "image_bytes[0]" in str(err.value)


def test_typed_tensors_get_the_same_checks():
    ok = {"pixels": np.zeros((2, 2, 2, 1), np.float32)}
    assert check_arrays(ok, PIXELS, max_instances=4) == 2
    with pytest.raises(RequestError, match="has shape"):
        check_arrays({"pixels": np.zeros((2, 3, 2, 1), np.float32)}, PIXELS, max_instances=4)
    with pytest.raises(RequestError, match="the limit is 1"):
        check_arrays(ok, PIXELS, max_instances=1)
    with pytest.raises(RequestError, match="takes"):
        check_arrays({"x": np.zeros(2)}, PIXELS, max_instances=4)
