"""The HTTP routes: TensorFlow Serving's REST API, health, readiness and metrics (FastAPI).

Route handlers stay thin: read the body within its limit and the request's deadline, hand
it to ``predict.Predictor`` (admission, lookup, checks, batching and metrics, shared with
gRPC), drop the work if the client disconnects, format the answer with ``protocol``. Every
error is a JSON ``{"error": ...}``: 4xx for the client's, 429/503 (with ``Retry-After``) when
load is shed, 500 for a server fault; nothing a client sends can make the server fail.
"""


import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from dlpipe.core.config import Config
from dlpipe.serving.metrics import Metrics
from dlpipe.serving.predict import GONE, Predictor
from dlpipe.serving.protocol import RequestError, format_predict
from dlpipe.serving.registry import ModelRegistry

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations at
# definition time, and `Request`/`Response` are imported inside the functions that add routes
# (FastAPI is only needed once a server starts).
JSON = "application/json"
T = TypeVar("T")
INFO_KEYS = ("classes", "image", "test_accuracy", "dataset", "delta_version", "run_id", "created_at")


def create_app(cfg: Config, *, registry: ModelRegistry | None = None, poll: bool = True) -> Any:
    """The ASGI app; ``poll`` starts the model-store poller with the app's lifespan."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import Response
    from starlette.exceptions import HTTPException

    metrics = registry.metrics if registry else Metrics()
    registry = registry or ModelRegistry(cfg, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(registry.poll_forever()) if poll else None
        yield
        if task:
            task.cancel()
        registry.close()
        # Here, not after the server returns: uvicorn re-raises SIGTERM once it has shut down,
        # which ends the process before any code around `serve()` runs.
        for hook in getattr(app_.state, "shutdown_hooks", []):
            hook()

    app = FastAPI(title="dlpipe serve", version="1",
                  description="TensorFlow Serving REST API over the dlpipe model store",
                  lifespan=lifespan)
    app.state.registry = registry

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        return _answer({"error": str(exc.detail)}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        return _answer({"error": str(exc)}, 400)

    _add_predict_routes(app, Predictor(registry, protocol="rest"), max_body_bytes=cfg.serving.max_body_bytes)
    _add_model_routes(app, registry)
    _add_health_routes(app, registry)
    if not cfg.serving.admin_port:  # else on the admin app (create_admin_app)
        _add_metrics_route(app, metrics)
    if cfg.serving.auth_tokens_file is not None:
        from dlpipe.serving.auth import BearerAuth, read_tokens

        app.add_middleware(BearerAuth, tokens=read_tokens(cfg.serving.auth_tokens_file))
    return app


def create_admin_app(metrics: Metrics) -> Any:
    """What ``serving.admin_port`` serves: the metrics (and liveness), apart from the API."""
    from fastapi import FastAPI

    app = FastAPI(title="dlpipe serve (admin)", docs_url=None, redoc_url=None, openapi_url=None)
    _add_metrics_route(app, metrics)
    return app


def _answer(body: Any, status: int = 200) -> Any:
    import orjson
    from fastapi.responses import Response

    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type=JSON)


def _error(exc: RequestError) -> Any:
    response = _answer({"error": str(exc)}, exc.status)
    if exc.status in (429, 503):  # load shed: the client may retry
        response.headers["retry-after"] = "1"
    elif exc.status == 408:  # the rest of a slow body is not worth waiting for
        response.headers["connection"] = "close"
    return response


async def _read_body(request: Any, max_bytes: int, deadline: float) -> Any:
    """The JSON body, refused (413) as soon as it is known to be over the limit, and (408)
    when it has not arrived by ``deadline``: a slow client cannot hold a slot forever."""
    import orjson
    from starlette.requests import ClientDisconnect

    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise RequestError(f"request body of {int(declared):,} bytes; the limit is "
                           f"{max_bytes:,}", status=413)

    async def read() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise RequestError(f"request body over the limit of {max_bytes:,} bytes",
                                   status=413)
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        async with asyncio.timeout(deadline - time.monotonic()):
            data = await read()  # in this task: wait_for() would start another one per request
    except TimeoutError:
        raise RequestError("the request body did not arrive within the deadline", status=408) from None
    except ClientDisconnect:
        raise RequestError("the client closed the request", status=GONE) from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"malformed JSON: {exc}") from None


async def _unless_gone(request: Any, work: Awaitable[T]) -> T:
    """``work``, cancelled (its queued work dropped) if the client disconnects first."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task, watch = asyncio.ensure_future(work), asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
    if task.done() and not task.cancelled():
        return task.result()
    raise RequestError("the client closed the request", status=GONE)


def _add_predict_routes(app: Any, predictor: Predictor, *, max_body_bytes: int) -> None:
    from fastapi import Request
    from fastapi.responses import Response

    async def predict(request: Request, name: str, version: str | None) -> Response:
        try:
            with predictor.counted(name):
                deadline = predictor.deadline()
                body = await _read_body(request, max_body_bytes, deadline)
                # No ``gone`` check before batching: ``_unless_gone`` already drops the queued
                # work of a client that left, and Starlette's is_disconnected() cost 10% of the
                # event loop's time per request at concurrency 8.
                done = await _unless_gone(request, predictor.predict(
                    name, version, predictor.json_body(body), deadline=deadline))
                response = _answer(format_predict(done.outputs, row_format=done.request.row_format))
                response.headers["x-model-version"] = str(done.servable.version)
                return response
        except RequestError as exc:
            return _error(exc)

    @app.post("/v1/models/{name}:predict", summary="Predict with the newest promoted version")
    async def predict_latest(request: Request, name: str) -> Response:
        return await predict(request, name, None)

    @app.post("/v1/models/{name}/versions/{version}:predict", summary="Predict with one version")
    async def predict_version(request: Request, name: str, version: str) -> Response:
        return await predict(request, name, version)

    @app.post("/v1/models/{name}:{method}", include_in_schema=False)
    async def other_method(name: str, method: str) -> Response:
        return _answer({"error": f"method {method!r} is not supported; this server implements "
                                 ":predict (classify and regress need tf.Example signatures)"}, 400)


def _add_model_routes(app: Any, registry: ModelRegistry) -> None:
    """TF Serving's GetModelStatus and GetModelMetadata, for the model or one version."""
    from fastapi.responses import Response

    def status(name: str, version: str | None) -> Response:
        try:
            registry.get(name, version)
            states = registry.states(name)
        except RequestError as exc:
            return _error(exc)
        return _answer({"model_version_status": [
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
            return _error(exc)
        return _answer({"model_spec": {"name": name, "signature_name": "",
                                       "version": str(servable.version)},
                        "metadata": {"signature_def": servable.metadata()},
                        "dlpipe": {k: servable.info.get(k) for k in INFO_KEYS}})

    @app.get("/v1/models/{name}/metadata", summary="Signatures (TF Serving's GetModelMetadata)")
    async def model_metadata(name: str) -> Response:
        return metadata(name, None)

    @app.get("/v1/models/{name}/versions/{version}/metadata", summary="Signatures of one version")
    async def version_metadata(name: str, version: str) -> Response:
        return metadata(name, version)


def _add_health_routes(app: Any, registry: ModelRegistry) -> None:
    from fastapi.responses import Response

    @app.get("/healthz", summary="Liveness: the server answers")
    async def healthz() -> Response:
        return _answer({"status": "ok"})

    @app.get("/readyz", summary="Readiness: every configured model has a version loaded")
    async def readyz() -> Response:
        loaded = registry.ready()
        waiting = [m for m, v in loaded.items() if v is None]
        return _answer({"ready": not waiting, "models": loaded, "waiting_for": waiting},
                       503 if waiting else 200)



def _add_metrics_route(app: Any, metrics: Metrics) -> None:
    from fastapi.responses import Response

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)
