"""TensorFlow Serving's JSON predict API as pure functions: body -> tensors -> body.

Follows https://www.tensorflow.org/tfx/serving/api_rest: the row format (``instances``) and
the columnar format (``inputs``), ``{"b64": ...}`` for bytes, ``signature_name``, and answers
``{"predictions": ...}`` or ``{"outputs": ...}``; errors are ``{"error": "..."}``. Every way
a request can be wrong raises ``RequestError`` with a message that says which part is wrong,
before any tensor reaches TensorFlow.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlpipe.contract.signatures import DEFAULT_SIGNATURE
from dlpipe.serving.servable import DTYPES, Signature, TensorSpec


class RequestError(Exception):
    """A request that is not answered with a prediction: the HTTP status (4xx the client's
    error, 429/503 load shed, 500 a server fault) and the message for ``{"error": ...}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PredictRequest:
    signature: str
    inputs: dict[str, np.ndarray]
    row_format: bool
    batch_size: int
    pixels: int = 0     # decoded pixels of its images, from their headers


def parse_predict(body: Any, signatures: Mapping[str, Signature], *, max_instances: int,
                  check_bytes: Callable[[bytes, str], object] | None = None) -> PredictRequest:
    """A decoded JSON body -> validated input arrays for one signature.

    ``check_bytes(value, where)`` is called on every bytes value (the image checks).
    """
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object with \"instances\" or \"inputs\"")
    unknown = set(body) - {"instances", "inputs", "signature_name"}
    if unknown:
        raise RequestError(f"unknown request field(s): {', '.join(sorted(unknown))}; "
                           "expected \"instances\" or \"inputs\", and optionally \"signature_name\"")
    name = body.get("signature_name", DEFAULT_SIGNATURE)
    signature = pick_signature(signatures, name)
    if ("instances" in body) == ("inputs" in body):
        raise RequestError("the request must have exactly one of \"instances\" (row format) "
                           "or \"inputs\" (columnar format)")
    if "instances" in body:
        columns = _rows_to_columns(body["instances"], signature)
        row_format = True
    else:
        columns = _columnar(body["inputs"], signature)
        row_format = False
    arrays: dict[str, np.ndarray] = {}
    batch = None
    for key, spec in signature.inputs.items():
        values = columns[key]
        if not isinstance(values, list):
            raise RequestError(f"input {key!r} must be a list with one entry per example")
        if batch is None:
            batch = len(values)
        elif len(values) != batch:
            raise RequestError(f"inputs have different batch sizes: {key!r} has {len(values)}, "
                               f"others have {batch}")
        if len(values) > max_instances:
            raise RequestError(f"{len(values)} examples in one request; the limit is {max_instances}",
                               status=413)
        arrays[key] = _to_array(values, spec, key, check_bytes)
    if not batch:
        raise RequestError("the request has no examples")
    return PredictRequest(name, arrays, row_format, batch)


def pick_signature(signatures: Mapping[str, Signature], name: Any) -> Signature:
    """The signature a request names (JSON or gRPC), or the error that lists the model's."""
    if not isinstance(name, str) or name not in signatures:
        raise RequestError(f"signature_name {name!r} not found; the model has: "
                           f"{', '.join(sorted(signatures))}")
    return signatures[name]


def check_arrays(arrays: Mapping[str, np.ndarray], signature: Signature, *, max_instances: int,
                 check_bytes: Callable[[bytes, str], object] | None = None) -> int:
    """Tensors that came typed (gRPC) pass the same checks as JSON ones; returns the batch size."""
    missing, extra = set(signature.inputs) - set(arrays), set(arrays) - set(signature.inputs)
    if missing or extra:
        raise RequestError(f"the request has inputs {sorted(arrays)}; the signature "
                           f"{signature.name!r} takes {sorted(signature.inputs)}")
    sizes = {len(a) if a.ndim else -1 for a in arrays.values()}
    if len(sizes) != 1 or -1 in sizes:
        raise RequestError("every input must have the same batch size (first dimension)")
    (batch,) = sizes
    if not batch:
        raise RequestError("the request has no examples")
    if batch > max_instances:
        raise RequestError(f"{batch} examples in one request; the limit is {max_instances}", status=413)
    for key, spec in signature.inputs.items():
        array = arrays[key]
        if spec.dtype == "string":
            if array.dtype != object:
                raise RequestError(f"input {key!r} must be DT_STRING")
            if check_bytes is not None:
                for i, value in enumerate(array.reshape(-1)):
                    check_bytes(value, f"{key}[{i}]")
        else:
            _to_array(array.tolist(), spec, key, None)
    return batch


def _rows_to_columns(instances: Any, signature: Signature) -> dict[str, list[Any]]:
    if not isinstance(instances, list):
        raise RequestError("\"instances\" must be a list, one entry per example")
    names = list(signature.inputs)
    if len(names) == 1 and not all(_is_named_row(r, names) for r in instances):
        return {names[0]: instances}
    columns: dict[str, list[Any]] = {n: [] for n in names}
    for i, row in enumerate(instances):
        if not isinstance(row, dict):
            raise RequestError(f"instances[{i}] must be an object with the inputs "
                               f"{', '.join(names)}")
        missing, extra = set(names) - set(row), set(row) - set(names)
        if missing or extra:
            raise RequestError(f"instances[{i}] has inputs {sorted(row)}; the signature "
                               f"{signature.name!r} takes {names}")
        for n in names:
            columns[n].append(row[n])
    return columns


def _is_named_row(row: Any, names: list[str]) -> bool:
    return isinstance(row, dict) and set(row) == set(names) and "b64" not in row


def _columnar(inputs: Any, signature: Signature) -> dict[str, Any]:
    names = list(signature.inputs)
    if isinstance(inputs, dict) and not (len(names) == 1 and set(inputs) == {"b64"}):
        missing, extra = set(names) - set(inputs), set(inputs) - set(names)
        if missing or extra:
            raise RequestError(f"\"inputs\" has {sorted(inputs)}; the signature "
                               f"{signature.name!r} takes {names}")
        return inputs
    if len(names) != 1:
        raise RequestError(f"\"inputs\" must be an object naming the inputs {names}")
    return {names[0]: inputs}


def _to_array(values: list[Any], spec: TensorSpec, key: str,
              check_bytes: Callable[[bytes, str], object] | None) -> np.ndarray:
    if spec.dtype == "string":
        out = np.empty(len(values), dtype=object)
        for i, value in enumerate(values):
            where = f"{key}[{i}]"
            out[i] = _bytes(value, where)
            if check_bytes is not None:
                check_bytes(out[i], where)
        return out
    try:
        array = np.asarray(values, dtype=DTYPES[spec.dtype][1])
    except (TypeError, ValueError):
        raise RequestError(f"input {key!r} must be {DTYPES[spec.dtype][0]} numbers in nested "
                           f"lists of shape {format_shape(spec.shape)}") from None
    if array.ndim != len(spec.shape) or any(
            want is not None and got != want for got, want in zip(array.shape, spec.shape, strict=True)):
        raise RequestError(f"input {key!r} has shape {format_shape(array.shape)}; the signature "
                           f"takes {format_shape(spec.shape)}")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise RequestError(f"input {key!r} has NaN or infinite values")
    return array


def _bytes(value: Any, where: str) -> bytes:
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise RequestError(f"{where}: bytes must be given as {{\"b64\": \"<base64>\"}}")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError(f"{where}: bad base64 ({exc})") from None
    if isinstance(value, str):
        return value.encode()
    raise RequestError(f"{where}: expected a string or {{\"b64\": ...}}, got {type(value).__name__}")


def format_shape(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("-1" if d is None else str(d) for d in shape) + "]"


def format_predict(outputs: Mapping[str, np.ndarray], *, row_format: bool) -> dict[str, Any]:
    """Output tensors -> TF Serving's answer: one entry per example (row) or per output."""
    plain = {k: _plain(v) for k, v in outputs.items()}
    if not row_format:
        return {"outputs": plain[next(iter(plain))] if len(plain) == 1 else plain}
    if len(plain) == 1:
        return {"predictions": next(iter(plain.values()))}
    names = sorted(plain)
    return {"predictions": [dict(zip(names, row, strict=True))
                            for row in zip(*(plain[n] for n in names), strict=True)]}


def _plain(array: np.ndarray) -> Any:
    if array.dtype == object or array.dtype.kind == "S":
        return _strings(array.tolist())
    return array.tolist()


def _strings(value: Any) -> Any:
    if isinstance(value, list):
        return [_strings(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode()}
    return value
