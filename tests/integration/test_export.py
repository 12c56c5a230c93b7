"""Export and reader end to end on the real stack: ingested digits in Delta on MinIO ->
TFRecord shards + manifest -> tf.data, checked against delta-rs and plain TensorFlow."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from dlpipe.core.config import with_overrides
from dlpipe.core.s3 import s3_client
from dlpipe.datasets.manifest import STAGING, DatasetNotFoundError, open_manifest
from dlpipe.datasets.shard_cache import RemoteShard, ShardCache
from models.input import make_dataset
from spark_jobs.export import job as export_job
from spark_jobs.export.transforms import split_of
from tests.helpers import read_delta_with_delta_rs

pytestmark = pytest.mark.integration


@pytest.fixture()
def cache(cfg, tmp_path):
    c = ShardCache.from_config(cfg, cache_dir=tmp_path / "cache")
    yield c
    c.close()


def table_rows(cfg, version: int) -> list[dict]:
    table = read_delta_with_delta_rs(cfg, cfg.tables.clean, version=version)
    return table.to_pyarrow_table(columns=["id", "label", "label_index", "image_png"]).to_pylist()


def test_manifest_counts_match_the_delta_version_it_names(ingested, exported):
    client = s3_client(ingested)
    latest = read_delta_with_delta_rs(ingested, ingested.tables.clean).version()
    assert exported.delta_version == latest >= 1, "two ingest runs: two commits or more"
    assert open_manifest(client, ingested.buckets.datasets, ingested.export.dataset) == exported
    rows = table_rows(ingested, exported.delta_version)
    assert exported.source["rows"] == len(rows) >= 1500
    fractions, salt = exported.split["fractions"], exported.split["salt"]
    want: dict[str, Counter] = {"train": Counter(), "validation": Counter(), "test": Counter()}
    for r in rows:
        want[split_of(r["id"], fractions, salt=salt)][r["label"]] += 1
    for split, counter in want.items():
        want_counts = {"records": sum(counter.values()), "by_class": dict(sorted(counter.items()))}
        assert exported.counts[split] == want_counts
        shards = exported.shards_of(split)
        assert sum(s.records for s in shards) == sum(counter.values())
    assert len(exported.shards_of("train")) >= ingested.training.workers
    assert exported.classes == [str(i) for i in range(10)]
    listed = client.list_objects_v2(Bucket=exported.bucket, Prefix=exported.prefix + "/")["Contents"]
    keys = {o["Key"]: o["Size"] for o in listed}
    assert keys == {**{exported.key(s): s.bytes for s in exported.shards},
                    exported.prefix + "/manifest.json": keys[exported.prefix + "/manifest.json"]}, \
        "no staging objects left behind"


@pytest.mark.parametrize("memory_cache_mb", [0, 64], ids=["streamed", "decoded-in-memory"])
def test_round_trip_ids_labels_and_pixels(ingested, exported, cache, memory_cache_mb):
    rows = {r["id"]: r for r in table_rows(ingested, exported.delta_version)}
    seen = 0
    for split in ("train", "validation", "test"):
        ds = make_dataset(exported, split, cache=cache, batch_size=128, shuffle=False, include_id=True,
                          memory_cache_mb=memory_cache_mb)
        for images, labels, ids in ds:
            for image, label, rid in zip(images.numpy(), labels.numpy(), ids.numpy(), strict=True):
                row = rows[rid.decode()]
                assert label == row["label_index"]
                want = np.asarray(Image.open(io.BytesIO(row["image_png"])), dtype="float32") / 255.0
                np.testing.assert_array_equal(image[..., 0], want)
                seen += 1
    assert seen == len(rows)


@pytest.mark.parametrize("memory_cache_mb", [0, 64], ids=["streamed", "decoded-in-memory"])
def test_two_workers_read_every_train_record_exactly_once_per_epoch(ingested, exported, cache,
                                                                     memory_cache_mb, monkeypatch):
    fractions, salt = exported.split["fractions"], exported.split["salt"]
    train = {r["id"] for r in table_rows(ingested, exported.delta_version)
             if split_of(r["id"], fractions, salt=salt) == "train"}
    passes = []  # one per pass over the shards: a split held in memory is read from them once
    stream = cache.stream
    monkeypatch.setattr(cache, "stream", lambda shards, **kw: passes.append(1) or stream(shards, **kw))
    per_worker = []
    for worker in range(2):
        passes.clear()
        ds = make_dataset(exported, "train", cache=cache, batch_size=100, worker=worker, workers=2,
                          epochs=3, include_id=True, augment=True, seed=3, memory_cache_mb=memory_cache_mb)
        order = [i.decode() for _, _, batch in ds for i in batch.numpy()]
        ids = Counter(order)
        assert set(ids.values()) == {3}, "each of this worker's records once in each of 3 epochs"
        n = len(ids)
        epochs = [order[:n], order[n:2 * n], order[2 * n:]]
        assert all(len(set(e)) == n for e in epochs), "no record crosses an epoch boundary"
        assert epochs[1] != epochs[2], "records are reshuffled each epoch"
        assert len(passes) == (1 if memory_cache_mb else 3)
        per_worker.append(set(ids))
    assert not per_worker[0] & per_worker[1]
    assert per_worker[0] | per_worker[1] == train


def test_a_shard_downloaded_with_any_s3_client_parses_with_plain_tensorflow(exported, cfg, tmp_path):
    import tensorflow as tf

    shard = exported.shards_of("validation")[0]
    local = tmp_path / "shard.tfrecord"
    s3_client(cfg).download_file(exported.bucket, exported.key(shard), str(local))
    types = {"string": tf.string, "int64": tf.int64}
    spec = {k: tf.io.FixedLenFeature(f["shape"], types[f["dtype"]]) for k, f in exported.features.items()}
    parsed = [tf.io.parse_example(b, spec) for b in tf.data.TFRecordDataset(str(local)).batch(1000)]
    assert sum(len(p["id"]) for p in parsed) == shard.records
    assert set(parsed[0]) == {"image", "label", "id", "height", "width", "channels"}
    assert parsed[0]["height"].numpy()[0] == exported.image["height"]


def test_reexport_of_the_same_version_gives_the_same_assignment_and_bytes(spark, ingested, exported):
    again = export_job.export(spark, ingested, version=exported.delta_version,
                              dataset=ingested.export.dataset + "-again")
    assert again.counts == exported.counts
    assert [(s.path, s.records, s.crc32c) for s in again.shards] == \
           [(s.path, s.records, s.crc32c) for s in exported.shards]
    unchanged = export_job.export(spark, ingested, version=exported.delta_version)
    assert unchanged.export_id == exported.export_id, "a published version is not rewritten"


def copy_dataset(cfg, manifest, prefix: str, *, mutate=None):
    """The manifest and shards under another prefix, optionally with one shard changed."""
    client = s3_client(cfg)
    copy = replace(manifest, prefix=prefix)
    for shard in manifest.shards:
        body = client.get_object(Bucket=manifest.bucket, Key=manifest.key(shard))["Body"].read()
        if mutate is not None:
            body = mutate(shard, body)
        if body is not None:
            client.put_object(Bucket=copy.bucket, Key=copy.key(shard), Body=body)
    client.put_object(Bucket=copy.bucket, Key=f"{prefix}/manifest.json", Body=copy.to_json().encode())
    return copy


@pytest.mark.parametrize(("kind", "message"), [
    ("corrupt", "is corrupt: .* CRC32C"),
    ("truncated", "is shorter than the manifest"),
    ("missing", "is listed in its manifest but does not exist"),
])
def test_bad_shards_stop_the_reader_with_their_name(cfg, exported, cache, kind, message):
    target = exported.shards_of("train")[1]

    def mutate(shard, body):
        if shard != target:
            return body
        if kind == "corrupt":
            return body[:100] + bytes([body[100] ^ 1]) + body[101:]
        if kind == "truncated":
            return body[: len(body) // 2]
        return None

    bad = copy_dataset(cfg, exported, f"{exported.dataset}-{kind}/{exported.delta_version}", mutate=mutate)
    import tensorflow as tf

    ds = make_dataset(bad, "train", cache=cache, batch_size=64, shuffle=False)
    named = f"ShardError: shard {re.escape(bad.shard_uri(target))} {message}"
    with pytest.raises(tf.errors.OpError, match=named):
        for _ in ds:
            pass
    leftovers = sorted(p.name for p in cache.dir.iterdir())
    assert not [n for n in leftovers if ".partial" in n], "no partial file survives"
    assert not cache.local_path(RemoteShard.of(bad, target)).exists()


def test_a_killed_export_publishes_nothing_and_the_next_one_cleans_up(spark, ingested, test_env):
    dataset = f"killed-{uuid.uuid4().hex[:6]}"
    client, bucket = s3_client(ingested), ingested.buckets.datasets
    flags = [f"--set=tables.clean={ingested.tables.clean}", f"--dataset={dataset}",
             "--set=export.shard_target_mb=0.02"]
    proc = subprocess.Popen([sys.executable, "-m", "dlpipe.cli.main", "export", *flags], env=test_env,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline, staged = time.monotonic() + 240, []
    while time.monotonic() < deadline and proc.poll() is None and not staged:
        staged = [o["Key"] for o in client.list_objects_v2(
            Bucket=bucket, Prefix=f"{dataset}/").get("Contents", []) if f"/{STAGING}/" in o["Key"]]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    output = proc.communicate()[0].decode(errors="replace")
    assert staged, f"the export never reached staging before it ended:\n{output[-3000:]}"
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=f"{dataset}/").get("Contents", [])]
    assert not [k for k in keys if k.endswith("manifest.json")], "killed while staging: no manifest"
    with pytest.raises(DatasetNotFoundError, match="no published export"):
        open_manifest(client, bucket, dataset)

    cfg = with_overrides(ingested, {"export.shard_target_mb": 0.02})
    manifest = export_job.export(spark, cfg, dataset=dataset)
    assert len(manifest.shards_of("train")) > 5
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=f"{dataset}/").get("Contents", [])]
    assert not [k for k in keys if f"/{STAGING}/" in k], "stale staging removed"
    published = client.get_object(Bucket=bucket, Key=f"{manifest.prefix}/manifest.json")["Body"].read()
    assert json.loads(published)["export_id"] == manifest.export_id


def test_an_overwrite_killed_while_publishing_never_leaves_a_manifest_without_its_shards(
        spark, ingested, test_env):
    """Issue 17: `export --overwrite` SIGKILLs itself (dlpipe.core.faults) once its new shards
    are copied and before its manifest is written. Readers then find no version rather than
    a manifest naming shards that were replaced or deleted; the next overwrite publishes a
    manifest whose every shard is there with its size."""
    from dlpipe.core.faults import ENV as FAULT_ENV

    dataset = f"overwrite-{uuid.uuid4().hex[:6]}"
    client, bucket = s3_client(ingested), ingested.buckets.datasets
    cfg = with_overrides(ingested, {"export.shard_target_mb": 0.05})
    first = export_job.export(spark, cfg, dataset=dataset)
    flags = [f"--set=tables.clean={ingested.tables.clean}", f"--dataset={dataset}", "--overwrite",
             "--set=export.shard_target_mb=0.02"]
    killed = subprocess.run([sys.executable, "-m", "dlpipe.cli.main", "export", *flags],
                            env={**test_env, FAULT_ENV: "publish_copied"}, capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    with pytest.raises(DatasetNotFoundError):
        open_manifest(client, bucket, dataset)

    again = export_job.export(spark, cfg, dataset=dataset, overwrite=True)
    assert again.export_id != first.export_id
    published = open_manifest(client, bucket, dataset)
    assert published == again
    sizes = {o["Key"]: o["Size"] for o in client.list_objects_v2(
        Bucket=bucket, Prefix=f"{again.prefix}/").get("Contents", [])}
    assert {again.key(s): s.bytes for s in again.shards}.items() <= sizes.items()
    assert not [k for k in sizes if f"/{STAGING}/" in k]


def test_an_export_through_minio_killed_then_stalled_publishes_a_whole_version(
        spark, ingested, exported, stack, cache):
    """Issue 17: once the export has staged its first shard, MinIO is SIGKILLed and restarted
    3 s later, then SIGSTOPped for 30 s. The export rides it out (S3A and boto3 retry) or fails
    with an error that names the cause, and a re-run publishes. Either way the version it
    publishes is whole: every shard the manifest names reads back with its size and CRC32C,
    and the counts match the first export of the same Delta version."""
    from dlpipe.core.errors import store_unreachable
    from tests.store_outage import minio_outage_when

    dataset = f"outage-{uuid.uuid4().hex[:6]}"
    cfg = with_overrides(ingested, {"export.shard_target_mb": 0.02})
    client, bucket = s3_client(ingested), ingested.buckets.datasets
    running = [True]

    def staging() -> bool:
        try:
            return any(f"/{STAGING}/" in o["Key"] for o in client.list_objects_v2(
                Bucket=bucket, Prefix=f"{dataset}/").get("Contents", []))
        except Exception:  # not there yet is not a failure
            return False

    failure = None
    with minio_outage_when(stack, staging, busy=lambda: running[0]) as outage:
        try:
            manifest = export_job.export(spark, cfg, dataset=dataset, version=exported.delta_version)
        except Exception as exc:  # a clear failure is allowed: the re-run must publish
            manifest, failure = None, exc
        finally:
            running[0] = False
    assert outage.get("stalled") and outage.get("busy_at_kill"), outage
    if manifest is None:
        assert store_unreachable(failure) is not None, f"not named as the store: {failure!r}"[:3000]
        manifest = export_job.export(spark, cfg, dataset=dataset, version=exported.delta_version)
    assert manifest.counts == exported.counts
    assert open_manifest(client, bucket, dataset).export_id == manifest.export_id
    for split, counts in manifest.counts.items():
        ds = make_dataset(manifest, split, cache=cache, batch_size=256, shuffle=False)
        assert sum(int(labels.shape[0]) for _, labels in ds) == counts["records"], split
