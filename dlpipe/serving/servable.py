"""One loaded SavedModel version and what its signatures take and return.

Signatures are read from the SavedModel itself, so the server validates requests against
the model it serves, not against a copy of training's assumptions.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# TF dtype names as TF Serving's metadata spells them, and the numpy type a request becomes.
DTYPES: dict[str, tuple[str, Any]] = {
    "string": ("DT_STRING", object),
    "float32": ("DT_FLOAT", np.float32),
    "float64": ("DT_DOUBLE", np.float64),
    "int32": ("DT_INT32", np.int32),
    "int64": ("DT_INT64", np.int64),
    "uint8": ("DT_UINT8", np.uint8),
    "bool": ("DT_BOOL", np.bool_),
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str                      # a key of DTYPES
    shape: tuple[int | None, ...]   # None: any size (the batch dimension is always None)

    def metadata(self, tensor_name: str) -> dict[str, Any]:
        return {
            "dtype": DTYPES[self.dtype][0],
            "tensor_shape": {"dim": [{"size": str(-1 if d is None else d), "name": ""}
                                     for d in self.shape], "unknown_rank": False},
            "name": tensor_name,
        }


@dataclass(frozen=True)
class Signature:
    name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]

    def metadata(self) -> dict[str, Any]:
        return {
            "inputs": {k: v.metadata(f"{self.name}_{k}:0") for k, v in self.inputs.items()},
            "outputs": {k: v.metadata(f"StatefulPartitionedCall:{i}")
                        for i, (k, v) in enumerate(sorted(self.outputs.items()))},
            "method_name": "tensorflow/serving/predict",
        }


@dataclass
class Servable:
    """A model version ready to predict; ``run`` is thread-safe (TensorFlow functions are)."""

    model: str
    version: int
    path: Path
    signatures: dict[str, Signature]
    functions: dict[str, Any] = field(repr=False)
    info: dict[str, Any] = field(default_factory=dict)

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        fn = self.functions[signature]
        tensors = {k: tf.constant(v) if v.dtype != object else tf.constant(list(v), tf.string)
                   for k, v in inputs.items()}
        return {k: v.numpy() for k, v in fn(**tensors).items()}

    def metadata(self) -> dict[str, Any]:
        return {"signature_def": {name: sig.metadata() for name, sig in sorted(self.signatures.items())}}


def _spec(name: str, spec: Any) -> TensorSpec:
    dtype = spec.dtype.name
    if dtype not in DTYPES:
        raise ValueError(f"tensor {name!r} has dtype {dtype}, which the server does not handle")
    return TensorSpec(name, dtype, tuple(spec.shape.as_list()))


def load_servable(path: Path, *, model: str, version: int, warm_up: bool = True) -> Servable:
    """Load ``path`` (a complete local copy) and run each signature once, so the first real
    request does not pay for tracing."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    functions, signatures = {}, {}
    for name, fn in loaded.signatures.items():
        _, kwargs = fn.structured_input_signature
        inputs = {k: _spec(k, s) for k, s in kwargs.items()}
        outputs = {k: _spec(k, s) for k, s in fn.structured_outputs.items()}
        signatures[name] = Signature(name, inputs, outputs)
        functions[name] = fn
    info_file = path / "dlpipe-model.json"
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    servable = Servable(model, version, path, signatures, functions, info)
    if warm_up:
        for name, sig in signatures.items():
            servable.run(name, {k: _example(s, info) for k, s in sig.inputs.items()})
    # Keep the loaded object alive: the concrete functions reference its variables.
    servable.functions["__loaded__"] = loaded
    return servable


def _example(spec: TensorSpec, info: dict[str, Any]) -> np.ndarray:
    """One valid input row: a blank image of the model's size for bytes, zeros otherwise."""
    if spec.dtype == "string":
        from PIL import Image

        image = info.get("image", {})
        height, width = image.get("height", 8), image.get("width", 8)
        mode = "L" if image.get("channels", 1) == 1 else "RGB"
        buffer = io.BytesIO()
        Image.new(mode, (width, height)).save(buffer, format="PNG")
        return np.array([buffer.getvalue()], dtype=object)
    shape = [1] + [d or 1 for d in spec.shape[1:]]
    return np.zeros(shape, dtype=DTYPES[spec.dtype][1])
