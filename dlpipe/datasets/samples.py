"""A few records of a published dataset, read back from its shards without TensorFlow.

For looking at a dataset (a notebook's grid of images per class, a spot check after an
export): shards come through the verified shard cache, records through ``read_records``
(both CRCs checked), and each ``tf.train.Example`` is decoded here, the inverse of
``tfrecord.encode_example``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from dlpipe.datasets.tfrecord import FEATURES, read_records

if TYPE_CHECKING:
    from dlpipe.datasets.manifest import Manifest
    from dlpipe.datasets.shard_cache import ShardCache


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, bytes | int]]:
    """(field number, payload) of one protobuf message: length-delimited fields as bytes,
    varints as ints (the only wire types an Example uses)."""
    out, pos = [], 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 2:
            length, pos = _varint(data, pos)
            out.append((number, data[pos:pos + length]))
            pos += length
        elif wire == 0:
            value, pos = _varint(data, pos)
            out.append((number, value))
        else:
            raise ValueError(f"unexpected protobuf wire type {wire} in a tf.train.Example")
    return out


def decode_example(record: bytes) -> dict[str, bytes | int]:
    """A serialized ``tf.train.Example`` of one value per feature -> {name: bytes or int}."""
    out: dict[str, bytes | int] = {}
    for _, features in _fields(record):              # Example.features
        for _, entry in _fields(features):           # Features.feature map entries
            parts = dict(_fields(entry))            # 1: key, 2: Feature
            name = parts[1].decode()
            (kind, values), = _fields(parts[2])     # 1: BytesList, 3: Int64List
            (_, value), = _fields(values)
            if kind == 3 and isinstance(value, bytes):  # packed int64
                value, _ = _varint(value, 0)
            out[name] = value - (1 << 64) if isinstance(value, int) and value >= 1 << 63 else value
    missing = set(FEATURES) - set(out)
    if missing:
        raise ValueError(f"record lacks features {sorted(missing)}")
    return out


def sample_images(manifest: Manifest, cache: ShardCache, *, split: str = "train",
                  per_class: int = 6) -> dict[str, list[dict[str, bytes | int]]]:
    """Up to ``per_class`` decoded records of each class of ``split``, in shard order; reads
    only as many shards as it takes to fill every class."""
    from dlpipe.datasets.shard_cache import RemoteShard

    found: dict[str, list[dict[str, bytes | int]]] = defaultdict(list)
    for shard in manifest.shards_of(split):
        if shard.records == 0:
            continue
        with open(cache.fetch(RemoteShard.of(manifest, shard)), "rb") as fh:
            for record in read_records(fh, name=manifest.shard_uri(shard)):
                example = decode_example(record)
                name = manifest.classes[int(example["label"])]
                if len(found[name]) < per_class:
                    found[name].append(example)
        if all(len(found[c]) >= per_class for c in manifest.classes):
            break
    return {c: found[c] for c in manifest.classes if found[c]}
