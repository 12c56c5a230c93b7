"""The HTTP routes: TensorFlow Serving's REST API, health, readiness and metrics (FastAPI).

Route handlers stay thin: read the body within its limit, parse it with ``protocol``, hand
the tensors to the model's batcher, format the answer. Every client error is a JSON
``{"error": ...}`` with a 4xx status; nothing a client sends can make the server fail.
"""


import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from dlpipe.core.config import Config
from dlpipe.serving.images import image_checker
from dlpipe.serving.metrics import Metrics
from dlpipe.serving.protocol import RequestError, format_predict, parse_predict
from dlpipe.serving.registry import ModelRegistry

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations at
# definition time, and `Request` is imported inside `create_app`.
JSON = "application/json"


def create_app(cfg: Config, *, registry: ModelRegistry | None = None, poll: bool = True) -> Any:
    """The ASGI app; ``poll`` starts the model-store poller with the app's lifespan."""
    import orjson
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import Response
    from starlette.exceptions import HTTPException

    metrics = registry.metrics if registry else Metrics()
    registry = registry or ModelRegistry(cfg, metrics)
    limits = cfg.serving
    check_image = image_checker(max_bytes=limits.max_image_bytes,
                                max_pixels=limits.max_image_pixels)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(registry.poll_forever()) if poll else None
        yield
        if task:
            task.cancel()
        registry.close()

    app = FastAPI(title="dlpipe serve", version="1",
                  description="TensorFlow Serving REST API over the dlpipe model store",
                  lifespan=lifespan)
    app.state.registry = registry

    def answer(body: Any, status: int = 200) -> Response:
        return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                        media_type=JSON)

    def error(exc: RequestError) -> Response:
        return answer({"error": str(exc)}, exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        return answer({"error": str(exc.detail)}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        return answer({"error": str(exc)}, 400)

    async def read_body(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise RequestError(f"request body of {int(declared):,} bytes; the limit is "
                               f"{limits.max_body_bytes:,}", status=413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise RequestError(f"request body over the limit of {limits.max_body_bytes:,} bytes",
                                   status=413)
            chunks.append(chunk)
        try:
            return orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"malformed JSON: {exc}") from None

    async def predict(request: Request, name: str, version: str | None) -> Response:
        started, code, model = time.perf_counter(), 200, name if name in registry.models else "_unknown"
        try:
            body = await read_body(request)
            servable = registry.get(name, version)
            parsed = parse_predict(body, servable.signatures, max_instances=limits.max_instances,
                                   check_bytes=check_image)
            batcher = registry.batcher(servable, parsed.signature)
            try:
                outputs = await batcher.submit(parsed.inputs, parsed.batch_size)
            except Exception as exc:  # TensorFlow refused this input
                raise RequestError(f"the model could not process the input: {_first_line(exc)}") from None
            metrics.examples.labels(model).inc(parsed.batch_size)
            response = answer(format_predict(outputs, row_format=parsed.row_format))
            response.headers["x-model-version"] = str(servable.version)
            return response
        except RequestError as exc:
            code = exc.status
            return error(exc)
        finally:
            metrics.requests.labels(model, "predict", "rest", str(code)).inc()
            metrics.latency.labels(model, "predict", "rest").observe(time.perf_counter() - started)

    @app.post("/v1/models/{name}:predict", summary="Predict with the newest promoted version")
    async def predict_latest(request: Request, name: str) -> Response:
        return await predict(request, name, None)

    @app.post("/v1/models/{name}/versions/{version}:predict", summary="Predict with one version")
    async def predict_version(request: Request, name: str, version: str) -> Response:
        return await predict(request, name, version)

    @app.post("/v1/models/{name}:{method}", include_in_schema=False)
    async def other_method(name: str, method: str) -> Response:
        return answer({"error": f"method {method!r} is not supported; this server implements "
                                ":predict (classify and regress need tf.Example signatures)"}, 400)

    def status(name: str, version: str | None) -> Response:
        try:
            registry.get(name, version)
            states = registry.states(name)
        except RequestError as exc:
            return error(exc)
        return answer({"model_version_status": [
            {"version": str(s.version), "state": s.state,
             "status": {"error_code": "OK", "error_message": s.error}}
            for s in states if version is None or str(s.version) == version]})

    @app.get("/v1/models/{name}", summary="Model status (TF Serving's GetModelStatus)")
    async def model_status(name: str) -> Response:
        return status(name, None)

    @app.get("/v1/models/{name}/versions/{version}", summary="Status of one version")
    async def version_status(name: str, version: str) -> Response:
        return status(name, version)

    def metadata(name: str, version: str | None) -> Response:
        try:
            servable = registry.get(name, version)
        except RequestError as exc:
            return error(exc)
        return answer({"model_spec": {"name": name, "signature_name": "",
                                      "version": str(servable.version)},
                       "metadata": {"signature_def": servable.metadata()},
                       "dlpipe": {k: servable.info.get(k) for k in
                                  ("classes", "image", "test_accuracy", "dataset", "delta_version",
                                   "run_id", "created_at")}})

    @app.get("/v1/models/{name}/metadata", summary="Signatures (TF Serving's GetModelMetadata)")
    async def model_metadata(name: str) -> Response:
        return metadata(name, None)

    @app.get("/v1/models/{name}/versions/{version}/metadata", summary="Signatures of one version")
    async def version_metadata(name: str, version: str) -> Response:
        return metadata(name, version)

    @app.get("/healthz", summary="Liveness: the server answers")
    async def healthz() -> Response:
        return answer({"status": "ok"})

    @app.get("/readyz", summary="Readiness: every configured model has a version loaded")
    async def readyz() -> Response:
        loaded = registry.ready()
        waiting = [m for m, v in loaded.items() if v is None]
        return answer({"ready": not waiting, "models": loaded, "waiting_for": waiting},
                      503 if waiting else 200)

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return app


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
