"""The predict path that the REST and the gRPC front ends share.

A front end only turns its own request into input arrays (a ``Parse``: JSON body or
TensorProtos -> ``PredictRequest``) and a ``Prediction`` into its own answer. Everything in
between lives here, once, so the two protocols cannot drift apart: admission (at most
``max_concurrent_requests`` per protocol, else 429), the model lookup, the signature, input
and image checks (with a pixel budget per request), the bounded batcher and the deadline
(503 when shed), the errors (400 for an input TensorFlow refuses, 500 for a fault of the
server or the model) and the request metrics. Every answer that is not a prediction is a
``RequestError`` carrying an HTTP status; REST answers with it, gRPC maps it to a status code.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dlpipe.contract.signatures import DEFAULT_SIGNATURE
from dlpipe.serving.batching import DeadlineExceeded, Overloaded
from dlpipe.serving.images import ImageCheck, image_checker
from dlpipe.serving.protocol import (
    PredictRequest,
    RequestError,
    check_arrays,
    parse_predict,
    pick_signature,
)
from dlpipe.serving.tensors import check_tensor_proto

if TYPE_CHECKING:
    from dlpipe.serving.registry import ModelRegistry
    from dlpipe.serving.servable import Servable

log = logging.getLogger("dlpipe.serve")
Parse = Callable[["Servable"], PredictRequest]
GONE = 499  # nginx's "client closed request": counted, never sent


@dataclass(frozen=True)
class Prediction:
    servable: Servable
    request: PredictRequest
    outputs: dict[str, np.ndarray]


class Predictor:
    """The predict path of one front end; ``protocol`` ("rest" or "grpc") labels its metrics."""

    def __init__(self, registry: ModelRegistry, *, protocol: str) -> None:
        limits = registry.cfg.serving
        self.registry, self.protocol, self.limits = registry, protocol, limits
        self.in_flight = 0
        self.check_image = image_checker(max_bytes=limits.max_image_bytes,
                                         max_pixels=limits.max_image_pixels)

    @contextlib.contextmanager
    def counted(self, model: str) -> Iterator[None]:
        """Admit, count and time one request under the status of its ``RequestError`` (200
        without); more than ``max_concurrent_requests`` at once are refused (429).

        Front ends enter it before reading the request, so a body that is too large or not
        JSON is counted too. A name that is not served counts as "_unknown": clients must not
        be able to grow the metrics' label set. Any other exception is a server fault: it is
        logged and becomes a 500.
        """
        metrics = self.registry.metrics
        label = model if model in self.registry.models else "_unknown"
        started, code = time.perf_counter(), 200
        admitted = self.in_flight < self.limits.max_concurrent_requests
        self.in_flight += admitted
        try:
            if not admitted:
                raise RequestError(f"{self.in_flight} {self.protocol} requests are in progress; "
                                   f"the limit is {self.limits.max_concurrent_requests}: retry "
                                   "later", status=429)
            yield
        except RequestError as exc:
            code = exc.status
            raise
        except asyncio.CancelledError:  # the client went away
            code = GONE
            raise
        except Exception as exc:
            code = 500
            log.exception("internal error answering a %s predict request for %r", self.protocol,
                          model)
            raise RequestError(f"internal server error: {type(exc).__name__}", status=500) from None
        finally:
            self.in_flight -= admitted
            metrics.requests.labels(label, "predict", self.protocol, str(code)).inc()
            metrics.latency.labels(label, "predict", self.protocol).observe(
                time.perf_counter() - started)

    def deadline(self, client_timeout_s: float | None = None) -> float:
        """When a request arriving now must be answered (``time.monotonic()``): the server's
        ``request_timeout_s``, or the client's own deadline if that is sooner."""
        timeout = self.limits.request_timeout_s
        return time.monotonic() + (timeout if client_timeout_s is None else min(timeout, client_timeout_s))

    async def predict(self, model: str, version: str | None, parse: Parse, *, deadline: float,
                      gone: Callable[[], Awaitable[bool]] | None = None) -> Prediction:
        """Look the version up, check the inputs, run them through the version's batcher
        unless the client has ``gone`` meanwhile; shed (503) what cannot be answered by
        ``deadline``."""
        servable = self.registry.get(model, version)
        request = parse(servable)
        if gone is not None and await gone():
            raise RequestError("the client closed the request", status=GONE)
        batcher = self.registry.batcher(servable, request.signature)
        try:
            outputs = await batcher.submit(request.inputs, request.batch_size,
                                           cost=request.pixels, deadline=deadline)
        except Overloaded as exc:
            raise RequestError(f"the server is overloaded ({exc}); retry later", status=503) from None
        except DeadlineExceeded:
            raise RequestError(f"not answered within the deadline of "
                               f"{self.limits.request_timeout_s:g}s (server busy); retry later",
                               status=503) from None
        except Exception as exc:
            if not _is_input_error(exc):
                log.error("%s version %s failed on a request: %s", servable.model,
                          servable.version, exc, exc_info=exc)
                raise RequestError(f"the model failed: {first_line(exc)}", status=500) from None
            raise RequestError(f"the model could not process the input: {first_line(exc)}") from None
        self.registry.metrics.examples.labels(servable.model).inc(request.batch_size)
        self.registry.sampler.offer(servable.model, servable.version, request.signature,
                                    request.inputs, outputs, request.batch_size)
        return Prediction(servable, request, outputs)

    def json_body(self, body: Any) -> Parse:
        """REST: a decoded JSON body in either of TF Serving's formats."""

        def parse(servable: Servable) -> PredictRequest:
            budget = PixelBudget(self.check_image, self.limits.max_request_pixels)
            request = parse_predict(body, servable.signatures, check_bytes=budget,
                                    max_instances=self.limits.max_instances)
            return dataclasses.replace(request, pixels=budget.total)

        return parse

    def tensors(self, signature_name: str, protos: Mapping[str, Any]) -> Parse:
        """gRPC: ``TensorProto``s, converted once the signature is known and their declared
        shapes and sizes have passed ``check_tensor_proto``."""

        def parse(servable: Servable) -> PredictRequest:
            import tensorflow as tf

            signature = pick_signature(servable.signatures, signature_name or DEFAULT_SIGNATURE)
            limits = self.limits
            for key, proto in protos.items():
                check_tensor_proto(proto, key, signature.inputs.get(key),
                                   max_instances=limits.max_instances,
                                   max_elements=limits.max_tensor_elements,
                                   max_bytes=limits.max_tensor_bytes)
            try:
                inputs = {k: tf.make_ndarray(v) for k, v in protos.items()}
            except Exception as exc:  # a malformed TensorProto
                raise RequestError(f"malformed input tensor: {first_line(exc)}") from None
            budget = PixelBudget(self.check_image, limits.max_request_pixels)
            batch = check_arrays(inputs, signature, max_instances=limits.max_instances,
                                 check_bytes=budget)
            return PredictRequest(signature.name, inputs, False, batch, budget.total)

        return parse


class PixelBudget:
    """The image check of one request: each image's own limits, then ``limit`` decoded pixels
    over all its images (413), both from the headers, before anything is decoded."""

    def __init__(self, check_image: ImageCheck, limit: int) -> None:
        self.check_image, self.limit, self.total = check_image, limit, 0

    def __call__(self, data: bytes, where: str) -> int:
        self.total += self.check_image(data, where)
        if self.total > self.limit:
            raise RequestError(f"{where}: the request's images have over {self.limit:,} pixels "
                               "together; send fewer or smaller images per request", status=413)
        return self.total


def _is_input_error(exc: BaseException) -> bool:
    """TensorFlow refusing an input (a corrupt image, say): the client's error, not ours.
    Without TensorFlow loaded no error can be one."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(exc, tf.errors.InvalidArgumentError)


def first_line(exc: BaseException) -> str:
    """TensorFlow's errors run to many lines of graph detail; a client gets the first one."""
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
