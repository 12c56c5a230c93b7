"""The manifest format and the per-worker shard assignment, without a store."""

from __future__ import annotations

import pytest

from dlpipe.core.errors import DlpipeError
from dlpipe.datasets.manifest import Manifest, Shard, shard_path
from models.input import shard_order, share_bytes, worker_shards


def manifest(train_shards: int = 5) -> Manifest:
    shards = [Shard("train", shard_path("train", i, train_shards), 10 + i, 100 * i, f"{i:08x}", {"0": 10 + i})
              for i in range(train_shards)]
    shards.append(Shard("test", shard_path("test", 0, 1), 3, 30, "0000000a", {"1": 3}))
    return Manifest(
        dataset="d", bucket="b", prefix="d/7", export_id="x", created_at="2026-11-22T00:00:00+00:00",
        source={"table": "s3a://lake/clean", "delta_version": 7, "delta_timestamp": "t", "rows": 63},
        split={"method": "m", "salt": "s", "fractions": {"train": 1.0}}, classes=["0", "1"],
        image={"format": "PNG", "height": 8, "width": 8, "channels": 1},
        features={"image": {"dtype": "string", "shape": []}},
        counts={"train": {"records": 60, "by_class": {"0": 60}}}, shards=shards,
    )


def test_json_round_trip_and_layout():
    m = manifest()
    again = Manifest.from_json(m.to_json(), where="here")
    assert again == m
    assert m.uri == "s3://b/d/7/manifest.json"
    assert m.shard_uri(m.shards[0]) == "s3://b/d/7/train/part-00000-of-00005.tfrecord"
    assert m.delta_version == 7


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "not valid JSON"),
    ('{"format": "something/else"}', "is not a dlpipe.datasets.tfrecord-dataset/1 manifest"),
    ('{"format": "dlpipe.datasets.tfrecord-dataset/1", "shards": []}', "missing or has unexpected fields"),
])
def test_bad_manifests_are_named(text, message):
    with pytest.raises(DlpipeError, match=message):
        Manifest.from_json(text, where="s3://b/d/7/manifest.json")


def test_workers_get_disjoint_shards_that_cover_the_split():
    m = manifest(5)
    parts = [worker_shards(m, "train", worker=w, workers=2) for w in range(2)]
    keys = [[s.key for s in p] for p in parts]
    assert not set(keys[0]) & set(keys[1])
    assert sorted(keys[0] + keys[1]) == sorted(m.key(s) for s in m.shards_of("train"))
    assert [len(k) for k in keys] == [3, 2]


def test_too_few_shards_for_the_workers_is_an_error_with_the_fix():
    with pytest.raises(DlpipeError, match=r"1 test shard\(s\) for 2 workers"):
        worker_shards(manifest(), "test", worker=0, workers=2)
    with pytest.raises(DlpipeError, match="unknown split"):
        worker_shards(manifest(), "eval", worker=0, workers=1)


def test_shard_order_is_a_seeded_permutation_per_epoch():
    shards = worker_shards(manifest(5), "train", worker=0, workers=1)
    first = shard_order(shards, epoch=0, seed=1, shuffle=True)
    assert first == shard_order(shards, epoch=0, seed=1, shuffle=True)
    assert sorted(s.key for s in first) == sorted(s.key for s in shards)
    orders = {tuple(s.key for s in shard_order(shards, epoch=e, seed=1, shuffle=True)) for e in range(6)}
    assert len(orders) > 1
    assert shard_order(shards, epoch=3, seed=1, shuffle=False) == shards


def test_share_bytes_is_what_a_worker_holds_decoded():
    m = manifest(5)  # train shards of 10..14 records, 8x8x1 pixels
    assert share_bytes(m, "train", worker=0, workers=2, by_record=False) == (10 + 12 + 14) * 64
    assert share_bytes(m, "train", worker=1, workers=2, by_record=False) == (11 + 13) * 64
    assert share_bytes(m, "train", worker=1, workers=2, by_record=True) == 30 * 64
