"""Store outages on the test stack's real MinIO process (issue 17): SIGKILL and restart, and
SIGSTOP then SIGCONT. Whatever a test does, MinIO runs again afterwards: the rest of the
session shares it."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from dlpipe.core.process import Service, wait_until

STALL_S = 30  # the issue's stall: longer than S3A's and boto3's connect timeouts, shorter than read


@contextmanager
def restored(stack, name: str) -> Iterator[Service]:
    """The stack's service ``name``, running and not stopped again on exit."""
    service = next(s for s in stack.core_services() if s.name == name)
    try:
        yield service
    finally:
        if (pid := service.pid()) is not None:
            os.kill(pid, signal.SIGCONT)
        if pid is None or not wait_until(service.is_healthy, 30):
            service.start(timeout_s=stack.cfg.stack.startup_timeout_s)


def kill_and_restart(service: Service, stack, *, down_s: float) -> None:
    pid = service.pid()
    assert pid is not None, f"{service.name} is not running"
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: service.pid() is None, 20), f"{service.name} outlived SIGKILL"
    time.sleep(down_s)
    service.start(timeout_s=stack.cfg.stack.startup_timeout_s)


def stall(service: Service, seconds: float = STALL_S) -> None:
    pid = service.pid()
    assert pid is not None, f"{service.name} is not running"
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


@contextmanager
def minio_outage_when(stack, ready: Callable[[], bool], *, timeout_s: float = 240,
                      busy: Callable[[], bool] = lambda: True) -> Iterator[dict[str, object]]:
    """In a thread: once ``ready()``, MinIO is SIGKILLed and restarted 3 s later, then stalled
    for STALL_S. The dict yielded says what was done (``killed``, ``stalled``) and whether the
    work was still ``busy()`` when the kill came: a fault after the work ended tests nothing."""
    done: dict[str, object] = {}

    def outage() -> None:
        try:
            if not wait_until(ready, timeout_s, 0.05):
                done["error"] = f"not ready within {timeout_s:.0f} s"
                return
            done["busy_at_kill"] = busy()
            kill_and_restart(minio, stack, down_s=3)
            done["killed"] = True
            stall(minio)
            done["stalled"] = True
        except Exception as exc:  # reported by the test's asserts, not lost in a thread
            done["error"] = repr(exc)

    with restored(stack, "minio") as minio:
        thread = threading.Thread(target=outage, daemon=True)
        thread.start()
        try:
            yield done
        finally:
            thread.join(timeout_s + STALL_S + 120)
