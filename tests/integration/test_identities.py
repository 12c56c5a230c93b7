"""One MinIO identity per component (issue 16): the test stack's real MinIO refuses each
component's keys outside its grant (AccessDenied) and admits them inside, and `dlpipe serve`
runs as the serving identity."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from dlpipe.core.config import with_overrides
from dlpipe.core.s3 import s3_client, split_uri
from dlpipe.localstack.identities import IDENTITIES_FILE, identity_env
from dlpipe.serving.launch import running_server

pytestmark = pytest.mark.integration

# Where each component may write and read: the table, written out here rather than
# derived from dlpipe.localstack.identities.grants, so a wrong grant fails this test.
WRITES = {
    "ingest": {"clean", "predictions", "ingest_checkpoint"},
    "export": {"datasets"},
    "train": {"checkpoints", "ingest_checkpoint", "models"},
    "retrain": {"datasets", "checkpoints", "ingest_checkpoint", "models"},
    "serve": set(),
    "score": {"predictions"},
}
READS = {
    "ingest": {"clean", "predictions", "ingest_checkpoint", "checkpoints"},
    "export": {"clean", "predictions", "datasets"},
    "train": {"datasets", "checkpoints", "ingest_checkpoint", "models"},
    "retrain": {"clean", "predictions", "datasets", "checkpoints", "ingest_checkpoint", "models"},
    "serve": {"models"},
    "score": {"clean", "predictions", "models"},
}


def places(cfg) -> dict[str, tuple[str, str]]:
    """A probe key in each place: (bucket, key)."""
    run = uuid.uuid4().hex[:8]

    def under(uri: str) -> tuple[str, str]:
        bucket, prefix = split_uri(uri)
        return bucket, f"{prefix}/_probe-{run}"

    b = cfg.buckets
    return {"clean": under(cfg.tables.clean), "predictions": under(cfg.tables.predictions),
            "ingest_checkpoint": under(cfg.ingest.checkpoint),
            "checkpoints": (b.checkpoints, f"probe-{run}/x"), "datasets": (b.datasets, f"probe-{run}/x"),
            "models": (b.models, f"probe-{run}/x")}


def as_component(cfg, component: str):
    env = identity_env(cfg, component)
    return s3_client(cfg, keys=(env[cfg.s3.access_key_env], env[cfg.s3.secret_key_env]))


def allowed(call) -> bool:
    from botocore.exceptions import ClientError

    try:
        call()
        return True
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "AccessDenied", exc.response["Error"]
        return False


def can(client, probes: dict[str, tuple[str, str]]) -> tuple[set[str], set[str]]:
    """The places ``client`` may read, and those it may write."""
    reads = {p for p, (b, k) in probes.items()
             if allowed(lambda b=b, k=k: client.get_object(Bucket=b, Key=k))}
    writes = {p for p, (b, k) in probes.items()
              if allowed(lambda b=b, k=k: client.put_object(Bucket=b, Key=f"{k}.w", Body=b"w"))}
    return reads, writes


def test_each_component_is_denied_outside_its_grant_and_admitted_inside(stack, cfg):
    assert (os.stat(cfg.stack.state_dir / IDENTITIES_FILE).st_mode & 0o777) == 0o600
    root, probes = s3_client(cfg), places(cfg)
    for bucket, key in probes.values():
        root.put_object(Bucket=bucket, Key=key, Body=b"probe")
    try:
        seen = {c: can(as_component(cfg, c), probes) for c in WRITES}
        assert seen == {c: (READS[c], WRITES[c]) for c in WRITES}
        serve = as_component(cfg, "serve")
        assert not allowed(lambda: serve.delete_object(Bucket=probes["models"][0], Key=probes["models"][1]))
        assert not allowed(lambda: serve.list_objects_v2(Bucket=cfg.buckets.lake, MaxKeys=1))
    finally:
        for bucket, key in probes.values():
            root.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key}, {"Key": f"{key}.w"}]})


def test_dlpipe_serve_runs_as_the_serving_identity_from_stack_env(cfg, test_env, tmp_path):
    from tests.integration.test_serve_faults import BODY, publish_probe

    out = subprocess.run([str(Path(sys.executable).parent / "dlpipe"), "stack", "env", "serve"],
                         env=test_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    env = dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines())
    assert env == identity_env(cfg, "serve") and env[cfg.s3.access_key_env] != cfg.s3_credentials()[0]

    name = f"probe-identity-{uuid.uuid4().hex[:6]}"
    assert publish_probe(cfg, name, "identity", tmp_path) == 1
    cfg = with_overrides(cfg, {"serving.model_dir": str(tmp_path / "models")})
    with running_server(cfg, models=[name], log=tmp_path / "serve.log", env=env) as running:
        answer = httpx.post(f"{running.url}/v1/models/{name}:predict", json=BODY, timeout=30)
        assert answer.status_code == 200 and answer.json()["predictions"][0]["class_name"] == "identity"
    assert env[cfg.s3.secret_key_env] not in (tmp_path / "serve.log").read_text()


def test_a_job_outside_its_grant_is_told_so_not_given_a_traceback(stack, cfg):
    """Found running ingest on Kubernetes under the ingest identity with a checkpoint outside
    its grant: botocore's AccessDenied surfaced as a traceback from the lease."""
    from dlpipe.core.errors import DlpipeError
    from dlpipe.core.lease import Lease

    lease = Lease(as_component(cfg, "ingest"), cfg.buckets.checkpoints, f"elsewhere-{uuid.uuid4().hex[:6]}",
                  owner="test")
    with pytest.raises(DlpipeError, match=r"may not write its lease s3://") as caught:
        lease.acquire()
    assert "give this job's identity write access" in caught.value.fix
