"""Read throughput from MinIO with parallel ranged GETs, against the same bytes on local disk.

This is the floor under every MinIO-backed reader (the tf.data shard reader in particular):
if a plain parallel GET cannot keep up with the local disk, nothing built on it will.

It also decides the shard cache's download path: ``ShardCache`` (parallel ranged GETs
written in place with ``pwrite``, then a CRC32C check) against boto3's managed transfer
(``download_file`` with a ``TransferConfig`` of the same part size and threads, followed by
the same CRC32C check), shard-sized objects to local disk. The faster one is what the cache
uses (see docs/training.md, "Reader").
"""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor

from bench.harness import Context, Result, median_rate

PART = 8 * 1024 * 1024


def run(ctx: Context) -> list[Result]:
    from dlpipe.core.s3 import s3_client

    size = (32 if ctx.quick else 256) * 1024 * 1024
    repeats = 3 if ctx.quick else 5
    payload = os.urandom(size)
    local = ctx.work_dir / "s3-read.bin"
    local.write_bytes(payload)
    client = s3_client(ctx.cfg, max_pool_connections=16)
    bucket, key = ctx.cfg.buckets.datasets, f"_bench/s3-read/{uuid.uuid4().hex}.bin"
    client.put_object(Bucket=bucket, Key=key, Body=payload)

    def read_local() -> float:
        with open(local, "rb", buffering=0) as fh:
            while fh.read(PART):
                pass
        return size / 2**20

    def read_s3() -> float:
        def get(offset: int) -> int:
            rng = f"bytes={offset}-{min(offset + PART, size) - 1}"
            return len(client.get_object(Bucket=bucket, Key=key, Range=rng)["Body"].read())

        with ThreadPoolExecutor(8) as pool:
            assert sum(pool.map(get, range(0, size, PART))) == size
        return size / 2**20

    try:
        baseline = median_rate(read_local, repeats=repeats)
        value = median_rate(read_s3, repeats=repeats)
        ours, managed = _shard_downloads(ctx, client, bucket, key, payload, repeats)
    finally:
        client.delete_object(Bucket=bucket, Key=key)
        local.unlink(missing_ok=True)
    return [Result(
        benchmark="s3_read", metric="parallel ranged GET throughput", unit="MiB/s",
        value=value, baseline_name="local disk read (page cache warm)", baseline_value=baseline,
        notes=f"{size >> 20} MiB object, 8 MiB ranges, 8 threads; median of {repeats}",
    ), Result(
        benchmark="s3_read", metric="shard download to the cache, ShardCache (ranged GET + pwrite)",
        unit="MiB/s", value=ours, baseline_name="boto3 download_file with TransferConfig",
        baseline_value=managed,
        notes=f"{size >> 20} MiB object, 8 MiB parts, 8 threads, CRC32C checked in both; "
              f"interleaved, median of {repeats}",
    )]


def _shard_downloads(ctx: Context, client, bucket: str, key: str, payload: bytes,
                     repeats: int) -> tuple[float, float]:
    """MiB/s of the shard cache's own download and of boto3's managed transfer, interleaved."""
    import google_crc32c
    from boto3.s3.transfer import TransferConfig

    from dlpipe.datasets.shard_cache import RemoteShard, ShardCache

    crc = google_crc32c.Checksum(payload).hexdigest().decode()
    shard = RemoteShard(bucket, key, len(payload), crc)
    transfer = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART,
                              max_concurrency=8, use_threads=True)
    target = ctx.work_dir / "shard-managed.bin"

    def ours() -> float:
        cache = ShardCache(client, ctx.work_dir / f"cache-{uuid.uuid4().hex}", max_bytes=4 << 30,
                           threads=8, range_bytes=PART)
        try:
            cache.fetch(shard).unlink()
        finally:
            cache.close()
        return len(payload) / 2**20

    def managed() -> float:
        client.download_file(bucket, key, str(target), Config=transfer)
        got = google_crc32c.Checksum()
        with open(target, "rb") as fh:
            while chunk := fh.read(PART):
                got.update(chunk)
        assert got.hexdigest().decode() == crc
        target.unlink()
        return len(payload) / 2**20

    ours_rates, managed_rates = [], []
    for _ in range(repeats):
        ours_rates.append(median_rate(ours, repeats=1))
        managed_rates.append(median_rate(managed, repeats=1))
    return sorted(ours_rates)[repeats // 2], sorted(managed_rates)[repeats // 2]
