"""Independent Spark actions run at once from one driver.

Each Delta commit of a micro-batch is mostly waiting: on the object store, on the log, on a
job's few tasks. Run one after another, three small commits cost three round trips of that;
run together, the small ones finish while the big one writes. Spark schedules jobs from
several threads of one driver (FIFO by default, each job's tasks as cores free up).

The threads inherit the caller's Spark local properties (``inheritable_thread_target``): a
streaming query's job group rides along, so ``query.stop()`` still cancels their jobs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


def run_together(tasks: dict[str, Callable[[], None]], *,
                 after: Callable[[str], None] | None = None) -> dict[str, float]:
    """Run every task in its own thread; the seconds each took, by name.

    ``after(name)`` runs in the task's thread when it succeeds (the fault tests' hook,
    dlpipe.core.faults). All tasks end before this returns, even when one fails: a commit is
    never left running behind the caller's back. The first failure (in ``tasks`` order) is
    then raised.
    """
    from pyspark import inheritable_thread_target
    from pyspark.sql import is_remote

    if not tasks:
        return {}
    # Spark Connect wants its session there instead, and keeps no JVM thread state to inherit.
    inherit = (lambda f: f) if is_remote() else inheritable_thread_target

    def timed(name: str, task: Callable[[], None]) -> Callable[[], float]:
        @inherit
        def run() -> float:
            started = time.monotonic()
            task()
            seconds = round(time.monotonic() - started, 2)
            if after is not None:
                after(name)
            return seconds
        return run

    with ThreadPoolExecutor(max_workers=len(tasks), thread_name_prefix="dlpipe-together") as pool:
        futures = {name: pool.submit(timed(name, task)) for name, task in tasks.items()}
    failed = [f.exception() for f in futures.values() if f.exception() is not None]
    if failed:
        raise failed[0]
    return {name: f.result() for name, f in futures.items()}
