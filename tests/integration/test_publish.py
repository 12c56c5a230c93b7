"""Publishing on real MinIO: copies checked, marker last, staging dropped, versions counted up."""

from __future__ import annotations

import json
import uuid

import pytest

from dlpipe.core.publish import publish, remove_prefix, upload_files
from dlpipe.core.s3 import child_names, numeric_names, s3_client
from dlpipe.registry.release import serving_version
from dlpipe.registry.store import MARKER, publish_model

pytestmark = pytest.mark.integration


@pytest.fixture
def store(cfg):
    client, bucket, root = s3_client(cfg), cfg.buckets.datasets, f"_test/publish-{uuid.uuid4().hex[:8]}"
    yield client, bucket, root
    remove_prefix(client, bucket, f"{root}/")


def _objects(client, bucket, prefix):
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o for page in pages for o in page.get("Contents", [])}


def test_child_names_lists_one_level_down(store):
    client, bucket, root = store
    for key in ("1/a", "2/b/c", "_versions/3", "_staging/4-x/d"):
        client.put_object(Bucket=bucket, Key=f"{root}/m/{key}", Body=b"")
    assert sorted(child_names(client, bucket, f"{root}/m/")) == ["1", "2", "_staging", "_versions"]
    assert numeric_names(child_names(client, bucket, f"{root}/m/_versions/")) == [3]


def test_a_publish_copies_checks_then_writes_the_marker_last(store, tmp_path):
    client, bucket, root = store
    files = {"b.bin": tmp_path / "b.bin", "last.pb": tmp_path / "last.pb", "d/c.bin": tmp_path / "c"}
    for path in files.values():
        path.write_bytes(path.name.encode() * 1000)
    upload_files(client, bucket, files, f"{root}/_staging/1")
    publish(client, bucket, staging=f"{root}/_staging/1", final=f"{root}/v", paths=files,
            last=["last.pb"], extras={"extra.json": b"{}"}, marker=f"{root}/v/marker.json",
            body='{"ok": 1}')
    final = _objects(client, bucket, f"{root}/v/")
    assert sorted(final) == sorted(f"{root}/v/{k}" for k in [*files, "extra.json", "marker.json"])
    newest = max(o["LastModified"] for o in final.values())
    assert final[f"{root}/v/marker.json"]["LastModified"] == newest
    body = client.get_object(Bucket=bucket, Key=f"{root}/v/d/c.bin")["Body"].read()
    assert body == b"c" * 1000
    assert not _objects(client, bucket, f"{root}/_staging/"), "staging is dropped after the marker"


def test_a_missing_staged_object_publishes_no_marker(store, tmp_path):
    client, bucket, root = store
    (tmp_path / "a").write_bytes(b"aa")
    upload_files(client, bucket, {"a": tmp_path / "a"}, f"{root}/_staging/1")
    with pytest.raises(Exception):  # noqa: B017 - boto's NoSuchKey/404, whichever the copy raises
        publish(client, bucket, staging=f"{root}/_staging/1", final=f"{root}/v", paths=["a", "b"],
                marker=f"{root}/v/marker.json", body="{}")
    assert f"{root}/v/marker.json" not in _objects(client, bucket, f"{root}/v/")


def test_model_versions_count_up_and_serving_takes_the_newest_promoted(cfg, tmp_path):
    client, bucket, model = s3_client(cfg), cfg.buckets.models, f"publish-{uuid.uuid4().hex[:6]}"
    saved = tmp_path / "saved"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"pb")
    (saved / "variables" / "variables.index").write_bytes(b"ix")
    versions = [publish_model(client, bucket, model, saved, extras={"metrics.json": b"{}"},
                              info={"promoted": promoted}) for promoted in (True, False)]
    assert versions == [1, 2] and serving_version(client, bucket, model) == 1
    marker = json.loads(client.get_object(Bucket=bucket, Key=f"{model}/2/{MARKER}")["Body"].read())
    assert marker["uri"] == f"s3://{bucket}/{model}/2/"
    remove_prefix(client, bucket, f"{model}/")


RESERVER = """
import sys
from dlpipe.core.config import load_config
from dlpipe.core.s3 import s3_client
from dlpipe.registry.store import reserve_version
client = s3_client(load_config())
print(" ".join(str(reserve_version(client, sys.argv[1], sys.argv[2])) for _ in range(5)))
"""


def test_concurrent_reservations_from_processes_get_distinct_versions(cfg, test_env):
    """Issue 17: six processes reserve five versions each at once on the real store."""
    import subprocess
    import sys

    model = f"reserve-{uuid.uuid4().hex[:6]}"
    procs = [subprocess.Popen([sys.executable, "-c", RESERVER, cfg.buckets.models, model], env=test_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(6)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    versions = [int(v) for out, _ in outs for v in out.split()]
    assert sorted(versions) == list(range(1, 31)), "each number once, none skipped"
    remove_prefix(s3_client(cfg), cfg.buckets.models, f"{model}/")
