"""Resident memory of this process's Spark driver JVM and its Python workers, sampled.

``bench_scale`` asks whether memory stays flat as the table grows, so it needs the peak up
to a moment, not one reading at the end: a thread samples every ``interval`` seconds and
keeps (time, driver JVM RSS, sum of the Python workers' RSS). In ``local[N]`` mode the
JVM is both driver and executor; the workers are the Python processes under it
(``pyspark.daemon`` and the workers it forks). Sums of RSS count pages the forked workers
share once per worker: an upper bound, the same way at every sample.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class RssSampler:
    interval: float = 0.5
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (monotonic, jvm, workers)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            jvm = workers = 0
            for child in me.children(recursive=True):
                try:
                    name, rss = child.name(), child.memory_info().rss
                except psutil.Error:  # a worker that just exited
                    continue
                if name == "java":
                    jvm += rss
                elif name.startswith("python"):
                    workers += rss
            self.samples.append((time.monotonic(), jvm, workers))
            self._stop.wait(self.interval)

    def peak(self, until: float | None = None, since: float | None = None) -> tuple[int, int]:
        """Peak (JVM, workers) bytes over samples in [since, until]."""
        picked = [(j, w) for t, j, w in self.samples
                  if (since is None or t >= since) and (until is None or t <= until)]
        return (max((j for j, _ in picked), default=0), max((w for _, w in picked), default=0))
