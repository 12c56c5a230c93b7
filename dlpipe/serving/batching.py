"""Requests that arrive together run as one TensorFlow call.

Greedy batching: while a batch runs, new requests queue; when it finishes, everything queued
(up to ``max_size`` examples) runs next. An idle server answers a lone request at once; a busy
one amortizes the per-call cost over many requests. If a batch fails, its requests run one by
one, so one bad example never fails a neighbour's request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

Run = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass
class _Pending:
    inputs: dict[str, np.ndarray]
    size: int
    future: asyncio.Future = field(repr=False)


class Batcher:
    def __init__(self, run: Run, *, max_size: int, timeout_ms: float = 0.0,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self._run = run
        self._max_size = max_size
        self._timeout = timeout_ms / 1000.0
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._closed = False
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="batch")

    async def submit(self, inputs: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
        if self._closed:  # a straggler of a retired model version: run it on its own
            return await asyncio.get_running_loop().run_in_executor(None, self._run, inputs)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(inputs, size, future))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            if first is None:
                break
            batch, size = [first], first.size
            if self._timeout and not self._queue.empty():
                await asyncio.sleep(self._timeout)  # under load: let the batch fill a little
            while size < self._max_size and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    self._queue.put_nowait(None)  # stop after this batch
                    break
                batch.append(item)
                size += item.size
            await loop.run_in_executor(self._pool, self._execute, batch, loop)
        self._pool.shutdown(wait=False)

    def _execute(self, batch: list[_Pending], loop: asyncio.AbstractEventLoop) -> None:
        if self._on_batch:
            self._on_batch(sum(p.size for p in batch))
        if len(batch) > 1:
            try:
                merged = {k: np.concatenate([p.inputs[k] for p in batch]) for k in batch[0].inputs}
                outputs = self._run(merged)
            except Exception:  # retried one by one below, errors go to their owner
                pass
            else:
                start = 0
                for p in batch:
                    part = {k: v[start:start + p.size] for k, v in outputs.items()}
                    loop.call_soon_threadsafe(_resolve, p.future, part, None)
                    start += p.size
                return
        for p in batch:
            try:
                loop.call_soon_threadsafe(_resolve, p.future, self._run(p.inputs), None)
            except Exception as exc:  # the request's own error
                loop.call_soon_threadsafe(_resolve, p.future, None, exc)

    def close(self) -> None:
        """Stop once the queued requests are answered; call it from the event loop."""
        self._closed = True
        if self._task is None:
            self._pool.shutdown(wait=False)
        else:
            self._queue.put_nowait(None)


def _resolve(future: asyncio.Future, value: object, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
