"""``tf.data`` input pipeline from a dataset manifest on the object store.

Each worker takes a disjoint set of shards (``shards[worker::workers]``), so together the
workers read every record exactly once per epoch. Shards stream through ``ShardCache``
(parallel ranged GETs, verified, ahead of the reader) into ``TFRecordDataset`` with a
parallel interleave; records are shuffled, then batched *before* parsing and decoding so
those run once per batch. Shard order is reshuffled each epoch from ``seed``.

With ``tf.distribute`` pass ``InputContext.input_pipeline_id`` / ``num_input_pipelines``
as ``worker``/``workers``: the dataset turns auto-sharding off because it shards itself.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from dlpipe.core.errors import DlpipeError
from dlpipe.datasets.manifest import Manifest
from dlpipe.datasets.shard_cache import RemoteShard, ShardCache

_TF_DTYPES = {"string": "string", "int64": "int64"}


def feature_spec(manifest: Manifest) -> dict[str, Any]:
    """``tf.io.parse_example`` spec from the manifest's features."""
    import tensorflow as tf

    return {name: tf.io.FixedLenFeature(f["shape"], getattr(tf, _TF_DTYPES[f["dtype"]]))
            for name, f in manifest.features.items()}


def worker_shards(manifest: Manifest, split: str, *, worker: int, workers: int) -> list[RemoteShard]:
    shards = manifest.shards_of(split)
    if not 0 <= worker < workers:
        raise DlpipeError(f"worker index {worker} is outside 0..{workers - 1}")
    if len(shards) < workers:
        raise DlpipeError(
            f"{manifest.uri} has {len(shards)} {split} shard(s) for {workers} workers; every "
            "worker needs one", fix=f"re-export with training.workers={workers} "
            "(dlpipe export --overwrite --set training.workers=N)")
    return [RemoteShard.of(manifest, s) for s in shards[worker::workers]]


def shard_order(shards: list[RemoteShard], *, epoch: int, seed: int, shuffle: bool) -> list[RemoteShard]:
    order = list(shards)
    if shuffle:
        random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


def make_dataset(
    manifest: Manifest, split: str, *, cache: ShardCache, batch_size: int,
    worker: int = 0, workers: int = 1, epochs: int | None = 1, shuffle: bool = True,
    shuffle_buffer: int = 10_000, seed: int = 0, augment: bool = False,
    drop_remainder: bool = False, include_id: bool = False, prefetch_shards: int = 2,
    cycle_length: int = 4, record_sharding: bool = False,
) -> Any:
    """Batches of ``(images, labels)`` (or ``(images, labels, ids)``) for one worker.

    ``epochs=None`` repeats forever (use ``steps_per_epoch``); records never cross an epoch
    boundary, so each epoch holds each of this worker's records exactly once.
    ``record_sharding`` lets a split with fewer shards than workers (a small validation
    split) be read whole by every worker, which then keeps every ``workers``-th record.
    """
    import tensorflow as tf

    from models.preprocess import augment_images, decode_images

    split_shards = len(manifest.shards_of(split))
    by_record = record_sharding and split_shards < workers
    mine = (worker_shards(manifest, split, worker=0, workers=1) if by_record
            else worker_shards(manifest, split, worker=worker, workers=workers))
    image = manifest.image
    spec = feature_spec(manifest)

    def files(epoch: int) -> Iterator[str]:
        yield from cache.stream(shard_order(mine, epoch=epoch, seed=seed, shuffle=shuffle),
                                ahead=prefetch_shards)

    def one_epoch(epoch: Any) -> Any:
        paths = tf.data.Dataset.from_generator(
            files, args=(epoch,), output_signature=tf.TensorSpec((), tf.string))
        records = paths.interleave(
            lambda p: tf.data.TFRecordDataset(p, buffer_size=1 << 20),
            cycle_length=min(cycle_length, len(mine)), num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=not shuffle or by_record)
        if by_record:
            records = records.shard(workers, worker)
        if shuffle:
            records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        return records

    epochs_ds = tf.data.Dataset.range(epochs) if epochs is not None else tf.data.Dataset.range(2**62)
    ds = epochs_ds.flat_map(one_epoch).batch(batch_size, drop_remainder=drop_remainder)

    def parse(serialized: Any) -> Any:
        parsed = tf.io.parse_example(serialized, spec)
        pixels = decode_images(parsed["image"], height=image["height"], width=image["width"],
                               channels=image["channels"], resize=False)
        if augment:
            pixels = augment_images(pixels, seed=seed)
        if include_id:
            return pixels, parsed["label"], parsed["id"]
        return pixels, parsed["label"]

    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
