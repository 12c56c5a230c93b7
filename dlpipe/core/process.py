"""Start, watch and stop one local service process with a pid file and a log.

A service is up only when its health check passes, not when its process exists: the
check speaks the service's own protocol (S3 health endpoint, Kafka metadata request,
Spark master JSON), so "healthy" means a client would get an answer.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dlpipe.core.errors import ServiceError


@dataclass
class Service:
    name: str
    argv: Sequence[str]
    log: Path
    pid_file: Path
    ports: Sequence[int]
    healthy: Callable[[], bool]
    host: str = "127.0.0.1"
    env: Mapping[str, str] = field(default_factory=dict)
    # Runs just before the process starts (write config files, format storage); what it
    # returns is added to the environment, so secrets are read only when needed.
    prepare: Callable[[], Mapping[str, str] | None] | None = None

    # -- state -----------------------------------------------------------------------
    def pid(self) -> int | None:
        """The pid from the pid file if that process is still alive and is still the one this
        file was written for: the pid file also holds the process's start time, so a pid the
        kernel has since given to another process is never signalled."""
        try:
            pid_text, _, started = self.pid_file.read_text().strip().partition(" ")
            pid = int(pid_text)
        except (FileNotFoundError, ValueError):
            return None
        if not _alive(pid):
            return None
        # A pid file from before start times were recorded names its pid only.
        return pid if not started or started == start_time(pid) else None

    def is_healthy(self) -> bool:
        try:
            return bool(self.healthy())
        except Exception:
            return False

    def status(self) -> str:
        pid = self.pid()
        if pid is None:
            return "stopped"
        return "healthy" if self.is_healthy() else "running, not healthy"

    # -- transitions -----------------------------------------------------------------
    def start(self, timeout_s: float) -> bool:
        """Start unless already healthy; returns True when this call started it."""
        if self.pid() is not None:
            if wait_until(self.is_healthy, timeout_s):
                return False
            raise ServiceError(
                f"{self.name} (pid {self.pid()}) is running but not healthy after {timeout_s:.0f}s;"
                f" see {self.log}",
                fix="dlpipe stack down && dlpipe stack up",
            )
        for port in self.ports:
            if port_in_use(self.host, port):
                raise ServiceError(
                    f"cannot start {self.name}: port {self.host}:{port} is already in use by"
                    " another process",
                    fix="stop that process, change the port in conf/pipeline.yaml (stack.*),"
                    " or run `dlpipe stack up --free-ports`",
                )
        self.log.parent.mkdir(parents=True, exist_ok=True)
        extra_env = self._prepare()
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(
                list(self.argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env, **extra_env}, start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid} {start_time(proc.pid) or ''}\n")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise ServiceError(
                    f"{self.name} exited with code {proc.returncode} during start-up:\n"
                    f"{tail(self.log)}",
                    fix=f"read {self.log}",
                )
            if self.is_healthy():
                return True
            time.sleep(0.3)
        self.stop(timeout_s=5)
        raise ServiceError(
            f"{self.name} did not become healthy within {timeout_s:.0f}s:\n{tail(self.log)}",
            fix=f"read {self.log}; raise stack.startup_timeout_s if the machine is slow",
        )

    def _prepare(self) -> Mapping[str, str]:
        """Run ``prepare``; whatever breaks there is reported as this service's failure."""
        if self.prepare is None:
            return {}
        try:
            return self.prepare() or {}
        except ServiceError:
            raise
        except Exception as exc:
            raise ServiceError(
                f"{self.name}: preparing to start failed: {type(exc).__name__}: {exc}",
                fix=f"check {self.log.parent} (disk space, permissions), then `dlpipe stack up` again",
            ) from exc

    def stop(self, timeout_s: float) -> bool:
        """SIGTERM the process group, wait, then SIGKILL; returns True if it was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        _signal_group(pid, signal.SIGTERM)
        if not wait_until(lambda: not _alive(pid), timeout_s):
            _signal_group(pid, signal.SIGKILL)
            wait_until(lambda: not _alive(pid), 10)
        self.pid_file.unlink(missing_ok=True)
        return True


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat): with
    the pid, it names one process for the life of the machine."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@contextlib.contextmanager
def scoped_environ(values: Mapping[str, str] | None = None, *,
                   restore: Iterable[str] = ()) -> Iterator[None]:
    """``values`` set in os.environ for the block; on exit those keys and ``restore``'s are
    as they were (a child launched inside inherits them, this process keeps nothing)."""
    values = values or {}
    saved = {k: os.environ.get(k) for k in {*values, *restore}}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.3) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that nothing listens on right now."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


def die_with_parent(parent_pid: int) -> None:
    """Make this process get SIGKILL when its parent dies (Linux ``PR_SET_PDEATHSIG``).

    A child in its parent's process group dies with it only when the whole group is killed;
    Spark kills a failed task's Python worker alone, and its TensorFlow child would train on
    as an orphan, holding its port and memory. Elsewhere than Linux this does nothing.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the call: nothing would signal us
        os._exit(1)
