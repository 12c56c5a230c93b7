"""Serving under overload: 4x the measured capacity, slow clients and bomb-like images.

``dlpipe serve`` (the demo's 8x8 model, untrained) on loopback. First its capacity: requests/s
of one-image requests from 32 concurrent keep-alive clients. Then an open-loop load at 4x that
rate for 60 s (30 s with --quick) from one aiohttp process, with in every 20 requests: a slow
client (headers and a trickle of body, never finished), a decompression-bomb PNG (20000x20000
in ~100 bytes), a request over the pixel budget (5 compressible 2048x2048 PNGs), a heavy but
allowed request (3 of them), and 16 normal ones. Bounded in count (at most ``MAX_IN_FLIGHT``
requests open; the rest are counted as not sent) and time (a request not answered within
``GIVE_UP_S`` is a failure; the client hangs up).

Reported: peak server RSS (VmHWM, reset after warm-up) against its RSS when idle; the share of
requests answered 200 within the deadline (plus ``GRACE_S`` for the loaded client's own lag)
or shed/refused (429, 503, 408, 413), target 100%; server errors (5xx other than the 503s that
shed load), which must be 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from bench.harness import Context, Result
from bench.serving_model import publish_untrained

DEADLINE_S = 2.0
GRACE_S = 1.0      # a 200 later than the deadline plus this is a failure
GIVE_UP_S = 15.0   # a request not answered by then is a failure (and the client hangs up)
MAX_IN_FLIGHT = 200
SHED = {429, 503, 408, 413}

# The load generator, run as `python -c CLIENT <json args>`: prints one JSON line.
CLIENT = r"""
import asyncio, base64, io, json, struct, sys, time, zlib
from PIL import Image

a = json.loads(sys.argv[1])
deadline, grace, cap = a["deadline"], a["grace"], a["max_in_flight"]
host, port = a["host"], a["port"]

def png(size):
    buf = io.BytesIO()
    Image.new("L", size).save(buf, format="PNG")
    return buf.getvalue()

def bomb_png(w, h):
    chunk = lambda k, d: struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))

def request(images, length=None):
    body = json.dumps({"instances": [{"b64": base64.b64encode(i).decode()} for i in images]}).encode()
    head = (f"POST {a['path']} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length or len(body)}\r\n\r\n").encode()
    return head + (body[:15] if length else body)

big = png((2048, 2048))
REQUESTS = {"normal": request([png((8, 8))]), "bomb": request([bomb_png(20000, 20000)]),
            "over_budget": request([big] * 5), "heavy": request([big] * 3),
            "slow": request([png((8, 8))], length=100_000)}
MIX = ["slow", "bomb", "over_budget", "heavy"] + ["normal"] * 16
idle = []  # (reader, writer, last used) of open keep-alive connections

async def connection(kind):
    while idle and kind != "slow":
        reader, writer, used = idle.pop()
        if time.perf_counter() - used < 2.0 and not reader.at_eof():  # uvicorn closes idle ones at 5 s
            return reader, writer, True
        writer.close()
    return (*await asyncio.open_connection(host, port), False)

async def exchange(kind):
    # One request on a pooled connection (a slow one on its own, trickling its body).
    reader, writer, reused = await connection(kind)
    keep = False
    try:
        writer.write(REQUESTS[kind])
        trickle = None
        if kind == "slow":
            async def drip():
                while True:
                    await asyncio.sleep(0.5)
                    writer.write(b" ")
            trickle = asyncio.ensure_future(drip())
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if reused and not exc.partial:  # closed by the server while idle: not an answer
                return await exchange(kind)
            raise
        finally:
            if trickle:
                trickle.cancel()
        lower = head.lower()
        if b"content-length: " in lower:
            await reader.readexactly(int(lower.split(b"content-length: ")[1].split(b"\r\n")[0]))
        keep = kind != "slow" and b"connection: close" not in lower
        return int(head[9:12])
    finally:
        if keep:
            idle.append((reader, writer, time.perf_counter()))
        else:
            writer.close()

async def one(kind, out):
    t = time.perf_counter()
    try:
        async with asyncio.timeout(a["give_up"]):
            status = await exchange(kind)
    except TimeoutError:
        status = "timeout"
    except Exception as exc:
        status = type(exc).__name__
    out.append((kind, status, time.perf_counter() - t))

async def capacity(seconds, concurrency):
    out, stop = [], time.perf_counter() + seconds
    async def worker():
        while time.perf_counter() < stop:
            await one("normal", out)
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sum(1 for _, s, _ in out if s == 200) / (time.perf_counter() - start)

async def main():
    await capacity(1.0, 8)  # warm-up
    rate = 4 * await capacity(a["capacity_s"], 32)
    print(json.dumps({"phase": "capacity", "rate": rate}), flush=True)
    sys.stdin.readline()  # the parent has reset the server's peak RSS
    out, tasks, sent, capped, start = [], set(), 0, 0, time.perf_counter()
    while (now := time.perf_counter() - start) < a["seconds"]:
        while sent < int(now * rate):
            if len(tasks) >= cap:
                capped += 1
            else:
                task = asyncio.ensure_future(one(MIX[sent % len(MIX)], out))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(0.001)
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    print(json.dumps({"phase": "overload", "rate": rate, "offered": sent / elapsed,
                      "capped": capped, "results": out}), flush=True)

asyncio.run(main())
"""


def _memory_mb(pid: int) -> dict[str, float]:
    fields = (line.split(":") for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {k: int(v.split()[0]) / 1024 for k, v in fields if k in ("VmRSS", "VmHWM")}


def _drive(url: str, pid: int, *, seconds: float, capacity_s: float) -> tuple[dict, float]:
    """Run the client; reset the server's peak RSS between its capacity and overload phases."""
    host, rest = url.removeprefix("http://").split("/", 1)
    args = {"host": host.split(":")[0], "port": int(host.split(":")[1]), "path": "/" + rest,
            "deadline": DEADLINE_S, "grace": GRACE_S, "give_up": GIVE_UP_S,
            "max_in_flight": MAX_IN_FLIGHT, "seconds": seconds, "capacity_s": capacity_s}
    client = subprocess.Popen([sys.executable, "-c", CLIENT, json.dumps(args)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        json.loads(client.stdout.readline())  # capacity measured
        idle = _memory_mb(pid)["VmRSS"]
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        client.stdin.write("go\n")
        client.stdin.flush()
        report = json.loads(client.stdout.readline())
        client.wait(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    if client.returncode:
        raise RuntimeError(f"the load client exited with {client.returncode}")
    return report, idle


def run(ctx: Context) -> list[Result]:
    from dlpipe.core.config import with_overrides
    from dlpipe.serving.launch import running_server

    seconds = 30.0 if ctx.quick else 60.0
    name = f"bench-overload-{uuid.uuid4().hex[:6]}"
    cfg = with_overrides(ctx.cfg, {"serving.model_dir": str(ctx.work_dir / "models"),
                                   "serving.request_timeout_s": DEADLINE_S})
    publish_untrained(cfg, name, architecture="small", height=8, width=8, channels=1,
                      classes=[str(i) for i in range(10)])
    with running_server(cfg, models=[name], log=ctx.work_dir / "serve-overload.log") as server:
        report, idle = _drive(f"{server.url}/v1/models/{name}:predict", server.process.pid,
                              seconds=seconds, capacity_s=3.0 if ctx.quick else 5.0)
        peak = _memory_mb(server.process.pid)["VmHWM"]
        alive = server.process.poll() is None
    return _results(report, idle=idle, peak=peak, alive=alive, seconds=seconds)


def _results(report: dict, *, idle: float, peak: float, alive: bool, seconds: float) -> list[Result]:
    rows = report["results"]
    statuses: dict[str, int] = {}
    for kind, status, _ in rows:
        statuses[f"{kind}:{status}"] = statuses.get(f"{kind}:{status}", 0) + 1
    ok = sum(1 for _, status, took in rows
             if (status == 200 and took <= DEADLINE_S + GRACE_S) or status in SHED)
    errors = sum(1 for _, status, _ in rows if isinstance(status, int) and status >= 500
                 and status != 503)
    shed = sorted(took for _, status, took in rows if status in SHED)
    load = (f"{report['offered']:.0f} req/s offered (4x capacity {report['rate'] / 4:.0f} req/s) "
            f"for {seconds:.0f}s, {len(rows)} sent, {report['capped']} not sent (client cap "
            f"{MAX_IN_FLIGHT} open); server {'alive' if alive else 'DEAD'}")
    by_status = ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
    shed_p99 = shed[int(0.99 * len(shed))] if shed else 0.0
    return [
        Result(benchmark="serve_overload", metric="peak server RSS under 4x overload", unit="MB",
               value=peak, baseline_name="server RSS idle after warm-up", baseline_value=idle,
               notes=load),
        Result(benchmark="serve_overload", metric="answered 200 within the deadline or shed",
               unit="%", value=100.0 * ok / max(len(rows), 1), baseline_name="every request",
               baseline_value=100.0, target_ratio=1.0,
               notes=f"200 within {DEADLINE_S:g}s + {GRACE_S:g}s, or 429/503/408/413 (p99 "
                     f"{shed_p99:.2f}s); no answer in {GIVE_UP_S:g}s fails; {by_status}"),
        Result(benchmark="serve_overload", metric="server errors (5xx other than 503 shed)",
               unit="count", value=float(errors), baseline_name="requests sent",
               baseline_value=float(len(rows)), notes="must be 0"),
    ]
