"""A gRPC ``TensorProto`` checked by its declared shape before it becomes an array.

``tf.make_ndarray`` expands a tensor to its declared shape first (a shape with one value is
padded with copies of it), so a request of a few dozen bytes declaring ``[256, 10**9]``
would allocate gigabytes. The declared shape, element count and byte size are checked here,
before any allocation: over a limit is a 413 (gRPC ``RESOURCE_EXHAUSTED``); a shape that is
not the signature's, a dtype that is not the input's, or content that does not match the
declared shape is a 400 (``INVALID_ARGUMENT``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dlpipe.serving.protocol import RequestError, format_shape
from dlpipe.serving.servable import DTYPES, TensorSpec

# The TensorProto field holding the values of each dtype (TF's make_ndarray reads these).
_VALUES = {"string": "string_val", "float32": "float_val", "float64": "double_val",
           "int32": "int_val", "uint8": "int_val", "int64": "int64_val", "bool": "bool_val"}


def check_tensor_proto(proto: Any, key: str, spec: TensorSpec | None, *, max_instances: int,
                       max_elements: int, max_bytes: int) -> None:
    """Raise ``RequestError`` unless ``proto`` is a tensor of acceptable size for ``spec``
    (None: the input is not in the signature; only the size limits apply)."""
    if proto.tensor_shape.unknown_rank:
        raise RequestError(f"input {key!r} has an unknown rank; give its shape")
    dims = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in dims):
        raise RequestError(f"input {key!r} declares a negative dimension: {format_shape(dims)}")
    if dims and dims[0] > max_instances:
        raise RequestError(f"input {key!r} declares {dims[0]:,} examples; the limit is "
                           f"{max_instances}", status=413)
    elements = math.prod(dims)
    if elements > max_elements:
        raise RequestError(f"input {key!r} declares {format_shape(dims)}, {elements:,} elements; "
                           f"the limit is {max_elements:,} per tensor", status=413)
    dtype = _dtype(proto.dtype)
    itemsize = np.dtype(DTYPES[dtype][1]).itemsize if dtype not in (None, "string") else 0
    if elements * itemsize > max_bytes:
        raise RequestError(f"input {key!r} declares {elements * itemsize:,} bytes; the limit is "
                           f"{max_bytes:,} per tensor", status=413)
    if spec is None:
        return
    if dtype != spec.dtype:
        raise RequestError(f"input {key!r} must be {DTYPES[spec.dtype][0]}")
    if len(dims) != len(spec.shape) or any(
            want is not None and got != want for got, want in zip(dims, spec.shape, strict=True)):
        raise RequestError(f"input {key!r} has shape {format_shape(dims)}; the signature takes "
                           f"{format_shape(spec.shape)}")
    if proto.tensor_content:
        if len(proto.tensor_content) != elements * itemsize:
            raise RequestError(f"input {key!r}: tensor_content has {len(proto.tensor_content):,} "
                               f"bytes; shape {format_shape(dims)} takes {elements * itemsize:,}")
    elif (count := len(getattr(proto, _VALUES[dtype]))) > elements:
        raise RequestError(f"input {key!r} has {count:,} values; shape {format_shape(dims)} "
                           f"takes {elements:,}")


def _dtype(enum: int) -> str | None:
    """Our dtype name ("float32", ...) of a TensorProto dtype enum; None if not handled."""
    from tensorflow.core.framework import types_pb2

    name = types_pb2.DataType.Name(enum) if enum in types_pb2.DataType.values() else ""
    return next((k for k, (tf_name, _) in DTYPES.items() if tf_name == name), None)
