"""``tf.data`` input pipeline from a dataset manifest on the object store.

Each worker takes a disjoint set of shards (``shards[worker::workers]``), so together the
workers read every record exactly once per epoch. Shards stream through ``ShardCache``
(parallel ranged GETs, verified, ahead of the reader) into ``TFRecordDataset`` with a
parallel interleave; records are shuffled, then batched *before* parsing and decoding so
those run once per batch. Shard order is reshuffled each epoch from ``seed``.

When a worker's share of a split fits in ``memory_cache_mb`` as uint8 pixels, the first pass
decodes it into an in-memory ``tf.data`` cache and later epochs only shuffle, batch and scale:
decoding then costs once per run instead of once per epoch, so the model, not the PNG decoder,
sets the pace on a fast CPU. Larger shares stream and decode every epoch as before.

The shards the interleave holds open and ``prefetch_shards`` more download at once, and the
first pass's start downloading when the dataset is built, not when tf.data first asks: a cold
first batch waits for the open shards' bytes only, not for the graph start-up and then a queue.

tf.data's autotuner is off, with the parallelism set here: on a 2-core machine it settled, in
about one pass in three, on running the decode on one core for the whole pass (18k instead of
33-37k images/s, the same pipeline over local files; measured in bench_reader). Decoding is
the CPU-bound stage and uses every core the process may run on (``os.sched_getaffinity``).

With ``tf.distribute`` pass ``InputContext.input_pipeline_id`` / ``num_input_pipelines``
as ``worker``/``workers``: the dataset turns auto-sharding off because it shards itself.
"""

from __future__ import annotations

import itertools
import os
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
    cycle_length: int = 4, record_sharding: bool = False, memory_cache_mb: float = 0,
) -> Any:
    """Batches of ``(images, labels)`` (or ``(images, labels, ids)``) for one worker.

    ``epochs=None`` repeats forever (use ``steps_per_epoch``); records never cross an epoch
    boundary, so each epoch holds each of this worker's records exactly once.
    ``record_sharding`` lets a split with fewer shards than workers (a small validation
    split) be read whole by every worker, which then keeps every ``workers``-th record.
    ``memory_cache_mb`` > 0 keeps the decoded share in memory when it fits (see the module).
    """
    import tensorflow as tf

    from models.preprocess import augment_images, decode_pixels, scale_pixels

    split_shards = len(manifest.shards_of(split))
    by_record = record_sharding and split_shards < workers
    mine = (worker_shards(manifest, split, worker=0, workers=1) if by_record
            else worker_shards(manifest, split, worker=worker, workers=workers))
    image = manifest.image
    spec = feature_spec(manifest)
    in_memory = 0 < share_bytes(manifest, split, worker=worker, workers=workers,
                                by_record=by_record) <= memory_cache_mb * (1 << 20)

    in_order = not shuffle or by_record
    cycle = min(cycle_length, len(mine))
    ahead = cycle - 1 + prefetch_shards  # beyond the one being handed out: the open ones, then more
    cores = decode_parallelism()
    records = _streamed_records(mine, cache, cycle=cycle, ahead=ahead, seed=seed, shuffle=shuffle,
                                in_order=in_order)
    if by_record:
        records = records.shard(workers, worker)

    def parse(serialized: Any) -> Any:
        parsed = tf.io.parse_example(serialized, spec)
        pixels = decode_pixels(parsed["image"], height=image["height"], width=image["width"],
                               channels=image["channels"], resize=False)
        return (pixels, parsed["label"], parsed["id"]) if include_id else (pixels, parsed["label"])

    def to_model(pixels: Any, *rest: Any) -> Any:
        pixels = scale_pixels(pixels)
        if augment:
            pixels = augment_images(pixels, seed=seed)
        return (pixels, *rest)

    if in_memory:
        # decode once (batched, in parallel) and keep uint8 records: passes after the first
        # read the cache instead of the shards
        records = (records.batch(256)
                   .map(parse, num_parallel_calls=cores, deterministic=in_order)
                   .unbatch().cache())
    if shuffle:  # before repeat: each pass reshuffles, and no record crosses into another epoch
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = records.repeat(epochs if epochs is not None else -1)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    # deterministic maps: a batch finished early must not overtake the end of its epoch
    to_batch = to_model if in_memory else (lambda serialized: to_model(*parse(serialized)))
    ds = ds.map(to_batch, num_parallel_calls=cores, deterministic=True)
    options = reader_options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    # The first pass's downloads start now (stream() joins them), after the graph is built:
    # range threads reading sockets while Python traces the graph slow both down (the GIL).
    cache.start(shard_order(mine, epoch=0, seed=seed, shuffle=shuffle), ahead=ahead)
    return ds.with_options(options).prefetch(2)


def decode_parallelism() -> int:
    """Parallel decode calls: every core the process may run on (the autotuner is off)."""
    return len(os.sched_getaffinity(0))


def reader_options() -> Any:
    """The ``tf.data.Options`` every reader here runs with: the autotuner off (the module says why)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def _streamed_records(mine: list[RemoteShard], cache: ShardCache, *, cycle: int, ahead: int,
                      seed: int, shuffle: bool, in_order: bool) -> Any:
    """Serialized records of ``mine``, read from each shard as soon as its verified copy is in
    the cache, ``cycle`` shards at a time; each pass (epoch) takes the shards in a new order."""
    import tensorflow as tf

    passes = itertools.count()  # tf.data calls ``files`` again for every pass (epoch)

    def files() -> Iterator[str]:
        order = shard_order(mine, epoch=next(passes), seed=seed, shuffle=shuffle)
        yield from cache.stream(order, ahead=ahead)

    paths = tf.data.Dataset.from_generator(files, output_signature=tf.TensorSpec((), tf.string))
    return paths.interleave(lambda p: tf.data.TFRecordDataset(p, buffer_size=1 << 20),
                            cycle_length=cycle, num_parallel_calls=cycle, deterministic=in_order)


def share_bytes(manifest: Manifest, split: str, *, worker: int, workers: int, by_record: bool) -> int:
    """uint8 pixel bytes of one worker's records of ``split``: what it holds when cached."""
    image = manifest.image
    per_image = image["height"] * image["width"] * image["channels"]
    if by_record:
        records = -(-manifest.counts[split]["records"] // workers)
    else:
        records = sum(s.records for s in manifest.shards_of(split)[worker::workers])
    return records * per_image
