"""The predict path that the REST and the gRPC front ends share.

A front end only turns its own request into input arrays (a ``Parse``: JSON body or
TensorProtos -> ``PredictRequest``) and a ``Prediction`` into its own answer. Everything in
between lives here, once, so the two protocols cannot drift apart: the model lookup, the
signature and input checks, the batcher, the "could not process the input" error and the
request metrics. Every client error is a ``RequestError`` carrying an HTTP status; REST
answers with it, gRPC maps it to a gRPC status code.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dlpipe.contract.signatures import DEFAULT_SIGNATURE
from dlpipe.serving.images import image_checker
from dlpipe.serving.protocol import (
    PredictRequest,
    RequestError,
    check_arrays,
    parse_predict,
    pick_signature,
)

if TYPE_CHECKING:
    from dlpipe.serving.registry import ModelRegistry
    from dlpipe.serving.servable import Servable

Parse = Callable[["Servable"], PredictRequest]


@dataclass(frozen=True)
class Prediction:
    servable: Servable
    request: PredictRequest
    outputs: dict[str, np.ndarray]


class Predictor:
    """The predict path of one front end; ``protocol`` ("rest" or "grpc") labels its metrics."""

    def __init__(self, registry: ModelRegistry, *, protocol: str) -> None:
        limits = registry.cfg.serving
        self.registry, self.protocol = registry, protocol
        self.max_instances = limits.max_instances
        self.check_image = image_checker(max_bytes=limits.max_image_bytes,
                                         max_pixels=limits.max_image_pixels)

    @contextlib.contextmanager
    def counted(self, model: str) -> Iterator[None]:
        """Count and time one request under the status of its ``RequestError`` (200 without).

        Front ends enter it before reading the request, so a body that is too large or not
        JSON is counted too. A name that is not served counts as "_unknown": clients must not
        be able to grow the metrics' label set.
        """
        metrics = self.registry.metrics
        label = model if model in self.registry.models else "_unknown"
        started, code = time.perf_counter(), 200
        try:
            yield
        except RequestError as exc:
            code = exc.status
            raise
        finally:
            metrics.requests.labels(label, "predict", self.protocol, str(code)).inc()
            metrics.latency.labels(label, "predict", self.protocol).observe(
                time.perf_counter() - started)

    async def predict(self, model: str, version: str | None, parse: Parse) -> Prediction:
        """Look the version up, check the inputs, run them through the version's batcher."""
        servable = self.registry.get(model, version)
        request = parse(servable)
        batcher = self.registry.batcher(servable, request.signature)
        try:
            outputs = await batcher.submit(request.inputs, request.batch_size)
        except Exception as exc:  # TensorFlow refused this input
            raise RequestError(f"the model could not process the input: {first_line(exc)}") from None
        self.registry.metrics.examples.labels(servable.model).inc(request.batch_size)
        return Prediction(servable, request, outputs)

    def json_body(self, body: Any) -> Parse:
        """REST: a decoded JSON body in either of TF Serving's formats."""
        return lambda servable: parse_predict(body, servable.signatures,
                                              max_instances=self.max_instances,
                                              check_bytes=self.check_image)

    def tensors(self, signature_name: str, arrays: Callable[[], dict[str, np.ndarray]]) -> Parse:
        """gRPC: typed tensors, converted by ``arrays()`` once the signature is known to exist."""

        def parse(servable: Servable) -> PredictRequest:
            signature = pick_signature(servable.signatures, signature_name or DEFAULT_SIGNATURE)
            inputs = arrays()
            batch = check_arrays(inputs, signature, max_instances=self.max_instances,
                                 check_bytes=self.check_image)
            return PredictRequest(signature.name, inputs, False, batch)

        return parse


def first_line(exc: BaseException) -> str:
    """TensorFlow's errors run to many lines of graph detail; a client gets the first one."""
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
