"""TensorFlow Serving's gRPC API (``PredictionService.Predict``/``GetModelMetadata`` and
``ModelService.GetModelStatus``), on the same registry and batchers as the REST API, so a
``tensorflow-serving-api`` client works against ``dlpipe serve`` unchanged."""

from __future__ import annotations

from typing import Any

from dlpipe.serving.predict import Prediction, Predictor
from dlpipe.serving.protocol import RequestError
from dlpipe.serving.registry import ModelRegistry

_CODES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 408: "DEADLINE_EXCEEDED",
          413: "RESOURCE_EXHAUSTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
          500: "INTERNAL", 503: "UNAVAILABLE"}


async def start_grpc(registry: ModelRegistry, *, host: str, port: int,
                     credentials: Any = None) -> Any:
    """The gRPC API on ``port``; over TLS with ``credentials`` (dlpipe.serving.tls)."""
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    limits = registry.cfg.serving
    # RPCs over the limit are refused by gRPC itself (RESOURCE_EXHAUSTED) before a handler
    # runs; the predictor counts Predict calls against the same limit.
    interceptors = []
    if limits.auth_tokens_file is not None:
        from dlpipe.serving.auth import grpc_interceptor, read_tokens

        interceptors.append(grpc_interceptor(read_tokens(limits.auth_tokens_file)))
    server = grpc.aio.server(interceptors=interceptors,
                             maximum_concurrent_rpcs=limits.max_concurrent_requests, options=[
        ("grpc.max_receive_message_length", limits.max_body_bytes),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        _prediction_service(registry), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(_model_service(registry), server)
    if credentials is not None:
        server.add_secure_port(f"{host}:{port}", credentials)
    else:
        server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server


def _version(model_spec: Any) -> str | None:
    return str(model_spec.version.value) if model_spec.HasField("version") else None


def _lookup(registry: ModelRegistry, model_spec: Any) -> Any:
    return registry.get(model_spec.name, _version(model_spec))


async def _abort(context: Any, exc: RequestError) -> None:
    import grpc

    await context.abort(getattr(grpc.StatusCode, _CODES.get(exc.status, "INVALID_ARGUMENT")), str(exc))


def _prediction_service(registry: ModelRegistry) -> Any:
    from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

    predictor = Predictor(registry, protocol="grpc")

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        async def Predict(self, request: Any, context: Any) -> Any:  # gRPC names it
            async def gone() -> bool:
                return bool(context.cancelled() or context.done())

            spec = request.model_spec
            try:
                with predictor.counted(spec.name):
                    deadline = predictor.deadline(context.time_remaining())
                    done = await predictor.predict(
                        spec.name, _version(spec), predictor.tensors(spec.signature_name,
                                                                     request.inputs),
                        deadline=deadline, gone=gone)
                    return _predict_response(predict_pb2.PredictResponse(), done)
            except RequestError as exc:
                await _abort(context, exc)

        async def GetModelMetadata(self, request: Any, context: Any) -> Any:
            from google.protobuf import json_format

            try:
                servable = _lookup(registry, request.model_spec)
            except RequestError as exc:
                await _abort(context, exc)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = servable.model
            response.model_spec.version.value = servable.version
            defs = get_model_metadata_pb2.SignatureDefMap()
            for name, sig in servable.signatures.items():
                json_format.ParseDict(sig.metadata(), defs.signature_def[name],
                                      ignore_unknown_fields=True)
            response.metadata["signature_def"].Pack(defs)
            return response

    return PredictionService()


def _predict_response(response: Any, done: Prediction) -> Any:
    import tensorflow as tf

    response.model_spec.name = done.servable.model
    response.model_spec.version.value = done.servable.version
    response.model_spec.signature_name = done.request.signature
    for key, value in done.outputs.items():
        response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
    return response


def _model_service(registry: ModelRegistry) -> Any:
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    class ModelService(model_service_pb2_grpc.ModelServiceServicer):
        async def GetModelStatus(self, request: Any, context: Any) -> Any:
            try:
                _lookup(registry, request.model_spec)
                states = registry.states(request.model_spec.name)
            except RequestError as exc:
                await _abort(context, exc)
            response = get_model_status_pb2.GetModelStatusResponse()
            for s in states:
                status = response.model_version_status.add()
                status.version = s.version
                status.state = getattr(get_model_status_pb2.ModelVersionStatus.State, s.state)
            return response

    return ModelService()
