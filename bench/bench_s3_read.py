"""Read throughput from MinIO with parallel ranged GETs, against the same bytes on local disk.

This is the floor under every MinIO-backed reader (the tf.data shard reader in particular):
if a plain parallel GET cannot keep up with the local disk, nothing built on it will.
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
    finally:
        client.delete_object(Bucket=bucket, Key=key)
        local.unlink(missing_ok=True)
    return [Result(
        benchmark="s3_read", metric="parallel ranged GET throughput", unit="MiB/s",
        value=value, baseline_name="local disk read (page cache warm)", baseline_value=baseline,
        notes=f"{size >> 20} MiB object, 8 MiB ranges, 8 threads; median of {repeats}",
    )]
