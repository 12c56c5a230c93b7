"""One driver per checkpoint (issue 17): the lease of dlpipe.core.lease on the real MinIO,
held by real processes that are killed, stopped and continued."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from dlpipe.core.lease import Lease, LeaseHeld, lease_key
from dlpipe.core.s3 import s3_client, split_uri
from tests.helpers import isolated, isolated_sets, send

pytestmark = pytest.mark.integration

HOLDER = """
import logging, os, sys, time
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
from dlpipe.core.config import load_config
from dlpipe.core.lease import path_lease

def lost(exc):
    print("LOST", exc, flush=True)
    os._exit(3)

with path_lease(load_config(), sys.argv[1], owner="holder-test", ttl_s=float(sys.argv[2]),
                on_lost=lost):
    print("HELD", flush=True)
    time.sleep(600)
"""


def start_holder(test_env: dict[str, str], uri: str, ttl_s: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, uri, str(ttl_s)], env=test_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("HELD"):
            return proc
    raise AssertionError(f"the holder did not take the lease (exit {proc.wait()})")


@pytest.fixture()
def path(cfg) -> str:
    return f"s3a://{cfg.buckets.checkpoints}/test/lease-{uuid.uuid4().hex[:8]}"


def lease(cfg, path: str, ttl_s: float = 60) -> Lease:
    bucket, key = split_uri(path)
    return Lease(s3_client(cfg), bucket, key, owner="the test", ttl_s=ttl_s)


def test_a_second_driver_is_refused_by_name_and_a_killed_one_is_taken_over_at_once(cfg, test_env,
                                                                                  path):
    holder = start_holder(test_env, path, ttl_s=60)
    try:
        with pytest.raises(LeaseHeld, match=rf"held by holder-test \(pid {holder.pid} on "):
            lease(cfg, path).acquire()
    finally:
        holder.kill()
        holder.wait(10)
    # Its process is gone and it ran on this host: no need to wait 60 s for expiry.
    taken = lease(cfg, path).acquire()
    taken.release()
    body = read_lease(cfg, path)
    assert body["owner"] == "the test" and body["released"] is True


def test_a_stalled_driver_loses_the_lease_to_expiry_and_stops_when_it_wakes(cfg, test_env, path):
    holder = start_holder(test_env, path, ttl_s=3)
    try:
        holder.send_signal(signal.SIGSTOP)  # alive, but renewing nothing
        with pytest.raises(LeaseHeld):
            lease(cfg, path, ttl_s=3).acquire()
        time.sleep(4.5)
        with lease(cfg, path, ttl_s=3):
            holder.send_signal(signal.SIGCONT)
            assert holder.wait(20) == 3, "the woken driver must stop, not write on"
            assert holder.stdout is not None
            assert "another driver took over" in holder.stdout.read()
            assert read_lease(cfg, path)["owner"] == "the test"
    finally:
        if holder.poll() is None:
            holder.kill()


def test_two_ingest_drivers_on_one_checkpoint(cfg, test_env, tmp_path):
    """The second ``dlpipe ingest`` fails before it starts Spark, naming the first; the first,
    stopped with SIGTERM, gives the lease back."""
    cfg = isolated(cfg, "two")
    sets = [*isolated_sets(cfg), "--set=ingest.trigger_interval=2 seconds"]
    exe = str(Path(sys.executable).parent / "dlpipe")
    send(cfg, tmp_path / "sent.jsonl", count=50)
    first = subprocess.Popen([exe, "ingest", *sets], env=test_env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert first.stdout is not None
        deadline = time.monotonic() + 240
        for line in first.stdout:
            if '"event": "ingest_batch"' in line:
                break
            assert time.monotonic() < deadline, "no micro-batch within 240 s"
        started = time.monotonic()
        second = subprocess.run([exe, "ingest", "--once", *sets], env=test_env, capture_output=True,
                                text=True, timeout=120)
        took = time.monotonic() - started
        assert second.returncode != 0
        assert f"held by ingest {cfg.ingest.query_name} (pid {first.pid} on " in second.stderr, \
            second.stderr[-2000:]
        assert "fix: stop the other driver first" in second.stderr and "Traceback" not in second.stderr
        assert took < 30, f"the second driver took {took:.0f} s to fail (it must not start Spark)"
        first.send_signal(signal.SIGTERM)  # the driver only: it stops its query, then the JVM
        rest, _ = first.communicate(timeout=120)
        assert first.returncode == 0, rest[-3000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert read_lease(cfg, cfg.ingest.checkpoint)["released"] is True


def read_lease(cfg, path: str) -> dict:
    bucket, key = split_uri(path)
    return json.loads(s3_client(cfg).get_object(Bucket=bucket, Key=lease_key(key))["Body"].read())


def test_a_second_export_of_a_version_and_a_second_scoring_are_refused(spark, ingested, test_env):
    """Issue 17: two exports of one dataset version, or two scorings into one predictions
    table, at once: the second fails at start naming the first, and the first's work stays."""
    from dlpipe.datasets.manifest import dataset_prefix
    from spark_jobs.export import job as export_job
    from tests.helpers import read_delta_with_delta_rs

    cfg = ingested
    version = read_delta_with_delta_rs(cfg, cfg.tables.clean).version()
    folder = f"s3a://{cfg.buckets.datasets}/{dataset_prefix(cfg.export.dataset, version)}"
    holder = start_holder(test_env, folder, ttl_s=60)
    try:
        with pytest.raises(LeaseHeld, match=rf"held by holder-test \(pid {holder.pid} on "):
            export_job.export(spark, cfg, version=version)
    finally:
        holder.kill()
        holder.wait(10)

    predictions = f"s3a://{cfg.buckets.lake}/test/lease-{uuid.uuid4().hex[:8]}/predictions"
    holder = start_holder(test_env, predictions, ttl_s=60)
    try:
        exe = str(Path(sys.executable).parent / "dlpipe")
        out = subprocess.run([exe, "score", f"--set=tables.predictions={predictions}"], env=test_env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
        assert f"held by holder-test (pid {holder.pid} on " in out.stderr
        assert "Traceback" not in out.stderr
    finally:
        holder.kill()
        holder.wait(10)


def test_a_renewal_whose_reply_was_lost_keeps_the_lease_and_another_writer_does_not(cfg, path):
    """A renewal retried after the store died mid-request finds its own first write there
    (If-Match refused): the lease is kept, on that write's ETag. A body written by anyone else
    still loses it. Injected on the real MinIO: the landed write is made, then the reply's
    ETag is "lost" by keeping the old one."""
    held = lease(cfg, path).acquire()
    bucket, key = split_uri(path)
    client = s3_client(cfg)
    stale = held.etag
    time.sleep(1.1)  # the body (renewed_at, to the second) and so the ETag differ
    held.renew()  # lands; then the client "retries" with the ETag it had before
    landed, held.etag = held.etag, stale
    assert landed != stale
    held.renew()
    assert held.lost is None and held.etag == landed, "its own write: kept, its ETag adopted"
    held.renew()
    assert held.lost is None, "and renewed normally after"

    body = read_lease(cfg, path)
    client.put_object(Bucket=bucket, Key=lease_key(key), Body=json.dumps(
        {**body, "token": "another driver's", "owner": "another"}).encode())
    held.renew()
    assert held.lost is not None and "another driver took over" in str(held.lost)
