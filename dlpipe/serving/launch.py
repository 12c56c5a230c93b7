"""Run ``dlpipe serve`` as a child process and wait until it is ready (demo, benchmarks)."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dlpipe.core.config import Config
from dlpipe.core.errors import DlpipeError


@dataclass(frozen=True)
class RunningServer:
    url: str
    grpc: str | None
    log: Path
    process: subprocess.Popen


@contextmanager
def running_server(cfg: Config, *, models: Sequence[str], log: Path, port: int | None = None,
                   grpc_port: int = 0, extra: Sequence[str] = (), timeout_s: float = 180,
                   env: Mapping[str, str] | None = None) -> Iterator[RunningServer]:
    """Start the server on ``port`` (a free one by default) against ``cfg``'s stack; stop it
    (SIGTERM, then SIGKILL) on exit. ``env`` is added to its environment (e.g. the keys of
    the serving identity, dlpipe.localstack.identities)."""
    from dlpipe.core.process import free_ports

    port = port or free_ports(1)[0]
    # The child gets this config's store and serving settings (limits, batching, model dir).
    serving = [f"--set=serving.{name}={'null' if value is None else value}"
               for name in type(cfg.serving).model_fields
               if name not in ("models", "host", "port", "grpc_port")
               for value in [getattr(cfg.serving, name)]]
    args = [sys.executable, "-m", "dlpipe.serving.server", "--port", str(port),
            "--grpc-port", str(grpc_port), "--host", "127.0.0.1",
            f"--set=s3.endpoint={cfg.s3_endpoint}", f"--set=buckets.models={cfg.buckets.models}",
            f"--set=kafka.topics.samples.name={cfg.samples_topic}", *serving, *extra]
    for m in models:
        args += ["--model", m]
    env = {**os.environ, "DLPIPE_CONFIG": str(cfg.source), "DLPIPE_STATE_DIR": str(cfg.stack.state_dir),
           **(env or {})}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    tls = cfg.serving.tls_cert_file
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    # Over TLS, the readiness check trusts the server's own certificate (self-signed in tests).
    context = ssl.create_default_context(cafile=str(Path(tls).expanduser())) if tls else None
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise DlpipeError(f"dlpipe serve exited with code {process.returncode}; its log "
                                  f"ends:\n{_tail(log)}", fix=f"see {log}")
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=2, context=context) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise DlpipeError(f"dlpipe serve not ready after {timeout_s:.0f}s; its log ends:\n"
                                  f"{_tail(log)}", fix="check that a promoted model version exists "
                                                      "(`dlpipe models list`)")
            time.sleep(0.5)
        yield RunningServer(url, f"127.0.0.1:{grpc_port}" if grpc_port else None, log, process)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
