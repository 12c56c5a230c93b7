"""Serving: requests/s and p50/p99 latency of ``dlpipe serve`` at concurrency 1, 8 and 32.

Each request is one base64 PNG digit (8x8 grey, the demo's model) in TF Serving's row
format, sent by an aiohttp client in its own process (so client and server do not share a
GIL) over keep-alive connections. Baseline, same run: the same SavedModel signature
called in-process, one image per call, in a loop. Target: at least 0.5 of the baseline at
concurrency 8 (server-side batching merges concurrent requests into one TensorFlow call).
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import time
import uuid

from bench.harness import Context, Result
from bench.serving_model import publish_untrained

TARGET_AT_8 = 0.5
LEVELS = (1, 8, 32)

# The load generator, run as `python -c`: prints one JSON line of results per concurrency.
CLIENT = r"""
import asyncio, json, sys, time
import aiohttp

url, body, seconds, levels = sys.argv[1], sys.argv[2].encode(), float(sys.argv[3]), json.loads(sys.argv[4])

async def level(concurrency):
    latencies, errors = [], 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector,
                                     headers={"Content-Type": "application/json"}) as session:
        async def one():
            nonlocal errors
            t = time.perf_counter()
            async with session.post(url, data=body) as r:
                await r.read()
                if r.status != 200:
                    errors += 1
            return time.perf_counter() - t

        async def worker(until, record):
            while time.perf_counter() < until:
                d = await one()
                if record:
                    latencies.append(d)

        warm = time.perf_counter() + 1.0
        await asyncio.gather(*(worker(warm, False) for _ in range(concurrency)))
        start = time.perf_counter()
        await asyncio.gather(*(worker(start + seconds, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
    return {"concurrency": concurrency, "rps": len(latencies) / elapsed, "p50_ms": pick(0.5) * 1e3,
            "p99_ms": pick(0.99) * 1e3, "errors": errors, "requests": len(latencies)}

async def main():
    for c in levels:
        print(json.dumps(await level(c)), flush=True)

asyncio.run(main())
"""


def _digit_png() -> bytes:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    pixels = (load_digits().images[0] * (255 / 16)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _in_process_rate(cfg, name: str, version: int, png: bytes, seconds: float) -> float:
    import tensorflow as tf

    from dlpipe.core.s3 import s3_client
    from dlpipe.registry.sync import download_version

    path = download_version(s3_client(cfg), cfg.buckets.models, name, version,
                            cfg.serving.model_dir.expanduser())
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    batch = tf.constant([png])
    for _ in range(50):
        signature(image_bytes=batch)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        out = signature(image_bytes=batch)
        out["class_index"].numpy()
        calls += 1
    return calls / (time.perf_counter() - start)


def run(ctx: Context) -> list[Result]:
    from dlpipe.core.config import with_overrides
    from dlpipe.serving.launch import running_server

    seconds = 4.0 if ctx.quick else 10.0
    name = f"bench-serve-{uuid.uuid4().hex[:6]}"
    cfg = with_overrides(ctx.cfg, {"serving.model_dir": str(ctx.work_dir / "models")})
    version = publish_untrained(cfg, name, architecture="small", height=8, width=8, channels=1,
                                classes=[str(i) for i in range(10)])
    png = _digit_png()
    body = json.dumps({"instances": [{"b64": base64.b64encode(png).decode()}]})
    baseline = _in_process_rate(cfg, name, version, png, seconds)
    with running_server(cfg, models=[name], log=ctx.work_dir / "serve.log") as server:
        out = subprocess.run(
            [sys.executable, "-c", CLIENT, f"{server.url}/v1/models/{name}:predict", body,
             str(seconds), json.dumps(LEVELS)], capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    results = []
    for row in rows:
        c = row["concurrency"]
        notes = (f"p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, {row['requests']} requests "
                 f"in {seconds:.0f}s, {row['errors']} errors; one 8x8 PNG per request")
        results.append(Result(
            benchmark="serve", metric=f"requests/s, REST, concurrency {c}", unit="req/s",
            value=row["rps"], baseline_name="in-process calls of the same signature, 1 image each",
            baseline_value=baseline, target_ratio=TARGET_AT_8 if c == 8 else None, notes=notes))
    return results
