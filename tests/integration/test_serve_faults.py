"""`dlpipe serve` under overload and faults (issue 16), as a real process on the real store.

The served model is a probe: a SavedModel whose ``serving_default`` spins for the number of
loop iterations written in one of its asset files and answers its tag as ``class_name``. The
tests slow it down, break it (the asset removed from the local copy, or from the store), and
republish other probes under the same version number.
"""

from __future__ import annotations

import base64
import collections
import socket
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from dlpipe.core.config import with_overrides
from dlpipe.core.process import free_ports
from dlpipe.core.s3 import s3_client
from dlpipe.registry.store import publish_model
from dlpipe.registry.sync import download_version
from dlpipe.serving.launch import running_server
from tests.helpers import wait_for
from tests.integration.test_serve import png

pytestmark = pytest.mark.integration
TIMEOUT_S = 3.0
LIMITS = {"serving.max_concurrent_requests": 4, "serving.max_queued_examples": 2,
          "serving.request_timeout_s": TIMEOUT_S, "serving.batch_max_size": 1,
          "serving.poll_interval_s": 1, "serving.keep_versions": 2}
BODY = {"instances": [{"b64": base64.b64encode(png()).decode()}]}


def publish_probe(cfg, name: str, tag: str, tmp: Path) -> int:
    import tensorflow as tf

    work = tmp / f"{tag}-{uuid.uuid4().hex[:6]}" / "work.txt"
    work.parent.mkdir(parents=True)
    work.write_text("0")

    class Probe(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.work = tf.saved_model.Asset(str(work))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, image_bytes):
            n = tf.strings.to_number(tf.strings.strip(tf.io.read_file(self.work)), tf.int32)
            _, spun = tf.while_loop(lambda i, a: i < n, lambda i, a: (i + 1, a * 0.5 + 1.0), [0, 0.0])
            batch = tf.shape(image_bytes)[0]
            return {"probabilities": tf.fill([batch, 2], 0.5) + 0.0 * spun,
                    "class_name": tf.fill([batch], tag)}

    probe = Probe()
    tf.saved_model.save(probe, str(work.parent / "model"), signatures={"serving_default": probe.serve})
    return publish_model(s3_client(cfg), cfg.buckets.models, name, work.parent / "model", extras={},
                         info={"promoted": True, "run_id": tag,
                               "image": {"height": 8, "width": 8, "channels": 1}})


def wipe(cfg, name: str) -> None:
    client = s3_client(cfg)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=cfg.buckets.models,
                                                                 Prefix=f"{name}/"):
        for o in page.get("Contents", []):
            client.delete_object(Bucket=cfg.buckets.models, Key=o["Key"])


def served(url: str, name: str) -> tuple[str, str]:
    r = httpx.post(f"{url}/v1/models/{name}:predict", json=BODY, timeout=30)
    assert r.status_code == 200, r.text
    return r.headers["x-model-version"], r.json()["predictions"][0]["class_name"]


def metric(url: str, sample: str) -> float:
    """One sample of the server's metrics; 0 while it does not answer yet."""
    try:
        text = httpx.get(f"{url}/metrics").text
    except httpx.HTTPError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture(scope="module")
def probe(cfg, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("probe")
    name = f"probe-{uuid.uuid4().hex[:6]}"
    assert publish_probe(cfg, name, "probe", tmp) == 1
    cfg = with_overrides(cfg, {**LIMITS, "serving.model_dir": str(tmp / "models")})
    (grpc_port,) = free_ports(1)
    with running_server(cfg, models=[name], grpc_port=grpc_port, log=tmp / "serve.log") as running:
        work = tmp / "models" / name / "1" / "assets" / "work.txt"

        def spin(seconds: float) -> None:
            """Make one call take about ``seconds``, measured on this machine now."""
            work.write_text("50000")
            took = []
            for _ in range(3):  # the quickest of three: this machine is shared and noisy
                started = time.perf_counter()
                served(running.url, name)
                took.append(time.perf_counter() - started)
            work.write_text(str(int(50_000 * seconds / min(took))))

        yield {"url": running.url, "grpc": running.grpc, "name": name, "work": work,
               "spin": spin, "proc": running.process}


def test_overload_is_shed_within_the_deadline_and_shed_work_never_runs(probe):
    """One call runs (2 s), two queue, the next finds the queue full (503); with a slow
    client holding the fourth slot, the next is refused at the door (429); what the deadline
    (3 s) catches in the queue never runs."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    url, name = probe["url"], probe["name"]
    probe["spin"](2.0)
    batches = "dlpipe_serve_batch_examples_count"
    calls = metric(url, batches)
    answers: dict[str, tuple[int, float, str | None, str]] = {}

    def post(key: str, client: httpx.Client) -> None:
        started = time.perf_counter()
        r = client.post(f"{url}/v1/models/{name}:predict", json=BODY)
        answers[key] = (r.status_code, time.perf_counter() - started, r.headers.get("retry-after"),
                        r.text)

    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=8)) as client:
        threads = {key: threading.Thread(target=post, args=(key, client)) for key in "ABCDE"}
        # E must arrive while A still runs (2 s): the gaps are short so a loaded machine's
        # delays stay well inside that (with 0.5 s gaps, E once came after A had finished).
        threads["A"].start()
        time.sleep(0.5)
        threads["B"].start()
        threads["C"].start()
        time.sleep(0.3)
        threads["D"].start()
        threads["D"].join()
        slow = _slow_client(url, name)
        time.sleep(0.2)
        threads["E"].start()
        for t in threads.values():
            t.join()
        slow.close()
    assert answers["A"][0] == 200, answers
    assert answers["D"][0] == 503 and "overloaded" in answers["D"][3], answers["D"]
    assert answers["E"][0] == 429 and "the limit is 4" in answers["E"][3], answers["E"]
    assert answers["B"][0] in (200, 503) and answers["C"][0] in (200, 503), answers
    assert all(a[2] == "1" for a in answers.values() if a[0] != 200)
    assert max(a[1] for a in answers.values()) < TIMEOUT_S + 2
    ok = sum(a[0] == 200 for a in answers.values())
    assert metric(url, batches) - calls <= ok + 1  # at most one ran past its deadline

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([png()]))
    with grpc.insecure_channel(probe["grpc"]) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        # Work that ran past its deadline above may still hold the model: wait until one call
        # gets through alone, so the burst starts on an idle server.
        wait_for(lambda: _grpc_ok(stub, request), timeout_s=30)
        futures = [stub.Predict.future(request, timeout=30) for _ in range(8)]
        codes = collections.Counter(f.code().name for f in futures)
        details = {f.code().name: f.details() for f in futures}
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED", "UNAVAILABLE"}, details
    assert codes["OK"] and codes["RESOURCE_EXHAUSTED"] + codes["UNAVAILABLE"], details
    assert probe["proc"].poll() is None


def _grpc_ok(stub, request) -> bool:
    import grpc

    try:
        stub.Predict(request, timeout=10)
        return True
    except grpc.RpcError:
        return False


def _slow_client(url: str, name: str) -> socket.socket:
    """Headers and 8 bytes of a 1000-byte body, then nothing."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(f"POST /v1/models/{name}:predict HTTP/1.1\r\nHost: {host}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                 '{"insta'.encode())
    return sock


def test_slow_clients_get_408_at_the_deadline_and_their_slots_come_back(probe):
    probe["work"].write_text("0")
    slow = [_slow_client(probe["url"], probe["name"]) for _ in range(4)]
    try:
        time.sleep(0.5)
        full = httpx.post(f"{probe['url']}/v1/models/{probe['name']}:predict", json=BODY)
        assert full.status_code == 429 and "the limit is 4" in full.json()["error"]
        for sock in slow:
            sock.settimeout(TIMEOUT_S + 5)
            assert sock.recv(200).startswith(b"HTTP/1.1 408 ")
    finally:
        for sock in slow:
            sock.close()
    assert served(probe["url"], probe["name"]) == ("1", "probe")


def test_a_client_that_hangs_up_mid_body_is_counted_as_gone_not_as_a_fault(probe):
    url, name = probe["url"], probe["name"]
    def count(code: int) -> float:
        return metric(url, f'dlpipe_serve_requests_total{{api="predict",code="{code}",model="{name}",'
                           'protocol="rest"}')

    gone, faults = count(499), count(500)
    sock = _slow_client(url, name)
    time.sleep(0.3)
    sock.close()
    wait_for(lambda: count(499) == gone + 1, timeout_s=TIMEOUT_S + 5)
    assert count(500) == faults


def test_the_queued_work_of_a_client_that_went_away_is_dropped(probe):
    probe["spin"](1.0)
    url, name = probe["url"], probe["name"]
    calls = metric(url, "dlpipe_serve_batch_examples_count")
    gone = f'dlpipe_serve_requests_total{{api="predict",code="499",model="{name}",protocol="rest"}}'
    before = metric(url, gone)
    first = threading.Thread(target=served, args=(url, name))
    first.start()
    time.sleep(0.3)
    host, port = url.removeprefix("http://").split(":")
    body = httpx.Request("POST", "http://x/", json=BODY).content
    with socket.create_connection((host, int(port))) as sock:  # queued behind the first
        sock.sendall(f"POST /v1/models/{name}:predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: "
                     f"application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.2)
    first.join()
    time.sleep(2.0)  # long enough for the dropped request to have run, had it not been dropped
    assert metric(url, gone) - before == 1
    assert metric(url, "dlpipe_serve_batch_examples_count") - calls == 1


def test_a_fault_of_the_model_is_a_500_not_a_client_error(probe):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    work = probe["work"]
    saved = work.read_text()
    work.unlink()  # the model now fails for a reason that is no fault of the input
    try:
        r = httpx.post(f"{probe['url']}/v1/models/{probe['name']}:predict", json=BODY)
        assert r.status_code == 500 and "the model failed" in r.json()["error"], r.text
        request = predict_pb2.PredictRequest()
        request.model_spec.name = probe["name"]
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([png()]))
        with grpc.insecure_channel(probe["grpc"]) as channel, pytest.raises(grpc.RpcError) as err:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
        assert err.value.code() == grpc.StatusCode.INTERNAL
    finally:
        work.write_text(saved)
    assert served(probe["url"], probe["name"]) == ("1", "probe")
    bad = httpx.post(f"{probe['url']}/v1/models/{probe['name']}:predict",
                     json={"instances": [{"b64": base64.b64encode(b"not an image").decode()}]})
    assert bad.status_code == 400


def test_a_load_that_failed_on_the_store_is_retried_and_readyz_recovers(cfg, tmp_path):
    """The store lists the version without one of its files when the server starts: the copy
    fails to load; once the file is back, a retry copies it again and the server gets ready."""
    name = f"probe-retry-{uuid.uuid4().hex[:6]}"
    assert publish_probe(cfg, name, "retried", tmp_path) == 1
    client, bucket, key = s3_client(cfg), cfg.buckets.models, f"{name}/1/assets/work.txt"
    saved = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.delete_object(Bucket=bucket, Key=key)
    (port,) = free_ports(1)
    url, seen = f"http://127.0.0.1:{port}", {}
    failed = f'dlpipe_serve_model_loads_total{{model="{name}",outcome="failed"}}'

    def put_back() -> None:
        try:
            wait_for(lambda: metric(url, failed) >= 2, timeout_s=120)  # retried, still failing
            seen["readyz"] = httpx.get(f"{url}/readyz").status_code
        except (httpx.HTTPError, AssertionError) as exc:
            seen["error"] = repr(exc)
        client.put_object(Bucket=bucket, Key=key, Body=saved)

    restorer = threading.Thread(target=put_back)
    restorer.start()
    cfg = with_overrides(cfg, {**LIMITS, "serving.model_dir": str(tmp_path / "models")})
    try:
        with running_server(cfg, models=[name], port=port, log=tmp_path / "serve.log",
                            timeout_s=150) as running:
            restorer.join()
            assert seen == {"readyz": 503}, seen
            assert served(running.url, name) == ("1", "retried")
            assert httpx.get(f"{url}/readyz").status_code == 200
    finally:
        restorer.join()
    assert "attempt 2" in (tmp_path / "serve.log").read_text()


def test_a_republished_version_replaces_the_stale_copy_and_old_copies_are_pruned(cfg, tmp_path):
    name = f"probe-stale-{uuid.uuid4().hex[:6]}"
    client, models = s3_client(cfg), tmp_path / "models"
    assert publish_probe(cfg, name, "first", tmp_path) == 1
    download_version(client, cfg.buckets.models, name, 1, models)  # an earlier run's copy
    wipe(cfg, name)
    assert publish_probe(cfg, name, "second", tmp_path) == 1  # the store starts again
    cfg = with_overrides(cfg, {**LIMITS, "serving.model_dir": str(models)})
    with running_server(cfg, models=[name], log=tmp_path / "serve.log") as running:
        assert served(running.url, name) == ("1", "second")
        wipe(cfg, name)
        assert publish_probe(cfg, name, "third", tmp_path) == 1  # while it serves
        wait_for(lambda: served(running.url, name) == ("1", "third"))
        assert publish_probe(cfg, name, "fourth", tmp_path) == 2
        wait_for(lambda: served(running.url, name) == ("2", "fourth"))
        assert publish_probe(cfg, name, "fifth", tmp_path) == 3
        wait_for(lambda: served(running.url, name) == ("3", "fifth"))
        wait_for(lambda: sorted(p.name for p in (models / name).iterdir()) == ["2", "3"], 10)


def test_promote_and_rollback_move_serving_and_sync_within_one_poll(cfg, tmp_path, test_env):
    """Issue 18: releases are audited pointer changes; the server follows at its next poll
    (here 1 s) and ``models sync`` copies what the pointer names."""
    import subprocess
    import sys

    from dlpipe.registry.release import read_pointer
    from dlpipe.registry.sync import sync_model

    name = f"probe-release-{uuid.uuid4().hex[:6]}"
    client, bucket = s3_client(cfg), cfg.buckets.models
    assert [publish_probe(cfg, name, tag, tmp_path) for tag in ("one", "two")] == [1, 2]
    publish_model(client, bucket, name, next(tmp_path.glob("one-*")) / "model", extras={},
                  info={"promoted": False, "run_id": "three"})

    def models(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(Path(sys.executable).parent / "dlpipe"), "models", *args, "--model", name],
                              env=test_env, capture_output=True, text=True, timeout=120)

    cfg = with_overrides(cfg, {**LIMITS, "serving.model_dir": str(tmp_path / "models")})
    with running_server(cfg, models=[name], log=tmp_path / "serve.log") as running:
        assert served(running.url, name) == ("2", "two"), "no pointer yet: the newest promoted"
        steps = [(("promote", "1", "--reason", "two is slow"), ("1", "one")),
                 (("rollback",), ("2", "two")), (("promote", "1"), ("1", "one"))]
        for args, expected in steps:
            done = models(*args)
            assert done.returncode == 0, done.stderr
            started = time.monotonic()
            wait_for(lambda expected=expected: served(running.url, name) == expected, 30)
            assert time.monotonic() - started < 10, "followed within a poll (and a load)"
            assert sync_model(client, bucket, name, tmp_path / "sync").version == int(expected[0])
        refused = models("promote", "3")
        assert refused.returncode == 2 and "was not promoted by training" in refused.stderr
        assert "--force" in refused.stderr and "Traceback" not in refused.stderr
        assert read_pointer(client, bucket, name).version == 1
    history = models("history").stdout.splitlines()
    assert [line.split()[2:5] for line in history] == [
        ["promote", "2", "->"], ["rollback", "1", "->"], ["promote", "2", "->"]]
    assert "two is slow" in history[0] and read_pointer(client, bucket, name).history == (2,)


def test_hot_reloads_through_minio_killed_then_stalled_answer_every_request_and_land(
        stack, cfg, tmp_path):
    """Issue 17: a version is published and MinIO is SIGKILLed at once (restarted 3 s later);
    then another, and MinIO is SIGSTOPped for 30 s. Whichever step of the reload the outage
    hits (the poll's listing, the copy, the load), the server answers every request from the
    version it holds, stays ready, and serves each new version once the store is back."""
    from tests.store_outage import kill_and_restart, restored, stall

    name = f"probe-outage-{uuid.uuid4().hex[:6]}"
    assert publish_probe(cfg, name, "first", tmp_path) == 1
    cfg = with_overrides(cfg, {**LIMITS, "serving.model_dir": str(tmp_path / "models")})
    answers: collections.Counter[tuple[int, str]] = collections.Counter()
    stop = threading.Event()

    def clients(url: str) -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                r = http.post(f"{url}/v1/models/{name}:predict", json=BODY)
                answers[(r.status_code, r.headers.get("x-model-version", r.text[:200]))] += 1
                answers[(http.get(f"{url}/readyz").status_code, "readyz")] += 1
                time.sleep(0.05)

    with running_server(cfg, models=[name], log=tmp_path / "serve.log") as running, \
            restored(stack, "minio") as minio:
        assert served(running.url, name) == ("1", "first")
        load = threading.Thread(target=clients, args=(running.url,), daemon=True)
        load.start()
        try:
            assert publish_probe(cfg, name, "second", tmp_path) == 2
            kill_and_restart(minio, stack, down_s=3)
            wait_for(lambda: served(running.url, name) == ("2", "second"), 90)
            assert publish_probe(cfg, name, "third", tmp_path) == 3
            stall(minio)
            wait_for(lambda: served(running.url, name) == ("3", "third"), 90)
        finally:
            stop.set()
            load.join(30)
    assert {status for status, _ in answers} == {200}, answers
    assert answers[(200, "readyz")] > 100, "the clients ran through both outages"
    assert {version for _, version in answers} >= {"1", "3", "readyz"}, answers
