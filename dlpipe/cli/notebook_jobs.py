"""The jobs a Spark Connect notebook cannot run, on a local Spark application that can.

A job runner is a Python process with a local (classic) Spark session that serves one job at a
time on a Unix socket (mode 0600). The notebook sends the job's function name, config and
arguments; the runner streams back what the job prints and logs, then its return value or
its error. A notebook starts a runner of its own on first use, which exits with the kernel.
With ``$DLPIPE_NB_JOB_SOCKET`` set it uses that runner instead. ``dlpipe notebook`` and the
notebook tests start one, so every notebook there shares one warm JVM, and with it warm
Python workers (a scoring model already loaded, for example).

The session is made from the first job's config (Spark Connect keys dropped); later jobs get
their own config but run on that session.
"""

from __future__ import annotations

import io
import os
import pickle
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO

from dlpipe.core.config import Config
from dlpipe.core.errors import DlpipeError

SOCKET_ENV = "DLPIPE_NB_JOB_SOCKET"
# Set in a process once it has made a Spark Connect session (pyspark then builds Connect
# Columns everywhere), so a runner must not inherit them.
CONNECT_ENV = ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "SPARK_LOCAL_REMOTE")
_LENGTH = struct.Struct("<Q")


def _send(stream: BinaryIO, message: Any) -> None:
    data = pickle.dumps(message)
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def _receive(stream: BinaryIO) -> Any:
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        raise EOFError("the job runner closed the connection")
    return pickle.loads(stream.read(_LENGTH.unpack(header)[0]))


def runner_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if environ is None else environ)
    return {k: v for k, v in env.items() if k not in CONNECT_ENV} | {"PYTHONUNBUFFERED": "1"}


def start_runner(path: Path, *, env: dict[str, str], log: Path, timeout_s: float = 60) -> subprocess.Popen:
    """A runner process serving on ``path``, once it listens."""
    path.unlink(missing_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dlpipe.cli.notebook_jobs", str(path)], env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise DlpipeError(f"the notebook job runner did not start (exit {proc.poll()})", fix=f"see {log}")
        time.sleep(0.1)
    return proc


class JobRunner:
    """The notebook's side: ``call`` a job on the shared runner, or on one of its own."""

    def __init__(self, path: Path | None = None) -> None:
        import atexit

        self.proc: subprocess.Popen | None = None
        if path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="dlpipe-nb-jobs-")
            path, log = Path(self._tmp.name, "jobs.sock"), Path(self._tmp.name, "runner.log")
            self.proc = start_runner(path, env=runner_env(), log=log)
            atexit.register(self.close)
        self.path = path

    @classmethod
    def attach(cls) -> JobRunner:
        shared = os.environ.get(SOCKET_ENV)
        return cls(Path(shared)) if shared and Path(shared).exists() else cls()

    def alive(self) -> bool:
        return self.proc is None or self.proc.poll() is None

    def call(self, name: str, cfg: Config, kwargs: dict[str, Any]) -> Any:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(self.path))
            with conn.makefile("rwb") as stream:
                _send(stream, (name, cfg, kwargs))
                while True:
                    kind, value = _receive(stream)
                    if kind != "out":
                        break
                    print(value, end="", flush=True)
        if kind == "error":
            raise DlpipeError(f"{name} failed in the notebook's local Spark application: {value} "
                              "(its traceback is above)")
        return value

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class _Forward(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` of a job: each write goes to the notebook."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        if text:
            _send(self.stream, ("out", text))
        return len(text)


def _run(spark: Any, request: tuple[str, Config, dict[str, Any]], stream: BinaryIO) -> tuple[Any, tuple]:
    import importlib
    import traceback

    from dlpipe.core.config import with_overrides
    from dlpipe.core.session import REMOTE_KEY, get_spark

    name, cfg, kwargs = request
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = _Forward(stream)
    try:
        conf = {k: v for k, v in cfg.spark.conf.items() if k != REMOTE_KEY}
        cfg = with_overrides(cfg, {"spark.conf": conf})
        spark = spark or get_spark(cfg, app_name="dlpipe-notebook-jobs")
        module, _, func = name.rpartition(".")
        return spark, ("ok", getattr(importlib.import_module(module), func)(spark, cfg, **kwargs))
    except Exception as exc:
        traceback.print_exc()
        return spark, ("error", f"{type(exc).__name__}: {exc}")
    finally:
        sys.stdout, sys.stderr = saved


def serve(path: Path) -> int:
    """Serve jobs on ``path`` until terminated; the session is made on the first job."""
    import signal

    from dlpipe.cli.main import provide_jars
    from dlpipe.core import logs

    logs.setup()
    provide_jars()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    spark = None
    try:
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(path))
            os.chmod(path, 0o600)
            server.listen(8)
            while True:
                conn, _ = server.accept()
                with conn, conn.makefile("rwb") as stream:
                    try:
                        spark, reply = _run(spark, _receive(stream), stream)
                        _send(stream, reply)
                    except (EOFError, BrokenPipeError, ConnectionResetError):
                        continue  # the notebook went away mid-job
    finally:
        path.unlink(missing_ok=True)
        if spark is not None:
            spark.stop()


if __name__ == "__main__":
    sys.exit(serve(Path(sys.argv[1])))
