"""TensorFlow Serving's gRPC API (``PredictionService.Predict``/``GetModelMetadata`` and
``ModelService.GetModelStatus``), on the same registry and batchers as the REST API, so a
``tensorflow-serving-api`` client works against ``dlpipe serve`` unchanged."""

from __future__ import annotations

import time
from typing import Any

from dlpipe.serving.images import image_checker
from dlpipe.serving.protocol import DEFAULT_SIGNATURE, RequestError, check_arrays
from dlpipe.serving.registry import ModelRegistry

_CODES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 413: "RESOURCE_EXHAUSTED"}


async def start_grpc(registry: ModelRegistry, *, host: str, port: int) -> Any:
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    limits = registry.cfg.serving
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", limits.max_body_bytes),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        _prediction_service(registry), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(_model_service(registry), server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server


def _lookup(registry: ModelRegistry, model_spec: Any) -> Any:
    version = str(model_spec.version.value) if model_spec.HasField("version") else None
    return registry.get(model_spec.name, version)


async def _abort(context: Any, exc: RequestError) -> None:
    import grpc

    await context.abort(getattr(grpc.StatusCode, _CODES.get(exc.status, "INVALID_ARGUMENT")), str(exc))


def _prediction_service(registry: ModelRegistry) -> Any:
    from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

    limits = registry.cfg.serving
    check_image = image_checker(max_bytes=limits.max_image_bytes, max_pixels=limits.max_image_pixels)
    metrics = registry.metrics

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        async def Predict(self, request: Any, context: Any) -> Any:  # gRPC names it
            import tensorflow as tf

            started, code = time.perf_counter(), 200
            model = request.model_spec.name if request.model_spec.name in registry.models else "_unknown"
            try:
                servable = _lookup(registry, request.model_spec)
                name = request.model_spec.signature_name or DEFAULT_SIGNATURE
                if name not in servable.signatures:
                    raise RequestError(f"signature_name {name!r} not found; the model has: "
                                       f"{', '.join(sorted(servable.signatures))}")
                try:
                    arrays = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
                except Exception as exc:  # a malformed TensorProto
                    raise RequestError(f"malformed input tensor: {exc}") from None
                batch = check_arrays(arrays, servable.signatures[name],
                                     max_instances=limits.max_instances, check_bytes=check_image)
                try:
                    outputs = await registry.batcher(servable, name).submit(arrays, batch)
                except Exception as exc:  # TensorFlow refused this input
                    raise RequestError(f"the model could not process the input: {exc}") from None
                metrics.examples.labels(model).inc(batch)
                response = predict_pb2.PredictResponse()
                response.model_spec.name = servable.model
                response.model_spec.version.value = servable.version
                response.model_spec.signature_name = name
                for key, value in outputs.items():
                    response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
                return response
            except RequestError as exc:
                code = exc.status
                await _abort(context, exc)
            finally:
                metrics.requests.labels(model, "predict", "grpc", str(code)).inc()
                metrics.latency.labels(model, "predict", "grpc").observe(time.perf_counter() - started)

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
