"""`dlpipe serve` with bearer tokens, an admin port and TLS (issue 16), as a real process."""

from __future__ import annotations

import ssl
import uuid

import httpx
import pytest

from dlpipe.core.config import with_overrides
from dlpipe.core.process import free_ports
from dlpipe.serving.launch import running_server
from tests.integration.test_serve import png
from tests.integration.test_serve_faults import BODY, publish_probe

pytestmark = pytest.mark.integration


def test_tokens_guard_rest_and_grpc_and_metrics_move_to_the_admin_port(cfg, tmp_path):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    name, secret = f"probe-auth-{uuid.uuid4().hex[:6]}", f"token-{uuid.uuid4().hex}"
    assert publish_probe(cfg, name, "auth", tmp_path) == 1
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# clients of the test\n\nanother-{uuid.uuid4().hex}\n{secret}\n")
    grpc_port, admin_port = free_ports(2)
    cfg = with_overrides(cfg, {"serving.model_dir": str(tmp_path / "models"),
                               "serving.auth_tokens_file": str(tokens),
                               "serving.admin_port": admin_port})
    with running_server(cfg, models=[name], grpc_port=grpc_port, log=tmp_path / "serve.log") as running:
        predict, good = f"{running.url}/v1/models/{name}:predict", {"authorization": f"Bearer {secret}"}
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": secret}):
            refused = httpx.post(predict, json=BODY, headers=headers)
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
            assert "bearer token" in refused.json()["error"] and secret not in refused.text
        assert httpx.get(f"{running.url}/v1/models/{name}").status_code == 401
        answer = httpx.post(predict, json=BODY, headers=good)
        assert answer.status_code == 200 and answer.json()["predictions"][0]["class_name"] == "auth"
        assert httpx.get(f"{running.url}/v1/models/{name}/metadata", headers=good).status_code == 200
        assert httpx.get(f"{running.url}/healthz").status_code == 200  # probes carry no token
        assert httpx.get(f"{running.url}/metrics").status_code == 404
        metrics = httpx.get(f"http://127.0.0.1:{admin_port}/metrics").text
        assert f'code="200",model="{name}",protocol="rest"' in metrics

        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([png()]))
        with grpc.insecure_channel(running.grpc) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for metadata in ((), (("authorization", "Bearer wrong"),)):
                with pytest.raises(grpc.RpcError) as err:
                    stub.Predict(request, timeout=30, metadata=metadata)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            response = stub.Predict(request, timeout=30, metadata=(("authorization", f"Bearer {secret}"),))
        assert tf.make_ndarray(response.outputs["class_name"]).tolist() == [b"auth"]
    assert secret not in (tmp_path / "serve.log").read_text()


def test_tls_serves_rest_over_https_and_grpc_over_tls_and_refuses_plaintext(cfg, tmp_path):
    """Issue 16, transport: with serving.tls_* set, REST is HTTPS and gRPC is TLS, each
    verified against the certificate; plain HTTP and a plaintext gRPC channel get no answer,
    and /metrics stays plain HTTP on the admin port for Prometheus."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from dlpipe.localstack.certs import self_signed

    name = f"probe-tls-{uuid.uuid4().hex[:6]}"
    assert publish_probe(cfg, name, "tls", tmp_path) == 1
    cert, key = self_signed(tmp_path / "tls")
    grpc_port, admin_port = free_ports(2)
    cfg = with_overrides(cfg, {"serving.model_dir": str(tmp_path / "models"),
                               "serving.tls_cert_file": str(cert), "serving.tls_key_file": str(key),
                               "serving.admin_port": admin_port})
    with running_server(cfg, models=[name], grpc_port=grpc_port, log=tmp_path / "serve.log") as running:
        assert running.url.startswith("https://")
        trusted = ssl.create_default_context(cafile=str(cert))
        answer = httpx.post(f"{running.url}/v1/models/{name}:predict", json=BODY, verify=trusted)
        assert answer.status_code == 200 and answer.json()["predictions"][0]["class_name"] == "tls"
        with pytest.raises(httpx.HTTPError):  # the server's certificate is not a public CA's
            httpx.get(f"{running.url}/healthz")
        with pytest.raises(httpx.HTTPError):  # plaintext on the TLS port
            httpx.get(running.url.replace("https://", "http://") + "/healthz")
        assert "dlpipe_" in httpx.get(f"http://127.0.0.1:{admin_port}/metrics").text

        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([png()]))
        with grpc.secure_channel(running.grpc, grpc.ssl_channel_credentials(cert.read_bytes())) as channel:
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
        assert tf.make_ndarray(response.outputs["class_name"]).tolist() == [b"tls"]
        with grpc.insecure_channel(running.grpc) as channel, pytest.raises(grpc.RpcError) as err:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    log = (tmp_path / "serve.log").read_text()
    assert f"REST on https://127.0.0.1:{running.url.rsplit(':', 1)[1]}" in log and "gRPC over TLS" in log
